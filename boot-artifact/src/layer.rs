//! The one reader of OCI tar layers, used by the agent (files into memfds), the imager's pull
//! (Talos boot files), its extension trees and `imager inspect`.
//!
//! What it owns, so that every caller sees the same image:
//! - **Compression from magic bytes**, never from the media type: gzip `1f 8b` (every member of
//!   a multi-member stream, as `gzip -d` does), zstd `28 b5 2f fd`, anything else is read as a
//!   plain tar ([`Compression::sniff`]).
//! - **A bound on the decompressed stream** ([`Limited`]): a layer that inflates past its bound
//!   is refused as [`LayerError::ExpansionLimit`], naming the bound — the decompression-bomb rule.
//!   [`expansion_limit`] is the default bound for a blob of a given size.
//! - **Path cleaning** ([`clean_path`]): `./usr/x`, `/usr/x` and `usr//x` are `usr/x`; a path with a
//!   `..` component or that is not UTF-8 is refused as [`LayerError::HostilePath`], never
//!   "sanitised". The root entry (`./`) is skipped.
//! - **Whiteouts** (image-spec `layer.md`, "Whiteouts"): `.wh.NAME` deletes `NAME` and everything
//!   under it from *lower* layers; `.wh..wh..opq` deletes every lower entry under its directory
//!   but not the directory. Whiteouts apply to lower layers only: an entry in the same layer as a
//!   whiteout survives it, so a layer's whiteouts are applied before its entries are added
//!   ([`apply_whiteouts`], [`stack`]). A non-directory entry replaces the whole subtree of a lower
//!   directory at its path ([`remove_subtree`]).
//! - **Hostile entries**: hard-link targets are cleaned with the same rule; [`extract`] takes a
//!   wanted file only when it is a regular file (a symlink, hard link or device at a wanted path
//!   is refused — links are never followed), within its size limit, and present once per layer.
//!
//! Entry metadata comes from the `tar` crate, which also folds PAX and GNU long-name headers
//! into the entries they describe.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

/// The OCI whiteout prefix (image-spec `layer.md`).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory whiteout name (image-spec `layer.md`).
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// A compressed layer may expand to at most this many times its size, plus
/// [`EXPANSION_SLACK`] bytes, under [`expansion_limit`].
pub const MAX_LAYER_EXPANSION: u64 = 64;
/// Bytes every layer may expand to on top of [`MAX_LAYER_EXPANSION`] × its size: 64 MiB.
pub const EXPANSION_SLACK: u64 = 64 << 20;

/// The default bound on the decompressed bytes of a layer blob of `compressed` bytes:
/// `compressed × 64 + 64 MiB`. zstd -19 of a kernel and an initramfs stays far below 64×; a
/// stream of zeros reaches about 1000× with gzip and much more with zstd.
pub fn expansion_limit(compressed: u64) -> u64 {
    compressed.saturating_mul(MAX_LAYER_EXPANSION).saturating_add(EXPANSION_SLACK)
}

