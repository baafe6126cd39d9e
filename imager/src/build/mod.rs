//! `imager build`: Talos's kernel and initramfs with system extensions, the kernel command
//! lines, the boot artifact, `SHA256SUMS` and `build.json`, reproducibly.
//!
//! Steps: merge profile, schematic and flags ([`profile`]); resolve official extensions and the
//! overlay through the Talos release's bundles ([`crate::bundle`]); pull the Talos imager
//! image's `usr/install/<arch>/{vmlinuz,initramfs.xz}` and every extension image (the published
//! talos-agent extension among them) for the target architecture ([`pull`]); flatten and validate each extension as Talos does
//! ([`crate::extension::tree`], [`crate::extension::manifest`]); or build the talos-agent
//! extension here from a binary ([`agent_extension`]); with an embedded machine configuration
//! (Talos ≥ 1.12), add the `embedded-config` extension last ([`embedded_config`]); assemble the initramfs ([`initramfs`], [`squashfs`], [`cpio`]); unpack
//! the arm64 kernel from EFI zboot for the boot artifact ([`artifact`]); write everything into a
//! temporary directory next to `--output` (`outputs.rs`, with `build.json`'s shape in
//! `build_json.rs`) and move it into place only when all of it succeeded.
//!
//! Outputs in `--output` (Talos's names, `pkg/imager/profile/output.go`):
//! - `kernel-<arch>`: `vmlinuz` as Talos ships it (arm64: EFI zboot);
//! - `initramfs-metal-<arch>.xz`: the initramfs with extensions (a zstd stream despite `.xz`);
//! - `cmdline-metal-<arch>`, `cmdline-aws-<arch>`: the command lines (no trailing newline);
//! - `boot-<arch>/`: the boot artifact as an OCI image layout (tag = Talos version);
//! - `extension-talos-agent-<arch>/`: the talos-agent extension as an OCI image layout (what
//!   `imager extension build` writes), for `imager publish`; only when it was built here
//!   (`--agent-binary`, `--agent-from-source`), not when pulled from its published image;
//! - `talos-agent-<arch>`: the static talos-agent binary packed into the extension (mode 0755;
//!   what `imager publish --agent-to` publishes and the EC2 user-data fetches by digest), whether
//!   built here or taken from the pulled extension image;
//! - `netboot/`: a matchbox data directory, iPXE binaries and dnsmasq configurations for this
//!   image ([`crate::netboot`]; `imager netboot` renders it again with readiness arguments);
//! - `cloud-init/user-data-ec2-<arch>.yaml`: with `--boot-repository` and a talos-agent binary,
//!   the EC2 user-data that boots this build ([`crate::cloud_init`]; `imager cloud-init` renders
//!   it again, e.g. gzip'd); builds of other architectures into the same directory keep theirs;
//! - `rpi-cm3-arm64.raw.xz`: with `--board rpi-cm3`, the Raspberry Pi CM3 disk image
//!   ([`crate::board`]); its layout and pinned inputs are in `build.json`'s `board`. Its
//!   initramfs differs from `initramfs-metal-arm64.xz` in one file: `ext-talos-agent`'s service
//!   spec binds the host's `/dev` read-only for the hybrid MBR check
//!   ([`agent_extension::board_spec`]);
//! - `build.json`: every input and output by digest, the tool version (`build_json.rs`);
//! - `SHA256SUMS`: `sha256sum -c` format, every other file, sorted by path.
//!
//! Reproducible: all times are `SOURCE_DATE_EPOCH` (default [`DEFAULT_EPOCH`]), owners 0, entries
//! sorted, compression settings fixed; the zstd thread count does not change zstd's output.

pub mod agent_extension;
pub mod artifact;
mod build_json;
pub mod cpio;
pub mod embedded_config;
pub mod initramfs;
mod outputs;
pub mod profile;
pub mod progress;
pub mod pull;
pub mod squashfs;

use build_json::{image_input, ExtensionInput, ImageInput, OverlayInput};
use outputs::{install, write_outputs};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_artifact::digest::Sha256Digest;
use kernel_cmdline::preset::{self, Arch, TalosVersion};
use kernel_cmdline::quirks::{Quirk, Quirks};

use crate::cli::build::{Args, Board, ExtensionCommand};
use crate::extension::tree::{Entry, Kind, Tree};
use crate::extension::Manifest;

use progress::{line, Progress};

/// Default `SOURCE_DATE_EPOCH`: 2025-07-01T00:00:00Z (the fixtures use the same).
pub const DEFAULT_EPOCH: u64 = 1_751_328_000;

/// The environment variable naming the board inputs directory when `--board-inputs` is absent.
pub const BOARD_INPUTS_ENV: &str = "MOONBOOT_BOARD_INPUTS";

/// `SOURCE_DATE_EPOCH` or [`DEFAULT_EPOCH`].
///
/// # Errors
/// A value that is not a number of seconds fitting squashfs's 32-bit times.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            let n: u64 = v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?;
            if n > u64::from(u32::MAX) {
                bail!("SOURCE_DATE_EPOCH={n} is past 2106 (squashfs and cpio times are 32-bit)");
            }
            Ok(n)
        }
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// An extension after validation, with what build.json records of it.
struct Validated {
    ext: initramfs::Extension,
    input: ExtensionInput,
}

