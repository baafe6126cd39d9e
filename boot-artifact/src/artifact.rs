//! The moonboot boot artifact: what `imager build` writes and `talos-agent boot` reads.
//!
//! # Format 2 (what `imager build` writes): an OCI 1.1 artifact of raw blobs
//! One OCI image manifest per architecture (`application/vnd.oci.image.manifest.v1+json`,
//! image-spec v1.1 `manifest.md` "Guidelines for Artifact Usage", case 2), in an OCI image index
//! (`application/vnd.oci.image.index.v1+json`) whose entries carry `platform` when several are
//! published under one tag (not `artifactType`: skopeo 1.9 drops it when copying an index, which
//! changes the index digest). The manifest has:
//! - `artifactType` [`ARTIFACT_TYPE`];
//! - `config`: the empty descriptor (`application/vnd.oci.empty.v1+json`, the 2-byte blob `{}`,
//!   `sha256:44136fa3…`), whose blob is pushed like any other (registry:2 checks it exists);
//! - exactly three layers, each the **file itself** (no tar, no compression of its own), found by
//!   media type — never by position — and named by `org.opencontainers.image.title` (what
//!   `oras pull` writes the file as):
//!   1. [`Role::Kernel`] — [`Role::media_type`] `application/vnd.moonboot.linux.kernel.v1`, title
//!      `kernel`: an arm64 `Image` (magic `ARM\x64` at byte 56; EFI zboot and gzip are unpacked
//!      by the agent, at the cost of a second pass) or an x86 bzImage, loadable by `kexec_file_load`;
//!   2. [`Role::Initramfs`] — `application/vnd.moonboot.linux.initramfs.v1`, title `initramfs`:
//!      the bytes `kexec_file_load` gets as the initrd (Talos's zstd newc cpio with the extensions
//!      appended); opaque to the agent;
//!   3. [`Role::Cmdline`] — `application/vnd.moonboot.linux.cmdline.v1`, title `cmdline`: the
//!      default kernel command line, UTF-8, one line, no trailing newline, at most 2047 bytes.
//!
//!   Any other layer makes the manifest unreadable (fail closed).
//! - annotations (all optional to a reader; `imager build` writes every one):
//!   [`ANNOTATION_FORMAT`] = [`FORMAT_VERSION`], [`ANNOTATION_TALOS_VERSION`],
//!   [`ANNOTATION_SCHEMATIC_ID`], [`ANNOTATION_EXTENSIONS`], and the standard
//!   `org.opencontainers.image.created` from `SOURCE_DATE_EPOCH`, so equal inputs give an equal
//!   manifest digest.
//!
//! The blob digest *is* the file's digest: a reader hashes each byte once, as it streams into
//! the memory it will be loaded from. Anyone can produce the format, e.g.
//! `oras push REF --artifact-type application/vnd.moonboot.boot.v2
//! kernel:application/vnd.moonboot.linux.kernel.v1 initramfs:application/vnd.moonboot.linux.initramfs.v1
//! cmdline:application/vnd.moonboot.linux.cmdline.v1`.
//!
//! # Format 1 (still read, no longer written)
//! A standard image (OCI image config with `architecture`/`os`) whose three layers are
//! uncompressed tars ([`LAYER_MEDIA_TYPE`]) holding one regular file each, at [`Role::path`]
//! (`boot/kernel`, `boot/initramfs`, `boot/cmdline`), found by the layer annotation
//! [`ANNOTATION_ROLE`]; manifest annotation [`ANNOTATION_FORMAT`] = `1`. The file's digest differs
//! from the layer's, so a reader hashes twice. Artifacts published in this format keep booting.
//!
//! A manifest that names a newer format (an annotation value above 2, or another
//! `application/vnd.moonboot.boot.*` artifact type) is refused in one line ([`ArtifactError`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::oci::{media_type, Descriptor, ImageManifest};

/// The prefix of every moonboot-specific annotation key.
pub const VENDOR_PREFIX: &str = "dev.moonboot.";

/// `artifactType` of a format-2 boot artifact manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.moonboot.boot.v2";
/// The prefix of every boot artifact type, this version's and later ones.
pub const ARTIFACT_TYPE_PREFIX: &str = "application/vnd.moonboot.boot.";
/// Media type of a format-1 boot artifact layer: an uncompressed tar holding one file.
pub const LAYER_MEDIA_TYPE: &str = media_type::OCI_LAYER_TAR;
/// Media type of a format-1 boot artifact's image config.
pub const CONFIG_MEDIA_TYPE: &str = media_type::OCI_CONFIG;

/// Manifest annotation that names the boot artifact format: [`FORMAT_VERSION`] or `1`.
pub const ANNOTATION_FORMAT: &str = "dev.moonboot.boot.format";
/// The boot artifact format `imager build` writes.
pub const FORMAT_VERSION: &str = "2";
/// Format-1 layer annotation naming the layer's [`Role`] (`kernel`, `initramfs`, `cmdline`).
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

