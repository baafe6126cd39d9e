//! An extension image flattened from its OCI layers, and Talos's content rules.
//!
//! Layers are read by the shared layer reader ([`boot_artifact::layer`]: compression from magic
//! bytes, a bound on the decompressed stream, path cleaning) and applied in order with the OCI
//! whiteout rules it owns (image-spec `layer.md`): a layer's `.wh.NAME` and `.wh..wh..opq`
//! remove entries of *lower* layers, then its entries are added. Hostile input is refused rather
//! than "sanitised": a path or hard-link target with a `..` component, a hard link to nothing, a
//! layer or file over the size bound.
//!
//! [`Tree::validate`] then applies Talos's rules (talos v1.10.5 `pkg/machinery/extensions`):
//! - `load.go`: the image root holds only `manifest.yaml` and `rootfs/`, both required;
//! - `validate.go` `validateContents`: no world-writable entry (mode & 0o002; symbolic links,
//!   whose mode is always 0o777, excepted), no special file
//!   (device, FIFO, socket), and every non-directory under `rootfs/` inside one of
//!   [`ALLOWED_PATHS`] (`extensions.go`).
//!
//! Where Talos is looser we are stricter, and say so: Talos matches allowed paths with a string
//! prefix (`/usr/localx` passes `/usr/local`) and its world-writable check reads
//! `DirEntry.Type().Perm()`, which is always 0; we match whole path components and check the real
//! mode. We also refuse a symbolic link whose target, resolved inside the rootfs, climbs above it.

use std::collections::BTreeMap;
use std::io::Read;

use boot_artifact::layer::{self, EntryKind, Item, LayerError};

/// Paths an extension's rootfs may hold files under (talos v1.10.5
/// `pkg/machinery/extensions/extensions.go` `AllowedPaths`, after the /usr merge).
pub const ALLOWED_PATHS: &[&str] = &[
    "/etc/cri/conf.d",
    "/usr/lib/firmware",
    "/usr/lib/modules",
    "/usr/lib/ld-linux-x86-64.so.2",
    "/usr/bin/ldconfig",
    "/usr/lib/udev/rules.d",
    "/usr/local",
    "/usr/share/glvnd",
    "/usr/share/egl",
    "/etc/vulkan",
];

/// Default bound on the unpacked size of one extension: 1 GiB.
pub const DEFAULT_MAX_UNPACKED: u64 = 1 << 30;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File(Vec<u8>),
    /// A symbolic link with its target as written.
    Symlink(String),
    /// A character or block device, FIFO or socket (kept only to be refused by validation).
    Special(&'static str),
}

/// One entry of the flattened image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (0o7777).
    pub mode: u32,
    /// What it is.
    pub kind: Kind,
    /// Its SELinux label, from the layer's `SCHILY.xattr.security.selinux` PAX record
    /// ([`boot_artifact::layer::selinux_label`]); Talos ≥ 1.12 carries it into the squashfs
    /// ([`Quirk::SeLinuxLabels`](kernel_cmdline::quirks::Quirk::SeLinuxLabels)).
    pub selinux_label: Option<String>,
}

