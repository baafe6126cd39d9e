//! Pinned inputs (`boards/<set>.inputs`, compiled in): which file, from which Debian package
//! version, with which sha256 — for the board image (`rpi-cm3`) and for netboot's iPXE binaries
//! (`ipxe`). An installed imager finds them in a directory (`--board-inputs DIR` filled by
//! `scripts/rpi-inputs`, `--ipxe-dir DIR` by `scripts/ipxe-inputs`), or in the OCI artifact that
//! `imager publish --board-inputs DIR` / `--ipxe-inputs DIR` pushes ([`ARTIFACT_TYPE`], tagged
//! [`tag`] in [`DEFAULT_REPOSITORY`] unless told otherwise), pulled through the registry mirrors
//! like every other input. From the artifact each file must have its compiled-in sha256: it is
//! found by tag but every byte of it is pulled and checked by digest.

use std::collections::BTreeMap;
use std::path::Path;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::{Descriptor, ImageManifest};

/// The `artifactType` of published pinned inputs: an image index with one OCI image manifest per
/// architecture (`rpi-cm3`: arm64 only; `ipxe`: `ipxe-<arch>.efi` under its architecture), each
/// with the empty config and one layer per pinned file, the file as is
/// (`application/octet-stream`), titled by its file name (`org.opencontainers.image.title`) — the
/// layout `oras push` writes for files.
pub const ARTIFACT_TYPE: &str = "application/vnd.moonboot.board-inputs.v1";

/// Where `imager publish --board-inputs` pushes and `imager build --board` pulls from by default
/// (through `--registry-mirror`s, as every other input).
pub const DEFAULT_REPOSITORY: &str = "ghcr.io/moonboot/board-inputs";

/// The largest pinned file the imager reads (bytes); the largest, the CM3's `start.elf`, is under
/// 3 MiB.
pub const MAX_FILE: u64 = 16 << 20;

/// The pin set of netboot's iPXE binaries (`boards/ipxe.inputs`).
pub const IPXE: &str = "ipxe";

/// The file of the iPXE pin set for `arch` (Debian's name): `ipxe-arm64.efi`, `ipxe-amd64.efi`.
pub fn ipxe_file(arch: &str) -> String {
    format!("ipxe-{arch}.efi")
}

/// The architecture a pinned file is published under: `ipxe-<arch>.efi` under `<arch>`, every
/// other file (the CM3's) under `arm64`.
pub fn arch_of(pin: &Pin) -> &str {
    pin.file.strip_prefix("ipxe-").and_then(|f| f.strip_suffix(".efi")).unwrap_or("arm64")
}

/// The tag of one pin set: `<set>-<the first 12 hex digits of the sha256 of its
/// "FILE SHA256" lines, sorted>`. A changed pin gives a new tag, so an imager always finds the
/// artifact of its own pins, however many sets are published.
pub fn tag(set: &str, pins: &[Pin]) -> String {
    let mut lines: Vec<String> = pins.iter().map(|p| format!("{} {}\n", p.file, p.sha256.hex())).collect();
    lines.sort();
    format!("{set}-{}", &Sha256Digest::of(lines.concat().as_bytes()).hex()[..12])
}

/// Where one pin set is published: `repo` (`REGISTRY/REPO`, as `--board-inputs-repository`
/// gives it) tagged [`tag`].
///
/// # Errors
/// `repo` is not a repository, or carries a tag or digest of its own.
pub fn reference(repo: &str, set: &str, pins: &[Pin]) -> anyhow::Result<boot_artifact::reference::Reference> {
    use anyhow::Context;
    let tag = tag(set, pins);
    let r: boot_artifact::reference::Reference =
        format!("{repo}:{tag}").parse().with_context(|| format!("--board-inputs-repository {repo}"))?;
    anyhow::ensure!(
        r.tag.as_deref() == Some(tag.as_str()) && r.digest.is_none(),
        "--board-inputs-repository {repo}: give a repository, without tag or digest"
    );
    Ok(r)
}

