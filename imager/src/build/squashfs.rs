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
//!
//! **SELinux labels.** From Talos 1.12 an entry's `SCHILY.xattr.security.selinux` PAX record
//! becomes its `security.selinux` extended attribute in the squashfs (v1.12: `untar.go` sets the
//! xattr and mksquashfs reads it; from v1.13: `compress.go` `xattrPseudoFlags` passes
//! `-xattrs-exclude .* -p "<path> x security.selinux=<label>"`). backhand cannot write extended
//! attributes (backhand 0.25 `src/v4/entry.rs`, issue #32), so an image with any label is written
//! by `tar2sqfs` from squashfs-tools-ng (Debian/Ubuntu package `squashfs-tools-ng`), fed a PAX tar
//! of the same entries, with the same settings (zstd level 18, 128 KiB blocks, uid/gid 0, one
//! time, 4 KiB padding; one job, so the bytes do not depend on the machine). Only that xattr is
//! written, as Talos excludes every other one. Images without labels (every official extension)
//! stay backhand's.

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
/// threads, so that [`write`] finds them done. Blocks compressed before (by an earlier call in
/// this process: a board image's initramfs repeats every extension but one) are not compressed
/// again.
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
    {
        let done = PRECOMPRESSED.blocks.lock().expect("not poisoned");
        blocks.retain(|b| !done.contains_key(*b));
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
    /// `tar2sqfs` (needed for SELinux labels) could not run or failed.
    #[error("writing SELinux labels needs tar2sqfs (Debian/Ubuntu package squashfs-tools-ng): {0}")]
    Tar2sqfs(String),
    /// A device, FIFO or socket (validation refuses these before we get here).
    #[error("special file {0:?} cannot go into an extension squashfs")]
    Special(String),
}

/// Writes `entries` (paths relative to the rootfs, no leading `/`, e.g. `usr/local/bin/x`) as a
/// squashfs image whose root directory has permission bits `root_mode` and SELinux label
/// `root_label`; every time is `mtime`. Entry labels ([`Entry::selinux_label`]) become
/// `security.selinux` xattrs (see the module docs). Returns the image bytes.
///
/// # Errors
/// [`SquashfsError`]; [`SquashfsError::Tar2sqfs`] when labels are present and `tar2sqfs` fails.
pub fn write(
    entries: &BTreeMap<String, Entry>,
    root_mode: u32,
    root_label: Option<&str>,
    mtime: u32,
) -> Result<Vec<u8>, SquashfsError> {
    if root_label.is_some() || entries.values().any(|e| e.selinux_label.is_some()) {
        return write_labelled(entries, root_mode, root_label, mtime);
    }
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

/// The PAX tar `tar2sqfs` reads: the root as `./`, then every entry in path order.
fn labelled_tar(
    entries: &BTreeMap<String, Entry>,
    root_mode: u32,
    root_label: Option<&str>,
    mtime: u32,
) -> Result<Vec<u8>, SquashfsError> {
    let io = |e: std::io::Error| SquashfsError::Tar2sqfs(format!("building its input: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    let mut append = |path: &str, mode: u32, label: Option<&str>, kind: &Kind| -> Result<(), SquashfsError> {
        if let Some(label) = label {
            b.append_pax_extensions([(boot_artifact::layer::PAX_SELINUX, label.as_bytes())]).map_err(io)?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime.into());
        h.set_mode(mode & 0o7777);
        let data: &[u8] = match kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                d
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).map_err(io)?;
                return Ok(());
            }
            Kind::Special(_) => return Err(SquashfsError::Special(path.to_string())),
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).map_err(io)
    };
    append("./", root_mode, root_label, &Kind::Dir)?;
    for (path, e) in entries {
        append(path, e.mode, e.selinux_label.as_deref(), &e.kind)?;
    }
    b.into_inner().map_err(io)
}

