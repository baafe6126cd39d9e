//! Reading OCI image layouts: `oci-layout`, `index.json` and `blobs/sha256/<hex>`, with every
//! blob checked against its descriptor's size and digest, and every JSON document read with a
//! size bound.
//!
//! Format facts (OCI image-spec v1.1):
//! - `image-layout.md`: a layout directory holds `oci-layout` (`{"imageLayoutVersion": "1.0.0"}`),
//!   `index.json` (an image index) and `blobs/<alg>/<encoded>`; a tag is the
//!   `org.opencontainers.image.ref.name` annotation of an `index.json` entry.
//! - `image-index.md`: an index lists manifests (or nested indexes), each with an optional
//!   `platform` (`architecture`, `os`, optional `variant`).
//! - `manifest.md` / `config.md`: an image manifest names its config and layers by descriptor; the
//!   config's `architecture` and `os` say which platform the image is for when the index entry
//!   carries no `platform`.
//! - `descriptor.md`: a descriptor is `mediaType`, `digest`, `size` (bytes), optional
//!   `annotations`; readers must verify the content against size and digest.
//!
//! Docker's v2 schema 2 manifest and manifest list (`application/vnd.docker.distribution.manifest.v2+json`,
//! `…manifest.list.v2+json`) have the same JSON shape and are read the same way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use boot_artifact::digest::{Sha256Digest, VerifyError, VerifyingWriter};
use boot_artifact::oci::{
    media_type, Descriptor, ImageConfig, ImageIndex, ImageManifest, ParseError, Platform, ANNOTATION_REF_NAME,
};
use serde::Serialize;

/// The only `imageLayoutVersion` image-spec defines.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// Bound on `index.json`, manifests, indexes and configs read from a layout: 4 MiB (the
/// manifest size limit of Docker Distribution and containerd).
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;
/// How deep indexes may nest inside `index.json` before the layout is refused.
const MAX_INDEX_DEPTH: usize = 4;

/// Why a layout or one of its blobs was not read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file of the layout could not be read.
    #[error("reading {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// The directory has no `oci-layout` file.
    #[error("{0} is not an OCI image layout (no oci-layout file)")]
    NotALayout(PathBuf),
    /// `oci-layout` names a version other than [`LAYOUT_VERSION`].
    #[error("{path}: unsupported imageLayoutVersion {version:?} (only {LAYOUT_VERSION})")]
    UnsupportedVersion {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version it names.
        version: String,
    },
    /// A JSON document does not parse as what it should be; names the field.
    #[error("{what} {path}: {error}")]
    Json {
        /// What was expected (`index.json`, `image manifest`, …).
        what: &'static str,
        /// Where it was read from.
        path: PathBuf,
        /// The field and what is wrong with it.
        error: ParseError,
    },
    /// A blob is larger than the bound for what it is.
    #[error("{what} {digest} is {size} bytes, more than the {limit}-byte bound")]
    TooLarge {
        /// What the blob is.
        what: &'static str,
        /// Its digest.
        digest: Sha256Digest,
        /// Its size in bytes as the descriptor says.
        size: u64,
        /// The bound in bytes.
        limit: u64,
    },
    /// A blob does not match its descriptor.
    #[error("blob {path}: {error}")]
    Verify {
        /// The blob file.
        path: PathBuf,
        /// Size or digest mismatch.
        error: VerifyError,
    },
    /// Indexes nest deeper than the bound (or refer to each other).
    #[error("{0}: image indexes nest more than {MAX_INDEX_DEPTH} levels deep")]
    TooDeep(PathBuf),
    /// No image manifest for the platform that was asked for.
    #[error("{dir}: no image for {wanted} (the layout holds: {available})")]
    NoImage {
        /// The layout.
        dir: PathBuf,
        /// The platform asked for, or `any platform`.
        wanted: String,
        /// The platforms present, comma-separated.
        available: String,
    },
    /// Several images and no architecture to choose by.
    #[error("{dir}: holds images for {available}; choose one with --arch")]
    Ambiguous {
        /// The layout.
        dir: PathBuf,
        /// The platforms present, comma-separated.
        available: String,
    },
}

/// A [`Read`] adapter that checks a blob while it is read: it refuses bytes beyond the expected
/// size, and at end of stream reports a short or wrong blob as an [`io::ErrorKind::InvalidData`]
/// error wrapping the [`VerifyError`]. Content is trustworthy only once a read returned `Ok(0)`;
/// call [`BlobReader::finish`] to drain and check the rest after a parser stopped early.
pub struct BlobReader<R> {
    inner: R,
    check: Option<VerifyingWriter<io::Sink>>,
}

