//! The pinned inputs of a board image (`boards/<board>.inputs`, compiled in): which file, from
//! which Debian package version, with which sha256.

use std::collections::BTreeMap;
use std::path::Path;

use boot_artifact::digest::Sha256Digest;

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

/// Reads every pinned file from `dir` and checks its digest.
///
/// # Errors
/// One line naming the first file that is missing or unreadable, or whose digest differs, with
/// the package it should come from and how to get it (`scripts/rpi-inputs`).
pub fn load(pins: &[Pin], dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for p in pins {
        let path = dir.join(&p.file);
        let from = format!("{} {} /{}", p.package, p.version, p.path);
        let data = std::fs::read(&path)
            .map_err(|e| format!("board input {} ({from}): {e}; scripts/rpi-inputs fetches it", path.display()))?;
        let got = Sha256Digest::of(&data);
        if got != p.sha256 {
            return Err(format!(
                "board input {} is {got}, pinned {} ({from}): refusing an unpinned file",
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
