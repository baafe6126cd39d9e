//! `imager inspect`: what a boot artifact, an extension image or a Talos imager image holds, read
//! from a registry (`REGISTRY/REPO:TAG` or `@sha256:…`), from an OCI image layout directory, or
//! from the output directory of `imager build` (its `boot-<arch>/`).
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
//! Layers are read as tar streams (uncompressed, gzip or zstd by media type) with OCI whiteouts
//! (image-spec `layer.md`) applied; only a few small files are kept in memory, and a remote blob
//! is spooled to a temporary file, so an image of any size is inspected in bounded memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use anyhow::Context;
use boot_artifact::artifact::{
    Role, ANNOTATION_EXTENSIONS, ANNOTATION_FORMAT, ANNOTATION_ROLE, ANNOTATION_SCHEMATIC_ID, ANNOTATION_TALOS_VERSION,
};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::kernel::{self, KernelFormat, DETECT_LEN};
use boot_artifact::reference::Reference;
use moonboot_registry::{Registry, Resolved};
use serde::{Deserialize, Serialize};

use crate::cli::Arch;
use crate::extension::manifest::Manifest;
use crate::extension::tree::{Entry, Kind, Tree};
use crate::oci_layout::{blob_error, BlobReader, Descriptor, LayoutError, OciLayout};
use crate::publish::{arch_name, boot_layout_dir};

/// Largest small file kept in memory while scanning (`manifest.yaml`, `boot/cmdline`): 1 MiB.
pub const MAX_SMALL_FILE: u64 = 1 << 20;
/// The OCI annotation holding the creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// `imager inspect` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// An image reference (REGISTRY/REPO:TAG or …@sha256:…), an OCI image layout directory, or
    /// the output directory of `imager build`.
    #[arg(value_name = "REF|DIR")]
    pub target: String,
    /// Which architecture's image to show; default: the only one in a layout, else arm64.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    #[command(flatten)]
    pub registry: crate::cli::RegistryFlags,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

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
    /// A boot artifact lacks the layer of a role, or the layer lacks its file.
    #[error("boot artifact has no {0} (layer annotated {ANNOTATION_ROLE}={1} holding {2})")]
    MissingRole(&'static str, &'static str, &'static str),
}

/// One layer of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer's media type.
    pub media_type: String,
    /// The layer's digest.
    pub digest: String,
    /// The layer's size in bytes (compressed, as stored).
    pub size: u64,
    /// The boot artifact role ([`ANNOTATION_ROLE`]), if annotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Tar entries in the layer (0 for a layer that is not a tar).
    pub entries: u64,
}

/// One extension named by a boot artifact's [`ANNOTATION_EXTENSIONS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
    /// Digest of the extension image, when it was pulled from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A file inside a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path inside the layer.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Format recognised from the first bytes (`arm64 Image`, `zstd`, …), when looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// What a boot artifact says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// [`ANNOTATION_FORMAT`]'s value.
    pub format_version: String,
    /// [`ANNOTATION_TALOS_VERSION`].
    pub talos_version: Option<String>,
    /// [`ANNOTATION_SCHEMATIC_ID`].
    pub schematic_id: Option<String>,
    /// [`ANNOTATION_EXTENSIONS`], in layer order.
    pub extensions: Vec<ExtensionRef>,
    /// [`ANNOTATION_CREATED`].
    pub created: Option<String>,
    /// The default kernel command line (`boot/cmdline`).
    pub cmdline: String,
    /// `boot/kernel`, with its format.
    pub kernel: FileInfo,
    /// `boot/initramfs`, with its compression.
    pub initramfs: FileInfo,
}

/// One non-directory path of an extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// Path in the image (`rootfs/usr/local/…`).
    pub path: String,
    /// `file`, `symlink`, or the special kind.
    pub kind: String,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits, octal (`0755`).
    pub mode: String,
    /// Symbolic link target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What an extension image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
    /// `metadata.author`.
    pub author: String,
    /// `metadata.description`.
    pub description: String,
    /// `metadata.compatibility.talos.version`.
    pub talos_compatibility: String,
    /// Why Talos would refuse the image (`manifest.yaml` or content rules); `None` when it accepts it.
    pub problem: Option<String>,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Total size of regular files in bytes.
    pub bytes: u64,
    /// Every non-directory path, sorted.
    pub paths: Vec<PathInfo>,
}

