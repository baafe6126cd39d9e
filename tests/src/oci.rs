//! A small writer of OCI image layouts (image-spec `image-layout.md`, `manifest.md`,
//! `image-index.md`, `config.md`) with reproducible gzip'd tar layers.
//!
//! Reproducible means: entries sorted by path, parents before children, mtime fixed, uid/gid 0,
//! no user/group names, fixed modes; gzip header with mtime 0, no file name, fixed OS byte.
//! Manifests, indexes and descriptors are the shared model of [`boot_artifact::oci`]; the config
//! blob is [`ConfigDocument`]. JSON is written from typed structures, so key order never depends on
//! a map implementation.

use anyhow::{Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::{media_type, Descriptor, ImageIndex, ImageManifest, Platform, ANNOTATION_REF_NAME};
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Sha256Digest>,
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

/// The image config blob (image-spec `config.md`) the fixtures write: platform, labels, rootfs
/// diff IDs and one history entry per layer.
#[derive(Serialize)]
struct ConfigDocument {
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
    /// The digest of `blob`.
    pub digest: Sha256Digest,
    /// The digest of the uncompressed tar.
    pub diff_id: Sha256Digest,
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
        let diff_id = Sha256Digest::of(&tar);
        let mut gz = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::new(6));
        gz.write_all(&tar)?;
        let blob = gz.finish()?;
        Ok(Layer { digest: Sha256Digest::of(&blob), blob, diff_id, comment: comment.to_string() })
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
        let desc = Descriptor::of(media_type, bytes);
        let path = self.dir.join("blobs/sha256").join(desc.digest.hex());
        if !path.exists() {
            fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(desc)
    }

    /// Hard-links the blob `digest` from the layout at `from` into this one (falling back to a
    /// copy across file systems), so layouts that share a large layer store it once.
    ///
    /// # Errors
    /// A blob missing from `from`, an I/O error.
    pub fn link_blob(&self, from: &Path, digest: &Sha256Digest) -> Result<()> {
        let src = from.join("blobs/sha256").join(digest.hex());
        let dst = self.dir.join("blobs/sha256").join(digest.hex());
        if dst.exists() {
            return Ok(());
        }
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
        Ok(())
    }

    /// Stores a layer blob (once) without hashing it again.
    pub fn put_layer(&self, layer: &Layer) -> Result<Descriptor> {
        let path = self.dir.join("blobs/sha256").join(layer.digest.hex());
        if !path.exists() {
            fs::write(&path, &layer.blob).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Descriptor::new(media_type::OCI_LAYER_TAR_GZIP, layer.digest, layer.blob.len() as u64))
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
        let config = ConfigDocument {
            created: rfc3339(created),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            config: ExecConfig { labels: labels.clone() },
            rootfs: RootFs { kind: "layers", diff_ids: layers.iter().map(|l| l.diff_id).collect() },
            history: layers
                .iter()
                .map(|l| History {
                    created: rfc3339(created),
                    created_by: "moonboot-tests fixtures (TEST FIXTURE)".to_string(),
                    comment: l.comment.clone(),
                })
                .collect(),
        };
        let config_desc = self.put_blob(media_type::OCI_CONFIG, &serde_json::to_vec(&config)?)?;
        let manifest = ImageManifest::new(config_desc, layer_descs, annotations.clone());
        let mut desc = self.put_blob(media_type::OCI_MANIFEST, &manifest.to_json())?;
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
        let index = ImageIndex { annotations: annotations.clone(), ..ImageIndex::new(manifests) };
        let desc = self.put_blob(media_type::OCI_INDEX, &index.to_json())?;
        let mut top = desc.clone();
        top.annotations = BTreeMap::from([(ANNOTATION_REF_NAME.to_string(), tag.to_string())]);
        fs::write(self.dir.join("index.json"), ImageIndex::new(vec![top]).to_json())?;
        Ok(desc)
    }
}

/// Reads, from the OCI image layout at `dir`, the layer blobs (gzip'd tars, base first) of the
/// `linux/<arch>` image of the index tagged `tag`.
pub fn layout_layers(dir: &Path, tag: &str, arch: &str) -> Result<Vec<Vec<u8>>> {
    let blob = |digest: &Sha256Digest| -> Result<Vec<u8>> {
        let p = dir.join("blobs/sha256").join(digest.hex());
        let b = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        anyhow::ensure!(Sha256Digest::of(&b) == *digest, "{} does not hash to its name", p.display());
        Ok(b)
    };
    let index_json = dir.join("index.json");
    let top = ImageIndex::parse(&fs::read(&index_json)?, None)
        .with_context(|| format!("parsing {}", index_json.display()))?;
    let tagged = top
        .manifests
        .iter()
        .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(tag))
        .with_context(|| format!("no tag {tag} in {}", dir.display()))?;
    let index = ImageIndex::parse(&blob(&tagged.digest)?, Some(&tagged.media_type))
        .with_context(|| format!("parsing the index of {}:{tag}", dir.display()))?;
    let m = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.is_linux(arch)))
        .with_context(|| format!("no linux/{arch} image in {}:{tag}", dir.display()))?;
    let manifest = ImageManifest::parse(&blob(&m.digest)?, Some(&m.media_type))
        .with_context(|| format!("parsing the linux/{arch} manifest of {}:{tag}", dir.display()))?;
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
        assert_eq!(Sha256Digest::of(&tar), l1.diff_id);
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
        let top = ImageIndex::parse(&fs::read(dir.join("index.json")).unwrap(), None).unwrap();
        assert_eq!(top.manifests[0].digest, idx.digest);
        assert_eq!(top.manifests[0].annotation(ANNOTATION_REF_NAME), Some("v1"));
        let blob = fs::read(dir.join("blobs/sha256").join(idx.digest.hex())).unwrap();
        assert_eq!(Sha256Digest::of(&blob), idx.digest);
        let index = ImageIndex::parse(&blob, None).unwrap();
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(index.manifests[0].platform.as_ref().unwrap().architecture, "arm64");
        // The shared layer is stored once: 1 layer + 2 configs + 2 manifests + 1 index.
        assert_eq!(fs::read_dir(dir.join("blobs/sha256")).unwrap().count(), 6);
        fs::remove_dir_all(&dir).unwrap();
    }
}