impl<R: Read> BlobReader<R> {
    /// Checks what `inner` yields against `digest` and `size` bytes.
    pub fn new(inner: R, digest: Sha256Digest, size: u64) -> BlobReader<R> {
        BlobReader { inner, check: Some(VerifyingWriter::new(io::sink(), digest, Some(size))) }
    }

    /// Reads whatever is left and checks size and digest.
    ///
    /// # Errors
    /// The read error, or [`io::ErrorKind::InvalidData`] wrapping a [`VerifyError`].
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(check) = self.check.as_mut() else {
            return Ok(0);
        };
        let n = self.inner.read(buf)?;
        if n == 0 {
            let check = self.check.take().expect("checked above");
            check.finish().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(0);
        }
        check.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Turns the [`io::Error`] of a [`BlobReader`] back into the [`VerifyError`] it carries, if any.
pub fn verify_error(err: &io::Error) -> Option<&VerifyError> {
    err.get_ref().and_then(|e| e.downcast_ref::<VerifyError>())
}

/// Classifies an error of reading a [`BlobReader`] over the file at `path`.
pub fn blob_error(path: PathBuf, err: io::Error) -> LayoutError {
    if verify_error(&err).is_some() {
        let inner = err.into_inner().expect("an error with a VerifyError inside");
        let v = inner.downcast::<VerifyError>().expect("checked by verify_error");
        return LayoutError::Verify { path, error: *v };
    }
    LayoutError::Io { path, error: err }
}

/// One image manifest found in a layout, with its platform.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The manifest's descriptor, `platform` filled in from the index entry or, failing that,
    /// from the config.
    pub descriptor: Descriptor,
    /// Digest of the index that lists it, unless `index.json` points at it directly.
    pub index_digest: Option<Sha256Digest>,
    /// The tag (`org.opencontainers.image.ref.name`) of the `index.json` entry it was reached
    /// through, if any.
    pub tag: Option<String>,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The manifest's bytes exactly as stored (their sha256 is the manifest digest).
    pub manifest_bytes: Vec<u8>,
}

impl LayoutImage {
    /// The image's platform (always set by [`OciLayout::images`]).
    pub fn platform(&self) -> Platform {
        self.descriptor.platform.clone().unwrap_or_else(|| Platform::linux("unknown"))
    }
}

/// An OCI image layout on disk, opened for reading.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
    index: ImageIndex,
}

fn read_file_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, LayoutError> {
    let io_err = |error| LayoutError::Io { path: path.to_path_buf(), error };
    let file = File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(io_err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes"))));
    }
    Ok(bytes)
}

impl OciLayout {
    /// Whether `dir` looks like an OCI image layout (has an `oci-layout` file).
    pub fn is_layout(dir: &Path) -> bool {
        dir.join("oci-layout").is_file()
    }

