//! Writing OCI image layouts (image-spec v1.1 `image-layout.md`): the boot artifact
//! (`boot-<arch>/`, shape in [`boot_artifact::artifact`]) and the talos-agent extension image.
//!
//! Every document is compact JSON with keys in a fixed order, so equal inputs give equal digests.
//! `index.json` lists the one image manifest with its `platform` and the tag in
//! `org.opencontainers.image.ref.name`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use boot_artifact::artifact::{
    Role, ANNOTATION_EXTENSIONS, ANNOTATION_FORMAT, ANNOTATION_ROLE, ANNOTATION_SCHEMATIC_ID, ANNOTATION_TALOS_VERSION,
    CONFIG_MEDIA_TYPE, FORMAT_VERSION, INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
};
use boot_artifact::digest::Sha256Digest;
use serde::Serialize;

/// `org.opencontainers.image.ref.name`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `org.opencontainers.image.created`.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// Media type of a gzip'd tar layer.
pub const LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Platform {
    /// `arm64`, `amd64`.
    pub architecture: String,
    /// `linux`.
    pub os: String,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: &'a [Descriptor],
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct Config<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: BTreeMap<String, String>,
    rootfs: RootFs<'a>,
}

/// An OCI layout being written.
pub struct Layout<'p> {
    dir: &'p Path,
}

impl<'p> Layout<'p> {
    /// Creates `dir` with `oci-layout` and `blobs/sha256/`.
    ///
    /// # Errors
    /// I/O.
    pub fn create(dir: &'p Path) -> Result<Layout<'p>> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}")?;
        Ok(Layout { dir })
    }

    /// Stores `bytes` as a blob.
    ///
    /// # Errors
    /// I/O.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = Sha256Digest::of(bytes);
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(Descriptor {
            media_type: media_type.into(),
            digest: digest.to_string(),
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }

    /// Writes the config, the manifest and `index.json` (tag `tag`); returns the manifest's
    /// descriptor (with platform).
    ///
    /// # Errors
    /// I/O.
    pub fn finish(
        self,
        arch: &str,
        created: &str,
        layers: &[Descriptor],
        diff_ids: Vec<String>,
        annotations: &BTreeMap<String, String>,
        tag: &str,
    ) -> Result<Descriptor> {
        let config = Config {
            created,
            architecture: arch,
            os: "linux",
            config: BTreeMap::new(),
            rootfs: RootFs { kind: "layers", diff_ids },
        };
        let config = self.blob(CONFIG_MEDIA_TYPE, &serde_json::to_vec(&config)?)?;
        let manifest =
            Manifest { schema_version: 2, media_type: MANIFEST_MEDIA_TYPE, config: &config, layers, annotations };
        let mut desc = self.blob(MANIFEST_MEDIA_TYPE, &serde_json::to_vec(&manifest)?)?;
        desc.platform = Some(Platform { architecture: arch.into(), os: "linux".into() });
        let mut entry = desc.clone();
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), tag.into());
        let index = Index { schema_version: 2, media_type: INDEX_MEDIA_TYPE, manifests: &[entry] };
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(desc)
    }
}

/// A tar holding one regular file `path` (mode 0644, uid/gid 0, `mtime`), as the boot artifact's
/// layers are.
pub fn one_file_tar(path: &str, data: &[u8], mtime: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + 2048);
    {
        let mut b = tar::Builder::new(&mut out);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)?;
        b.finish()?;
    }
    Ok(out)
}

/// One extension listed in [`ANNOTATION_EXTENSIONS`].
#[derive(Debug, Clone, Serialize)]
pub struct ExtensionNote {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
    /// Image index (or manifest) digest it was pulled by; absent for ones built here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// What goes into a boot artifact.
pub struct BootArtifact<'a> {
    /// `arm64` / `amd64`.
    pub arch: &'a str,
    /// The loadable kernel (arm64 `Image`, x86 bzImage).
    pub kernel: &'a [u8],
    /// The initramfs with extensions.
    pub initramfs: &'a [u8],
    /// The default command line.
    pub cmdline: &'a str,
    /// `vX.Y.Z`.
    pub talos_version: &'a str,
    /// Schematic ID.
    pub schematic_id: &'a str,
    /// Extensions in layer order.
    pub extensions: &'a [ExtensionNote],
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
}

/// Writes the boot artifact as an OCI layout in `dir` (tag = the Talos version); returns the
/// manifest descriptor.
///
/// # Errors
/// I/O.
pub fn write_boot_artifact(dir: &Path, a: &BootArtifact<'_>) -> Result<Descriptor> {
    let layout = Layout::create(dir)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for role in Role::ALL {
        let data: &[u8] = match role {
            Role::Kernel => a.kernel,
            Role::Initramfs => a.initramfs,
            Role::Cmdline => a.cmdline.as_bytes(),
        };
        let tar = one_file_tar(role.path(), data, a.epoch)?;
        let mut d = layout.blob(LAYER_MEDIA_TYPE, &tar)?;
        d.annotations.insert(ANNOTATION_ROLE.into(), role.as_str().into());
        diff_ids.push(d.digest.clone());
        layers.push(d);
    }
    let created = rfc3339(a.epoch);
    let annotations = BTreeMap::from([
        (ANNOTATION_FORMAT.to_string(), FORMAT_VERSION.to_string()),
        (ANNOTATION_TALOS_VERSION.to_string(), a.talos_version.to_string()),
        (ANNOTATION_SCHEMATIC_ID.to_string(), a.schematic_id.to_string()),
        (ANNOTATION_EXTENSIONS.to_string(), serde_json::to_string(a.extensions)?),
        (ANNOTATION_CREATED.to_string(), created.clone()),
    ]);
    layout.finish(a.arch, &created, &layers, diff_ids, &annotations, a.talos_version)
}

/// Writes an extension image (one gzip'd tar layer) as an OCI layout in `dir` with tag `tag`.
///
/// # Errors
/// I/O.
pub fn write_extension_image(dir: &Path, arch: &str, layer_tar: &[u8], epoch: u64, tag: &str) -> Result<Descriptor> {
    let layout = Layout::create(dir)?;
    let mut gz = flate2::GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), flate2::Compression::default());
    gz.write_all(layer_tar)?;
    let blob = gz.finish()?;
    let layer = layout.blob(LAYER_GZIP_MEDIA_TYPE, &blob)?;
    let created = rfc3339(epoch);
    let annotations = BTreeMap::from([(ANNOTATION_CREATED.to_string(), created.clone())]);
    layout.finish(arch, &created, &[layer], vec![Sha256Digest::of(layer_tar).to_string()], &annotations, tag)
}

/// Seconds since the epoch as RFC 3339 UTC (`2025-07-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (the proleptic Gregorian calendar), era-based.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_751_328_000), "2025-07-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn one_file_tar_holds_exactly_one_regular_file() {
        let t = one_file_tar("boot/cmdline", b"console=ttyAMA0", 5).unwrap();
        let mut a = tar::Archive::new(&t[..]);
        let entries: Vec<_> = a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(entries, ["boot/cmdline"]);
    }
}