/// What a Talos imager image holds under `usr/install/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagerInfo {
    /// Files under `usr/install/<arch>/`, by architecture, sorted by path.
    pub install: BTreeMap<String, Vec<FileInfo>>,
}

/// The result of inspecting one image; `imager inspect --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// What was inspected, as given.
    pub source: String,
    /// `boot-artifact`, `extension`, `talos-imager` or `image`.
    pub kind: String,
    /// `linux/<arch>`.
    pub platform: String,
    /// The index the manifest was chosen from, if any.
    pub index_digest: Option<String>,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The config's digest.
    pub config_digest: String,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The layers, base first.
    pub layers: Vec<LayerInfo>,
    /// For a boot artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootInfo>,
    /// For an extension image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionInfo>,
    /// For a Talos imager image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talos_imager: Option<ImagerInfo>,
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
                let remote = moonboot_registry::Descriptor {
                    media_type: desc.media_type.clone(),
                    digest: desc.digest,
                    size: desc.size,
                    annotations: desc.annotations.clone(),
                };
                {
                    let mut sink = io::BufWriter::new(&mut file);
                    registry.fetch_blob(resolved, &remote, &mut sink).await?;
                    io::Write::flush(&mut sink).map_err(io_err)?;
                }
                file.rewind().map_err(io_err)?;
                let path = PathBuf::from(format!("{}@{}", resolved.reference, desc.digest));
                Ok((BlobReader::new(BufReader::new(file), desc.digest, desc.size), path))
            }
        }
    }
}

/// A non-directory or directory entry seen while scanning layers.
#[derive(Debug, Clone)]
struct Seen {
    kind: Kind,
    size: u64,
    mode: u32,
}

/// What scanning layers collected.
#[derive(Default)]
struct Scan {
    entries: BTreeMap<String, Seen>,
    /// Full contents of small files asked for.
    small: BTreeMap<String, Vec<u8>>,
    /// First bytes of files asked for.
    heads: BTreeMap<String, Vec<u8>>,
}

fn normalise(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn remove_under(map: &mut BTreeMap<String, Seen>, path: &str, keep_self: bool) {
    for k in crate::extension::tree::subtree_keys(map, path, keep_self) {
        map.remove(&k);
    }
}

/// Reads one layer's tar stream (decompressed per `media_type`) into `scan`. Returns the number of
/// entries, or `None` for a media type that is not a tar layer.
fn scan_layer(
    blob: &mut Blob,
    media_type: &str,
    scan: &mut Scan,
    small: &dyn Fn(&str) -> bool,
    head: &dyn Fn(&str) -> bool,
) -> io::Result<Option<u64>> {
    let reader: Box<dyn Read + '_> = if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Box::new(flate2::read::GzDecoder::new(&mut *blob))
    } else if media_type.ends_with("+zstd") {
        Box::new(zstd::stream::read::Decoder::new(&mut *blob)?)
    } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
        Box::new(&mut *blob)
    } else {
        return Ok(None);
    };
    let mut archive = tar::Archive::new(reader);
    let mut count = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        count += 1;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalise(&raw) else { continue };
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        if name == ".wh..wh..opq" {
            remove_under(&mut scan.entries, parent, true);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let victim = if parent.is_empty() { hidden.to_string() } else { format!("{parent}/{hidden}") };
            remove_under(&mut scan.entries, &victim, false);
            continue;
        }
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let size = header.size()?;
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => Kind::File(Vec::new()),
            tar::EntryType::Symlink => Kind::Symlink(
                entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default(),
            ),
            tar::EntryType::Char => Kind::Special("character device"),
            tar::EntryType::Block => Kind::Special("block device"),
            tar::EntryType::Fifo => Kind::Special("FIFO"),
            _ => continue,
        };
        if matches!(kind, Kind::File(_)) {
            if small(&path) && size <= MAX_SMALL_FILE {
                let mut data = Vec::with_capacity(size as usize);
                entry.by_ref().take(size).read_to_end(&mut data)?;
                scan.small.insert(path.clone(), data);
            } else if head(&path) {
                let mut data = Vec::with_capacity(DETECT_LEN);
                entry.by_ref().take(DETECT_LEN as u64).read_to_end(&mut data)?;
                scan.heads.insert(path.clone(), data);
            }
        }
        if !matches!((&kind, scan.entries.get(&path).map(|e| &e.kind)), (Kind::Dir, Some(Kind::Dir))) {
            remove_under(&mut scan.entries, &path, false);
        }
        let size = if matches!(kind, Kind::File(_)) { size } else { 0 };
        scan.entries.insert(path, Seen { kind, size, mode });
    }
    Ok(Some(count))
}

