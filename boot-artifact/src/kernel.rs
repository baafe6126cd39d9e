//! Kernel image formats, recognised from their first bytes, and bounded unpacking.
//!
//! | format | how it is recognised | source |
//! |---|---|---|
//! | arm64 `Image` | `ARM\x64` (u32 LE 0x644d5241) at offset 56 | Linux `Documentation/arch/arm64/booting.rst` |
//! | x86 bzImage | `0xAA55` at 0x1fe and `HdrS` at 0x202 | Linux `Documentation/arch/x86/boot.rst` |
//! | EFI zboot | `MZ` at 0, `zimg` at 4; u32 LE payload offset at 8, payload size at 12, NUL-terminated compression name at 24 | Linux `drivers/firmware/efi/libstub/zboot-header.S` |
//! | PE (UKI) | `MZ` at 0 and none of the above | PE/COFF; see [`crate::pe`] |
//! | gzip | `1f 8b` | RFC 1952 |
//! | zstd | `28 b5 2f fd` | RFC 8878 |
//!
//! Order matters: an arm64 `Image` and a bzImage built with the EFI stub also start with `MZ`.
//!
//! arm64 `kexec_file_load` accepts only a raw `Image` (Linux `arch/arm64/kernel/kexec_image.c`),
//! so a zboot or gzip'd kernel must be unpacked first. Talos ≥ 1.8 ships its arm64 `vmlinuz` as
//! zstd EFI zboot (TALOS-FORMATS.md). For zboot methods other than gzip the kernel build appends
//! a le32 holding the uncompressed size *after* the payload (not counted in the payload size); the
//! unpacked image is the in-memory size including BSS (`drivers/firmware/efi/libstub/Makefile.zboot`).

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Default bound on an unpacked kernel: 256 MiB. Talos's arm64 `Image` is about 70 MiB.
pub const DEFAULT_MAX_KERNEL_SIZE: u64 = 256 << 20;

/// How many leading bytes [`detect`] needs to recognise every format.
pub const DETECT_LEN: usize = 0x240;

/// The arm64 `Image` magic at offset 56.
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";

/// Errors recognising or unpacking a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are no kernel format this crate knows.
    #[error("unrecognised kernel format (first bytes {0})")]
    Unknown(String),
    /// The zboot header names a compression this crate does not unpack.
    #[error("EFI zboot payload compressed with {0:?}; only zstd and gzip are supported")]
    UnsupportedCompression(String),
    /// The zboot payload range lies outside the file.
    #[error("EFI zboot payload (offset {offset}, size {size}) lies outside the file of {file_len} bytes")]
    PayloadOutOfBounds {
        /// Payload offset in bytes.
        offset: u64,
        /// Payload size in bytes.
        size: u64,
        /// File length in bytes.
        file_len: u64,
    },
    /// Decompression produced more than the allowed number of bytes.
    #[error("unpacked kernel exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The compressed data is corrupt or truncated.
    #[error("corrupt {format} data: {source}")]
    Corrupt {
        /// `zstd` or `gzip`.
        format: &'static str,
        /// The decoder's error.
        source: io::Error,
    },
    /// The unpacked bytes are not what the container promised.
    #[error("unpacked kernel is not {expected}: {found}")]
    Mismatch {
        /// What was expected (e.g. "an arm64 Image").
        expected: &'static str,
        /// What was found.
        found: String,
    },
}

/// The header fields of an arm64 `Image` that a loader needs (`booting.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm64Header {
    /// `text_offset`: where the image must sit above a 2 MiB-aligned base, in bytes.
    pub text_offset: u64,
    /// `image_size`: the effective image size including BSS, in bytes (0 on kernels < 3.17).
    pub image_size: u64,
    /// `flags`: bit 0 endianness (0 = LE), bits 1–2 page size, bit 3 physical placement.
    pub flags: u64,
}

/// An EFI zboot header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZbootHeader {
    /// File offset of the compressed payload, in bytes.
    pub payload_offset: u32,
    /// Size of the compressed payload, in bytes.
    pub payload_size: u32,
    /// Compression name (`zstd`, `gzip`, `lz4`, `lzma`, `lzo`, `xz`).
    pub compression: String,
}

