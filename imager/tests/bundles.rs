//! Official extensions and overlays resolved from the Talos release's own bundles, against the
//! fixture registry: stand-ins of `siderolabs/extensions:v1.10.5` (`image-digests`,
//! `descriptions.yaml`), `siderolabs/overlays:v1.10.5` (`overlays.yaml`) and the images they pin,
//! served under their upstream names and reached through `--registry-mirror ghcr.io=…`.
//!
//! - The **installed** release `imager` (copied out of the workspace, run with an empty `PATH`, so
//!   no cargo, no cross toolchain, no source tree) builds the default image with nothing but the
//!   mirror flags: Talos v1.10.5 + siderolabs/spin + siderolabs/tailscale + the talos-agent
//!   extension pulled from its published image, which this test publishes first with
//!   `imager extension build` + `imager publish --extension-to`, as CI would.
//! - A bundle that pins a digest the registry does not serve, a bundle that cannot be reached, and
//!   an unknown name each fail with the image (or the near matches) named.
//! - A schematic with two official extensions and the `rpi_generic` overlay builds an image with
//!   exactly those, under the Image Factory's schematic ID.
//!
//! Skipped with a reason without the fixtures (a failure under MOONBOOT_REQUIRE_FIXTURES=1).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moonboot_tests::fixtures::{fixtures_dir, unique_repository, with_registry, Fixtures};

const IMAGER: &str = env!("CARGO_BIN_EXE_imager");

/// The fixture lock held while `moonboot/talos-agent:v<version>`, the talos-agent extension every
/// default `imager build` pulls, is published and pulled.
const DEFAULT_AGENT_LOCK: &str = "default-talos-agent-image";

