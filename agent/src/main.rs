//! `vigil`: the agent (`vigil agent`) and the CLI that talks to it.

mod api;
mod bundle;
mod cli;
mod daemon;
mod ebpf;
mod metrics;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse_from(bundle::cli::args_with_file(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(args))
}
