//! The OCI data model moonboot reads and writes: media types, descriptors, image manifests, image
//! indexes, platforms and the platform fields of an image config. Every other module — the
//! registry client, the imager's layout reader and writers, `publish`, `inspect`, the agent —
//! imports these types from here.
//!
//! Format facts (opencontainers/image-spec v1.1):
//! - `descriptor.md`: a descriptor is `mediaType`, `digest`, `size` (bytes) and optional
//!   `annotations`; in an index it may carry a `platform`. Readers must check content against
//!   size and digest — which is why [`Descriptor::digest`] is a typed [`Sha256Digest`] and other
//!   algorithms are refused when parsing.
//! - `manifest.md`: `schemaVersion` 2, `config`, `layers` (base first), `annotations`.
//! - `image-index.md`: `schemaVersion` 2, `manifests`, each with an optional `platform`
//!   (`architecture` and `os` in Go's `GOARCH`/`GOOS` spelling, optional `variant`).
//! - `config.md`: the image config's `architecture`, `os`, `variant`.
//! - `annotations.md`: `org.opencontainers.image.ref.name` (a tag in a layout's `index.json`),
//!   `org.opencontainers.image.created` (RFC 3339).
//! - Docker's image manifest v2 schema 2 and manifest list (distribution `docs/spec/manifest-v2-2.md`)
//!   have the same JSON shape under their own media types and are read the same way.
//!
//! Why our own types rather than the `oci-spec` crate (which `oci-client` depends on): digests
//! here are [`Sha256Digest`] end to end, so a descriptor that names another algorithm or a
//! malformed digest is refused where it is parsed, not where it is used; parse errors name the
//! JSON field (`layers[1].digest`); serialisation is compact JSON with a fixed key order, so equal
//! inputs give equal digests; and the agent, which links this crate statically, gains no builder
//! or getter macros.
//!
//! Parsing is strict where a wrong value could make us fetch or trust the wrong bytes (digests,
//! sizes, `schemaVersion`) and lenient elsewhere: unknown fields are ignored, as the spec requires.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// Media types (image-spec `media-types.md`; Docker's from distribution `manifest-v2-2.md`).
pub mod media_type {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer: an uncompressed tar.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer: a gzip'd tar.
    pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer: a zstd tar.
    pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker manifest list (schema 2), the shape of an OCI index.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest (schema 2), the shape of an OCI manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer: a gzip'd tar.
    pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// The empty descriptor's media type (image-spec v1.1 `manifest.md` "Guidance for an Empty
    /// Descriptor"): the config of an artifact that needs none, content `{}`.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

    /// Every manifest type a registry client asks for in `Accept`, indexes first.
    pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

    /// Whether `media_type` is an image manifest (OCI or Docker v2 schema 2).
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }

    /// Whether `media_type` is an image index (OCI index or Docker manifest list).
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// Whether `media_type` is a tar layer of one of the kinds above (compressed or not). The
    /// compression itself is detected from the bytes by [`crate::layer`], never trusted from here.
    pub fn is_tar_layer(media_type: &str) -> bool {
        matches!(media_type, OCI_LAYER_TAR | OCI_LAYER_TAR_GZIP | OCI_LAYER_TAR_ZSTD | DOCKER_LAYER_TAR_GZIP)
            || media_type == "application/vnd.docker.image.rootfs.diff.tar"
    }
}

/// Annotation naming a tag in an image layout's `index.json` (image-spec `annotations.md`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation: when the image was created, RFC 3339 (image-spec `annotations.md`).
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// Pre-defined annotation: a human-readable title; for an artifact's blob, its file name (oras-go
/// `content/file/file.go` writes it on push and names the file by it on pull).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// An OCI platform; `architecture` and `os` use Go's `GOARCH`/`GOOS` spelling (`arm64`,
/// `amd64`, `linux`). Serialised as `{"architecture":…,"os":…[,"variant":…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `arm64`, `amd64`, …
    pub architecture: String,
    /// `linux`, …
    pub os: String,
    /// CPU variant (`v8` for arm64), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>` without variant.
    pub fn linux(arch: &str) -> Platform {
        Platform { architecture: arch.to_string(), os: "linux".to_string(), variant: None }
    }

    /// Whether this is `linux/<arch>` (any variant).
    pub fn is_linux(&self, arch: &str) -> bool {
        self.os == "linux" && self.architecture == arch
    }
}

