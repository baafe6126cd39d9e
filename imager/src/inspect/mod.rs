//! `imager inspect`: what a boot artifact, an extension image or a Talos imager image holds, read
//! from a registry (`REGISTRY/REPO:TAG` or `@sha256:…`), from an OCI image layout directory, or
//! from the output directory of `imager build` (its `boot-<arch>/`, and the board disk image
//! when it wrote one); also a board disk image itself ([`disk`]: `.raw` or `.raw.xz`).
//!
//! Every blob is verified against its digest before anything read from it is reported. What kind
//! of image it is:
//! - **boot artifact**: the manifest carries [`ANNOTATION_FORMAT`] (the contract in
//!   `boot_artifact::artifact`): Talos version, schematic ID, extensions, the command line, and
//!   the kernel's format recognised from its first bytes by `boot_artifact::kernel::detect`;
//! - **extension**: the flattened layers hold `manifest.yaml` and `rootfs/` at the top (Talos
//!   `pkg/machinery/extensions/load.go`): the manifest's metadata, a summary of the files, and
//!   whether Talos's content rules accept it ([`crate::extension::tree::Tree::validate`]);
//! - **Talos imager image**: the layers hold files under `usr/install/<arch>/` (Talos
//!   `pkg/imager/profile/input.go`): those files, and the kernel format of each `vmlinuz`;
//! - anything else: its layers.
//!
//! Layers are read by the shared layer reader (`boot_artifact::layer`: compression from magic
//! bytes, OCI whiteouts, bounds, hostile paths refused); only a few small files are kept in
//! memory, and a remote blob is spooled to a temporary file, so an image of any size is inspected
//! in bounded memory.
//!
//! - [`model`]: what is reported (`--json`);
//! - `scan`: reading the layers and turning them into the model;
//! - [`render`]: the text form;
//! - [`disk`] and [`gpt`]: disk images.

pub mod disk;
pub mod gpt;
pub mod model;
pub mod render;
mod scan;

use std::fs::File;
use std::io::{self, BufReader, Seek};
use std::path::{Path, PathBuf};

use anyhow::Context;
use boot_artifact::artifact::{self, Role};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::layer::LayerError;
use boot_artifact::oci::{media_type, Descriptor, ImageManifest};
use boot_artifact::reference::Reference;
use kernel_cmdline::preset::Arch;
use moonboot_registry::{Registry, Resolved};

use crate::board::image_name;
use crate::cli::build::Board;
use crate::cli::inspect::Args;
use crate::oci_layout::{blob_error, BlobReader, LayoutError, OciLayout};
use crate::publish::boot_layout_dir;
pub use model::*;
pub use render::{render, render_disk};
pub use scan::{initramfs_format, kernel_format};

/// Largest small file kept in memory while scanning (`manifest.yaml`, `boot/cmdline`): 1 MiB.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// Why an image could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A layout or one of its blobs could not be read.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] moonboot_registry::Error),
    /// Spooling a blob or decoding a layer failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        error: io::Error,
    },
    /// A boot artifact annotation does not have the contract's shape.
    #[error("annotation {key}: {reason}")]
    Annotation {
        /// The annotation key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A layer was refused by the layer reader (hostile path, decompression bound, not a tar).
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer.
        digest: Sha256Digest,
        /// The refusal.
        source: LayerError,
    },
    /// A format-1 boot artifact's layer lacks its file.
    #[error("boot artifact has no {0} (layer annotated {role}={1} holding {2})", role = artifact::ANNOTATION_ROLE)]
    MissingRole(&'static str, &'static str, &'static str),
    /// A manifest that names itself a boot artifact is not a readable one.
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
}

/// Where blobs come from.
pub enum Blobs<'a> {
    /// A local OCI image layout.
    Layout(&'a OciLayout),
    /// A registry, through what `resolve` found.
    Remote(&'a Registry, &'a Resolved),
}

type Blob = BlobReader<BufReader<File>>;

