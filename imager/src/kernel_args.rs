//! The Talos kernel command line for given arguments: `imager cmdline` (the line Talos's imager
//! writes for output kind `cmdline`, from [`kernel_cmdline::preset::talos`]) and [`parse_extra`]
//! for the `--extra-kernel-arg` values of `imager cmdline` and `imager build`.

use anyhow::{Context, Result};
use kernel_cmdline::preset::{self, TalosVersion};
use kernel_cmdline::Cmdline;

use crate::cli::cmdline::Args;

/// Parses the `--extra-kernel-arg` values (each may hold several arguments, as Talos's
/// `extraKernelArgs` entries may) into one line.
pub fn parse_extra(args: &[String]) -> Result<Cmdline> {
    let mut extra = Cmdline::new();
    for arg in args {
        let parsed = Cmdline::parse(arg).with_context(|| format!("--extra-kernel-arg {arg:?}"))?;
        for p in parsed.params() {
            extra.push(p.clone()).context("--extra-kernel-arg")?;
        }
    }
    Ok(extra)
}

/// The command line for these `imager cmdline` arguments.
pub fn build(args: &Args) -> Result<Cmdline> {
    let version: TalosVersion = args.talos_version.parse().context("--talos-version")?;
    let extra = parse_extra(&args.extra_kernel_args)?;
    let line = preset::talos(version, args.platform, args.arch, args.overlay, &extra)?;
    Ok(line)
}

/// Runs `imager cmdline`: prints the command line on stdout, followed by a newline.
pub fn run(args: &Args) -> Result<()> {
    println!("{}", build(args)?);
    Ok(())
}
