//! What to build: the lock file of pinned official extensions, the profile file, an Image
//! Factory schematic, and the command-line flags, merged into one [`Plan`].
//!
//! # Lock file (`extensions/lock.yaml`)
//! ```yaml
//! extensions:
//!   - name: spin                                   # metadata.name of the extension
//!     image: ghcr.io/siderolabs/spin:v0.19.0       # upstream reference (tag for humans)
//!     digest: sha256:…                             # the image index digest it is pinned to
//!     talos: ">= v1.0.0"                           # metadata.compatibility.talos.version
//! ```
//! The imager carries the repository's lock file inside its binary; `MOONBOOT_EXTENSIONS_LOCK`
//! names another file (tests point it at one generated from the fixture registry's digests).
//! An entry without `digest` is refused: the default build never pulls an unpinned tag.
//!
//! # Profile (`--profile FILE`)
//! ```yaml
//! talosVersion: v1.10.5                            # default v1.10.5
//! base: ghcr.io/siderolabs/imager:v1.10.5          # default ghcr.io/siderolabs/imager:<talosVersion>
//! officialExtensions: [spin, tailscale]            # names from the lock file (default: all of it)
//! systemExtensions:                                # more extension images (REF, REF@sha256:…)
//!   - ghcr.io/example/ext:1.0@sha256:…
//! talosAgent: true                                 # add the talos-agent extension (default true)
//! extraKernelArgs: [-selinux]
//! ```
//! Flags win over the profile: `--talos-version`, `--base`; `--system-extension-image` replaces
//! the profile's extension list (official ones included); `--extra-kernel-arg` values follow the
//! profile's. A schematic (`--schematic`) adds its `officialExtensions` (`siderolabs/NAME`,
//! looked up in the lock file) and `extraKernelArgs`; overlays and META are refused.

use std::path::Path;

use anyhow::{bail, Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::Reference;
use serde::Deserialize;

/// The lock file compiled into the binary.
pub const BUILTIN_LOCK: &str = include_str!("../../../extensions/lock.yaml");
/// The environment variable naming another lock file.
pub const LOCK_ENV: &str = "MOONBOOT_EXTENSIONS_LOCK";
/// The default Talos version: the operator's image.
pub const DEFAULT_TALOS_VERSION: &str = "v1.10.5";

/// The lock file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Pinned extensions, in build order.
    pub extensions: Vec<LockEntry>,
}

/// One pinned official extension.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// `metadata.name`.
    pub name: String,
    /// Upstream reference, usually with a tag.
    pub image: String,
    /// `sha256:` digest of the image index the entry is pinned to.
    #[serde(default)]
    pub digest: Option<String>,
    /// `metadata.compatibility.talos.version` of the pinned image (informative).
    #[serde(default)]
    pub talos: String,
}

impl Lock {
    /// Parses a lock file.
    ///
    /// # Errors
    /// YAML errors naming the field.
    pub fn parse(text: &str) -> Result<Lock> {
        crate::yaml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The lock file in effect: `$MOONBOOT_EXTENSIONS_LOCK` or the built-in one. Returns it with
    /// where it came from.
    ///
    /// # Errors
    /// Reading or parsing it.
    pub fn load() -> Result<(Lock, String)> {
        match std::env::var_os(LOCK_ENV) {
            Some(p) => {
                let p = std::path::PathBuf::from(p);
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                Ok((Lock::parse(&text).with_context(|| p.display().to_string())?, p.display().to_string()))
            }
            None => Ok((Lock::parse(BUILTIN_LOCK).context("extensions/lock.yaml")?, "extensions/lock.yaml".into())),
        }
    }

    /// The pinned reference of `name`: `image` with the tag kept and the digest set.
    ///
    /// # Errors
    /// Unknown name, missing or malformed digest, malformed reference.
    pub fn reference(&self, name: &str, source: &str) -> Result<Reference> {
        let e = self
            .extensions
            .iter()
            .find(|e| e.name == name)
            .with_context(|| format!("extension {name:?} is not in {source}"))?;
        let Some(d) = &e.digest else {
            bail!(
                "{source}: {name} ({}) is not pinned by digest; run `imager extensions update` where the registry is \
                 reachable, or pass --system-extension-image {}@sha256:…",
                e.image,
                e.image
            );
        };
        let digest: Sha256Digest = d.parse().with_context(|| format!("{source}: {name}: digest"))?;
        let mut r: Reference = e.image.parse().with_context(|| format!("{source}: {name}: image"))?;
        if r.digest.is_some_and(|x| x != digest) {
            bail!("{source}: {name}: image and digest disagree");
        }
        r.digest = Some(digest);
        Ok(r)
    }
}

/// A profile file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    /// Talos version.
    #[serde(default)]
    pub talos_version: Option<String>,
    /// Imager image reference.
    #[serde(default)]
    pub base: Option<String>,
    /// Official extensions by lock-file name; `None` = every lock entry.
    #[serde(default)]
    pub official_extensions: Option<Vec<String>>,
    /// More extension images.
    #[serde(default)]
    pub system_extensions: Vec<String>,
    /// Whether to add the talos-agent extension.
    #[serde(default)]
    pub talos_agent: Option<bool>,
    /// Extra kernel arguments.
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
}

