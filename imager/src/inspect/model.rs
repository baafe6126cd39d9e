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
    /// For the output directory of `imager build --board …`: the board disk image it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_image: Option<DiskImage>,
}

/// One MBR partition entry (slot), as read from LBA 0 (the classic MBR layout: four 16-byte
/// entries at byte 446, little-endian LBAs; UEFI Specification 2.10 §5.2.1, table 5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MbrSlot {
    /// The slot, 1–4.
    pub slot: u8,
    /// The status byte is 0x80 ("active", what the BCM2837 boot ROM and BIOSes boot).
    pub bootable: bool,
    /// The status byte itself.
    pub status: u8,
    /// The partition type (0x0C FAT32 LBA, 0xEE GPT protective, 0 an empty slot).
    #[serde(rename = "type")]
    pub kind: u8,
    /// First sector (LBA).
    pub first_lba: u32,
    /// Length in sectors of 512 bytes.
    pub sectors: u32,
}

/// LBA 0 of a disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MbrInfo {
    /// The disk signature (bytes 440–443) as a little-endian number, `0x` and 8 hex digits, as
    /// `sfdisk` prints a dos label's `id`.
    pub disk_signature: String,
    /// Slots 1–4, empty ones included.
    pub slots: Vec<MbrSlot>,
}

/// What `boot_artifact::hybrid_mbr::check` says about the MBR and the GPT together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HybridState {
    /// The hybrid MBR moonboot writes: the boot ROM finds the FAT in slot 1.
    Intact,
    /// Slot 1 is the 0xEE entry Talos's `writePMBR` writes: `talos-agent mbr --repair` restores it.
    ClobberedByTalos,
    /// Not a hybrid MBR moonboot wrote (the reason is in [`HybridInfo::detail`]).
    NotOurs,
}

/// The hybrid MBR verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HybridInfo {
    /// The verdict.
    pub state: HybridState,
    /// Why it is not ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One used GPT partition entry (UEFI Specification 2.10 §5.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptPartition {
    /// The entry's number, from 1.
    pub number: u32,
    /// The partition name (UTF-16LE on disk, up to 36 code units).
    pub name: String,
    /// The partition type GUID, lowercase and hyphenated.
    pub type_guid: String,
    /// The unique partition GUID.
    pub guid: String,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The GPT of a disk image: the primary header (both headers and both entry arrays were checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptInfo {
    /// The disk GUID, lowercase and hyphenated.
    pub disk_guid: String,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA.
    pub last_usable_lba: u64,
    /// Where the backup header is (the disk's last LBA when the image is whole).
    pub backup_lba: u64,
    /// The used entries, by number.
    pub partitions: Vec<GptPartition>,
}

/// A file on the FAT boot partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FatFile {
    /// Path from the root, `/`-separated, as the long file name spells it (`EFI/BOOT/BOOTAA64.EFI`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// The FAT boot partition of a disk image: the GPT's EFI System Partition, else MBR slot 1 when
/// its type is FAT32 (0x0B, 0x0C).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FatInfo {
    /// The partition's first LBA.
    pub first_lba: u64,
    /// The partition's last LBA, inclusive.
    pub last_lba: u64,
    /// `FAT12`, `FAT16` or `FAT32` (from the cluster count, as `fatfs` decides it).
    pub fat_type: String,
    /// The volume ID, as `blkid` spells it (`XXXX-XXXX`).
    pub volume_id: String,
    /// The boot sector's volume label, trailing spaces removed.
    pub volume_label: String,
    /// Every regular file, sorted by path.
    pub files: Vec<FatFile>,
    /// The text of `config.txt` in the root (what the Raspberry Pi firmware reads), if present.
    pub config_txt: Option<String>,
}

/// The result of inspecting a disk image (`.raw`, or `.raw.xz`); `imager inspect --json IMAGE`
/// prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskImage {
    /// What was inspected, as given.
    pub source: String,
    /// `disk-image`.
    pub kind: String,
    /// `xz` or `none`.
    pub compression: String,
    /// The raw disk's size in bytes.
    pub size: u64,
    /// LBA 0.
    pub mbr: MbrInfo,
    /// The hybrid MBR verdict.
    pub hybrid_mbr: HybridInfo,
    /// The GPT, absent when LBA 1 has no GPT header signature.
    pub gpt: Option<GptInfo>,
    /// The FAT boot partition, absent when there is none.
    pub boot_fat: Option<FatInfo>,
}
