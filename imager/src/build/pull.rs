//! Pulling what a build needs from registries: the Talos imager image's boot files and extension
//! images, for one architecture, through [`moonboot_registry`] (mirrors, insecure hosts,
//! credentials, verified streaming).
//!
//! Layers are read by the shared layer reader ([`boot_artifact::layer`]): compression sniffed
//! from the bytes, decompression bounded, hostile paths refused, and the OCI whiteout rules
//! applied layer by layer — the same reader `talos-agent boot` uses, so both agree on which
//! `vmlinuz` an image holds.

use std::io::{Seek, Write};
use std::path::Path;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::layer::{self, LayerError, Wanted};
use boot_artifact::reference::Reference;
use moonboot_registry::{Descriptor, Registry, Resolved};

use crate::extension::tree::{Tree, TreeError};

use super::progress::Progress;

/// Bound on the Talos `vmlinuz`: 256 MiB.
pub const MAX_KERNEL: u64 = 256 << 20;
/// Bound on the Talos `initramfs.xz`: 1 GiB.
pub const MAX_INITRAMFS: u64 = 1 << 30;
/// Upper bound of `talos.spdx.json` (64 MiB; Talos's SBOM is a few hundred KiB).
pub const MAX_SBOM: u64 = 64 << 20;

/// What the Talos imager image holds for one architecture.
#[derive(Debug)]
pub struct BootFiles {
    /// `usr/install/<arch>/vmlinuz`.
    pub vmlinuz: Vec<u8>,
    /// `usr/install/<arch>/initramfs.xz`.
    pub initramfs: Vec<u8>,
    /// `usr/install/<arch>/talos.spdx.json`, the release's SPDX SBOM, in Talos ≥ 1.11 images
    /// (talos `Dockerfile`, stage `install-artifacts-<arch>`; `Quirk::Spdx`).
    pub sbom: Option<Vec<u8>>,
}

/// Where a Talos ≥ 1.11 imager image keeps its SPDX SBOM for `arch` (talos v1.11.0 `Dockerfile`:
/// `COPY --from=sbom-<arch> /talos-<arch>.spdx.json /usr/install/<arch>/talos.spdx.json`).
pub fn sbom_path(arch: &str) -> String {
    format!("usr/install/{arch}/talos.spdx.json")
}
/// Bound on one extension layer blob: 1 GiB.
pub const MAX_EXTENSION_LAYER: u64 = 1 << 30;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry failed (resolution, transfer, verification).
    #[error(transparent)]
    Registry(#[from] moonboot_registry::Error),
    /// A local I/O error (temporary files, decompression).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A layer of the imager image was refused (hostile path, bound, a boot file that is not a
    /// regular file).
    #[error("{reference}: layer {digest}: {source}")]
    BootLayer {
        /// The image.
        reference: String,
        /// The layer.
        digest: Sha256Digest,
        /// The refusal.
        source: LayerError,
    },
    /// A reference resolved to another digest than the `--lock` build.json recorded for it.
    #[error("{reference} moved: --lock {lock} pins {locked}, the registry now answers {now}")]
    Moved {
        /// The reference (a tag).
        reference: String,
        /// The lock file.
        lock: String,
        /// The digest the lock records.
        locked: Sha256Digest,
        /// The digest it resolved to now.
        now: Sha256Digest,
    },
    /// The imager image lacks a boot file.
    #[error("{reference}: {reason}")]
    BootFile {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// An extension layer was refused.
    #[error("{reference}: layer {digest}: {source}")]
    Layer {
        /// The image.
        reference: String,
        /// The layer.
        digest: Sha256Digest,
        /// The cause.
        source: TreeError,
    },
}

/// How the upstream inputs' cosign signatures are checked ([`Puller::resolve_signed`]).
#[derive(Debug, Clone, Default)]
pub enum SignaturePolicy {
    /// Not checked (no policy given): `build.json` says so.
    #[default]
    None,
    /// Not checked because `--insecure-skip-signature-verification` said so.
    Skip,
    /// Each signature must verify with this key (`--signature-key`) and sign the exact digest.
    Key(boot_artifact::cosign::PublicKey),
}

impl SignaturePolicy {
    /// `none`, `skipped` or `key`, as `build.json` records it.
    pub fn name(&self) -> &'static str {
        match self {
            SignaturePolicy::None => "none",
            SignaturePolicy::Skip => "skipped",
            SignaturePolicy::Key(_) => "key",
        }
    }
}

/// A registry client with its own tokio runtime, used from synchronous code.
pub struct Puller {
    rt: tokio::runtime::Runtime,
    registry: Registry,
    policy: SignaturePolicy,
    /// The signatures [`Puller::resolve_signed`] verified, in order.
    verified: std::sync::Mutex<Vec<moonboot_registry::VerifiedSignature>>,
    /// `--lock`: the file, and each reference's digest (the index's, else the manifest's) as an
    /// earlier build.json recorded it.
    lock: Option<(String, std::collections::BTreeMap<String, Sha256Digest>)>,
}

