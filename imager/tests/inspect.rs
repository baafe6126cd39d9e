//! `imager inspect` as a user runs it, against the fixture registry (127.0.0.1:5055) and local OCI
//! image layouts: a published boot artifact reads the same from the registry, from its layout and
//! from the build output directory; the stand-in Talos imager image and extension images show
//! what they hold; a tampered blob is refused. Skipped with a reason when the fixtures or the
//! registry are absent.

mod support;

use std::path::Path;

use boot_artifact::digest::Sha256Digest;
use serde_json::Value;
use support::{imager, unique, write_build_output, SCHEMATIC};

fn inspect_json(args: &[&str]) -> Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, stdout, stderr) = imager(&all);
    assert_eq!(code, 0, "imager {all:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The facts, without where they were read from.
fn facts(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    o.remove("source");
    o.remove("index_digest");
    v
}

/// The human form without the lines that name where it was read from.
fn text_facts(args: &[&str]) -> String {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = imager(&all);
    assert_eq!(code, 0, "imager {all:?}: {stderr}");
    stdout.lines().filter(|l| !l.starts_with("source ") && !l.starts_with("index ")).collect::<Vec<_>>().join("\n")
}

#[test]
fn published_boot_artifact_reads_the_same_from_registry_layout_and_output_dir() {
    let Some(f) = moonboot_tests::fixtures::with_registry("published_boot_artifact_reads_the_same") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("_out");
    let token = Sha256Digest::of(unique("i").as_bytes()).hex()[..16].to_string();
    let inputs = write_build_output(&f, &out, &token);
    let repo = unique("inspect");
    let to = format!("{}/{repo}:v1", f.registry);
    let (code, stdout, stderr) = imager(&[
        "publish",
        "--to",
        &to,
        "--output",
        out.to_str().unwrap(),
        "--insecure-registry",
        &f.registry,
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let published: Value = serde_json::from_str(&stdout).unwrap();

    for (arch, kernel_format) in [("arm64", "arm64 Image"), ("amd64", "x86 bzImage")] {
        let remote = inspect_json(&[&to, "--arch", arch, "--insecure-registry", &f.registry]);
        let layout_dir = out.join(format!("boot-{arch}"));
        let local = inspect_json(&[layout_dir.to_str().unwrap()]);
        let output_dir = inspect_json(&[out.to_str().unwrap(), "--arch", arch]);
        assert_eq!(remote["index_digest"], published["boot"]["index_digest"]);
        assert_eq!(remote["source"], to.as_str());
        assert_eq!(facts(remote.clone()), facts(local.clone()), "{arch}: registry and layout disagree");
        assert_eq!(facts(output_dir), facts(local.clone()), "{arch}: output dir and layout disagree");

        let i = &inputs[arch];
        assert_eq!(remote["kind"], "boot-artifact");
        assert_eq!(remote["platform"], format!("linux/{arch}"));
        assert_eq!(remote["manifest_digest"], i.manifest.0.as_str());
        let b = &remote["boot"];
        assert_eq!(b["format_version"], "2");
        assert_eq!(b["talos_version"], "v1.10.5");
        assert_eq!(b["schematic_id"], SCHEMATIC);
        assert_eq!(b["created"], "2025-07-01T00:00:00Z");
        assert_eq!(b["cmdline"], i.cmdline.as_str());
        let names: Vec<&str> =
            b["extensions"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["spin", "tailscale", "talos-agent"]);
        assert_eq!(b["extensions"][0]["digest"], f.images["spin"].index_digest.as_str());
        assert_eq!(b["extensions"][2].get("digest"), None, "built here: no digest");
        let kernel_len = std::fs::metadata(&i.kernel).unwrap().len();
        assert_eq!(b["kernel"]["path"], "kernel", "format 2: the blob's title");
        assert_eq!(b["kernel"]["size"], kernel_len);
        let format = b["kernel"]["format"].as_str().unwrap();
        assert!(format.starts_with(kernel_format), "{arch}: {format}");
        assert_eq!(b["initramfs"]["size"], std::fs::metadata(&i.initramfs).unwrap().len());
        assert_eq!(b["initramfs"]["format"], "zstd", "the stand-in initramfs.xz is zstd, as Talos >= 1.8");
        let roles: Vec<&str> =
            remote["layers"].as_array().unwrap().iter().map(|l| l["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["kernel", "initramfs", "cmdline"]);
        // Format 2: the kernel blob is the kernel.
        assert_eq!(remote["layers"][0]["size"], kernel_len);
        assert_eq!(remote["layers"][0]["media_type"], "application/vnd.moonboot.linux.kernel.v1");

        assert_eq!(
            text_facts(&[&to, "--arch", arch, "--insecure-registry", &f.registry]),
            text_facts(&[layout_dir.to_str().unwrap()]),
            "{arch}: the human forms differ"
        );
    }
    let text = text_facts(&[out.to_str().unwrap()]);
    assert!(text.contains("talos version   v1.10.5"), "{text}");
    assert!(text.contains(&format!("schematic id    {SCHEMATIC}")), "{text}");
    assert!(text.contains("platform        linux/arm64"), "arm64 is the default: {text}");

    // The talos-agent extension image that was published with it.
    let ext =
        inspect_json(&[published["extension"]["reference"].as_str().unwrap(), "--insecure-registry", &f.registry]);
    assert_eq!(ext["kind"], "extension");
    let e = &ext["extension"];
    assert_eq!(e["name"], "talos-agent");
    assert_eq!(e["version"], "v0.1.0");
    assert_eq!(e["talos_compatibility"], ">= v1.10.0");
    assert_eq!(e["problem"], Value::Null, "Talos's rules accept it");
    assert_eq!(e["files"], 3);
    let bin = e["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "rootfs/usr/local/lib/containers/talos-agent/usr/local/bin/talos-agent")
        .expect("the agent binary");
    assert_eq!(bin["mode"], "0755");
    assert_eq!(bin["size"], format!("#!/bin/sh\necho talos-agent test {token}\n").len());
}

#[test]
fn stand_in_imager_and_extension_images() {
    let Some(f) = moonboot_tests::fixtures::with_registry("stand_in_imager_and_extension_images") else {
        return;
    };
    let img = &f.images["imager"];
    let remote = inspect_json(&[&img.reference, "--arch", "arm64", "--insecure-registry", &f.registry]);
    assert_eq!(remote["kind"], "talos-imager");
    assert_eq!(remote["index_digest"], img.index_digest.as_str());
    assert_eq!(remote["manifest_digest"], img.manifests["arm64"].as_str());
    for arch in ["arm64", "amd64"] {
        let files = remote["talos_imager"]["install"][arch].as_array().unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(paths, [format!("usr/install/{arch}/initramfs.xz"), format!("usr/install/{arch}/vmlinuz")]);
        let vmlinuz = &files[1];
        assert_eq!(vmlinuz["size"], std::fs::metadata(&f.arches[arch].vmlinuz).unwrap().len());
        let format = vmlinuz["format"].as_str().unwrap();
        let want = if arch == "arm64" { "EFI zboot (zstd" } else { "x86 bzImage" };
        assert!(format.starts_with(want), "{arch}: {format}");
    }
    // The fixture's own layout (index.json → index → manifests) gives the same facts.
    let local = inspect_json(&[img.layout.to_str().unwrap(), "--arch", "arm64"]);
    assert_eq!(local["index_digest"], img.index_digest.as_str());
    assert_eq!(facts(local), facts(remote));

    for (name, file) in [
        ("spin", "rootfs/usr/local/bin/containerd-shim-spin-v2"),
        ("tailscale", "rootfs/usr/local/etc/containers/tailscale.yaml"),
    ] {
        let pushed = &f.images[name];
        let v = inspect_json(&[&pushed.reference, "--arch", "amd64", "--insecure-registry", &f.registry]);
        assert_eq!(v["kind"], "extension", "{name}");
        assert_eq!(v["platform"], "linux/amd64");
        assert_eq!(v["manifest_digest"], pushed.manifests["amd64"].as_str());
        let info = pushed.extension.as_ref().unwrap();
        assert_eq!(v["extension"]["name"], info.name.as_str());
        assert_eq!(v["extension"]["version"], info.version.as_str());
        assert_eq!(v["extension"]["problem"], Value::Null, "{name}");
        assert!(v["extension"]["paths"].as_array().unwrap().iter().any(|p| p["path"] == file), "{name}: {file}");
    }
}

#[test]
fn a_tampered_blob_and_a_wrong_target_are_refused() {
    let Some(f) = moonboot_tests::fixtures::with_registry("a_tampered_blob_and_a_wrong_target_are_refused") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("_out");
    let inputs = write_build_output(&f, &out, "tamper");
    let dir = out.join("boot-arm64");
    // Overwrite the cmdline layer with a blob of the same size and other content.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.join("blobs/sha256").join(inputs["arm64"].manifest.0.trim_start_matches("sha256:")))
            .unwrap(),
    )
    .unwrap();
    let cmdline_layer = manifest["layers"][2]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let blob = dir.join("blobs/sha256").join(&cmdline_layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.windows(5).position(|w| w == b"metal").unwrap();
    bytes[at..at + 5].copy_from_slice(b"METAL");
    std::fs::write(&blob, bytes).unwrap();
    let (code, stdout, stderr) = imager(&["inspect", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("digest mismatch") && stderr.contains(&cmdline_layer), "{stderr}");
    assert!(!stdout.contains("METAL"), "nothing read from the tampered blob is printed");

    let (code, _, stderr) = imager(&["inspect", work.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("neither an OCI image layout nor an imager build output"), "{stderr}");
    let missing = Path::new("/nonexistent/moonboot");
    let (code, _, stderr) = imager(&["inspect", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("must be an image reference"), "{stderr}");
}
