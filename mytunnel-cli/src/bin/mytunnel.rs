//! `mytunnel`: parse, call one library function, exit.

use std::process::ExitCode;

use clap::Parser;
use mytunnel_cli::client_cli::{run, Cli};

fn main() -> ExitCode {
    mytunnel_cli::diagnostics::install_error_style();
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("mytunnel: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}
