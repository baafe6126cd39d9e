//! Inputs of realistic size for `scripts/bench-imager --realistic` (BENCHMARK FIXTURES, never
//! shipped, cached under `target/realistic/`).
//!
//! The stand-in extensions of [`crate::extensions`] carry shell scripts; the real `spin` and
//! `tailscale` arm64 extensions carry tens of MB of programs, so squashfs/zstd work dominates a
//! real build. Here each upstream binary is replaced by a real arm64 ELF program taken from Debian
//! packages (Go and Rust programs such as `dockerd`, `docker`, `ctr`), the one whose size is
//! closest to the upstream binary's ([`TARGETS`]), and the stand-in imager image gets an
//! `initramfs.xz` of the size of a real Talos one: a zstd newc cpio of `init` (the largest program
//! left, standing in for `machined`) and `rootfs.sqsh` (squashfs zstd-18 of the other programs,
//! up to [`ROOTFS_BUDGET`] bytes), built with the fixtures' own `mksquashfs` and `cpio_zstd`.
//!
//! Where the target sizes come from (the figures: docs/benchmarks.md):
//! - `tailscale`, `tailscaled`: the arm64 static release binaries of tailscale 1.56.1, listed in
//!   tailscale/tailscale#10627 (15,992,745 B and 42,710,851 B). siderolabs/extensions
//!   `network/tailscale/pkg.yaml` builds them with a plain `go build` (not stripped), as the
//!   release binaries are.
//! - `containerboot` (same `go build` there) and `containerd-shim-spin-v2` (siderolabs/extensions
//!   `container-runtime/spin/pkg.yaml` unpacks spinkube's `containerd-shim-spin-v2-linux-aarch64`
//!   release tarball): no published size was found; the targets are estimates, marked so.
//! - The base initramfs: siderolabs/talos#6931 lists `initramfs-amd64.xz` at 93,823,684 B
//!   (v1.4, modules with debug info) and 57,702,388 B (stripped modules), and `sbin/init`
//!   (machined) at 92,022,904 B.

use crate::build::{cpio_zstd, extension_image, extract_deb, imager_image, mksquashfs, stamp};
use crate::extensions::{Extension, SPIN, TAILSCALE};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One upstream binary and the size it has there.
pub struct Target {
    /// The extension (`spin`, `tailscale`).
    pub extension: &'static str,
    /// The binary's file name in the extension.
    pub binary: &'static str,
    /// Its size upstream, in bytes.
    pub bytes: u64,
    /// Where that size comes from.
    pub source: &'static str,
}

/// The upstream binaries of the operator's extensions, largest first.
pub const TARGETS: &[Target] = &[
    Target {
        extension: "spin",
        binary: "containerd-shim-spin-v2",
        bytes: 55_000_000,
        source: "estimate (no published size found)",
    },
    Target {
        extension: "tailscale",
        binary: "tailscaled",
        bytes: 42_710_851,
        source: "tailscale/tailscale#10627 (1.56.1 arm64 static)",
    },
    Target {
        extension: "tailscale",
        binary: "containerboot",
        bytes: 16_000_000,
        source: "estimate (no published size found; same build as tailscale)",
    },
    Target {
        extension: "tailscale",
        binary: "tailscale",
        bytes: 15_992_745,
        source: "tailscale/tailscale#10627 (1.56.1 arm64 static)",
    },
];

/// Uncompressed bytes of programs put into the base's `rootfs.sqsh` at most.
pub const ROOTFS_BUDGET: u64 = 270_000_000;
/// Tag suffix of the realistic images (`siderolabs/spin:v0.19.0-realistic`, …).
pub const TAG_SUFFIX: &str = "-realistic";
/// Bump to rebuild every cached output.
const FORMAT: &str = "moonboot-realistic-1";
/// Programs smaller than this are not considered.
const MIN_PROGRAM: u64 = 1 << 20;

/// A real arm64 ELF program found in the packages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Program {
    /// Its size.
    pub bytes: u64,
    /// Its path in the extracted package.
    pub path: PathBuf,
}

/// Whether `head` starts a 64-bit little-endian ELF file for aarch64 (`EM_AARCH64` = 183).
pub fn is_arm64_elf(head: &[u8]) -> bool {
    head.len() >= 20 && &head[..4] == b"\x7fELF" && head[4] == 2 && head[5] == 1 && head[18..20] == [183, 0]
}

