//! Checks what `scripts/fixtures` pushed to the local registry, through the registry's HTTP API
//! (OCI distribution spec), against `target/fixtures/fixtures.json`.
//!
//! Skipped (with a printed reason) when `fixtures.json` is absent. When it is present the registry
//! must answer: run `scripts/fixtures` again to (re)start it.

use boot_artifact::digest::Sha256Digest;
use boot_artifact::kernel::{self, KernelFormat};
use boot_artifact::oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use boot_artifact::oci::{ImageIndex, ImageManifest};
use boot_artifact::pe::PeFile;
use moonboot_tests::bundles;
use moonboot_tests::cpio;
use moonboot_tests::extensions::{SPIN, SPIN_CRI_PART, TAILSCALE, TAILSCALE_SERVICE_SPEC};
use moonboot_tests::fixtures::{unique_repository, Fixtures, PushedImage};
use moonboot_tests::registry::Repo;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::io::Read;

fn load(test: &str) -> Option<Fixtures> {
    moonboot_tests::fixtures::with_registry(test)
}

/// Fetches the index of `img`, checks its digest and platforms; returns manifest digest by arch.
fn check_index(f: &Fixtures, img: &PushedImage) -> BTreeMap<String, ImageManifest> {
    let repo = Repo { host: &f.registry, name: &img.repository };
    let (media_type, body) = repo.manifest(&img.tag).unwrap();
    assert_eq!(media_type, OCI_INDEX, "{}:{}", img.repository, img.tag);
    assert_eq!(Sha256Digest::of(&body).to_string(), img.index_digest);
    let index = ImageIndex::parse(&body, Some(&media_type)).unwrap();
    let platforms: BTreeSet<String> =
        index.manifests.iter().map(|d| d.platform.as_ref().expect("platform in index").to_string()).collect();
    assert_eq!(platforms, BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()]));
    let mut out = BTreeMap::new();
    for d in &index.manifests {
        let arch = d.platform.as_ref().unwrap().architecture.clone();
        assert_eq!(d.digest.to_string(), img.manifests[&arch], "{} {arch} manifest digest", img.repository);
        let (mt, body) = repo.manifest(d.digest).unwrap();
        assert_eq!(mt, OCI_MANIFEST);
        out.insert(arch, ImageManifest::parse(&body, Some(&mt)).unwrap());
    }
    out
}

/// Regular files of a gzip'd tar layer, by path.
fn layer_files(blob: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(e.header().uid().unwrap(), 0, "{path} uid");
        assert_eq!(e.header().gid().unwrap(), 0, "{path} gid");
        let mode = e.header().mode().unwrap();
        assert_eq!(mode & 0o002, 0, "{path} is world-writable");
        if e.header().entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, (mode, data));
        }
    }
    files
}

