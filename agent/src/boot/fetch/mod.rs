//! Getting the next kernel, initramfs and default command line into memfds, verified.
//!
//! Three kinds of source (ARCHITECTURE.md "The boot artifact"):
//! - a **boot artifact** (`boot_artifact::artifact`): format 2, three raw blobs found by media
//!   type, each streamed into its memfd and hashed once (the blob digest is the file's); format 1,
//!   three one-file tar layers found by their `dev.moonboot.boot.role` annotation;
//! - a **stock Talos image**: an imager image with `usr/install/<arch>/{vmlinuz,initramfs.xz}`
//!   (Talos `pkg/imager/profile/input.go`), or an installer image with the UKI
//!   `usr/install/<arch>/vmlinuz.efi` (Talos ≥ 1.10, `pkg/imager/out.go`), whose `.linux`,
//!   `.initrd` and `.cmdline` PE sections are used; every layer is searched;
//! - plain **URLs** with sha256 sums.
//!
//! Every blob streams from the network through sha256 (in `moonboot_registry`, or here for URLs)
//! and, on a separate thread ([`channel`]), through the shared layer reader
//! ([`boot_artifact::layer`]: compression from magic bytes, bounded decompression, path cleaning,
//! OCI whiteouts) into memfds: no temporary files, no whole-blob buffers. Nothing is used before
//! every blob's digest has been checked. A wanted file larger than its limit, a layer
//! decompressing past [`boot_artifact::layer::expansion_limit`], a wanted path that is a symlink,
//! hard link or device, and a path with `..` are refused; a file a later layer deletes (`.wh.`)
//! or replaces is not the one booted — the imager reads images with the same reader.
//!
//! - [`channel`]: the download → extractor hand-off;
//! - [`layer`]: one layer, downloaded and extracted concurrently;
//! - [`image`]: an image reference (boot artifact, Talos imager image, installer UKI);
//! - [`url`]: kernel and initramfs by URL.

mod channel;
mod image;
mod layer;
mod url;

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::kernel;
use boot_artifact::reference::Reference;
use serde::Serialize;

pub use image::fetch_image;
pub use url::fetch_urls;

/// Largest kernel accepted (raw or unpacked), in bytes.
pub const MAX_KERNEL_SIZE: u64 = kernel::DEFAULT_MAX_KERNEL_SIZE;
/// Largest initramfs accepted, in bytes.
pub const MAX_INITRAMFS_SIZE: u64 = 2 << 30;
/// Largest UKI accepted, in bytes.
pub const MAX_UKI_SIZE: u64 = MAX_KERNEL_SIZE + MAX_INITRAMFS_SIZE;
/// Largest default command line read from an artifact or UKI, in bytes.
pub const MAX_CMDLINE_SIZE: u64 = 4096;

/// Why fetching failed; [`Error::exit_code`] maps each to the documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not serve the reference or a blob.
    #[error(transparent)]
    Registry(#[from] moonboot_registry::Error),
    /// A URL could not be fetched.
    #[error("{url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why (after retries).
        reason: String,
    },
    /// Bytes fetched by URL did not match the sha256 given.
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual}")]
    UrlDigest {
        /// The URL.
        url: String,
        /// The `--*-sha256` value.
        expected: Sha256Digest,
        /// What arrived.
        actual: Sha256Digest,
    },
    /// The image is not something that can be booted (names what is missing or wrong).
    #[error("{0}")]
    Content(String),
    /// A layer broke a safety rule (hostile path, link at a wanted path, size or decompression
    /// bound, not a tar); the refusal names its cause.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer's digest.
        digest: Sha256Digest,
        /// The rule broken.
        source: boot_artifact::layer::LayerError,
    },
    /// The kernel is not loadable (format, decompression).
    #[error("kernel: {0}")]
    Kernel(#[from] kernel::KernelError),
    /// A memfd could not be created or written.
    #[error("memfd: {0}")]
    Memfd(io::Error),
}

impl Error {
    /// The exit code `talos-agent boot` documents for this error: 3 unreachable source,
    /// 4 verification failure, 5 invalid content.
    pub fn exit_code(&self) -> u8 {
        use super::exit;
        use moonboot_registry::Error as R;
        match self {
            Error::Registry(R::DigestMismatch { .. } | R::SizeMismatch { .. } | R::Signature { .. })
            | Error::UrlDigest { .. } => exit::VERIFY,
            Error::Registry(
                R::Unavailable { .. }
                | R::AuthFile(_)
                | R::CaFile { .. }
                | R::Tls { .. }
                | R::Push { .. }
                | R::Unauthorized { .. },
            ) => exit::UNAVAILABLE,
            Error::Url { .. } => exit::UNAVAILABLE,
            Error::Memfd(_) => exit::INTERNAL,
            _ => exit::CONTENT,
        }
    }
}

/// Where the boot files come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An OCI reference: a boot artifact, or a stock Talos imager/installer image.
    Image(Reference),
    /// Plain URLs with their sha256 sums.
    Urls {
        /// Kernel URL.
        kernel: String,
        /// Its sha256.
        kernel_sha256: Sha256Digest,
        /// Initramfs URL.
        initrd: String,
        /// Its sha256.
        initrd_sha256: Sha256Digest,
    },
}

/// What kind of image the reference named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A moonboot boot artifact.
    BootArtifact,
    /// A Talos imager image (`vmlinuz` + `initramfs.xz`).
    TalosImager,
    /// A Talos installer image with a UKI.
    TalosUki,
    /// `--kernel`/`--initrd` URLs.
    Urls,
}

/// One verified blob, for the plan.
#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    /// `sha256:…`.
    pub digest: String,
    /// Bytes transferred and hashed.
    pub size: u64,
    /// Media type (or `url`).
    pub media_type: String,
    /// Seconds the transfer took.
    pub seconds: f64,
}

/// A file in a memfd, with the sha256 of its bytes.
#[derive(Debug)]
pub struct Memfile {
    /// The memfd, positioned anywhere.
    pub file: File,
    /// Length in bytes.
    pub len: u64,
    /// sha256 of the content.
    pub sha256: Sha256Digest,
}

/// Everything fetched and verified, ready for the command line and kexec.
#[derive(Debug)]
pub struct Fetched {
    /// The source's kind.
    pub kind: Kind,
    /// The resolution (for image sources).
    pub resolved: Option<ResolvedReport>,
    /// The loadable kernel (raw arm64 `Image` or bzImage).
    pub kernel: Memfile,
    /// How the kernel arrived (`EfiZboot(zstd)`, `Arm64Image`, `BzImage`…).
    pub kernel_container: String,
    /// The initramfs.
    pub initramfs: Memfile,
    /// The default command line of an artifact or UKI.
    pub cmdline: Option<String>,
    /// The blobs transferred.
    pub blobs: Vec<BlobReport>,
}

/// Where an image reference resolved to.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedReport {
    /// The reference as given.
    pub reference: String,
    /// The registry that served it (mirror or origin).
    pub endpoint: String,
    /// The index digest, if the reference named an index.
    pub index_digest: Option<String>,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The manifest's annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The boot artifact format read (1: one-file tar layers, 2: raw blobs), for a boot artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_artifact_format: Option<u32>,
    /// The cosign signature that verified, with `--signature-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<moonboot_registry::VerifiedSignature>,
}

/// A new memfd named `name` (close-on-exec).
fn memfd(name: &str) -> Result<File, Error> {
    let fd: OwnedFd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::Memfd(io::Error::from(e)))?;
    Ok(File::from(fd))
}