impl Blobs<'_> {
    /// Opens `desc`'s blob as a verifying reader; a remote blob is first spooled, verified, to an
    /// anonymous temporary file.
    async fn open(&self, desc: &Descriptor) -> Result<(Blob, PathBuf), InspectError> {
        match self {
            Blobs::Layout(layout) => Ok((layout.open_blob(desc)?, layout.blob_path(&desc.digest))),
            Blobs::Remote(registry, resolved) => {
                let what = format!("spooling blob {}", desc.digest);
                let io_err = |error| InspectError::Io { what: what.clone(), error };
                let mut file = tempfile::tempfile().map_err(io_err)?;
                {
                    let mut sink = io::BufWriter::new(&mut file);
                    registry.fetch_blob(resolved, desc, &mut sink).await?;
                    io::Write::flush(&mut sink).map_err(io_err)?;
                }
                file.rewind().map_err(io_err)?;
                let path = PathBuf::from(format!("{}@{}", resolved.reference, desc.digest));
                Ok((BlobReader::new(BufReader::new(file), desc.digest, desc.size), path))
            }
        }
    }
}

/// One image to inspect: where it came from and its manifest's parts.
pub struct Image<'a> {
    /// What was inspected, as given.
    pub source: String,
    /// `linux/<arch>`.
    pub platform: String,
    /// The index the manifest was chosen from, if any.
    pub index_digest: Option<Sha256Digest>,
    /// The manifest's digest.
    pub manifest_digest: Sha256Digest,
    /// The manifest.
    pub manifest: &'a ImageManifest,
}

/// Inspects one image, reading its blobs from `blobs`.
///
/// # Errors
/// [`InspectError`].
pub async fn inspect_image(image: Image<'_>, blobs: &Blobs<'_>) -> Result<Inspection, InspectError> {
    let Image { source, platform, index_digest, manifest_digest, manifest } = image;
    let (config, layers, annotations) = (&manifest.config, &manifest.layers, &manifest.annotations);
    let boot = artifact::boot_layers(manifest)?;
    let is_boot = boot.is_some();
    let small = |p: &str| {
        if is_boot {
            p == Role::Cmdline.path() || p == Role::Cmdline.title()
        } else {
            p == "manifest.yaml"
        }
    };
    let head = |p: &str| {
        if is_boot {
            [Role::Kernel, Role::Initramfs].iter().any(|r| p == r.path() || p == r.title())
        } else {
            p.starts_with("usr/install/") && p.ends_with("/vmlinuz")
        }
    };
    let keep = scan::Keep { small: &small, head: &head };
    let mut scan = scan::Scan::default();
    let mut infos = Vec::new();
    for layer in layers {
        let (mut blob, path) = blobs.open(layer).await?;
        // A format-2 boot blob is the file itself, recorded under its title; other blobs that
        // are not tar layers (an artifact's config-like blobs) are verified, not read.
        let raw_role =
            Role::from_media_type(&layer.media_type).filter(|_| boot.as_ref().is_some_and(|b| b.format == 2));
        let entries = if let Some(role) = raw_role {
            scan.raw(role.title(), &mut blob, layer.size, &keep).map_err(|e| blob_error(path.clone(), e))?;
            1
        } else if media_type::is_tar_layer(&layer.media_type) {
            match scan.layer(&mut blob, layer.size, &keep) {
                Ok(n) => n,
                Err(LayerError::Io(e)) => return Err(blob_error(path, e).into()),
                Err(source) => return Err(InspectError::Layer { digest: layer.digest, source }),
            }
        } else {
            0
        };
        blob.finish().map_err(|e| blob_error(path, e))?;
        infos.push(LayerInfo {
            media_type: layer.media_type.clone(),
            digest: layer.digest.to_string(),
            size: layer.size,
            role: match raw_role {
                Some(role) => Some(role.as_str().to_string()),
                None => layer.annotation(artifact::ANNOTATION_ROLE).map(str::to_string),
            },
            entries,
        });
    }
    let mut out = Inspection {
        source,
        kind: "image".to_string(),
        platform,
        index_digest: index_digest.map(|d| d.to_string()),
        manifest_digest: manifest_digest.to_string(),
        config_digest: config.digest.to_string(),
        annotations: annotations.clone(),
        layers: infos,
        boot: None,
        extension: None,
        talos_imager: None,
        disk_image: None,
    };
    if is_boot {
        out.kind = "boot-artifact".to_string();
        let format = boot.as_ref().map_or(1, |b| b.format);
        out.boot = Some(scan::boot_info(annotations, format, &out.layers, &scan)?);
    } else if scan.entries.contains_key("manifest.yaml") && scan.entries.contains_key("rootfs") {
        out.kind = "extension".to_string();
        out.extension = Some(scan::extension_info(&scan));
    } else if scan.entries.keys().any(|p| p.starts_with("usr/install/")) {
        out.kind = "talos-imager".to_string();
        out.talos_imager = Some(scan::imager_info(&scan));
    }
    Ok(out)
}

