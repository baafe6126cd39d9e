//! The contract between `imager` and `talos-agent`, and the kernel formats both must read.
//!
//! - [`artifact`]: the boot artifact contract (layers, roles, annotations) between imager and agent.
//! - [`cosign`]: cosign's legacy image signatures (payload, key, verify, sign), with no network.
//! - [`digest`]: `sha256:` digests and a writer that verifies size and digest while streaming.
//! - [`oci`]: the one OCI data model (media types, descriptor, manifest, index, platform).
//! - [`layer`]: the one reader of OCI tar layers (compression from magic bytes, bounds, path
//!   cleaning, whiteouts, hostile entries).
//! - [`kernel`]: recognise and unpack what Talos ships as a kernel — an arm64 EFI zboot PE
//!   (Talos ≥ 1.8), a gzip'd or raw arm64 `Image`, an x86 bzImage — with bounded decompression.
//! - [`pe`]: the PE/COFF section table, enough to take `.linux`, `.initrd` and `.cmdline` out of
//!   a Talos UKI (`vmlinuz.efi`, Talos ≥ 1.10 installer images).
//! - [`hybrid_mbr`]: the Raspberry Pi hybrid MBR (slot 1 FAT over the boot partition, slot 2
//!   0xEE), Talos's `writePMBR` change to it, and the check and repair both binaries use.
//! - [`reference`]: OCI image references, registry mirrors and which registries to try in order.
//!
//! This crate stays small and free of network or async code: the agent links it into a static
//! binary that must stay under a few MiB.

#![deny(missing_docs)]

pub mod artifact;
pub mod cosign;
pub mod digest;
pub mod hybrid_mbr;
pub mod kernel;
pub mod layer;
pub mod oci;
pub mod pe;
pub mod reference;

/// Renders an error with its chain of causes on one line (`a: b: c`), leaving out a cause whose
/// text the line already contains (many errors name their source in their own message). Both
/// binaries print their one failure line with it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