/// An extension built by this imager rather than pulled (talos-agent from a binary, the
/// embedded configuration): validated like a pulled one, recorded in `build.json` by the digests
/// of its `files` (path → `sha256:…`) since it has no image.
fn built_here(tree: &Tree, what: &str, talos: &semver::Version, files: BTreeMap<String, String>) -> Result<Validated> {
    let (ext, manifest) = validate(tree, what, talos)?;
    Ok(Validated {
        input: ExtensionInput {
            name: manifest.metadata.name.clone(),
            version: manifest.metadata.version.clone(),
            official: None,
            image: None,
            files,
        },
        ext,
    })
}

/// Validates a flattened extension as Talos does and turns it into an [`initramfs::Extension`].
/// `what` names it in messages (its reference). SELinux labels are kept from Talos 1.12
/// ([`Quirk::SeLinuxLabels`]) and dropped below, as Talos's `untar.go` ignores them there.
fn validate(tree: &Tree, what: &str, talos: &semver::Version) -> Result<(initramfs::Extension, Manifest)> {
    // The manifest first, so that content errors can name the extension.
    let manifest_text = match tree.get("manifest.yaml") {
        Some(Entry { kind: Kind::File(d), .. }) => String::from_utf8_lossy(d).into_owned(),
        _ => {
            tree.validate().with_context(|| format!("extension {what}"))?;
            bail!("extension {what}: manifest.yaml is missing");
        }
    };
    let manifest = Manifest::parse(&manifest_text).with_context(|| format!("extension {what}"))?;
    let name = format!("{} ({what})", manifest.metadata.name);
    tree.validate().with_context(|| format!("extension {name}"))?;
    manifest.check_compatible(talos).with_context(|| format!("extension {name}"))?;
    #[derive(serde::Deserialize, Default)]
    struct Extra {
        #[serde(default)]
        metadata: ExtraMeta,
    }
    #[derive(serde::Deserialize, Default)]
    struct ExtraMeta {
        #[serde(default, rename = "extraInfo")]
        extra_info: String,
    }
    let extra: Extra = crate::yaml::from_str(&manifest_text).unwrap_or_default();
    let labels = Quirks::new(TalosVersion::new(talos.major, talos.minor, talos.patch)).has(Quirk::SeLinuxLabels);
    let mut rootfs = BTreeMap::new();
    let mut root_mode = 0o755;
    let mut root_selinux_label = None;
    for (p, e) in tree.entries() {
        let mut e = e.clone();
        if !labels {
            e.selinux_label = None;
        }
        if p == "rootfs" {
            root_mode = e.mode;
            root_selinux_label = e.selinux_label;
        } else if let Some(rel) = p.strip_prefix("rootfs/") {
            rootfs.insert(rel.to_string(), e);
        }
    }
    Ok((
        initramfs::Extension {
            metadata: manifest.metadata.clone(),
            extra_info: extra.metadata.extra_info,
            root_mode,
            root_selinux_label,
            rootfs,
        },
        manifest,
    ))
}

/// Runs `imager build`: `plan` → `pull_inputs` → `assemble` → `write_outputs` (each below), then
/// moves the outputs into `--output`.
///
/// # Errors
/// Any failure, with context; nothing is written to `--output` then.
pub fn run(args: &Args) -> Result<()> {
    let plan = plan(args)?;

    // The temporary output directory sits next to the final one, so moving it is a rename.
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".imager-build-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;

    let pulled = pull_inputs(&plan, tmp.path())?;
    let assembled = assemble(&plan, &pulled)?;
    let out = tmp.path().join("out");
    let boot_digest = write_outputs(&plan, &pulled, &assembled, &out)?;

    install(&out, &args.output)?;
    drop(tmp);
    line(&format!(
        "built {} (Talos {}, schematic {}, extensions: {}; boot artifact {boot_digest})",
        args.output.display(),
        plan.profile.talos_version,
        assembled.schematic_id,
        assembled.notes.iter().map(|n| format!("{} {}", n.name, n.version)).collect::<Vec<_>>().join(", "),
    ));
    Ok(())
}

/// What one `imager build` makes, decided before anything is pulled.
struct Plan {
    /// Target architecture.
    arch: Arch,
    /// `SOURCE_DATE_EPOCH`: every time in the outputs.
    epoch: u64,
    /// Profile, schematic and flags merged: Talos version, base image, extensions by name and by
    /// reference, overlay, talos-agent source, extra kernel arguments.
    profile: profile::Plan,
    /// The Talos version as semver, for the extensions' compatibility checks.
    talos: semver::Version,
    /// The Talos version, for its quirks ([`kernel_cmdline::quirks`]).
    talos_preset: TalosVersion,
    /// The `metal` command line (also the boot artifact's), with the overlay's arguments.
    cmdline_metal: String,
    /// The `aws` command line.
    cmdline_aws: String,
    /// How to reach registries.
    registry: moonboot_registry::Options,
    /// How the upstream inputs' signatures are checked.
    signatures: pull::SignaturePolicy,
    /// `--lock`: the file and the digests it pins.
    lock: Option<(String, BTreeMap<String, Sha256Digest>)>,
    /// The boot network, for `netboot/`.
    netboot: crate::netboot::Options,
    /// What the EC2 instance uses, with `--boot-repository` (for `cloud-init/`).
    user_data: Option<crate::cloud_init::Instance>,
    /// `--output`, for the hint of how to render the user-data later.
    output: PathBuf,
    /// `--board`: the board disk image to write.
    board: Option<BoardPlan>,
    /// The published iPXE binaries to pull for `netboot/tftp/`, when `--ipxe-dir` lacks this
    /// architecture's (`--board-inputs-repository`, tagged [`crate::board::inputs::tag`] of
    /// `boards/ipxe.inputs`).
    ipxe: Option<boot_artifact::reference::Reference>,
}

