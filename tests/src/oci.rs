//! A small writer of OCI image layouts (image-spec `image-layout.md`, `manifest.md`,
//! `image-index.md`, `config.md`) with reproducible gzip'd tar layers.
//!
//! Reproducible means: entries sorted by path, parents before children, mtime fixed, uid/gid 0,
//! no user/group names, fixed modes; gzip header with mtime 0, no file name, fixed OS byte.
//! JSON is written from typed structures, so key order never depends on a map implementation.

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `application/vnd.oci.image.index.v1+json`.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation naming a tag in a layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    boot_artifact::digest::Sha256Digest::of(bytes).to_string()
}

/// An OCI platform (`os`, `architecture`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// GOARCH spelling: `arm64`, `amd64`.
    pub architecture: String,
    /// `linux`.
    pub os: String,
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(arch: &str) -> Self {
        Self { architecture: arch.to_string(), os: "linux".to_string() }
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform, in an index.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`MEDIA_TYPE_MANIFEST`].
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (also the shape of a layout's `index.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`MEDIA_TYPE_INDEX`].
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
    comment: String,
}

#[derive(Serialize, Default)]
struct ExecConfig {
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ImageConfig {
    created: String,
    architecture: String,
    os: String,
    config: ExecConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

/// A built layer: the gzip'd blob and the digest of its uncompressed tar (the `diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    /// The `tar+gzip` bytes.
    pub blob: Vec<u8>,
    /// `sha256:` of `blob`.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// What the layer holds, for the config's history.
    pub comment: String,
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// Collects files for one layer and writes them as a reproducible tar, then gzip.
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
    mtime: u64,
}

impl LayerBuilder {
    /// A layer whose entries all get modification time `mtime` (seconds since the epoch).
    pub fn new(mtime: u64) -> Self {
        Self { entries: BTreeMap::new(), mtime }
    }

    fn add_parents(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.entries.entry(acc.clone()).or_insert(Entry::Dir);
        }
    }

    fn clean(path: &str) -> String {
        path.trim_matches('/').to_string()
    }

    /// Adds a regular file (parents are added as 0755 directories).
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        let p = Self::clean(path);
        self.add_parents(&p);
        self.entries.insert(p, Entry::File { data: data.into(), mode });
        self
    }

    /// Adds an (empty) directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let p = Self::clean(path);
        self.add_parents(&p);
        self.entries.insert(p, Entry::Dir);
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let p = Self::clean(path);
        self.add_parents(&p);
        self.entries.insert(p, Entry::Symlink(target.to_string()));
        self
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(self.mtime);
            h.set_uid(0);
            h.set_gid(0);
            match entry {
                Entry::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, &data[..])?;
                }
                Entry::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
            }
        }
        Ok(b.into_inner()?)
    }

    /// Builds the layer: tar, its digest, and the gzip stream.
    pub fn build(&self, comment: &str) -> Result<Layer> {
        let tar = self.tar()?;
        let diff_id = sha256_digest(&tar);
        let mut gz = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::new(6));
        gz.write_all(&tar)?;
        let blob = gz.finish()?;
        Ok(Layer { digest: sha256_digest(&blob), blob, diff_id, comment: comment.to_string() })
    }
}

/// Seconds since the epoch as RFC 3339 UTC: the imager's own function, so fixtures and builds
/// write `created` the same way.
pub use moonboot_imager::build::artifact::rfc3339;

/// An OCI image layout being written to a directory.
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Creates `dir` afresh (removing what was there) with `oci-layout` and `blobs/sha256/`.
    pub fn create(dir: &Path) -> Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}")?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a blob (once) and returns its descriptor.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let path = self.dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
        if !path.exists() {
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        })
    }

    /// Stores a layer blob (once) without hashing it again.
    pub fn put_layer(&self, layer: &Layer) -> Result<Descriptor> {
        let path = self.dir.join("blobs/sha256").join(&layer.digest["sha256:".len()..]);
        if !path.exists() {
            fs::write(&path, &layer.blob).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Descriptor {
            media_type: MEDIA_TYPE_LAYER_GZIP.to_string(),
            digest: layer.digest.clone(),
            size: layer.blob.len() as u64,
            platform: None,
            annotations: None,
        })
    }

    fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value)?;
        self.put_blob(media_type, &bytes)
    }

    /// Stores the layers, a config and a manifest for one platform; returns the manifest's
    /// descriptor with its platform set (ready for an index).
    pub fn put_image(
        &self,
        platform: &Platform,
        layers: &[&Layer],
        created: u64,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        let mut layer_descs = Vec::new();
        for l in layers {
            layer_descs.push(self.put_layer(l)?);
        }
        let config = ImageConfig {
            created: rfc3339(created),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            config: ExecConfig { labels: labels.clone() },
            rootfs: RootFs { kind: "layers", diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect() },
            history: layers
                .iter()
                .map(|l| History {
                    created: rfc3339(created),
                    created_by: "moonboot-tests fixtures (TEST FIXTURE)".to_string(),
                    comment: l.comment.clone(),
                })
                .collect(),
        };
        let config_desc = self.put_json(MEDIA_TYPE_CONFIG, &config)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            config: config_desc,
            layers: layer_descs,
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        };
        let mut desc = self.put_json(MEDIA_TYPE_MANIFEST, &manifest)?;
        desc.platform = Some(platform.clone());
        Ok(desc)
    }

    /// Stores an image index over `manifests` and writes the layout's `index.json` pointing at it
    /// under the tag `tag`. Returns the index's descriptor.
    pub fn finish_index(
        self,
        manifests: Vec<Descriptor>,
        annotations: &BTreeMap<String, String>,
        tag: &str,
    ) -> Result<Descriptor> {
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.to_string()),
            manifests,
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        };
        let desc = self.put_json(MEDIA_TYPE_INDEX, &index)?;
        let mut top = desc.clone();
        top.annotations = Some(BTreeMap::from([(ANNOTATION_REF_NAME.to_string(), tag.to_string())]));
        let layout_index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.to_string()),
            manifests: vec![top],
            annotations: None,
        };
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&layout_index)?)?;
        Ok(desc)
    }
}

