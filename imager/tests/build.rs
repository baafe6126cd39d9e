//! `imager build` against the fixture registry (stand-ins of Talos v1.10.5, spin and tailscale
//! served by `scripts/fixtures` on 127.0.0.1), checked with standard tools: `zstd -d`,
//! `cpio -i`, `unsquashfs`, `sha256sum -c`.
//!
//! Official extensions resolve through the stand-in `siderolabs/extensions:v1.10.5` bundle. The
//! talos-agent extension is built here from `$MOONBOOT_AGENT_BINARY` when set, else with
//! `--agent-from-source` (cross-compiled, cached in target/cross).
//!
//! Skipped with a reason when the fixtures are absent (a failure under
//! MOONBOOT_REQUIRE_FIXTURES=1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::Platform;
use moonboot_imager::extension::tree::{Entry, Kind, Tree};
use moonboot_tests::fixtures::{fixtures_dir, unique_repository, with_registry, Fixtures};

const IMAGER: &str = env!("CARGO_BIN_EXE_imager");

/// A scratch directory under target/fixtures/tmp, fresh.
fn scratch(name: &str) -> PathBuf {
    let d = fixtures_dir().join("tmp").join(format!("imager-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn imager(f: &Fixtures, args: &[&str]) -> Output {
    let mut c = Command::new(IMAGER);
    c.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("MOONBOOT_BOARD_INPUTS")
        .args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .args(args);
    match std::env::var_os("MOONBOOT_AGENT_BINARY") {
        Some(bin) => c.arg("--agent-binary").arg(bin),
        None => c.arg("--agent-from-source"),
    };
    c.output().unwrap()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Every entry under `dir` as (relative path → Entry), from the real file system.
fn read_dir_tree(dir: &Path) -> BTreeMap<String, Entry> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Entry>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let kind = if m.file_type().is_symlink() {
                Kind::Symlink(std::fs::read_link(&p).unwrap().to_string_lossy().into_owned())
            } else if m.is_dir() {
                walk(root, &p, out);
                Kind::Dir
            } else {
                Kind::File(std::fs::read(&p).unwrap())
            };
            out.insert(rel, Entry { mode, kind, selinux_label: None });
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The rootfs of a flattened extension image as (path under rootfs/ → Entry).
fn rootfs_of(tree: &Tree) -> BTreeMap<String, Entry> {
    tree.entries().filter_map(|(p, e)| p.strip_prefix("rootfs/").map(|r| (r.to_string(), e.clone()))).collect()
}

fn fixture_extension(f: &Fixtures, name: &str) -> Tree {
    let img = &f.images[name];
    let mut t = Tree::new();
    for blob in moonboot_tests::oci::layout_layers(&img.layout, &img.tag, "arm64").unwrap() {
        t.apply_layer(flate2::read::GzDecoder::new(&blob[..]), 1 << 30).unwrap();
    }
    t
}

#[derive(serde::Deserialize, Debug)]
struct ExtensionsYaml {
    layers: Vec<Layer>,
}
#[derive(serde::Deserialize, Debug)]
struct Layer {
    image: String,
    metadata: moonboot_imager::extension::Metadata,
}

#[test]
fn default_build_holds_base_and_three_extensions_and_is_reproducible() {
    let test = "default_build_holds_base_and_three_extensions_and_is_reproducible";
    let Some(f) = with_registry(test) else { return };
    let work = scratch("default");
    let out1 = work.join("out1");
    let out2 = work.join("nested/out2");
    // With --boot-repository the build also renders the EC2 user-data.
    let user_data = [
        "--boot-repository",
        "ghcr.io/moonboot/boot",
        "--instance-registry-mirror",
        "ghcr.io=10.20.13.140:5000",
        "--instance-insecure-registry",
        "10.20.13.140:5000",
    ];
    for out in [&out1, &out2] {
        let mut args = vec!["--output", out.to_str().unwrap()];
        args.extend(user_data);
        let o = imager(&f, &args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "imager build failed: {stderr}");
        // The CM3 disk image is in the default set only when its pinned inputs are given
        // (tests/tests/rpi_cm3_boot.rs builds it that way); without them, one note says so.
        assert!(stderr.lines().any(|l| l.starts_with("imager: note: no rpi-cm3-arm64.raw.xz")), "{stderr}");
        assert!(!out.join("rpi-cm3-arm64.raw.xz").exists());
    }
    // Reproducible: identical SHA256SUMS, and the sums hold.
    let sums1 = std::fs::read_to_string(out1.join("SHA256SUMS")).unwrap();
    assert_eq!(sums1, std::fs::read_to_string(out2.join("SHA256SUMS")).unwrap());
    run(Command::new("sha256sum").arg("--quiet").arg("-c").arg("SHA256SUMS").current_dir(&out1));
    for name in [
        "kernel-arm64",
        "initramfs-metal-arm64.xz",
        "cmdline-metal-arm64",
        "cmdline-aws-arm64",
        "build.json",
        "boot-arm64/index.json",
        "talos-agent-arm64",
        "cloud-init/user-data-ec2-arm64.yaml",
    ] {
        assert!(sums1.contains(&format!("  {name}\n")), "SHA256SUMS lacks {name}:\n{sums1}");
    }
    // No temporary directory is left next to the outputs.
    assert!(!std::fs::read_dir(&work).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".imager")));

    let a = &f.arches["arm64"];
    // kernel-arm64 is vmlinuz as shipped.
    assert_eq!(std::fs::read(out1.join("kernel-arm64")).unwrap(), std::fs::read(&a.vmlinuz).unwrap());
    let metal = std::fs::read_to_string(out1.join("cmdline-metal-arm64")).unwrap();
    assert!(metal.starts_with("talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1"), "{metal}");
    let aws = std::fs::read_to_string(out1.join("cmdline-aws-arm64")).unwrap();
    assert!(aws.starts_with("talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0"), "{aws}");

    // The base initramfs bytes come first, untouched; a zstd stream follows.
    let initramfs = std::fs::read(out1.join("initramfs-metal-arm64.xz")).unwrap();
    let base = std::fs::read(&a.initramfs).unwrap();
    assert!(initramfs.len() > base.len() && initramfs[..base.len()] == base[..], "base bytes changed");
    let tail = &initramfs[base.len()..];
    assert_eq!(&tail[..4], &[0x28, 0xb5, 0x2f, 0xfd], "appended part is not zstd");

    // `zstd -d` of the whole file, `cpio -i` of the first archive: the base init and rootfs.sqsh.
    let x = work.join("x");
    let basex = x.join("base");
    std::fs::create_dir_all(&basex).unwrap();
    let all = work.join("all.cpio");
    run(Command::new("zstd").args(["-d", "-q", "-f", "-o"]).arg(&all).arg(out1.join("initramfs-metal-arm64.xz")));
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -i --quiet --no-absolute-filenames < {}", all.display()))
        .current_dir(&basex));
    assert_eq!(std::fs::read(basex.join("rootfs.sqsh")).unwrap(), std::fs::read(&a.rootfs_sqsh).unwrap());
    assert_eq!(std::fs::read(basex.join("init")).unwrap(), std::fs::read(&a.init).unwrap());

    // The appended archive: N.sqsh + extensions.yaml, nothing else.
    let extx = x.join("ext");
    std::fs::create_dir_all(&extx).unwrap();
    let tailf = work.join("tail.zst");
    std::fs::write(&tailf, tail).unwrap();
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {} | cpio -i --quiet --no-absolute-filenames", tailf.display()))
        .current_dir(&extx));
    let mut names: Vec<String> =
        std::fs::read_dir(&extx).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["0.sqsh", "1.sqsh", "2.sqsh", "extensions.yaml"]);

    let yaml: ExtensionsYaml =
        serde_saphyr::from_str(&std::fs::read_to_string(extx.join("extensions.yaml")).unwrap()).unwrap();
    let listed: Vec<(&str, &str)> = yaml.layers.iter().map(|l| (l.image.as_str(), l.metadata.name.as_str())).collect();
    assert_eq!(listed, [("0.sqsh", "spin"), ("1.sqsh", "tailscale"), ("2.sqsh", "talos-agent")]);

    for (i, name) in ["spin", "tailscale", "talos-agent"].iter().enumerate() {
        let sqsh = extx.join(format!("{i}.sqsh"));
        let info = String::from_utf8(run(Command::new("unsquashfs").arg("-s").arg(&sqsh))).unwrap();
        assert!(info.contains("Compression zstd"), "{name}: {info}");
        assert!(info.contains("Block size 131072"), "{name}: {info}");
        let dest = x.join(format!("sq{i}"));
        run(Command::new("unsquashfs").args(["-q", "-n", "-d"]).arg(&dest).arg(&sqsh));
        let got = read_dir_tree(&dest);
        let want = if *name == "talos-agent" {
            let mut t = BTreeMap::new();
            let spec = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../extensions/talos-agent/talos-agent.yaml"),
            )
            .unwrap();
            t.insert("usr/local/etc/containers/talos-agent.yaml".to_string(), spec.into_bytes());
            t
        } else {
            let tree = fixture_extension(&f, name);
            let manifest = match tree.get("manifest.yaml").unwrap().kind.clone() {
                Kind::File(d) => String::from_utf8(d).unwrap(),
                _ => unreachable!(),
            };
            let m = moonboot_imager::extension::Manifest::parse(&manifest).unwrap();
            assert_eq!(yaml.layers[i].metadata, m.metadata, "{name}: extensions.yaml metadata is the manifest's");
            let rootfs = rootfs_of(&tree);
            let got_shape: BTreeMap<&String, (u32, &Kind)> = got.iter().map(|(k, e)| (k, (e.mode, &e.kind))).collect();
            let want_shape: BTreeMap<&String, (u32, &Kind)> =
                rootfs.iter().map(|(k, e)| (k, (e.mode, &e.kind))).collect();
            assert_eq!(got_shape, want_shape, "{i}.sqsh is not exactly {name}'s rootfs");
            BTreeMap::new()
        };
        for (p, data) in want {
            assert_eq!(got.get(&p).map(|e| &e.kind), Some(&Kind::File(data)), "{name}: {p}");
        }
        if *name == "talos-agent" {
            let bin = match &got["usr/local/lib/containers/talos-agent/usr/local/bin/talos-agent"].kind {
                Kind::File(d) => d.clone(),
                other => panic!("talos-agent binary is {other:?}"),
            };
            // The same binary is in the output, executable, for publish --agent-to and the user-data.
            let out_bin = out1.join("talos-agent-arm64");
            assert!(std::fs::read(&out_bin).unwrap() == bin, "talos-agent-arm64 is not the packed binary");
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&out_bin).unwrap().permissions().mode() & 0o777, 0o755);
            assert_eq!(&bin[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), 183, "talos-agent is not an aarch64 binary");
            let files: Vec<&String> =
                got.iter().filter(|(_, e)| !matches!(e.kind, Kind::Dir)).map(|(k, _)| k).collect();
            assert_eq!(files.len(), 2, "talos-agent squashfs holds exactly the binary and the spec: {files:?}");
        }
    }

    // The boot artifact, format 2: an OCI 1.1 artifact whose three blobs are the files
    // themselves, typed and titled; the kernel is the unpacked Image.
    let layout = out1.join("boot-arm64");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(mdigest)).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["artifactType"], "application/vnd.moonboot.boot.v2");
    let ann = &manifest["annotations"];
    assert_eq!(ann["dev.moonboot.talos.version"], "v1.10.5");
    assert_eq!(ann["dev.moonboot.boot.format"], "2");
    assert_eq!(
        ann["org.opencontainers.image.created"], "2025-07-01T00:00:00Z",
        "fixed: SOURCE_DATE_EPOCH or its default"
    );
    let sid = ann["dev.moonboot.talos.schematic"].as_str().unwrap();
    let schematic = "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/spin\n            - siderolabs/tailscale\n";
    assert_eq!(sid, Sha256Digest::of(schematic.as_bytes()).hex());
    let exts: serde_json::Value = serde_json::from_str(ann["dev.moonboot.talos.extensions"].as_str().unwrap()).unwrap();
    assert_eq!(exts[0]["name"], "spin");
    assert_eq!(exts[0]["digest"], f.images["spin"].index_digest.as_str());
    assert_eq!(exts[2]["name"], "talos-agent");
    // The empty descriptor (image-spec v1.1 manifest.md), its `{}` blob really in the layout.
    assert_eq!(
        manifest["config"],
        serde_json::json!({"mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2})
    );
    assert_eq!(blob(manifest["config"]["digest"].as_str().unwrap()), b"{}");
    let mut by_title = BTreeMap::new();
    for l in manifest["layers"].as_array().unwrap() {
        let data = blob(l["digest"].as_str().unwrap());
        assert_eq!(l["size"], data.len(), "the blob is the file");
        let title = l["annotations"]["org.opencontainers.image.title"].as_str().unwrap().to_string();
        by_title.insert(title, (l["mediaType"].as_str().unwrap().to_string(), data));
    }
    assert_eq!(by_title.keys().collect::<Vec<_>>(), ["cmdline", "initramfs", "kernel"]);
    assert_eq!(by_title["kernel"].0, "application/vnd.moonboot.linux.kernel.v1");
    assert_eq!(by_title["initramfs"].0, "application/vnd.moonboot.linux.initramfs.v1");
    assert_eq!(by_title["cmdline"].0, "application/vnd.moonboot.linux.cmdline.v1");
    assert_eq!(by_title["kernel"].1, std::fs::read(&a.kernel_image).unwrap(), "kernel blob is not the unpacked Image");
    assert_eq!(by_title["initramfs"].1, initramfs);
    assert_eq!(by_title["cmdline"].1, metal.as_bytes());

    // build.json names the inputs by digest.
    let build: serde_json::Value = serde_json::from_slice(&std::fs::read(out1.join("build.json")).unwrap()).unwrap();
    assert_eq!(build["inputs"]["base"]["index_digest"], f.images["imager"].index_digest.as_str());
    assert_eq!(build["inputs"]["base"]["manifest_digest"], f.images["imager"].manifests["arm64"].as_str());
    assert_eq!(build["inputs"]["extensions"][1]["image"]["index_digest"], f.images["tailscale"].index_digest.as_str());
    assert!(build["outputs"]["initramfs-metal-arm64.xz"].as_str().unwrap().starts_with("sha256:"));

    // The EC2 user-data boots this very build: the manifest digest build.json records, the
    // talos-agent binary next to it by digest, through the instance's mirror.
    let boot_digest = build["outputs"]["boot-arm64@manifest"].as_str().unwrap();
    assert_eq!(boot_digest, mdigest);
    let agent = Sha256Digest::of(&std::fs::read(out1.join("talos-agent-arm64")).unwrap());
    let yaml = std::fs::read_to_string(out1.join("cloud-init/user-data-ec2-arm64.yaml")).unwrap();
    assert!(yaml.starts_with("#cloud-config\n"), "{yaml}");
    assert!(yaml.contains(&format!("boot_ref='ghcr.io/moonboot/boot@{boot_digest}'\n")), "{yaml}");
    assert!(yaml.contains(&format!("agent_sha256='{}'\n", agent.hex())), "{yaml}");
    assert!(
        yaml.contains(&format!(
            "set -- 'http://10.20.13.140:5000/v2/moonboot/boot-agent/blobs/{agent}' 'https://ghcr.io/"
        )),
        "{yaml}"
    );
    assert_eq!(
        build["outputs"]["cloud-init/user-data-ec2-arm64.yaml"],
        Sha256Digest::of(yaml.as_bytes()).to_string().as_str()
    );
    // `imager cloud-init` renders the same bytes from the output.
    let o = Command::new(IMAGER)
        .args(["cloud-init", "--from", out1.to_str().unwrap(), "--output", "-"])
        .args(user_data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == yaml.as_bytes(), "imager cloud-init renders another user-data than imager build");

    // SOURCE_DATE_EPOCH changes the times, hence the bytes.
    let out3 = work.join("out3");
    let mut c = Command::new(IMAGER);
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .arg("--output")
        .arg(&out3);
    match std::env::var_os("MOONBOOT_AGENT_BINARY") {
        Some(bin) => c.arg("--agent-binary").arg(bin),
        None => c.arg("--agent-from-source"),
    };
    run(&mut c);
    assert_ne!(std::fs::read(out3.join("initramfs-metal-arm64.xz")).unwrap(), initramfs);
    let _ = std::fs::remove_dir_all(&work);
}

/// One malformed extension image: a raw tar layer (so hostile names survive), pushed to the
/// fixture registry as `moonboot-test/<name>-<pid>-<n>:v1` (a repository of this test alone).
/// Returns the reference and the repository.
fn push_bad(f: &Fixtures, work: &Path, name: &str, entries: &[(&str, tar::EntryType, u32, &str)]) -> (String, String) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, ty, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*ty);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match ty {
            tar::EntryType::Symlink => {
                h.set_link_name(data).unwrap();
                h.set_size(0);
            }
            tar::EntryType::Regular => h.set_size(data.len() as u64),
            _ => h.set_size(0),
        }
        let raw = path.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_cksum();
        let body: &[u8] = if *ty == tar::EntryType::Regular { data.as_bytes() } else { &[] };
        b.append(&h, body).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let blob = gz.finish().unwrap();
    let layer = moonboot_tests::oci::Layer {
        digest: Sha256Digest::of(&blob),
        diff_id: Sha256Digest::of(&tar),
        blob,
        comment: format!("malformed extension {name} (TEST)"),
    };
    let dir = work.join(format!("layout-{name}"));
    let layout = moonboot_tests::oci::Layout::create(&dir).unwrap();
    let desc = layout.put_image(&Platform::linux("arm64"), &[&layer], 0, &BTreeMap::new(), &BTreeMap::new()).unwrap();
    layout.finish_index(vec![desc], &BTreeMap::new(), "v1").unwrap();
    let repository = unique_repository(&format!("moonboot-test/{name}"));
    let reference = format!("{}/{repository}:v1", f.registry);
    run(Command::new("skopeo")
        .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", dir.display()))
        .arg(format!("docker://{reference}")));
    (reference, repository)
}