#[test]
fn registry_serves_the_stand_in_imager() {
    let Some(f) = load("registry_serves_the_stand_in_imager") else { return };
    let img = &f.images["imager"];
    assert_eq!(img.repository, "siderolabs/imager");
    assert_eq!(img.tag, "v1.10.5");
    let manifests = check_index(&f, img);
    let repo = Repo { host: &f.registry, name: &img.repository };
    // Both platform images share the layer with /usr/install/{amd64,arm64}.
    let first: Vec<String> = manifests.values().map(|m| m.layers[0].digest.to_string()).collect();
    assert_eq!(first[0], first[1], "the /usr/install layer is shared");
    let files = layer_files(&repo.blob(&first[0]).unwrap());
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "usr/install/amd64/initramfs.xz",
            "usr/install/amd64/vmlinuz",
            "usr/install/arm64/initramfs.xz",
            "usr/install/arm64/vmlinuz",
        ])
    );
    for (arch, m) in &manifests {
        let config = repo.blob(m.config.digest).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["architecture"], arch.as_str());
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), m.layers.len());
    }

    // arm64 vmlinuz: EFI zboot (zstd) around the raw arm64 Image.
    let vmlinuz = &files["usr/install/arm64/vmlinuz"].1;
    assert_eq!(&vmlinuz[0..2], b"MZ");
    assert_eq!(&vmlinuz[4..8], b"zimg");
    let KernelFormat::EfiZboot(h) = kernel::detect(vmlinuz).unwrap() else { panic!("arm64 vmlinuz is not EFI zboot") };
    assert_eq!(h.compression, "zstd");
    assert_eq!(PeFile::read(&mut Cursor::new(vmlinuz)).unwrap().machine, boot_artifact::pe::MACHINE_ARM64);
    let mut image = Vec::new();
    kernel::unpack_arm64(&mut Cursor::new(vmlinuz), &mut image, kernel::DEFAULT_MAX_KERNEL_SIZE)
        .expect("zboot payload unpacks to an arm64 Image");
    let raw = std::fs::read(&f.arches["arm64"].kernel_image).unwrap();
    assert!(image == raw, "zboot payload differs from the Debian Image it was made from");

    // amd64 vmlinuz: a bzImage.
    let bz = &files["usr/install/amd64/vmlinuz"].1;
    assert_eq!(&bz[0x202..0x206], b"HdrS");

    // initramfs.xz: zstd of a newc cpio with init (static, right machine), rootfs.sqsh, modules.
    for (arch, elf_machine) in [("arm64", 0xb7u16), ("amd64", 0x3e)] {
        let xz = &files[&format!("usr/install/{arch}/initramfs.xz")].1;
        assert_eq!(&xz[..4], &[0x28, 0xb5, 0x2f, 0xfd], "{arch} initramfs.xz is not zstd");
        let cpio_bytes = zstd::stream::decode_all(&xz[..]).unwrap();
        let entries = cpio::read_newc(&cpio_bytes).unwrap();
        let by_name: BTreeMap<&str, &cpio::Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
        let init = by_name.get("init").unwrap_or_else(|| panic!("{arch}: no init in the initramfs"));
        assert_eq!(init.mode & 0o777, 0o755);
        assert_eq!(&init.data[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([init.data[18], init.data[19]]), elf_machine, "{arch} init machine");
        let sqsh = by_name.get("rootfs.sqsh").unwrap_or_else(|| panic!("{arch}: no rootfs.sqsh"));
        assert_eq!(&sqsh.data[..4], b"hsqs");
        let a = &f.arches[arch];
        let load = format!("lib/modules/{}/modules.load", a.kernel_release);
        assert!(by_name.contains_key(load.as_str()), "{arch}: no {load}");
        for m in &a.initramfs_modules {
            let p = format!("lib/modules/{}/{m}", a.kernel_release);
            assert!(by_name.contains_key(p.as_str()), "{arch}: module {p} missing");
        }
        for e in &entries {
            assert_eq!((e.uid, e.gid), (0, 0), "{arch}: {} not owned by 0:0", e.name);
            assert_eq!(u64::from(e.mtime), f.source_date_epoch, "{arch}: {} mtime", e.name);
        }
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "{arch}: cpio entries are not sorted");
    }
}

#[test]
fn registry_serves_the_stand_in_extensions() {
    let Some(f) = load("registry_serves_the_stand_in_extensions") else { return };
    for ext in [&SPIN, &TAILSCALE] {
        let img = &f.images[ext.name];
        assert_eq!(img.repository, format!("siderolabs/{}", ext.name));
        assert_eq!(img.tag, ext.version);
        let repo = Repo { host: &f.registry, name: &img.repository };
        for (arch, m) in check_index(&f, img) {
            let mut flat = BTreeMap::new();
            for l in &m.layers {
                flat.extend(layer_files(&repo.blob(l.digest).unwrap()));
            }
            for path in flat.keys() {
                assert!(
                    path == "manifest.yaml" || path.starts_with("rootfs/"),
                    "{} {arch}: {path} outside manifest.yaml and rootfs/",
                    ext.name
                );
            }
            let manifest = String::from_utf8(flat["manifest.yaml"].1.clone()).unwrap();
            assert_eq!(manifest, ext.manifest_yaml());
            assert!(manifest.contains(&format!("  name: {}\n  version: \"{}\"\n", ext.name, ext.version)));
            match ext.name {
                "spin" => {
                    let (mode, _) = &flat["rootfs/usr/local/bin/containerd-shim-spin-v2"];
                    assert_eq!(mode & 0o111, 0o111);
                    assert_eq!(flat["rootfs/etc/cri/conf.d/10-spin.part"].1, SPIN_CRI_PART.as_bytes());
                }
                _ => {
                    assert_eq!(
                        flat["rootfs/usr/local/etc/containers/tailscale.yaml"].1,
                        TAILSCALE_SERVICE_SPEC.as_bytes()
                    );
                    for bin in ["containerboot", "tailscale", "tailscaled"] {
                        let p = format!("rootfs/usr/local/lib/containers/tailscale/usr/local/bin/{bin}");
                        assert!(flat.contains_key(&p), "tailscale {arch}: no {p}");
                    }
                }
            }
        }
    }
}