/// Reads, from the OCI image layout at `dir`, the layer blobs (gzip'd tars, base first) of the
/// `linux/<arch>` image of the index tagged `tag`.
pub fn layout_layers(dir: &Path, tag: &str, arch: &str) -> Result<Vec<Vec<u8>>> {
    let blob = |digest: &str| -> Result<Vec<u8>> {
        let hex = digest.strip_prefix("sha256:").context("digest is not sha256")?;
        let p = dir.join("blobs/sha256").join(hex);
        let b = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        anyhow::ensure!(sha256_digest(&b) == digest, "{} does not hash to its name", p.display());
        Ok(b)
    };
    let top: Index = serde_json::from_slice(&fs::read(dir.join("index.json"))?)?;
    let tagged = top
        .manifests
        .iter()
        .find(|d| d.annotations.as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME)).map(String::as_str) == Some(tag))
        .with_context(|| format!("no tag {tag} in {}", dir.display()))?;
    let index: Index = serde_json::from_slice(&blob(&tagged.digest)?)?;
    let m = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .with_context(|| format!("no linux/{arch} image in {}:{tag}", dir.display()))?;
    let manifest: Manifest = serde_json::from_slice(&blob(&m.digest)?)?;
    manifest.layers.iter().map(|l| blob(&l.digest)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layers_are_reproducible_and_sorted() {
        let build = |order_flip: bool| {
            let mut b = LayerBuilder::new(1_000);
            if order_flip {
                b.file("z/b.txt", "b", 0o644).file("a/x", "x", 0o755).symlink("a/l", "x");
            } else {
                b.symlink("a/l", "x").file("a/x", "x", 0o755).file("z/b.txt", "b", 0o644);
            }
            b.build("t").unwrap()
        };
        let (l1, l2) = (build(false), build(true));
        assert_eq!(l1.blob, l2.blob);
        assert_eq!(l1.diff_id, l2.diff_id);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&l1.blob[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(sha256_digest(&tar), l1.diff_id);
        let mut ar = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().uid().unwrap(), 0);
            assert_eq!(e.header().mtime().unwrap(), 1_000);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names, vec!["a/", "a/l", "a/x", "z/", "z/b.txt"]);
        // gzip header: no FNAME flag, mtime 0.
        assert_eq!(&l1.blob[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&l1.blob[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn layout_with_index() {
        let dir = std::env::temp_dir().join(format!("moonboot-oci-test-{}", std::process::id()));
        let layout = Layout::create(&dir).unwrap();
        let mut lb = LayerBuilder::new(0);
        lb.file("hello", "hi", 0o644);
        let layer = lb.build("hello").unwrap();
        let none = BTreeMap::new();
        let m1 = layout.put_image(&Platform::linux("arm64"), &[&layer], 0, &none, &none).unwrap();
        let m2 = layout.put_image(&Platform::linux("amd64"), &[&layer], 0, &none, &none).unwrap();
        let idx = layout.finish_index(vec![m1, m2], &none, "v1").unwrap();
        assert_eq!(layout_layers(&dir, "v1", "amd64").unwrap(), vec![layer.blob.clone()]);
        assert!(layout_layers(&dir, "v2", "amd64").is_err());
        assert!(layout_layers(&dir, "v1", "riscv64").is_err());
        let top: Index = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(top.manifests[0].digest, idx.digest);
        assert_eq!(top.manifests[0].annotations.as_ref().unwrap()[ANNOTATION_REF_NAME], "v1");
        let blob = fs::read(dir.join("blobs/sha256").join(&idx.digest[7..])).unwrap();
        assert_eq!(sha256_digest(&blob), idx.digest);
        let index: Index = serde_json::from_slice(&blob).unwrap();
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(index.manifests[0].platform.as_ref().unwrap().architecture, "arm64");
        // The shared layer is stored once: 1 layer + 2 configs + 2 manifests + 1 index.
        assert_eq!(fs::read_dir(dir.join("blobs/sha256")).unwrap().count(), 6);
        fs::remove_dir_all(&dir).unwrap();
    }
}