    /// Opens the layout at `dir`: checks `oci-layout` and reads `index.json`.
    ///
    /// # Errors
    /// [`LayoutError::NotALayout`], [`LayoutError::UnsupportedVersion`], [`LayoutError::Io`],
    /// [`LayoutError::Json`].
    pub fn open(dir: &Path) -> Result<OciLayout, LayoutError> {
        let marker = dir.join("oci-layout");
        if !marker.is_file() {
            return Err(LayoutError::NotALayout(dir.to_path_buf()));
        }
        #[derive(serde::Deserialize)]
        struct Marker {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let bytes = read_file_bounded(&marker, 64 << 10)?;
        let m: Marker = serde_json::from_slice(&bytes).map_err(|e| LayoutError::Json {
            what: "oci-layout",
            path: marker.clone(),
            error: ParseError { field: "imageLayoutVersion".into(), reason: e.to_string() },
        })?;
        if m.version != LAYOUT_VERSION {
            return Err(LayoutError::UnsupportedVersion { path: marker, version: m.version });
        }
        let index_path = dir.join("index.json");
        let bytes = read_file_bounded(&index_path, MAX_DOCUMENT_SIZE)?;
        let index = ImageIndex::parse(&bytes, Some(media_type::OCI_INDEX)).map_err(|error| LayoutError::Json {
            what: "index.json",
            path: index_path,
            error,
        })?;
        Ok(OciLayout { dir: dir.to_path_buf(), index })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// Where the blob with `digest` is stored: `blobs/sha256/<hex>`.
    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    /// Opens the blob `desc` names as a reader that verifies size and digest as it is read
    /// (see [`BlobReader`]).
    ///
    /// # Errors
    /// [`LayoutError::Io`] when the blob file is missing or unreadable.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader<io::BufReader<File>>, LayoutError> {
        let path = self.blob_path(&desc.digest);
        let file = File::open(&path).map_err(|error| LayoutError::Io { path, error })?;
        Ok(BlobReader::new(io::BufReader::with_capacity(256 << 10, file), desc.digest, desc.size))
    }

    /// Reads the whole blob `desc` names, verified, refusing descriptors over `limit` bytes.
    ///
    /// # Errors
    /// [`LayoutError::TooLarge`], [`LayoutError::Io`], [`LayoutError::Verify`].
    pub fn read_blob(&self, desc: &Descriptor, what: &'static str, limit: u64) -> Result<Vec<u8>, LayoutError> {
        if desc.size > limit {
            return Err(LayoutError::TooLarge { what, digest: desc.digest, size: desc.size, limit });
        }
        let path = self.blob_path(&desc.digest);
        let mut reader = self.open_blob(desc)?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        reader.read_to_end(&mut bytes).map_err(|e| blob_error(path.clone(), e))?;
        Ok(bytes)
    }

    fn read_json<T>(
        &self,
        desc: &Descriptor,
        what: &'static str,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<(T, Vec<u8>), LayoutError> {
        let bytes = self.read_blob(desc, what, MAX_DOCUMENT_SIZE)?;
        let value =
            parse(&bytes).map_err(|error| LayoutError::Json { what, path: self.blob_path(&desc.digest), error })?;
        Ok((value, bytes))
    }

    /// Reads and parses the image manifest `desc` names.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`], and [`LayoutError::Json`].
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<(ImageManifest, Vec<u8>), LayoutError> {
        self.read_json(desc, "image manifest", |b| ImageManifest::parse(b, Some(&desc.media_type)))
    }

    /// Reads the platform fields of the image config `desc` names.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`], and [`LayoutError::Json`].
    pub fn read_config(&self, desc: &Descriptor) -> Result<ImageConfig, LayoutError> {
        self.read_json(desc, "image config", ImageConfig::parse).map(|(c, _)| c)
    }

    /// Every image manifest the layout holds, reached from `index.json` through nested indexes, in
    /// index order, each once (by digest), with its platform. Entries of other media types
    /// (signatures, attestations of unknown kinds) are left out.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`], [`LayoutError::Json`], [`LayoutError::TooDeep`].
    pub fn images(&self) -> Result<Vec<LayoutImage>, LayoutError> {
        let mut out: Vec<LayoutImage> = Vec::new();
        for top in &self.index.manifests {
            let tag = top.annotations.get(ANNOTATION_REF_NAME).cloned();
            self.walk(top, None, &tag, 0, &mut out)?;
        }
        Ok(out)
    }

    fn walk(
        &self,
        desc: &Descriptor,
        parent: Option<Sha256Digest>,
        tag: &Option<String>,
        depth: usize,
        out: &mut Vec<LayoutImage>,
    ) -> Result<(), LayoutError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(LayoutError::TooDeep(self.dir.clone()));
        }
        if media_type::is_index(&desc.media_type) {
            let (index, _) = self.read_json(desc, "image index", |b| ImageIndex::parse(b, Some(&desc.media_type)))?;
            for child in &index.manifests {
                self.walk(child, Some(desc.digest), tag, depth + 1, out)?;
            }
        } else if media_type::is_manifest(&desc.media_type) {
            if out.iter().any(|i| i.descriptor.digest == desc.digest) {
                return Ok(());
            }
            let (manifest, manifest_bytes) = self.read_manifest(desc)?;
            let mut descriptor = desc.clone();
            if descriptor.platform.is_none() {
                let config = self.read_config(&manifest.config)?;
                descriptor.platform = Some(config.platform());
            }
            out.push(LayoutImage { descriptor, index_digest: parent, tag: tag.clone(), manifest, manifest_bytes });
        }
        Ok(())
    }

    /// The `linux/<arch>` image, or with `arch` `None` the only image the layout holds.
    ///
    /// # Errors
    /// [`LayoutError::NoImage`], [`LayoutError::Ambiguous`], and those of [`OciLayout::images`].
    pub fn resolve(&self, arch: Option<&str>) -> Result<LayoutImage, LayoutError> {
        let images = self.images()?;
        let available = || {
            let list: Vec<String> = images.iter().map(|i| i.platform().to_string()).collect();
            if list.is_empty() {
                "no image manifests".to_string()
            } else {
                list.join(", ")
            }
        };
        match arch {
            Some(arch) => images.iter().find(|i| i.platform().is_linux(arch)).cloned().ok_or_else(|| {
                LayoutError::NoImage { dir: self.dir.clone(), wanted: format!("linux/{arch}"), available: available() }
            }),
            None => match images.len() {
                1 => Ok(images[0].clone()),
                0 => Err(LayoutError::NoImage {
                    dir: self.dir.clone(),
                    wanted: "any platform".to_string(),
                    available: available(),
                }),
                _ => Err(LayoutError::Ambiguous { dir: self.dir.clone(), available: available() }),
            },
        }
    }
}