/// A fixture image by its `fixtures.json` name, with a hint when an older build lacks it.
fn image<'a>(f: &'a Fixtures, name: &str) -> &'a PushedImage {
    f.images.get(name).unwrap_or_else(|| panic!("fixtures.json has no image {name:?}: rerun scripts/fixtures"))
}

/// Checks that every platform's config names its architecture and that all platforms share the
/// same layers; returns the layer digests.
fn shared_layers(f: &Fixtures, img: &PushedImage, manifests: &BTreeMap<String, ImageManifest>) -> Vec<String> {
    let repo = Repo { host: &f.registry, name: &img.repository };
    let mut layers: Option<Vec<String>> = None;
    for (arch, m) in manifests {
        let config: serde_json::Value = serde_json::from_slice(&repo.blob(m.config.digest).unwrap()).unwrap();
        assert_eq!(config["architecture"], arch.as_str(), "{} {arch} config", img.repository);
        assert_eq!(config["os"], "linux");
        let these: Vec<String> = m.layers.iter().map(|l| l.digest.to_string()).collect();
        if let Some(l) = &layers {
            assert_eq!(l, &these, "{}: the platforms have different layers", img.repository);
        }
        layers = Some(these);
    }
    layers.expect("an index with platforms")
}

/// The one file of a bundle layer: the layer's only tar entry, a regular file named exactly `name`
/// (no `./`, no directories), mode 0644, owned by 0:0, mtime SOURCE_DATE_EPOCH.
fn only_file(f: &Fixtures, img: &PushedImage, layer_digest: &str, name: &str) -> String {
    let blob = Repo { host: &f.registry, name: &img.repository }.blob(layer_digest).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let mut found = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let entry_name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        assert!(h.entry_type().is_file(), "{}: {entry_name:?} is not a regular file", img.repository);
        assert_eq!(h.mode().unwrap(), 0o644, "{}: {entry_name} mode", img.repository);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{}: {entry_name} owner", img.repository);
        assert_eq!(h.mtime().unwrap(), f.source_date_epoch, "{}: {entry_name} mtime", img.repository);
        let mut data = String::new();
        e.read_to_string(&mut data).unwrap();
        found.push((entry_name, data));
    }
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [name], "{}: entries of layer {layer_digest}", img.repository);
    found.remove(0).1
}

/// Checks that `digest` is the index digest `fixtures.json` records for the image `reference`
/// (`ghcr.io/siderolabs/NAME:TAG`) and that the registry serves it; returns that image.
fn pinned<'a>(f: &'a Fixtures, reference: &str, digest: &str) -> &'a PushedImage {
    let img = f
        .images
        .values()
        .find(|i| i.upstream_reference == reference)
        .unwrap_or_else(|| panic!("{reference} is not a fixture image"));
    assert_eq!(digest, img.index_digest, "{reference}: pinned digest");
    let (media_type, _) = Repo { host: &f.registry, name: &img.repository }.manifest(digest).unwrap();
    assert_eq!(media_type, OCI_INDEX, "{reference}@{digest}");
    img
}