fn scratch(name: &str) -> PathBuf {
    let d = fixtures_dir().join("tmp").join(format!("imager-bundles-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn build_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("build.json")).unwrap()).unwrap()
}

/// The static aarch64 talos-agent: `$MOONBOOT_AGENT_BINARY`, else cross-compiled (cached).
fn static_agent() -> PathBuf {
    match std::env::var_os("MOONBOOT_AGENT_BINARY") {
        Some(p) => PathBuf::from(p),
        None => moonboot_tests::stage1::build_static_agent("arm64").unwrap(),
    }
}

/// The factory's schematic ID of `yaml`, by `imager schematic id`.
fn schematic_id(dir: &Path, yaml: &str) -> String {
    let file = dir.join("schematic.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = ok(Command::new(IMAGER).args(["schematic", "id"]).arg(&file).output().unwrap(), "schematic id");
    String::from_utf8(out).unwrap().trim().to_string()
}

fn extension_names(b: &serde_json::Value) -> Vec<String> {
    b["inputs"]["extensions"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_installed_imager_builds_the_default_image_from_the_bundles() {
    let test = "the_installed_imager_builds_the_default_image_from_the_bundles";
    let Some(f) = with_registry(test) else { return };
    let work = scratch("installed");
    let (release_imager, _) = moonboot_tests::demo::host_binaries().unwrap();

    // CI's part: publish the talos-agent extension image where the default build looks for it.
    let ext_out = work.join("ext");
    ok(
        Command::new(&release_imager)
            .args(["extension", "build", "--arch", "arm64", "--agent-binary"])
            .arg(static_agent())
            .arg("--output")
            .arg(ext_out.join("extension-talos-agent-arm64"))
            .output()
            .unwrap(),
        "imager extension build",
    );
    // That reference is the same for every run using this fixture registry, so the publish and
    // the build that pulls it hold a fixture lock: another run may push the same repository (whose
    // link files docker-registry rewrites in place) at the same time.
    let lock = moonboot_tests::fixtures::lock(DEFAULT_AGENT_LOCK).unwrap();
    let agent_ref = format!("{}/moonboot/talos-agent:v{}", f.registry, env!("CARGO_PKG_VERSION"));
    let published = ok(
        Command::new(&release_imager)
            .args(["publish", "--extension-to", &agent_ref, "--insecure-registry", &f.registry, "--json", "--output"])
            .arg(&ext_out)
            .output()
            .unwrap(),
        "imager publish --extension-to",
    );
    let published: serde_json::Value = serde_json::from_slice(&published).unwrap();
    assert!(published.get("boot").is_none(), "only the extension is published: {published}");
    let agent_index = published["extension"]["index_digest"].as_str().unwrap().to_string();

    // The user's part: an installed imager, no source tree, no cargo, nothing but the mirror.
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&release_imager, bin.join("imager")).unwrap();
    let out = work.join("_out");
    let run = Command::new(bin.join("imager"))
        .env_clear()
        .env("PATH", work.join("empty-path"))
        .env("HOME", &work)
        .current_dir(&work)
        .args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .output()
        .unwrap();
    ok(run, "installed imager build");
    drop(lock);

    for file in ["kernel-arm64", "initramfs-metal-arm64.xz", "cmdline-metal-arm64", "cmdline-aws-arm64", "SHA256SUMS"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert!(out.join("boot-arm64/index.json").is_file());
    assert!(!out.join("extension-talos-agent-arm64").exists(), "a pulled talos-agent is not re-exported");
    let b = build_json(&out);
    let bundle = &b["inputs"]["extensions_bundle"];
    assert_eq!(bundle["reference"], "ghcr.io/siderolabs/extensions:v1.10.5");
    assert_eq!(
        bundle["index_digest"],
        f.images["extensions"].index_digest.as_str(),
        "the bundle is recorded by digest"
    );
    assert_eq!(extension_names(&b), ["spin", "tailscale", "talos-agent"]);
    let exts = b["inputs"]["extensions"].as_array().unwrap();
    for (e, key) in exts.iter().zip(["spin", "tailscale"]) {
        assert_eq!(e["official"], format!("siderolabs/{key}"));
        assert_eq!(e["image"]["index_digest"], f.images[key].index_digest.as_str(), "{key} pinned by the bundle");
    }
    assert_eq!(exts[2]["image"]["index_digest"], agent_index.as_str(), "talos-agent pulled from its published image");
    let id = schematic_id(
        &work,
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/spin\n      - siderolabs/tailscale\n",
    );
    assert_eq!(b["schematic_id"], id.as_str());
    // The boot artifact carries the same ID.
    let layout = std::fs::read(out.join("boot-arm64/index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&layout).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("boot-arm64/blobs/sha256").join(m)).unwrap()).unwrap();
    assert_eq!(manifest["annotations"]["dev.moonboot.talos.schematic"], id.as_str());
    let _ = std::fs::remove_dir_all(&work);
}

fn build(f: &Fixtures, out: &Path, extra: &[&str]) -> Output {
    Command::new(IMAGER)
        .args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .args(["--no-talos-agent", "--output"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn bad_bundles_and_unknown_names_fail_naming_the_image() {
    let Some(f) = with_registry("bad_bundles_and_unknown_names_fail_naming_the_image") else { return };
    let work = scratch("bad");

    // A bundle pinning spin to a digest the registry does not serve. The line names the fixture
    // registry itself rather than ghcr.io, so that no fallback to the origin is ever tried.
    let absent = format!("sha256:{}", "0".repeat(64));
    let line = format!("{}/siderolabs/spin:v0.19.0@{absent}", f.registry);
    let bundle = moonboot_tests::bundles::push_extensions_bundle(
        &f,
        &work,
        &unique_repository("moonboot-test/extensions-absent"),
        "v1.10.5",
        &format!("{line}\nghcr.io/siderolabs/tailscale:1.84.0@{}\n", f.images["tailscale"].index_digest),
        "",
    )
    .unwrap();
    let out = build(&f, &work.join("out-absent"), &["--extensions-bundle", &bundle]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&line), "the error names the pinned image: {stderr}");
    assert!(!work.join("out-absent").exists());

    // A registry that serves a manifest whose bytes do not hash to the digest the bundle pins
    // (the fault-injecting proxy flips a byte of every manifest it forwards).
    let proxy = moonboot_tests::faulty::start(&f.registry);
    proxy.faults.corrupt_manifests.store(true, std::sync::atomic::Ordering::SeqCst);
    let tampered = format!("{}/siderolabs/spin:v0.19.0@{}", proxy.addr, f.images["spin"].index_digest);
    let bundle = moonboot_tests::bundles::push_extensions_bundle(
        &f,
        &work,
        &unique_repository("moonboot-test/extensions-tampered"),
        "v1.10.5",
        &format!("{tampered}\nghcr.io/siderolabs/tailscale:1.84.0@{}\n", f.images["tailscale"].index_digest),
        "",
    )
    .unwrap();
    let out =
        build(&f, &work.join("out-tampered"), &["--extensions-bundle", &bundle, "--insecure-registry", &proxy.addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains(&tampered) && last.contains("digest mismatch"),
        "the image and the mismatch are named: {last}"
    );
    assert!(!work.join("out-tampered").exists());

    // A bundle that cannot be reached: the image and the endpoints tried are named, on one line.
    let nowhere = format!("{}/moonboot-test/no-such-bundle:v1.10.5", f.registry);
    let out = build(&f, &work.join("out-nowhere"), &["--extensions-bundle", &nowhere]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.contains("moonboot-test/no-such-bundle:v1.10.5") && last.contains(&f.registry), "{last}");

    // An unknown name lists the near matches.
    let schematic = work.join("typo.yaml");
    std::fs::write(
        &schematic,
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/spinn\n",
    )
    .unwrap();
    let out = build(&f, &work.join("out-typo"), &["--schematic", schematic.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("\"siderolabs/spinn\" is not in ghcr.io/siderolabs/extensions:v1.10.5"), "{stderr}");
    assert!(stderr.contains("did you mean siderolabs/spin?"), "{stderr}");

    // An unknown overlay likewise.
    let out = build(&f, &work.join("out-overlay"), &["--overlay", "rpi_generik"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("rpi_generic"), "{stderr}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_schematic_with_an_overlay_builds_exactly_its_extensions() {
    let Some(f) = with_registry("a_schematic_with_an_overlay_builds_exactly_its_extensions") else { return };
    let work = scratch("schematic");
    let yaml = "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\ncustomization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/spin\n      - siderolabs/tailscale\n";
    let file = work.join("rpi.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = work.join("out");
    ok(build(&f, &out, &["--schematic", file.to_str().unwrap()]), "imager build --schematic");
    let b = build_json(&out);
    assert_eq!(b["schematic_id"], schematic_id(&work, yaml).as_str(), "the Image Factory's ID");
    assert_eq!(extension_names(&b), ["spin", "tailscale"]);
    let overlay = &b["inputs"]["overlay"];
    assert_eq!(overlay["name"], "rpi_generic");
    assert_eq!(overlay["image"]["index_digest"], f.images["sbc-raspberrypi"].index_digest.as_str());
    assert_eq!(b["inputs"]["overlays_bundle"]["index_digest"], f.images["overlays"].index_digest.as_str());
    let metal = std::fs::read_to_string(out.join("cmdline-metal-arm64")).unwrap();
    assert!(
        metal.contains("console=ttyAMA0,115200") && metal.contains("sysctl.kernel.kexec_load_disabled=1"),
        "{metal}"
    );
    // The initramfs holds exactly those extensions (build.json's layer notes follow the cpio).
    let layers: Vec<&str> =
        b["initramfs_layers"].as_array().unwrap().iter().map(|l| l["extension"].as_str().unwrap()).collect();
    assert_eq!(layers.len(), 2, "{layers:?}");
    let _ = std::fs::remove_dir_all(&work);
}