/// The image config `imager` writes (image-spec `config.md`): `created`, `architecture`, `os`, an
/// empty `config` and `rootfs.diff_ids` (the digests of the uncompressed layers), in this order.
#[derive(Serialize)]
struct ConfigDocument<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: BTreeMap<String, String>,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Sha256Digest>,
}

/// An OCI image layout being written (image-spec `image-layout.md`): `oci-layout`,
/// `blobs/sha256/<hex>` and, by [`LayoutWriter::finish_image`], `index.json` listing one image.
/// Documents are compact JSON with a fixed key order, so equal inputs give equal digests.
pub struct LayoutWriter<'p> {
    dir: &'p Path,
}

impl<'p> LayoutWriter<'p> {
    /// Creates `dir` with `oci-layout` and `blobs/sha256/`.
    ///
    /// # Errors
    /// I/O, with the path.
    pub fn create(dir: &'p Path) -> anyhow::Result<LayoutWriter<'p>> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        let marker = dir.join("oci-layout");
        std::fs::write(&marker, format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}"))
            .with_context(|| format!("writing {}", marker.display()))?;
        Ok(LayoutWriter { dir })
    }

    /// Stores `bytes` as a blob; returns its descriptor (no platform, no annotations).
    ///
    /// # Errors
    /// I/O, with the path.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> anyhow::Result<Descriptor> {
        let d = Descriptor::of(media_type, bytes);
        let path = self.dir.join("blobs/sha256").join(d.digest.hex());
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(d)
    }

    /// Writes the image config (`linux/<arch>`, `created`, `diff_ids`), the image manifest over
    /// `layers` with `annotations`, and `index.json` listing the manifest with its platform and
    /// the tag `tag` (`org.opencontainers.image.ref.name`). Returns the manifest's descriptor with
    /// its platform.
    ///
    /// # Errors
    /// I/O, with the path.
    pub fn finish_image(
        self,
        arch: &str,
        created: &str,
        layers: Vec<Descriptor>,
        diff_ids: Vec<Sha256Digest>,
        annotations: BTreeMap<String, String>,
        tag: &str,
    ) -> anyhow::Result<Descriptor> {
        let config = ConfigDocument {
            created,
            architecture: arch,
            os: "linux",
            config: BTreeMap::new(),
            rootfs: RootFs { kind: "layers", diff_ids },
        };
        let config = self.blob(media_type::OCI_CONFIG, &serde_json::to_vec(&config)?)?;
        self.finish(arch, ImageManifest::new(config, layers, annotations), tag)
    }

    /// Writes an OCI 1.1 artifact (image-spec `manifest.md` "Guidelines for Artifact Usage":
    /// `artifactType`, the empty config `{}` stored as a blob) over `layers` with `annotations`,
    /// and `index.json` listing it with platform `linux/<arch>` and the tag `tag`. The index entry
    /// has no `artifactType` (see [`crate::publish::index_bytes`]). Returns the manifest's
    /// descriptor with its platform.
    ///
    /// # Errors
    /// I/O, with the path.
    pub fn finish_artifact(
        self,
        arch: &str,
        artifact_type: &str,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
        tag: &str,
    ) -> anyhow::Result<Descriptor> {
        let config = self.blob(media_type::OCI_EMPTY, b"{}")?;
        let mut manifest = ImageManifest::new(config, layers, annotations);
        manifest.artifact_type = Some(artifact_type.to_string());
        self.finish(arch, manifest, tag)
    }

    fn finish(self, arch: &str, manifest: ImageManifest, tag: &str) -> anyhow::Result<Descriptor> {
        let mut desc = self.blob(media_type::OCI_MANIFEST, &manifest.to_json())?;
        desc.platform = Some(Platform::linux(arch));
        let mut entry = desc.clone();
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), tag.into());
        let path = self.dir.join("index.json");
        std::fs::write(&path, ImageIndex::new(vec![entry]).to_json())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_artifact::oci::media_type::{OCI_CONFIG as CONFIG_MEDIA_TYPE, OCI_INDEX as INDEX_MEDIA_TYPE};

    struct Writer {
        dir: tempfile::TempDir,
    }

    impl Writer {
        fn new() -> Writer {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
            std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
            Writer { dir }
        }

        fn put(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
            let d = Descriptor::of(media_type, bytes);
            std::fs::write(self.dir.path().join("blobs/sha256").join(d.digest.hex()), bytes).unwrap();
            d
        }

        fn image(&self, arch: &str, layer: &[u8]) -> Descriptor {
            let config = self.put(CONFIG_MEDIA_TYPE, format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).as_bytes());
            let layer = self.put("application/vnd.oci.image.layer.v1.tar", layer);
            let m = ImageManifest::new(config, vec![layer], BTreeMap::new());
            self.put(media_type::OCI_MANIFEST, &m.to_json())
        }

        fn index_json(&self, manifests: Vec<Descriptor>) {
            std::fs::write(self.dir.path().join("index.json"), ImageIndex::new(manifests).to_json()).unwrap();
        }
    }

    #[test]
    fn finds_images_directly_and_through_nested_indexes() {
        let w = Writer::new();
        let arm = w.image("arm64", b"arm layer");
        let amd = w.image("amd64", b"amd layer");
        // Nested index with platforms on the entries; the arm64 manifest also listed directly.
        let mut arm_p = arm.clone();
        arm_p.platform = Some(Platform::linux("arm64"));
        let mut amd_p = amd.clone();
        amd_p.platform = Some(Platform::linux("amd64"));
        let nested = ImageIndex::new(vec![arm_p, amd_p]);
        let mut nested_d = w.put(INDEX_MEDIA_TYPE, &nested.to_json());
        nested_d.annotations.insert(ANNOTATION_REF_NAME.into(), "v1".into());
        w.index_json(vec![nested_d.clone(), arm.clone()]);

        let layout = OciLayout::open(w.dir.path()).unwrap();
        let images = layout.images().unwrap();
        assert_eq!(images.len(), 2, "the arm64 manifest is listed once");
        let a = layout.resolve(Some("amd64")).unwrap();
        assert_eq!(a.descriptor.digest, amd.digest);
        assert_eq!(a.index_digest, Some(nested_d.digest));
        assert_eq!(a.tag.as_deref(), Some("v1"));
        assert_eq!(Sha256Digest::of(&a.manifest_bytes), amd.digest);
        assert!(matches!(layout.resolve(None), Err(LayoutError::Ambiguous { .. })));
        let err = layout.resolve(Some("riscv64")).unwrap_err().to_string();
        assert!(err.contains("linux/arm64, linux/amd64"), "{err}");

        // Platform from the config when index.json points at the manifest without one.
        let w2 = Writer::new();
        let only = w2.image("arm64", b"x");
        w2.index_json(vec![only.clone()]);
        let l2 = OciLayout::open(w2.dir.path()).unwrap();
        let i = l2.resolve(None).unwrap();
        assert_eq!(i.platform(), Platform::linux("arm64"));
        assert_eq!(i.index_digest, None);
        let layer = &i.manifest.layers[0];
        assert_eq!(l2.read_blob(layer, "layer", 100).unwrap(), b"x");
    }

    #[test]
    fn refuses_tampered_short_and_oversized_blobs() {
        let w = Writer::new();
        let m = w.image("arm64", b"original layer");
        w.index_json(vec![m]);
        let layout = OciLayout::open(w.dir.path()).unwrap();
        let layer = layout.resolve(Some("arm64")).unwrap().manifest.layers[0].clone();
        let path = layout.blob_path(&layer.digest);

        std::fs::write(&path, b"tampered layer").unwrap();
        let err = layout.read_blob(&layer, "layer", 1 << 20).unwrap_err();
        assert!(matches!(err, LayoutError::Verify { error: VerifyError::Mismatch { .. }, .. }), "{err}");

        std::fs::write(&path, b"short").unwrap();
        let err = layout.read_blob(&layer, "layer", 1 << 20).unwrap_err();
        assert!(matches!(err, LayoutError::Verify { error: VerifyError::Truncated { got: 5, .. }, .. }), "{err}");

        std::fs::write(&path, b"original layer plus more").unwrap();
        let mut r = layout.open_blob(&layer).unwrap();
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(matches!(verify_error(&err), Some(VerifyError::TooLong { .. })), "{err}");

        let err = layout.read_blob(&layer, "layer", 3).unwrap_err();
        assert!(matches!(err, LayoutError::TooLarge { limit: 3, .. }), "{err}");

        std::fs::write(w.dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
        assert!(matches!(OciLayout::open(w.dir.path()), Err(LayoutError::UnsupportedVersion { .. })));
        assert!(matches!(OciLayout::open(&w.dir.path().join("blobs")), Err(LayoutError::NotALayout(_))));
    }
}
