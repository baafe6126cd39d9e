//! The moonboot boot artifact: what `imager build` writes and `talos-agent boot` reads.
//!
//! # Shape
//! One OCI image manifest per architecture (`application/vnd.oci.image.manifest.v1+json`), an
//! OCI image index (`application/vnd.oci.image.index.v1+json`) when several are published under
//! one tag. The manifest has:
//! - a standard image config (`application/vnd.oci.image.config.v1+json`) whose `architecture`
//!   (`arm64`/`amd64`) and `os` (`linux`) match the index entry's platform;
//! - exactly three layers, in this order, each an **uncompressed tar**
//!   ([`LAYER_MEDIA_TYPE`]) holding exactly one regular file, mode 0644, uid/gid 0:
//!   1. [`Role::Kernel`] — `boot/kernel`: an arm64 `Image` already unpacked from EFI zboot
//!      (magic `ARM\x64` at byte 56), or an x86 bzImage; loadable as is by `kexec_file_load`;
//!   2. [`Role::Initramfs`] — `boot/initramfs`: the Talos initramfs with the extensions appended
//!      (zstd newc cpio, Talos ≥ 1.8);
//!   3. [`Role::Cmdline`] — `boot/cmdline`: the default kernel command line, UTF-8, one line, no
//!      trailing newline, at most 2047 bytes.
//!
//!   Each layer names its role in the annotation [`ANNOTATION_ROLE`]; readers find layers by that
//!   annotation, never by position alone.
//! - manifest annotations: [`ANNOTATION_FORMAT`] = [`FORMAT_VERSION`] (marks the manifest as a
//!   boot artifact), [`ANNOTATION_TALOS_VERSION`], [`ANNOTATION_SCHEMATIC_ID`],
//!   [`ANNOTATION_EXTENSIONS`], and the standard `org.opencontainers.image.created` (from
//!   `SOURCE_DATE_EPOCH`).
//!
//! # Why standard layer media types
//! The architecture asks for media types under one vendor prefix. Every vendor-specific name lives
//! under `dev.moonboot.` ([`VENDOR_PREFIX`]) as an annotation rather than as a layer media type,
//! because common OCI tooling refuses unknown layer media types: `umoci unpack` 0.4 fails with
//! "blob is not correct mediatype" (checked on Debian 12's umoci), and registry pull-through
//! caches and `skopeo copy` are only exercised with standard ones. A one-file uncompressed tar
//! costs 1 KiB of framing per layer and lets the reader stream the file into a memfd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::oci::{media_type, Descriptor, ImageManifest};

/// The prefix of every moonboot-specific annotation key.
pub const VENDOR_PREFIX: &str = "dev.moonboot.";

/// Media type of each boot artifact layer: an uncompressed tar holding one file.
pub const LAYER_MEDIA_TYPE: &str = media_type::OCI_LAYER_TAR;
/// Media type of the boot artifact's image config.
pub const CONFIG_MEDIA_TYPE: &str = media_type::OCI_CONFIG;

/// Manifest annotation that marks a boot artifact; its value is [`FORMAT_VERSION`].
pub const ANNOTATION_FORMAT: &str = "dev.moonboot.boot.format";
/// The boot artifact format this crate describes.
pub const FORMAT_VERSION: &str = "1";
/// Layer annotation naming the layer's [`Role`] (`kernel`, `initramfs`, `cmdline`).
pub const ANNOTATION_ROLE: &str = "dev.moonboot.boot.role";
/// Manifest annotation: the Talos version the artifact was built from, e.g. `v1.10.5`.
pub const ANNOTATION_TALOS_VERSION: &str = "dev.moonboot.talos.version";
/// Manifest annotation: the Image Factory schematic ID (64 lowercase hex digits) of the build.
pub const ANNOTATION_SCHEMATIC_ID: &str = "dev.moonboot.talos.schematic";
/// Manifest annotation: the system extensions in layer order, as a JSON array of
/// `{"name": …, "version": …, "digest": "sha256:…"}` objects (`digest` absent for extensions
/// built from this repository without a published image).
pub const ANNOTATION_EXTENSIONS: &str = "dev.moonboot.talos.extensions";

