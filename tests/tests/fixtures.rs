//! Checks what `scripts/fixtures` pushed to the local registry, through the registry's HTTP API
//! (OCI distribution spec), against `target/fixtures/fixtures.json`.
//!
//! Skipped (with a printed reason) when `fixtures.json` is absent. When it is present the registry
//! must answer: run `scripts/fixtures` again to (re)start it.

use boot_artifact::kernel::{self, KernelFormat};
use boot_artifact::pe::PeFile;
use moonboot_tests::cpio;
use moonboot_tests::extensions::{SPIN, SPIN_CRI_PART, TAILSCALE, TAILSCALE_SERVICE_SPEC};
use moonboot_tests::fixtures::{Fixtures, PushedImage};
use moonboot_tests::oci::{Index, Manifest, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use moonboot_tests::registry::Repo;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::io::Read;

fn load(test: &str) -> Option<Fixtures> {
    moonboot_tests::fixtures::with_registry(test)
}

/// Fetches the index of `img`, checks its digest and platforms; returns manifest digest by arch.
fn check_index(f: &Fixtures, img: &PushedImage) -> BTreeMap<String, Manifest> {
    let repo = Repo { host: &f.registry, name: &img.repository };
    let (media_type, body) = repo.manifest(&img.tag).unwrap();
    assert_eq!(media_type, MEDIA_TYPE_INDEX, "{}:{}", img.repository, img.tag);
    assert_eq!(moonboot_tests::oci::sha256_digest(&body), img.index_digest);
    let index: Index = serde_json::from_slice(&body).unwrap();
    let platforms: BTreeSet<String> = index
        .manifests
        .iter()
        .map(|d| {
            let p = d.platform.as_ref().expect("platform in index");
            format!("{}/{}", p.os, p.architecture)
        })
        .collect();
    assert_eq!(platforms, BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()]));
    let mut out = BTreeMap::new();
    for d in &index.manifests {
        let arch = d.platform.as_ref().unwrap().architecture.clone();
        assert_eq!(d.digest, img.manifests[&arch], "{} {arch} manifest digest", img.repository);
        let (mt, body) = repo.manifest(&d.digest).unwrap();
        assert_eq!(mt, MEDIA_TYPE_MANIFEST);
        out.insert(arch, serde_json::from_slice(&body).unwrap());
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
    let first: Vec<String> = manifests.values().map(|m| m.layers[0].digest.clone()).collect();
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
        let config = repo.blob(&m.config.digest).unwrap();
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
                flat.extend(layer_files(&repo.blob(&l.digest).unwrap()));
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
