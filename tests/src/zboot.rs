//! EFI zboot: the compressed arm64 kernel container that Talos ≥ 1.8 ships as `vmlinuz`.
//!
//! The fixtures use [`wrap_zstd`] / [`wrap_compressed`] to put Debian's raw arm64 `Image` into the
//! same container, so that moonboot's unpacking path sees what a real Talos release carries;
//! [`parse`] and [`unpack_zstd`] read it back (in tests).
//!
//! # Format (Linux `drivers/firmware/efi/libstub/zboot-header.S`, `zboot.lds`, `Makefile.zboot`)
//! | offset | field |
//! |---|---|
//! | 0x00 | `MZ` (u32 LE `0x5a4d`) |
//! | 0x04 | `zimg` (image type) |
//! | 0x08 | u32 LE payload offset, from the start of the file |
//! | 0x0c | u32 LE payload size (without the trailing size word, see below) |
//! | 0x10 | 2 × u32 reserved (0) |
//! | 0x18 | compression type, NUL-terminated ASCII (`gzip` or `zstd`; kernels before the Dec 2024 change "efi/zboot: Limit compression options to GZIP and ZSTD" wrote `zstd22`, `lz4`, …) |
//! | 0x38 | u32 LE `LINUX_PE_MAGIC` `0x818223cd` |
//! | 0x3c | u32 LE offset of the PE header (`PE\0\0`) |
//!
//! The PE header describes a PE32+ EFI application (machine `0xAA64` for arm64) whose headers fill
//! the first 4 KiB; its `.text` section starts at 0x1000 and covers the decompressor code and the
//! compressed payload. For every compression but gzip the build appends the uncompressed size as
//! a u32 LE right after the payload and leaves it out of the header's payload size.
//!
//! # What this writer does differently from a kernel build
//! - There is no decompressor: the `.text` section holds a 12-byte arm64 entry stub that returns
//!   `EFI_UNSUPPORTED` (so firmware that runs it gets an error, not a crash), then the payload.
//!   The container is for unpacking by software, not for booting through UEFI.
//! - Upstream pads the `Image` with zeros to the `image_size` of its header before compressing;
//!   this writer compresses the input as given, so the payload decompresses to exactly the input.
//! - Upstream compresses with `zstd -22 --ultra` (window up to 128 MiB); callers pick the level.
//!   Readers must accept any zstd window up to 2^27 bytes.

use std::io;

/// `MZ` at offset 0.
pub const MZ_MAGIC: u16 = 0x5a4d;
/// Image type at offset 4.
pub const ZIMG_MAGIC: &[u8; 4] = b"zimg";
/// `LINUX_PE_MAGIC` at offset 0x38 (include/linux/pe.h).
pub const LINUX_PE_MAGIC: u32 = 0x818223cd;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xaa64;
/// Offset of the arm64 `Image` magic `ARM\x64` (arch/arm64 `struct arm64_image_header.magic`).
pub const ARM64_IMAGE_MAGIC_OFFSET: usize = 56;
/// The arm64 `Image` magic.
pub const ARM64_IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";

const HEADERS_SIZE: u32 = 0x1000;
const PE_OFFSET: u32 = 0x40;
const SECTION_ALIGN: u32 = 0x1000;
const FILE_ALIGN: u32 = 0x200;
const NUM_DATA_DIRS: u32 = 6;
const OPT_HDR_SIZE: u32 = 112 + 8 * NUM_DATA_DIRS;
/// `movz x0, #3; movk x0, #0x8000, lsl #48; ret`: return EFI_UNSUPPORTED (0x8000000000000003).
const ARM64_ENTRY_STUB: [u32; 3] = [0xd280_0060, 0xf2f0_0000, 0xd65f_03c0];
/// Payload offset within `.text`: after the entry stub, 16-byte aligned.
const PAYLOAD_IN_TEXT: u32 = 16;

// PE/COFF flags (include/linux/pe.h).
const IMAGE_FILE_EXECUTABLE_IMAGE: u16 = 0x0002;
const IMAGE_FILE_LINE_NUMS_STRIPPED: u16 = 0x0004;
const IMAGE_FILE_DEBUG_STRIPPED: u16 = 0x0200;
const PE_OPT_MAGIC_PE32PLUS: u16 = 0x020b;
const IMAGE_SUBSYSTEM_EFI_APPLICATION: u16 = 10;
const IMAGE_DLL_CHARACTERISTICS_NX_COMPAT: u16 = 0x0100;
const IMAGE_SCN_CNT_CODE: u32 = 0x0000_0020;
const IMAGE_SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
const LINUX_EFISTUB_MAJOR_VERSION: u16 = 1;
const LINUX_EFISTUB_MINOR_VERSION: u16 = 0;

