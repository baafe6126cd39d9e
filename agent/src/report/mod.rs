//! `talos-agent report` (work in progress).

use std::process::ExitCode;

/// Arguments of `talos-agent report`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `talos-agent report`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("talos-agent report: not implemented yet");
    ExitCode::from(2)
}