/// Human description and short format name of a kernel's first bytes.
pub fn kernel_format(head: &[u8]) -> String {
    match kernel::detect(head) {
        Ok(KernelFormat::Arm64Image(h)) => {
            format!("arm64 Image (text_offset {:#x}, image_size {} bytes)", h.text_offset, h.image_size)
        }
        Ok(KernelFormat::BzImage { protocol }) => {
            format!("x86 bzImage (boot protocol {}.{:02})", protocol >> 8, protocol & 0xff)
        }
        Ok(KernelFormat::EfiZboot(z)) => format!("EFI zboot ({}, payload {} bytes)", z.compression, z.payload_size),
        Ok(KernelFormat::Pe) => "PE (UKI or EFI application)".to_string(),
        Ok(KernelFormat::Gzip) => "gzip".to_string(),
        Ok(KernelFormat::Zstd) => "zstd".to_string(),
        Err(e) => e.to_string(),
    }
}

/// The compression of an initramfs from its first bytes (Linux `usr/Kconfig` formats).
pub fn initramfs_format(head: &[u8]) -> String {
    let name = if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else if head.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if head.starts_with(b"070701") || head.starts_with(b"070702") {
        "uncompressed newc cpio"
    } else if head.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        "lz4"
    } else {
        "unknown"
    };
    name.to_string()
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
    /// The config descriptor.
    pub config: &'a Descriptor,
    /// The layer descriptors, base first.
    pub layers: &'a [Descriptor],
    /// The manifest's annotations.
    pub annotations: &'a BTreeMap<String, String>,
}

