//! `talos-agent`: boots Talos from a running Linux (`boot`), reports readiness from inside Talos
//! (`report`) and waits for nodes on the operator side (`wait`). See ARCHITECTURE.md.
//!
//! The subcommands land with their issues; this binary exists now so that the imager can package
//! it as the `talos-agent` system extension.

use clap::Parser;

/// Boot Talos by kexec from a running Linux and report Talos readiness for bootstrap.
#[derive(Parser, Debug)]
#[command(name = "talos-agent", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("talos-agent {}: no subcommand is implemented yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
