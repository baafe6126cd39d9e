//! The initramfs with system extensions, assembled as Talos's imager assembles it (talos v1.10.5
//! `pkg/imager/extensions/{extensions,contents,rebuild}.go`, `internal/pkg/extensions/compress.go`,
//! `internal/pkg/extensions/list.go`):
//!
//! 1. Extensions are checked out as directories `0`, `1`, … in the order given and listed with
//!    the directory names compared **as strings** (`10` before `2`); the layer of directory `N`
//!    is `N.sqsh`.
//! 2. From each rootfs, CPU microcode (`usr/lib/firmware/intel-ucode/*`,
//!    `usr/lib/firmware/amd-ucode/microcode_amd*.bin`) is concatenated into
//!    `kernel/x86/microcode/{GenuineIntel,AuthenticAMD}.bin`, and the rest of `usr/lib/firmware`
//!    is moved out of the squashfs into the initramfs itself (the kernel loads firmware before
//!    any layer is mounted).
//! 3. Each remaining rootfs becomes `N.sqsh` ([`super::squashfs`]); `/extensions.yaml` lists
//!    `layers: [{image: N.sqsh, metadata: …}]` in that order, marshalled by yaml.v3.
//! 4. Everything under `kernel/` goes into an **uncompressed** newc cpio put **before** the base
//!    initramfs; everything else into a newc cpio compressed like the base (`zstd -T0 -18` for
//!    Talos ≥ 1.8) put **after** it. The base bytes are not changed.
//!
//! Not supported (refused with a message): extensions that ship kernel modules (Talos then adds
//! a generated `modules.dep` layer built with depmod against the base rootfs), and xz bases
//! (Talos < 1.8).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use crate::extension::tree::{Entry, Kind};
use crate::extension::Metadata;

use super::cpio;

/// zstd level Talos's imager compresses the appended archive with (`zstd -T0 -18`, talos
/// v1.10.5 `pkg/imager/extensions/rebuild.go`). Used whenever the archive carries files of its
/// own (firmware, microcode moved out of the extensions), which a strong level does shrink.
pub const ZSTD_LEVEL: i32 = 18;
/// zstd level for an appended archive that holds only the squashfs images (already zstd -18
/// inside) and `extensions.yaml`: recompressing those at 18 gains under 0.1% (1.7 KB of 2.2 MB
/// on the operator's image, measured) and was a third of the build's time.
pub const SQUASHFS_ONLY_ZSTD_LEVEL: i32 = 6;
/// zstd multithreading job size of the appended archive: 1 MiB.
pub const JOB_SIZE: u32 = 1 << 20;

/// Why the initramfs could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The base initramfs is neither a zstd stream nor one preceded by an uncompressed cpio.
    #[error("base initramfs: {0}")]
    Base(String),
    /// A value of `extensions.yaml` cannot be written the way yaml.v3 writes it.
    #[error("extension {name}: {field}: {reason}")]
    Unencodable {
        /// Extension name.
        name: String,
        /// Manifest field.
        field: String,
        /// Why.
        reason: String,
    },
    /// An extension ships kernel modules (not supported yet).
    #[error("extension {0}: ships kernel modules under /usr/lib/modules, which needs a generated modules.dep layer (not supported yet)")]
    KernelModules(String),
    /// Writing or compressing failed.
    #[error("writing initramfs: {0}")]
    Io(#[from] std::io::Error),
    /// A squashfs image failed.
    #[error("extension {name}: {source}")]
    Squashfs {
        /// Extension name.
        name: String,
        /// The cause.
        source: super::squashfs::SquashfsError,
    },
}

/// Compression of a base initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (Talos ≥ 1.8).
    Zstd,
}

