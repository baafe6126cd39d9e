//! `imager build` and `imager extension …` (the work: [`crate::build`]).

use std::path::PathBuf;

use kernel_cmdline::preset::Arch;

use super::RegistryFlags;

/// `imager build` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Target architecture.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Profile file (YAML; see imager/src/build/profile.rs). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Image Factory schematic: its officialExtensions and overlay (resolved through the Talos
    /// release's bundles) and its extraKernelArgs.
    #[arg(long, value_name = "FILE")]
    pub schematic: Option<PathBuf>,
    /// Talos machine configuration (one or more YAML documents) to build into the image as the
    /// `embedded-config` extension, as Image Factory's embeddedMachineConfiguration does: the
    /// node boots configured instead of in maintenance mode. Talos v1.12.0 or later; checked
    /// like Talos's config loader (document kinds, legacy keys, duplicates). Goes into the
    /// schematic, so the schematic ID changes with it. The file holds secrets: keep the image
    /// private. Its SELinux label is written by `tar2sqfs` (package squashfs-tools-ng).
    #[arg(long, value_name = "FILE")]
    pub embed_config: Option<PathBuf>,
    /// Output directory (created; our files in it are replaced).
    #[arg(long, value_name = "DIR", default_value = "_out")]
    pub output: PathBuf,
    /// Talos version (default v1.10.5, or the profile's).
    #[arg(long, value_name = "VERSION")]
    pub talos_version: Option<String>,
    /// Talos imager image to take vmlinuz and initramfs.xz from (default
    /// ghcr.io/siderolabs/imager:<talos-version>).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Extension image (REF or REF@sha256:…), repeatable; replaces the default/profile list
    /// (default: siderolabs/spin and siderolabs/tailscale from the extensions bundle).
    #[arg(long = "system-extension-image", value_name = "REF")]
    pub system_extension_images: Vec<String>,
    /// Board overlay by name, resolved through the overlays bundle (e.g. rpi_generic); adds its
    /// kernel arguments to the metal command line.
    #[arg(long, value_name = "NAME")]
    pub overlay: Option<String>,
    /// The bundle official extensions are resolved from (default
    /// ghcr.io/siderolabs/extensions:<talos-version>).
    #[arg(long, value_name = "REF")]
    pub extensions_bundle: Option<String>,
    /// The bundle overlays are resolved from (default ghcr.io/siderolabs/overlays:<talos-version>).
    #[arg(long, value_name = "REF")]
    pub overlays_bundle: Option<String>,
    /// Extra kernel argument (Talos merge rules), repeatable.
    #[arg(long = "extra-kernel-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub extra_kernel_args: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Verify the cosign signature of every upstream input (the Talos imager image, the
    /// extensions and overlays bundles, each extension and the overlay; not moonboot's own
    /// talos-agent extension) with this public key before its bytes are used: a PEM `PUBLIC
    /// KEY` (ECDSA P-256, as `cosign.pub`), for a mirror whose images you re-signed with `cosign
    /// sign --key`. Each signature must sign the exact digest pulled; a failure stops the build
    /// with one line naming the image. build.json records every verified signature.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_skip_signature_verification")]
    pub signature_key: Option<PathBuf>,
    /// An earlier build's build.json: every input it recorded (the Talos imager image, the
    /// bundles, the overlay, each extension) must resolve to the same digest again. A tag moved
    /// since — even to another validly signed image — stops the build, naming it.
    #[arg(long, value_name = "BUILD_JSON")]
    pub lock: Option<PathBuf>,
    /// Build without verifying signatures, saying so (a warning, and `signatures.policy:
    /// skipped` in build.json).
    #[arg(long)]
    pub insecure_skip_signature_verification: bool,
    #[command(flatten)]
    pub network: super::netboot::NetworkFlags,
    // With --boot-repository the build also writes cloud-init/user-data-ec2-<arch>.yaml.
    #[command(flatten)]
    pub user_data: super::cloud_init::UserDataFlags,
    /// The published talos-agent extension image to pull (default
    /// ghcr.io/moonboot/talos-agent:v<imager version>; pinned by digest in build.json).
    #[arg(long, value_name = "REF", conflicts_with_all = ["agent_binary", "agent_from_source", "no_talos_agent"])]
    pub talos_agent_image: Option<String>,
    /// Build the talos-agent extension here from this static binary instead of pulling it.
    #[arg(long, value_name = "PATH", conflicts_with = "agent_from_source")]
    pub agent_binary: Option<PathBuf>,
    /// Build the talos-agent extension here, cross-compiling the agent from this source tree
    /// (developers; needs the workspace and the cross toolchain).
    #[arg(long)]
    pub agent_from_source: bool,
    /// Leave the talos-agent extension out.
    #[arg(long)]
    pub no_talos_agent: bool,
    /// The board disk image to write (arm64 only). rpi-cm3 writes rpi-cm3-arm64.raw.xz for a
    /// Raspberry Pi Compute Module 3/3+ (or a Pi 3): hybrid MBR, firmware, U-Boot, GRUB, Talos's
    /// kernel and initramfs with the Raspberry Pi kernel arguments, and Talos's partitions sized
    /// for the disk (see --disk-size). none writes no disk image. Default for --arch arm64:
    /// rpi-cm3 when the board's inputs are given (--board-inputs or MOONBOOT_BOARD_INPUTS),
    /// otherwise none, with a note saying how to get them.
    #[arg(long, value_enum)]
    pub board: Option<Board>,
    /// Directory holding the board's pinned inputs (boards/<board>.inputs: firmware, U-Boot,
    /// device tree, GRUB), each checked against its sha256; `scripts/rpi-inputs DIR` fetches them
    /// from Debian. Default: the MOONBOOT_BOARD_INPUTS environment variable; without either,
    /// --board rpi-cm3 pulls them from --board-inputs-repository.
    #[arg(long, value_name = "DIR")]
    pub board_inputs: Option<PathBuf>,
    /// Repository of the published board inputs (`imager publish --board-inputs`), pulled
    /// through the --registry-mirror's like every other input when --board is given without
    /// --board-inputs: the tag `<board>-<digest of this imager's pins>`, then each file by its
    /// pinned sha256.
    #[arg(long, value_name = "REGISTRY/REPO", default_value = crate::board::inputs::DEFAULT_REPOSITORY)]
    pub board_inputs_repository: String,
    /// Exact size of the target eMMC or SD card (bytes, or with K/M/G for KiB/MiB/GiB or KB/MB/GB
    /// for powers of ten): EPHEMERAL ends at its last usable sector, so Talos has nothing to grow
    /// (and no reason to rewrite the MBR). Read it on the board with `blockdev --getsize64`.
    /// Default: a CM3's 4 GB eMMC (7634944 sectors).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk_size: Option<u64>,
}

/// Boards `imager build --board` writes disk images for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// Raspberry Pi Compute Module 3 / 3+ (BCM2837), also a Raspberry Pi 3.
    #[value(name = "rpi-cm3")]
    RpiCm3,
    /// No board disk image.
    #[value(name = "none")]
    None,
}

impl Board {
    /// The board's name as the flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Board::RpiCm3 => "rpi-cm3",
            Board::None => "none",
        }
    }
}

/// Parses a size: bytes, or a number with K/M/G (KiB, MiB, GiB; also KiB/MiB/GiB) or KB/MB/GB
/// (powers of ten).
///
/// # Errors
/// Anything else, or a size that overflows 64 bits.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 4GB, 8GiB, 3909091328)"))?;
    let mult: u64 = match unit.trim() {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (K, M, G, KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// `imager extension …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ExtensionCommand {
    /// Build the talos-agent extension image as an OCI image layout (for `imager publish`).
    Build(ExtensionArgs),
}

/// `imager extension build` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ExtensionArgs {
    /// Target architecture.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Output directory of the OCI image layout (replaced).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Use this static talos-agent binary instead of cross-compiling it.
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
}
