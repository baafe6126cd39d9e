//! Reading an image's layers for `imager inspect`, through the shared layer reader
//! ([`boot_artifact::layer`]: compression from magic bytes, bounds, whiteouts), keeping only
//! entry metadata, a few small files and the first bytes of kernels — bounded memory for an
//! image of any size — and turning what was seen into the model.

use std::collections::BTreeMap;
use std::io::Read;

use boot_artifact::artifact::{
    ExtensionAnnotation, Role, ANNOTATION_EXTENSIONS, ANNOTATION_FORMAT, ANNOTATION_ROLE, ANNOTATION_SCHEMATIC_ID,
    ANNOTATION_TALOS_VERSION,
};
use boot_artifact::kernel::{self, KernelFormat, DETECT_LEN};
use boot_artifact::layer::{self, EntryKind, Item, LayerError, Whiteout};
use boot_artifact::oci::ANNOTATION_CREATED;

use super::model::{BootInfo, ExtensionInfo, FileInfo, ImagerInfo, LayerInfo, PathInfo};
use super::{InspectError, MAX_SMALL_FILE};
use crate::extension::manifest::Manifest;
use crate::extension::tree::{Entry, Kind, Tree};

/// An entry seen while scanning layers.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    kind: Kind,
    size: u64,
    mode: u32,
    /// What was kept of a file's content ([`Keep`]): all of a small file, or a head.
    content: Option<Vec<u8>>,
}

/// What scanning layers collected, with the layers stacked (whiteouts applied): each entry with
/// what was kept of its content, so a whiteout or a replacement removes both at once.
#[derive(Default)]
pub(super) struct Scan {
    pub(super) entries: BTreeMap<String, Seen>,
}

/// Which files' contents to keep while scanning.
pub(super) struct Keep<'a> {
    /// Files kept whole (at most [`MAX_SMALL_FILE`] bytes).
    pub(super) small: &'a dyn Fn(&str) -> bool,
    /// Files whose first [`DETECT_LEN`] bytes are kept.
    pub(super) head: &'a dyn Fn(&str) -> bool,
}

impl Scan {
    /// Reads one layer blob of `compressed` bytes on top of what lower layers gave: its whiteouts
    /// remove lower entries, then its entries are added (a non-directory replaces a lower
    /// subtree). Returns the number of tar entries.
    ///
    /// # Errors
    /// The layer reader's refusals (hostile path, decompression bound, not a tar).
    pub(super) fn layer<R: Read>(&mut self, blob: R, compressed: u64, keep: &Keep<'_>) -> Result<u64, LayerError> {
        let mut whiteouts = Vec::new();
        let mut seen = Vec::new();
        let mut count = 0;
        layer::read_layer(blob, layer::expansion_limit(compressed), |item| {
            count += 1;
            let e = match item {
                Item::Whiteout(w) => {
                    whiteouts.push(w);
                    return Ok(());
                }
                Item::Entry(e) => e,
            };
            let (kind, size) = match e.kind {
                EntryKind::Dir => (Kind::Dir, 0),
                EntryKind::File { size } => (Kind::File(Vec::new()), size),
                EntryKind::HardLink(_) => (Kind::File(Vec::new()), 0),
                EntryKind::Symlink(target) => (Kind::Symlink(target), 0),
                EntryKind::Special(what) => (Kind::Special(what), 0),
            };
            let mut content = None;
            if matches!(kind, Kind::File(_)) {
                let take = if (keep.small)(&e.path) && size <= MAX_SMALL_FILE {
                    Some(size)
                } else if (keep.head)(&e.path) {
                    Some(DETECT_LEN as u64)
                } else {
                    None
                };
                if let Some(n) = take {
                    let mut data = Vec::with_capacity(n as usize);
                    e.data.take(n).read_to_end(&mut data).map_err(LayerError::Io)?;
                    content = Some(data);
                }
            }
            seen.push((e.path, Seen { kind, size, mode: e.mode, content }));
            Ok(())
        })?;
        self.stack(&whiteouts, seen);
        Ok(count)
    }

