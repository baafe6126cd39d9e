//! `build.json`: every input and output of a build by digest, the tool version, the schematic,
//! the initramfs layers and the board image's layout (the shape users and scripts read; the
//! module docs of `build` list the outputs).

use std::collections::BTreeMap;

use serde::Serialize;

/// build.json: what went in and what came out.
#[derive(Serialize)]
pub(super) struct BuildJson {
    pub(super) tool: Tool,
    pub(super) arch: String,
    pub(super) talos_version: String,
    pub(super) source_date_epoch: u64,
    pub(super) schematic_id: String,
    pub(super) schematic: String,
    pub(super) inputs: Inputs,
    /// How the upstream inputs' cosign signatures were checked, and what verified.
    pub(super) signatures: Signatures,
    pub(super) initramfs_layers: Vec<LayerNote>,
    /// The board disk image (`--board`): its layout and pinned inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) board: Option<crate::board::Written>,
    pub(super) outputs: BTreeMap<String, String>,
}

/// `signatures` of build.json.
#[derive(Serialize)]
pub(super) struct Signatures {
    /// `key` (`--signature-key`), `skipped` (`--insecure-skip-signature-verification`) or
    /// `none` (no policy given: not verified).
    pub(super) policy: &'static str,
    /// The key's SPKI fingerprint, under `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<String>,
    /// Each verified signature: the image by digest, the signature manifest's and the payload's
    /// digests.
    pub(super) verified: Vec<moonboot_registry::VerifiedSignature>,
}

#[derive(Serialize)]
pub(super) struct Tool {
    pub(super) name: &'static str,
    pub(super) version: &'static str,
}

#[derive(Serialize)]
pub(super) struct Inputs {
    pub(super) base: ImageInput,
    /// The extensions bundle official extensions were resolved through (when any were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) extensions_bundle: Option<crate::bundle::BundleSource>,
    /// The overlays bundle and the overlay resolved through it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) overlays_bundle: Option<crate::bundle::BundleSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) overlay: Option<OverlayInput>,
    pub(super) extensions: Vec<ExtensionInput>,
    pub(super) extra_kernel_args: Vec<String>,
}

#[derive(Serialize, Clone)]
pub(super) struct OverlayInput {
    pub(super) name: String,
    pub(super) image: ImageInput,
}

#[derive(Serialize, Clone)]
pub(super) struct ImageInput {
    pub(super) reference: String,
    pub(super) index_digest: Option<String>,
    pub(super) manifest_digest: String,
    pub(super) layers: Vec<String>,
    pub(super) files: BTreeMap<String, String>,
}

#[derive(Serialize, Clone)]
pub(super) struct ExtensionInput {
    pub(super) name: String,
    pub(super) version: String,
    /// The Image Factory name it was resolved by (`siderolabs/spin`), for official extensions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) official: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) image: Option<ImageInput>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) files: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub(super) struct LayerNote {
    pub(super) image: String,
    pub(super) extension: String,
    pub(super) size: u64,
}

pub(super) fn image_input(r: &moonboot_registry::Resolved, files: BTreeMap<String, String>) -> ImageInput {
    ImageInput {
        reference: r.reference.to_string(),
        index_digest: r.index_digest.map(|d| d.to_string()),
        manifest_digest: r.manifest_digest.to_string(),
        layers: r.manifest.layers.iter().map(|l| l.digest.to_string()).collect(),
        files,
    }
}