/// Why a layer or an extension was refused. Paths are shown as in the image (`rootfs/usr/…`).
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The layer reader refused the layer (hostile path, decompression bound, not a tar).
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A hard link whose target is not a regular file already in the image.
    #[error("refusing hard link {path:?} to {target:?}: no such regular file in the image")]
    DanglingHardlink {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// More bytes than the bound.
    #[error("extension unpacks to more than {limit} bytes")]
    TooLarge {
        /// The bound in bytes.
        limit: u64,
    },
    /// A top-level name other than `manifest.yaml` and `rootfs` (Talos `load.go`).
    #[error("unexpected file {0:?} at the top of the extension (only manifest.yaml and rootfs/ are allowed)")]
    UnexpectedTopLevel(String),
    /// `manifest.yaml` or `rootfs/` is missing.
    #[error("extension {0} is missing")]
    Missing(&'static str),
    /// A world-writable entry.
    #[error("world-writeable files are not allowed: {0:?}")]
    WorldWritable(String),
    /// A device, FIFO or socket.
    #[error("special files are not allowed: {0:?} ({1})")]
    Special(String, &'static str),
    /// A file outside the allowed paths.
    #[error("path {0:?} is not allowed in extensions")]
    NotAllowed(String),
    /// A symbolic link that leads out of the rootfs.
    #[error("symlink {path:?} -> {target:?} points outside the extension rootfs")]
    SymlinkEscape {
        /// The link, as a rootfs path.
        path: String,
        /// Its target.
        target: String,
    },
}

/// A flattened extension image: relative paths (no leading `/`) to entries, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    bytes: u64,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The entry at `path` (relative, e.g. `rootfs/usr/local/bin/x`).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Inserts an entry, creating missing parent directories (mode 0o755).
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            self.entries.entry(parts[..i].join("/")).or_insert(Entry {
                mode: 0o755,
                kind: Kind::Dir,
                selinux_label: None,
            });
        }
        if let Kind::File(data) = &entry.kind {
            self.bytes += data.len() as u64;
        }
        if let Some(Entry { kind: Kind::File(old), .. }) = self.entries.insert(path.to_string(), entry) {
            self.bytes -= old.len() as u64;
        }
    }

    fn remove_subtree(&mut self, path: &str, keep_self: bool) {
        for (_, removed) in layer::remove_subtree(&mut self.entries, path, keep_self) {
            self.forget(removed);
        }
    }

    fn forget(&mut self, removed: Entry) {
        if let Kind::File(old) = removed.kind {
            self.bytes -= old.len() as u64;
        }
    }

    /// Applies one layer blob (a tar, plain, gzip'd or zstd, detected from its bytes) on top of
    /// the tree, holding at most `limit` bytes of file content in all. The layer's whiteouts
    /// remove lower entries first; then its entries are added in tar order, a non-directory
    /// replacing a lower subtree and a hard link copying an earlier regular file.
    ///
    /// # Errors
    /// [`TreeError::Layer`] (hostile path, decompression bound, not a tar),
    /// [`TreeError::DanglingHardlink`], [`TreeError::TooLarge`].
    pub fn apply_layer<R: Read>(&mut self, blob: R, limit: u64) -> Result<(), TreeError> {
        enum Pending {
            Entry(Entry),
            HardLink(String),
        }
        let mut whiteouts = Vec::new();
        let mut pending: Vec<(String, u32, Option<String>, Pending)> = Vec::new();
        let mut layer_bytes = 0u64;
        // Tar framing on top of the content bound: 512-byte headers, padding.
        let max_expanded = limit.saturating_add(layer::EXPANSION_SLACK);
        layer::read_layer(blob, max_expanded, |item| {
            let e = match item {
                Item::Whiteout(w) => {
                    whiteouts.push(w);
                    return Ok(());
                }
                Item::Entry(e) => e,
            };
            let kind = match e.kind {
                EntryKind::Dir => {
                    Pending::Entry(Entry { mode: e.mode, kind: Kind::Dir, selinux_label: e.selinux_label.clone() })
                }
                EntryKind::File { size } => {
                    // Checked: a hostile header's size near 2^64 must not wrap past the bound.
                    if self.bytes.saturating_add(layer_bytes).saturating_add(size) > limit {
                        return Err(LayerError::TooLarge { path: e.path, size, limit });
                    }
                    let mut data = Vec::with_capacity(size as usize);
                    e.data.take(size).read_to_end(&mut data).map_err(LayerError::Io)?;
                    layer_bytes += data.len() as u64;
                    Pending::Entry(Entry {
                        mode: e.mode,
                        kind: Kind::File(data),
                        selinux_label: e.selinux_label.clone(),
                    })
                }
                EntryKind::Symlink(target) => Pending::Entry(Entry {
                    mode: e.mode,
                    kind: Kind::Symlink(target),
                    selinux_label: e.selinux_label.clone(),
                }),
                EntryKind::HardLink(target) => Pending::HardLink(target),
                EntryKind::Special(what) => Pending::Entry(Entry {
                    mode: e.mode,
                    kind: Kind::Special(what),
                    selinux_label: e.selinux_label.clone(),
                }),
            };
            pending.push((e.path, e.mode, e.selinux_label, kind));
            Ok(())
        })
        .map_err(|e| match e {
            // Only the content bound above returns TooLarge here.
            LayerError::TooLarge { .. } => TreeError::TooLarge { limit },
            e => TreeError::Layer(e),
        })?;

        for (_, removed) in layer::apply_whiteouts(&mut self.entries, &whiteouts) {
            self.forget(removed);
        }
        for (path, mode, label, p) in pending {
            let entry = match p {
                Pending::Entry(e) => e,
                // A hard link shares its target's inode, so its label is the target's unless the
                // link's own header sets one (Talos `untar.go` labels the path after linking).
                Pending::HardLink(target) => match self.entries.get(&target) {
                    Some(Entry { kind: k @ Kind::File(_), selinux_label, .. }) => {
                        Entry { mode, kind: k.clone(), selinux_label: label.or_else(|| selinux_label.clone()) }
                    }
                    _ => return Err(TreeError::DanglingHardlink { path, target }),
                },
            };
            // A non-directory replaces a whole subtree; a directory over a directory keeps it.
            if !matches!((&entry.kind, self.entries.get(&path).map(|e| &e.kind)), (Kind::Dir, Some(Kind::Dir))) {
                self.remove_subtree(&path, false);
            }
            self.insert(&path, entry);
            if self.bytes > limit {
                return Err(TreeError::TooLarge { limit });
            }
        }
        Ok(())
    }

    /// Checks the image against Talos's rules (see the module docs).
    ///
    /// # Errors
    /// [`TreeError::UnexpectedTopLevel`], [`TreeError::Missing`], [`TreeError::WorldWritable`],
    /// [`TreeError::Special`], [`TreeError::NotAllowed`], [`TreeError::SymlinkEscape`].
    pub fn validate(&self) -> Result<(), TreeError> {
        if let Some(top) = self.entries.keys().find(|p| !p.contains('/') && *p != "manifest.yaml" && *p != "rootfs") {
            return Err(TreeError::UnexpectedTopLevel(top.clone()));
        }
        match self.entries.get("manifest.yaml") {
            Some(Entry { kind: Kind::File(_), .. }) => {}
            _ => return Err(TreeError::Missing("manifest.yaml")),
        }
        match self.entries.get("rootfs") {
            Some(Entry { kind: Kind::Dir, .. }) => {}
            _ => return Err(TreeError::Missing("rootfs")),
        }
        for (path, entry) in self.entries.range("rootfs/".to_string()..).take_while(|(k, _)| k.starts_with("rootfs/")) {
            let item = &path["rootfs".len()..]; // "/usr/local/…"
                                                // A symlink's mode is always 0o777 and means nothing (symlink(7)).
            if entry.mode & 0o002 != 0 && !matches!(entry.kind, Kind::Symlink(_)) {
                return Err(TreeError::WorldWritable(item.to_string()));
            }
            match &entry.kind {
                Kind::Dir => continue,
                Kind::Special(what) => return Err(TreeError::Special(item.to_string(), what)),
                Kind::Symlink(target) => {
                    if escapes(item, target) {
                        return Err(TreeError::SymlinkEscape { path: item.to_string(), target: target.clone() });
                    }
                }
                Kind::File(_) => {}
            }
            let allowed = ALLOWED_PATHS.iter().any(|a| item == *a || item.starts_with(&format!("{a}/")));
            if !allowed {
                return Err(TreeError::NotAllowed(item.to_string()));
            }
        }
        Ok(())
    }
}

