//! `imager extensions …`, the pinned official extensions (the work: [`crate::lock_update`]).

use std::path::PathBuf;

use super::RegistryFlags;

/// `imager extensions …`.
#[derive(clap::Subcommand, Debug)]
pub enum ExtensionsCommand {
    /// Re-resolve each locked image's tag to the digest of its image index today and write the
    /// digests into the lock file (comments and layout kept).
    Update(UpdateArgs),
}

/// `imager extensions update` arguments.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The lock file to update.
    #[arg(long, value_name = "FILE", default_value = "extensions/lock.yaml")]
    pub lock: PathBuf,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Print what changed as JSON.
    #[arg(long)]
    pub json: bool,
}