fn manifest(name: &str, constraint: &str) -> String {
    format!(
        "version: v1alpha1\nmetadata:\n  name: {name}\n  version: v1.0.0\n  author: test\n  description: malformed on purpose\n  compatibility:\n    talos:\n      version: \"{constraint}\"\n"
    )
}

/// (name, extra layer entries (path, type, mode, content), expected message part).
type Case = (&'static str, Vec<(&'static str, tar::EntryType, u32, String)>, &'static str);

#[test]
fn malformed_extensions_fail_with_a_clear_message_and_no_output() {
    let test = "malformed_extensions_fail_with_a_clear_message_and_no_output";
    let Some(f) = with_registry(test) else { return };
    let work = scratch("malformed");
    use tar::EntryType::{Directory as D, Regular as F, Symlink as S};
    let ok_bin = ("rootfs/usr/local/bin/tool", F, 0o755, "#!/bin/sh\n");
    let cases: Vec<Case> = vec![
        (
            "extra-top-level",
            vec![("extra.txt", F, 0o644, "x".into())],
            "unexpected file \"extra.txt\" at the top of the extension",
        ),
        (
            "bad-semver",
            vec![],
            "metadata.compatibility.talos.version: error parsing Talos version constraint \">= banana\"",
        ),
        ("incompatible", vec![], "version constraint >= v1.12.0 can't be satisfied with Talos version 1.10.5"),
        (
            "dotdot",
            vec![("rootfs/../../etc/passwd", F, 0o644, "root::0:0\n".into())],
            "refusing entry \"rootfs/../../etc/passwd\": a `..` component escapes the layer",
        ),
        (
            "symlink-escape",
            vec![("rootfs/usr/local/evil", S, 0o777, "../../../../etc/shadow".into())],
            "symlink \"/usr/local/evil\" -> \"../../../../etc/shadow\" points outside the extension rootfs",
        ),
        (
            "world-writable",
            vec![("rootfs/usr/local/bin/open", F, 0o666, "x".into())],
            "world-writeable files are not allowed: \"/usr/local/bin/open\"",
        ),
    ];
    for (name, extra, want) in cases {
        let constraint = match name {
            "bad-semver" => ">= banana",
            "incompatible" => ">= v1.12.0",
            _ => ">= v1.0.0",
        };
        let m = manifest(name, constraint);
        let mut entries: Vec<(&str, tar::EntryType, u32, &str)> = vec![
            ("manifest.yaml", F, 0o644, m.as_str()),
            ("rootfs/", D, 0o755, ""),
            (ok_bin.0, ok_bin.1, ok_bin.2, ok_bin.3),
        ];
        for (p, t, mode, d) in &extra {
            entries.push((p, *t, *mode, d.as_str()));
        }
        let (reference, repository) = push_bad(&f, &work, name, &entries);
        let out = work.join(format!("out-{name}"));
        let o = imager(
            &f,
            &["--no-talos-agent", "--system-extension-image", &reference, "--output", out.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("imager: extension "), "{name}: {last}");
        assert!(last.contains(&repository), "{name}: message does not name the extension {repository}: {last}");
        assert!(last.contains(want), "{name}: {last:?} lacks {want:?}");
        assert!(!out.exists(), "{name}: output written despite the failure");
    }
    assert!(!std::fs::read_dir(&work).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".imager")));
    let _ = std::fs::remove_dir_all(&work);
}