/// Inspects the image of `arch` (or the only one) in the OCI image layout at `dir`.
///
/// # Errors
/// [`InspectError`].
pub async fn inspect_layout(dir: &Path, arch: Option<&str>) -> Result<Inspection, InspectError> {
    let layout = OciLayout::open(dir)?;
    let image = layout.resolve(arch)?;
    let m = &image.manifest;
    let image = Image {
        source: dir.display().to_string(),
        platform: image.platform().to_string(),
        index_digest: image.index_digest,
        manifest_digest: image.descriptor.digest,
        manifest: m,
    };
    inspect_image(image, &Blobs::Layout(&layout)).await
}

/// Inspects the `linux/<arch>` image of `reference` in a registry.
///
/// # Errors
/// [`InspectError`].
pub async fn inspect_remote(
    registry: &Registry,
    reference: &Reference,
    arch: &str,
) -> Result<Inspection, InspectError> {
    let resolved = registry.resolve(reference, arch).await?;
    let m = &resolved.manifest;
    let image = Image {
        source: reference.to_string(),
        platform: format!("linux/{arch}"),
        index_digest: resolved.index_digest,
        manifest_digest: resolved.manifest_digest,
        manifest: m,
    };
    inspect_image(image, &Blobs::Remote(registry, &resolved)).await
}

/// The boot artifact layout to show for the output directory `dir` of `imager build`:
/// `boot-<arch>/` for the given arch, else `boot-arm64/`, else `boot-amd64/`.
pub fn output_layout(dir: &Path, arch: Option<&str>) -> Option<PathBuf> {
    let candidates: Vec<&str> = match arch {
        Some(a) => vec![a],
        None => vec!["arm64", "amd64"],
    };
    candidates.into_iter().map(|a| boot_layout_dir(dir, a)).find(|d| OciLayout::is_layout(d))
}

/// The board disk image `imager build --board` wrote into the output directory `dir`, if any
/// (`rpi-cm3-<arch>.raw.xz`; arm64 when no arch is given).
pub fn output_disk_image(dir: &Path, arch: Option<&str>) -> Option<PathBuf> {
    let arch = arch.unwrap_or("arm64");
    <Board as clap::ValueEnum>::value_variants()
        .iter()
        .map(|b| dir.join(image_name(b.as_str(), arch)))
        .find(|p| p.is_file())
}

/// Runs `imager inspect`.
///
/// # Errors
/// Anything that stops the inspection, with context.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let arch = args.arch.map(Arch::as_str);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let path = Path::new(&args.target);
    if path.is_file() {
        let is_disk = disk::is_disk_image(path).with_context(|| format!("reading {}", path.display()))?;
        if !is_disk {
            return Err(disk::DiskError::NotADiskImage(args.target.clone()).into());
        }
        let image = disk::inspect_disk(path, &args.target).with_context(|| format!("inspecting {}", args.target))?;
        print_json_or(args.json, &image, || render_disk(&image));
        return Ok(());
    }
    let inspection = if path.is_dir() {
        let mut disk_image = None;
        let layout = if OciLayout::is_layout(path) {
            path.to_path_buf()
        } else {
            if let Some(image) = output_disk_image(path, arch) {
                let source = image.display().to_string();
                let read = disk::inspect_disk(&image, &source).with_context(|| format!("inspecting {source}"))?;
                disk_image = Some(read);
            }
            output_layout(path, arch).with_context(|| {
                format!(
                    "{} is neither an OCI image layout nor an imager build output with boot-{}/",
                    path.display(),
                    arch.unwrap_or("<arch>")
                )
            })?
        };
        let mut inspection = runtime.block_on(inspect_layout(&layout, arch))?;
        inspection.disk_image = disk_image;
        inspection
    } else {
        let reference: Reference = args
            .target
            .parse()
            .with_context(|| format!("{} is not a directory, so it must be an image reference", args.target))?;
        let registry = Registry::new(args.registry.options()?)?;
        runtime.block_on(inspect_remote(&registry, &reference, arch.unwrap_or("arm64")))?
    };
    print_json_or(args.json, &inspection, || render(&inspection));
    Ok(())
}

/// Prints `value` as pretty JSON, or else the text `render` makes.
fn print_json_or<T: serde::Serialize>(json: bool, value: &T, render: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("an inspection always serialises"));
    } else {
        print!("{}", render());
    }
}
