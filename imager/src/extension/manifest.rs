//! The system extension manifest (`manifest.yaml`) and its Talos version constraint.
//!
//! Shape (talos `pkg/machinery/extensions/metadata.go`, v1.10.5):
//!
//! ```yaml
//! version: v1alpha1
//! metadata:
//!   name: spin
//!   version: v0.19.0
//!   author: Sven Pfennig
//!   description: …
//!   compatibility:
//!     talos:
//!       version: ">= v1.0.0"
//! ```
//!
//! Talos refuses any `version` other than `v1alpha1` (`load.go` `loadManifest`). The constraint is
//! a blang/semver v4 range (`semver.ParseRange`) after every `v` directly before a digit is removed
//! (`validate.go` `trim`), checked against the Talos version reduced to MAJOR.MINOR.PATCH
//! (`coreVersion`: pre-release and build dropped). An empty constraint accepts any version.

use std::cmp::Ordering;

use semver::Version;
use serde::{Deserialize, Serialize};

/// A parsed `manifest.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Manifest {
    /// Manifest format version; only `v1alpha1` exists.
    pub version: String,
    /// What the extension is.
    pub metadata: Metadata,
}

/// `metadata` of a manifest; this is also what `/extensions.yaml` lists per layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Metadata {
    /// Extension name (`spin`, `tailscale`, `talos-agent`).
    pub name: String,
    /// Extension version as its author writes it (`v0.19.0`, `1.84.3`).
    pub version: String,
    /// Author.
    #[serde(default)]
    pub author: String,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// Which Talos versions the extension works with.
    #[serde(default)]
    pub compatibility: Compatibility,
}

/// `metadata.compatibility`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Compatibility {
    /// `metadata.compatibility.talos`.
    #[serde(default)]
    pub talos: TalosCompatibility,
}

/// `metadata.compatibility.talos`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TalosCompatibility {
    /// A blang/semver range such as `>= v1.5.0`; empty accepts any Talos version.
    #[serde(default)]
    pub version: String,
}

/// Why a manifest was refused. Each message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid YAML, or a field has the wrong type or is missing.
    #[error("manifest.yaml: {0}")]
    Yaml(String),
    /// `version` is not `v1alpha1`.
    #[error("manifest.yaml: version: unsupported manifest version {0:?} (only v1alpha1)")]
    UnsupportedVersion(String),
    /// `metadata.name` is empty or not a usable name.
    #[error("manifest.yaml: metadata.name: {0:?} is not a valid extension name")]
    InvalidName(String),
    /// `metadata.compatibility.talos.version` does not parse.
    #[error("manifest.yaml: metadata.compatibility.talos.version: error parsing Talos version constraint {constraint:?}: {reason}")]
    InvalidConstraint {
        /// The constraint as written.
        constraint: String,
        /// What is wrong.
        reason: String,
    },
    /// The constraint excludes the target Talos version.
    #[error("manifest.yaml: metadata.compatibility.talos.version: version constraint {constraint} can't be satisfied with Talos version {talos}")]
    Incompatible {
        /// The constraint as written.
        constraint: String,
        /// The target Talos version.
        talos: String,
    },
}

impl Manifest {
    /// Parses and checks a manifest: YAML shape, `version: v1alpha1`, a non-empty name made of
    /// `[A-Za-z0-9._-]`, and a parseable constraint. Unknown fields are ignored, as Talos's
    /// decoder does.
    ///
    /// # Errors
    /// [`ManifestError`] naming the field.
    pub fn parse(yaml: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = crate::yaml::from_str(yaml).map_err(ManifestError::Yaml)?;
        if m.version != "v1alpha1" {
            return Err(ManifestError::UnsupportedVersion(m.version));
        }
        let name = &m.metadata.name;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(ManifestError::InvalidName(name.clone()));
        }
        Range::parse(&m.metadata.compatibility.talos.version)?;
        Ok(m)
    }

    /// Checks the Talos version constraint against `talos` (its pre-release and build are
    /// ignored, as Talos's `coreVersion` does).
    ///
    /// # Errors
    /// [`ManifestError::InvalidConstraint`], [`ManifestError::Incompatible`].
    pub fn check_compatible(&self, talos: &Version) -> Result<(), ManifestError> {
        let constraint = &self.metadata.compatibility.talos.version;
        let core = Version::new(talos.major, talos.minor, talos.patch);
        if Range::parse(constraint)?.matches(&core) {
            Ok(())
        } else {
            Err(ManifestError::Incompatible { constraint: constraint.clone(), talos: talos.to_string() })
        }
    }
}

