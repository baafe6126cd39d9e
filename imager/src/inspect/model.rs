//! What `imager inspect` reports: the shapes `--json` prints (one [`Inspection`] object) and the
//! text form renders.

use std::collections::BTreeMap;

use boot_artifact::artifact::ExtensionAnnotation;
use serde::{Deserialize, Serialize};

/// One layer of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer's media type.
    pub media_type: String,
    /// The layer's digest.
    pub digest: String,
    /// The layer's size in bytes (compressed, as stored).
    pub size: u64,
    /// The boot artifact role ([`ANNOTATION_ROLE`](boot_artifact::artifact::ANNOTATION_ROLE)), if annotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Tar entries in the layer (0 for a layer that is not a tar).
    pub entries: u64,
}

/// A file inside a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path inside the layer.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Format recognised from the first bytes (`arm64 Image`, `zstd`, …), when looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// What a boot artifact says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// [`ANNOTATION_FORMAT`](boot_artifact::artifact::ANNOTATION_FORMAT)'s value.
    pub format_version: String,
    /// [`ANNOTATION_TALOS_VERSION`](boot_artifact::artifact::ANNOTATION_TALOS_VERSION).
    pub talos_version: Option<String>,
    /// [`ANNOTATION_SCHEMATIC_ID`](boot_artifact::artifact::ANNOTATION_SCHEMATIC_ID).
    pub schematic_id: Option<String>,
    /// [`ANNOTATION_EXTENSIONS`](boot_artifact::artifact::ANNOTATION_EXTENSIONS), in layer order.
    pub extensions: Vec<ExtensionAnnotation>,
    /// [`ANNOTATION_CREATED`](boot_artifact::oci::ANNOTATION_CREATED).
    pub created: Option<String>,
    /// The default kernel command line (`boot/cmdline`).
    pub cmdline: String,
    /// `boot/kernel`, with its format.
    pub kernel: FileInfo,
    /// `boot/initramfs`, with its compression.
    pub initramfs: FileInfo,
}

/// One non-directory path of an extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// Path in the image (`rootfs/usr/local/…`).
    pub path: String,
    /// `file`, `symlink`, or the special kind.
    pub kind: String,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits, octal (`0755`).
    pub mode: String,
    /// Symbolic link target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What an extension image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
    /// `metadata.author`.
    pub author: String,
    /// `metadata.description`.
    pub description: String,
    /// `metadata.compatibility.talos.version`.
    pub talos_compatibility: String,
    /// Why Talos would refuse the image (`manifest.yaml` or content rules); `None` when it accepts it.
    pub problem: Option<String>,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Total size of regular files in bytes.
    pub bytes: u64,
    /// Every non-directory path, sorted.
    pub paths: Vec<PathInfo>,
}

/// What a Talos imager image holds under `usr/install/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagerInfo {
    /// Files under `usr/install/<arch>/`, by architecture, sorted by path.
    pub install: BTreeMap<String, Vec<FileInfo>>,
}

/// The result of inspecting one image; `imager inspect --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// What was inspected, as given.
    pub source: String,
    /// `boot-artifact`, `extension`, `talos-imager` or `image`.
    pub kind: String,
    /// `linux/<arch>`.
    pub platform: String,
    /// The index the manifest was chosen from, if any.
    pub index_digest: Option<String>,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The config's digest.
    pub config_digest: String,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The layers, base first.
    pub layers: Vec<LayerInfo>,
    /// For a boot artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootInfo>,
    /// For an extension image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionInfo>,
    /// For a Talos imager image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talos_imager: Option<ImagerInfo>,
}
