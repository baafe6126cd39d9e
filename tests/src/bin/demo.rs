//! `demo`: the main job end to end on this machine (see `moonboot_tests::demo`), printing the
//! readiness table and the time from VM power-on to the phase. Run through `scripts/demo`, which
//! installs what it needs and builds the fixtures first.
//!
//! Exit codes: 0 the node reached the phase; 1 a step failed (the error says which); 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use moonboot_tests::demo::{run_demo, Options};
use moonboot_tests::fixtures::Fixtures;

/// Build the arm64 image, publish it, boot it by kexec in an emulated arm64 VM and wait for
/// the node's readiness report.
#[derive(Parser)]
#[command(name = "demo")]
struct Cli {
    /// Working directory for the build output and logs.
    #[arg(long, default_value = "target/demo")]
    work: PathBuf,
    /// Make the stand-in apid ask for a client certificate and wait for `configured` instead of
    /// `maintenance_ready`.
    #[arg(long)]
    configured: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let f = match Fixtures::load_default() {
        Ok(Some(f)) => f,
        Ok(None) => {
            eprintln!("demo: error: target/fixtures/fixtures.json is absent: run scripts/fixtures");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    eprintln!("demo: everything below runs under software emulation (QEMU TCG, no KVM) with TEST FIXTURES:");
    eprintln!("demo: a stand-in Talos {} built from Debian's kernel, not Talos itself.", f.talos_version);
    let o = Options { work: cli.work, configured: cli.configured, verbose: true };
    match run_demo(&f, &o) {
        Ok(out) => {
            println!("published: {}", out.published);
            println!("booted:    {}", out.boot_reference);
            println!();
            println!("{}", out.wait_log.trim_end());
            println!();
            for n in &out.nodes {
                println!("{n}");
            }
            println!();
            for (step, secs) in &out.step_seconds {
                println!("{step:<22} {secs:7.1} s");
            }
            println!(
                "VM power-on to {}: {:.1} s (software emulation; a Graviton instance is many times faster)",
                if cli.configured { "configured" } else { "maintenance_ready" },
                out.seconds_to_phase
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
