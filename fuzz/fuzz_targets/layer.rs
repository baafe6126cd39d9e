//! The one tar-layer reader, `boot_artifact::layer`: compression sniffed from the bytes (gzip,
//! every member; zstd; plain tar), the bound on the decompressed stream, path cleaning, whiteouts,
//! hostile entries; `read_layer`, `extract` with wanted files, and `stack` over a fixed lower
//! layer.
//!
//! Input: one layer blob. The decompressed stream is bounded `expansion_limit`-style but with a
//! 1 MiB slack instead of 64 MiB (`64 × input + 1 MiB`), and each wanted file by [`WANTED_LIMIT`],
//! so that no input makes the fuzzer allocate or inflate without bound.

#![no_main]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::OnceLock;

use boot_artifact::layer::{self, EntryKind, Item, LayerFiles, Wanted, Whiteout};
use libfuzzer_sys::fuzz_target;

/// Bound on one wanted file.
const WANTED_LIMIT: u64 = 256 << 10;
/// The paths the agent and the imager look for, and a directory above some of them.
const WANTED: &[&str] = &[
    "usr/install/arm64/vmlinuz",
    "usr/install/arm64/initramfs.xz",
    "usr/install/amd64/vmlinuz.efi",
    "boot/kernel",
    "boot/initramfs",
    "boot/cmdline",
    "manifest.yaml",
];

fn wanted() -> Vec<Wanted> {
    WANTED.iter().map(|p| Wanted::new(*p, WANTED_LIMIT)).collect()
}

/// The lower layer every input is stacked on: each wanted file, as `extract` reads it.
fn lower() -> &'static LayerFiles<Vec<u8>> {
    static LOWER: OnceLock<LayerFiles<Vec<u8>>> = OnceLock::new();
    LOWER.get_or_init(|| {
        let mut b = tar::Builder::new(Vec::new());
        for path in WANTED {
            let body = format!("lower {path}\n");
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, body.as_bytes()).expect("tar");
        }
        let blob = b.into_inner().expect("tar");
        layer::extract(&blob[..], 1 << 20, &wanted(), layer::to_vec).expect("the lower layer reads")
    })
}

/// What every cleaned path must look like.
fn clean(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fuzz_target!(|data: &[u8]| {
    let max_expanded = (data.len() as u64).saturating_mul(layer::MAX_LAYER_EXPANSION).saturating_add(1 << 20);

    // Every item, reading file contents as the agent does (into a sink here).
    let _ = layer::read_layer(data, max_expanded, |item| {
        match item {
            Item::Whiteout(Whiteout::Path(p)) => assert!(clean(&p), "whiteout {p:?}"),
            Item::Whiteout(Whiteout::Opaque(d)) => assert!(d.is_empty() || clean(&d), "opaque {d:?}"),
            Item::Entry(e) => {
                assert!(clean(&e.path), "entry {:?}", e.path);
                assert!(e.mode <= 0o7777);
                match &e.kind {
                    EntryKind::HardLink(t) => assert!(t.is_empty() || clean(t), "hard link target {t:?}"),
                    EntryKind::File { size } => {
                        let n = std::io::copy(&mut e.data.take(*size), &mut std::io::sink())
                            .map_err(layer::LayerError::Io)?;
                        assert!(n <= *size);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    });

    // The wanted files, then stacked over the lower layer.
    let Ok(upper) = layer::extract(data, max_expanded, &wanted(), layer::to_vec) else { return };
    for (path, content) in &upper.files {
        assert!(WANTED.contains(&path.as_str()), "{path} was not wanted");
        assert!(content.len() as u64 <= WANTED_LIMIT);
    }
    for w in &upper.whiteouts {
        assert!(WANTED.iter().any(|p| w.hides(p)), "{w:?} hides nothing wanted");
    }
    let lower = lower();
    let stacked: BTreeMap<String, Vec<u8>> = layer::stack([
        LayerFiles { files: lower.files.clone(), whiteouts: lower.whiteouts.clone() },
        LayerFiles { files: upper.files.clone(), whiteouts: upper.whiteouts.clone() },
    ]);
    for path in WANTED {
        let from_upper = upper.files.iter().rev().find(|(p, _)| p == path).map(|(_, c)| c);
        let hidden = upper.whiteouts.iter().any(|w| w.hides(path));
        match (stacked.get(*path), from_upper) {
            // A file of the upper layer wins, whatever its layer's whiteouts say.
            (got, Some(c)) => assert_eq!(got, Some(c), "{path}: the upper file must win"),
            // Otherwise the lower file survives unless a whiteout of the upper layer hides it.
            (got, None) => assert_eq!(got.is_some(), !hidden, "{path}: hidden={hidden}"),
        }
    }
});
