//! Kernel format handling on real kernels: Debian's arm64 and amd64 cloud kernels and the EFI
//! zboot container the stand-in Talos release wraps the arm64 one in (scripts/fixtures).
//!
//! Skipped, with the reason printed, when the fixtures have not been built; `scripts/test` sets
//! `MOONBOOT_REQUIRE_FIXTURES=1`, which turns the skip into a failure.

use std::fs::File;
use std::path::PathBuf;

use boot_artifact::kernel::{self, KernelFormat, DEFAULT_MAX_KERNEL_SIZE};

fn fixtures() -> Option<serde_json::Value> {
    let path = std::env::var_os("MOONBOOT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/fixtures.json"));
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("fixtures.json parses")),
        Err(e) => {
            assert!(
                std::env::var("MOONBOOT_REQUIRE_FIXTURES").as_deref() != Ok("1"),
                "fixtures required but {} is unreadable: {e}",
                path.display()
            );
            eprintln!("skipped: {} not found (run scripts/fixtures)", path.display());
            None
        }
    }
}

fn path(f: &serde_json::Value, arch: &str, key: &str) -> PathBuf {
    PathBuf::from(f["arches"][arch][key].as_str().unwrap_or_else(|| panic!("fixtures.json: arches.{arch}.{key}")))
}

#[test]
fn zboot_and_debian_vmlinuz_unpack_to_the_same_arm64_image() {
    let Some(f) = fixtures() else { return };
    let zboot = path(&f, "arm64", "vmlinuz");
    let debian = path(&f, "arm64", "kernel_image");

    let format = kernel::detect_file(&mut File::open(&zboot).unwrap()).unwrap();
    let KernelFormat::EfiZboot(header) = &format else { panic!("{} is {format:?}, not EFI zboot", zboot.display()) };
    assert_eq!(header.compression, "zstd");

    let mut from_zboot = Vec::new();
    let u = kernel::unpack_arm64(&mut File::open(&zboot).unwrap(), &mut from_zboot, DEFAULT_MAX_KERNEL_SIZE).unwrap();
    assert_eq!(u.len, from_zboot.len() as u64);
    assert_eq!(&from_zboot[56..60], b"ARM\x64");
    assert!(u.header.image_size >= u.len, "image_size {} covers the file {}", u.header.image_size, u.len);

    let mut from_debian = Vec::new();
    kernel::unpack_arm64(&mut File::open(&debian).unwrap(), &mut from_debian, DEFAULT_MAX_KERNEL_SIZE).unwrap();
    // The zboot build pads the Image to its in-memory size (Makefile.zboot); the bytes Debian
    // ships are a prefix of it and the padding is zeros.
    assert!(from_zboot.len() >= from_debian.len());
    assert_eq!(from_zboot[..from_debian.len()], from_debian[..], "zboot payload differs from Debian's Image");
    assert!(from_zboot[from_debian.len()..].iter().all(|b| *b == 0));

    // A bound below the real size is enforced on the real file.
    let err = kernel::unpack_arm64(&mut File::open(&zboot).unwrap(), std::io::sink(), 1 << 20).unwrap_err();
    assert!(matches!(err, kernel::KernelError::TooLarge { .. }), "{err}");
}

#[test]
fn debian_amd64_kernel_is_a_bzimage_and_not_an_arm64_kernel() {
    let Some(f) = fixtures() else { return };
    let vmlinuz = path(&f, "amd64", "vmlinuz");
    let format = kernel::detect_file(&mut File::open(&vmlinuz).unwrap()).unwrap();
    assert!(matches!(format, KernelFormat::BzImage { protocol } if protocol >= 0x020c), "{format:?}");
    let err =
        kernel::unpack_arm64(&mut File::open(&vmlinuz).unwrap(), std::io::sink(), DEFAULT_MAX_KERNEL_SIZE).unwrap_err();
    assert!(matches!(err, kernel::KernelError::Mismatch { .. }), "{err}");
}