/// The digests an earlier build.json recorded: every object in it with a string `reference` and
/// `manifest_digest` (the Talos imager image, the bundles, the overlay, each extension), mapped to
/// its `index_digest` when it has one, else its `manifest_digest`.
///
/// # Errors
/// A digest that does not parse, or one reference recorded with two digests (naming it).
pub fn lock_from_build_json(
    doc: &serde_json::Value,
) -> Result<std::collections::BTreeMap<String, Sha256Digest>, String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                if let (Some(r), Some(d)) =
                    (m.get("reference").and_then(|r| r.as_str()), m.get("manifest_digest").and_then(|d| d.as_str()))
                {
                    let top = m.get("index_digest").and_then(|d| d.as_str()).unwrap_or(d);
                    out.push((r.to_string(), top.to_string()));
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(doc, &mut found);
    let mut lock = std::collections::BTreeMap::new();
    for (r, d) in found {
        let digest: Sha256Digest = d.parse().map_err(|_| format!("{r}: digest {d:?} does not parse"))?;
        if let Some(other) = lock.insert(r.clone(), digest) {
            if other != digest {
                return Err(format!("{r} is recorded with two digests, {other} and {digest}"));
            }
        }
    }
    Ok(lock)
}

/// A sink that advances a progress bar.
struct Counting<'a, W> {
    inner: W,
    bar: &'a Progress,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PullError {
    let what = what.into();
    move |source| PullError::Io { what, source }
}