impl fmt::Display for Platform {
    /// `os/architecture[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor. Serialised as
/// `{"mediaType","digest","size"[,"artifactType"][,"platform"][,"annotations"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The blob's sha256 digest (other algorithms are refused when parsing).
    pub digest: Sha256Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The `artifactType` of the manifest this descriptor points at, when it is an artifact
    /// (image-spec v1.1 `descriptor.md`; set on index entries).
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Platform of a manifest listed in an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (empty when absent).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `bytes` with `media_type`, no platform and no annotations.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Sha256Digest::of(bytes), bytes.len() as u64)
    }

    /// A descriptor with no platform and no annotations.
    pub fn new(media_type: &str, digest: Sha256Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// An image manifest: one config blob and the layers, base first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's media type, when the document names it (writers always do).
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// An artifact's type (image-spec v1.1 `manifest.md` `artifactType`), when it is not an image.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config descriptor.
    pub config: Descriptor,
    /// The layer descriptors, base layer first.
    pub layers: Vec<Descriptor>,
    /// The manifest's annotations (empty when absent).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// An OCI image manifest (`schemaVersion` 2, [`media_type::OCI_MANIFEST`]).
    pub fn new(config: Descriptor, layers: Vec<Descriptor>, annotations: BTreeMap<String, String>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            annotations,
        }
    }

    /// The annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Compact JSON, keys in a fixed order: the bytes whose sha256 is the manifest digest.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// Parses an image manifest (OCI or Docker schema 2); `content_type` as for [`Document::parse`].
    ///
    /// # Errors
    /// [`ParseError`] naming the field, also when the document is an index.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ImageManifest, ParseError> {
        match Document::parse(bytes, content_type)? {
            Document::Manifest(m) => Ok(m),
            Document::Index(_) => Err(err("mediaType", "an image index where an image manifest was expected")),
        }
    }
}

/// An image index (also the shape of an image layout's `index.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's media type, when the document names it (writers always do).
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes), each with its platform when given.
    pub manifests: Vec<Descriptor>,
    /// Annotations (empty when absent).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An OCI image index (`schemaVersion` 2, [`media_type::OCI_INDEX`]) without annotations.
    pub fn new(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_string()),
            manifests,
            annotations: BTreeMap::new(),
        }
    }

    /// Compact JSON, keys in a fixed order.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serialises")
    }

    /// Parses an image index (or Docker manifest list, or a layout's `index.json`).
    ///
    /// # Errors
    /// [`ParseError`] naming the field, also when the document is an image manifest.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ImageIndex, ParseError> {
        match Document::parse(bytes, content_type)? {
            Document::Index(i) => Ok(i),
            Document::Manifest(_) => Err(err("mediaType", "an image manifest where an image index was expected")),
        }
    }
}

/// A manifest document as fetched by reference or read from a layout: an index or a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
// One per reference resolved, moved once: boxing the manifest would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Document {
    /// An OCI image index or Docker manifest list.
    Index(ImageIndex),
    /// An OCI or Docker image manifest.
    Manifest(ImageManifest),
}

/// Why an OCI document did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    /// The JSON path of the offending field (`layers[1].digest`), or `(document)`.
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
    artifact_type: Option<String>,
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
    artifact_type: Option<String>,
}

/// Parses `sha256:<64 hex>`; `field` names where it was read, for the error.
fn parse_digest(field: &str, text: &str) -> Result<Sha256Digest, ParseError> {
    text.strip_prefix("sha256:")
        .ok_or_else(|| err(field, format!("{text:?} is not a sha256 digest")))
        .and_then(|hex| Sha256Digest::from_hex(hex).map_err(|e| err(field, e.to_string())))
}

impl RawDescriptor {
    fn into_descriptor(self, at: &str) -> Result<Descriptor, ParseError> {
        let media_type = self.media_type.ok_or_else(|| err(format!("{at}.mediaType"), "missing"))?;
        let digest = self.digest.ok_or_else(|| err(format!("{at}.digest"), "missing"))?;
        let digest = parse_digest(&format!("{at}.digest"), &digest)?;
        let size = self.size.ok_or_else(|| err(format!("{at}.size"), "missing"))?;
        let size = u64::try_from(size).map_err(|_| err(format!("{at}.size"), format!("{size} is negative")))?;
        let platform = match self.platform {
            None => None,
            Some(p) => Some(Platform {
                architecture: p.architecture.ok_or_else(|| err(format!("{at}.platform.architecture"), "missing"))?,
                os: p.os.ok_or_else(|| err(format!("{at}.platform.os"), "missing"))?,
                variant: p.variant,
            }),
        };
        Ok(Descriptor {
            media_type,
            digest,
            size,
            artifact_type: self.artifact_type,
            platform,
            annotations: self.annotations.unwrap_or_default(),
        })
    }
}

