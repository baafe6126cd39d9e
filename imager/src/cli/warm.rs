//! `imager warm` (the work: [`crate::warm`]).

use kernel_cmdline::preset::Arch;

/// `imager warm` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The published image, as the agents will ask for it: REGISTRY/REPO:TAG or
    /// REGISTRY/REPO@sha256:… (e.g. ghcr.io/OWNER/moonboot/boot@sha256:…).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The registry pull-through cache in front of REF's registry (HOST[:PORT], e.g.
    /// 10.20.13.140:5000: docker-registry with `proxy.remoteurl`). Every blob of REF is read
    /// through it once, one after the other, so that it fetches each from upstream once.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub cache: String,
    /// Architecture to warm; repeatable. Default: arm64 and amd64, whichever REF has.
    #[arg(long, value_enum)]
    pub arch: Vec<Arch>,
    /// Registry reached over plain HTTP instead of TLS (the cache, usually); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
