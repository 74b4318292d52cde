//! `vigil support-bundle -o FILE`: asks the agent to make a bundle, shows
//! how each node did and writes the archive.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::Request;
use super::archive::{Bundle, Manifest};
use crate::cli::args::Output;
use vigil_client::ApiClient;

/// `vigil support-bundle` arguments.
#[derive(Debug, clap::Args)]
pub struct SupportBundleArgs {
    /// Where to write the archive (a .tar.gz); `-o FILE` works too.
    #[arg(long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Only this volume's replicas and events (repeat; default all).
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// Only this node (repeat; default every node).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// Only events and log lines newer than this (e.g. 30m, 1h30m, 2d).
    #[arg(long, value_parser = crate::cli::duration::parse)]
    pub since: Option<Duration>,
    /// How long each node may take to answer (e.g. 5s, 1m).
    #[arg(long, default_value = "5s", value_parser = crate::cli::duration::parse)]
    pub node_timeout: Duration,
}

/// `vigil bundle ...`: reading a bundle offline.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCmd {
    /// What a bundle holds (nodes, volumes, health), or with --volume a
    /// timeline of that volume: events, warnings from the logs, and its
    /// state and replicas when the bundle was made.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        volume: Option<String>,
    },
}

/// `-o FILE` after `support-bundle` means the archive's path (`-o` is
/// otherwise the output format: `-o table` and `-o json` keep that
/// meaning).
pub fn args_with_file<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = args.into_iter().collect();
    let Some(at) = out.iter().position(|a| a == "support-bundle") else {
        return out;
    };
    let mut i = at + 1;
    while i + 1 < out.len() {
        if out[i] == "-o" && out[i + 1] != "table" && out[i + 1] != "json" {
            out[i] = "--file".into();
        }
        i += 1;
    }
    out
}

/// Makes the bundle through the agent at `api` and writes it to the file.
pub async fn run(api: &ApiClient, args: SupportBundleArgs, output: Output) -> ExitCode {
    let tty = std::io::stderr().is_terminal();
    let req = Request {
        since_secs: args.since.map(|d| d.as_secs().max(1)),
        volumes: args.volumes,
        nodes: args.nodes,
        node_timeout_secs: Some(args.node_timeout.as_secs().max(1)),
    };
    if let Ok(nodes) = api.nodes().await {
        let names: Vec<String> = nodes
            .iter()
            .filter(|n| req.nodes.is_empty() || req.nodes.contains(&n.name))
            .map(|n| {
                if n.ready {
                    n.name.clone()
                } else {
                    format!("{} (down)", n.name)
                }
            })
            .collect();
        eprintln!(
            "collecting a support bundle from {} node(s): {} (timeout {} s each)",
            names.len(),
            names.join(", "),
            args.node_timeout.as_secs()
        );
    }
    let started = Instant::now();
    let call = api.support_bundle(&req);
    tokio::pin!(call);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            _ = tick.tick() => {
                if tty {
                    eprint!("\r  waiting for the nodes... {:.1} s", started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                }
            }
        }
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bundle = match Bundle::from_bytes("(answer)", &bytes) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: the agent's archive does not check: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprint!("{}", progress(&bundle.manifest));
    if let Err(e) = write_atomic(&args.file, &bytes) {
        eprintln!("error: write {}: {e}", args.file.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {} ({:.1} KiB, {} files) in {:.1} s",
        args.file.display(),
        bytes.len() as f64 / 1024.0,
        bundle.manifest.files.len() + 1,
        started.elapsed().as_secs_f64()
    );
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&bundle.manifest).unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}

/// One line per node: answered, failed, timed out or skipped, and why.
pub fn progress(m: &Manifest) -> String {
    let mut out = String::new();
    for n in &m.nodes {
        let detail = match n.status.as_str() {
            "answered" => format!(
                "{:.2} s, {:.1} KiB, clock {:+.3} s",
                n.seconds,
                n.bytes as f64 / 1024.0,
                n.clock_offset_secs.unwrap_or(0.0)
            ),
            _ => n.reason.clone().unwrap_or_default(),
        };
        out.push_str(&format!("  {:<16} {:<9} {detail}\n", n.node, n.status));
    }
    out
}

/// Writes `data` to `path` through a temporary file and a rename, so an
/// interrupted write never leaves a half bundle under the final name.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        args_with_file(v.iter().map(std::ffi::OsString::from))
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dash_o_after_support_bundle_is_the_file() {
        assert_eq!(
            strs(&["vigil", "support-bundle", "-o", "b.tgz", "--volume", "v"]),
            [
                "vigil",
                "support-bundle",
                "--file",
                "b.tgz",
                "--volume",
                "v"
            ]
        );
        assert_eq!(
            strs(&["vigil", "support-bundle", "-o", "json", "--file", "b"]),
            ["vigil", "support-bundle", "-o", "json", "--file", "b"]
        );
        assert_eq!(
            strs(&["vigil", "-o", "json", "doctor"]),
            ["vigil", "-o", "json", "doctor"]
        );
    }
}
