//! One squashfs image per extension rootfs, written with `backhand` the way Talos's imager runs
//! `mksquashfs ROOTFS N.sqsh -all-root -noappend -no-progress -comp zstd -Xcompression-level 18`
//! (talos v1.10.5 `internal/pkg/extensions/compress.go`, zstd for Talos ≥ 1.8 by
//! `quirks.UseZSTDCompression`).
//!
//! Settings, each matching that command: squashfs 4.0 little endian, block size 128 KiB
//! (mksquashfs's default), zstd level 18 stored in the compression options, every uid/gid 0
//! (`-all-root`), files deduplicated, the image padded to 4 KiB. For reproducibility every inode
//! and the superblock get one fixed time (`SOURCE_DATE_EPOCH`), and entries are added in sorted
//! order (backhand sorts directory entries as squashfs requires).

use std::collections::BTreeMap;
use std::io::Cursor;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use backhand::compression::{CompressionAction, CompressionOptions, Compressor, DefaultCompressor};
use backhand::kind::Kind as BackhandKind;
use backhand::{BackhandError, FilesystemCompressor, FilesystemWriter, NodeHeader, SuperBlock};

use crate::extension::tree::{Entry, Kind};

/// The zstd level of Talos ≥ 1.8 squashfs images.
pub const ZSTD_LEVEL: u32 = 18;
/// mksquashfs's default block size, 128 KiB.
pub const BLOCK_SIZE: u32 = 128 * 1024;

/// backhand writes data blocks one after the other on one thread; mksquashfs compresses on
/// every core. [`precompress`] compresses the full data blocks of several images in parallel
/// beforehand, with exactly the function backhand would call ([`DefaultCompressor`]), and this
/// compressor hands those results back when backhand asks (falling back to compressing), so
/// the bytes are the same as without it.
struct Precompressed {
    blocks: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

static PRECOMPRESSED: LazyLock<Precompressed> = LazyLock::new(|| Precompressed { blocks: Mutex::new(HashMap::new()) });

impl CompressionAction for Precompressed {
    fn decompress(&self, bytes: &[u8], out: &mut Vec<u8>, compressor: Compressor) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(&self, bytes: &[u8], fc: FilesystemCompressor, block_size: u32) -> Result<Vec<u8>, BackhandError> {
        if let Some(done) = self.blocks.lock().expect("not poisoned").get(bytes) {
            return Ok(done.clone());
        }
        DefaultCompressor.compress(bytes, fc, block_size)
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &BackhandKind,
        fs_compressor: FilesystemCompressor,
    ) -> Result<Vec<u8>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

fn compressor() -> Result<FilesystemCompressor, BackhandError> {
    FilesystemCompressor::new(
        Compressor::Zstd,
        Some(CompressionOptions::Zstd(backhand::compression::Zstd { compression_level: ZSTD_LEVEL })),
    )
}

/// Compresses every full [`BLOCK_SIZE`] block of the regular files in `trees` on `threads`
/// threads, so that [`write`] finds them done.
///
/// # Errors
/// [`SquashfsError::Backhand`] from the compressor.
pub fn precompress(trees: &[&BTreeMap<String, Entry>], threads: usize) -> Result<(), SquashfsError> {
    let bs = BLOCK_SIZE as usize;
    let mut blocks: Vec<&[u8]> = Vec::new();
    for t in trees {
        for e in t.values() {
            if let Kind::File(d) = &e.kind {
                blocks.extend(d.chunks_exact(bs));
            }
        }
    }
    let fc = compressor()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: Mutex<Option<BackhandError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(block) = blocks.get(i) else { break };
                match DefaultCompressor.compress(block, fc, BLOCK_SIZE) {
                    Ok(c) => {
                        PRECOMPRESSED.blocks.lock().expect("not poisoned").insert(block.to_vec(), c);
                    }
                    Err(e) => {
                        *failed.lock().expect("not poisoned") = Some(e);
                        break;
                    }
                }
            });
        }
    });
    match failed.into_inner().expect("not poisoned") {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Why a squashfs image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    /// backhand refused an entry or failed to write.
    #[error("writing squashfs: {0}")]
    Backhand(#[from] backhand::BackhandError),
    /// A device, FIFO or socket (validation refuses these before we get here).
    #[error("special file {0:?} cannot go into an extension squashfs")]
    Special(String),
}

/// Writes `entries` (paths relative to the rootfs, no leading `/`, e.g. `usr/local/bin/x`) as a
/// squashfs image whose root directory has permission bits `root_mode`; every time is `mtime`.
/// Returns the image bytes.
///
/// # Errors
/// [`SquashfsError`].
pub fn write(entries: &BTreeMap<String, Entry>, root_mode: u32, mtime: u32) -> Result<Vec<u8>, SquashfsError> {
    let mut fs = FilesystemWriter::default();
    fs.set_block_size(BLOCK_SIZE);
    fs.set_time(mtime);
    fs.set_only_root_id();
    fs.set_root_mode((root_mode & 0o7777) as u16);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_kind(BackhandKind::new(&*PRECOMPRESSED));
    fs.set_compressor(compressor()?);
    fs.set_kib_padding(4);
    // A BTreeMap lists "a" before "a/b": parents always come first.
    for (path, entry) in entries {
        let header = NodeHeader::new((entry.mode & 0o7777) as u16, 0, 0, mtime);
        match &entry.kind {
            Kind::Dir => fs.push_dir(path, header)?,
            Kind::File(data) => fs.push_file(Cursor::new(data.as_slice()), path, header)?,
            Kind::Symlink(target) => fs.push_symlink(target, path, NodeHeader::new(0o777, 0, 0, mtime))?,
            Kind::Special(_) => return Err(SquashfsError::Special(path.clone())),
        }
    }
    let mut out = Cursor::new(Vec::new());
    fs.write(&mut out)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_readable_image_twice_identically() {
        let mut e = BTreeMap::new();
        e.insert("usr".to_string(), Entry { mode: 0o755, kind: Kind::Dir });
        e.insert("usr/local".to_string(), Entry { mode: 0o755, kind: Kind::Dir });
        e.insert("usr/local/a".to_string(), Entry { mode: 0o755, kind: Kind::File(vec![7u8; 300_000]) });
        e.insert("usr/local/l".to_string(), Entry { mode: 0o777, kind: Kind::Symlink("a".into()) });
        let a = write(&e, 0o755, 1_751_328_000).unwrap();
        precompress(&[&e], 2).unwrap();
        assert!(!PRECOMPRESSED.blocks.lock().unwrap().is_empty());
        let b = write(&e, 0o755, 1_751_328_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..4], b"hsqs");
        assert_eq!(a.len() % 4096, 0);
        let reader = backhand::FilesystemReader::from_reader(Cursor::new(a)).unwrap();
        let names: Vec<String> = reader.files().map(|n| n.fullpath.display().to_string()).collect();
        assert_eq!(names, ["/", "/usr", "/usr/local", "/usr/local/a", "/usr/local/l"]);
    }
}