    /// Records a blob that is itself a file (a format-2 boot artifact's), as `path`, keeping what
    /// [`Keep`] says of its content; the rest is read (and so verified by the caller's reader)
    /// and dropped.
    ///
    /// # Errors
    /// Reading the blob.
    pub(super) fn raw<R: Read>(&mut self, path: &str, blob: &mut R, size: u64, keep: &Keep<'_>) -> std::io::Result<()> {
        let take = if (keep.small)(path) && size <= MAX_SMALL_FILE {
            size
        } else if (keep.head)(path) {
            DETECT_LEN as u64
        } else {
            0
        };
        let mut content = Vec::with_capacity(take as usize);
        blob.take(take).read_to_end(&mut content)?;
        std::io::copy(blob, &mut std::io::sink())?;
        let seen = Seen { kind: Kind::File(Vec::new()), size, mode: 0o644, content: (take > 0).then_some(content) };
        self.entries.insert(path.to_string(), seen);
        Ok(())
    }

    fn stack(&mut self, whiteouts: &[Whiteout], seen: Vec<(String, Seen)>) {
        layer::apply_whiteouts(&mut self.entries, whiteouts);
        for (path, s) in seen {
            let dir_over_dir =
                matches!((&s.kind, self.entries.get(&path).map(|e| &e.kind)), (Kind::Dir, Some(Kind::Dir)));
            if !dir_over_dir {
                layer::remove_subtree(&mut self.entries, &path, false);
            }
            self.entries.insert(path, s);
        }
    }

    /// What was kept of the content of the file at `path`.
    fn content(&self, path: &str) -> Option<&Vec<u8>> {
        self.entries.get(path).and_then(|s| s.content.as_ref())
    }
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

/// What a boot artifact of `format` (1: one-file tar layers, 2: raw blobs recorded under their
/// titles) holds, from its annotations and what [`Scan`] kept.
pub(super) fn boot_info(
    annotations: &BTreeMap<String, String>,
    format: u32,
    layers: &[LayerInfo],
    scan: &Scan,
) -> Result<BootInfo, InspectError> {
    let key = |role: Role| if format == 2 { role.title() } else { role.path() };
    for role in Role::ALL {
        if !layers.iter().any(|l| l.role.as_deref() == Some(role.as_str())) || !scan.entries.contains_key(key(role)) {
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
        Some(text) => ExtensionAnnotation::decode(text).map_err(|e| InspectError::Annotation {
            key: ANNOTATION_EXTENSIONS,
            reason: format!("not a JSON array of {{name, version, digest}}: {e}"),
        })?,
    };
    let cmdline = scan.content(key(Role::Cmdline)).ok_or(InspectError::Annotation {
        key: ANNOTATION_ROLE,
        reason: format!("{} is larger than {MAX_SMALL_FILE} bytes", key(Role::Cmdline)),
    })?;
    let file = |role: Role, format: String| FileInfo {
        path: key(role).to_string(),
        size: scan.entries.get(key(role)).map_or(0, |e| e.size),
        format: Some(format),
    };
    let empty = Vec::new();
    let kernel_head = scan.content(key(Role::Kernel)).unwrap_or(&empty);
    let initramfs_head = scan.content(key(Role::Initramfs)).unwrap_or(&empty);
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

pub(super) fn extension_info(scan: &Scan) -> ExtensionInfo {
    let text = scan.content("manifest.yaml").map(|b| String::from_utf8_lossy(b).into_owned());
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
        tree.insert(path, Entry { mode: seen.mode, kind: seen.kind.clone(), selinux_label: None });
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

pub(super) fn imager_info(scan: &Scan) -> ImagerInfo {
    let mut install: BTreeMap<String, Vec<FileInfo>> = BTreeMap::new();
    for (path, seen) in &scan.entries {
        let Some(rest) = path.strip_prefix("usr/install/") else { continue };
        let Some((arch, _)) = rest.split_once('/') else { continue };
        if matches!(seen.kind, Kind::Dir) {
            continue;
        }
        let format = seen.content.as_ref().map(|h| kernel_format(h));
        install.entry(arch.to_string()).or_default().push(FileInfo { path: path.clone(), size: seen.size, format });
    }
    ImagerInfo { install }
}