/// The kernel argument keys `talos-agent boot` (and, for [`MBR`](kernel_args::MBR), the imager's
/// board images) write for the kernel and `talos-agent report` reads back inside Talos
/// (`/proc/cmdline`): one `talos_agent.` namespace.
pub mod kernel_args {
    /// URL readiness reports are POSTed to (`talos-agent wait`'s `/v1/report`).
    pub const REPORT: &str = "talos_agent.report";
    /// Shared bearer token for readiness reports.
    pub const TOKEN: &str = "talos_agent.token";
    /// Node name in readiness reports.
    pub const NODE: &str = "talos_agent.node";
    /// Node role (`controlplane` or `worker`), which decides whether bootstrap readiness is judged.
    pub const ROLE: &str = "talos_agent.role";
    /// What `talos-agent report` does with the boot disk's hybrid MBR (the MBR of
    /// [`crate::hybrid_mbr`]): with [`MBR_REPAIR`] it checks it at start and on every report
    /// cycle, restores MBR slot 1 when Talos's `writePMBR` rewrote it, refuses any disk whose MBR
    /// or GPT moonboot did not write, and reports the outcome. Absent: the disk is never touched.
    /// Only `imager build --board rpi-cm3` puts it on a command line (its GRUB entry).
    pub const MBR: &str = "talos_agent.mbr";
    /// The one value of [`MBR`]: check and repair.
    pub const MBR_REPAIR: &str = "repair";
}

/// One system extension listed in [`ANNOTATION_EXTENSIONS`], in layer order. JSON:
/// `{"name":"spin","version":"v0.19.0","digest":"sha256:…"}`, `digest` absent for an extension
/// built from this repository without a published image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionAnnotation {
    /// The extension's `metadata.name`.
    pub name: String,
    /// The extension's `metadata.version`.
    pub version: String,
    /// The digest of the image index (or manifest) it was pulled by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Sha256Digest>,
}

impl ExtensionAnnotation {
    /// The [`ANNOTATION_EXTENSIONS`] value for `extensions`: a compact JSON array.
    pub fn encode(extensions: &[ExtensionAnnotation]) -> String {
        serde_json::to_string(extensions).expect("extension annotations always serialise")
    }

    /// Parses an [`ANNOTATION_EXTENSIONS`] value.
    ///
    /// # Errors
    /// The JSON error, when the value is not an array of such objects or a digest is not sha256.
    pub fn decode(value: &str) -> Result<Vec<ExtensionAnnotation>, serde_json::Error> {
        serde_json::from_str(value)
    }
}

/// Whether `manifest` is a boot artifact this crate can read: [`ANNOTATION_FORMAT`] is
/// [`FORMAT_VERSION`]. A manifest with another format version is not one (a newer imager's).
pub fn is_boot_artifact(manifest: &ImageManifest) -> bool {
    manifest.annotation(ANNOTATION_FORMAT) == Some(FORMAT_VERSION)
}

/// The layer that holds `role`, found by its [`ANNOTATION_ROLE`] annotation.
pub fn layer_for(manifest: &ImageManifest, role: Role) -> Option<&Descriptor> {
    manifest.layers.iter().find(|l| l.annotation(ANNOTATION_ROLE) == Some(role.as_str()))
}

/// The manifest annotations of a boot artifact, keys sorted: format, Talos version, schematic ID,
/// extensions and the standard `org.opencontainers.image.created` (`created`, RFC 3339).
pub fn manifest_annotations(
    talos_version: &str,
    schematic_id: &str,
    extensions: &[ExtensionAnnotation],
    created: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_FORMAT.to_string(), FORMAT_VERSION.to_string()),
        (ANNOTATION_TALOS_VERSION.to_string(), talos_version.to_string()),
        (ANNOTATION_SCHEMATIC_ID.to_string(), schematic_id.to_string()),
        (ANNOTATION_EXTENSIONS.to_string(), ExtensionAnnotation::encode(extensions)),
        (crate::oci::ANNOTATION_CREATED.to_string(), created.to_string()),
    ])
}

