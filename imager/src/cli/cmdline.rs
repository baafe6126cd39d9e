//! `imager cmdline` (the work: [`crate::kernel_args`]).

use kernel_cmdline::preset::{Arch, Overlay, Platform};

/// `imager cmdline` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Target architecture.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Talos platform.
    #[arg(long, value_enum, default_value = "metal")]
    pub platform: Platform,
    /// Talos version the line is for, e.g. 1.10.5 or v1.11.0 (the defaults change between minors).
    #[arg(long, value_name = "VERSION")]
    pub talos_version: String,
    /// Board overlay that adds its own kernel arguments.
    #[arg(long, value_enum)]
    pub overlay: Option<Overlay>,
    /// Extra kernel argument, merged as Talos does: `console=` and `talos.platform=` replace,
    /// `-key` removes a key, `-key=value` removes one value. Repeatable.
    #[arg(long = "extra-kernel-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub extra_kernel_args: Vec<String>,
}
