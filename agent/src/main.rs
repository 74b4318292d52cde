//! `vigil`: the agent (`vigil agent`) and the CLI that talks to it.

mod api;
mod cli;
mod daemon;
// Not wired into the agent yet; the daemon will open it from `--store`.
#[allow(dead_code)]
mod store;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
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