/// Where a board's pinned inputs come from.
enum BoardInputs {
    /// `--board-inputs DIR` (or [`BOARD_INPUTS_ENV`]).
    Dir(PathBuf),
    /// The published artifact of this imager's pins (`--board-inputs-repository`, tagged
    /// [`crate::board::inputs::tag`]).
    Registry(boot_artifact::reference::Reference),
}

/// A board disk image to write (`--board`).
struct BoardPlan {
    /// The board.
    board: crate::cli::build::Board,
    /// Where its pinned inputs come from.
    inputs: BoardInputs,
    /// `--disk-size`, or the board's default.
    disk_size: u64,
    /// Its command line: the metal preset with the Raspberry Pi overlay's arguments and the
    /// board's own ([`crate::board::rpi_cm3_kernel_args`]).
    cmdline: String,
}

/// Step 1, plan: reads `SOURCE_DATE_EPOCH`, merges profile, schematic and flags
/// ([`profile::plan`]), computes both kernel command lines (the metal one with the overlay's
/// arguments) and the registry options, and warns about extensions not pinned by digest.
/// Touches no registry and writes nothing.
///
/// # Errors
/// An invalid epoch, profile, schematic, Talos version, overlay, kernel argument or registry flag.
fn plan(args: &Args) -> Result<Plan> {
    let epoch = source_date_epoch()?;
    let profile = profile::plan(&profile::Flags {
        profile: args.profile.as_deref(),
        schematic: args.schematic.as_deref(),
        talos_version: args.talos_version.as_deref(),
        embed_config: args.embed_config.as_deref(),
        base: args.base.as_deref(),
        system_extension_images: &args.system_extension_images,
        overlay: args.overlay.as_deref(),
        extra_kernel_args: &args.extra_kernel_args,
        no_talos_agent: args.no_talos_agent,
        talos_agent_image: args.talos_agent_image.as_deref(),
        agent_binary: args.agent_binary.as_deref(),
        agent_from_source: args.agent_from_source,
        extensions_bundle: args.extensions_bundle.as_deref(),
        overlays_bundle: args.overlays_bundle.as_deref(),
    })?;
    let talos = semver::Version::parse(profile.talos_version.trim_start_matches('v'))
        .with_context(|| format!("Talos version {:?}", profile.talos_version))?;
    let talos_preset: TalosVersion = profile.talos_version.parse().context("Talos version")?;
    let overlay = match profile.overlay.as_deref() {
        None => None,
        Some(name) => Some(preset::Overlay::from_name(name).with_context(|| {
            format!("overlay {name:?}: its kernel arguments are not known to this imager (known: rpi_generic)")
        })?),
    };
    if let Some(embedded) = &profile.embedded_config {
        anyhow::ensure!(
            Quirks::new(talos_preset).has(Quirk::EmbeddedConfig),
            "{}: an embedded machine configuration needs Talos v1.12.0 or later (Talos {} does not read \
             /usr/local/etc/talos/config.yaml; Image Factory refuses it too)",
            embedded.source,
            profile.talos_version
        );
        let documents = crate::machine_config::validate(&embedded.config, talos_preset).with_context(|| {
            format!("{}: not a Talos {} machine configuration", embedded.source, profile.talos_version)
        })?;
        if !documents.iter().any(|d| d.kind == "v1alpha1") {
            // talos internal/app/machined/pkg/controllers/config/acquire.go: without the v1alpha1
            // document the configuration is not complete for boot.
            line(&format!(
                "note: {} has no v1alpha1 document: the node still starts in maintenance mode and waits for the rest",
                embedded.source
            ));
        }
        line(&format!(
            "note: the image embeds a machine configuration ({}) with the cluster's secrets: publish it only to a \
             private repository",
            embedded.source
        ));
    }
    let extra = crate::kernel_args::parse_extra(&profile.extra_kernel_args)?;
    let cmdline_metal = preset::talos(talos_preset, preset::Platform::Metal, args.arch, overlay, &extra)?;
    let cmdline_aws = preset::talos(talos_preset, preset::Platform::Aws, args.arch, None, &extra)?;
    for r in &profile.system_extensions {
        if r.digest.is_none() {
            line(&format!("warning: {r} is not pinned by digest; build.json records what it resolved to"));
        }
    }
    if let profile::TalosAgent::Image(r) = &profile.talos_agent {
        if r.digest.is_none() {
            line(&format!("talos-agent extension {r}: pinned by the digest it resolves to (build.json)"));
        }
    }
    let board_inputs = args.board_inputs.clone().or_else(|| std::env::var_os(BOARD_INPUTS_ENV).map(PathBuf::from));
    let board = match (args.board, args.arch) {
        (Some(Board::None), _) => None,
        // The default output set: the operator's boards are CM3s, so an arm64 build writes their
        // disk image whenever the pinned inputs are at hand.
        (None, Arch::Arm64) if board_inputs.is_some() => Some(Board::RpiCm3),
        (None, Arch::Arm64) => {
            line(&format!(
                "note: no rpi-cm3-arm64.raw.xz: its pinned firmware, U-Boot, device tree and GRUB are not given (--board rpi-cm3 pulls them from --board-inputs-repository; or --board-inputs DIR or {BOARD_INPUTS_ENV}, which scripts/rpi-inputs DIR fills)"
            ));
            None
        }
        (None, _) => None,
        (Some(board), _) => Some(board),
    };
    let board = match board {
        None => None,
        Some(board) => {
            anyhow::ensure!(args.arch == Arch::Arm64, "--board {} needs --arch arm64", board.as_str());
            let inputs = match board_inputs {
                Some(dir) => BoardInputs::Dir(dir),
                None => BoardInputs::Registry(crate::board::inputs::reference(
                    &args.board_inputs_repository,
                    board.as_str(),
                    &crate::board::rpi_cm3_pins()?,
                )?),
            };
            let cmdline = preset::talos(
                talos_preset,
                preset::Platform::Metal,
                args.arch,
                Some(preset::Overlay::RpiGeneric),
                &crate::board::rpi_cm3_kernel_args(&extra)?,
            )?;
            Some(BoardPlan {
                board,
                inputs,
                disk_size: args.disk_size.unwrap_or(crate::board::CM3_EMMC_BYTES),
                cmdline: cmdline.to_string(),
            })
        }
    };
    let registry = args.registry.options()?;
    let user_data = crate::cloud_init::Instance::from_flags(&args.user_data)?;
    if let Some(instance) = &user_data {
        // Every value and the size are known now (digests have a fixed length): fail before
        // pulling anything rather than after the whole build.
        let zero = Sha256Digest::from_bytes([0; 32]);
        crate::cloud_init::render_ec2(&crate::cloud_init::UserData {
            arch: args.arch,
            boot_digest: zero,
            agent_digest: zero,
            instance: instance.clone(),
            provenance: crate::cloud_init::Provenance::new(&profile.talos_version, &zero.hex()),
        })?;
    }
    let signatures = match (&args.signature_key, args.insecure_skip_signature_verification) {
        (Some(path), _) => {
            let key = boot_artifact::cosign::PublicKey::from_pem_file(path)
                .map_err(|e| anyhow::anyhow!("--signature-key {}: {e}", path.display()))?;
            line(&format!("verifying the upstream inputs' cosign signatures with key {}", key.fingerprint()));
            pull::SignaturePolicy::Key(key)
        }
        (None, true) => {
            line("warning: --insecure-skip-signature-verification: the upstream inputs' signatures are not verified");
            pull::SignaturePolicy::Skip
        }
        (None, false) => {
            line("note: the upstream inputs are not signature-verified (no --signature-key); build.json records it");
            pull::SignaturePolicy::None
        }
    };
    let lock = match &args.lock {
        None => None,
        Some(path) => {
            let what = format!("--lock {}", path.display());
            let bytes = std::fs::read(path).with_context(|| what.clone())?;
            let doc: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{what}: not JSON"))?;
            let digests = pull::lock_from_build_json(&doc).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            anyhow::ensure!(!digests.is_empty(), "{what}: records no input (is it a build.json?)");
            Some((path.display().to_string(), digests))
        }
    };
    let ipxe_file = crate::board::inputs::ipxe_file(args.arch.as_str());
    let ipxe = if args.network.ipxe_dir.join(&ipxe_file).is_file() {
        None
    } else {
        Some(crate::board::inputs::reference(
            &args.board_inputs_repository,
            crate::board::inputs::IPXE,
            &crate::board::ipxe_pins()?,
        )?)
    };
    Ok(Plan {
        arch: args.arch,
        epoch,
        profile,
        talos,
        talos_preset,
        cmdline_metal: cmdline_metal.to_string(),
        cmdline_aws: cmdline_aws.to_string(),
        registry,
        signatures,
        lock,
        netboot: crate::netboot::Options::network(&args.network),
        user_data,
        output: args.output.clone(),
        board,
        ipxe,
    })
}