/// A blang/semver v4 range: `||`-separated alternatives of space-separated comparators
/// (`>1.0.0 <2.0.0 || >=3.0.0`); an operator may be followed by a space (`>= 1.0.0`).
/// Comparators: `=`/`==`/none, `!=`/`!`, `>`, `>=`, `<`, `<=`; a version is MAJOR.MINOR.PATCH
/// with optional pre-release, or a wildcard `1.x` / `1.2.x`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range(Vec<Vec<Comparator>>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Comparator {
    Cmp(Op, Version),
    /// `lo <= v < hi` (a wildcard with `=`).
    Within(Version, Version),
    /// `v < lo || v >= hi` (a wildcard with `!=`).
    Outside(Version, Version),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Range {
    fn parse(constraint: &str) -> Result<Range, ManifestError> {
        let invalid = |reason: String| ManifestError::InvalidConstraint { constraint: constraint.to_string(), reason };
        let trimmed = strip_v_before_digit(constraint);
        if trimmed.trim().is_empty() {
            return Ok(Range(Vec::new()));
        }
        let mut alternatives = Vec::new();
        for alt in trimmed.split("||") {
            // Join an operator-only token with the version after it: ">= 1.0.0" → ">=1.0.0".
            let mut parts: Vec<String> = Vec::new();
            let mut pending = String::new();
            for tok in alt.split_whitespace() {
                if tok.bytes().all(|b| b"<>=!".contains(&b)) {
                    pending.push_str(tok);
                } else {
                    parts.push(std::mem::take(&mut pending) + tok);
                }
            }
            if !pending.is_empty() {
                return Err(invalid(format!("operator {pending:?} without a version")));
            }
            if parts.is_empty() {
                return Err(invalid("empty alternative around ||".to_string()));
            }
            let comparators = parts.iter().map(|p| parse_comparator(p).map_err(&invalid)).collect::<Result<_, _>>()?;
            alternatives.push(comparators);
        }
        Ok(Range(alternatives))
    }

    fn matches(&self, v: &Version) -> bool {
        self.0.is_empty() || self.0.iter().any(|all| all.iter().all(|c| c.matches(v)))
    }
}

fn strip_v_before_digit(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, ch) in s.char_indices() {
        if ch == 'v' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        out.push(ch);
    }
    out
}

