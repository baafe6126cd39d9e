//! `talos-agent`: boots Talos from a running Linux (`boot`), reports readiness from inside Talos
//! (`report`) and waits for nodes on the operator side (`wait`). See ARCHITECTURE.md.
//!
//! Each subcommand lives in its own module, owns its `--help` text and its documented exit codes,
//! and prints one line per failure on stderr.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod boot;
mod error_chain;
mod report;
mod wait;

/// Boot Talos by kexec from a running Linux, and report Talos readiness for bootstrap.
#[derive(Parser, Debug)]
#[command(name = "talos-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch a Talos kernel + initramfs by digest, verify every byte, and kexec into it
    /// (Ubuntu/EC2 side; run as root from cloud-init).
    Boot(boot::Args),
    /// Report this node's readiness phase to `talos-agent wait` (Talos side; runs as the extension
    /// service `ext-talos-agent`).
    Report(report::Args),
    /// Collect readiness reports and exit when N nodes reach a phase (operator side).
    Wait(wait::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Boot(args) => boot::run(args),
        Command::Report(args) => report::run(args),
        Command::Wait(args) => wait::run(args),
    }
}