/// A recognised kernel format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelFormat {
    /// A raw arm64 `Image`.
    Arm64Image(Arm64Header),
    /// An x86 bzImage with the given boot protocol version (e.g. 0x020f).
    BzImage {
        /// Boot protocol version at 0x206.
        protocol: u16,
    },
    /// An EFI zboot PE wrapping a compressed kernel.
    EfiZboot(ZbootHeader),
    /// Another PE file (a UKI, or an EFI application that is not a kernel).
    Pe,
    /// A gzip stream (e.g. Debian's arm64 `vmlinuz`).
    Gzip,
    /// A zstd stream.
    Zstd,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the arm64 `Image` header from the first 64 bytes, if the magic is there.
pub fn arm64_header(head: &[u8]) -> Option<Arm64Header> {
    if head.len() < 64 || &head[56..60] != ARM64_MAGIC {
        return None;
    }
    Some(Arm64Header { text_offset: u64_at(head, 8), image_size: u64_at(head, 16), flags: u64_at(head, 24) })
}

/// Recognises the format from the first bytes of a file (at least [`DETECT_LEN`] bytes, or the
/// whole file if it is shorter).
///
/// # Errors
/// [`KernelError::Unknown`] with the first bytes in hex.
pub fn detect(head: &[u8]) -> Result<KernelFormat, KernelError> {
    if let Some(h) = arm64_header(head) {
        return Ok(KernelFormat::Arm64Image(h));
    }
    if head.len() >= 0x208 && head[0x1fe..0x200] == [0x55, 0xaa] && &head[0x202..0x206] == b"HdrS" {
        return Ok(KernelFormat::BzImage { protocol: u16::from_le_bytes([head[0x206], head[0x207]]) });
    }
    if head.len() >= 64 && &head[..2] == b"MZ" && &head[4..8] == b"zimg" {
        let name = &head[24..56];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        return Ok(KernelFormat::EfiZboot(ZbootHeader {
            payload_offset: u32_at(head, 8),
            payload_size: u32_at(head, 12),
            compression: String::from_utf8_lossy(&name[..end]).into_owned(),
        }));
    }
    if head.len() >= 2 && &head[..2] == b"MZ" {
        return Ok(KernelFormat::Pe);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(KernelFormat::Gzip);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(KernelFormat::Zstd);
    }
    let shown: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(KernelError::Unknown(shown))
}

/// Reads the first [`DETECT_LEN`] bytes (or fewer, for a short file) from the start of `file`
/// and recognises them. The position of `file` is left unspecified.
///
/// # Errors
/// [`KernelError::Io`], [`KernelError::Unknown`].
pub fn detect_file<R: Read + Seek>(file: &mut R) -> Result<KernelFormat, KernelError> {
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(DETECT_LEN);
    file.by_ref().take(DETECT_LEN as u64).read_to_end(&mut head)?;
    detect(&head)
}