/// Recognises the compression of `base` (the part after any leading uncompressed cpio).
///
/// # Errors
/// [`InitramfsError::Base`] for xz (Talos < 1.8, not supported) and unknown formats.
pub fn detect(base: &[u8]) -> Result<Compression, InitramfsError> {
    let mut at = 0usize;
    // Skip leading uncompressed newc archives (early microcode), as the kernel does.
    while base[at..].starts_with(b"070701") {
        at = skip_newc(base, at).ok_or_else(|| InitramfsError::Base("truncated leading cpio archive".into()))?;
        while at < base.len() && base[at] == 0 {
            at += 1;
        }
    }
    let rest = &base[at..];
    if rest.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if rest.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(InitramfsError::Base("xz-compressed (Talos < 1.8) is not supported".into()))
    } else {
        Err(InitramfsError::Base(format!(
            "unknown format (first bytes {:02x?}; expected a zstd stream)",
            &rest[..rest.len().min(6)]
        )))
    }
}

/// Returns the offset after the `TRAILER!!!` entry of the newc archive starting at `at`.
fn skip_newc(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let h = b.get(at..at + 110)?;
        let field = |i: usize| u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).ok()?, 16).ok();
        let size = field(6)? as usize;
        let namesize = field(11)? as usize;
        let name = b.get(at + 110..at + 110 + namesize.saturating_sub(1))?;
        let data = (at + 110 + namesize).div_ceil(4) * 4;
        at = (data + size).div_ceil(4) * 4;
        if name == b"TRAILER!!!" {
            return Some(at);
        }
        if at > b.len() {
            return None;
        }
    }
}

/// One extension, flattened and validated, ready to be packed.
#[derive(Debug, Clone)]
pub struct Extension {
    /// Its manifest metadata (what `extensions.yaml` lists).
    pub metadata: Metadata,
    /// `metadata.extraInfo` of the manifest (yaml `extraInfo,omitempty`).
    pub extra_info: String,
    /// Permission bits of `rootfs/`.
    pub root_mode: u32,
    /// SELinux label of `rootfs/` (the squashfs root), if any.
    pub root_selinux_label: Option<String>,
    /// The rootfs entries, paths relative to `rootfs/` (`usr/local/bin/x`).
    pub rootfs: BTreeMap<String, Entry>,
}

/// The index order Talos uses for `n` extensions: directory names `0..n` sorted as strings.
pub fn layer_order(n: usize) -> Vec<usize> {
    let mut names: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    names.sort();
    names.iter().map(|s| s.parse().expect("a number")).collect()
}

/// What [`assemble`] produced besides the initramfs bytes.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The whole initramfs: prepended cpio + base + appended compressed cpio.
    pub initramfs: Vec<u8>,
    /// `extensions.yaml` as written into the archive.
    pub extensions_yaml: String,
    /// Layer file names with the extension names, in layer order: (`0.sqsh`, `spin`).
    pub layers: Vec<(String, String)>,
    /// Size in bytes of each squashfs image, in layer order.
    pub squashfs_sizes: Vec<u64>,
}