/// What a boot artifact layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The kernel, directly loadable (arm64 `Image` or x86 bzImage).
    Kernel,
    /// The initramfs, extensions included.
    Initramfs,
    /// The default kernel command line.
    Cmdline,
}

impl Role {
    /// All roles, in layer order.
    pub const ALL: [Role; 3] = [Role::Kernel, Role::Initramfs, Role::Cmdline];

    /// The value of [`ANNOTATION_ROLE`] for this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Initramfs => "initramfs",
            Role::Cmdline => "cmdline",
        }
    }

    /// The path of the one file inside the layer's tar.
    pub fn path(self) -> &'static str {
        match self {
            Role::Kernel => "boot/kernel",
            Role::Initramfs => "boot/initramfs",
            Role::Cmdline => "boot/cmdline",
        }
    }

    /// Parses an [`ANNOTATION_ROLE`] value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where a stock Talos imager image keeps its boot files for `arch` (`amd64` or `arm64`):
/// `usr/install/<arch>/vmlinuz` and `usr/install/<arch>/initramfs.xz` (Talos
/// `pkg/imager/profile/input.go`), as paths inside a layer tar (no leading `/`).
pub fn imager_paths(arch: &str) -> (String, String) {
    (format!("usr/install/{arch}/vmlinuz"), format!("usr/install/{arch}/initramfs.xz"))
}

/// Where a Talos ≥ 1.10 installer image keeps its UKI for `arch`: `usr/install/<arch>/vmlinuz.efi`
/// (Talos `pkg/imager/out.go`), as a path inside a layer tar.
pub fn installer_uki_path(arch: &str) -> String {
    format!("usr/install/{arch}/vmlinuz.efi")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_have_distinct_paths() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert!(r.path().starts_with("boot/"));
        }
        assert_eq!(Role::parse("Kernel"), None);
        assert!(ANNOTATION_ROLE.starts_with(VENDOR_PREFIX));
        assert!(ANNOTATION_FORMAT.starts_with(VENDOR_PREFIX));
        assert_eq!(imager_paths("arm64").1, "usr/install/arm64/initramfs.xz");
    }

    #[test]
    fn boot_artifact_facts() {
        let d = Sha256Digest::of(b"x");
        let ext = vec![
            ExtensionAnnotation { name: "spin".into(), version: "v0.19.0".into(), digest: Some(d) },
            ExtensionAnnotation { name: "talos-agent".into(), version: "v0.1.0".into(), digest: None },
        ];
        let text = ExtensionAnnotation::encode(&ext);
        assert_eq!(
            text,
            format!(
                r#"[{{"name":"spin","version":"v0.19.0","digest":"{d}"}},{{"name":"talos-agent","version":"v0.1.0"}}]"#
            )
        );
        assert_eq!(ExtensionAnnotation::decode(&text).unwrap(), ext);
        assert!(ExtensionAnnotation::decode(r#"[{"name":"a","version":"b","digest":"md5:00"}]"#).is_err());

        let mut layers = Vec::new();
        for r in Role::ALL {
            let mut l = Descriptor::of(LAYER_MEDIA_TYPE, r.path().as_bytes());
            l.annotations.insert(ANNOTATION_ROLE.into(), r.as_str().into());
            layers.push(l);
        }
        layers.reverse(); // found by annotation, not by position
        let annotations = manifest_annotations("v1.10.5", "abc", &ext, "2025-07-01T00:00:00Z");
        let mut m = ImageManifest::new(Descriptor::of(CONFIG_MEDIA_TYPE, b"{}"), layers, annotations);
        assert!(is_boot_artifact(&m));
        assert_eq!(layer_for(&m, Role::Kernel).unwrap().digest, Sha256Digest::of(b"boot/kernel"));
        m.annotations.insert(ANNOTATION_FORMAT.into(), "2".into());
        assert!(!is_boot_artifact(&m), "another format version is not ours to read");
        m.annotations.remove(ANNOTATION_FORMAT);
        assert!(!is_boot_artifact(&m));
    }
}