impl Profile {
    /// Reads a profile file.
    ///
    /// # Errors
    /// Reading or parsing.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let p: Option<Profile> =
            crate::yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(p.unwrap_or_default())
    }
}

/// An extension to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSource {
    /// Where to pull it from.
    pub reference: Reference,
    /// The official extension name (`siderolabs/<name>` in schematics) when it came from the lock.
    pub official: Option<String>,
}

/// Everything a build needs to know, merged.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Talos version, `vX.Y.Z`.
    pub talos_version: String,
    /// Imager image.
    pub base: Reference,
    /// Extension images in order (talos-agent is added after them).
    pub extensions: Vec<ExtensionSource>,
    /// Whether to add talos-agent.
    pub talos_agent: bool,
    /// Extra kernel arguments, in order.
    pub extra_kernel_args: Vec<String>,
    /// Where the lock file came from.
    pub lock_source: String,
}

/// Inputs of [`plan`] from the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags<'a> {
    /// `--profile`.
    pub profile: Option<&'a Path>,
    /// `--schematic`.
    pub schematic: Option<&'a Path>,
    /// `--talos-version`.
    pub talos_version: Option<&'a str>,
    /// `--base`.
    pub base: Option<&'a str>,
    /// `--system-extension-image` values.
    pub system_extension_images: &'a [String],
    /// `--extra-kernel-arg` values.
    pub extra_kernel_args: &'a [String],
    /// `--no-talos-agent`.
    pub no_talos_agent: bool,
}