/// Splits firmware and microcode out of each rootfs (step 2 of the module docs). Returns the
/// files destined for the initramfs itself, by archive path.
fn split_firmware(exts: &mut [Extension]) -> BTreeMap<String, Entry> {
    const FW: &str = "usr/lib/firmware";
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut ucode: [(String, Vec<u8>); 2] = [
        ("kernel/x86/microcode/GenuineIntel.bin".into(), Vec::new()),
        ("kernel/x86/microcode/AuthenticAMD.bin".into(), Vec::new()),
    ];
    for ext in exts.iter_mut() {
        let intel: Vec<String> = ext
            .rootfs
            .keys()
            .filter(|p| p.strip_prefix("usr/lib/firmware/intel-ucode/").is_some_and(|n| !n.contains('/')))
            .cloned()
            .collect();
        let amd: Vec<String> = ext
            .rootfs
            .keys()
            .filter(|p| {
                p.strip_prefix("usr/lib/firmware/amd-ucode/")
                    .is_some_and(|n| !n.contains('/') && n.starts_with("microcode_amd") && n.ends_with(".bin"))
            })
            .cloned()
            .collect();
        for (slot, list) in [(0usize, intel), (1usize, amd)] {
            for p in list {
                if let Some(Entry { kind: Kind::File(data), .. }) = ext.rootfs.remove(&p) {
                    ucode[slot].1.extend_from_slice(&data);
                }
            }
        }
        let moved: Vec<String> =
            ext.rootfs.keys().filter(|p| *p == FW || p.starts_with(&format!("{FW}/"))).cloned().collect();
        if !moved.is_empty() {
            for dir in ["usr", "usr/lib"] {
                out.entry(dir.to_string()).or_insert(Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
            }
        }
        for p in moved {
            let e = ext.rootfs.remove(&p).expect("listed");
            out.insert(p, e);
        }
    }
    for (path, data) in ucode {
        if !data.is_empty() {
            for dir in ["kernel", "kernel/x86", "kernel/x86/microcode"] {
                out.entry(dir.to_string()).or_insert(Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
            }
            out.insert(path, Entry { mode: 0o644, kind: Kind::File(data), selinux_label: None });
        }
    }
    out
}

/// Writes `/extensions.yaml` as yaml.v3's encoder writes talos `extensions.Config`
/// (`pkg/machinery/extensions/config.go`, `metadata.go`): 4-space indentation, fields in struct
/// order, `extraInfo` only when set, multi-line strings as literal blocks.
///
/// # Errors
/// [`InitramfsError::Unencodable`] for strings whose encoding we do not reproduce.
pub fn extensions_yaml(layers: &[(String, &Extension)]) -> Result<String, InitramfsError> {
    let mut out = String::from("layers:\n");
    for (image, ext) in layers {
        let m = &ext.metadata;
        let s = |field: &str, v: &str, indent: usize| scalar(&m.name, field, v, indent);
        let _ = writeln!(out, "    - image: {}", s("image", image, 6)?);
        // yaml.v3 indents a mapping nested in a sequence item by 2 more than the item's own keys.
        out.push_str("      metadata:\n");
        let _ = writeln!(out, "        name: {}", s("name", &m.name, 8)?);
        let _ = writeln!(out, "        version: {}", s("version", &m.version, 8)?);
        let _ = writeln!(out, "        author: {}", s("author", &m.author, 8)?);
        let _ = writeln!(out, "        description: {}", s("description", &m.description, 8)?);
        out.push_str("        compatibility:\n            talos:\n");
        let _ = writeln!(
            out,
            "                version: {}",
            s("compatibility.talos.version", &m.compatibility.talos.version, 16)?
        );
        if !ext.extra_info.is_empty() {
            let _ = writeln!(out, "        extraInfo: {}", s("extraInfo", &ext.extra_info, 8)?);
        }
    }
    Ok(out)
}

/// One string as yaml.v3 writes it as a mapping value whose key is at column `indent`
/// (`encode.go` `stringv`; `emitterc.go` literal scalars). Multi-line strings become literal
/// blocks (`|`, `|-`, `|+`), indented 4 more than the key; the trailing newline is not included.
fn scalar(name: &str, field: &str, v: &str, indent: usize) -> Result<String, InitramfsError> {
    let refuse = |reason: String| InitramfsError::Unencodable { name: name.into(), field: field.into(), reason };
    if !v.contains('\n') {
        // YAML 1.1 booleans: yaml.v3 v3.0.1 double-quotes them (`isOldBool`).
        if matches!(
            v,
            "y" | "Y"
                | "yes"
                | "Yes"
                | "YES"
                | "on"
                | "On"
                | "ON"
                | "n"
                | "N"
                | "no"
                | "No"
                | "NO"
                | "off"
                | "Off"
                | "OFF"
        ) {
            return Ok(format!("\"{v}\""));
        }
        return crate::schematic::scalar(field, v).map_err(|e| refuse(e.to_string()));
    }
    // yaml.v3 falls back to double quotes when a line ends in a space, the value ends in one, or
    // holds non-printable characters; we do not reproduce that style.
    let bad = v.contains(" \n")
        || v.ends_with(' ')
        || v.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{feff}' || (c as u32) > 0xffff);
    if bad || v.contains('\r') {
        return Err(refuse("multi-line value with trailing spaces or control characters".into()));
    }
    let mut head = String::from("|");
    if v.starts_with(' ') || v.starts_with('\n') {
        head.push('4');
    }
    if !v.ends_with('\n') {
        head.push('-');
    } else if v.len() == 1 || v.ends_with("\n\n") {
        head.push('+');
    }
    let pad = " ".repeat(indent + 4);
    let mut out = head;
    out.push('\n');
    let body = v.strip_suffix('\n').unwrap_or(v);
    for (i, line) in body.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    Ok(out)
}

/// Builds the initramfs: `base` bytes untouched, extensions in `exts` (in the order given; layer
/// numbering per [`layer_order`]). Squashfs images are written on up to `threads` threads;
/// `mtime` is every archive time; `zstd_workers` ≥ 1 zstd threads (output does not depend on it).
///
/// # Errors
/// [`InitramfsError`].
pub fn assemble(
    base: &[u8],
    mut exts: Vec<Extension>,
    mtime: u32,
    threads: usize,
    zstd_workers: u32,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Assembled, InitramfsError> {
    match detect(base)? {
        Compression::Zstd => {}
    }
    for e in &exts {
        if e.rootfs.keys().any(|p| p == "usr/lib/modules" || p.starts_with("usr/lib/modules/")) {
            return Err(InitramfsError::KernelModules(e.metadata.name.clone()));
        }
    }
    let extra = split_firmware(&mut exts);

    // Squashfs images, in parallel; slot i belongs to checkout directory i.
    type Slot = std::sync::Mutex<Option<Result<Vec<u8>, InitramfsError>>>;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<Slot> = (0..exts.len()).map(|_| std::sync::Mutex::new(None)).collect();
    // Largest first, so that the last thread to finish does not start the biggest job late.
    let mut order: Vec<usize> = (0..exts.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(
            exts[i].rootfs.values().map(|e| if let Kind::File(d) = &e.kind { d.len() } else { 0 }).sum::<usize>(),
        )
    });
    progress("compressing squashfs data blocks (zstd -18)");
    let trees: Vec<&BTreeMap<String, Entry>> = exts.iter().map(|e| &e.rootfs).collect();
    super::squashfs::precompress(&trees, threads)
        .map_err(|source| InitramfsError::Squashfs { name: "(data blocks)".into(), source })?;
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(exts.len().max(1)) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&i) = order.get(k) else { break };
                let e = &exts[i];
                progress(&format!("squashfs {}.sqsh ({} {})", i, e.metadata.name, e.metadata.version));
                let r = super::squashfs::write(&e.rootfs, e.root_mode, e.root_selinux_label.as_deref(), mtime)
                    .map_err(|source| InitramfsError::Squashfs { name: e.metadata.name.clone(), source });
                *slots[i].lock().expect("not poisoned") = Some(r);
            });
        }
    });
    let images: Vec<Vec<u8>> = slots
        .into_iter()
        .map(|slot| slot.into_inner().expect("not poisoned").expect("every job ran"))
        .collect::<Result<_, InitramfsError>>()?;

    let order = layer_order(exts.len());
    let listed: Vec<(String, &Extension)> = order.iter().map(|&i| (format!("{i}.sqsh"), &exts[i])).collect();
    let yaml = extensions_yaml(&listed)?;

    // Archive contents by path, in Talos's listing order.
    let mut files: Vec<(String, ArchiveItem<'_>)> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        files.push((format!("{i}.sqsh"), ArchiveItem::File(0o644, img)));
    }
    files.push(("extensions.yaml".into(), ArchiveItem::File(0o644, yaml.as_bytes())));
    for (p, e) in &extra {
        files.push((
            p.clone(),
            match &e.kind {
                Kind::Dir => ArchiveItem::Dir(e.mode),
                Kind::File(d) => ArchiveItem::File(e.mode, d),
                Kind::Symlink(t) => ArchiveItem::Symlink(t),
                Kind::Special(_) => unreachable!("validation refuses special files"),
            },
        ));
    }
    files.sort_by(|a, b| cpio::preorder_cmp(&a.0, &b.0));

    let mut early = cpio::Writer::new(Vec::new(), mtime);
    let mut late_entries = Vec::new();
    let mut any_early = false;
    for (p, item) in &files {
        if p == "kernel" || p.starts_with("kernel/") {
            any_early = true;
            item.write(&mut early, p)?;
        } else {
            late_entries.push((p, item));
        }
    }

    let level = if extra.is_empty() { SQUASHFS_ONLY_ZSTD_LEVEL } else { ZSTD_LEVEL };
    progress(&format!("compressing the extensions archive (zstd -{level})"));
    let mut late = cpio::Writer::new(Vec::new(), mtime);
    for (p, item) in late_entries {
        item.write(&mut late, p)?;
    }
    let (late_cpio, _) = late.finish()?;
    let compressed = compress_zstd(&late_cpio, level, zstd_workers)?;

    let mut initramfs = Vec::with_capacity(base.len() + compressed.len() + 4096);
    if any_early {
        let (early_cpio, _) = early.finish()?;
        initramfs.extend_from_slice(&early_cpio);
    }
    initramfs.extend_from_slice(base);
    initramfs.extend_from_slice(&compressed);
    let layers = listed.iter().map(|(img, e)| (img.clone(), e.metadata.name.clone())).collect();
    let squashfs_sizes = order.iter().map(|&i| images[i].len() as u64).collect();
    Ok(Assembled { initramfs, extensions_yaml: yaml, layers, squashfs_sizes })
}

