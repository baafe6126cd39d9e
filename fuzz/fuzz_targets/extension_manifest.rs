//! An extension's `manifest.yaml`, read as the imager reads it from a pulled extension image
//! (`imager/src/build/mod.rs` `validate`): `Manifest::parse` (YAML shape, `v1alpha1`, name, the
//! Talos version constraint), `check_compatible` against a few Talos versions, and the
//! `metadata.extraInfo` side read. A manifest that parses is then written into `extensions.yaml`
//! as the initramfs holds it (`build::initramfs::extensions_yaml`); when that succeeds, reading
//! the file back with serde-saphyr (what `talos-agent report` reads `/etc/extensions.yaml` with)
//! must give the same metadata.
//!
//! Input: the manifest's text (lossily decoded from UTF-8, as `validate` does).

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use moonboot_imager::build::initramfs::{extensions_yaml, Extension};
use moonboot_imager::extension::manifest::Compatibility;
use moonboot_imager::extension::{Manifest, Metadata};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Extra {
    #[serde(default)]
    metadata: ExtraMeta,
}

#[derive(Deserialize, Default)]
struct ExtraMeta {
    #[serde(default, rename = "extraInfo")]
    extra_info: String,
}

/// `extensions.yaml` as Talos's `extensions.Config` shapes it.
#[derive(Deserialize)]
struct Config {
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    image: String,
    metadata: LayerMetadata,
}

/// Talos's `extensions.Metadata` (`metadata.go`), with `extraInfo`.
#[derive(Deserialize)]
struct LayerMetadata {
    name: String,
    version: String,
    author: String,
    description: String,
    compatibility: Compatibility,
    #[serde(default, rename = "extraInfo")]
    extra_info: String,
}

impl LayerMetadata {
    fn metadata(&self) -> Metadata {
        Metadata {
            name: self.name.clone(),
            version: self.version.clone(),
            author: self.author.clone(),
            description: self.description.clone(),
            compatibility: self.compatibility.clone(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(manifest) = Manifest::parse(&text) else { return };
    assert_eq!(manifest.version, "v1alpha1");
    assert!(!manifest.metadata.name.is_empty());
    for v in ["1.10.5", "1.11.0-beta.1", "0.0.0", "18446744073709551615.18446744073709551615.18446744073709551615"] {
        let _ = manifest.check_compatible(&semver::Version::parse(v).expect("a version"));
    }
    let extra: Extra = moonboot_imager::yaml::from_str(&text).unwrap_or_default();

    let ext = Extension {
        metadata: manifest.metadata.clone(),
        extra_info: extra.metadata.extra_info.clone(),
        root_mode: 0o755,
        root_selinux_label: None,
        rootfs: BTreeMap::new(),
    };
    let Ok(yaml) = extensions_yaml(&[("0.sqsh".to_string(), &ext)]) else { return };
    let back: Config =
        serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("extensions.yaml does not parse: {e}\n{yaml}"));
    assert_eq!(back.layers.len(), 1);
    assert_eq!(back.layers[0].image, "0.sqsh");
    assert_eq!(
        back.layers[0].metadata.metadata(),
        manifest.metadata,
        "extensions.yaml reads back differently:\n{yaml}"
    );
    assert_eq!(back.layers[0].metadata.extra_info, ext.extra_info, "extraInfo reads back differently:\n{yaml}");
});
