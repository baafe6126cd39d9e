//! Shared by the integration tests: running the `imager` binary, and writing the output
//! directory of a build (boot artifact layouts per `boot_artifact::artifact`, format 2 as
//! `imager build` writes them, and a talos-agent extension layout) from the fixtures' real kernels and stand-in initramfs files. The JSON is written here
//! by hand from the contract, not by the imager's writer.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use boot_artifact::artifact::{
    Role, ANNOTATION_EXTENSIONS, ANNOTATION_FORMAT, ANNOTATION_SCHEMATIC_ID, ANNOTATION_TALOS_VERSION, ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE, FORMAT_VERSION,
};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::media_type::{OCI_INDEX as INDEX_MEDIA_TYPE, OCI_MANIFEST as MANIFEST_MEDIA_TYPE};
use moonboot_tests::fixtures::Fixtures;
use serde_json::json;

pub const SCHEMATIC: &str = "c0f06d3cffeec27089a195ee6942ee0e1911b8521d21d7e4afde5e023fbff114";

pub fn imager(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imager")).args(args).output().expect("run imager");
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("moonboot-test/{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

pub fn put(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let d = Sha256Digest::of(bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    (d.to_string(), bytes.len() as u64)
}

pub fn tar_of(entries: &[(&str, Option<&[u8]>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_751_328_000);
        h.set_mode(*mode);
        match data {
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A layer to write: media type, blob, annotations, diff ID.
pub type Layer = (&'static str, Vec<u8>, BTreeMap<String, String>, String);

/// Creates `dir` as an empty OCI image layout (`oci-layout`, `blobs/sha256/`).
fn create_layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Stores `manifest` and writes `index.json` listing it for `linux/<arch>` under `tag`; returns
/// the manifest's digest and size.
fn finish_layout(dir: &Path, arch: &str, manifest: &serde_json::Value, tag: &str) -> (String, u64) {
    let (md, ms) = put(dir, &serde_json::to_vec(manifest).unwrap());
    let index = json!({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": md, "size": ms,
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    (md, ms)
}

/// Writes an OCI layout with one image for `arch`; returns the manifest's digest and size.
pub fn write_layout(
    dir: &Path,
    arch: &str,
    layers: &[Layer],
    annotations: BTreeMap<String, String>,
    tag: &str,
) -> (String, u64) {
    create_layout(dir);
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (media_type, blob, ann, diff_id) in layers {
        let (digest, size) = put(dir, blob);
        descs.push(json!({"mediaType": media_type, "digest": digest, "size": size, "annotations": ann}));
        diff_ids.push(diff_id.clone());
    }
    let config = json!({
        "created": "2025-07-01T00:00:00Z", "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": cd, "size": cs},
        "layers": descs, "annotations": annotations,
    });
    finish_layout(dir, arch, &manifest, tag)
}

/// Writes an OCI layout with one OCI 1.1 artifact for `arch` (`artifactType`, the empty config
/// `{}` stored as a blob, `layers` as (media type, blob, annotations)); returns the manifest's
/// digest and size.
pub fn write_artifact_layout(
    dir: &Path,
    arch: &str,
    artifact_type: &str,
    layers: &[(&str, Vec<u8>, BTreeMap<String, String>)],
    annotations: BTreeMap<String, String>,
    tag: &str,
) -> (String, u64) {
    create_layout(dir);
    let descs: Vec<_> = layers
        .iter()
        .map(|(media_type, blob, ann)| {
            let (digest, size) = put(dir, blob);
            json!({"mediaType": media_type, "digest": digest, "size": size, "annotations": ann})
        })
        .collect();
    let (cd, cs) = put(dir, b"{}");
    let manifest = json!({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": cs},
        "layers": descs, "annotations": annotations,
    });
    finish_layout(dir, arch, &manifest, tag)
}

/// What went into one architecture's boot artifact.
pub struct Inputs {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub manifest: (String, u64),
    pub extension_manifest: Option<(String, u64)>,
}

/// Writes `out/boot-<arch>/` for arm64 and amd64 from the fixtures, and
/// `out/extension-talos-agent-arm64/` (none for amd64, to exercise the note).
pub fn write_build_output(f: &Fixtures, out: &Path, token: &str) -> BTreeMap<String, Inputs> {
    let files = |arch: &str| (f.arches[arch].kernel_image.clone(), f.arches[arch].initramfs.clone());
    let digests = [f.images["spin"].index_digest.clone(), f.images["tailscale"].index_digest.clone()];
    write_build_output_from(&files, &digests, out, token)
}

/// Writes a build output as [`write_build_output`] does from small made-up files (64 KiB
/// "kernel" and "initramfs" per architecture, under `out/../inputs/`, distinct per `token`) and
/// made-up extension digests: for tests of publishing itself, which need no fixtures and whose
/// uploads should take milliseconds.
pub fn write_small_build_output(out: &Path, token: &str) -> BTreeMap<String, Inputs> {
    let dir = out.parent().unwrap().join("inputs");
    std::fs::create_dir_all(&dir).unwrap();
    for arch in ["arm64", "amd64"] {
        for what in ["kernel", "initramfs"] {
            let seed = format!("{what} {arch} {token}");
            let data: Vec<u8> = (0..64 * 1024 / 32)
                .flat_map(|i| *Sha256Digest::of(format!("{seed} {i}").as_bytes()).as_bytes())
                .collect();
            std::fs::write(dir.join(format!("{what}-{arch}")), data).unwrap();
        }
    }
    let files = |arch: &str| (dir.join(format!("kernel-{arch}")), dir.join(format!("initramfs-{arch}")));
    let digests = [format!("sha256:{}", "1".repeat(64)), format!("sha256:{}", "2".repeat(64))];
    write_build_output_from(&files, &digests, out, token)
}

/// The writer behind [`write_build_output`]: `files(arch)` gives the kernel and initramfs, and
/// `extension_digests` the spin and tailscale index digests recorded in the annotations.
fn write_build_output_from(
    files: &dyn Fn(&str) -> (PathBuf, PathBuf),
    extension_digests: &[String; 2],
    out: &Path,
    token: &str,
) -> BTreeMap<String, Inputs> {
    let mut all = BTreeMap::new();
    for (arch, console) in [("arm64", "ttyAMA0"), ("amd64", "ttyS0")] {
        let (kernel, initramfs) = files(arch);
        let cmdline = format!("talos.platform=metal console={console} init_on_alloc=1 moonboot.test={token}");
        let mut raw = Vec::new();
        for role in Role::ALL {
            let data = match role {
                Role::Kernel => std::fs::read(&kernel).unwrap(),
                Role::Initramfs => std::fs::read(&initramfs).unwrap(),
                Role::Cmdline => cmdline.clone().into_bytes(),
            };
            raw.push((
                role.media_type(),
                data,
                BTreeMap::from([("org.opencontainers.image.title".into(), role.title().into())]),
            ));
        }
        let extensions = json!([
            {"name": "spin", "version": "v0.19.0", "digest": extension_digests[0]},
            {"name": "tailscale", "version": "1.84.0", "digest": extension_digests[1]},
            {"name": "talos-agent", "version": "v0.1.0"},
        ]);
        let annotations = BTreeMap::from([
            (ANNOTATION_FORMAT.to_string(), FORMAT_VERSION.to_string()),
            (ANNOTATION_TALOS_VERSION.to_string(), "v1.10.5".to_string()),
            (ANNOTATION_SCHEMATIC_ID.to_string(), SCHEMATIC.to_string()),
            (ANNOTATION_EXTENSIONS.to_string(), extensions.to_string()),
            ("org.opencontainers.image.created".to_string(), "2025-07-01T00:00:00Z".to_string()),
        ]);
        let dir = out.join(format!("boot-{arch}"));
        let manifest = write_artifact_layout(&dir, arch, ARTIFACT_TYPE, &raw, annotations, "v1.10.5");
        let extension_manifest = (arch == "arm64").then(|| {
            let manifest_yaml =
                std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../extensions/talos-agent/manifest.yaml"))
                    .unwrap();
            let spec =
                std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../extensions/talos-agent/talos-agent.yaml"))
                    .unwrap();
            let binary = format!("#!/bin/sh\necho talos-agent test {token}\n").into_bytes();
            let tar = tar_of(&[
                ("manifest.yaml", Some(&manifest_yaml), 0o644),
                ("rootfs", None, 0o755),
                ("rootfs/usr", None, 0o755),
                ("rootfs/usr/local", None, 0o755),
                ("rootfs/usr/local/etc", None, 0o755),
                ("rootfs/usr/local/etc/containers", None, 0o755),
                ("rootfs/usr/local/etc/containers/talos-agent.yaml", Some(&spec), 0o644),
                ("rootfs/usr/local/lib", None, 0o755),
                ("rootfs/usr/local/lib/containers", None, 0o755),
                ("rootfs/usr/local/lib/containers/talos-agent", None, 0o755),
                ("rootfs/usr/local/lib/containers/talos-agent/usr", None, 0o755),
                ("rootfs/usr/local/lib/containers/talos-agent/usr/local", None, 0o755),
                ("rootfs/usr/local/lib/containers/talos-agent/usr/local/bin", None, 0o755),
                ("rootfs/usr/local/lib/containers/talos-agent/usr/local/bin/talos-agent", Some(&binary), 0o755),
            ]);
            let diff_id = Sha256Digest::of(&tar).to_string();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &tar).unwrap();
            let blob = gz.finish().unwrap();
            write_layout(
                &out.join(format!("extension-talos-agent-{arch}")),
                arch,
                &[("application/vnd.oci.image.layer.v1.tar+gzip", blob, BTreeMap::new(), diff_id)],
                BTreeMap::new(),
                "v0.1.0",
            )
        });
        all.insert(arch.to_string(), Inputs { kernel, initramfs, cmdline, manifest, extension_manifest });
    }
    all
}
