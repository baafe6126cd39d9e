//! Pulling what a build needs from registries: the Talos imager image's boot files and extension
//! images, for one architecture, through [`moonboot_registry`] (mirrors, insecure hosts,
//! credentials, verified streaming).
//!
//! Layers are sniffed rather than trusted by media type: gzip (`1f 8b`), zstd (`28 b5 2f fd`) or
//! a plain tar. Every layer is read with the OCI whiteout rules, in order.

use std::io::{BufReader, Read, Seek, Write};
use std::path::Path;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::Reference;
use moonboot_registry::{Descriptor, Registry, Resolved};

use crate::extension::tree::{Tree, TreeError};

use super::progress::Progress;

/// Bound on the Talos `vmlinuz`: 256 MiB.
pub const MAX_KERNEL: u64 = 256 << 20;
/// Bound on the Talos `initramfs.xz`: 1 GiB.
pub const MAX_INITRAMFS: u64 = 1 << 30;
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
    /// The imager image lacks a boot file, or holds it as something other than a regular file.
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

/// A registry client with its own tokio runtime, used from synchronous code.
pub struct Puller {
    rt: tokio::runtime::Runtime,
    registry: Registry,
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

/// Wraps `r` in the decompressor its first bytes call for.
fn decompressed<'a, R: Read + 'a>(r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(1 << 16, r);
    let head = std::io::BufRead::fill_buf(&mut r)?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Strips `./` and leading `/` from a tar path; `None` for paths with `..` components.
fn clean(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
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
        Ok(Puller { rt, registry })
    }

    /// Resolves `r` to its `linux/<arch>` image manifest.
    ///
    /// # Errors
    /// [`PullError::Registry`].
    pub fn resolve(&self, r: &Reference, arch: &str) -> Result<Resolved, PullError> {
        Ok(self.rt.block_on(self.registry.resolve(r, arch))?)
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
    /// spooled through temporary files in `tmp`. Returns (vmlinuz, initramfs).
    ///
    /// # Errors
    /// [`PullError::BootFile`] when a file is missing, over its bound, or not a regular file.
    pub fn boot_files(
        &self,
        from: &Resolved,
        arch: &str,
        tmp: &Path,
        bar: &Progress,
    ) -> Result<(Vec<u8>, Vec<u8>), PullError> {
        let (kpath, ipath) = boot_artifact::artifact::imager_paths(arch);
        let reference = from.reference.to_string();
        let mut found: [Option<Vec<u8>>; 2] = [None, None];
        let bad = |reason: String| PullError::BootFile { reference: reference.clone(), reason };
        for d in &from.manifest.layers {
            let file = self.fetch_to_file(from, d, tmp, bar)?;
            let mut archive = tar::Archive::new(decompressed(file).map_err(io(format!("layer {}", d.digest)))?);
            let what = format!("reading layer {} of {reference}", d.digest);
            for entry in archive.entries().map_err(io(what.clone()))? {
                let mut entry = entry.map_err(io(what.clone()))?;
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(path) = clean(&raw) else { continue };
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                for (i, want) in [&kpath, &ipath].into_iter().enumerate() {
                    let hidden = match name.strip_prefix(".wh.") {
                        Some(".wh..opq") => parent.is_empty() || want.starts_with(&format!("{parent}/")),
                        Some(h) => {
                            let victim = if parent.is_empty() { h.to_string() } else { format!("{parent}/{h}") };
                            *want == victim || want.starts_with(&format!("{victim}/"))
                        }
                        None => false,
                    };
                    if hidden {
                        found[i] = None;
                    }
                    if path == *want {
                        if entry.header().entry_type() != tar::EntryType::Regular {
                            return Err(bad(format!(
                                "/{want} is a {:?}, not a regular file",
                                entry.header().entry_type()
                            )));
                        }
                        let limit = if i == 0 { MAX_KERNEL } else { MAX_INITRAMFS };
                        let size = entry.header().size().map_err(io(what.clone()))?;
                        if size > limit {
                            return Err(bad(format!("/{want} is {size} bytes, over the {limit}-byte bound")));
                        }
                        let mut data = Vec::with_capacity(size as usize);
                        entry.by_ref().take(limit).read_to_end(&mut data).map_err(io(what.clone()))?;
                        found[i] = Some(data);
                    }
                }
            }
        }
        let [k, i] = found;
        let k = k.ok_or_else(|| bad(format!("no /{kpath} in the image (is it a Talos imager image?)")))?;
        let i = i.ok_or_else(|| bad(format!("no /{ipath} in the image (is it a Talos imager image?)")))?;
        Ok((k, i))
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
            let layer = decompressed(&blob[..]).map_err(io(format!("layer {} of {reference}", d.digest)))?;
            tree.apply_layer(layer, crate::extension::tree::DEFAULT_MAX_UNPACKED)
                .map_err(|source| PullError::Layer { reference: reference.clone(), digest: d.digest, source })?;
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./usr/install/arm64/vmlinuz").unwrap(), "usr/install/arm64/vmlinuz");
        assert_eq!(clean("/usr//install/").unwrap(), "usr/install");
        assert!(clean("usr/../etc").is_none());
    }
}