/// [`write`] through `tar2sqfs`, for images that carry SELinux labels.
fn write_labelled(
    entries: &BTreeMap<String, Entry>,
    root_mode: u32,
    root_label: Option<&str>,
    mtime: u32,
) -> Result<Vec<u8>, SquashfsError> {
    use std::io::Write;
    let tar = labelled_tar(entries, root_mode, root_label, mtime)?;
    let fail = |what: &str, e: &dyn std::fmt::Display| SquashfsError::Tar2sqfs(format!("{what}: {e}"));
    let dir = tempfile::tempdir().map_err(|e| fail("temporary directory", &e))?;
    let out = dir.path().join("image.sqsh");
    let mut child = std::process::Command::new("tar2sqfs")
        .args(["--quiet", "--no-skip", "--force", "--num-jobs", "1", "--compressor", "zstd"])
        .arg("--comp-extra")
        .arg(format!("level={ZSTD_LEVEL}"))
        .arg("--block-size")
        .arg(BLOCK_SIZE.to_string())
        .arg("--dev-block-size")
        .arg("4096")
        .arg("--defaults")
        .arg(format!("uid=0,gid=0,mode=0755,mtime={mtime}"))
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail("running tar2sqfs", &e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let fed = stdin.write_all(&tar);
    drop(stdin);
    let done = child.wait_with_output().map_err(|e| fail("waiting for tar2sqfs", &e))?;
    if !done.status.success() {
        let stderr = String::from_utf8_lossy(&done.stderr);
        return Err(fail(&format!("tar2sqfs {}", done.status), &stderr.trim()));
    }
    fed.map_err(|e| fail("feeding tar2sqfs", &e))?;
    std::fs::read(&out).map_err(|e| fail("reading its image", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_readable_image_twice_identically() {
        let mut e = BTreeMap::new();
        e.insert("usr".to_string(), Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
        e.insert("usr/local".to_string(), Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
        e.insert(
            "usr/local/a".to_string(),
            Entry { mode: 0o755, kind: Kind::File(vec![7u8; 300_000]), selinux_label: None },
        );
        e.insert(
            "usr/local/l".to_string(),
            Entry { mode: 0o777, kind: Kind::Symlink("a".into()), selinux_label: None },
        );
        let a = write(&e, 0o755, None, 1_751_328_000).unwrap();
        precompress(&[&e], 2).unwrap();
        assert!(!PRECOMPRESSED.blocks.lock().unwrap().is_empty());
        let b = write(&e, 0o755, None, 1_751_328_000).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..4], b"hsqs");
        assert_eq!(a.len() % 4096, 0);
        let reader = backhand::FilesystemReader::from_reader(Cursor::new(a)).unwrap();
        let names: Vec<String> = reader.files().map(|n| n.fullpath.display().to_string()).collect();
        assert_eq!(names, ["/", "/usr", "/usr/local", "/usr/local/a", "/usr/local/l"]);
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The labels are read back by squashfs-tools-ng's `rdsquashfs`, the listing by
    /// squashfs-tools' `unsquashfs`: neither is ours.
    #[test]
    fn selinux_labels_become_security_selinux_xattrs() {
        let label = "system_u:object_r:system_state_t:s0";
        let dir = |selinux_label: Option<&str>| Entry {
            mode: 0o755,
            kind: Kind::Dir,
            selinux_label: selinux_label.map(str::to_string),
        };
        let mut e = BTreeMap::new();
        e.insert("usr".to_string(), dir(None));
        e.insert("usr/local".to_string(), dir(Some("system_u:object_r:usr_t:s0")));
        e.insert(
            "usr/local/config.yaml".to_string(),
            Entry { mode: 0o400, kind: Kind::File(vec![b'x'; 200_000]), selinux_label: Some(label.into()) },
        );
        e.insert(
            "usr/local/l".to_string(),
            Entry { mode: 0o777, kind: Kind::Symlink("config.yaml".into()), selinux_label: None },
        );
        let img = write(&e, 0o755, Some("system_u:object_r:root_t:s0"), 1_751_328_000).unwrap();
        assert_eq!(img, write(&e, 0o755, Some("system_u:object_r:root_t:s0"), 1_751_328_000).unwrap());
        assert_eq!(img.len() % 4096, 0);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l.sqsh");
        std::fs::write(&path, &img).unwrap();
        let p = path.to_str().unwrap();
        let xattrs = |inode: &str| run("rdsquashfs", &["-x", inode, p]);
        assert_eq!(xattrs("/usr/local/config.yaml"), format!("security.selinux={label}\n"));
        assert_eq!(xattrs("/usr/local"), "security.selinux=system_u:object_r:usr_t:s0\n");
        assert_eq!(xattrs("/"), "security.selinux=system_u:object_r:root_t:s0\n");
        assert_eq!(xattrs("/usr"), "");
        let listing = run("unsquashfs", &["-lln", p]);
        let lines: Vec<String> = listing
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {}", f[0], f[1], f[f.len() - 1])
            })
            .collect();
        assert_eq!(
            lines,
            [
                "drwxr-xr-x 0/0 squashfs-root",
                "drwxr-xr-x 0/0 squashfs-root/usr",
                "drwxr-xr-x 0/0 squashfs-root/usr/local",
                "-r-------- 0/0 squashfs-root/usr/local/config.yaml",
                "lrwxrwxrwx 0/0 config.yaml",
            ]
        );
        let sb = run("unsquashfs", &["-s", p]);
        for want in ["Compression zstd", "compression-level 18", "Block size 131072", "Number of ids 1"] {
            assert!(sb.contains(want), "{want:?} not in\n{sb}");
        }
    }
}
