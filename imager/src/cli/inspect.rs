//! `imager inspect` (the work: [`crate::inspect`]).

use kernel_cmdline::preset::Arch;

use super::RegistryFlags;

/// `imager inspect` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// An image reference (REGISTRY/REPO:TAG or …@sha256:…), an OCI image layout directory, or
    /// the output directory of `imager build`.
    #[arg(value_name = "REF|DIR")]
    pub target: String,
    /// Which architecture's image to show; default: the only one in a layout, else arm64.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
