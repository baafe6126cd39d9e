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

use boot_artifact::artifact::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use boot_artifact::digest::{Sha256Digest, VerifyError, VerifyingWriter};
use serde::{Deserialize, Serialize};

/// Docker's image manifest media type (same shape as an OCI image manifest).
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list media type (same shape as an OCI image index).
pub const DOCKER_MANIFEST_LIST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The index annotation that names a tag (image-spec `annotations.md`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The only `imageLayoutVersion` image-spec defines.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// Bound on `index.json`, manifests, indexes and configs read from a layout: 4 MiB (the
/// manifest size limit of Docker Distribution and containerd).
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;
/// How deep indexes may nest inside `index.json` before the layout is refused.
const MAX_INDEX_DEPTH: usize = 4;

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    #[serde(with = "digest_string")]
    pub digest: Sha256Digest,
    /// Size of the content in bytes.
    pub size: u64,
    /// Platform of a manifest listed in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `bytes` with `media_type`, no platform and no annotations.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Sha256Digest::of(bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI platform (image-spec `image-index.md`); `architecture` and `os` use Go's
/// `GOARCH`/`GOOS` spelling (`arm64`, `amd64`, `linux`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `arm64`, `amd64`, …
    pub architecture: String,
    /// `linux`, …
    pub os: String,
    /// CPU variant (`v8`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>` without variant.
    pub fn linux(arch: &str) -> Platform {
        Platform { architecture: arch.to_string(), os: "linux".to_string(), variant: None }
    }
}

impl std::fmt::Display for Platform {
    /// `os/architecture[/variant]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (image-spec `manifest.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's media type, when written (it should be).
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (image-spec `image-index.md`), also the shape of a layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`], when written.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The fields of an image config (image-spec `config.md`) that say what platform it is for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    /// `arm64`, `amd64`, …
    #[serde(default)]
    pub architecture: String,
    /// `linux`, …
    #[serde(default)]
    pub os: String,
    /// CPU variant, when given.
    #[serde(default)]
    pub variant: Option<String>,
}

/// Whether `media_type` is an image manifest (OCI or Docker v2 schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MANIFEST_MEDIA_TYPE || media_type == DOCKER_MANIFEST_MEDIA_TYPE
}

/// Whether `media_type` is an image index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == INDEX_MEDIA_TYPE || media_type == DOCKER_MANIFEST_LIST_MEDIA_TYPE
}

mod digest_string {
    use boot_artifact::digest::Sha256Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Sha256Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sha256Digest, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
    /// A JSON document does not parse as what it should be.
    #[error("{what} {path}: {error}")]
    Json {
        /// What was expected (`index.json`, `image manifest`, …).
        what: &'static str,
        /// Where it was read from.
        path: PathBuf,
        /// The parser's message.
        error: serde_json::Error,
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
        #[derive(Deserialize)]
        struct Marker {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let bytes = read_file_bounded(&marker, 64 << 10)?;
        let m: Marker = serde_json::from_slice(&bytes).map_err(|error| LayoutError::Json {
            what: "oci-layout",
            path: marker.clone(),
            error,
        })?;
        if m.version != LAYOUT_VERSION {
            return Err(LayoutError::UnsupportedVersion { path: marker, version: m.version });
        }
        let index_path = dir.join("index.json");
        let bytes = read_file_bounded(&index_path, MAX_DOCUMENT_SIZE)?;
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|error| LayoutError::Json {
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

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &'static str,
    ) -> Result<(T, Vec<u8>), LayoutError> {
        let bytes = self.read_blob(desc, what, MAX_DOCUMENT_SIZE)?;
        let value = serde_json::from_slice(&bytes).map_err(|error| LayoutError::Json {
            what,
            path: self.blob_path(&desc.digest),
            error,
        })?;
        Ok((value, bytes))
    }

    /// Reads and parses the image manifest `desc` names.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`], and [`LayoutError::Json`].
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<(ImageManifest, Vec<u8>), LayoutError> {
        self.read_json(desc, "image manifest")
    }

    /// Reads the platform fields of the image config `desc` names.
    ///
    /// # Errors
    /// As [`OciLayout::read_blob`], and [`LayoutError::Json`].
    pub fn read_config(&self, desc: &Descriptor) -> Result<ImageConfig, LayoutError> {
        self.read_json(desc, "image config").map(|(c, _)| c)
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
        if is_index(&desc.media_type) {
            let (index, _): (ImageIndex, _) = self.read_json(desc, "image index")?;
            for child in &index.manifests {
                self.walk(child, Some(desc.digest), tag, depth + 1, out)?;
            }
        } else if is_manifest(&desc.media_type) {
            if out.iter().any(|i| i.descriptor.digest == desc.digest) {
                return Ok(());
            }
            let (manifest, manifest_bytes) = self.read_manifest(desc)?;
            let mut descriptor = desc.clone();
            if descriptor.platform.is_none() {
                let config = self.read_config(&manifest.config)?;
                descriptor.platform =
                    Some(Platform { architecture: config.architecture, os: config.os, variant: config.variant });
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
            Some(arch) => images
                .iter()
                .find(|i| {
                    let p = i.platform();
                    p.os == "linux" && p.architecture == arch
                })
                .cloned()
                .ok_or_else(|| LayoutError::NoImage {
                    dir: self.dir.clone(),
                    wanted: format!("linux/{arch}"),
                    available: available(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use boot_artifact::artifact::CONFIG_MEDIA_TYPE;

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
            let m = ImageManifest {
                schema_version: 2,
                media_type: Some(MANIFEST_MEDIA_TYPE.into()),
                config,
                layers: vec![layer],
                annotations: BTreeMap::new(),
            };
            self.put(MANIFEST_MEDIA_TYPE, &serde_json::to_vec(&m).unwrap())
        }

        fn index_json(&self, manifests: Vec<Descriptor>) {
            let i = ImageIndex {
                schema_version: 2,
                media_type: Some(INDEX_MEDIA_TYPE.into()),
                manifests,
                annotations: BTreeMap::new(),
            };
            std::fs::write(self.dir.path().join("index.json"), serde_json::to_vec(&i).unwrap()).unwrap();
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
        let nested = ImageIndex {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: vec![arm_p, amd_p],
            annotations: BTreeMap::new(),
        };
        let mut nested_d = w.put(INDEX_MEDIA_TYPE, &serde_json::to_vec(&nested).unwrap());
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