/// Inspects one image, reading its blobs from `blobs`.
///
/// # Errors
/// [`InspectError`].
pub async fn inspect_image(image: Image<'_>, blobs: &Blobs<'_>) -> Result<Inspection, InspectError> {
    let Image { source, platform, index_digest, manifest_digest, config, layers, annotations } = image;
    let is_boot = annotations.contains_key(ANNOTATION_FORMAT);
    let small = |p: &str| {
        if is_boot {
            p == Role::Cmdline.path()
        } else {
            p == "manifest.yaml"
        }
    };
    let head = |p: &str| {
        if is_boot {
            p == Role::Kernel.path() || p == Role::Initramfs.path()
        } else {
            p.starts_with("usr/install/") && p.ends_with("/vmlinuz")
        }
    };
    let mut scan = Scan::default();
    let mut infos = Vec::new();
    for layer in layers {
        let (mut blob, path) = blobs.open(layer).await?;
        let entries = scan_layer(&mut blob, &layer.media_type, &mut scan, &small, &head)
            .map_err(|e| blob_error(path.clone(), e))?;
        blob.finish().map_err(|e| blob_error(path, e))?;
        infos.push(LayerInfo {
            media_type: layer.media_type.clone(),
            digest: layer.digest.to_string(),
            size: layer.size,
            role: layer.annotations.get(ANNOTATION_ROLE).cloned(),
            entries: entries.unwrap_or(0),
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
    };
    if is_boot {
        out.kind = "boot-artifact".to_string();
        out.boot = Some(boot_info(annotations, &out.layers, &scan)?);
    } else if scan.entries.contains_key("manifest.yaml") && scan.entries.contains_key("rootfs") {
        out.kind = "extension".to_string();
        out.extension = Some(extension_info(&scan));
    } else if scan.entries.keys().any(|p| p.starts_with("usr/install/")) {
        out.kind = "talos-imager".to_string();
        out.talos_imager = Some(imager_info(&scan));
    }
    Ok(out)
}

fn boot_info(
    annotations: &BTreeMap<String, String>,
    layers: &[LayerInfo],
    scan: &Scan,
) -> Result<BootInfo, InspectError> {
    for role in Role::ALL {
        if !layers.iter().any(|l| l.role.as_deref() == Some(role.as_str())) || !scan.entries.contains_key(role.path()) {
            let what = match role {
                Role::Kernel => "kernel",
                Role::Initramfs => "initramfs",
                Role::Cmdline => "command line",
            };
            return Err(InspectError::MissingRole(what, role.as_str(), role.path()));
        }
    }
    let extensions = match annotations.get(ANNOTATION_EXTENSIONS) {
        None => Vec::new(),
        Some(text) => serde_json::from_str::<Vec<ExtensionRef>>(text).map_err(|e| InspectError::Annotation {
            key: ANNOTATION_EXTENSIONS,
            reason: format!("not a JSON array of {{name, version, digest}}: {e}"),
        })?,
    };
    let cmdline = scan.small.get(Role::Cmdline.path()).ok_or(InspectError::Annotation {
        key: ANNOTATION_ROLE,
        reason: format!("{} is larger than {MAX_SMALL_FILE} bytes", Role::Cmdline.path()),
    })?;
    let file = |role: Role, format: String| FileInfo {
        path: role.path().to_string(),
        size: scan.entries.get(role.path()).map_or(0, |e| e.size),
        format: Some(format),
    };
    let empty = Vec::new();
    let kernel_head = scan.heads.get(Role::Kernel.path()).unwrap_or(&empty);
    let initramfs_head = scan.heads.get(Role::Initramfs.path()).unwrap_or(&empty);
    Ok(BootInfo {
        format_version: annotations.get(ANNOTATION_FORMAT).cloned().unwrap_or_default(),
        talos_version: annotations.get(ANNOTATION_TALOS_VERSION).cloned(),
        schematic_id: annotations.get(ANNOTATION_SCHEMATIC_ID).cloned(),
        extensions,
        created: annotations.get(ANNOTATION_CREATED).cloned(),
        cmdline: String::from_utf8_lossy(cmdline).into_owned(),
        kernel: file(Role::Kernel, kernel_format(kernel_head)),
        initramfs: file(Role::Initramfs, initramfs_format(initramfs_head)),
    })
}

fn extension_info(scan: &Scan) -> ExtensionInfo {
    let text = scan.small.get("manifest.yaml").map(|b| String::from_utf8_lossy(b).into_owned());
    let manifest = match text {
        Some(t) => Manifest::parse(&t).map_err(|e| e.to_string()),
        None => Err(format!("manifest.yaml is larger than {MAX_SMALL_FILE} bytes")),
    };
    let mut tree = Tree::new();
    let mut info = ExtensionInfo {
        name: String::new(),
        version: String::new(),
        author: String::new(),
        description: String::new(),
        talos_compatibility: String::new(),
        problem: None,
        files: 0,
        directories: 0,
        symlinks: 0,
        bytes: 0,
        paths: Vec::new(),
    };
    for (path, seen) in &scan.entries {
        tree.insert(path, Entry { mode: seen.mode, kind: seen.kind.clone() });
        let (kind, target) = match &seen.kind {
            Kind::Dir => {
                info.directories += 1;
                continue;
            }
            Kind::File(_) => {
                info.files += 1;
                info.bytes += seen.size;
                ("file".to_string(), None)
            }
            Kind::Symlink(t) => {
                info.symlinks += 1;
                ("symlink".to_string(), Some(t.clone()))
            }
            Kind::Special(what) => (what.to_string(), None),
        };
        info.paths.push(PathInfo {
            path: path.clone(),
            kind,
            size: seen.size,
            mode: format!("{:04o}", seen.mode),
            target,
        });
    }
    match manifest {
        Ok(m) => {
            info.name = m.metadata.name;
            info.version = m.metadata.version;
            info.author = m.metadata.author;
            info.description = m.metadata.description.trim().to_string();
            info.talos_compatibility = m.metadata.compatibility.talos.version;
            info.problem = tree.validate().err().map(|e| e.to_string());
        }
        Err(e) => info.problem = Some(e),
    }
    info
}

fn imager_info(scan: &Scan) -> ImagerInfo {
    let mut install: BTreeMap<String, Vec<FileInfo>> = BTreeMap::new();
    for (path, seen) in &scan.entries {
        let Some(rest) = path.strip_prefix("usr/install/") else { continue };
        let Some((arch, _)) = rest.split_once('/') else { continue };
        if matches!(seen.kind, Kind::Dir) {
            continue;
        }
        let format = scan.heads.get(path).map(|h| kernel_format(h));
        install.entry(arch.to_string()).or_default().push(FileInfo { path: path.clone(), size: seen.size, format });
    }
    ImagerInfo { install }
}

fn from_registry(d: &moonboot_registry::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest,
        size: d.size,
        platform: None,
        annotations: d.annotations.clone(),
    }
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
        config: &m.config,
        layers: &m.layers,
        annotations: &m.annotations,
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
    let layers: Vec<Descriptor> = m.layers.iter().map(from_registry).collect();
    let config = from_registry(&m.config);
    let image = Image {
        source: reference.to_string(),
        platform: format!("linux/{arch}"),
        index_digest: resolved.index_digest,
        manifest_digest: resolved.manifest_digest,
        config: &config,
        layers: &layers,
        annotations: &m.annotations,
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

/// Runs `imager inspect`.
///
/// # Errors
/// Anything that stops the inspection, with context.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let arch = args.arch.map(arch_name);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let path = Path::new(&args.target);
    let inspection = if path.is_dir() {
        let layout = if OciLayout::is_layout(path) {
            path.to_path_buf()
        } else {
            output_layout(path, arch).with_context(|| {
                format!(
                    "{} is neither an OCI image layout nor an imager build output with boot-{}/",
                    path.display(),
                    arch.unwrap_or("<arch>")
                )
            })?
        };
        runtime.block_on(inspect_layout(&layout, arch))?
    } else {
        let reference: Reference = args
            .target
            .parse()
            .with_context(|| format!("{} is not a directory, so it must be an image reference", args.target))?;
        let registry = Registry::new(args.registry.options()?)?;
        runtime.block_on(inspect_remote(&registry, &reference, arch.unwrap_or("arm64")))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection).expect("an inspection always serialises"));
    } else {
        print!("{}", render(&inspection));
    }
    Ok(())
}

