//! Talos system extensions: manifests, validation, and (later) assembly into the initramfs.

pub mod manifest;
pub mod service;
pub mod tree;

pub use manifest::{Manifest, ManifestError, Metadata};
