//! `vigil uninstall [--no-wait] [--timeout D]` and `vigil uninstall status`.
//!
//! Exit codes: 0 when the cluster is uninstalled — by this run or by
//! another one that had claimed it (`already in progress` is waited for,
//! `already done` returns at once) — or, with `--no-wait`, once it is
//! claimed; 1 when it is refused (the confirmation flag is not true), the
//! agent cannot be asked, or `--timeout` passes first (it carries on in the
//! background: `vigil uninstall status`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{Output, UninstallArgs, UninstallCmd};
use vigil_client::ApiClient;
use vigil_model::wire::UninstallReply;

/// How often the waiting CLI asks for the record.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(api: &ApiClient, args: UninstallArgs, output: Output) -> ExitCode {
    if let Some(UninstallCmd::Status) = args.command {
        return match api.uninstall_status().await {
            Ok(r) => {
                print_final(&r, output);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let first: UninstallReply = match api.uninstall().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    progress(output, &first.message);
    if args.no_wait || first.outcome == "done" {
        print_final(&first, output);
        return ExitCode::SUCCESS;
    }
    let deadline = Instant::now() + args.timeout;
    let mut last_line = String::new();
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(POLL).await;
        match api.uninstall_status().await {
            Ok(r) => {
                last_error.clear();
                let Some(u) = &r.uninstall else {
                    // The record is gone: an agent restarted after it
                    // finished (a fresh install).
                    progress(
                        output,
                        "the uninstall record is gone (an agent started a fresh install)",
                    );
                    print_final(&r, output);
                    return ExitCode::SUCCESS;
                };
                if u.is_done() {
                    print_final(&r, output);
                    return ExitCode::SUCCESS;
                }
                let line = format!(
                    "{}: {} volume(s), {} replica(s), {} engine(s) left (driven by {}): {}",
                    u.phase,
                    u.volumes_left,
                    u.replicas_left,
                    u.engines_left,
                    u.driven_by,
                    u.message
                );
                if line != last_line {
                    progress(output, &line);
                    last_line = line;
                }
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    eprintln!("warning: {text}; still waiting");
                    last_error = text;
                }
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "error: the uninstall is not done after {} s ({last_line}); it carries on: follow it with `vigil uninstall status`",
                args.timeout.as_secs()
            );
            return ExitCode::FAILURE;
        }
    }
}

/// A progress line: on stdout for humans, on stderr when stdout is JSON.
fn progress(output: Output, line: &str) {
    match output {
        Output::Table => println!("{line}"),
        Output::Json => eprintln!("{line}"),
    }
}

fn print_final(r: &UninstallReply, output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(r).unwrap_or_default()),
        Output::Table => {
            println!("{}", r.message);
            if let Some(u) = &r.uninstall {
                println!(
                    "phase {}  claimed by {}  driven by {}  left: {} volume(s), {} replica(s), {} engine(s)",
                    u.phase,
                    u.by_node,
                    u.driven_by,
                    u.volumes_left,
                    u.replicas_left,
                    u.engines_left
                );
                for h in &u.history {
                    println!("  {h}");
                }
            }
        }
    }
}
