//! The checks Talos makes before it takes a machine configuration, for `imager build
//! --embed-config`: a file that Talos would refuse at boot is refused at build time instead, with
//! the document and field named.
//!
//! Talos's loader (talos `pkg/machinery/config/configloader/internal/decoder/decoder.go`, the
//! same at v1.12.11, v1.13.9 and v1.14.0-rc.1) reads one or more YAML documents:
//! - empty and `null` documents are skipped; a file with no document is "config not found";
//! - every document is a mapping ("expected a YAML document");
//! - a document without `kind` that has `machine`, `cluster`, `debug` or `persist` is the legacy
//!   `v1alpha1` configuration, whose top-level keys are `version`, `debug`, `persist`, `machine`
//!   and `cluster` (`types/v1alpha1/v1alpha1_types.go` `Config`); any other key is unknown;
//! - every other document needs `kind` ("missing kind") and `apiVersion` ("missing apiVersion"),
//!   and the pair must be registered ([`kernel_cmdline::quirks::CONFIG_DOCUMENT_KINDS`], all
//!   `v1alpha1`): "not registered" otherwise;
//! - two documents with the same `apiVersion`, kind and `name` are refused ("duplicate document").
//!
//! Documents are named as Talos names them in errors: `<apiVersion>/<kind>/<name>` (kind
//! `v1alpha1` for the legacy document), with the line where the document starts.
//!
//! Not checked here: the fields inside each kind (Talos decodes them strictly and validates
//! them when it applies the configuration).

use std::collections::BTreeMap;

use kernel_cmdline::preset::TalosVersion;
use kernel_cmdline::quirks::Quirks;

/// Top-level keys of the legacy `v1alpha1` configuration (talos
/// `pkg/machinery/config/types/v1alpha1/v1alpha1_types.go`, `Config` struct tags).
pub const LEGACY_KEYS: [&str; 5] = ["version", "debug", "persist", "machine", "cluster"];

/// Keys that make a document without `kind` the legacy one (decoder.go
/// `ManifestDeprecatedKey{Machine,Cluster,Debug,Persist}`).
const LEGACY_TRIGGERS: [&str; 4] = ["machine", "cluster", "debug", "persist"];

/// Upper bound of an embedded machine configuration: 1 MiB (Talos configurations are a few KiB;
/// the file sits in the initramfs of every boot).
pub const MAX_CONFIG: usize = 1 << 20;

/// One document of a machine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `apiVersion` (empty for the legacy document).
    pub api_version: String,
    /// `kind`, or `v1alpha1` for the legacy document.
    pub kind: String,
    /// The top-level `name` (empty when absent).
    pub name: String,
    /// 1-based line where the document's mapping starts.
    pub line: usize,
}

impl std::fmt::Display for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{} (line {})", self.api_version, self.kind, self.name, self.line)
    }
}

/// Why a file is not a machine configuration Talos would take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Over [`MAX_CONFIG`].
    #[error("{0} bytes, over the {MAX_CONFIG}-byte bound of an embedded machine configuration")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("not UTF-8 text")]
    NotText,
    /// Not YAML, or a document that is not a mapping.
    #[error("decode error: {0}")]
    Decode(String),
    /// No document at all.
    #[error("config not found: the file has no YAML document")]
    Empty,
    /// A document Talos refuses.
    #[error("document {document}: {reason}")]
    Document {
        /// The document, named as Talos names it.
        document: Document,
        /// What is wrong with it.
        reason: String,
    },
    /// Two documents with the same identity.
    #[error("duplicate document {0} is not allowed")]
    Duplicate(Document),
}

/// One document's top level: key → scalar value (`None` for a mapping or sequence).
type TopLevel = BTreeMap<String, Scalar>;

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Other(serde::de::IgnoredAny),
}

impl Scalar {
    fn text(&self) -> &str {
        match self {
            Scalar::Text(s) => s,
            Scalar::Other(_) => "",
        }
    }
}

