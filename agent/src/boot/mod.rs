//! `talos-agent boot` (work in progress).

use std::process::ExitCode;

/// Arguments of `talos-agent boot`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `talos-agent boot`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("talos-agent boot: not implemented yet");
    ExitCode::from(2)
}