enum ArchiveItem<'a> {
    Dir(u32),
    File(u32, &'a [u8]),
    Symlink(&'a str),
}

impl ArchiveItem<'_> {
    fn write<W: Write>(&self, w: &mut cpio::Writer<W>, path: &str) -> std::io::Result<()> {
        match self {
            ArchiveItem::Dir(m) => w.dir(path, *m),
            ArchiveItem::File(m, d) => w.file(path, *m, d),
            ArchiveItem::Symlink(t) => w.symlink(path, t),
        }
    }
}

/// One zstd frame at `level` with a content checksum (as the `zstd` command writes by default),
/// in [`JOB_SIZE`] jobs on `workers` threads; zstd's output depends on the job size but not on
/// the number of workers ≥ 1.
///
/// # Errors
/// Compression failures.
pub fn compress_zstd(data: &[u8], level: i32, workers: u32) -> std::io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::with_capacity(data.len() + 1024), level)?;
    enc.multithread(workers.max(1))?;
    // A fixed job size makes the frame independent of the worker count and lets inputs of a few
    // MiB (the appended archive) use more than one core; level 18's default job is 32 MiB.
    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
    enc.include_checksum(true)?;
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::manifest::{Compatibility, TalosCompatibility};

    fn ext(name: &str, description: &str) -> Extension {
        Extension {
            metadata: Metadata {
                name: name.into(),
                version: "v0.19.0".into(),
                author: "Sven Pfennig".into(),
                description: description.into(),
                compatibility: Compatibility { talos: TalosCompatibility { version: ">= v1.0.0".into() } },
            },
            extra_info: String::new(),
            root_mode: 0o755,
            root_selinux_label: None,
            rootfs: BTreeMap::new(),
        }
    }

    #[test]
    fn layer_order_is_a_string_sort() {
        assert_eq!(layer_order(3), [0, 1, 2]);
        assert_eq!(layer_order(12), [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    /// Expected bytes: gopkg.in/yaml.v3 v3.0.1's Encoder on talos's `extensions.Config` with these
    /// values (a Go program built against the yaml.v3 sources printed them).
    #[test]
    fn extensions_yaml_matches_yaml_v3() {
        let a = ext("spin", "[contrib] This system extension provides support for spin.\n");
        let b = ext("x", "two\n\nlines");
        let mut c = ext("y", " lead\nx\n\n");
        c.metadata.version = "1.84.0".into();
        c.metadata.author = String::new();
        c.metadata.compatibility.talos.version = String::new();
        c.extra_info = "info: yes".into();
        let y = extensions_yaml(&[("0.sqsh".into(), &a), ("1.sqsh".into(), &b), ("10.sqsh".into(), &c)]).unwrap();
        assert_eq!(
            y,
            "layers:\n    - image: 0.sqsh\n      metadata:\n        name: spin\n        version: v0.19.0\n        author: Sven Pfennig\n        description: |\n            [contrib] This system extension provides support for spin.\n        compatibility:\n            talos:\n                version: '>= v1.0.0'\n    - image: 1.sqsh\n      metadata:\n        name: x\n        version: v0.19.0\n        author: Sven Pfennig\n        description: |-\n            two\n\n            lines\n        compatibility:\n            talos:\n                version: '>= v1.0.0'\n    - image: 10.sqsh\n      metadata:\n        name: \"y\"\n        version: 1.84.0\n        author: \"\"\n        description: |4+\n             lead\n            x\n\n        compatibility:\n            talos:\n                version: \"\"\n        extraInfo: 'info: yes'\n"
        );
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_worker_count() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..3 << 20)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'a'
                } else {
                    x as u8
                }
            })
            .collect();
        let one = compress_zstd(&data, ZSTD_LEVEL, 1).unwrap();
        assert_eq!(one, compress_zstd(&data, ZSTD_LEVEL, 2).unwrap());
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), data);
    }

    #[test]
    fn detects_zstd_after_a_leading_cpio() {
        let (early, _) = cpio::Writer::new(Vec::new(), 0).finish().unwrap();
        let mut b = early.clone();
        b.extend_from_slice(&compress_zstd(b"x", ZSTD_LEVEL, 1).unwrap());
        assert_eq!(detect(&b).unwrap(), Compression::Zstd);
        assert!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1]).unwrap_err().to_string().contains("xz"));
    }

    #[test]
    fn firmware_moves_to_the_initramfs_and_microcode_is_concatenated() {
        let mut e = ext("fw", "d");
        for (p, k) in [
            ("usr", Kind::Dir),
            ("usr/lib", Kind::Dir),
            ("usr/lib/firmware", Kind::Dir),
            ("usr/lib/firmware/intel-ucode", Kind::Dir),
            ("usr/lib/firmware/intel-ucode/06-01", Kind::File(b"A".to_vec())),
            ("usr/lib/firmware/intel-ucode/06-02", Kind::File(b"B".to_vec())),
            ("usr/lib/firmware/blob.bin", Kind::File(b"C".to_vec())),
            ("usr/local", Kind::Dir),
        ] {
            e.rootfs.insert(p.into(), Entry { mode: 0o755, kind: k, selinux_label: None });
        }
        let mut v = vec![e];
        let out = split_firmware(&mut v);
        assert_eq!(out["kernel/x86/microcode/GenuineIntel.bin"].kind, Kind::File(b"AB".to_vec()));
        assert!(out.contains_key("usr/lib/firmware/blob.bin"));
        assert!(!v[0].rootfs.keys().any(|k| k.starts_with("usr/lib/firmware")));
        assert!(v[0].rootfs.contains_key("usr/local"));
    }
}