/// Why a layer was refused. Every variant names its cause.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading or decompressing the stream failed, or it is not a tar archive.
    #[error("reading the layer: {0}")]
    Io(#[source] io::Error),
    /// The decompressed stream exceeded its bound.
    #[error("decompresses to more than {limit} bytes (refused as a decompression bomb)")]
    ExpansionLimit {
        /// The bound, in decompressed bytes.
        limit: u64,
    },
    /// A path (or hard-link target) with a `..` component, or not UTF-8.
    #[error("refusing entry {path:?}: {reason}")]
    HostilePath {
        /// The path as written in the tar (lossily decoded).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A wanted path is not a regular file.
    #[error("{path} is a {kind}, not a regular file (links are not followed)")]
    NotRegular {
        /// The cleaned path.
        path: String,
        /// What it is instead (`symbolic link`, `hard link`, …).
        kind: &'static str,
    },
    /// A wanted file is larger than its limit.
    #[error("{path} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The cleaned path.
        path: String,
        /// Its size from the tar header.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry's `SCHILY.xattr.security.selinux` PAX record is not a label we can carry.
    #[error("refusing entry {path:?}: SELinux label {reason}")]
    SelinuxLabel {
        /// The cleaned path.
        path: String,
        /// What is wrong with the label.
        reason: &'static str,
    },
    /// A wanted file appears twice in one layer.
    #[error("{path} appears twice in the layer")]
    Duplicate {
        /// The cleaned path.
        path: String,
    },
    /// The caller's sink for a file failed (writing a memfd, a buffer).
    #[error("storing {path}: {source}")]
    Store {
        /// The cleaned path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// How a layer blob is compressed, as its first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a blob (at least 4 bytes for zstd).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader that fails once more than `limit` bytes have come through, and records that it did
/// in a flag the caller shares, so the cause survives the tar parser's error wrapping.
pub struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Limited<R> {
    /// Bounds `inner` to `limit` bytes. The returned flag becomes `true` when the bound is hit.
    pub fn new(inner: R, limit: u64) -> (Limited<R>, Rc<Cell<bool>>) {
        let tripped = Rc::new(Cell::new(false));
        (Limited { inner, read: 0, limit, tripped: tripped.clone() }, tripped)
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.tripped.set(true);
            return Err(io::Error::other(format!("more than {} bytes", self.limit)));
        }
        Ok(n)
    }
}

/// A reader whose first bytes were read ahead (to sniff them) and are given back first.
pub type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// The decompressor [`Compression::sniff`] chose, over a buffered reader.
pub enum Decoder<R: Read> {
    /// Plain tar.
    Plain(BufReader<Peeked<R>>),
    /// gzip, every member (boxed: its inflate state is large).
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Peeked<R>>>>),
    /// zstd (boxed: its decoder state is large).
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Peeked<R>>>>),
}

impl<R: Read> Decoder<R> {
    /// Reads the first 4 bytes of `r` (fewer only at end of stream, however short the reads that
    /// deliver them: a network stream may hand over its first byte alone), sniffs them and wraps
    /// the whole stream in the matching decompressor.
    ///
    /// # Errors
    /// Reading the first bytes; setting up zstd.
    pub fn new(mut r: R) -> io::Result<Decoder<R>> {
        let mut head = [0u8; 4];
        let mut n = 0;
        while n < head.len() {
            match r.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let compression = Compression::sniff(&head[..n]);
        let r = BufReader::with_capacity(256 << 10, io::Cursor::new(head[..n].to_vec()).chain(r));
        Ok(match compression {
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(r))),
            Compression::Zstd => Decoder::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(r)?)),
            Compression::None => Decoder::Plain(r),
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// Cleans a tar path: strips `./`, leading `/` and empty components. Returns the empty string
/// for the root (`./`, `/`).
///
/// # Errors
/// [`LayerError::HostilePath`] for a `..` component or a path that is not UTF-8.
pub fn clean_path(raw: &[u8]) -> Result<String, LayerError> {
    let hostile = |reason| LayerError::HostilePath { path: String::from_utf8_lossy(raw).into_owned(), reason };
    let s = std::str::from_utf8(raw).map_err(|_| hostile("the path is not UTF-8"))?;
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(hostile("a `..` component escapes the layer")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// A whiteout read from a layer: what it removes from the layers below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// `.wh.NAME` (or a non-directory replacing a directory): this path and everything under it.
    Path(String),
    /// `.wh..wh..opq` in this directory (`""` for the root): everything under it, not itself.
    Opaque(String),
}

impl Whiteout {
    /// Whether this whiteout removes `path` (a cleaned path) of a lower layer.
    pub fn hides(&self, path: &str) -> bool {
        match self {
            Whiteout::Path(p) => under(path, p, true),
            Whiteout::Opaque(dir) => under(path, dir, false),
        }
    }

    /// Parses a cleaned path as a whiteout; `None` when it is an ordinary entry.
    ///
    /// # Errors
    /// [`LayerError::HostilePath`] for `.wh..` / `.wh...`, which would name `.` or `..`.
    pub fn parse(path: &str) -> Result<Option<Whiteout>, LayerError> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name == OPAQUE_WHITEOUT {
            return Ok(Some(Whiteout::Opaque(parent.to_string())));
        }
        let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
            return Ok(None);
        };
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(LayerError::HostilePath {
                path: path.to_string(),
                reason: "a whiteout must name one entry of its directory",
            });
        }
        Ok(Some(Whiteout::Path(if parent.is_empty() { hidden.to_string() } else { format!("{parent}/{hidden}") })))
    }
}

