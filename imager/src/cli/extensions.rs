//! `imager extensions …`: what a Talos release's bundles offer (the work: [`crate::bundle`]).

use super::RegistryFlags;

/// `imager extensions …`.
#[derive(clap::Subcommand, Debug)]
pub enum ExtensionsCommand {
    /// List the official extensions (and, with --overlays, the overlays) a Talos version's
    /// bundle offers, each pinned by digest: what `imager build` resolves names through.
    List(ListArgs),
}

/// `imager extensions list` arguments.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Talos version whose bundles to read (e.g. v1.10.5).
    #[arg(long, value_name = "VERSION", default_value = super::DEFAULT_TALOS_VERSION)]
    pub talos_version: String,
    /// Platform of the bundle image to read (the bundles are multi-arch, with the same files).
    #[arg(long, value_enum, default_value = "arm64")]
    pub arch: kernel_cmdline::preset::Arch,
    /// The extensions bundle to read (default ghcr.io/siderolabs/extensions:<talos-version>).
    #[arg(long, value_name = "REF")]
    pub extensions_bundle: Option<String>,
    /// Also list the overlays, from this bundle or ghcr.io/siderolabs/overlays:<talos-version>.
    #[arg(long)]
    pub overlays: bool,
    /// The overlays bundle to read with --overlays.
    #[arg(long, value_name = "REF", requires = "overlays")]
    pub overlays_bundle: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Print JSON: {"extensions_bundle": {…}, "extensions": [{name, image, tag, digest, author,
    /// description}], "overlays_bundle"?, "overlays"?: [{name, image, digest}]}.
    #[arg(long)]
    pub json: bool,
}
