//! The kernel format readers of `boot_artifact::kernel` and `boot_artifact::pe`: format detection
//! (arm64 `Image`, bzImage, EFI zboot, PE, gzip, zstd), `unpack_arm64` (zboot with zstd or gzip,
//! gzip'd or raw `Image`), `decompress`, the PE section table and the UKI sections, walked the
//! way the agent's `fetch/image.rs` does (a UKI's `.linux` is unpacked in turn).
//!
//! Input: the kernel file's bytes. Unpacking is bounded by [`LIMIT`] (the agent uses 256 MiB) so
//! that a decompression bomb costs the fuzzer milliseconds, not seconds.

#![no_main]

use std::io::Cursor;

use boot_artifact::kernel::{self, KernelFormat};
use boot_artifact::pe::{PeFile, Uki};
use libfuzzer_sys::fuzz_target;

/// Bound on an unpacked kernel here.
const LIMIT: u64 = 4 << 20;

/// Unpacks as `loadable_kernel` does for arm64 and checks what `unpack_arm64` promises.
fn unpack(bytes: &[u8]) {
    let mut out = Vec::new();
    if let Ok(u) = kernel::unpack_arm64(&mut Cursor::new(bytes), &mut out, LIMIT) {
        assert_eq!(u.len, out.len() as u64);
        assert!(u.len <= LIMIT);
        assert_eq!(kernel::arm64_header(&out), Some(u.header), "the result must be an arm64 Image");
        assert!(matches!(
            u.from,
            KernelFormat::EfiZboot(_) | KernelFormat::Gzip | KernelFormat::Zstd | KernelFormat::Arm64Image(_)
        ));
    }
}

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let head = &data[..data.len().min(kernel::DETECT_LEN)];
    let format = kernel::detect(head);
    assert_eq!(format.is_ok(), kernel::detect_file(&mut Cursor::new(data)).is_ok());
    if let Some(h) = kernel::arm64_header(data) {
        assert!(matches!(format, Ok(KernelFormat::Arm64Image(f)) if f == h));
    }
    unpack(data);
    for method in ["zstd", "gzip"] {
        if let Ok((n, first)) = kernel::decompress(method, data, std::io::sink(), LIMIT) {
            assert!(n <= LIMIT);
            assert!(first.len() as u64 == n.min(64));
        }
    }

    if let Ok(pe) = PeFile::read(&mut Cursor::new(data)) {
        assert_eq!(pe.file_len, len);
        assert!(pe.sections.len() <= 96);
        for s in &pe.sections {
            if let Ok(r) = s.content(pe.file_len) {
                assert!(r.start <= r.end && r.end <= len);
            }
        }
    }
    if let Ok(uki) = Uki::read(&mut Cursor::new(data)) {
        let slice = |r: &std::ops::Range<u64>| {
            assert!(r.start <= r.end && r.end <= len, "{r:?} outside {len} bytes");
            &data[r.start as usize..r.end as usize]
        };
        let (linux, _initrd, cmdline) = (slice(&uki.linux), slice(&uki.initrd), slice(&uki.cmdline));
        unpack(linux);
        let _ = kernel::detect(&linux[..linux.len().min(kernel::DETECT_LEN)]);
        if let Ok(text) = std::str::from_utf8(cmdline) {
            let _ = kernel_cmdline::Cmdline::parse(text.trim_end_matches(['\0', '\n']));
        }
    }
});