/// Whether `path` is `base` itself (when `inclusive`) or lies under it; `""` is the root.
fn under(path: &str, base: &str, inclusive: bool) -> bool {
    if base.is_empty() {
        return inclusive || !path.is_empty();
    }
    (inclusive && path == base)
        || (path.len() > base.len() && path.starts_with(base) && path.as_bytes()[base.len()] == b'/')
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes (tar types `0`, `7`, GNU sparse).
    File {
        /// Size from the header, in bytes.
        size: u64,
    },
    /// A symbolic link with its target as written (lossily decoded; never followed here).
    Symlink(String),
    /// A hard link to an earlier entry, its target cleaned like every path.
    HardLink(String),
    /// A character or block device, FIFO, or an unknown entry type.
    Special(&'static str),
}

impl EntryKind {
    /// A short name for messages: `directory`, `regular file`, `symbolic link`, …
    pub fn describe(&self) -> &'static str {
        match self {
            EntryKind::Dir => "directory",
            EntryKind::File { .. } => "regular file",
            EntryKind::Symlink(_) => "symbolic link",
            EntryKind::HardLink(_) => "hard link",
            EntryKind::Special(what) => what,
        }
    }
}

/// One non-whiteout entry of a layer, handed to the visitor of [`read_layer`].
pub struct Entry<'e> {
    /// The cleaned path (never empty, no `..`).
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// The entry's SELinux label from its PAX record [`PAX_SELINUX`]
    /// (`system_u:object_r:system_state_t:s0`), if it has one; see [`selinux_label`].
    pub selinux_label: Option<String>,
    /// The file's content for [`EntryKind::File`] (empty for anything else). Unread content is
    /// skipped by the reader.
    pub data: &'e mut dyn Read,
}

/// One item of a layer, in tar order.
pub enum Item<'e> {
    /// A whiteout for lower layers.
    Whiteout(Whiteout),
    /// Any other entry.
    Entry(Entry<'e>),
}

/// The PAX record that carries an entry's SELinux label (talos `constants.TarPaxHeaderSELinux`,
/// read by `pkg/archiver/untar.go` from v1.12.0).
pub const PAX_SELINUX: &str = "SCHILY.xattr.security.selinux";

/// Longest SELinux label accepted, in bytes (a context is `user:role:type:level`; the kernel
/// passes at most a page).
pub const MAX_SELINUX_LABEL: usize = 4096;

/// The SELinux label of a tar entry at `path`: the value of its [`PAX_SELINUX`] record, `None`
/// when absent or empty (Talos ignores an empty one too). A label must be printable ASCII with no
/// spaces (it becomes a squashfs xattr and, in Talos ≥ 1.13, a `mksquashfs -p` pseudo
/// definition) and at most [`MAX_SELINUX_LABEL`] bytes.
///
/// # Errors
/// [`LayerError::SelinuxLabel`] naming the path; [`LayerError::Io`] for malformed PAX records.
pub fn selinux_label<R: Read>(path: &str, entry: &mut tar::Entry<'_, R>) -> Result<Option<String>, LayerError> {
    let Some(records) = entry.pax_extensions().map_err(LayerError::Io)? else { return Ok(None) };
    let mut label = None;
    for record in records {
        let record = record.map_err(LayerError::Io)?;
        if record.key_bytes() == PAX_SELINUX.as_bytes() {
            label = Some(record.value_bytes().to_vec());
        }
    }
    let Some(label) = label.filter(|l| !l.is_empty()) else { return Ok(None) };
    let refuse = |reason| LayerError::SelinuxLabel { path: path.to_string(), reason };
    if label.len() > MAX_SELINUX_LABEL {
        return Err(refuse("is longer than 4096 bytes"));
    }
    if !label.iter().all(|b| b.is_ascii_graphic()) {
        return Err(refuse("holds a space, a control character or a non-ASCII byte"));
    }
    Ok(Some(String::from_utf8(label).expect("ASCII")))
}

