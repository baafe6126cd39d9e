//! `imager publish` against the fixture registry (127.0.0.1:5055), checked with real peers:
//! `skopeo inspect --raw` reads the index and the manifests, `skopeo copy --all` copies the
//! artifacts unchanged into an OCI layout whose raw blobs are the bytes that went in. A second
//! publish uploads no blob.
//!
//! The boot artifact layouts are written by hand in `support`, following `boot_artifact::artifact`
//! (format 2: three raw blobs typed by role, the empty config, the manifest annotations), from the
//! fixtures' real Debian kernels (an arm64 `Image`, an x86 bzImage) and stand-in initramfs files.
//! Skipped with a reason when the fixtures or the registry are absent.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use boot_artifact::artifact::{Role, ANNOTATION_FORMAT, ARTIFACT_TYPE, FORMAT_VERSION, LAYER_MEDIA_TYPE};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::media_type::OCI_INDEX as INDEX_MEDIA_TYPE;
use serde_json::{json, Value};
use support::{imager, run, tar_of, unique, write_build_output, write_layout, write_small_build_output};

fn skopeo_raw(reference: &str) -> Vec<u8> {
    run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")]))
}

#[test]
fn publish_is_read_by_skopeo_and_is_idempotent() {
    let Some(f) = moonboot_tests::fixtures::with_registry("publish_is_read_by_skopeo_and_is_idempotent") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("_out");
    let token = Sha256Digest::of(unique("t").as_bytes()).hex()[..16].to_string();
    let inputs = write_build_output(&f, &out, &token);
    let repo = unique("publish");
    let to = format!("{}/{repo}:v1", f.registry);
    let args =
        ["publish", "--to", &to, "--output", out.to_str().unwrap(), "--insecure-registry", &f.registry, "--json"];

    let (code, stdout, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    let first: Value = serde_json::from_str(&stdout).unwrap();
    // The empty config `{}` once (amd64's is arm64's, already there), boot blobs (2 × 3), the
    // extension's config and layer: nothing else was in the new repositories.
    assert_eq!(first["blobs"]["pushed"], 9, "{first:#}");
    assert_eq!(first["blobs"]["skipped"], 1, "{first:#}");
    let note = first["extension_note"].as_str().unwrap();
    assert!(note.contains("extension-talos-agent-amd64"), "{note}");

    // The index in the registry is the one publish reported, with linux/arm64 then linux/amd64.
    let raw = skopeo_raw(&to);
    let index_digest = Sha256Digest::of(&raw).to_string();
    assert_eq!(first["boot"]["index_digest"], index_digest.as_str());
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index["mediaType"], INDEX_MEDIA_TYPE);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (entry, arch) in entries.iter().zip(["arm64", "amd64"]) {
        let (digest, size) = &inputs[arch].manifest;
        assert_eq!(entry["platform"], json!({"architecture": arch, "os": "linux"}));
        assert_eq!(entry["digest"], digest.as_str(), "{arch}: the manifest digest of the layout");
        assert_eq!(entry["size"], *size);
        let pushed = first["boot"]["manifests"].as_array().unwrap().iter().find(|m| m["arch"] == arch).unwrap();
        assert_eq!(pushed["digest"], digest.as_str());
        // skopeo reads the per-arch manifest by digest and the image config of the platform.
        let m: Value = serde_json::from_slice(&skopeo_raw(&format!("{}/{repo}@{digest}", f.registry))).unwrap();
        assert_eq!(m["annotations"][ANNOTATION_FORMAT], FORMAT_VERSION);
        assert_eq!(m["artifactType"], ARTIFACT_TYPE);
        assert_eq!(entry.get("artifactType"), None, "skopeo 1.9 would drop it from the index and change its digest");
        assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    }

    // The extension went to REPO-extension:v1 with its one (arm64) manifest.
    let ext_ref = format!("{}/{repo}-extension:v1", f.registry);
    assert_eq!(first["extension"]["reference"], ext_ref.as_str());
    let ext_index: Value = serde_json::from_slice(&skopeo_raw(&ext_ref)).unwrap();
    let ext_entries = ext_index["manifests"].as_array().unwrap();
    assert_eq!(ext_entries.len(), 1);
    assert_eq!(ext_entries[0]["digest"], inputs["arm64"].extension_manifest.as_ref().unwrap().0.as_str());

    // skopeo copy --all into an OCI layout keeps every byte (the index digest is the same), and
    // each raw blob there, found by media type, is the file that went in.
    let oci = work.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{to}"),
        &format!("oci:{}:v1", oci.display()),
    ]));
    let blob = |d: &str| std::fs::read(oci.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let copied: Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(copied["manifests"][0]["digest"], index_digest.as_str(), "skopeo copied the index unchanged");
    for arch in ["arm64", "amd64"] {
        let m: Value = serde_json::from_slice(&blob(inputs[arch].manifest.0.as_str())).unwrap();
        let file = |media_type: &str| {
            let l = m["layers"].as_array().unwrap().iter().find(|l| l["mediaType"] == media_type).unwrap();
            blob(l["digest"].as_str().unwrap())
        };
        let i = &inputs[arch];
        assert!(file(Role::Kernel.media_type()) == std::fs::read(&i.kernel).unwrap(), "{arch} kernel");
        assert!(file(Role::Initramfs.media_type()) == std::fs::read(&i.initramfs).unwrap(), "{arch} initramfs");
        assert_eq!(file(Role::Cmdline.media_type()), i.cmdline.as_bytes(), "{arch} cmdline");
        assert_eq!(blob(m["config"]["digest"].as_str().unwrap()), b"{}", "the empty config");
    }

    // Publishing again uploads nothing and gives the same digests.
    let (code, stdout, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    let second: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(second["blobs"]["pushed"], 0, "{second:#}");
    assert_eq!(second["blobs"]["skipped"], 10, "{second:#}");
    assert_eq!(second["boot"], first["boot"]);
    assert_eq!(second["extension"], first["extension"]);
    assert_eq!(second["manifests_pushed"], 0, "no manifest or index is put again: {second:#}");
    assert_eq!(second["pushed"], json!([]), "{second:#}");
    assert_eq!(second["tags"][0]["status"], "unchanged", "{second:#}");
    assert_eq!(first["tags"][0]["status"], "created", "{first:#}");
    assert_eq!(first["tags"][0]["digest"], index_digest.as_str());
    let pushed: Vec<&str> = first["pushed"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(pushed.contains(&index_digest.as_str()), "every digest pushed is listed: {pushed:?}");

    // The human form names the same digests.
    let (code, text, _) = imager(&args[..args.len() - 1]);
    assert_eq!(code, 0);
    assert!(text.contains(&format!("{index_digest}  index  {to}")), "{text}");
    assert!(text.contains("0 pushed"), "{text}");
}

#[test]
fn publish_refuses_a_layout_that_is_not_a_boot_artifact_and_a_missing_output() {
    let work = tempfile::tempdir().unwrap();
    let (code, _, stderr) =
        imager(&["publish", "--to", "127.0.0.1:1/x/y:v1", "--output", work.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no boot artifact under"), "{stderr}");

    let dir = work.path().join("boot-arm64");
    let tar = tar_of(&[("etc/hostname", Some(b"x"), 0o644)]);
    let diff = Sha256Digest::of(&tar).to_string();
    write_layout(&dir, "arm64", &[(LAYER_MEDIA_TYPE, tar, BTreeMap::new(), diff)], BTreeMap::new(), "v1");
    let (code, _, stderr) =
        imager(&["publish", "--to", "127.0.0.1:1/x/y:v1", "--output", work.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a boot artifact"), "{stderr}");
    let (code, _, stderr) = imager(&[
        "publish",
        "--to",
        "127.0.0.1:1/x/y@sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "--output",
        ".",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("give a tag"), "{stderr}");
    // --agent-to without --agent-binary needs the talos-agent-<arch> that imager build writes.
    let (code, _, stderr) =
        imager(&["publish", "--agent-to", "127.0.0.1:1/x/y:v1", "--output", work.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--agent-to without --agent-binary: no talos-agent-<arch> under"), "{stderr}");
}

#[test]
fn a_moved_tag_is_reported_and_agent_binaries_are_an_oras_style_artifact() {
    let Some(f) = moonboot_tests::fixtures::with_registry(
        "a_moved_tag_is_reported_and_agent_binaries_are_an_oras_style_artifact",
    ) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = unique("agent");
    let to = format!("{}/{repo}:v1", f.registry);
    // Two different "static binaries" for arm64: real ELF headers (checked by publish), distinct bytes.
    let elf = |marker: &str| {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[18..20].copy_from_slice(&183u16.to_le_bytes());
        b.extend_from_slice(marker.as_bytes());
        b
    };
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    std::fs::write(&one, elf("first build")).unwrap();
    std::fs::write(&two, elf("second build")).unwrap();
    let publish = |bin: &std::path::Path| {
        let spec = format!("arm64={}", bin.display());
        let (code, stdout, stderr) = imager(&[
            "publish",
            "--agent-to",
            &to,
            "--agent-binary",
            &spec,
            "--insecure-registry",
            &f.registry,
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let first = publish(&one);
    assert!(first.get("boot").is_none() && first["extension"].is_null(), "{first:#}");
    let index = first["agent"]["index_digest"].as_str().unwrap().to_string();

    // The artifact as a registry client sees it: index → manifest with artifactType, the empty
    // config and one layer whose bytes are the binary, named by its title annotation.
    let raw: Value = serde_json::from_slice(&skopeo_raw(&to)).unwrap();
    assert_eq!(raw["mediaType"], INDEX_MEDIA_TYPE);
    assert_eq!(raw["manifests"][0]["platform"]["architecture"], "arm64");
    let m = raw["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(&skopeo_raw(&format!("{}/{repo}@{m}", f.registry))).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.moonboot.talos-agent.binary.v1");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(manifest["layers"][0]["annotations"]["org.opencontainers.image.title"], "talos-agent");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let bytes = moonboot_tests::registry::Repo { host: &f.registry, name: &repo }.blob(layer).unwrap();
    assert_eq!(bytes, std::fs::read(&one).unwrap(), "the layer is the binary, byte for byte");
    // skopeo copies it whole.
    let copy = work.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{to}"),
        &format!("oci:{}:v1", copy.display()),
    ]));
    assert!(copy.join("blobs/sha256").join(layer.strip_prefix("sha256:").unwrap()).is_file());

    // Publishing another binary under the same tag moves it, and says from where.
    let second = publish(&two);
    let tag = &second["tags"][0];
    assert_eq!(tag["status"], "moved", "{second:#}");
    assert_eq!(tag["previous"], index.as_str());
    assert_ne!(tag["digest"], index.as_str());
    // Without --agent-binary, the talos-agent-<arch> that imager build wrote into --output is
    // published: the layer the EC2 user-data fetches by digest is that file.
    let out = work.path().join("_out");
    std::fs::create_dir(&out).unwrap();
    let built = elf("written by imager build");
    std::fs::write(out.join("talos-agent-arm64"), &built).unwrap();
    let (code, stdout, stderr) = imager(&[
        "publish",
        "--agent-to",
        &to,
        "--output",
        out.to_str().unwrap(),
        "--insecure-registry",
        &f.registry,
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let third: Value = serde_json::from_str(&stdout).unwrap();
    let m = third["agent"]["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(third["agent"]["manifests"][0]["arch"], "arm64");
    let manifest: Value = serde_json::from_slice(&skopeo_raw(&format!("{}/{repo}@{m}", f.registry))).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(layer, Sha256Digest::of(&built).to_string());
    let bytes = moonboot_tests::registry::Repo { host: &f.registry, name: &repo }.blob(layer).unwrap();
    assert_eq!(bytes, built);
    // A binary for another architecture than named is refused.
    let spec = format!("amd64={}", one.display());
    let (code, _, stderr) =
        imager(&["publish", "--agent-to", &to, "--agent-binary", &spec, "--insecure-registry", &f.registry]);
    assert_eq!(code, 1, "{stderr}");
}

/// Eight `imager publish` of one build to one tag of a fresh registry, all at once — two CI jobs
/// re-running, two architectures, a user's retry — in five rounds, each against a new private
/// docker-registry. distribution rewrites a repository's link files in place on every blob
/// upload and manifest `PUT`, so the publishers read each other's half-written links
/// (`DIGEST_INVALID`, `500 UNKNOWN`): each must confirm its references and ask again until it
/// lands. The build is small (64 KiB files), so the eight reach the same requests together.
/// After each round every publisher has exited 0 and reported the same index, the tag names it,
/// and the registry holds exactly the build: two repositories, one tag each, every manifest and
/// blob readable under its digest.
#[test]
fn eight_concurrent_publishes_of_one_build_to_one_tag_all_succeed() {
    let test = "eight_concurrent_publishes_of_one_build_to_one_tag_all_succeed";
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("_out");
    let inputs = write_small_build_output(&out, "concurrent");
    let mut retries = 0;
    for round in 0..5 {
        let registry = moonboot_tests::private_registry::PrivateRegistry::start(
            &work.path().join(format!("registry-{round}")),
            None,
        )
        .expect("a private docker-registry (run scripts/setup)");
        retries += publish_at_once(&registry.addr, &out, &inputs);
    }
    eprintln!("{test}: 5 rounds of 8 publishers, {retries} retries said on stderr");
}

/// One round of [`eight_concurrent_publishes_of_one_build_to_one_tag_all_succeed`]; returns how
/// many retries the publishers said on stderr.
fn publish_at_once(addr: &str, out: &std::path::Path, inputs: &BTreeMap<String, support::Inputs>) -> usize {
    let to = format!("{addr}/moonboot/boot:v1");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_imager"))
                .args(["publish", "--to", &to, "--insecure-registry", addr, "--json", "--output"])
                .arg(out)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reports = Vec::new();
    let mut retries = 0;
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "publisher {i} failed ({}): {stderr}", o.status);
        retries += stderr.lines().filter(|l| l.contains("pushing it again") || l.contains("asking again")).count();
        reports.push(serde_json::from_slice::<Value>(&o.stdout).unwrap());
    }
    let index_digest = reports[0]["boot"]["index_digest"].as_str().unwrap().to_string();
    for r in &reports {
        assert_eq!(r["boot"]["index_digest"], index_digest.as_str(), "every publisher pushed one index");
        assert_eq!(r["extension"], reports[0]["extension"]);
    }
    assert!(reports.iter().any(|r| r["tags"][0]["status"] == "created"), "someone created the tag: {reports:#?}");

    // The registry holds the build and nothing else.
    let get_json = |path: &str| -> Value {
        let r = moonboot_tests::registry::get(addr, path, &[]).unwrap();
        assert_eq!(r.status, 200, "GET {path}: {}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice(&r.body).unwrap()
    };
    assert_eq!(get_json("/v2/_catalog")["repositories"], json!(["moonboot/boot", "moonboot/boot-extension"]));
    for repo in ["moonboot/boot", "moonboot/boot-extension"] {
        assert_eq!(get_json(&format!("/v2/{repo}/tags/list"))["tags"], json!(["v1"]), "{repo}");
    }
    let boot = moonboot_tests::registry::Repo { host: addr, name: "moonboot/boot" };
    let (_, index) = boot.manifest("v1").unwrap();
    assert_eq!(Sha256Digest::of(&index).to_string(), index_digest, "the tag names the build's index");
    let index: Value = serde_json::from_slice(&index).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (entry, arch) in entries.iter().zip(["arm64", "amd64"]) {
        assert_eq!(entry["digest"], inputs[arch].manifest.0.as_str(), "{arch}: the layout's manifest");
        let (_, m) = boot.manifest(entry["digest"].as_str().unwrap()).unwrap();
        let m: Value = serde_json::from_slice(&m).unwrap();
        let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap());
        for d in blobs {
            let blob = boot.blob(d["digest"].as_str().unwrap()).unwrap();
            assert_eq!(blob.len() as u64, d["size"].as_u64().unwrap());
        }
    }
    retries
}