/// One extension image to pull.
struct ExtensionSource {
    /// Where to pull it from (pinned by digest for official extensions).
    reference: boot_artifact::reference::Reference,
    /// The Image Factory name it was resolved by (`siderolabs/spin`), for official extensions.
    official: Option<String>,
    /// The `metadata.name` its manifest must have, when one was asked for by name.
    name: Option<String>,
}

/// Everything a build is made from, pulled or compiled and validated.
struct Pulled {
    /// Talos's `vmlinuz` for the architecture, as shipped (arm64: EFI zboot).
    vmlinuz: Vec<u8>,
    /// Talos's `initramfs.xz`, before extensions.
    base_initramfs: Vec<u8>,
    /// The release's SPDX SBOM (`talos.spdx.json`, Talos ≥ 1.11), written as
    /// `talos-<arch>.spdx.json`.
    sbom: Option<Vec<u8>>,
    /// What build.json records of the Talos imager image.
    base_input: ImageInput,
    /// Every extension, validated: the pulled ones in plan order, then talos-agent.
    extensions: Vec<Validated>,
    /// The talos-agent extension's image layer (a tar) and its version, when it was built here.
    agent_layer: Option<(Vec<u8>, String)>,
    /// The static talos-agent binary in the talos-agent extension, or why there is none.
    agent_binary: Result<Vec<u8>, String>,
    /// The extensions bundle, when official extensions were resolved through it.
    extensions_bundle: Option<crate::bundle::BundleSource>,
    /// The overlays bundle and the overlay, when one was asked for.
    overlay: Option<(crate::bundle::BundleSource, OverlayInput, boot_artifact::reference::Reference)>,
    /// The board's pinned inputs (file name → bytes, each checked against its pin), with
    /// `--board`.
    board_inputs: Option<BTreeMap<String, Vec<u8>>>,
    /// The upstream inputs' signatures that verified (under a key policy).
    signatures: Vec<moonboot_registry::VerifiedSignature>,
    /// This architecture's iPXE binary (`ipxe-<arch>.efi` → bytes, checked against its pin), when
    /// it was pulled; empty when `--ipxe-dir` has it or the pull failed (then a note said why).
    ipxe: BTreeMap<String, Vec<u8>>,
}