/// A writer that refuses to pass more than `limit` bytes and remembers the first 64.
struct Bounded<W> {
    inner: W,
    written: u64,
    limit: u64,
    head: Vec<u8>,
    exceeded: bool,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("unpacked size limit exceeded"));
        }
        let n = self.inner.write(buf)?;
        if self.head.len() < 64 {
            let take = (64 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses one `format` stream (`zstd` or `gzip`) from `src` into `dst`, refusing to write
/// more than `limit` bytes. Returns the number of bytes written and their first 64 bytes.
///
/// Only one zstd frame or gzip member is read: the bytes a zboot build appends after the payload
/// are not part of it.
///
/// # Errors
/// [`KernelError::TooLarge`], [`KernelError::Corrupt`] (including a truncated stream),
/// [`KernelError::UnsupportedCompression`], [`KernelError::Io`] from `dst`.
pub fn decompress<R: Read, W: Write>(format: &str, src: R, dst: W, limit: u64) -> Result<(u64, Vec<u8>), KernelError> {
    let mut out = Bounded { inner: dst, written: 0, limit, head: Vec::new(), exceeded: false };
    let (name, result): (&'static str, io::Result<u64>) = match format {
        "zstd" => match zstd::stream::read::Decoder::new(src) {
            Ok(d) => ("zstd", io::copy(&mut d.single_frame(), &mut out)),
            Err(e) => ("zstd", Err(e)),
        },
        "gzip" => ("gzip", io::copy(&mut flate2::read::GzDecoder::new(src), &mut out)),
        other => return Err(KernelError::UnsupportedCompression(other.to_string())),
    };
    if out.exceeded {
        return Err(KernelError::TooLarge { limit });
    }
    match result {
        Ok(_) => {}
        // Errors from the sink are the caller's I/O errors, not corruption.
        Err(e) if e.kind() == io::ErrorKind::WriteZero || e.kind() == io::ErrorKind::StorageFull => {
            return Err(KernelError::Io(e))
        }
        Err(source) => return Err(KernelError::Corrupt { format: name, source }),
    }
    out.flush()?;
    Ok((out.written, out.head))
}

/// What [`unpack_arm64`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The container the kernel came in.
    pub from: KernelFormat,
    /// Length of the raw `Image` written, in bytes.
    pub len: u64,
    /// Its header.
    pub header: Arm64Header,
}

/// Turns an arm64 kernel in `src` (EFI zboot with zstd or gzip payload, gzip'd `Image`, or raw
/// `Image`) into a raw `Image` in `dst`, writing at most `limit` bytes, and checks the result's
/// magic. A raw `Image` is copied as is.
///
/// # Errors
/// [`KernelError::PayloadOutOfBounds`], [`KernelError::Mismatch`] (the unpacked bytes are not an
/// arm64 `Image`, or `src` is an x86 kernel or a UKI), and those of [`decompress`].
pub fn unpack_arm64<R: Read + Seek, W: Write>(src: &mut R, dst: W, limit: u64) -> Result<Unpacked, KernelError> {
    let from = detect_file(src)?;
    let (len, head) = match &from {
        KernelFormat::EfiZboot(z) => {
            let file_len = src.seek(SeekFrom::End(0))?;
            let (offset, size) = (u64::from(z.payload_offset), u64::from(z.payload_size));
            if offset.checked_add(size).is_none_or(|end| end > file_len) {
                return Err(KernelError::PayloadOutOfBounds { offset, size, file_len });
            }
            src.seek(SeekFrom::Start(offset))?;
            decompress(&z.compression, src.by_ref().take(size), dst, limit)?
        }
        KernelFormat::Gzip | KernelFormat::Zstd => {
            src.seek(SeekFrom::Start(0))?;
            let name = if from == KernelFormat::Gzip { "gzip" } else { "zstd" };
            decompress(name, src.by_ref(), dst, limit)?
        }
        KernelFormat::Arm64Image(_) => {
            src.seek(SeekFrom::Start(0))?;
            let mut out = Bounded { inner: dst, written: 0, limit, head: Vec::new(), exceeded: false };
            let copied = io::copy(src, &mut out);
            if out.exceeded {
                return Err(KernelError::TooLarge { limit });
            }
            copied?;
            (out.written, out.head)
        }
        other => {
            return Err(KernelError::Mismatch { expected: "an arm64 kernel", found: format!("{other:?}") });
        }
    };
    let header = arm64_header(&head).ok_or_else(|| KernelError::Mismatch {
        expected: "an arm64 Image",
        found: match detect(&head) {
            Ok(f) => format!("{f:?}"),
            Err(_) => "no ARM\\x64 magic at offset 56".to_string(),
        },
    })?;
    Ok(Unpacked { from, len, header })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake arm64 Image: the real header layout with `len` bytes in all.
    fn image(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0..2].copy_from_slice(b"MZ");
        v[8..16].copy_from_slice(&0x80000u64.to_le_bytes());
        v[16..24].copy_from_slice(&(len as u64).to_le_bytes());
        v[24..32].copy_from_slice(&0xau64.to_le_bytes());
        v[56..60].copy_from_slice(ARM64_MAGIC);
        for (i, b) in v.iter_mut().enumerate().skip(64) {
            *b = (i % 251) as u8;
        }
        v
    }

    /// An EFI zboot container laid out as `zboot-header.S` does, with the le32 size appended
    /// after the payload for non-gzip methods.
    fn zboot(payload: &[u8], method: &str, append_size: Option<u32>) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        v[0..2].copy_from_slice(b"MZ");
        v[4..8].copy_from_slice(b"zimg");
        v[8..12].copy_from_slice(&4096u32.to_le_bytes());
        v[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        v[24..24 + method.len()].copy_from_slice(method.as_bytes());
        v.extend_from_slice(payload);
        if let Some(n) = append_size {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(&[0xee; 100]);
        v
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn detects_every_format() {
        let img = image(4096);
        assert!(
            matches!(detect(&img).unwrap(), KernelFormat::Arm64Image(h) if h.text_offset == 0x80000 && h.image_size == 4096)
        );
        let mut bz = vec![0u8; 0x400];
        bz[0..2].copy_from_slice(b"MZ");
        bz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        assert_eq!(detect(&bz).unwrap(), KernelFormat::BzImage { protocol: 0x020f });
        let z = zboot(b"xx", "zstd", None);
        assert!(
            matches!(detect(&z).unwrap(), KernelFormat::EfiZboot(h) if h.compression == "zstd" && h.payload_offset == 4096 && h.payload_size == 2)
        );
        assert_eq!(detect(b"MZ\0\0\0\0\0\0").unwrap(), KernelFormat::Pe);
        assert_eq!(detect(&gzip(b"x")).unwrap(), KernelFormat::Gzip);
        assert!(matches!(detect(b"\x7fELF\x02\x01"), Err(KernelError::Unknown(s)) if s == "7f454c460201"));
    }

    #[test]
    fn unpacks_zstd_zboot_with_appended_size() {
        let img = image(3 << 20);
        let payload = zstd::encode_all(&img[..], 3).unwrap();
        let file = zboot(&payload, "zstd", Some(img.len() as u32));
        let mut out = Vec::new();
        let u = unpack_arm64(&mut Cursor::new(file), &mut out, DEFAULT_MAX_KERNEL_SIZE).unwrap();
        assert_eq!(out, img);
        assert_eq!(u.len, img.len() as u64);
        assert!(matches!(u.from, KernelFormat::EfiZboot(_)));
    }

    #[test]
    fn unpacks_gzip_zboot_gzip_image_and_raw_image() {
        let img = image(1 << 20);
        for file in [zboot(&gzip(&img), "gzip", None), gzip(&img), img.clone()] {
            let mut out = Vec::new();
            unpack_arm64(&mut Cursor::new(file), &mut out, DEFAULT_MAX_KERNEL_SIZE).unwrap();
            assert_eq!(out, img);
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let img = image(8 << 20);
        let file = zboot(&zstd::encode_all(&img[..], 3).unwrap(), "zstd", None);
        let err = unpack_arm64(&mut Cursor::new(file), Vec::new(), 1 << 20).unwrap_err();
        assert!(matches!(err, KernelError::TooLarge { limit } if limit == 1 << 20), "{err}");
        let err = unpack_arm64(&mut Cursor::new(img), Vec::new(), 1 << 20).unwrap_err();
        assert!(matches!(err, KernelError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn refuses_truncated_corrupt_and_foreign_payloads() {
        let img = image(1 << 20);
        let payload = zstd::encode_all(&img[..], 3).unwrap();
        // Header promises more payload than the file holds.
        let mut short = zboot(&payload, "zstd", None);
        short.truncate(4096 + payload.len() / 2);
        assert!(matches!(
            unpack_arm64(&mut Cursor::new(short), Vec::new(), DEFAULT_MAX_KERNEL_SIZE),
            Err(KernelError::PayloadOutOfBounds { .. })
        ));
        // A payload cut short inside the header's range.
        let mut cut = zboot(&payload[..payload.len() / 2], "zstd", None);
        cut.truncate(4096 + payload.len() / 2);
        assert!(matches!(
            unpack_arm64(&mut Cursor::new(cut), Vec::new(), DEFAULT_MAX_KERNEL_SIZE),
            Err(KernelError::Corrupt { format: "zstd", .. })
        ));
        // A valid zboot whose payload is not an arm64 Image.
        let not_image = zboot(&zstd::encode_all(&[0u8; 4096][..], 3).unwrap(), "zstd", None);
        assert!(matches!(
            unpack_arm64(&mut Cursor::new(not_image), Vec::new(), DEFAULT_MAX_KERNEL_SIZE),
            Err(KernelError::Mismatch { .. })
        ));
        assert!(matches!(
            unpack_arm64(&mut Cursor::new(zboot(b"x", "lz4", None)), Vec::new(), DEFAULT_MAX_KERNEL_SIZE),
            Err(KernelError::UnsupportedCompression(m)) if m == "lz4"
        ));
    }
}
