//! `imager inspect` (the work: [`crate::inspect`]).

use kernel_cmdline::preset::Arch;

use super::RegistryFlags;

/// `imager inspect` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// An image reference (REGISTRY/REPO:TAG or …@sha256:…), an OCI image layout directory, the
    /// output directory of `imager build` (with its board disk image, if any), or a disk image
    /// file (.raw or .raw.xz, recognised by its content): both partition tables, the hybrid MBR
    /// verdict, the FAT's files and config.txt.
    #[arg(value_name = "REF|DIR|IMAGE")]
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
