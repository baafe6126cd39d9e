//! Boot artifacts made by others, read by `talos-agent boot --dry-run` against the fixture
//! registry (`scripts/fixtures`, a real docker-registry on 127.0.0.1):
//! - **format 2 assembled by hand** with `oras push --artifact-type application/vnd.moonboot.boot.v2`
//!   and the documented media types (`boot_artifact::artifact`), using Debian trixie's oras 1.2
//!   (`target/peers/oras`, fetched by `scripts/setup`): the agent plans to load exactly those
//!   bytes, and the sha256 it reports for each file is the blob digest oras pushed — one pass;
//! - the same through the fault-injecting proxy corrupting blob bytes: exit code 4, nothing planned;
//! - **format 1** (one-file tar layers annotated with their role, as imagers before format 2
//!   published): still read, same bytes;
//! - a manifest naming **format 3**: refused in one line naming the format (exit code 5).
//!
//! Layouts are copied into the registry with `oras cp`, which keeps every byte. Skipped with a
//! reason without the fixtures or oras (a failure under MOONBOOT_REQUIRE_FIXTURES=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use boot_artifact::artifact::{Role, ANNOTATION_FORMAT, ANNOTATION_ROLE, ARTIFACT_TYPE, LAYER_MEDIA_TYPE};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::{media_type, Descriptor, ImageManifest, Platform};
use moonboot_tests::fixtures::{
    fixtures_dir, oras, oras_push_boot_artifact, unique_repository, with_oras, with_registry, Fixtures,
};
use moonboot_tests::oci::{LayerBuilder, Layout};
use serde_json::Value;