/// Where one boot file is in a boot artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootBlob<'m> {
    /// Format 2: the blob is the file; its digest is the file's.
    Raw(&'m Descriptor),
    /// Format 1: the only file, at `path`, of a one-file tar layer.
    InTar {
        /// The tar layer.
        layer: &'m Descriptor,
        /// The file's path in it ([`Role::path`]).
        path: &'static str,
    },
}

impl<'m> BootBlob<'m> {
    /// The blob's descriptor (the raw file's, or the tar layer's).
    pub fn descriptor(self) -> &'m Descriptor {
        match self {
            BootBlob::Raw(d) | BootBlob::InTar { layer: d, .. } => d,
        }
    }
}

/// The three boot files of a boot artifact manifest, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLayers<'m> {
    /// 1 or 2.
    pub format: u32,
    /// In [`Role::ALL`] order: kernel, initramfs, command line.
    pub blobs: [BootBlob<'m>; 3],
}

impl<'m> BootLayers<'m> {
    /// Where the file of `role` is.
    pub fn get(&self, role: Role) -> BootBlob<'m> {
        self.blobs[Role::ALL.iter().position(|r| *r == role).expect("every role is in ALL")]
    }
}

/// Why a manifest that names itself a boot artifact cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// A format this crate does not know (a newer imager's).
    #[error(
        "boot artifact format {0} is newer than this moonboot reads (formats 1 and 2): upgrade talos-agent / imager"
    )]
    Newer(String),
    /// No layer holds this role's file.
    #[error("boot artifact (format {format}) has no {role} layer ({expected})")]
    Missing {
        /// 1 or 2.
        format: u32,
        /// `kernel`, `initramfs`, `cmdline`.
        role: &'static str,
        /// What was looked for: a media type, or an annotation.
        expected: String,
    },
    /// Two layers hold the same role.
    #[error("boot artifact (format {format}) has two {role} layers")]
    Duplicate {
        /// 1 or 2.
        format: u32,
        /// `kernel`, `initramfs`, `cmdline`.
        role: &'static str,
    },
    /// A format-2 layer of a media type that is not one of the three.
    #[error("boot artifact layers[{index}]: media type {media_type} is not a kernel, initramfs or cmdline blob")]
    Unexpected {
        /// Its position.
        index: usize,
        /// Its media type.
        media_type: String,
    },
}

/// Reads the boot files' places from `manifest`: `Ok(None)` when it is not a boot artifact (no
/// [`ANNOTATION_FORMAT`] and no [`ARTIFACT_TYPE_PREFIX`] artifact type); format 2 when its
/// `artifactType` is [`ARTIFACT_TYPE`] (annotations optional, as for an `oras push`) or its
/// format annotation says 2; format 1 when the annotation says 1.
///
/// # Errors
/// [`ArtifactError`]: a newer format, a missing or duplicated role, an unknown format-2 layer.
pub fn boot_layers(manifest: &ImageManifest) -> Result<Option<BootLayers<'_>>, ArtifactError> {
    let format = manifest.annotation(ANNOTATION_FORMAT);
    let artifact_type = manifest.artifact_type.as_deref();
    if let Some(t) = artifact_type.filter(|t| t.starts_with(ARTIFACT_TYPE_PREFIX) && *t != ARTIFACT_TYPE) {
        return Err(ArtifactError::Newer(t.to_string()));
    }
    let v2 = artifact_type == Some(ARTIFACT_TYPE);
    match format {
        None if !v2 => Ok(None),
        Some("1") if !v2 => by_role(manifest, 1).map(Some),
        None | Some("2") => by_role(manifest, 2).map(Some),
        Some(other) => Err(ArtifactError::Newer(other.to_string())),
    }
}

/// Format 1 finds a role by its layer annotation, format 2 by media type.
fn by_role(manifest: &ImageManifest, format: u32) -> Result<BootLayers<'_>, ArtifactError> {
    let role_of = |l: &Descriptor| match format {
        1 => l.annotation(ANNOTATION_ROLE).and_then(Role::parse),
        _ => Role::from_media_type(&l.media_type),
    };
    let expected = |r: Role| match format {
        1 => format!("annotated {ANNOTATION_ROLE}={}", r.as_str()),
        _ => format!("media type {}", r.media_type()),
    };
    let mut found: [Option<&Descriptor>; 3] = [None; 3];
    for (index, layer) in manifest.layers.iter().enumerate() {
        let Some(role) = role_of(layer) else {
            if format == 2 {
                return Err(ArtifactError::Unexpected { index, media_type: layer.media_type.clone() });
            }
            continue; // format 1 readers skipped unannotated layers
        };
        let slot = &mut found[Role::ALL.iter().position(|r| *r == role).expect("in ALL")];
        if slot.is_some() {
            return Err(ArtifactError::Duplicate { format, role: role.as_str() });
        }
        *slot = Some(layer);
    }
    let mut blobs = Vec::with_capacity(3);
    for (role, d) in Role::ALL.into_iter().zip(found) {
        let Some(d) = d else {
            return Err(ArtifactError::Missing { format, role: role.as_str(), expected: expected(role) });
        };
        blobs.push(if format == 2 { BootBlob::Raw(d) } else { BootBlob::InTar { layer: d, path: role.path() } });
    }
    Ok(BootLayers { format, blobs: blobs.try_into().expect("three roles") })
}

