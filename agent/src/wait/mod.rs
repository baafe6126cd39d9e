//! `talos-agent wait` (work in progress).

use std::process::ExitCode;

/// Arguments of `talos-agent wait`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `talos-agent wait`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("talos-agent wait: not implemented yet");
    ExitCode::from(2)
}