/// The layer of `manifest` that holds each pinned file: the one with its digest.
///
/// # Errors
/// One line naming the first pinned file the manifest lacks, or a layer over [`MAX_FILE`].
pub fn layers_for(pins: &[Pin], manifest: &ImageManifest) -> Result<Vec<(String, Descriptor)>, String> {
    pins.iter()
        .map(|p| {
            let layer = manifest.layers.iter().find(|l| l.digest == p.sha256).ok_or_else(|| {
                format!(
                    "has no layer {} for {} ({} {}): not this imager's pins",
                    p.sha256, p.file, p.package, p.version
                )
            })?;
            if layer.size > MAX_FILE {
                return Err(format!("layer {} for {} is {} bytes, over {MAX_FILE}", p.sha256, p.file, layer.size));
            }
            Ok((p.file.clone(), layer.clone()))
        })
        .collect()
}

/// One pinned input: a line of `boards/<board>.inputs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pin {
    /// File name in the `--board-inputs` directory (and on the FAT boot partition, where
    /// [`super::Layout`] puts it).
    pub file: String,
    /// Debian package and architecture, `name:arch`.
    pub package: String,
    /// The package's exact version.
    pub version: String,
    /// The file's path inside the package.
    pub path: String,
    /// Its sha256.
    pub sha256: Sha256Digest,
}

/// Parses an inputs file: `#` comments, then one pin a line in five whitespace-separated columns
/// (file, package:arch, version, path, sha256 as 64 hex digits).
///
/// # Errors
/// A line with another number of columns, a package without `:arch`, a bad digest, or a file
/// named twice, each naming the line.
pub fn parse(text: &str) -> Result<Vec<Pin>, String> {
    let mut pins: Vec<Pin> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("line {}", i + 1);
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [file, package, version, path, sha] = cols[..] else {
            return Err(format!(
                "{}: {} columns, expected 5 (file package:arch version path sha256)",
                at(),
                cols.len()
            ));
        };
        if !package.contains(':') {
            return Err(format!("{}: package {package:?} has no :arch", at()));
        }
        let sha256 = Sha256Digest::from_hex(sha).map_err(|e| format!("{}: sha256 of {file}: {e}", at()))?;
        if pins.iter().any(|p| p.file == file) {
            return Err(format!("{}: {file} is pinned twice", at()));
        }
        pins.push(Pin {
            file: file.into(),
            package: package.into(),
            version: version.into(),
            path: path.into(),
            sha256,
        });
    }
    Ok(pins)
}

/// The script that fetches a pinned file from Debian: `scripts/ipxe-inputs` for the iPXE set,
/// `scripts/rpi-inputs` for the CM3's.
pub fn fetcher(pin: &Pin) -> &'static str {
    if pin.file.starts_with("ipxe-") {
        "scripts/ipxe-inputs"
    } else {
        "scripts/rpi-inputs"
    }
}

