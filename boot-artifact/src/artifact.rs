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

/// The prefix of every moonboot-specific annotation key.
pub const VENDOR_PREFIX: &str = "dev.moonboot.";

/// Media type of each boot artifact layer: an uncompressed tar holding one file.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of the boot artifact's image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

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
}