impl Puller {
    /// A client for `options`.
    ///
    /// # Errors
    /// [`PullError::Registry`] (bad CA files, auth file), [`PullError::Io`] (runtime).
    pub fn new(options: moonboot_registry::Options) -> Result<Puller, PullError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io("starting the async runtime"))?;
        let registry = Registry::new(options)?;
        Ok(Puller { rt, registry, policy: SignaturePolicy::None, verified: Default::default(), lock: None })
    }

    /// The same client, refusing any reference in `digests` (from [`lock_from_build_json`] of
    /// the file `file`) that resolves to another digest ([`PullError::Moved`]).
    pub fn with_lock(mut self, file: String, digests: std::collections::BTreeMap<String, Sha256Digest>) -> Puller {
        self.lock = Some((file, digests));
        self
    }

    /// The same client, checking signatures as `policy` says in [`Puller::resolve_signed`].
    pub fn with_policy(mut self, policy: SignaturePolicy) -> Puller {
        self.policy = policy;
        self
    }

    /// [`Puller::resolve`], then, under a key policy, the cosign signature of the digest `r`
    /// pins (or its tag resolved to: the index's, for an index) must verify before anything
    /// else of the image is fetched; everything below that digest is bound to it by content
    /// address. The verified signature is kept for `build.json` ([`Puller::verified`]).
    ///
    /// # Errors
    /// [`PullError::Registry`], including [`moonboot_registry::Error::Signature`].
    pub fn resolve_signed(&self, r: &Reference, arch: &str) -> Result<Resolved, PullError> {
        let resolved = self.resolve(r, arch)?;
        if let SignaturePolicy::Key(key) = &self.policy {
            let signed = resolved.top_digest();
            let v = self.rt.block_on(self.registry.verify_cosign(r, &signed, key))?;
            self.verified.lock().expect("not poisoned").push(v);
        }
        Ok(resolved)
    }

    /// The signatures verified so far.
    pub fn verified(&self) -> Vec<moonboot_registry::VerifiedSignature> {
        self.verified.lock().expect("not poisoned").clone()
    }

    /// Resolves `r` to its `linux/<arch>` image manifest.
    ///
    /// # Errors
    /// [`PullError::Registry`].
    pub fn resolve(&self, r: &Reference, arch: &str) -> Result<Resolved, PullError> {
        let resolved = self.rt.block_on(self.registry.resolve(r, arch))?;
        if let Some((file, digests)) = &self.lock {
            if let Some(locked) = digests.get(&r.to_string()) {
                let now = resolved.top_digest();
                if now != *locked {
                    return Err(PullError::Moved {
                        reference: r.to_string(),
                        lock: file.clone(),
                        locked: *locked,
                        now,
                    });
                }
            }
        }
        Ok(resolved)
    }

    fn fetch_to_file(
        &self,
        from: &Resolved,
        d: &Descriptor,
        dir: &Path,
        bar: &Progress,
    ) -> Result<std::fs::File, PullError> {
        let mut file = tempfile::tempfile_in(dir).map_err(io("creating a temporary file"))?;
        {
            let mut sink = Counting { inner: std::io::BufWriter::with_capacity(1 << 20, &mut file), bar };
            self.rt.block_on(self.registry.fetch_blob(from, d, &mut sink))?;
            sink.flush().map_err(io("writing a temporary file"))?;
        }
        file.rewind().map_err(io("reading a temporary file"))?;
        Ok(file)
    }

    /// Takes `usr/install/<arch>/vmlinuz` and `usr/install/<arch>/initramfs.xz` out of the imager
    /// image `from` (layers applied in order; a later layer or a whiteout wins). Blobs are
    /// spooled through temporary files in `tmp`, and the SPDX SBOM when the image has one.
    ///
    /// # Errors
    /// [`PullError::BootFile`] when a file is missing; [`PullError::BootLayer`] when a layer is
    /// refused (a boot file over its bound or not a regular file, a hostile path, a bomb).
    pub fn boot_files(&self, from: &Resolved, arch: &str, tmp: &Path, bar: &Progress) -> Result<BootFiles, PullError> {
        let (kpath, ipath) = boot_artifact::artifact::imager_paths(arch);
        let reference = from.reference.to_string();
        let wanted = [
            Wanted::new(kpath.clone(), MAX_KERNEL),
            Wanted::new(ipath.clone(), MAX_INITRAMFS),
            Wanted::new(sbom_path(arch), MAX_SBOM),
        ];
        let mut layers = Vec::new();
        for d in &from.manifest.layers {
            let file = self.fetch_to_file(from, d, tmp, bar)?;
            let found = layer::extract(file, layer::expansion_limit(d.size), &wanted, layer::to_vec)
                .map_err(|source| PullError::BootLayer { reference: reference.clone(), digest: d.digest, source })?;
            layers.push(found);
        }
        let mut files = layer::stack(layers);
        let bad = |path: &str| PullError::BootFile {
            reference: reference.clone(),
            reason: format!("no /{path} in the image (is it a Talos imager image?)"),
        };
        let vmlinuz = files.remove(&kpath).ok_or_else(|| bad(&kpath))?;
        let initramfs = files.remove(&ipath).ok_or_else(|| bad(&ipath))?;
        Ok(BootFiles { vmlinuz, initramfs, sbom: files.remove(&sbom_path(arch)) })
    }

    /// Fetches a small blob of `from` into memory, verified, refusing descriptors over `limit`.
    ///
    /// # Errors
    /// [`PullError::Registry`], [`PullError::BootFile`] naming the bound.
    pub fn fetch_small(&self, from: &Resolved, d: &Descriptor, limit: u64) -> Result<Vec<u8>, PullError> {
        if d.size > limit {
            return Err(PullError::BootFile {
                reference: from.reference.to_string(),
                reason: format!("blob {} is {} bytes, over the {limit}-byte bound", d.digest, d.size),
            });
        }
        let mut v = Vec::with_capacity(d.size as usize);
        self.rt.block_on(self.registry.fetch_blob(from, d, &mut v))?;
        Ok(v)
    }

    /// Flattens the extension image `from` (layers in order, whiteouts applied, bounded).
    ///
    /// # Errors
    /// [`PullError::Layer`] for refused content; [`PullError::Registry`].
    pub fn extension_tree(&self, from: &Resolved, bar: &Progress) -> Result<Tree, PullError> {
        let reference = from.reference.to_string();
        let mut tree = Tree::new();
        for d in &from.manifest.layers {
            let mut blob = Vec::new();
            {
                let mut sink = Counting { inner: &mut blob, bar };
                if d.size > MAX_EXTENSION_LAYER {
                    return Err(PullError::Layer {
                        reference,
                        digest: d.digest,
                        source: TreeError::TooLarge { limit: MAX_EXTENSION_LAYER },
                    });
                }
                self.rt.block_on(self.registry.fetch_blob(from, d, &mut sink))?;
            }
            tree.apply_layer(&blob[..], crate::extension::tree::DEFAULT_MAX_UNPACKED)
                .map_err(|source| PullError::Layer { reference: reference.clone(), digest: d.digest, source })?;
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_takes_each_recorded_reference_and_refuses_two_digests() {
        let (a, b) = (Sha256Digest::of(b"index"), Sha256Digest::of(b"manifest"));
        let doc = serde_json::json!({
            "inputs": {
                "base": {"reference": "ghcr.io/siderolabs/imager:v1.10.5", "index_digest": a.to_string(), "manifest_digest": b.to_string()},
                "extensions": [{"image": {"reference": "ghcr.io/siderolabs/spin@sha256:x", "index_digest": null, "manifest_digest": b.to_string()}}],
            }
        });
        let lock = lock_from_build_json(&doc).unwrap();
        assert_eq!(lock["ghcr.io/siderolabs/imager:v1.10.5"], a, "the index digest when there is one");
        assert_eq!(lock["ghcr.io/siderolabs/spin@sha256:x"], b);
        let twice = serde_json::json!([
            {"reference": "r:t", "manifest_digest": a.to_string()},
            {"reference": "r:t", "manifest_digest": b.to_string()},
        ]);
        assert!(lock_from_build_json(&twice).unwrap_err().contains("two digests"));
    }
}