/// Step 2, pull: resolves official extensions and the overlay through the Talos release's
/// bundles, then — while talos-agent is compiled or read on another thread, when it is built
/// here — pulls the Talos imager image's `vmlinuz` and `initramfs.xz` and every extension image
/// for the architecture (blobs spooled in `tmp`), flattening and validating each extension as
/// Talos does. Returns them with what build.json records of them.
///
/// # Errors
/// A bundle that cannot be reached or read, an unknown extension or overlay name (with near
/// matches), a registry or layer failure, an invalid or incompatible extension, a manifest name
/// that is not the one asked for, an extension listed twice, a failed talos-agent build.
fn pull_inputs(plan: &Plan, tmp: &Path) -> Result<Pulled> {
    use profile::TalosAgent;
    let arch = plan.arch.as_str();
    let agent_job = match &plan.profile.talos_agent {
        TalosAgent::Binary(p) => {
            let p = p.clone();
            Some(std::thread::spawn(move || agent_extension::binary(arch, Some(&p))))
        }
        TalosAgent::FromSource => Some(std::thread::spawn(move || agent_extension::binary(arch, None))),
        TalosAgent::Off | TalosAgent::Image(_) => None,
    };

    let mut puller = pull::Puller::new(plan.registry.clone())?.with_policy(plan.signatures.clone());
    if let Some((file, digests)) = &plan.lock {
        puller = puller.with_lock(file.clone(), digests.clone());
    }

    // Official extensions by name, through the bundle of this very Talos version.
    let mut sources: Vec<ExtensionSource> = Vec::new();
    let mut extensions_bundle = None;
    if !plan.profile.official_extensions.is_empty() {
        let r = &plan.profile.extensions_bundle;
        line(&format!("resolving official extensions through {r}"));
        let bundle = crate::bundle::extensions_bundle(&puller, r, arch)?;
        for name in &plan.profile.official_extensions {
            let e = bundle.find(name)?;
            let reference = e.image.parse().with_context(|| format!("{}: {}", bundle.source.reference, e.image))?;
            // The name is the image's repository path; the manifest names the extension itself.
            let short = name.rsplit('/').next().unwrap_or(name).to_string();
            sources.push(ExtensionSource { reference, official: Some(name.clone()), name: Some(short) });
        }
        extensions_bundle = Some(bundle.source);
    }
    sources.extend(plan.profile.system_extensions.iter().map(|r| ExtensionSource {
        reference: r.clone(),
        official: None,
        name: None,
    }));
    if let TalosAgent::Image(r) = &plan.profile.talos_agent {
        sources.push(ExtensionSource {
            reference: r.clone(),
            official: None,
            name: Some(agent_extension::NAME.to_string()),
        });
    }
    let overlay = match &plan.profile.overlay {
        None => None,
        Some(name) => {
            let r = &plan.profile.overlays_bundle;
            line(&format!("resolving overlay {name} through {r}"));
            let bundle = crate::bundle::overlays_bundle(&puller, r, arch)?;
            let reference = bundle.find(name)?.reference()?;
            let resolved =
                puller.resolve_signed(&reference, arch).with_context(|| format!("overlay {name} ({reference})"))?;
            let input = OverlayInput { name: name.clone(), image: image_input(&resolved, BTreeMap::new()) };
            Some((bundle.source, input, reference))
        }
    };

    let bar = Progress::bytes(&format!("pulling {} for linux/{arch}", plan.profile.base));
    let base = puller.resolve_signed(&plan.profile.base, arch).context("Talos imager image")?;
    let pull::BootFiles { vmlinuz, initramfs: base_initramfs, sbom } = puller.boot_files(&base, arch, tmp, &bar)?;
    bar.finish();
    let (kpath, ipath) = boot_artifact::artifact::imager_paths(arch);
    let mut files = BTreeMap::from([
        (kpath, Sha256Digest::of(&vmlinuz).to_string()),
        (ipath, Sha256Digest::of(&base_initramfs).to_string()),
    ]);
    match &sbom {
        Some(b) => {
            files.insert(pull::sbom_path(arch), Sha256Digest::of(b).to_string());
        }
        None if Quirks::new(plan.talos_preset).has(Quirk::Spdx) => line(&format!(
            "warning: {} has no /{}, which Talos {} images carry: is it a Talos imager image?",
            plan.profile.base,
            pull::sbom_path(arch),
            plan.profile.talos_version
        )),
        None => {}
    }
    let base_input = image_input(&base, files);

    let mut validated: Vec<Validated> = Vec::new();
    for ExtensionSource { reference, official, name } in &sources {
        let bar = Progress::bytes(&format!("pulling extension {reference} for linux/{arch}"));
        // The talos-agent extension is moonboot's, not an upstream input: pinned by its digest
        // in build.json, not verified with the upstream signature policy.
        let resolved = if name.as_deref() == Some(agent_extension::NAME) {
            puller.resolve(reference, arch)
        } else {
            puller.resolve_signed(reference, arch)
        }
        .context("extension")?;
        let tree = puller.extension_tree(&resolved, &bar).with_context(|| format!("extension {reference}"))?;
        bar.finish();
        let (ext, manifest) = validate(&tree, &reference.to_string(), &plan.talos)?;
        if let Some(name) = name.as_ref().filter(|n| **n != manifest.metadata.name) {
            bail!("extension {reference}: manifest name {:?} is not {name:?}", manifest.metadata.name);
        }
        validated.push(Validated {
            input: ExtensionInput {
                name: manifest.metadata.name.clone(),
                version: manifest.metadata.version.clone(),
                official: official.clone(),
                image: Some(image_input(&resolved, BTreeMap::new())),
                files: BTreeMap::new(),
            },
            ext,
        });
    }
    // The talos-agent extension built here (written as `extension-talos-agent-<arch>/`).
    let mut agent_layer: Option<(Vec<u8>, String)> = None;
    if let Some(job) = agent_job {
        let bin = job.join().map_err(|_| anyhow::anyhow!("the talos-agent build thread panicked"))??;
        let bin_digest = Sha256Digest::of(&bin).to_string();
        let tree = agent_extension::tree(bin)?;
        let files = BTreeMap::from([
            (agent_extension::BINARY_PATH.to_string(), bin_digest),
            ("manifest.yaml".to_string(), Sha256Digest::of(agent_extension::MANIFEST.as_bytes()).to_string()),
            (
                agent_extension::SPEC_PATH.to_string(),
                Sha256Digest::of(agent_extension::SERVICE_SPEC.as_bytes()).to_string(),
            ),
        ]);
        let v = built_here(&tree, "built from this repository", &plan.talos, files)?;
        agent_layer = Some((agent_extension::layer_tar(&tree, plan.epoch)?, v.input.version.clone()));
        validated.push(v);
    }
    // The embedded machine configuration, after every other extension (talos `pkg/imager`
    // `Execute`: `handleEmbeddedConfig` appends it last).
    if let Some(embedded) = &plan.profile.embedded_config {
        let tree = embedded_config::tree(&embedded.config, plan.talos_preset);
        let files = BTreeMap::from([(
            embedded_config::CONFIG_PATH.to_string(),
            Sha256Digest::of(&embedded.config).to_string(),
        )]);
        validated.push(built_here(&tree, &embedded.source, &plan.talos, files)?);
    }
    let mut names = std::collections::BTreeSet::new();
    for v in &validated {
        if !names.insert(v.ext.metadata.name.clone()) {
            bail!("extension {} is listed twice", v.ext.metadata.name);
        }
    }
    let agent_binary = agent_binary_of(&validated, arch);
    let board_inputs = match &plan.board {
        None => None,
        Some(b) => Some(board_inputs(&puller, b)?),
    };
    let ipxe = match &plan.ipxe {
        None => BTreeMap::new(),
        Some(r) => ipxe_binary(&puller, r, arch).unwrap_or_else(|e| {
            line(&format!(
                "note: no {} for netboot/tftp/: {e:#} (give --ipxe-dir DIR with Debian trixie's ipxe binaries)",
                crate::board::inputs::ipxe_file(arch)
            ));
            BTreeMap::new()
        }),
    };
    Ok(Pulled {
        vmlinuz,
        base_initramfs,
        sbom,
        base_input,
        extensions: validated,
        agent_layer,
        agent_binary,
        extensions_bundle,
        overlay,
        board_inputs,
        ipxe,
        signatures: puller.verified(),
    })
}