impl Document {
    /// Parses an index or manifest. `content_type` is the HTTP `Content-Type` (or the media type
    /// the document was referenced with), used when the document has no `mediaType` field; with
    /// neither, the shape decides (`manifests` makes an index).
    ///
    /// # Errors
    /// [`ParseError`] naming the field: not JSON, `schemaVersion` other than 2, a descriptor
    /// without media type, digest or size, a digest that is not sha256, a negative size.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Document, ParseError> {
        let raw: RawDocument = serde_json::from_slice(bytes).map_err(|e| err("(document)", e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(err("schemaVersion", format!("{:?} is not 2", raw.schema_version)));
        }
        let declared = raw.media_type.as_deref().or(content_type).unwrap_or("");
        let is_index = if media_type::is_index(declared) {
            true
        } else if media_type::is_manifest(declared) {
            false
        } else {
            // The OCI spec makes mediaType optional: go by shape.
            raw.manifests.is_some()
        };
        if is_index {
            let manifests = raw.manifests.ok_or_else(|| err("manifests", "missing in an image index"))?;
            let manifests = manifests
                .into_iter()
                .enumerate()
                .map(|(i, m)| m.into_descriptor(&format!("manifests[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Document::Index(ImageIndex {
                schema_version: 2,
                media_type: raw.media_type,
                manifests,
                annotations: raw.annotations.unwrap_or_default(),
            }))
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
            Ok(Document::Manifest(ImageManifest {
                schema_version: 2,
                media_type: raw.media_type,
                artifact_type: raw.artifact_type,
                config,
                layers,
                annotations: raw.annotations.unwrap_or_default(),
            }))
        }
    }
}

/// The platform fields of an image config (image-spec `config.md`); missing fields are empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    /// `arm64`, `amd64`, … (empty when absent).
    #[serde(default)]
    pub architecture: String,
    /// `linux`, … (empty when absent).
    #[serde(default)]
    pub os: String,
    /// CPU variant, when given.
    #[serde(default)]
    pub variant: Option<String>,
}

impl ImageConfig {
    /// Reads `architecture`, `os` and `variant` from an image config; other fields are ignored.
    ///
    /// # Errors
    /// [`ParseError`] with field `(config)` when it is not a JSON object of that shape.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ParseError> {
        serde_json::from_slice(bytes).map_err(|e| err("(config)", e.to_string()))
    }

    /// The config's platform.
    pub fn platform(&self) -> Platform {
        Platform { architecture: self.architecture.clone(), os: self.os.clone(), variant: self.variant.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::media_type::*;
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_index_and_manifest() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        match Document::parse(index.as_bytes(), None).unwrap() {
            Document::Index(i) => {
                assert_eq!(i.manifests.len(), 1);
                let p = i.manifests[0].platform.as_ref().unwrap();
                assert!(p.is_linux("arm64"));
                assert_eq!(p.to_string(), "linux/arm64/v8");
                assert_eq!(i.manifests[0].size, 7);
            }
            other => panic!("{other:?}"),
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D}","size":1}},
            "layers":[{{"mediaType":"l","digest":"{D}","size":2,"annotations":{{"a":"b"}}}}],"annotations":{{"k":"v"}}}}"#
        );
        let m = ImageManifest::parse(manifest.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.layers[0].annotation("a"), Some("b"));
        assert_eq!(m.annotation("k"), Some("v"));
        assert!(ImageIndex::parse(manifest.as_bytes(), None).is_err());
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
        let no_os = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":7,"platform":{{"architecture":"arm64"}}}}]}}"#
        );
        assert_eq!(Document::parse(no_os.as_bytes(), None).unwrap_err().field, "manifests[0].platform.os");
    }

    #[test]
    fn serialises_with_a_fixed_key_order_and_parses_back() {
        let mut layer = Descriptor::of(OCI_LAYER_TAR, b"layer");
        layer.annotations.insert("k".into(), "v".into());
        let m = ImageManifest::new(Descriptor::of(OCI_CONFIG, b"{}"), vec![layer], BTreeMap::new());
        let json = String::from_utf8(m.to_json()).unwrap();
        assert!(
            json.starts_with(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"#
            ),
            "{json}"
        );
        assert!(!json.contains("platform") && !json.contains(r#""annotations":{}"#), "{json}");
        assert_eq!(ImageManifest::parse(json.as_bytes(), None).unwrap(), m);

        let mut entry = Descriptor::of(OCI_MANIFEST, json.as_bytes());
        entry.platform = Some(Platform::linux("amd64"));
        let i = ImageIndex::new(vec![entry]);
        let ij = i.to_json();
        assert!(String::from_utf8_lossy(&ij).contains(r#""platform":{"architecture":"amd64","os":"linux"}"#));
        assert_eq!(ImageIndex::parse(&ij, None).unwrap(), i);
    }

    #[test]
    fn config_platform() {
        let c = ImageConfig::parse(br#"{"architecture":"arm64","os":"linux","rootfs":{}}"#).unwrap();
        assert_eq!(c.platform(), Platform::linux("arm64"));
        assert!(ImageConfig::parse(br#""arm64""#).is_err());
    }
}