/// Checks `config` as Talos `talos` would load it (see the module docs); returns its documents.
///
/// # Errors
/// [`ConfigError`], naming the document (`apiVersion/kind/name (line N)`) and the field.
pub fn validate(config: &[u8], talos: TalosVersion) -> Result<Vec<Document>, ConfigError> {
    if config.len() > MAX_CONFIG {
        return Err(ConfigError::TooLarge(config.len()));
    }
    let text = std::str::from_utf8(config).map_err(|_| ConfigError::NotText)?;
    let docs: Vec<serde_saphyr::Spanned<TopLevel>> = serde_saphyr::from_multiple(text).map_err(|e| {
        let msg = e.without_snippet().to_string();
        ConfigError::Decode(msg.split_whitespace().collect::<Vec<_>>().join(" "))
    })?;
    if docs.is_empty() {
        return Err(ConfigError::Empty);
    }
    let quirks = Quirks::new(talos);
    let mut seen: Vec<Document> = Vec::new();
    for doc in docs {
        let top = &doc.value;
        let get = |k: &str| top.get(k).map(|v| v.text().to_string()).unwrap_or_default();
        let kind = get("kind");
        let legacy = kind.is_empty() && LEGACY_TRIGGERS.iter().any(|k| top.contains_key(*k));
        let document = Document {
            api_version: get("apiVersion"),
            kind: if kind.is_empty() { "v1alpha1".into() } else { kind.clone() },
            name: get("name"),
            line: doc.referenced.line() as usize,
        };
        let refuse = |reason: String| ConfigError::Document { document: document.clone(), reason };
        if legacy {
            let unknown: Vec<&str> = top.keys().map(String::as_str).filter(|k| !LEGACY_KEYS.contains(k)).collect();
            if !unknown.is_empty() {
                return Err(refuse(format!(
                    "unknown keys found during decoding: {} (the v1alpha1 configuration has {})",
                    unknown.join(", "),
                    LEGACY_KEYS.join(", ")
                )));
            }
        } else if kind.is_empty() {
            return Err(refuse(
                "missing kind (a document is either the v1alpha1 configuration, with machine: or cluster:, or has apiVersion and kind)".into(),
            ));
        } else if document.api_version.is_empty() {
            return Err(refuse("missing apiVersion".into()));
        } else if document.api_version != "v1alpha1" || !quirks.knows_config_kind(&kind) {
            return Err(refuse(format!(
                "{kind:?} {:?}: not registered in Talos {talos} (every kind it knows has apiVersion v1alpha1)",
                document.api_version
            )));
        }
        if seen
            .iter()
            .any(|d| (&d.api_version, &d.kind, &d.name) == (&document.api_version, &document.kind, &document.name))
        {
            return Err(ConfigError::Duplicate(document));
        }
        seen.push(document);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    fn err(text: &str, version: &str) -> String {
        validate(text.as_bytes(), v(version)).unwrap_err().to_string()
    }

    #[test]
    fn a_legacy_document_and_a_kind_load() {
        let docs = validate(
            b"version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: worker-33\n---\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nprovisioning:\n  minSize: 1GiB\n",
            v("1.12.11"),
        )
        .unwrap();
        let ids: Vec<String> = docs.iter().map(ToString::to_string).collect();
        assert_eq!(
            ids,
            ["/v1alpha1/ (line 1)", "v1alpha1/HostnameConfig/ (line 5)", "v1alpha1/VolumeConfig/EPHEMERAL (line 10)"]
        );
        // configloader testdata empty1.test / empty2.test.
        assert_eq!(validate(b"machine:\n", v("1.14.0")).unwrap().len(), 1);
        assert_eq!(validate(b"cluster:\n", v("1.14.0")).unwrap().len(), 1);
    }

    /// The cases of talos v1.14.0-rc.1 `decoder_test.go` and `registry_test.go`, in moonboot's words.
    #[test]
    fn what_talos_refuses_is_refused_naming_document_and_field() {
        assert_eq!(err("apiVersion: v1alpha2\nfoo: bar\n", "1.14.0"), "document v1alpha2/v1alpha1/ (line 1): missing kind (a document is either the v1alpha1 configuration, with machine: or cluster:, or has apiVersion and kind)");
        assert_eq!(
            err("apiversion: v1alpha1\nkind: ExtensionServiceConfig\n", "1.14.0"),
            "document /ExtensionServiceConfig/ (line 1): missing apiVersion"
        );
        assert!(err("apiVersion: v1alpha1\nkind: FooConfig\n", "1.14.0").starts_with(
            "document v1alpha1/FooConfig/ (line 1): \"FooConfig\" \"v1alpha1\": not registered in Talos v1.14.0"
        ));
        // A kind of a later release.
        assert!(
            err("apiVersion: v1alpha1\nkind: KubeletConfig\n", "1.13.9").contains("not registered in Talos v1.13.9")
        );
        assert!(validate(b"apiVersion: v1alpha1\nkind: KubeletConfig\n", v("1.14.0")).is_ok());
        // A wrong apiVersion for a known kind.
        assert!(err("apiVersion: v1alpha2\nkind: HostnameConfig\n", "1.14.0")
            .contains("\"HostnameConfig\" \"v1alpha2\": not registered"));
        // Unknown top-level keys of the legacy document (acquire_test.go: a misspelt `version`).
        assert_eq!(
            err("aaaversion: v1alpha1\nmachine: {}\n", "1.12.0"),
            "document /v1alpha1/ (line 1): unknown keys found during decoding: aaaversion (the v1alpha1 configuration has version, debug, persist, machine, cluster)"
        );
        // `version` alone does not make the legacy document.
        assert!(err("version: v1alpha1\n", "1.12.0").contains("missing kind"));
        // TestDoubleV1Alpha1 and a duplicate named document.
        assert_eq!(
            err("version: v1alpha1\nmachine: {}\n---\nversion: v1alpha1\nmachine: {}\n", "1.12.0"),
            "duplicate document /v1alpha1/ (line 4) is not allowed"
        );
        assert!(err("apiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\n", "1.12.0").starts_with("duplicate document v1alpha1/VolumeConfig/EPHEMERAL (line 5)"));
        assert!(validate(b"apiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: IMAGECACHE\n", v("1.12.0")).is_ok());
        // Not a configuration at all.
        assert_eq!(err("", "1.12.0"), "config not found: the file has no YAML document");
        assert_eq!(err("---\n...\n---\n", "1.12.0"), "config not found: the file has no YAML document");
        assert!(err("- a\n- b\n", "1.12.0").starts_with("decode error: "));
        assert!(err("just text\n", "1.12.0").starts_with("decode error: "));
        assert!(err("machine: {\n", "1.12.0").starts_with("decode error: "));
        assert_eq!(validate(&[0xff, 0xfe], v("1.12.0")).unwrap_err(), ConfigError::NotText);
        assert_eq!(
            validate(&vec![b'#'; MAX_CONFIG + 1], v("1.12.0")).unwrap_err(),
            ConfigError::TooLarge(MAX_CONFIG + 1)
        );
    }
}