/// Reads the board's pinned inputs from `--board-inputs DIR`, or pulls them from the published
/// artifact: the manifest by tag, then each file by its pinned digest.
///
/// # Errors
/// A file missing or not matching its pin (one line naming it and its package); the artifact not
/// reachable through any mirror or the origin, or lacking a pinned file.
fn board_inputs(puller: &pull::Puller, b: &BoardPlan) -> Result<BTreeMap<String, Vec<u8>>> {
    use crate::board::inputs;
    let pins = crate::board::rpi_cm3_pins()?;
    match &b.inputs {
        BoardInputs::Dir(dir) => Ok(inputs::load(&pins, dir).map_err(anyhow::Error::msg)?),
        BoardInputs::Registry(r) => {
            line(&format!("pulling the {} board inputs from {r}", b.board.as_str()));
            let hint = format!(
                "the {} board inputs {r} (publish them with `imager publish --board-inputs DIR`, or give \
                 --board-inputs DIR; scripts/rpi-inputs DIR fetches them from Debian)",
                b.board.as_str()
            );
            pull_pinned(puller, r, "arm64", &pins, &hint)
        }
    }
}

/// Pulls this architecture's pinned iPXE binary from the published artifact `r`.
///
/// # Errors
/// As [`pull_pinned`].
fn ipxe_binary(
    puller: &pull::Puller,
    r: &boot_artifact::reference::Reference,
    arch: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    use crate::board::inputs;
    let file = inputs::ipxe_file(arch);
    let pins: Vec<_> = crate::board::ipxe_pins()?.into_iter().filter(|p| p.file == file).collect();
    anyhow::ensure!(!pins.is_empty(), "boards/ipxe.inputs pins no {file}");
    line(&format!("pulling {file} from {r}"));
    let hint = format!("the iPXE binaries {r} (publish them with `imager publish --ipxe-inputs DIR`)");
    pull_pinned(puller, r, arch, &pins, &hint)
}