/// True when `target`, resolved lexically from the directory of `link` (an absolute path inside
/// the rootfs), climbs above the rootfs root. Absolute targets resolve from the root and cannot.
fn escapes(link: &str, target: &str) -> bool {
    let mut depth: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut d: Vec<&str> = link.split('/').filter(|c| !c.is_empty()).collect();
        d.pop();
        d
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return !target.starts_with('/');
                }
            }
            c => depth.push(c),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar layer from (path, type, mode, content or link target).
    fn layer(entries: &[(&str, tar::EntryType, u32, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, mode, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(*mode);
            h.set_mtime(0);
            let is_link = matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link);
            if is_link {
                h.set_link_name(data).unwrap();
                h.set_size(0);
            } else if *ty == tar::EntryType::Regular {
                h.set_size(data.len() as u64);
            } else {
                h.set_size(0);
            }
            // Write the raw name so hostile paths survive the builder's own checks.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            let body: &[u8] = if *ty == tar::EntryType::Regular { data.as_bytes() } else { &[] };
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Block, Directory as D, Fifo, Link, Regular as F, Symlink as S};

    fn spin() -> Vec<(&'static str, tar::EntryType, u32, &'static str)> {
        vec![
            ("manifest.yaml", F, 0o644, "version: v1alpha1\n"),
            ("rootfs/", D, 0o755, ""),
            ("rootfs/usr/local/bin/containerd-shim-spin-v2", F, 0o755, "shim"),
            ("rootfs/etc/cri/conf.d/10-spin.part", F, 0o644, "[plugins]"),
            ("rootfs/usr/local/bin/spin-link", S, 0o777, "containerd-shim-spin-v2"),
        ]
    }

    fn tree(entries: &[(&str, tar::EntryType, u32, &str)]) -> Result<Tree, TreeError> {
        let mut t = Tree::new();
        t.apply_layer(&layer(entries)[..], DEFAULT_MAX_UNPACKED)?;
        Ok(t)
    }

    #[test]
    fn a_well_formed_extension_passes() {
        let t = tree(&spin()).unwrap();
        t.validate().unwrap();
        assert_eq!(t.get("rootfs/usr/local/bin/containerd-shim-spin-v2").unwrap().kind, Kind::File(b"shim".to_vec()));
        assert_eq!(t.get("rootfs/usr/local").unwrap().kind, Kind::Dir, "parents are created");
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let mut t = tree(&spin()).unwrap();
        t.apply_layer(
            &layer(&[
                ("rootfs/usr/local/bin/.wh.spin-link", F, 0o644, ""),
                ("rootfs/etc/cri/conf.d/.wh..wh..opq", F, 0o644, ""),
                ("rootfs/etc/cri/conf.d/20-new.part", F, 0o644, "new"),
            ])[..],
            DEFAULT_MAX_UNPACKED,
        )
        .unwrap();
        assert!(t.get("rootfs/usr/local/bin/spin-link").is_none());
        assert!(t.get("rootfs/etc/cri/conf.d/10-spin.part").is_none());
        assert!(t.get("rootfs/etc/cri/conf.d/20-new.part").is_some());
        assert!(t.get("rootfs/etc/cri/conf.d").is_some(), "an opaque directory itself stays");

        // Whiteouts apply to lower layers only: the same layer's entry survives, wherever the
        // whiteout stands in the tar.
        t.apply_layer(
            &layer(&[
                ("rootfs/etc/cri/conf.d/30-late.part", F, 0o644, "late"),
                ("rootfs/etc/cri/conf.d/.wh..wh..opq", F, 0o644, ""),
            ])[..],
            DEFAULT_MAX_UNPACKED,
        )
        .unwrap();
        assert!(t.get("rootfs/etc/cri/conf.d/20-new.part").is_none());
        assert!(t.get("rootfs/etc/cri/conf.d/30-late.part").is_some());
        // Compressed layers are detected from their bytes.
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&layer(&[("rootfs/usr/local/bin/.wh.containerd-shim-spin-v2", F, 0o644, "")])).unwrap();
            e.finish().unwrap()
        };
        t.apply_layer(&gz[..], DEFAULT_MAX_UNPACKED).unwrap();
        assert!(t.get("rootfs/usr/local/bin/containerd-shim-spin-v2").is_none());
    }

    #[test]
    fn each_malformed_extension_fails_with_its_reason() {
        let with = |extra: (&'static str, tar::EntryType, u32, &'static str)| {
            let mut e = spin();
            e.push(extra);
            tree(&e).and_then(|t| t.validate()).unwrap_err().to_string()
        };
        assert_eq!(
            with(("README.md", F, 0o644, "x")),
            "unexpected file \"README.md\" at the top of the extension (only manifest.yaml and rootfs/ are allowed)"
        );
        assert_eq!(
            with(("rootfs/usr/local/bin/x", F, 0o666, "x")),
            "world-writeable files are not allowed: \"/usr/local/bin/x\""
        );
        assert_eq!(
            with(("rootfs/usr/local/dev/sda", Block, 0o600, "")),
            "special files are not allowed: \"/usr/local/dev/sda\" (block device)"
        );
        assert!(with(("rootfs/usr/local/fifo", Fifo, 0o600, "")).contains("(FIFO)"));
        assert_eq!(with(("rootfs/etc/shadow", F, 0o600, "x")), "path \"/etc/shadow\" is not allowed in extensions");
        assert_eq!(
            with(("rootfs/usr/localx/bin", F, 0o755, "x")),
            "path \"/usr/localx/bin\" is not allowed in extensions"
        );
        assert_eq!(
            with(("rootfs/usr/local/evil", S, 0o777, "../../../../etc/shadow")),
            "symlink \"/usr/local/evil\" -> \"../../../../etc/shadow\" points outside the extension rootfs"
        );
        assert!(with(("rootfs/../../etc/passwd", F, 0o644, "x")).starts_with("refusing entry"));
        assert!(with(("rootfs/usr/local/h", Link, 0o644, "../../etc/shadow")).starts_with("refusing entry"));
        assert!(with(("rootfs/usr/local/h", Link, 0o644, "rootfs/nope")).starts_with("refusing hard link"));
        let mut no_manifest = spin();
        no_manifest.remove(0);
        assert_eq!(
            tree(&no_manifest).unwrap().validate().unwrap_err().to_string(),
            "extension manifest.yaml is missing"
        );
    }

    #[test]
    fn symlinks_inside_the_rootfs_and_absolute_ones_are_fine() {
        assert!(!escapes("/usr/local/bin/a", "../lib/b"));
        assert!(!escapes("/usr/local/bin/a", "/usr/local/lib/b"));
        assert!(!escapes("/usr/local/bin/a", "/../../etc"), "absolute targets resolve from the root");
        assert!(escapes("/usr/local/a", "../../../x"));
        assert!(!escapes("/usr/local/a", "../../x"));
    }

    #[test]
    fn unpacking_is_bounded_and_hardlinks_copy() {
        let mut t = Tree::new();
        let big = "x".repeat(4096);
        let data = layer(&[("rootfs/usr/local/a", F, 0o644, &big), ("rootfs/usr/local/b", F, 0o644, &big)]);
        assert!(matches!(t.apply_layer(&data[..], 6000), Err(TreeError::TooLarge { limit: 6000 })));
        let t = tree(&[
            ("rootfs/usr/local/a", F, 0o644, "same"),
            ("rootfs/usr/local/b", Link, 0o644, "rootfs/usr/local/a"),
        ])
        .unwrap();
        assert_eq!(t.get("rootfs/usr/local/b").unwrap().kind, Kind::File(b"same".to_vec()));
    }

    /// Found by `fuzz/fuzz_targets/extension_tree.rs`: over a lower layer, a tar header whose size
    /// is near 2^64 wrapped the bound's sum, and the allocation for it aborted the imager.
    #[test]
    fn a_size_near_two_to_the_64_is_refused_by_the_bound() {
        let mut t = Tree::new();
        let lower = "x".repeat(2048);
        t.apply_layer(&layer(&[("rootfs/usr/local/a", F, 0o644, &lower)])[..], 1 << 20).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(F);
        h.set_mode(0o644);
        h.set_path("rootfs/usr/local/b").unwrap();
        // 2^64 - 2048: the tar reader's own offsets still fit, the bound's sum (2048 already held) does not.
        h.set_size(u64::MAX - 2047);
        h.set_cksum();
        let mut hostile = h.as_bytes().to_vec();
        hostile.extend_from_slice(&[0; 1024]);
        let err = t.apply_layer(&hostile[..], 1 << 20).unwrap_err();
        assert!(matches!(err, TreeError::TooLarge { limit: 1048576 }), "{err}");
    }

    /// A layer whose entries carry `SCHILY.xattr.security.selinux` PAX records, as Talos's
    /// imager writes them (`pkg/imager/embed.go`).
    fn labelled(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, label) in entries {
            if !label.is_empty() {
                b.append_pax_extensions([(layer::PAX_SELINUX, label.as_bytes())]).unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o400);
            h.set_size(2);
            b.append_data(&mut h, path, &b"x\n"[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn selinux_labels_are_read_from_pax_records_and_hard_links_share_them() {
        let mut t = Tree::new();
        let blob =
            labelled(&[("rootfs/usr/local/a", "system_u:object_r:system_state_t:s0"), ("rootfs/usr/local/b", "")]);
        t.apply_layer(&blob[..], DEFAULT_MAX_UNPACKED).unwrap();
        assert_eq!(
            t.get("rootfs/usr/local/a").unwrap().selinux_label.as_deref(),
            Some("system_u:object_r:system_state_t:s0")
        );
        assert_eq!(t.get("rootfs/usr/local/b").unwrap().selinux_label, None, "an empty record is no label");
        let link = layer(&[("rootfs/usr/local/c", Link, 0o400, "rootfs/usr/local/a")]);
        t.apply_layer(&link[..], DEFAULT_MAX_UNPACKED).unwrap();
        assert_eq!(
            t.get("rootfs/usr/local/c").unwrap().selinux_label.as_deref(),
            Some("system_u:object_r:system_state_t:s0")
        );
    }

    #[test]
    fn a_label_that_cannot_be_an_xattr_is_refused_naming_the_entry() {
        for bad in ["system_u:object_r:x_t:s0 -p evil", "a\tb", "é"] {
            let err = Tree::new()
                .apply_layer(&labelled(&[("rootfs/usr/local/a", bad)])[..], DEFAULT_MAX_UNPACKED)
                .unwrap_err();
            assert!(err.to_string().contains("\"rootfs/usr/local/a\": SELinux label"), "{err}");
        }
        let long = "u".repeat(layer::MAX_SELINUX_LABEL + 1);
        let err =
            Tree::new().apply_layer(&labelled(&[("rootfs/usr/local/a", &long)])[..], DEFAULT_MAX_UNPACKED).unwrap_err();
        assert!(err.to_string().contains("longer than 4096"), "{err}");
    }
}