/// Merges the lock file, profile, schematic and flags (see the module docs).
///
/// # Errors
/// Unreadable files, unknown names, unpinned lock entries, bad references.
pub fn plan(flags: &Flags<'_>) -> Result<Plan> {
    let (lock, lock_source) = Lock::load()?;
    let profile = match flags.profile {
        Some(p) => Profile::load(p)?,
        None => Profile::default(),
    };
    let mut talos_version = flags
        .talos_version
        .map(str::to_string)
        .or(profile.talos_version.clone())
        .unwrap_or_else(|| DEFAULT_TALOS_VERSION.to_string());
    if !talos_version.starts_with('v') {
        talos_version.insert(0, 'v');
    }
    let base_text = flags
        .base
        .map(str::to_string)
        .or(profile.base.clone())
        .unwrap_or_else(|| format!("ghcr.io/siderolabs/imager:{talos_version}"));
    let base: Reference = base_text.parse().context("--base")?;

    let mut extensions = Vec::new();
    let mut extra_kernel_args = profile.extra_kernel_args.clone();
    if !flags.system_extension_images.is_empty() {
        for s in flags.system_extension_images {
            extensions.push(ExtensionSource {
                reference: s.parse().with_context(|| format!("--system-extension-image {s}"))?,
                official: None,
            });
        }
    } else {
        let names: Vec<String> = match &profile.official_extensions {
            Some(n) => n.clone(),
            None if flags.schematic.is_some() => Vec::new(),
            None => lock.extensions.iter().map(|e| e.name.clone()).collect(),
        };
        for n in names {
            extensions.push(ExtensionSource { reference: lock.reference(&n, &lock_source)?, official: Some(n) });
        }
        for s in &profile.system_extensions {
            extensions.push(ExtensionSource {
                reference: s.parse().with_context(|| format!("profile systemExtensions {s}"))?,
                official: None,
            });
        }
    }
    if let Some(path) = flags.schematic {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s = crate::schematic::Schematic::parse(&text).with_context(|| path.display().to_string())?;
        if !s.overlay.image.is_empty() || !s.overlay.name.is_empty() {
            bail!("{}: overlays are not supported by imager build yet", path.display());
        }
        if !s.customization.meta.is_empty() {
            bail!("{}: META values are not supported by imager build yet", path.display());
        }
        for full in &s.customization.system_extensions.official_extensions {
            let name = full.strip_prefix("siderolabs/").unwrap_or(full);
            if extensions.iter().any(|e| e.official.as_deref() == Some(name)) {
                continue;
            }
            extensions.push(ExtensionSource {
                reference: lock.reference(name, &lock_source).with_context(|| format!("{}: {full}", path.display()))?,
                official: Some(name.to_string()),
            });
        }
        extra_kernel_args.extend(s.customization.extra_kernel_args.iter().cloned());
    }
    extra_kernel_args.extend(flags.extra_kernel_args.iter().cloned());
    let talos_agent = !flags.no_talos_agent && profile.talos_agent.unwrap_or(true);
    Ok(Plan { talos_version, base, extensions, talos_agent, extra_kernel_args, lock_source })
}

/// The Image Factory schematic equivalent to a plan: its official extensions as
/// `siderolabs/<name>` and its extra kernel arguments. Extensions that are not official
/// (talos-agent, `--system-extension-image`) cannot be expressed in a schematic and are left out.
pub fn schematic(plan: &Plan) -> crate::schematic::Schematic {
    let mut s = crate::schematic::Schematic::default();
    s.customization.extra_kernel_args = plan.extra_kernel_args.clone();
    s.customization.system_extensions.official_extensions =
        plan.extensions.iter().filter_map(|e| e.official.as_ref().map(|n| format!("siderolabs/{n}"))).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_lock_names_spin_and_tailscale_upstream() {
        let lock = Lock::parse(BUILTIN_LOCK).unwrap();
        let names: Vec<&str> = lock.extensions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["spin", "tailscale"]);
        assert_eq!(lock.extensions[0].image, "ghcr.io/siderolabs/spin:v0.19.0");
        assert_eq!(lock.extensions[1].image, "ghcr.io/siderolabs/tailscale:1.84.0");
    }

    #[test]
    fn unpinned_entries_are_refused_with_the_way_out() {
        let lock = Lock::parse("extensions:\n  - name: spin\n    image: ghcr.io/siderolabs/spin:v0.19.0\n").unwrap();
        let err = lock.reference("spin", "lock.yaml").unwrap_err().to_string();
        assert!(err.contains("not pinned by digest"), "{err}");
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let lock = Lock::parse(&format!(
            "extensions:\n  - name: spin\n    image: ghcr.io/siderolabs/spin:v0.19.0\n    digest: {d}\n"
        ))
        .unwrap();
        let r = lock.reference("spin", "x").unwrap();
        assert_eq!(r.to_string(), format!("ghcr.io/siderolabs/spin:v0.19.0@{d}"));
    }

    #[test]
    fn schematic_of_the_default_plan() {
        let plan = Plan {
            talos_version: "v1.10.5".into(),
            base: "ghcr.io/siderolabs/imager:v1.10.5".parse().unwrap(),
            extensions: ["spin", "tailscale"]
                .iter()
                .map(|n| ExtensionSource {
                    reference: format!("ghcr.io/siderolabs/{n}:x").parse().unwrap(),
                    official: Some(n.to_string()),
                })
                .collect(),
            talos_agent: true,
            extra_kernel_args: vec![],
            lock_source: String::new(),
        };
        let y = schematic(&plan).marshal().unwrap();
        assert_eq!(
            y,
            "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/spin\n            - siderolabs/tailscale\n"
        );
    }
}