/// Pulls the files `pins` name from the published pinned-inputs artifact `r` (its `arch`
/// manifest): the manifest by tag, then each file by its pinned digest, bounded by
/// [`crate::board::inputs::MAX_FILE`]. `hint` names the artifact and how to publish it, for errors.
///
/// # Errors
/// The artifact not reachable through any mirror or the origin, lacking a pinned file, or a file
/// over the bound.
fn pull_pinned(
    puller: &pull::Puller,
    r: &boot_artifact::reference::Reference,
    arch: &str,
    pins: &[crate::board::inputs::Pin],
    hint: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    use crate::board::inputs;
    let from = puller.resolve(r, arch).with_context(|| hint.to_string())?;
    let layers = inputs::layers_for(pins, &from.manifest).map_err(|e| anyhow::anyhow!("{hint}: {e}"))?;
    let mut out = BTreeMap::new();
    for (file, layer) in layers {
        let data = puller.fetch_small(&from, &layer, inputs::MAX_FILE).with_context(|| format!("{hint}: {file}"))?;
        out.insert(file, data);
    }
    Ok(out)
}

/// The static binary in the talos-agent extension among `extensions` (built here or pulled),
/// checked to be a static ELF executable for `arch`; or why there is none.
fn agent_binary_of(extensions: &[Validated], arch: &str) -> Result<Vec<u8>, String> {
    let Some(agent) = extensions.iter().find(|v| v.ext.metadata.name == agent_extension::NAME) else {
        return Err("the build has no talos-agent extension (--no-talos-agent)".to_string());
    };
    let path = agent_extension::BINARY_PATH.strip_prefix("rootfs/").expect("under rootfs/");
    match agent.ext.rootfs.get(path) {
        Some(Entry { kind: Kind::File(bin), .. }) => {
            let what = format!("the talos-agent extension's /{path}");
            agent_extension::check_binary(bin, arch, &what).map_err(|e| format!("{e:#}"))?;
            Ok(bin.clone())
        }
        _ => Err(format!("the talos-agent extension has no file /{path}")),
    }
}

/// What a build assembled from its inputs, ready to be written.
struct Assembled {
    /// The initramfs with the extensions, and its squashfs layers.
    initramfs: initramfs::Assembled,
    /// The board image's initramfs when it differs ([`board_extensions`]).
    board_initramfs: Option<Vec<u8>>,
    /// The kernel the boot artifact carries: arm64 Image unpacked from zboot, x86 bzImage as is.
    kernel_image: Vec<u8>,
    /// The schematic's canonical YAML.
    schematic_yaml: String,
    /// The schematic's ID.
    schematic_id: String,
    /// The extensions as the boot artifact names them, in layer order.
    notes: Vec<boot_artifact::artifact::ExtensionAnnotation>,
}