fn align_up(v: u32, a: u32) -> u32 {
    v.div_ceil(a) * a
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Compresses `image` with zstd at `level` and wraps it with [`wrap_compressed`].
///
/// `image` is normally a raw arm64 `Image`; the function does not check that.
pub fn wrap_zstd(image: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let payload = zstd::bulk::compress(image, level)?;
    let len = u32::try_from(image.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image larger than 4 GiB"))?;
    Ok(wrap_compressed(&payload, len, "zstd"))
}

/// Builds an arm64 EFI zboot image around an already compressed `payload`.
///
/// `uncompressed_len` is appended after the payload as u32 LE (the `_with_size` trailer the kernel
/// build adds for every compression but gzip, whose stream already ends with the size; for
/// `"gzip"` nothing is appended). `compression` goes to offset 0x18 and must be shorter than
/// 32 bytes.
/// The result is a multiple of 4 KiB long.
///
/// # Panics
/// If `compression` is 32 bytes or longer, or the image would exceed 4 GiB.
pub fn wrap_compressed(payload: &[u8], uncompressed_len: u32, compression: &str) -> Vec<u8> {
    assert!(compression.len() < 0x38 - 0x18, "compression name too long");
    let trailer: &[u8] = if compression == "gzip" { &[] } else { &[0; 4] };
    let payload_len = u32::try_from(payload.len()).expect("payload under 4 GiB");
    let text_used = PAYLOAD_IN_TEXT + payload_len + trailer.len() as u32;
    let text_size = align_up(text_used, SECTION_ALIGN);
    let total = HEADERS_SIZE + text_size;
    let mut b = vec![0u8; total as usize];

    // MS-DOS header with the zboot fields.
    put_u32(&mut b, 0x00, u32::from(MZ_MAGIC));
    b[0x04..0x08].copy_from_slice(ZIMG_MAGIC);
    put_u32(&mut b, 0x08, HEADERS_SIZE + PAYLOAD_IN_TEXT);
    put_u32(&mut b, 0x0c, payload_len);
    b[0x18..0x18 + compression.len()].copy_from_slice(compression.as_bytes());
    put_u32(&mut b, 0x38, LINUX_PE_MAGIC);
    put_u32(&mut b, 0x3c, PE_OFFSET);

    // COFF file header.
    let pe = PE_OFFSET as usize;
    b[pe..pe + 4].copy_from_slice(b"PE\0\0");
    put_u16(&mut b, pe + 4, MACHINE_ARM64);
    put_u16(&mut b, pe + 6, 1); // NumberOfSections
    put_u16(&mut b, pe + 20, OPT_HDR_SIZE as u16);
    put_u16(&mut b, pe + 22, IMAGE_FILE_DEBUG_STRIPPED | IMAGE_FILE_EXECUTABLE_IMAGE | IMAGE_FILE_LINE_NUMS_STRIPPED);

    // PE32+ optional header.
    let o = pe + 24;
    put_u16(&mut b, o, PE_OPT_MAGIC_PE32PLUS);
    put_u32(&mut b, o + 4, text_size); // SizeOfCode
    put_u32(&mut b, o + 16, HEADERS_SIZE); // AddressOfEntryPoint: the stub at .text start
    put_u32(&mut b, o + 20, HEADERS_SIZE); // BaseOfCode
                                           // ImageBase (u64 at o+24) stays 0, as upstream.
    put_u32(&mut b, o + 32, SECTION_ALIGN);
    put_u32(&mut b, o + 36, FILE_ALIGN);
    put_u16(&mut b, o + 44, LINUX_EFISTUB_MAJOR_VERSION); // MajorImageVersion
    put_u16(&mut b, o + 46, LINUX_EFISTUB_MINOR_VERSION); // MinorImageVersion
    put_u32(&mut b, o + 56, HEADERS_SIZE + text_size); // SizeOfImage
    put_u32(&mut b, o + 60, HEADERS_SIZE); // SizeOfHeaders
    put_u16(&mut b, o + 68, IMAGE_SUBSYSTEM_EFI_APPLICATION);
    put_u16(&mut b, o + 70, IMAGE_DLL_CHARACTERISTICS_NX_COMPAT);
    put_u32(&mut b, o + 108, NUM_DATA_DIRS); // NumberOfRvaAndSizes; the directories are all 0

    // Section table: one .text covering the stub, the payload and the size trailer.
    let s = o + OPT_HDR_SIZE as usize;
    b[s..s + 5].copy_from_slice(b".text");
    put_u32(&mut b, s + 8, text_size); // VirtualSize
    put_u32(&mut b, s + 12, HEADERS_SIZE); // VirtualAddress
    put_u32(&mut b, s + 16, text_size); // SizeOfRawData
    put_u32(&mut b, s + 20, HEADERS_SIZE); // PointerToRawData
    put_u32(&mut b, s + 36, IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ | IMAGE_SCN_MEM_EXECUTE);

    // .text: entry stub, payload, trailer.
    let t = HEADERS_SIZE as usize;
    for (i, insn) in ARM64_ENTRY_STUB.iter().enumerate() {
        put_u32(&mut b, t + 4 * i, *insn);
    }
    let p = t + PAYLOAD_IN_TEXT as usize;
    b[p..p + payload.len()].copy_from_slice(payload);
    if !trailer.is_empty() {
        put_u32(&mut b, p + payload.len(), uncompressed_len);
    }
    b
}

#[cfg(test)]
mod tests {
    //! The writer is checked with the project's one reader, `boot_artifact` (the agent's and the
    //! imager's), plus the raw header fields the reader does not need.
    use super::*;
    use boot_artifact::kernel::{self, KernelFormat};
    use boot_artifact::pe::PeFile;
    use std::io::Cursor;

    fn le32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn fake_image(len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        v[ARM64_IMAGE_MAGIC_OFFSET..ARM64_IMAGE_MAGIC_OFFSET + 4].copy_from_slice(ARM64_IMAGE_MAGIC);
        v
    }

    #[test]
    fn written_image_reads_back_with_boot_artifact() {
        let image = fake_image(300_000);
        let z = wrap_zstd(&image, 3).unwrap();
        assert_eq!(z.len() % 4096, 0);
        let KernelFormat::EfiZboot(h) = kernel::detect(&z).unwrap() else { panic!("not detected as EFI zboot") };
        assert_eq!(h.compression, "zstd");
        assert_eq!(h.payload_offset, 0x1010);
        assert_eq!(le32(&z, 0x38), LINUX_PE_MAGIC);
        let pe = PeFile::read(&mut Cursor::new(&z)).unwrap();
        assert_eq!(pe.machine, MACHINE_ARM64);
        assert_eq!(pe.sections.len(), 1);
        assert_eq!(pe.sections[0].name, ".text");
        let text = &pe.sections[0];
        let end = h.payload_offset + h.payload_size;
        assert!(text.raw_offset <= h.payload_offset && end <= text.raw_offset + text.raw_size, "payload inside .text");
        // PE32+ optional header at 0x40 + 24: AddressOfEntryPoint (+16) is .text's RVA (+12 in its
        // header), SizeOfImage (+56) the whole file.
        let opt = 0x40 + 24;
        let section_table = opt + usize::from(u16::from_le_bytes([z[0x40 + 20], z[0x40 + 21]]));
        assert_eq!(le32(&z, opt + 16), le32(&z, section_table + 12));
        assert_eq!(le32(&z, opt + 56) as usize, z.len());
        // The uncompressed size follows the payload (Makefile.zboot size_append).
        assert_eq!(le32(&z, end as usize), image.len() as u32);
        let mut out = Vec::new();
        kernel::unpack_arm64(&mut Cursor::new(&z), &mut out, kernel::DEFAULT_MAX_KERNEL_SIZE).unwrap();
        assert_eq!(out, image);
    }

    #[test]
    fn entry_stub_is_the_documented_arm64_code() {
        let z = wrap_compressed(b"x", 1, "zstd");
        let t = &z[0x1000..0x100c];
        assert_eq!(t, [0x60, 0x00, 0x80, 0xd2, 0x00, 0x00, 0xf0, 0xf2, 0xc0, 0x03, 0x5f, 0xd6]);
    }

    #[test]
    fn gzip_has_no_size_trailer() {
        let z = wrap_compressed(&[1, 2, 3], 99, "gzip");
        let KernelFormat::EfiZboot(h) = kernel::detect(&z).unwrap() else { panic!("not EFI zboot") };
        assert_eq!(h.compression, "gzip");
        assert_eq!(le32(&z, (h.payload_offset + 3) as usize), 0);
    }
}