/// Reads every pinned file from `dir` and checks its digest.
///
/// # Errors
/// One line naming the first file that is missing or unreadable, or whose digest differs, with
/// the package it should come from and how to get it ([`fetcher`]).
pub fn load(pins: &[Pin], dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for p in pins {
        let path = dir.join(&p.file);
        let from = format!("{} {} /{}", p.package, p.version, p.path);
        let data = std::fs::read(&path)
            .map_err(|e| format!("pinned input {} ({from}): {e}; {} fetches it", path.display(), fetcher(p)))?;
        let got = Sha256Digest::of(&data);
        if got != p.sha256 {
            return Err(format!(
                "pinned input {} is {got}, pinned {} ({from}): refusing an unpinned file",
                path.display(),
                p.sha256
            ));
        }
        out.insert(p.file.clone(), data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_pins_parse() {
        let pins = parse(super::super::RPI_CM3_INPUTS).unwrap();
        let files: Vec<&str> = pins.iter().map(|p| p.file.as_str()).collect();
        for f in ["bootcode.bin", "start.elf", "fixup.dat", "u-boot.bin", "bcm2837-rpi-cm3-io3.dtb", "BOOTAA64.EFI"] {
            assert!(files.contains(&f), "{f} not pinned: {files:?}");
        }
    }

    #[test]
    fn the_tag_follows_the_pins_and_the_layers_are_found_by_digest() {
        let pins = parse(super::super::RPI_CM3_INPUTS).unwrap();
        let t = tag("rpi-cm3", &pins);
        assert!(t.starts_with("rpi-cm3-") && t.len() == "rpi-cm3-".len() + 12, "{t}");
        let mut reversed = pins.clone();
        reversed.reverse();
        assert_eq!(tag("rpi-cm3", &reversed), t, "the order of the lines does not matter");
        let mut changed = pins.clone();
        changed[0].sha256 = Sha256Digest::of(b"another bootcode.bin");
        assert_ne!(tag("rpi-cm3", &changed), t, "a changed pin is a new tag");

        let config = Descriptor::of(boot_artifact::oci::media_type::OCI_EMPTY, b"{}");
        let layers: Vec<Descriptor> = pins
            .iter()
            .map(|p| Descriptor { digest: p.sha256, ..Descriptor::of("application/octet-stream", b"") })
            .collect();
        let m = ImageManifest::new(config.clone(), layers.clone(), Default::default());
        let found = layers_for(&pins, &m).unwrap();
        assert_eq!(found.len(), pins.len());
        assert_eq!(found[0].0, pins[0].file);
        let short = ImageManifest::new(config, layers[1..].to_vec(), Default::default());
        let e = layers_for(&pins, &short).unwrap_err();
        assert!(e.contains(&pins[0].file) && e.contains("not this imager's pins"), "{e}");
    }

    #[test]
    fn the_ipxe_pins_name_both_architectures_under_their_own() {
        let pins = parse(super::super::IPXE_INPUTS).unwrap();
        let by_arch: Vec<(&str, &str)> = pins.iter().map(|p| (arch_of(p), p.file.as_str())).collect();
        assert_eq!(by_arch, [("arm64", "ipxe-arm64.efi"), ("amd64", "ipxe-amd64.efi")]);
        assert!(pins.iter().all(|p| p.package == "ipxe:all" && p.path == format!("usr/lib/ipxe/{}", p.file)));
        assert!(tag(IPXE, &pins).starts_with("ipxe-"));
        assert_eq!(fetcher(&pins[0]), "scripts/ipxe-inputs");
        let cm3 = parse(super::super::RPI_CM3_INPUTS).unwrap();
        assert!(cm3.iter().all(|p| arch_of(p) == "arm64" && fetcher(p) == "scripts/rpi-inputs"));
    }

    #[test]
    fn bad_lines_name_themselves() {
        let e = parse("# c\na b c\n").unwrap_err();
        assert!(e.starts_with("line 2: 3 columns"), "{e}");
        let e = parse("f pkg 1 p/f 00\n").unwrap_err();
        assert!(e.contains("no :arch"), "{e}");
        let e = parse(&format!("f p:all 1 p/f {}\n", "zz".repeat(32))).unwrap_err();
        assert!(e.starts_with("line 1: sha256 of f"), "{e}");
    }

    #[test]
    fn a_changed_or_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        let good = Sha256Digest::of(b"abc").hex();
        let pins = parse(&format!("f p:all 1 p/f {good}\n")).unwrap();
        assert_eq!(load(&pins, dir.path()).unwrap()["f"], b"abc");
        std::fs::write(dir.path().join("f"), b"abd").unwrap();
        assert!(load(&pins, dir.path()).unwrap_err().contains("refusing an unpinned file"));
        std::fs::remove_file(dir.path().join("f")).unwrap();
        assert!(load(&pins, dir.path()).unwrap_err().contains("scripts/rpi-inputs fetches it"));
    }
}
