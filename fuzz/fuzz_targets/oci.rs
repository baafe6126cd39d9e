//! The OCI model of `boot_artifact::oci`: `Document::parse`, `ImageManifest::parse`,
//! `ImageIndex::parse`, `ImageConfig::parse`, and the boot artifact's reading of a manifest
//! (`artifact::boot_layers`, `is_boot_artifact`, the extensions annotation).
//!
//! Input: one byte choosing the `Content-Type` the document came with (its value modulo 6: none,
//! OCI index, OCI manifest, Docker list, Docker manifest, `application/json`; seeds use the
//! digits `0`–`5`), then the JSON document. A document that parses must serialise to JSON that
//! parses back to the same value without any content type.

#![no_main]

use boot_artifact::artifact::{self, ExtensionAnnotation, Role};
use boot_artifact::oci::{media_type, Document, ImageConfig, ImageIndex, ImageManifest};
use libfuzzer_sys::fuzz_target;

fn manifest(m: &ImageManifest) {
    let json = m.to_json();
    let back = ImageManifest::parse(&json, None).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(&back, m);
    assert_eq!(back.to_json(), json);
    let is_artifact = artifact::is_boot_artifact(m);
    match artifact::boot_layers(m) {
        Ok(Some(boot)) => {
            assert!(is_artifact);
            assert!(boot.format == 1 || boot.format == 2);
            for role in Role::ALL {
                let d = boot.get(role).descriptor();
                assert!(m.layers.contains(d), "a role's blob is one of the manifest's layers");
                if boot.format == 2 {
                    assert_eq!(Role::from_media_type(&d.media_type), Some(role));
                }
            }
        }
        Ok(None) | Err(_) => assert!(!is_artifact),
    }
    for role in Role::ALL {
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
    if let Some(ext) = m.annotation(artifact::ANNOTATION_EXTENSIONS) {
        if let Ok(list) = ExtensionAnnotation::decode(ext) {
            let again = ExtensionAnnotation::decode(&ExtensionAnnotation::encode(&list)).expect("re-encoded");
            assert_eq!(again, list);
        }
    }
    let _ = is_artifact;
}

fn index(i: &ImageIndex) {
    let json = i.to_json();
    let back = ImageIndex::parse(&json, None).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(&back, i);
    assert_eq!(back.to_json(), json);
    for d in &i.manifests {
        if let Some(p) = &d.platform {
            let _ = (p.to_string(), p.is_linux("arm64"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let content_type = match selector % 6 {
        0 => None,
        1 => Some(media_type::OCI_INDEX),
        2 => Some(media_type::OCI_MANIFEST),
        3 => Some(media_type::DOCKER_LIST),
        4 => Some(media_type::DOCKER_MANIFEST),
        _ => Some("application/json"),
    };
    match Document::parse(body, content_type) {
        Ok(Document::Manifest(m)) => {
            manifest(&m);
            assert_eq!(ImageManifest::parse(body, content_type).as_ref(), Ok(&m));
            assert!(ImageIndex::parse(body, content_type).is_err());
        }
        Ok(Document::Index(i)) => {
            index(&i);
            assert_eq!(ImageIndex::parse(body, content_type).as_ref(), Ok(&i));
            assert!(ImageManifest::parse(body, content_type).is_err());
        }
        Err(e) => {
            assert!(!e.field.is_empty());
            assert!(ImageManifest::parse(body, content_type).is_err());
            assert!(ImageIndex::parse(body, content_type).is_err());
        }
    }
    if let Ok(c) = ImageConfig::parse(body) {
        let _ = c.platform().to_string();
    }
});