fn dry_run(registry: &str, reference: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talos-agent"))
        .args(["boot", reference, "--dry-run", "--json", "--arch", "arm64", "--platform", "metal"])
        .args(["--no-network-carry-over", "--timeout", "60s"])
        .args(["--insecure-registry", registry, "--auth-file", "/nonexistent/moonboot-test-auth.json"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run talos-agent")
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The three files: the fixture's arm64 kernel and initramfs and a command line.
fn files(f: &Fixtures) -> [(Role, Vec<u8>); 3] {
    let a = &f.arches["arm64"];
    [
        (Role::Kernel, std::fs::read(&a.kernel_image).unwrap()),
        (Role::Initramfs, std::fs::read(&a.initramfs).unwrap()),
        (Role::Cmdline, b"talos.platform=metal console=ttyAMA0 moonboot.test=boot-artifact".to_vec()),
    ]
}

/// Checks that the plan loads exactly `files`, and returns it.
fn planned(out: &Output, files: &[(Role, Vec<u8>); 3], format: u32) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["source"], "boot_artifact", "{plan}");
    assert_eq!(plan["resolved"]["boot_artifact_format"], format, "{plan}");
    assert_eq!(plan["kernel"]["sha256"], Sha256Digest::of(&files[0].1).to_string(), "{plan}");
    assert_eq!(plan["kernel"]["container"], "Arm64Image");
    assert_eq!(plan["initramfs"]["sha256"], Sha256Digest::of(&files[1].1).to_string(), "{plan}");
    assert_eq!(plan["initramfs"]["size"], files[1].1.len());
    let cmdline = plan["cmdline"]["cmdline"].as_str().unwrap_or_default();
    assert!(cmdline.contains("moonboot.test=boot-artifact"), "the artifact's command line: {plan}");
    plan
}

#[test]
fn an_artifact_pushed_by_oras_boots_and_a_corrupted_blob_does_not() {
    let test = "an_artifact_pushed_by_oras_boots_and_a_corrupted_blob_does_not";
    let Some(f) = with_registry(test) else { return };
    if !with_oras(test) {
        return;
    }
    let work = fixtures_dir().join("tmp").join(format!("agent-oras-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let files = files(&f);
    for (role, data) in &files {
        std::fs::write(work.join(role.title()), data).unwrap();
    }
    let reference = format!("{}/{}:v2", f.registry, unique_repository("moonboot-test/oras-boot"));
    let pushed = oras_push_boot_artifact(&work, &reference).unwrap();
    assert_eq!(pushed["artifactType"], ARTIFACT_TYPE);

    let plan = planned(&dry_run(&f.registry, &reference), &files, 2);
    // One blob per file, each the file itself: the reported file digest is the blob's.
    let blobs = plan["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 3, "{plan}");
    for (role, data) in &files {
        let digest = Sha256Digest::of(data).to_string();
        let b = blobs.iter().find(|b| b["digest"] == digest.as_str()).unwrap_or_else(|| panic!("{role:?}: {plan}"));
        assert_eq!(b["media_type"], role.media_type());
        assert_eq!(b["size"], data.len());
    }
    assert_eq!(plan["resolved"]["manifest_digest"], pushed["digest"]);

    // Corrupted on the wire: refused as a verification failure, nothing planned.
    let proxy = moonboot_tests::faulty::start(&f.registry);
    proxy.faults.corrupt_blobs.store(true, Ordering::SeqCst);
    let via_proxy = reference.replacen(&f.registry, &proxy.addr, 1);
    let out = dry_run(&proxy.addr, &via_proxy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "a corrupted blob is a verification failure: {stderr}");
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed["status"], "failed", "nothing planned: {failed}");
    assert!(failed["error"].as_str().unwrap().contains("digest mismatch"), "{failed}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Pushes a layout's image to `reference` byte for byte with `oras cp` (skopeo would compress
/// the uncompressed layers on the way, rewriting the manifest).
fn push_layout(dir: &Path, reference: &str) {
    run(Command::new(oras())
        .args(["cp", "--to-plain-http", "--from-oci-layout"])
        .arg(format!("{}:t", dir.display()))
        .arg(reference));
}

/// A format-1 boot artifact (or, with `format` "3", one that names a format nobody knows yet):
/// an image config, three uncompressed one-file tar layers annotated with their role.
fn format_1_layout(dir: &Path, files: &[(Role, Vec<u8>); 3], format: &str) {
    let layout = Layout::create(dir).unwrap();
    let mut layers = Vec::new();
    for (role, data) in files {
        let tar = LayerBuilder::new(1_751_328_000).file(role.path(), data.clone(), 0o644).tar().unwrap();
        let mut d = layout.put_blob(LAYER_MEDIA_TYPE, &tar).unwrap();
        d.annotations.insert(ANNOTATION_ROLE.into(), role.as_str().into());
        layers.push(d);
    }
    let config = layout.put_blob(media_type::OCI_CONFIG, br#"{"architecture":"arm64","os":"linux"}"#).unwrap();
    let manifest =
        ImageManifest::new(config, layers, BTreeMap::from([(ANNOTATION_FORMAT.to_string(), format.to_string())]));
    let mut desc: Descriptor = layout.put_blob(media_type::OCI_MANIFEST, &manifest.to_json()).unwrap();
    desc.platform = Some(Platform::linux("arm64"));
    layout.finish_index(vec![desc], &BTreeMap::new(), "t").unwrap();
}

#[test]
fn a_format_1_artifact_still_boots_and_format_3_is_refused() {
    let test = "a_format_1_artifact_still_boots_and_format_3_is_refused";
    let Some(f) = with_registry(test) else { return };
    if !with_oras(test) {
        return;
    }
    let work = fixtures_dir().join("tmp").join(format!("agent-format-1-{}", std::process::id()));
    let files = files(&f);

    format_1_layout(&work.join("v1"), &files, "1");
    let v1 = format!("{}/{}:v1", f.registry, unique_repository("moonboot-test/format-1"));
    push_layout(&work.join("v1"), &v1);
    let plan = planned(&dry_run(&f.registry, &v1), &files, 1);
    assert_eq!(plan["blobs"].as_array().unwrap().len(), 3, "{plan}");

    format_1_layout(&work.join("v3"), &files, "3");
    let v3 = format!("{}/{}:v3", f.registry, unique_repository("moonboot-test/format-3"));
    push_layout(&work.join("v3"), &v3);
    let out = dry_run(&f.registry, &v3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("talos-agent boot: error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains("boot artifact format 3 is newer than this moonboot reads"), "{stderr}");
    let _ = std::fs::remove_dir_all(&work);
}
