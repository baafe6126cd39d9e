//! An extension image layer applied to a flattened extension, as the imager's pull does
//! (`moonboot_imager::extension::tree::Tree::apply_layer`: the shared layer reader, whiteouts,
//! hard links, the size bound), then Talos's content rules (`Tree::validate`) and the
//! `manifest.yaml` the layers left (`Manifest::parse`), in the order `build::validate` uses.
//!
//! Input: one layer blob, applied on top of a fixed lower layer (a manifest, `rootfs/` and a
//! 2 KiB file). The content bound is [`LIMIT`] (the imager's is 1 GiB); the layer reader adds its
//! 64 MiB of slack for tar framing to it, which bounds decompression.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moonboot_imager::extension::tree::{Entry, Kind, Tree};
use moonboot_imager::extension::Manifest;

/// Bound on the file content of the whole tree.
const LIMIT: u64 = 1 << 20;

const MANIFEST: &str = "version: v1alpha1\nmetadata:\n  name: fuzz\n  version: v0.1.0\n  author: moonboot\n  description: the fuzzer's lower layer\n  compatibility:\n    talos:\n      version: \">= v1.0.0\"\n";

fn lower() -> &'static Tree {
    static LOWER: OnceLock<Tree> = OnceLock::new();
    LOWER.get_or_init(|| {
        let mut t = Tree::new();
        t.insert(
            "manifest.yaml",
            Entry { mode: 0o644, kind: Kind::File(MANIFEST.as_bytes().to_vec()), selinux_label: None },
        );
        t.insert("rootfs", Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
        t.insert(
            "rootfs/usr/local/bin/fuzz",
            Entry { mode: 0o755, kind: Kind::File(vec![0x7f; 2048]), selinux_label: None },
        );
        t.insert(
            "rootfs/usr/local/etc/containers/fuzz.yaml",
            Entry { mode: 0o644, kind: Kind::File(b"name: fuzz\n".to_vec()), selinux_label: None },
        );
        t
    })
}

fuzz_target!(|data: &[u8]| {
    let mut tree = lower().clone();
    if tree.apply_layer(data, LIMIT).is_err() {
        return;
    }
    let mut total = 0u64;
    for (path, e) in tree.entries() {
        assert!(!path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{path:?}");
        assert!(e.mode <= 0o7777);
        if let Kind::File(d) = &e.kind {
            total += d.len() as u64;
        }
    }
    assert!(total <= LIMIT, "{total} bytes of content over the {LIMIT}-byte bound");
    let valid = tree.validate();
    if let Some(Entry { kind: Kind::File(d), .. }) = tree.get("manifest.yaml") {
        let _ = Manifest::parse(&String::from_utf8_lossy(d));
    } else {
        assert!(valid.is_err(), "a tree without manifest.yaml passed validation");
    }
    // A second application of the same layer must not panic either (whiteouts over its own files).
    let _ = tree.apply_layer(data, LIMIT);
});
