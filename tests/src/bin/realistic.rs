//! `realistic`: builds the inputs of realistic size that `scripts/bench-imager --realistic`
//! pushes (BENCHMARK FIXTURES): the stand-in spin and tailscale extensions with real arm64
//! programs from Debian packages sized like upstream's binaries, and a stand-in imager image with
//! an initramfs of a real Talos one's size. See `moonboot_tests::realistic`.
//!
//! Prints the description (JSON) on stdout. Exit codes: 0 built (or reused); 1 a step failed;
//! 2 bad usage.

use anyhow::{Context, Result};
use clap::Parser;
use moonboot_tests::realistic::{self, Options};
use std::path::PathBuf;

/// Build the realistic-size benchmark images under --out.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Output directory (target/realistic).
    #[arg(long)]
    out: PathBuf,
    /// A Debian arm64 package to take programs from (repeatable).
    #[arg(long = "deb", required = true)]
    debs: Vec<PathBuf>,
    /// The fixtures' arm64 vmlinuz (EFI zboot), put into the imager image.
    #[arg(long)]
    vmlinuz: PathBuf,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("realistic: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
        Err(_) => moonboot_tests::build::DEFAULT_EPOCH,
    };
    let abs = |p: &PathBuf| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    let opts = Options {
        out: abs(&cli.out)?,
        debs: cli.debs.iter().map(abs).collect::<Result<_>>()?,
        vmlinuz: abs(&cli.vmlinuz)?,
        epoch,
    };
    let desc = realistic::build(&opts)?;
    println!("{}", serde_json::to_string_pretty(&desc)?);
    Ok(())
}