#[test]
fn registry_serves_the_extensions_bundle() {
    let Some(f) = load("registry_serves_the_extensions_bundle") else { return };
    let img = image(&f, "extensions");
    assert_eq!(img.repository, "siderolabs/extensions");
    assert_eq!(img.tag, "v1.10.5");
    assert_eq!(img.upstream_reference, "ghcr.io/siderolabs/extensions:v1.10.5");
    let layers = shared_layers(&f, img, &check_index(&f, img));
    assert_eq!(layers.len(), 2, "FROM scratch, one layer per file");
    let digests = only_file(&f, img, &layers[0], "image-digests");
    let descriptions = only_file(&f, img, &layers[1], "descriptions.yaml");

    // image-digests: one `REF@DIGEST\n` line per extension, in the Makefile's (alphabetical) order.
    assert!(digests.ends_with('\n'), "image-digests lacks the final newline: {digests:?}");
    let lines: Vec<&str> = digests.lines().collect();
    let mut named = Vec::new();
    for line in &lines {
        let (reference, digest) = line.split_once('@').unwrap_or_else(|| panic!("{line:?} has no @"));
        let ext = pinned(&f, reference, digest);
        named.push(ext.extension.as_ref().expect("an extension image").name.clone());
    }
    assert_eq!(named, ["spin", "tailscale"]);
    let spin = (&SPIN, f.images["spin"].index_digest.as_str());
    let tailscale = (&TAILSCALE, f.images["tailscale"].index_digest.as_str());
    let (want_digests, want_descriptions) = bundles::standin_extensions_files(&[spin, tailscale]);
    assert_eq!(digests, want_digests);

    // descriptions.yaml: a map keyed by exactly those lines, each {author, description: |}.
    let keys: Vec<&str> =
        descriptions.lines().filter(|l| !l.starts_with(' ')).map(|l| l.strip_suffix(':').expect("a key")).collect();
    assert_eq!(keys, lines);
    for (ext, line) in [&SPIN, &TAILSCALE].into_iter().zip(&lines) {
        let entry = format!("{line}:\n  author: {}\n  description: |\n    {}\n", ext.author, ext.description);
        assert!(descriptions.contains(&entry), "descriptions.yaml lacks {entry:?}:\n{descriptions}");
    }
    assert_eq!(descriptions, want_descriptions);
}

#[test]
fn registry_serves_the_overlays_bundle_and_the_overlay() {
    let Some(f) = load("registry_serves_the_overlays_bundle_and_the_overlay") else { return };
    let sbc = image(&f, "sbc-raspberrypi");
    assert_eq!(sbc.repository, "siderolabs/sbc-raspberrypi");
    assert_eq!(sbc.upstream_reference, "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5");
    let layers = shared_layers(&f, sbc, &check_index(&f, sbc));
    assert_eq!(layers.len(), 1);
    let files = layer_files(&Repo { host: &f.registry, name: &sbc.repository }.blob(&layers[0]).unwrap());
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "artifacts/arm64/firmware/boot/README.moonboot-test",
            "installers/rpi_generic",
            "profiles/rpi_generic.yaml"
        ])
    );
    let (mode, installer) = &files["installers/rpi_generic"];
    assert_eq!(mode & 0o777, 0o755);
    assert!(installer.starts_with(b"#!/bin/sh\n"));
    let profile = String::from_utf8(files["profiles/rpi_generic.yaml"].1.clone()).unwrap();
    assert!(profile.contains("TEST FIXTURE") && profile.contains("\narch: arm64\n"), "{profile}");

    let img = image(&f, "overlays");
    assert_eq!(img.repository, "siderolabs/overlays");
    assert_eq!(img.tag, "v1.10.5");
    assert_eq!(img.upstream_reference, "ghcr.io/siderolabs/overlays:v1.10.5");
    let layers = shared_layers(&f, img, &check_index(&f, img));
    assert_eq!(layers.len(), 1, "FROM scratch, one file");
    let text = only_file(&f, img, &layers[0], "overlays.yaml");
    assert_eq!(text, bundles::standin_overlays_yaml(bundles::SBC_RASPBERRYPI_VERSION, &sbc.index_digest));
    // overlays: [{name, image, digest}], every digest the overlay image's index digest.
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("overlays:"));
    let rest: Vec<&str> = lines.collect();
    let mut names = Vec::new();
    for item in rest.chunks(3) {
        let field = |i: usize, key: &str| {
            item[i].trim_start_matches([' ', '-']).strip_prefix(key).unwrap_or_else(|| panic!("{item:?}: {key}"))
        };
        names.push(field(0, "name: "));
        let overlay = pinned(&f, field(1, "image: "), field(2, "digest: "));
        assert_eq!(overlay.repository, sbc.repository);
    }
    assert_eq!(names, ["rpi_generic", "revpi_generic"]);
}