/// Every regular file under `roots` that is an arm64 ELF of at least [`MIN_PROGRAM`] bytes,
/// largest first (ties by path).
pub fn programs(roots: &[PathBuf]) -> Result<Vec<Program>> {
    fn walk(p: &Path, out: &mut Vec<Program>) -> Result<()> {
        for e in fs::read_dir(p).with_context(|| format!("reading {}", p.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                walk(&e.path(), out)?;
            } else if t.is_file() {
                let bytes = e.metadata()?.len();
                if bytes < MIN_PROGRAM {
                    continue;
                }
                let mut head = Vec::new();
                fs::File::open(e.path())?.take(20).read_to_end(&mut head)?;
                if is_arm64_elf(&head) {
                    out.push(Program { bytes, path: e.path() });
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for r in roots {
        walk(r, &mut out)?;
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// For each of `targets` in order, the unused program closest in size; then the rest, largest
/// first.
pub fn pick(pool: &[Program], targets: &[u64]) -> Result<(Vec<Program>, Vec<Program>)> {
    let mut used = BTreeSet::new();
    let mut picked = Vec::new();
    for &t in targets {
        let (i, p) = pool
            .iter()
            .enumerate()
            .filter(|(i, _)| !used.contains(i))
            .min_by_key(|(_, p)| p.bytes.abs_diff(t))
            .context("not enough arm64 programs in the packages")?;
        used.insert(i);
        picked.push(p.clone());
    }
    let rest = pool.iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, p)| p.clone()).collect();
    Ok((picked, rest))
}

/// What to build.
pub struct Options {
    /// `target/realistic` (absolute).
    pub out: PathBuf,
    /// The Debian arm64 packages to take programs from.
    pub debs: Vec<PathBuf>,
    /// The fixtures' arm64 `vmlinuz` (EFI zboot).
    pub vmlinuz: PathBuf,
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
}

/// Builds (or reuses) the three image layouts and writes `realistic.json` (what was built, the
/// programs chosen, the sizes) and `push.list` (`layout<TAB>tag<TAB>repository` lines, the format
/// `scripts/fixtures` pushes).
pub fn build(opts: &Options) -> Result<serde_json::Value> {
    fs::create_dir_all(&opts.out)?;
    let exe = std::env::current_exe()?;
    let mut key = vec![FORMAT.to_string(), stamp(&exe)?, stamp(&opts.vmlinuz)?, opts.epoch.to_string()];
    for d in &opts.debs {
        key.push(stamp(d)?);
    }
    let key = key.join("\n");
    let key_file = opts.out.join("inputs.key");
    let desc_file = opts.out.join("realistic.json");
    if fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        if let Ok(b) = fs::read(&desc_file) {
            eprintln!("realistic: inputs unchanged: reusing {}", opts.out.display());
            return Ok(serde_json::from_slice(&b)?);
        }
    }
    let _ = fs::remove_file(&key_file);
    ensure!(!opts.debs.is_empty(), "no packages given");
    let debs_dir = opts.out.join("debs");
    let mut roots = Vec::new();
    for d in &opts.debs {
        roots.push(extract_deb(d, &debs_dir)?);
    }
    let pool = programs(&roots)?;
    let (picked, rest) = pick(&pool, &TARGETS.iter().map(|t| t.bytes).collect::<Vec<_>>())?;
    let rel = |p: &Path| p.strip_prefix(&debs_dir).unwrap_or(p).display().to_string();

    // The extensions.
    let mut images = serde_json::Map::new();
    let mut chosen = Vec::new();
    for ext in [&SPIN, &TAILSCALE] {
        let tag = format!("{}{TAG_SUFFIX}", ext.version);
        let mut binary = |name: &str| -> Result<Vec<u8>> {
            let i = TARGETS
                .iter()
                .position(|t| t.extension == ext.name && t.binary == name)
                .with_context(|| format!("no target size for {}/{name}", ext.name))?;
            Ok(fs::read(&picked[i].path)?)
        };
        let layer = ext.layer_with("arm64", opts.epoch, " with real arm64 programs of realistic size", &mut binary)?;
        let img = extension_image(ext, &opts.out.join("oci").join(ext.name), &tag, &[("arm64", layer)], opts.epoch)?;
        images.insert(ext.name.to_string(), image_json(&img, ext));
        eprintln!("realistic: {} {tag}: layer written", ext.name);
    }
    for (t, p) in TARGETS.iter().zip(&picked) {
        chosen.push(json!({
            "extension": t.extension, "binary": t.binary, "target_bytes": t.bytes, "target_source": t.source,
            "program": rel(&p.path), "bytes": p.bytes,
        }));
    }

    // The base initramfs: init + rootfs.sqsh.
    let work = opts.out.join("base");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let (stage, rootfs) = (work.join("stage"), work.join("rootfs"));
    fs::create_dir_all(rootfs.join("usr/bin"))?;
    fs::create_dir_all(&stage)?;
    let Some((init, others)) = rest.split_first() else { bail!("no program left for the base initramfs") };
    fs::copy(&init.path, stage.join("init"))?;
    let mut in_rootfs = Vec::new();
    let mut total = 0;
    for p in others {
        let name = p.path.file_name().context("program without a name")?;
        if total + p.bytes > ROOTFS_BUDGET || rootfs.join("usr/bin").join(name).exists() {
            continue;
        }
        fs::copy(&p.path, rootfs.join("usr/bin").join(name))?;
        total += p.bytes;
        in_rootfs.push(json!({"program": rel(&p.path), "bytes": p.bytes}));
    }
    eprintln!("realistic: mksquashfs of {total} B of programs (zstd -18): a minute or more");
    mksquashfs(&rootfs, &stage.join("rootfs.sqsh"), opts.epoch)?;
    let initramfs = work.join("initramfs.xz");
    cpio_zstd(&stage, &work.join("initramfs.cpio"), &initramfs, opts.epoch)?;
    let _ = fs::remove_file(work.join("initramfs.cpio"));
    fs::remove_dir_all(&rootfs)?;
    let imager_tag = format!("{}{TAG_SUFFIX}", crate::build::TALOS_VERSION);
    let imager = imager_image(
        &opts.out.join("oci/imager"),
        &imager_tag,
        &[("arm64", opts.vmlinuz.as_path(), initramfs.as_path())],
        opts.epoch,
    )?;
    images.insert(
        "imager".into(),
        json!({"repository": imager.repository, "tag": imager.tag,
        "layout": imager.layout, "index_digest": imager.index_digest}),
    );

    let desc = json!({
        "note": "BENCHMARK FIXTURES built by moonboot's tests/src/realistic.rs from Debian arm64 packages: stand-ins, not Talos",
        "images": images,
        "binaries": chosen,
        "base": {
            "init": {"program": rel(&init.path), "bytes": init.bytes},
            "rootfs_programs": in_rootfs,
            "rootfs_programs_bytes": total,
            "rootfs_sqsh_bytes": fs::metadata(stage.join("rootfs.sqsh"))?.len(),
            "initramfs_bytes": fs::metadata(&initramfs)?.len(),
            "initramfs": initramfs,
        },
    });
    let mut push = String::new();
    for img in desc["images"].as_object().expect("object").values() {
        push.push_str(&format!(
            "{}\t{}\t{}\n",
            img["layout"].as_str().unwrap_or_default(),
            img["tag"].as_str().unwrap_or_default(),
            img["repository"].as_str().unwrap_or_default()
        ));
    }
    fs::write(opts.out.join("push.list"), push)?;
    fs::write(&desc_file, serde_json::to_vec_pretty(&desc)?)?;
    fs::write(&key_file, key)?;
    Ok(desc)
}

fn image_json(img: &crate::fixtures::PushedImage, ext: &Extension) -> serde_json::Value {
    json!({"repository": img.repository, "tag": img.tag, "layout": img.layout,
           "index_digest": img.index_digest, "name": ext.name})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(bytes: u64, name: &str) -> Program {
        Program { bytes, path: PathBuf::from(name) }
    }

    #[test]
    fn arm64_elf_header() {
        let mut h = vec![0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 183;
        assert!(is_arm64_elf(&h));
        h[18] = 62; // x86-64
        assert!(!is_arm64_elf(&h));
        assert!(!is_arm64_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn picks_closest_unused_then_rest_largest_first() {
        let pool = vec![prog(50, "a"), prog(44, "b"), prog(17, "c"), prog(16, "d"), prog(8, "e")];
        let (picked, rest) = pick(&pool, &[55, 43, 16, 16]).unwrap();
        let names: Vec<_> = picked.iter().map(|p| p.path.to_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "d", "c"]);
        assert_eq!(rest, vec![prog(8, "e")]);
        assert!(pick(&pool, &[1; 6]).is_err());
    }
}
