//! A reproducible writer of newc ("SVR4 with no CRC", magic `070701`) cpio archives, the format
//! the Linux kernel unpacks as an initramfs.
//!
//! Format (kernel `Documentation/driver-api/early-userspace/buffer-format.rst`, GNU cpio
//! `copyout.c`): each entry is a 110-byte ASCII header — `070701` then 13 fields of 8 hex digits
//! (`ino`, `mode`, `uid`, `gid`, `nlink`, `mtime`, `filesize`, `devmajor`, `devminor`, `rdevmajor`,
//! `rdevminor`, `namesize` counting the NUL, `check` = 0) — then the NUL-terminated name padded
//! with NULs to a multiple of 4 bytes (counting from the header start), then the data padded to 4.
//! The archive ends with the entry `TRAILER!!!` (nlink 1, everything else 0) and, as GNU cpio
//! does, zeros up to a multiple of 512 bytes.
//!
//! What Talos's imager runs is `cpio -H newc --create --reproducible -R +0:+0`
//! (`pkg/imager/extensions/rebuild.go`): uid/gid 0, inode numbers renumbered, device numbers 0.
//! We write the same fields, numbering inodes from 0 in archive order (as `--renumber-inodes` does), with one fixed `mtime` for
//! every entry (GNU cpio would copy each file's own time; a fixed one is what makes the output
//! reproducible).

use std::io::{self, Write};

/// `S_IFDIR`.
pub const S_IFDIR: u32 = 0o040_000;
/// `S_IFREG`.
pub const S_IFREG: u32 = 0o100_000;
/// `S_IFLNK`.
pub const S_IFLNK: u32 = 0o120_000;

/// GNU cpio's output block size: the archive is padded with zeros to a multiple of it.
pub const BLOCK: u64 = 512;

/// Writes newc entries into `W`, counting bytes.
pub struct Writer<W> {
    inner: W,
    written: u64,
    next_ino: u32,
    mtime: u32,
}

impl<W: Write> Writer<W> {
    /// A writer whose entries all carry modification time `mtime` (seconds since the epoch).
    pub fn new(inner: W, mtime: u32) -> Writer<W> {
        Writer { inner, written: 0, next_ino: 0, mtime }
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 4][..n])
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u64, ino: u32) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| io::Error::other(format!("{name}: over 4 GiB for newc cpio")))?;
        let namesize = name.len() as u32 + 1;
        let mtime = if name == "TRAILER!!!" { 0 } else { self.mtime };
        let h = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{mtime:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            0, 0, 0, 0, 0, 0, 0
        );
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn ino(&mut self) -> u32 {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    /// A directory with permission bits `perm` (nlink 2).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        let ino = self.ino();
        self.header(name, S_IFDIR | (perm & 0o7777), 2, 0, ino)
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let ino = self.ino();
        self.header(name, S_IFREG | (perm & 0o7777), 1, data.len() as u64, ino)?;
        self.put(data)?;
        self.pad()
    }

    /// A symbolic link (its data is the target).
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let ino = self.ino();
        self.header(name, S_IFLNK | 0o777, 1, target.len() as u64, ino)?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// Writes the trailer and the padding to [`BLOCK`]; returns the inner writer and the
    /// archive's length in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.header("TRAILER!!!", 0, 1, 0, 0)?;
        let n = ((BLOCK - self.written % BLOCK) % BLOCK) as usize;
        self.put(&vec![0u8; n])?;
        self.inner.flush()?;
        Ok((self.inner, self.written))
    }
}

/// Orders archive paths as `find` + sorted `readdir` lists them (Talos's listing: each directory
/// before its children, siblings in byte order): by the sequence of path components.
pub fn preorder_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_padding() {
        let mut w = Writer::new(Vec::new(), 0x5f5e_1000);
        w.dir("d", 0o755).unwrap();
        w.file("d/a", 0o644, b"hello").unwrap();
        w.symlink("d/l", "a").unwrap();
        let (bytes, len) = w.finish().unwrap();
        assert_eq!(len as usize, bytes.len());
        assert_eq!(bytes.len() % 512, 0);
        let first = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&first[..6], "070701");
        assert_eq!(&first[6..14], "00000000", "ino from 0");
        assert_eq!(&first[14..22], "000041ED", "directory 0755");
        assert_eq!(&first[38..46], "00000002", "nlink 2");
        assert_eq!(&first[46..54], "5F5E1000", "mtime");
        assert_eq!(&first[94..102], "00000002", "namesize with NUL");
        // "d\0" after the header, padded to 112.
        assert_eq!(&bytes[110..112], b"d\0");
        let second = std::str::from_utf8(&bytes[112..222]).unwrap();
        assert_eq!(&second[14..22], "000081A4");
        assert_eq!(&second[54..62], "00000005");
        // name "d/a\0" at 222..226, padded to 228; data at 228.
        assert_eq!(&bytes[228..233], b"hello");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn preorder_puts_children_right_after_their_directory() {
        let mut v = vec!["a-c", "a/b", "a", "0.sqsh", "10.sqsh", "2.sqsh"];
        v.sort_by(|x, y| preorder_cmp(x, y));
        assert_eq!(v, ["0.sqsh", "10.sqsh", "2.sqsh", "a", "a/b", "a-c"]);
    }
}
