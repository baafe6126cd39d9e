//! Command-line definitions only; the work lives in one module per subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Cmdline(CmdlineArgs),
    /// Image Factory schematics.
    #[command(subcommand)]
    Schematic(SchematicCommand),
    /// Push the boot artifacts of `imager build` (a multi-arch index) and the talos-agent
    /// extension image to a registry.
    Publish(crate::publish::Args),
    /// Show what a boot artifact, an extension image or a Talos imager image holds.
    Inspect(crate::inspect::Args),
    /// The pinned official extensions (extensions/lock.yaml).
    #[command(subcommand)]
    Extensions(ExtensionsCommand),
    /// Build Talos's kernel and an initramfs with system extensions, command lines and the boot
    /// artifact (default: Talos v1.10.5 with spin, tailscale and talos-agent).
    Build(crate::build::Args),
    /// The in-repo talos-agent system extension.
    #[command(subcommand)]
    Extension(crate::build::ExtensionCommand),
}

#[derive(Subcommand, Debug)]
pub enum ExtensionsCommand {
    /// Re-resolve each locked image's tag to the digest of its image index today and write the
    /// digests into the lock file (comments and layout kept).
    Update(crate::lock_update::Args),
}

#[derive(Subcommand, Debug)]
pub enum SchematicCommand {
    /// Print the schematic ID of a schematic file, computed exactly as the Image Factory does
    /// (sha256 of its canonical YAML).
    Id {
        /// Schematic file (YAML or JSON); `-` reads standard input.
        file: std::path::PathBuf,
        /// Also print the canonical YAML that was hashed, as JSON: {"id": …, "yaml": …}.
        #[arg(long)]
        json: bool,
    },
}

/// Target architecture.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit ARM (Graviton, Raspberry Pi 3/CM3 and later).
    Arm64,
    /// x86-64.
    Amd64,
}

/// Talos platform (`talos.platform=`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Bare metal, netboot, and the Raspberry Pi overlay.
    Metal,
    /// Amazon EC2.
    Aws,
}

/// Board overlay whose installer adds kernel arguments.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// siderolabs/sbc-raspberrypi `rpi_generic` (Raspberry Pi 3/CM3/4/CM4; arm64, metal only).
    #[value(name = "rpi_generic")]
    RpiGeneric,
}

#[derive(Args, Debug)]
pub struct CmdlineArgs {
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