/// Step 3, assemble: builds the initramfs with the extensions on every core, unpacks the arm64
/// kernel from EFI zboot for the boot artifact, and computes the schematic (YAML and ID) and the
/// boot artifact's extension notes. Returns them; writes nothing.
///
/// # Errors
/// An initramfs Talos would not boot, a kernel that does not unpack, a schematic that cannot be
/// encoded reproducibly.
fn assemble(plan: &Plan, pulled: &Pulled) -> Result<Assembled> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exts: Vec<initramfs::Extension> = pulled.extensions.iter().map(|v| v.ext.clone()).collect();
    let mtime = u32::try_from(plan.epoch).expect("checked in source_date_epoch");
    let board_exts = match plan.board {
        Some(_) => board_extensions(&exts)?,
        None => None,
    };
    let assembled = initramfs::assemble(&pulled.base_initramfs, exts, mtime, threads, threads as u32, &|m| line(m))?;
    let board_initramfs = match board_exts {
        Some(exts) => {
            line(
                "assembling the board image's initramfs (ext-talos-agent with the boot disk: a read-only bind of /dev)",
            );
            let a = initramfs::assemble(&pulled.base_initramfs, exts, mtime, threads, threads as u32, &|m| line(m))?;
            Some(a.initramfs)
        }
        None => None,
    };

    // The kernel the boot artifact carries: arm64 Image unpacked from zboot, x86 bzImage as is.
    let kernel_image = match plan.arch {
        Arch::Arm64 => {
            let mut out = Vec::new();
            boot_artifact::kernel::unpack_arm64(&mut std::io::Cursor::new(&pulled.vmlinuz), &mut out, pull::MAX_KERNEL)
                .context("unpacking the arm64 kernel")?;
            out
        }
        Arch::Amd64 => pulled.vmlinuz.clone(),
    };

    let schematic = profile::schematic(&plan.profile, pulled.overlay.as_ref().map(|(_, _, r)| r));
    let schematic_yaml = schematic.marshal()?;
    let schematic_id = schematic.id()?;
    let notes = pulled
        .extensions
        .iter()
        .map(|v| {
            let digest = v.input.image.as_ref().map(|i| i.index_digest.as_ref().unwrap_or(&i.manifest_digest));
            Ok(boot_artifact::artifact::ExtensionAnnotation {
                name: v.input.name.clone(),
                version: v.input.version.clone(),
                digest: digest.map(|d| d.parse()).transpose().context("an extension's digest")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Notes in layer order.
    let order = initramfs::layer_order(notes.len());
    let notes: Vec<_> = order.iter().map(|&i| notes[i].clone()).collect();
    Ok(Assembled { initramfs: assembled, board_initramfs, kernel_image, schematic_yaml, schematic_id, notes })
}

/// The extensions of a board image: `exts` with the talos-agent extension's service spec given
/// the read-only `/dev` bind that only board images need
/// ([`agent_extension::board_spec`]); `None` without a talos-agent extension (then the board
/// image has the same initramfs as every other output).
///
/// # Errors
/// A talos-agent extension whose spec is missing, not UTF-8 or has no mounts list.
fn board_extensions(exts: &[initramfs::Extension]) -> Result<Option<Vec<initramfs::Extension>>> {
    let Some(i) = exts.iter().position(|e| e.metadata.name == agent_extension::NAME) else {
        return Ok(None);
    };
    let mut exts = exts.to_vec();
    let path = agent_extension::spec_rootfs_path();
    let entry = exts[i]
        .rootfs
        .get_mut(path)
        .with_context(|| format!("the {} extension has no {path}", agent_extension::NAME))?;
    let crate::extension::tree::Kind::File(bytes) = &mut entry.kind else {
        bail!("the {} extension's {path} is not a regular file", agent_extension::NAME);
    };
    let spec = std::str::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))?;
    *bytes = agent_extension::board_spec(spec)?.into_bytes();
    Ok(Some(exts))
}

/// Runs `imager extension …`.
///
/// # Errors
/// Compiling or reading the binary, writing the layout.
pub fn run_extension(cmd: &ExtensionCommand) -> Result<()> {
    let ExtensionCommand::Build(args) = cmd;
    let arch = args.arch.as_str();
    let epoch = source_date_epoch()?;
    let bin = agent_extension::binary(arch, args.agent_binary.as_deref())?;
    let tree = agent_extension::tree(bin)?;
    tree.validate().context("talos-agent extension")?;
    let manifest = agent_extension::manifest()?;
    let tar = agent_extension::layer_tar(&tree, epoch)?;
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let tmp = tempfile::Builder::new().prefix(".imager-extension-").tempdir_in(&parent)?;
    let dir = tmp.path().join("layout");
    let desc = artifact::write_extension_image(&dir, arch, &tar, epoch, &manifest.metadata.version)?;
    if args.output.exists() {
        std::fs::remove_dir_all(&args.output).with_context(|| format!("replacing {}", args.output.display()))?;
    }
    std::fs::rename(&dir, &args.output).with_context(|| format!("moving into {}", args.output.display()))?;
    println!("{}", desc.digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[18] = 183;
        elf.extend_from_slice(b"talos-agent");
        elf
    }

    /// The talos-agent extension as `pull_inputs` holds it, pulled or built here alike: a
    /// flattened tree, validated.
    fn agent_extension(bin: Vec<u8>) -> Validated {
        let talos = semver::Version::new(1, 10, 5);
        let (ext, manifest) = validate(&agent_extension::tree(bin).unwrap(), "test", &talos).unwrap();
        let input = ExtensionInput {
            name: manifest.metadata.name.clone(),
            version: manifest.metadata.version.clone(),
            official: None,
            image: None,
            files: BTreeMap::new(),
        };
        Validated { ext, input }
    }

    #[test]
    fn the_agent_binary_comes_out_of_the_talos_agent_extension() {
        let elf = arm64_elf();
        assert_eq!(agent_binary_of(&[agent_extension(elf.clone())], "arm64"), Ok(elf.clone()));
        let err = agent_binary_of(&[agent_extension(elf)], "amd64").unwrap_err();
        assert!(err.contains("ELF machine 183, not 62"), "{err}");
        let err = agent_binary_of(&[agent_extension(b"#!/bin/sh\n".repeat(8))], "arm64").unwrap_err();
        assert!(err.contains("not a 64-bit little-endian ELF file"), "{err}");
        assert_eq!(
            agent_binary_of(&[], "arm64").unwrap_err(),
            "the build has no talos-agent extension (--no-talos-agent)"
        );
    }
}
