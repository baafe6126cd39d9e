//! `imager`: builds Talos boot artifacts with system extensions (see ARCHITECTURE.md).
//!
//! Exit codes: 0 success; 1 the command failed (one line on stderr names the cause);
//! 2 the command line was invalid (clap's usage error).

use clap::Parser;
use moonboot_imager::{cli, cmdline};

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Cmdline(args) => cmdline::run(&args),
    };
    if let Err(err) = result {
        eprintln!("imager: {err:#}");
        std::process::exit(1);
    }
}
