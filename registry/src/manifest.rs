//! The OCI image-spec documents moonboot reads: image indexes, image manifests, descriptors and
//! the `architecture`/`os` of an image config (opencontainers/image-spec `image-index.md`,
//! `manifest.md`, `descriptor.md`, `config.md`; Docker's schema 2 list/manifest use the same
//! field names under other media types).
//!
//! Parsing is strict where a wrong value could make us fetch or trust the wrong bytes (digests,
//! sizes) and lenient elsewhere (unknown fields are ignored, as the spec requires). Errors name
//! the field.

use std::collections::BTreeMap;

use boot_artifact::digest::Sha256Digest;
use serde::Deserialize;

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (schema 2) media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2) media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Everything `resolve` accepts, in the `Accept` header.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// A content descriptor: what a manifest says about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's sha256 digest (other algorithms are refused when parsing).
    pub digest: Sha256Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The descriptor's annotations (empty when absent).
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest: one config blob and the layers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The image config descriptor.
    pub config: Descriptor,
    /// The layer descriptors, base layer first.
    pub layers: Vec<Descriptor>,
    /// The manifest's annotations (empty when absent).
    pub annotations: BTreeMap<String, String>,
}

/// One entry of an image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The child manifest.
    pub descriptor: Descriptor,
    /// `platform.os`, if given.
    pub os: Option<String>,
    /// `platform.architecture`, if given.
    pub architecture: Option<String>,
    /// `platform.variant`, if given (`v8` for arm64).
    pub variant: Option<String>,
}

/// A manifest document as fetched by reference: either an index or an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// An OCI image index or Docker manifest list.
    Index(Vec<IndexEntry>),
    /// An OCI or Docker image manifest.
    Manifest(ImageManifest),
}

/// Why a manifest document did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    /// The JSON path of the offending field (`layers[1].digest`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ParseError {
    ParseError { field: field.into(), reason: reason.into() }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<Vec<RawDescriptor>>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl RawDescriptor {
    fn into_descriptor(self, at: &str) -> Result<Descriptor, ParseError> {
        let media_type = self.media_type.ok_or_else(|| err(format!("{at}.mediaType"), "missing"))?;
        let digest = self.digest.ok_or_else(|| err(format!("{at}.digest"), "missing"))?;
        let digest = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| err(format!("{at}.digest"), format!("{digest:?} is not a sha256 digest")))
            .and_then(|hex| Sha256Digest::from_hex(hex).map_err(|e| err(format!("{at}.digest"), e.to_string())))?;
        let size = self.size.ok_or_else(|| err(format!("{at}.size"), "missing"))?;
        let size = u64::try_from(size).map_err(|_| err(format!("{at}.size"), format!("{size} is negative")))?;
        Ok(Descriptor { media_type, digest, size, annotations: self.annotations.unwrap_or_default() })
    }
}

impl Document {
    /// Parses an index or manifest. `content_type` is the HTTP `Content-Type` (or the media type
    /// the document was referenced with), used when the document has no `mediaType` field.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Document, ParseError> {
        let raw: RawDocument = serde_json::from_slice(bytes).map_err(|e| err("(document)", e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(err("schemaVersion", format!("{:?} is not 2", raw.schema_version)));
        }
        let media_type = raw.media_type.as_deref().or(content_type).unwrap_or("");
        let is_index = match media_type {
            OCI_INDEX | DOCKER_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            // The OCI spec makes mediaType optional: go by shape.
            _ => raw.manifests.is_some(),
        };
        if is_index {
            let manifests = raw.manifests.ok_or_else(|| err("manifests", "missing in an image index"))?;
            let mut entries = Vec::with_capacity(manifests.len());
            for (i, m) in manifests.into_iter().enumerate() {
                let at = format!("manifests[{i}]");
                let platform = m.platform.as_ref().map(|p| (p.os.clone(), p.architecture.clone(), p.variant.clone()));
                let descriptor = m.into_descriptor(&at)?;
                let (os, architecture, variant) = platform.unwrap_or((None, None, None));
                entries.push(IndexEntry { descriptor, os, architecture, variant });
            }
            Ok(Document::Index(entries))
        } else {
            let config =
                raw.config.ok_or_else(|| err("config", "missing in an image manifest"))?.into_descriptor("config")?;
            let layers = raw
                .layers
                .ok_or_else(|| err("layers", "missing in an image manifest"))?
                .into_iter()
                .enumerate()
                .map(|(i, l)| l.into_descriptor(&format!("layers[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Document::Manifest(ImageManifest { config, layers, annotations: raw.annotations.unwrap_or_default() }))
        }
    }
}

/// The platform fields of an image config (image-spec `config.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConfigPlatform {
    /// `architecture` (`arm64`, `amd64`).
    pub architecture: Option<String>,
    /// `os` (`linux`).
    pub os: Option<String>,
}

impl ConfigPlatform {
    /// Reads `architecture` and `os` from an image config.
    pub fn parse(bytes: &[u8]) -> Result<ConfigPlatform, ParseError> {
        serde_json::from_slice(bytes).map_err(|e| err("(config)", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_index_and_manifest() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        match Document::parse(index.as_bytes(), None).unwrap() {
            Document::Index(e) => {
                assert_eq!(e.len(), 1);
                assert_eq!(e[0].architecture.as_deref(), Some("arm64"));
                assert_eq!(e[0].descriptor.size, 7);
            }
            other => panic!("{other:?}"),
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D}","size":1}},
            "layers":[{{"mediaType":"l","digest":"{D}","size":2,"annotations":{{"a":"b"}}}}],"annotations":{{"k":"v"}}}}"#
        );
        match Document::parse(manifest.as_bytes(), Some(OCI_MANIFEST)).unwrap() {
            Document::Manifest(m) => {
                assert_eq!(m.layers[0].annotations["a"], "b");
                assert_eq!(m.annotations["k"], "v");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let bad = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D}","size":1}},
            "layers":[{{"mediaType":"l","digest":"{D}","size":2}},{{"mediaType":"l","digest":"md5:00","size":2}}]}}"#
        );
        let e = Document::parse(bad.as_bytes(), Some(OCI_MANIFEST)).unwrap_err();
        assert_eq!(e.field, "layers[1].digest");
        let neg = format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D}","size":-1}},"layers":[]}}"#);
        assert_eq!(Document::parse(neg.as_bytes(), None).unwrap_err().field, "config.size");
        assert_eq!(Document::parse(b"{}", None).unwrap_err().field, "schemaVersion");
        assert_eq!(Document::parse(b"[", None).unwrap_err().field, "(document)");
    }
}