#[test]
fn bundle_helpers_push_any_content() {
    let Some(f) = load("bundle_helpers_push_any_content") else { return };
    let work = moonboot_tests::fixtures::fixtures_dir().join("tmp").join(format!("bundles-{}", std::process::id()));
    // A bundle listing a digest the registry does not serve, and overlays.yaml that is not YAML.
    let missing = format!("sha256:{}", "0".repeat(64));
    let digests = format!("ghcr.io/siderolabs/spin:v0.19.0@{missing}\n");
    let descriptions = "not: [valid\n";
    let overlays = "overlays: {{{\n";
    let tag = "broken";
    let (ext_repo, ovl_repo) =
        (unique_repository("moonboot-test/extensions"), unique_repository("moonboot-test/overlays"));
    let ext_ref = bundles::push_extensions_bundle(&f, &work, &ext_repo, tag, &digests, descriptions).unwrap();
    let ovl_ref = bundles::push_overlays_bundle(&f, &work, &ovl_repo, tag, overlays).unwrap();
    assert_eq!(ext_ref, format!("{}/{ext_repo}:{tag}", f.registry));
    assert_eq!(ovl_ref, format!("{}/{ovl_repo}:{tag}", f.registry));
    // Read back through the registry: both platforms, the files exactly as given.
    for (repository, files) in [
        (ext_repo.as_str(), vec![("image-digests", digests.as_str()), ("descriptions.yaml", descriptions)]),
        (ovl_repo.as_str(), vec![("overlays.yaml", overlays)]),
    ] {
        let img = PushedImage {
            repository: repository.to_string(),
            tag: tag.to_string(),
            reference: String::new(),
            upstream_reference: String::new(),
            index_digest: String::new(),
            manifests: BTreeMap::new(),
            layout: Default::default(),
            extension: None,
        };
        let repo = Repo { host: &f.registry, name: repository };
        let (media_type, index) = repo.manifest(tag).unwrap();
        assert_eq!(media_type, OCI_INDEX);
        let index = ImageIndex::parse(&index, Some(&media_type)).unwrap();
        let mut manifests = BTreeMap::new();
        for d in &index.manifests {
            let (mt, body) = repo.manifest(d.digest).unwrap();
            manifests.insert(
                d.platform.as_ref().unwrap().architecture.clone(),
                ImageManifest::parse(&body, Some(&mt)).unwrap(),
            );
        }
        assert_eq!(manifests.keys().map(String::as_str).collect::<Vec<_>>(), ["amd64", "arm64"]);
        let layers = shared_layers(&f, &img, &manifests);
        assert_eq!(layers.len(), files.len());
        for (layer, (name, data)) in layers.iter().zip(files) {
            assert_eq!(only_file(&f, &img, layer, name), data, "{repository}: {name}");
        }
    }
    let spin = Repo { host: &f.registry, name: "siderolabs/spin" };
    assert!(spin.manifest(&missing).is_err(), "the registry serves siderolabs/spin@{missing}");
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn fixtures_json_points_at_existing_files() {
    let Some(f) = load("fixtures_json_points_at_existing_files") else { return };
    assert_eq!(f.mirror, format!("ghcr.io={}", f.registry));
    for (arch, a) in &f.arches {
        for p in [&a.kernel_image, &a.kernel_config, &a.vmlinuz, &a.initramfs, &a.rootfs_sqsh, &a.busybox, &a.init] {
            assert!(p.exists(), "{arch}: {} is missing", p.display());
        }
        assert!(a.modules_dir.is_dir());
        assert!(a.kernel_release.ends_with(&format!("-cloud-{arch}")));
        assert_eq!(a.kernel_config_values["CONFIG_RD_ZSTD"], "y");
    }
    let arm = std::fs::read(&f.arches["arm64"].kernel_image).unwrap();
    assert!(kernel::arm64_header(&arm).is_some(), "Debian's arm64 kernel is a raw Image");
}
