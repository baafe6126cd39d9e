//! A reader of `newc` cpio archives (the initramfs format; Linux
//! `Documentation/driver-api/early-userspace/buffer-format.rst`), for checking fixtures.
//!
//! Header: magic `070701`, then 13 fields of 8 hex digits (ino, mode, uid, gid, nlink, mtime,
//! filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check); the name (NUL-terminated)
//! and the data are each padded to a multiple of 4 bytes. `TRAILER!!!` ends an archive; the kernel
//! accepts several archives back to back (with NUL padding between), and so does this reader.

use anyhow::{bail, Context, Result};

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path as stored (no leading `/` in archives built from `find`).
    pub name: String,
    /// `st_mode`.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time.
    pub mtime: u32,
    /// File data (symlink target for links).
    pub data: Vec<u8>,
}

fn hex_field(h: &[u8], i: usize) -> Result<u32> {
    let s = std::str::from_utf8(&h[6 + 8 * i..6 + 8 * (i + 1)]).context("cpio header not ASCII")?;
    u32::from_str_radix(s, 16).with_context(|| format!("cpio header field {i} not hex: {s:?}"))
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads every member of the concatenated newc archives in `bytes` (trailers omitted).
pub fn read_newc(bytes: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        if bytes[off] == 0 {
            off += 1; // padding between archives
            continue;
        }
        let h = bytes.get(off..off + 110).context("cpio header truncated")?;
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            bail!("not a newc cpio header at offset {off}");
        }
        let mode = hex_field(h, 1)?;
        let uid = hex_field(h, 2)?;
        let gid = hex_field(h, 3)?;
        let mtime = hex_field(h, 5)?;
        let size = hex_field(h, 6)? as usize;
        let namesize = hex_field(h, 11)? as usize;
        let name_start = off + 110;
        let name_bytes = bytes.get(name_start..name_start + namesize).context("cpio name truncated")?;
        let name = String::from_utf8_lossy(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes)).into_owned();
        let data_start = pad4(name_start + namesize);
        let data = bytes.get(data_start..data_start + size).context("cpio data truncated")?.to_vec();
        off = pad4(data_start + size);
        if name == "TRAILER!!!" {
            continue;
        }
        out.push(Entry { name, mode, uid, gid, mtime, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            mode,
            0,
            0,
            1,
            7,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn reads_members_across_archives() {
        let mut a = member("init", 0o100755, b"#!");
        a.extend(member("TRAILER!!!", 0, b""));
        a.extend([0u8; 8]);
        a.extend(member("rootfs.sqsh", 0o100644, b"hsqs12345"));
        a.extend(member("TRAILER!!!", 0, b""));
        let e = read_newc(&a).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["init", "rootfs.sqsh"]);
        assert_eq!(e[1].data, b"hsqs12345");
        assert_eq!(e[0].mode, 0o100755);
        assert_eq!(e[0].mtime, 7);
        assert!(read_newc(b"garbage!").is_err());
    }
}