fn entry_kind<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Option<EntryKind>, LayerError> {
    let header = entry.header();
    let t = header.entry_type();
    Ok(Some(match t {
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            EntryKind::File { size: header.size().map_err(LayerError::Io)? }
        }
        tar::EntryType::Symlink => EntryKind::Symlink(
            entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default(),
        ),
        tar::EntryType::Link => {
            let target = entry.link_name_bytes().unwrap_or_default();
            EntryKind::HardLink(clean_path(&target)?)
        }
        tar::EntryType::Char => EntryKind::Special("character device"),
        tar::EntryType::Block => EntryKind::Special("block device"),
        tar::EntryType::Fifo => EntryKind::Special("FIFO"),
        // Global PAX headers carry no entry of their own.
        t if t.is_pax_global_extensions() || t.is_pax_local_extensions() => return Ok(None),
        _ => EntryKind::Special("unknown tar entry type"),
    }))
}

/// Reads one layer blob — compressed or not, detected from its bytes — and hands every item to
/// `visit` in tar order, with the decompressed stream bounded to `max_expanded` bytes. Reads the
/// stream to its end, so a sender feeding it never blocks.
///
/// # Errors
/// [`LayerError::ExpansionLimit`], [`LayerError::HostilePath`], [`LayerError::Io`] (not a tar,
/// truncated, corrupt compression), and whatever `visit` returns.
pub fn read_layer<R: Read>(
    blob: R,
    max_expanded: u64,
    mut visit: impl FnMut(Item<'_>) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let decoder = Decoder::new(blob).map_err(LayerError::Io)?;
    let (limited, tripped) = Limited::new(decoder, max_expanded);
    let io_err = |e: io::Error| {
        if tripped.get() {
            LayerError::ExpansionLimit { limit: max_expanded }
        } else {
            LayerError::Io(e)
        }
    };
    let mut archive = tar::Archive::new(limited);
    let result = (|| {
        for entry in archive.entries().map_err(io_err)? {
            let mut entry = entry.map_err(io_err)?;
            let path = clean_path(&entry.path_bytes())?;
            if path.is_empty() {
                continue; // the root directory
            }
            if let Some(w) = Whiteout::parse(&path)? {
                visit(Item::Whiteout(w))?;
                continue;
            }
            let Some(kind) = entry_kind(&entry)? else { continue };
            let mode = entry.header().mode().map_err(LayerError::Io)? & 0o7777;
            let selinux_label = selinux_label(&path, &mut entry)?;
            let outcome = visit(Item::Entry(Entry { path, kind, mode, selinux_label, data: &mut entry }));
            // A visitor error caused by the bound (reading file data) names the bound.
            match outcome {
                Err(LayerError::Store { .. } | LayerError::Io(_)) if tripped.get() => {
                    return Err(LayerError::ExpansionLimit { limit: max_expanded })
                }
                other => other?,
            }
        }
        Ok(())
    })();
    result?;
    // Drain the end-of-archive padding and anything after it.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_err)?;
    Ok(())
}

/// A file wanted from a layer: its cleaned path and the most bytes it may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Cleaned path (`usr/install/arm64/vmlinuz`).
    pub path: String,
    /// Size limit in bytes.
    pub limit: u64,
}

impl Wanted {
    /// A wanted file.
    pub fn new(path: impl Into<String>, limit: u64) -> Wanted {
        Wanted { path: path.into(), limit }
    }
}

/// What one layer contributes to a set of wanted files: the files it holds and the whiteouts
/// (or replacing non-directories) that hide wanted files of lower layers.
#[derive(Debug)]
pub struct LayerFiles<T> {
    /// Wanted files found, in tar order, with what `store` made of them.
    pub files: Vec<(String, T)>,
    /// Whiteouts that hide at least one wanted path.
    pub whiteouts: Vec<Whiteout>,
}

