//! The imager reads the kernel an image *holds*, with OCI whiteouts applied (image-spec
//! `layer.md`), exactly as `talos-agent boot` does (`agent/tests/whiteouts.rs` runs the agent on
//! the same images): `imager inspect` (the scan) and `imager build --base` (the pull) both see
//! no kernel when a later layer deletes `usr/install/arm64/vmlinuz`, and the replacement when a
//! later layer replaces it.
//!
//! Against the fixture registry (`scripts/fixtures`); skipped with a reason without it (a failure
//! under MOONBOOT_REQUIRE_FIXTURES=1).

use std::path::Path;
use std::process::{Command, Output};

use moonboot_tests::fixtures::{fixtures_dir, with_registry, Fixtures};
use moonboot_tests::whiteout::{push_whiteout_images, KERNEL_PATH};

const IMAGER: &str = env!("CARGO_BIN_EXE_imager");

fn inspect(f: &Fixtures, reference: &str) -> serde_json::Value {
    let out = Command::new(IMAGER)
        .args(["inspect", reference, "--arch", "arm64", "--json", "--insecure-registry", &f.registry])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn build(f: &Fixtures, reference: &str, out_dir: &Path) -> Output {
    let mut c = Command::new(IMAGER);
    c.args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .args(["--base", reference, "--talos-version", "v1.10.5", "--output"])
        .arg(out_dir);
    match std::env::var_os("MOONBOOT_AGENT_BINARY") {
        Some(bin) => c.arg("--agent-binary").arg(bin),
        None => c.arg("--agent-from-source"),
    };
    c.output().unwrap()
}

#[test]
fn inspect_and_build_apply_whiteouts_of_later_layers() {
    let Some(f) = with_registry("inspect_and_build_apply_whiteouts_of_later_layers") else { return };
    let work = fixtures_dir().join("tmp").join(format!("imager-whiteouts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let images = push_whiteout_images(&f, &work).unwrap();
    let kernel = format!("/{KERNEL_PATH}");

    // Deleted: inspect lists no kernel, and a build refuses, naming it.
    let i = inspect(&f, &images.deleted);
    let files: Vec<&str> =
        i["talos_imager"]["install"]["arm64"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(!files.contains(&KERNEL_PATH), "{files:?}");
    assert!(files.contains(&"usr/install/arm64/initramfs.xz"), "{files:?}");
    let out = build(&f, &images.deleted, &work.join("out-deleted"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&kernel), "{stderr}");

    // Replaced: inspect sees the raw Image, and the build's kernel is its bytes.
    let i = inspect(&f, &images.replaced);
    let vmlinuz = i["talos_imager"]["install"]["arm64"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == KERNEL_PATH)
        .cloned()
        .unwrap();
    assert_eq!(vmlinuz["size"], images.replacement.len() as u64);
    assert!(vmlinuz["format"].as_str().unwrap().starts_with("arm64 Image"), "{vmlinuz}");
    let out_dir = work.join("out-replaced");
    let out = build(&f, &images.replaced, &out_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(out_dir.join("kernel-arm64")).unwrap(), images.replacement);
    let _ = std::fs::remove_dir_all(&work);
}
