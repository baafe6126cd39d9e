//! `talos-agent boot` reads the kernel an image *holds*, with OCI whiteouts applied (image-spec
//! `layer.md`), as the imager does (`imager/tests/whiteouts.rs` runs the imager on the same
//! images): a later layer that deletes `usr/install/arm64/vmlinuz` leaves no kernel to boot, and
//! one that replaces it gives the replacement.
//!
//! Against the fixture registry (`scripts/fixtures`); skipped with a reason without it (a failure
//! under MOONBOOT_REQUIRE_FIXTURES=1). `--platform metal` keeps platform detection off the network.

use std::process::{Command, Output};

use moonboot_tests::fixtures::{fixtures_dir, with_registry, Fixtures};
use moonboot_tests::whiteout::{push_whiteout_images, KERNEL_PATH};

fn dry_run(f: &Fixtures, reference: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talos-agent"))
        .args(["boot", reference, "--dry-run", "--json", "--arch", "arm64", "--platform", "metal"])
        .args(["--talos-version", "v1.10.5", "--no-network-carry-over", "--timeout", "60s"])
        .args(["--insecure-registry", &f.registry, "--auth-file", "/nonexistent/moonboot-test-auth.json"])
        .output()
        .expect("run talos-agent")
}

#[test]
fn boot_applies_whiteouts_of_later_layers() {
    let Some(f) = with_registry("boot_applies_whiteouts_of_later_layers") else { return };
    let work = fixtures_dir().join("tmp").join(format!("agent-whiteouts-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let images = push_whiteout_images(&f, &work).unwrap();

    // Deleted: the base layer's vmlinuz is not in the image, so there is nothing to boot.
    let out = dry_run(&f, &images.deleted);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "a deleted kernel must not be booted; stderr: {stderr}");
    assert!(stderr.contains(KERNEL_PATH), "the error names the missing kernel: {stderr}");

    // Replaced: the top layer's file is the kernel, byte for byte.
    let out = dry_run(&f, &images.replaced);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["source"], "talos_imager");
    assert_eq!(plan["kernel"]["sha256"], images.replacement_sha256, "{plan}");
    assert_eq!(plan["kernel"]["size"], images.replacement.len() as u64);
    assert_eq!(plan["kernel"]["container"], "Arm64Image");
    let _ = std::fs::remove_dir_all(&work);
}
