//! `imager cmdline`: the kernel command line Talos's imager writes for output kind `cmdline`.

use anyhow::{Context, Result};
use kernel_cmdline::preset::{self, TalosVersion};
use kernel_cmdline::Cmdline;

use crate::cli::{Arch, CmdlineArgs, Overlay, Platform};

impl From<Arch> for preset::Arch {
    fn from(a: Arch) -> Self {
        match a {
            Arch::Arm64 => preset::Arch::Arm64,
            Arch::Amd64 => preset::Arch::Amd64,
        }
    }
}

impl From<Platform> for preset::Platform {
    fn from(p: Platform) -> Self {
        match p {
            Platform::Metal => preset::Platform::Metal,
            Platform::Aws => preset::Platform::Aws,
        }
    }
}

impl From<Overlay> for preset::Overlay {
    fn from(o: Overlay) -> Self {
        match o {
            Overlay::RpiGeneric => preset::Overlay::RpiGeneric,
        }
    }
}

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

/// The command line for these arguments.
pub fn build(args: &CmdlineArgs) -> Result<Cmdline> {
    let version: TalosVersion = args.talos_version.parse().context("--talos-version")?;
    let extra = parse_extra(&args.extra_kernel_args)?;
    let line = preset::talos(version, args.platform.into(), args.arch.into(), args.overlay.map(Into::into), &extra)?;
    Ok(line)
}

/// Prints the command line on stdout, followed by a newline.
pub fn run(args: &CmdlineArgs) -> Result<()> {
    println!("{}", build(args)?);
    Ok(())
}