/// Reads one layer and stores each wanted regular file with `store(path, content, limit)`,
/// which must read the content (at most `limit` bytes come through). A non-directory at an
/// ancestor of a wanted path is recorded as a whiteout of that subtree, as it replaces it.
///
/// # Errors
/// Those of [`read_layer`]; [`LayerError::NotRegular`], [`LayerError::TooLarge`],
/// [`LayerError::Duplicate`] for a wanted path; what `store` returns.
pub fn extract<R: Read, T>(
    blob: R,
    max_expanded: u64,
    wanted: &[Wanted],
    mut store: impl FnMut(&str, &mut dyn Read, u64) -> Result<T, LayerError>,
) -> Result<LayerFiles<T>, LayerError> {
    let mut out = LayerFiles { files: Vec::new(), whiteouts: Vec::new() };
    read_layer(blob, max_expanded, |item| {
        match item {
            Item::Whiteout(w) => {
                if wanted.iter().any(|x| w.hides(&x.path)) {
                    out.whiteouts.push(w);
                }
            }
            Item::Entry(e) => {
                if let Some(w) = wanted.iter().find(|w| w.path == e.path) {
                    let EntryKind::File { size } = e.kind else {
                        return Err(LayerError::NotRegular { path: e.path, kind: e.kind.describe() });
                    };
                    if size > w.limit {
                        return Err(LayerError::TooLarge { path: e.path, size, limit: w.limit });
                    }
                    if out.files.iter().any(|(p, _)| *p == e.path) {
                        return Err(LayerError::Duplicate { path: e.path });
                    }
                    let mut content = e.data.take(w.limit);
                    let stored = store(&e.path, &mut content, w.limit)?;
                    out.files.push((e.path, stored));
                } else if e.kind != EntryKind::Dir && wanted.iter().any(|w| under(&w.path, &e.path, false)) {
                    out.whiteouts.push(Whiteout::Path(e.path));
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// The simplest `store` for [`extract`]: keeps the file in memory (at most `limit` bytes reach it).
///
/// # Errors
/// [`LayerError::Store`] when reading the content fails.
pub fn to_vec(path: &str, content: &mut dyn Read, limit: u64) -> Result<Vec<u8>, LayerError> {
    let mut v = Vec::new();
    content.take(limit).read_to_end(&mut v).map_err(|source| LayerError::Store { path: path.into(), source })?;
    Ok(v)
}

/// Stacks the wanted files of an image's layers, base first, as an unpacked image would hold
/// them: each layer's whiteouts remove what lower layers gave, then its files replace lower ones.
pub fn stack<T>(layers: impl IntoIterator<Item = LayerFiles<T>>) -> BTreeMap<String, T> {
    let mut files = BTreeMap::new();
    for layer in layers {
        apply_whiteouts(&mut files, &layer.whiteouts);
        for (path, f) in layer.files {
            files.insert(path, f);
        }
    }
    files
}

/// Removes from `lower` (cleaned path → anything) every entry one layer's `whiteouts` hide, and
/// returns what was removed.
pub fn apply_whiteouts<V>(lower: &mut BTreeMap<String, V>, whiteouts: &[Whiteout]) -> Vec<(String, V)> {
    let mut removed = Vec::new();
    for w in whiteouts {
        let (base, keep_self) = match w {
            Whiteout::Path(p) => (p.as_str(), false),
            Whiteout::Opaque(d) => (d.as_str(), true),
        };
        removed.extend(remove_subtree(lower, base, keep_self));
    }
    removed
}

/// Removes `path` and everything under it from `map` (only what lies under it when
/// `keep_self`), returning what was removed: what a whiteout, an opaque directory or a
/// non-directory replacing a directory does to lower entries (image-spec `layer.md`). `""`
/// is the root.
pub fn remove_subtree<V>(map: &mut BTreeMap<String, V>, path: &str, keep_self: bool) -> Vec<(String, V)> {
    let keys: Vec<String> = if path.is_empty() {
        map.keys().cloned().collect()
    } else {
        let prefix = format!("{path}/");
        map.range(path.to_string()..)
            .take_while(|(k, _)| *k == path || k.starts_with(&prefix))
            .filter(|(k, _)| !(keep_self && *k == path))
            .map(|(k, _)| k.clone())
            .collect()
    };
    keys.into_iter().filter_map(|k| map.remove(&k).map(|v| (k, v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Clone, Copy, Debug)]
    enum T {
        File,
        Dir,
        Sym,
        Hard,
        Fifo,
    }

    /// A tar from (path, type, content-or-link-target); paths are written raw (no cleaning).
    fn tar_of(entries: &[(&str, T, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, t, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_mtime(0);
            let (et, body): (tar::EntryType, &[u8]) = match t {
                T::File => (tar::EntryType::Regular, data.as_bytes()),
                T::Dir => (tar::EntryType::Directory, b""),
                T::Sym => (tar::EntryType::Symlink, b""),
                T::Hard => (tar::EntryType::Link, b""),
                T::Fifo => (tar::EntryType::Fifo, b""),
            };
            h.set_entry_type(et);
            h.set_size(body.len() as u64);
            // Raw name bytes so hostile paths reach the reader as written.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if matches!(t, T::Sym | T::Hard) {
                h.set_link_name(data).unwrap();
            }
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const K: &str = "usr/install/arm64/vmlinuz";

    fn want() -> Vec<Wanted> {
        vec![Wanted::new(K, 1 << 20)]
    }

    #[test]
    fn paths_are_cleaned_and_dotdot_refused() {
        assert_eq!(clean_path(b"./usr/install/arm64/vmlinuz").unwrap(), K);
        assert_eq!(clean_path(b"/usr//install/").unwrap(), "usr/install");
        assert_eq!(clean_path(b"./").unwrap(), "");
        assert!(matches!(clean_path(b"usr/../etc"), Err(LayerError::HostilePath { .. })));
        assert!(matches!(clean_path(b"../x"), Err(LayerError::HostilePath { .. })));
        assert!(matches!(clean_path(b"usr/\xff"), Err(LayerError::HostilePath { .. })));
    }

    #[test]
    fn compression_is_sniffed_from_bytes_gzip_members_all_read() {
        let a = tar_of(&[(K, T::File, "kernel")]);
        // Two gzip members: the first holds half the tar, the second the rest.
        let (x, y) = a.split_at(700);
        let mut two = gzip(x);
        two.extend(gzip(y));
        for blob in [a.clone(), two, zstd::encode_all(&a[..], 3).unwrap()] {
            let got = extract(&blob[..], 1 << 20, &want(), to_vec).unwrap();
            assert_eq!(got.files, vec![(K.to_string(), b"kernel".to_vec())]);
        }
        // However short the reads that deliver the magic (a network stream may hand over one byte).
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        for blob in [gzip(&a), zstd::encode_all(&a[..], 3).unwrap()] {
            let got = extract(Trickle(&blob), 1 << 20, &want(), to_vec).unwrap();
            assert_eq!(got.files, vec![(K.to_string(), b"kernel".to_vec())]);
        }
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"usr/"), Compression::None);
    }

    #[test]
    fn decompression_bombs_are_refused_with_their_bound() {
        let big = "0".repeat(4 << 20);
        let t = tar_of(&[("junk", T::File, &big), (K, T::File, "k")]);
        let blob = gzip(&t);
        assert!(blob.len() < 64 << 10, "a good bomb: {}", blob.len());
        let e = extract(&blob[..], 1 << 20, &want(), to_vec).unwrap_err();
        assert!(matches!(e, LayerError::ExpansionLimit { limit } if limit == 1 << 20), "{e}");
        assert!(e.to_string().contains("decompression bomb"), "{e}");
        // Also when the visitor is the one reading past the bound.
        let t = tar_of(&[(K, T::File, &big)]);
        let e = extract(&zstd::encode_all(&t[..], 3).unwrap()[..], 1 << 20, &[Wanted::new(K, 8 << 20)], to_vec)
            .unwrap_err();
        assert!(matches!(e, LayerError::ExpansionLimit { .. }), "{e}");
        assert!(expansion_limit(u64::MAX) == u64::MAX);
    }

    #[test]
    fn hostile_entries_are_refused() {
        for (entries, want_err) in [
            (vec![("usr/../../etc/passwd", T::File, "x")], "HostilePath"),
            (vec![("x", T::File, "x"), ("y", T::Hard, "../../etc/shadow")], "HostilePath"),
            (vec![("usr/.wh..", T::File, "")], "HostilePath"),
            (vec![(K, T::Sym, "/etc/shadow")], "NotRegular"),
            (vec![("usr/a", T::File, "a"), (K, T::Hard, "usr/a")], "NotRegular"),
            (vec![(K, T::Fifo, "")], "NotRegular"),
            (vec![(K, T::File, "a"), (K, T::File, "b")], "Duplicate"),
        ] {
            let e = extract(&tar_of(&entries)[..], 1 << 20, &want(), to_vec).unwrap_err();
            assert!(format!("{e:?}").starts_with(want_err), "{entries:?}: {e:?}");
        }
        let e = extract(&tar_of(&[(K, T::File, "0123456789")])[..], 1 << 20, &[Wanted::new(K, 4)], to_vec).unwrap_err();
        assert!(matches!(e, LayerError::TooLarge { size: 10, limit: 4, .. }), "{e}");
        // Not a tar at all.
        let e =
            extract(&b"this is not a tar archive, it is a sentence that is long enough"[..], 1 << 20, &want(), to_vec);
        assert!(e.is_err());
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only() {
        let base = extract(
            &tar_of(&[(K, T::File, "old"), ("usr/install/arm64/initramfs.xz", T::File, "i")])[..],
            1 << 20,
            &[Wanted::new(K, 99), Wanted::new("usr/install/arm64/initramfs.xz", 99)],
            to_vec,
        )
        .unwrap();
        let wanted = [Wanted::new(K, 99), Wanted::new("usr/install/arm64/initramfs.xz", 99)];
        // Deleted by a whiteout.
        let del =
            extract(&tar_of(&[("usr/install/arm64/.wh.vmlinuz", T::File, "")])[..], 1 << 20, &wanted, to_vec).unwrap();
        let files = stack([base, del]);
        assert_eq!(files.keys().collect::<Vec<_>>(), ["usr/install/arm64/initramfs.xz"]);

        // An opaque directory hides lower entries but not the same layer's.
        let base = extract(&tar_of(&[(K, T::File, "old")])[..], 1 << 20, &wanted, to_vec).unwrap();
        let opq = extract(
            &tar_of(&[(K, T::File, "new"), ("usr/install/arm64/.wh..wh..opq", T::File, "")])[..],
            1 << 20,
            &wanted,
            to_vec,
        )
        .unwrap();
        let files = stack([base, opq]);
        assert_eq!(files[K], b"new");

        // A whole directory deleted higher up; a file replaced; a directory replaced by a file.
        let base = || extract(&tar_of(&[(K, T::File, "old")])[..], 1 << 20, &wanted, to_vec).unwrap();
        let up = extract(&tar_of(&[("usr/.wh.install", T::File, "")])[..], 1 << 20, &wanted, to_vec).unwrap();
        assert!(stack([base(), up]).is_empty());
        let repl = extract(&tar_of(&[(K, T::File, "new")])[..], 1 << 20, &wanted, to_vec).unwrap();
        assert_eq!(stack([base(), repl])[K], b"new");
        let file_over_dir =
            extract(&tar_of(&[("usr/install", T::Sym, "/elsewhere")])[..], 1 << 20, &wanted, to_vec).unwrap();
        assert!(stack([base(), file_over_dir]).is_empty());
        let dir_again = extract(&tar_of(&[("usr/install", T::Dir, "")])[..], 1 << 20, &wanted, to_vec).unwrap();
        assert_eq!(stack([base(), dir_again])[K], b"old");
        let root_opq = extract(&tar_of(&[(".wh..wh..opq", T::File, "")])[..], 1 << 20, &wanted, to_vec).unwrap();
        assert!(stack([base(), root_opq]).is_empty());
    }

    #[test]
    fn whiteout_matching() {
        assert!(Whiteout::Path("usr/a".into()).hides("usr/a"));
        assert!(Whiteout::Path("usr/a".into()).hides("usr/a/b"));
        assert!(!Whiteout::Path("usr/a".into()).hides("usr/ab"));
        assert!(!Whiteout::Opaque("usr".into()).hides("usr"));
        assert!(Whiteout::Opaque("usr".into()).hides("usr/x"));
        assert!(Whiteout::Opaque(String::new()).hides("x"));
        assert_eq!(Whiteout::parse("a/.wh.b").unwrap(), Some(Whiteout::Path("a/b".into())));
        assert_eq!(Whiteout::parse(".wh..wh..opq").unwrap(), Some(Whiteout::Opaque(String::new())));
        assert_eq!(Whiteout::parse("a/b").unwrap(), None);
        let mut m: BTreeMap<String, ()> =
            ["a", "a/b", "a/b/c", "ab", "b"].iter().map(|k| (k.to_string(), ())).collect();
        let gone: Vec<String> = remove_subtree(&mut m, "a", true).into_iter().map(|(k, _)| k).collect();
        assert_eq!(gone, ["a/b", "a/b/c"]);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "ab", "b"]);
    }
}