fn size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{n} bytes ({:.1} MiB)", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The human-readable form of an inspection: one `field  value` line per fact.
pub fn render(i: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(o, "{k:<16}{v}");
    };
    line("source", &i.source);
    line("kind", &i.kind);
    line("platform", &i.platform);
    if let Some(d) = &i.index_digest {
        line("index", d);
    }
    line("manifest", &i.manifest_digest);
    line("config", &i.config_digest);
    if let Some(b) = &i.boot {
        line("talos version", b.talos_version.as_deref().unwrap_or("(not annotated)"));
        line("schematic id", b.schematic_id.as_deref().unwrap_or("(not annotated)"));
        if let Some(c) = &b.created {
            line("created", c);
        }
        if b.extensions.is_empty() {
            line("extensions", "(none)");
        }
        for (n, e) in b.extensions.iter().enumerate() {
            let v = format!("{} {} {}", e.name, e.version, e.digest.as_deref().unwrap_or("(built here)"));
            line(if n == 0 { "extensions" } else { "" }, &v);
        }
        line("cmdline", &b.cmdline);
        for (k, f) in [("kernel", &b.kernel), ("initramfs", &b.initramfs)] {
            line(k, &format!("{}, {}: {}", f.path, size(f.size), f.format.as_deref().unwrap_or("?")));
        }
    }
    if let Some(e) = &i.extension {
        line("extension", &format!("{} {}", e.name, e.version));
        if !e.author.is_empty() {
            line("author", &e.author);
        }
        if !e.description.is_empty() {
            line("description", &e.description);
        }
        line("talos compat.", if e.talos_compatibility.is_empty() { "(any)" } else { &e.talos_compatibility });
        line(
            "valid",
            e.problem.as_deref().map_or("yes (Talos's content rules)".to_string(), |p| format!("no: {p}")).as_str(),
        );
        line(
            "contents",
            &format!("{} files ({}), {} directories, {} symlinks", e.files, size(e.bytes), e.directories, e.symlinks),
        );
        for p in &e.paths {
            let v = match &p.target {
                Some(t) => format!("{} {} -> {t}", p.mode, p.path),
                None => format!("{} {} {}", p.mode, p.path, size(p.size)),
            };
            line("", &v);
        }
    }
    if let Some(t) = &i.talos_imager {
        for (arch, files) in &t.install {
            let label = format!("install {arch}");
            for (n, f) in files.iter().enumerate() {
                let mut v = format!("{} {}", f.path, size(f.size));
                if let Some(fmt) = &f.format {
                    v.push_str(&format!(": {fmt}"));
                }
                line(if n == 0 { &label } else { "" }, &v);
            }
        }
    }
    for (n, l) in i.layers.iter().enumerate() {
        let role = l.role.as_deref().map(|r| format!(" {r}")).unwrap_or_default();
        let v = format!("{} {} {}{role}, {} entries", l.digest, l.media_type, size(l.size), l.entries);
        line(if n == 0 { "layers" } else { "" }, &v);
    }
    o
}