fn parse_comparator(part: &str) -> Result<Comparator, String> {
    let split = part.find(|c: char| !"<>=!".contains(c)).unwrap_or(part.len());
    let (op, ver) = part.split_at(split);
    let op = match op {
        "" | "=" | "==" => Op::Eq,
        "!" | "!=" => Op::Ne,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        other => return Err(format!("unknown operator {other:?}")),
    };
    let fields: Vec<&str> = ver.split('.').collect();
    if fields.last() == Some(&"x") && (fields.len() == 2 || fields.len() == 3) {
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("invalid wildcard version {ver:?}"));
        let next = |n: u64| n.checked_add(1).ok_or_else(|| format!("wildcard version {ver:?} is out of range"));
        let (lo, hi) = if fields.len() == 2 {
            let major = num(fields[0])?;
            (Version::new(major, 0, 0), Version::new(next(major)?, 0, 0))
        } else {
            let (major, minor) = (num(fields[0])?, num(fields[1])?);
            (Version::new(major, minor, 0), Version::new(major, next(minor)?, 0))
        };
        return Ok(match op {
            Op::Eq => Comparator::Within(lo, hi),
            Op::Ne => Comparator::Outside(lo, hi),
            Op::Gt => Comparator::Cmp(Op::Ge, hi),
            Op::Ge => Comparator::Cmp(Op::Ge, lo),
            Op::Lt => Comparator::Cmp(Op::Lt, lo),
            Op::Le => Comparator::Cmp(Op::Lt, hi),
        });
    }
    let mut v = Version::parse(ver).map_err(|e| format!("invalid version {ver:?}: {e}"))?;
    v.build = semver::BuildMetadata::EMPTY;
    Ok(Comparator::Cmp(op, v))
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        match self {
            Comparator::Cmp(op, want) => {
                let ord = v.cmp_precedence(want);
                match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Ne => ord != Ordering::Equal,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                }
            }
            Comparator::Within(lo, hi) => {
                v.cmp_precedence(lo) != Ordering::Less && v.cmp_precedence(hi) == Ordering::Less
            }
            Comparator::Outside(lo, hi) => {
                v.cmp_precedence(lo) == Ordering::Less || v.cmp_precedence(hi) != Ordering::Less
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// siderolabs/extensions `container-runtime/spin/manifest.yaml.tmpl`, rendered.
    const SPIN: &str = r#"version: v1alpha1
metadata:
  name: spin
  version: "v0.19.0"
  author: Sven Pfennig
  description: |
    [contrib] This system extension provides support for spin runtime (WebAssembly) containers.
  compatibility:
    talos:
      version: ">= v1.0.0"
"#;

    fn talos(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_upstream_manifest() {
        let m = Manifest::parse(SPIN).unwrap();
        assert_eq!(m.metadata.name, "spin");
        assert_eq!(m.metadata.version, "v0.19.0");
        assert!(m.metadata.description.ends_with("containers.\n"));
        m.check_compatible(&talos("1.10.5")).unwrap();
    }

    #[test]
    fn constraints_follow_blang_semver_after_trim() {
        let cases: &[(&str, &str, bool)] = &[
            (">= v1.10.0", "1.10.5", true),
            (">= v1.11.0", "1.10.5", false),
            (">= 1.9.0-alpha.0", "1.9.0", true),
            // The Talos version's pre-release is ignored: 1.11.0-beta.1 counts as 1.11.0.
            (">= v1.11.0", "1.11.0-beta.1", true),
            (">1.0.0 <2.0.0 || >=3.0.0", "3.1.0", true),
            (">1.0.0 <2.0.0 || >=3.0.0", "2.5.0", false),
            ("<=v1.10.5", "1.10.5", true),
            ("!=1.10.5", "1.10.5", false),
            ("1.10.x", "1.10.9", true),
            ("1.10.x", "1.11.0", false),
            (">1.x", "2.0.0", true),
            ("", "0.1.0", true),
        ];
        for (c, v, ok) in cases {
            let yaml = SPIN.replace(">= v1.0.0", c);
            let m = Manifest::parse(&yaml).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(m.check_compatible(&talos(v)).is_ok(), *ok, "{c:?} vs {v}");
        }
        let err = Manifest::parse(&SPIN.replace(">= v1.0.0", ">= v1.12.0"))
            .unwrap()
            .check_compatible(&talos("1.10.5"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest.yaml: metadata.compatibility.talos.version: version constraint >= v1.12.0 can't be satisfied with Talos version 1.10.5"
        );
    }

    #[test]
    fn refuses_bad_manifests_naming_the_field() {
        for (yaml, needle) in [
            (SPIN.replace("v1alpha1", "v1alpha2"), "version: unsupported manifest version"),
            (SPIN.replace(">= v1.0.0", ">= banana"), "metadata.compatibility.talos.version: error parsing"),
            (SPIN.replace(">= v1.0.0", ">="), "without a version"),
            (SPIN.replace(">= v1.0.0", ">= 1.0"), "invalid version"),
            (SPIN.replace("name: spin", "name: \"../spin\""), "metadata.name"),
            (SPIN.replace("  name: spin\n", ""), "manifest.yaml: missing field `name` at line 7, column 3"),
            ("version: [".to_string(), "manifest.yaml"),
            ("- a\n- b\n".to_string(), "manifest.yaml"),
        ] {
            let err = Manifest::parse(&yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    /// Found by reading while fuzzing (`fuzz/fuzz_targets/extension_manifest.rs`): the upper bound
    /// of a wildcard at u64::MAX overflowed.
    #[test]
    fn wildcards_at_the_top_of_the_range_are_refused() {
        for v in ["18446744073709551615.x", "1.18446744073709551615.x"] {
            let err = parse_comparator(v).unwrap_err();
            assert!(err.contains("out of range"), "{v}: {err}");
        }
        assert!(parse_comparator("1.x").is_ok());
    }
}
