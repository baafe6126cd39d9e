//! `fixtures`: builds moonboot's stand-in Talos v1.10.5 release and extension images (TEST
//! FIXTURES) as OCI image layouts. Run by `scripts/fixtures`, which downloads the inputs first and
//! pushes the result afterwards; see `moonboot_tests::build` for what is built where.
//!
//! Exit codes: 0 built (or reused); 1 a build step failed (the message says which); 2 bad usage.

use anyhow::{Context, Result};
use clap::Parser;
use moonboot_tests::build::{self, ArchInput, Options};
use std::path::PathBuf;

/// Build the stand-in Talos release and extension images (test fixtures) under --out.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Output directory (target/fixtures).
    #[arg(long)]
    out: PathBuf,
    /// ARCH=PATH of the Debian kernel package, for arm64 and amd64.
    #[arg(long = "kernel-deb", value_parser = arch_path, required = true)]
    kernel_debs: Vec<(String, PathBuf)>,
    /// ARCH=PATH of Debian's busybox-static package, for arm64 and amd64.
    #[arg(long = "busybox-deb", value_parser = arch_path, required = true)]
    busybox_debs: Vec<(String, PathBuf)>,
    /// ARCH=PATH of the static stand-in init, for arm64 and amd64.
    #[arg(long = "init", value_parser = arch_path, required = true)]
    inits: Vec<(String, PathBuf)>,
    /// host:port of the registry the images will be pushed to.
    #[arg(long)]
    registry: String,
    /// Rebuild even if the inputs did not change.
    #[arg(long)]
    force: bool,
}

fn arch_path(s: &str) -> Result<(String, PathBuf), String> {
    let (a, p) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ARCH=PATH"))?;
    if !build::ARCHES.contains(&a) {
        return Err(format!("unknown architecture {a:?} (want arm64 or amd64)"));
    }
    Ok((a.to_string(), PathBuf::from(p)))
}

fn pick(list: &[(String, PathBuf)], arch: &str, what: &str) -> Result<PathBuf> {
    let p = list
        .iter()
        .find(|(a, _)| a == arch)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("no {what} for {arch}"))?;
    std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("fixtures: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
        Err(_) => build::DEFAULT_EPOCH,
    };
    let mut inputs = Vec::new();
    for arch in build::ARCHES {
        inputs.push(ArchInput {
            arch: arch.to_string(),
            kernel_deb: pick(&cli.kernel_debs, arch, "--kernel-deb")?,
            busybox_deb: pick(&cli.busybox_debs, arch, "--busybox-deb")?,
            init: pick(&cli.inits, arch, "--init")?,
        });
    }
    let out = std::path::absolute(&cli.out)?;
    let f = build::build(&Options { out, inputs, epoch, registry: cli.registry, force: cli.force })?;
    for (name, img) in &f.images {
        eprintln!("fixtures: {name}: {} index {}", img.reference, img.index_digest);
    }
    Ok(())
}
