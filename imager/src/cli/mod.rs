//! Command-line definitions only, one file per subcommand family; the work lives in one module
//! per subcommand ([`crate::kernel_args`], [`crate::publish`], [`crate::inspect`],
//! [`crate::bundle`], [`crate::netboot`], [`crate::build`], [`crate::schematic`],
//! [`crate::cloud_init`], [`crate::warm`]), which import their arguments from here. This module imports nothing
//! from them.
//!
//! Architectures, platforms and overlays are [`kernel_cmdline::preset`]'s enums (clap values
//! `arm64`/`amd64`, `metal`/`aws`, `rpi_generic`).

pub mod build;
pub mod cloud_init;
pub mod cmdline;
pub mod extensions;
pub mod inspect;
pub mod netboot;
pub mod publish;
pub mod schematic;
pub mod warm;

use clap::{Args, Parser, Subcommand};

/// The default Talos version of every subcommand: the operator's image, v1.10.5.
pub const DEFAULT_TALOS_VERSION: &str = "v1.10.5";

/// Build Talos boot artifacts with system extensions.
#[derive(Parser, Debug)]
#[command(name = "imager", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the kernel command line Talos's imager would give (its output kind `cmdline`).
    Cmdline(cmdline::Args),
    /// Image Factory schematics.
    #[command(subcommand)]
    Schematic(schematic::SchematicCommand),
    /// Push the boot artifacts of `imager build` (a multi-arch index) and the talos-agent
    /// extension image to a registry.
    Publish(publish::Args),
    /// Show what a boot artifact, an extension image or a Talos imager image holds.
    Inspect(inspect::Args),
    /// Render the EC2 user-data (#cloud-config) for a build: on a stock Ubuntu instance it
    /// fetches talos-agent by digest, checks its sha256 and runs `talos-agent boot
    /// REPO@<manifest digest>`, which kexecs into Talos (see docs/ec2.md).
    #[command(name = "cloud-init")]
    CloudInit(cloud_init::Args),
    /// Write netboot assets for a build: a matchbox data directory (profiles, groups, assets),
    /// iPXE binaries and dnsmasq configurations.
    Netboot(netboot::Args),
    /// What a Talos release's extensions and overlays bundles offer.
    #[command(subcommand)]
    Extensions(extensions::ExtensionsCommand),
    /// Build Talos's kernel and an initramfs with system extensions, command lines and the boot
    /// artifact (default: Talos v1.10.5 with spin, tailscale and talos-agent).
    Build(Box<build::Args>),
    /// The in-repo talos-agent system extension.
    #[command(subcommand)]
    Extension(build::ExtensionCommand),
    /// Read every blob of a published image once through a registry pull-through cache (the
    /// bastion's), so that a fleet booting together fetches it from upstream once.
    Warm(warm::Args),
}

/// How to reach registries, shared by `build`, `inspect` and `extensions update`.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryFlags {
    /// Registry mirror ORIGIN=HOST[:PORT] (e.g. ghcr.io=10.20.13.140:5000), tried before the
    /// origin; repeatable, tried in the order given.
    #[arg(long = "registry-mirror", value_name = "ORIGIN=HOST[:PORT]")]
    pub registry_mirrors: Vec<String>,
    /// Registry reached over plain HTTP instead of TLS; repeatable. Only the hosts named here.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
}

impl RegistryFlags {
    /// The registry client options these flags describe (mirrors parsed, insecure hosts as given).
    ///
    /// # Errors
    /// A `--registry-mirror` that is not `ORIGIN=HOST[:PORT]`, named in the message.
    pub fn options(&self) -> anyhow::Result<moonboot_registry::Options> {
        let mut options = moonboot_registry::Options::default();
        for m in &self.registry_mirrors {
            options.mirrors.push(
                m.parse::<boot_artifact::reference::Mirror>()
                    .map_err(|e| anyhow::anyhow!("--registry-mirror {m}: {e}"))?,
            );
        }
        options.insecure = self.insecure_registries.clone();
        Ok(options)
    }
}
