//! `imager publish` (the work: [`crate::publish`]).

use std::path::PathBuf;

use kernel_cmdline::preset::Arch;

/// `imager publish` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to push: REGISTRY/REPO:TAG. The multi-arch index of the boot artifacts gets TAG.
    /// Without it, only the talos-agent extension image is published (to --extension-to).
    #[arg(long, value_name = "REGISTRY/REPO:TAG", required_unless_present = "extension_to")]
    pub to: Option<String>,
    /// Architectures to publish, comma-separated; default: every `boot-<arch>/` in the output
    /// directory.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub arch: Vec<Arch>,
    /// The directory `imager build` wrote.
    #[arg(long, value_name = "DIR", default_value = "_out")]
    pub output: PathBuf,
    /// Where to push the talos-agent extension image; default: REGISTRY/REPO-extension:TAG.
    /// `imager build` pulls it from ghcr.io/moonboot/talos-agent:v<version> by default.
    #[arg(long, value_name = "REGISTRY/REPO:TAG")]
    pub extension_to: Option<String>,
    /// Registry reached over plain HTTP instead of TLS. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