/// Whether `manifest` is a boot artifact this crate can read ([`boot_layers`] finds all three
/// files).
pub fn is_boot_artifact(manifest: &ImageManifest) -> bool {
    matches!(boot_layers(manifest), Ok(Some(_)))
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

    /// The format-2 media type of this role's blob.
    pub fn media_type(self) -> &'static str {
        match self {
            Role::Kernel => "application/vnd.moonboot.linux.kernel.v1",
            Role::Initramfs => "application/vnd.moonboot.linux.initramfs.v1",
            Role::Cmdline => "application/vnd.moonboot.linux.cmdline.v1",
        }
    }

    /// The role whose format-2 media type is `media_type`.
    pub fn from_media_type(media_type: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.media_type() == media_type)
    }

    /// The format-2 blob's `org.opencontainers.image.title`: the file name `oras pull` writes.
    pub fn title(self) -> &'static str {
        self.as_str()
    }

    /// The path of the one file inside a format-1 layer's tar.
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
        let mut annotations = manifest_annotations("v1.10.5", "abc", &ext, "2025-07-01T00:00:00Z");
        annotations.insert(ANNOTATION_FORMAT.into(), "1".into());
        let mut m = ImageManifest::new(Descriptor::of(CONFIG_MEDIA_TYPE, b"{}"), layers, annotations);
        let v1 = boot_layers(&m).unwrap().unwrap();
        assert_eq!(v1.format, 1);
        assert_eq!(
            v1.get(Role::Kernel),
            BootBlob::InTar { layer: &m.layers[2], path: "boot/kernel" },
            "format 1: the tar layer annotated kernel"
        );
        m.annotations.insert(ANNOTATION_FORMAT.into(), "3".into());
        assert_eq!(
            boot_layers(&m).unwrap_err().to_string(),
            "boot artifact format 3 is newer than this moonboot reads (formats 1 and 2): upgrade talos-agent / imager"
        );
        m.annotations.remove(ANNOTATION_FORMAT);
        assert_eq!(boot_layers(&m), Ok(None), "no format annotation, no artifact type: not a boot artifact");
        assert!(!is_boot_artifact(&m));
    }

    /// A format-2 manifest as `oras push --artifact-type` makes it: no moonboot annotations,
    /// layers in any order, each found by media type.
    #[test]
    fn format_2_blobs_are_found_by_media_type_and_anything_else_is_refused() {
        let raw = |r: Role| {
            let mut d = Descriptor::of(r.media_type(), r.as_str().as_bytes());
            d.annotations.insert(crate::oci::ANNOTATION_TITLE.into(), r.title().into());
            d
        };
        let mut m = ImageManifest::new(
            Descriptor::of(media_type::OCI_EMPTY, b"{}"),
            vec![raw(Role::Cmdline), raw(Role::Kernel), raw(Role::Initramfs)],
            BTreeMap::new(),
        );
        assert_eq!(boot_layers(&m), Ok(None), "without the artifact type it is just an image");
        m.artifact_type = Some(ARTIFACT_TYPE.into());
        let v2 = boot_layers(&m).unwrap().unwrap();
        assert_eq!(v2.format, 2);
        for r in Role::ALL {
            assert_eq!(v2.get(r).descriptor().digest, Sha256Digest::of(r.as_str().as_bytes()));
            assert!(matches!(v2.get(r), BootBlob::Raw(_)));
        }
        let mut extra = m.clone();
        extra.layers.push(Descriptor::of("application/octet-stream", b"x"));
        assert_eq!(
            boot_layers(&extra).unwrap_err().to_string(),
            "boot artifact layers[3]: media type application/octet-stream is not a kernel, initramfs or cmdline blob"
        );
        let mut twice = m.clone();
        twice.layers.push(raw(Role::Kernel));
        assert_eq!(boot_layers(&twice).unwrap_err().to_string(), "boot artifact (format 2) has two kernel layers");
        let mut missing = m.clone();
        missing.layers.remove(0);
        assert_eq!(
            boot_layers(&missing).unwrap_err().to_string(),
            "boot artifact (format 2) has no cmdline layer (media type application/vnd.moonboot.linux.cmdline.v1)"
        );
        let mut newer = m.clone();
        newer.artifact_type = Some("application/vnd.moonboot.boot.v3".into());
        assert!(matches!(boot_layers(&newer), Err(ArtifactError::Newer(_))));
    }
}
