//! What to build: the profile file, an Image Factory schematic and the command-line flags,
//! merged into one [`Plan`]. Official extensions and the overlay stay *names* here; the build
//! resolves them through the Talos release's own bundles ([`crate::bundle`]), pinned by digest.
//!
//! # Profile (`--profile FILE`)
//! ```yaml
//! talosVersion: v1.10.5                            # default v1.10.5
//! base: ghcr.io/siderolabs/imager:v1.10.5          # default ghcr.io/siderolabs/imager:<talosVersion>
//! officialExtensions:                              # Image Factory names, resolved through
//!   - siderolabs/spin                              # ghcr.io/siderolabs/extensions:<talosVersion>
//!   - siderolabs/tailscale                         # (default: these two)
//! systemExtensions:                                # more extension images (REF, REF@sha256:…)
//!   - ghcr.io/example/ext:1.0@sha256:…
//! overlay: rpi_generic                             # resolved through ghcr.io/siderolabs/overlays:<v>
//! talosAgent: true                                 # add the talos-agent extension (default true)
//! talosAgentImage: ghcr.io/moonboot/talos-agent:v0.1.0   # where it is published (default)
//! extraKernelArgs: [-selinux]
//! ```
//! Flags win over the profile: `--talos-version`, `--base`, `--overlay`, `--talos-agent-image`;
//! `--system-extension-image` replaces the profile's extension list (official ones included);
//! `--extra-kernel-arg` values follow the profile's. A schematic (`--schematic`) adds its
//! `officialExtensions`, its `overlay` (by name, as the Image Factory resolves it) and its
//! `extraKernelArgs` and its `embeddedMachineConfiguration` (as `--embed-config` gives one);
//! META values, `bootloader`, `secureboot.enrollKeys` and `diskImage` are refused (not built
//! yet), never dropped.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_artifact::reference::Reference;
use serde::Deserialize;

pub use crate::cli::DEFAULT_TALOS_VERSION;
/// The official extensions of the default build: the operator's Spin and Tailscale.
pub const DEFAULT_OFFICIAL_EXTENSIONS: [&str; 2] = ["siderolabs/spin", "siderolabs/tailscale"];

/// Where the talos-agent extension is published by default: `ghcr.io/moonboot/talos-agent`,
/// tagged with this imager's version (what `imager extension build` + `imager publish` push
/// from this repository's CI).
pub fn default_talos_agent_image() -> String {
    format!("ghcr.io/moonboot/talos-agent:v{}", env!("CARGO_PKG_VERSION"))
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
    /// Official extensions by Image Factory name (`siderolabs/spin`); `None` = the defaults.
    #[serde(default)]
    pub official_extensions: Option<Vec<String>>,
    /// More extension images.
    #[serde(default)]
    pub system_extensions: Vec<String>,
    /// The overlay by name (`rpi_generic`).
    #[serde(default)]
    pub overlay: Option<String>,
    /// Whether to add the talos-agent extension.
    #[serde(default)]
    pub talos_agent: Option<bool>,
    /// Where the talos-agent extension image is pulled from.
    #[serde(default)]
    pub talos_agent_image: Option<String>,
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

/// Where the talos-agent extension comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalosAgent {
    /// Left out (`--no-talos-agent`, `talosAgent: false`).
    Off,
    /// A published extension image (the default), pulled like every other extension.
    Image(Reference),
    /// Built here from this static binary (`--agent-binary`).
    Binary(PathBuf),
    /// Built here, cross-compiling the agent from this source tree (`--agent-from-source`; the
    /// developer path, which needs the workspace and a cross toolchain).
    FromSource,
}

/// Everything a build needs to know, merged.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Talos version, `vX.Y.Z`.
    pub talos_version: String,
    /// Imager image.
    pub base: Reference,
    /// Official extensions by Image Factory name, in order (resolved through the bundle).
    pub official_extensions: Vec<String>,
    /// Extension images given by reference, after the official ones.
    pub system_extensions: Vec<Reference>,
    /// The overlay by name.
    pub overlay: Option<String>,
    /// The talos-agent extension (added after every other).
    pub talos_agent: TalosAgent,
    /// Extra kernel arguments, in order.
    pub extra_kernel_args: Vec<String>,
    /// The extensions bundle (`ghcr.io/siderolabs/extensions:<talos version>` unless overridden).
    pub extensions_bundle: Reference,
    /// The overlays bundle (`ghcr.io/siderolabs/overlays:<talos version>` unless overridden).
    pub overlays_bundle: Reference,
    /// The machine configuration to embed (`--embed-config`, or the schematic's
    /// `customization.embeddedMachineConfiguration`), checked later against the Talos version.
    pub embedded_config: Option<EmbeddedConfig>,
}

/// A machine configuration to embed, and where it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// The configuration's bytes, as they go into the image.
    pub config: Vec<u8>,
    /// `--embed-config <path>` or `<schematic>: customization.embeddedMachineConfiguration`.
    pub source: String,
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
    /// `--embed-config`.
    pub embed_config: Option<&'a Path>,
    /// `--base`.
    pub base: Option<&'a str>,
    /// `--system-extension-image` values.
    pub system_extension_images: &'a [String],
    /// `--overlay`.
    pub overlay: Option<&'a str>,
    /// `--extra-kernel-arg` values.
    pub extra_kernel_args: &'a [String],
    /// `--no-talos-agent`.
    pub no_talos_agent: bool,
    /// `--talos-agent-image`.
    pub talos_agent_image: Option<&'a str>,
    /// `--agent-binary`.
    pub agent_binary: Option<&'a Path>,
    /// `--agent-from-source`.
    pub agent_from_source: bool,
    /// `--extensions-bundle`.
    pub extensions_bundle: Option<&'a str>,
    /// `--overlays-bundle`.
    pub overlays_bundle: Option<&'a str>,
}

/// Merges the profile, schematic and flags (see the module docs).
///
/// # Errors
/// Unreadable files, bad references, schematic fields not built yet (META values, `bootloader`,
/// `secureboot.enrollKeys`, `diskImage`), two different overlays, two machine configurations to
/// embed (`--embed-config` and the schematic's).
pub fn plan(flags: &Flags<'_>) -> Result<Plan> {
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

    let mut official = Vec::new();
    let mut system = Vec::new();
    let mut extra_kernel_args = profile.extra_kernel_args.clone();
    if !flags.system_extension_images.is_empty() {
        for s in flags.system_extension_images {
            system.push(s.parse().with_context(|| format!("--system-extension-image {s}"))?);
        }
    } else {
        official = match &profile.official_extensions {
            Some(n) => n.clone(),
            None if flags.schematic.is_some() => Vec::new(),
            None => DEFAULT_OFFICIAL_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        };
        for s in &profile.system_extensions {
            system.push(s.parse().with_context(|| format!("profile systemExtensions {s}"))?);
        }
    }
    let mut overlay = flags.overlay.map(str::to_string).or(profile.overlay.clone());
    let mut embedded = None;
    if let Some(path) = flags.schematic {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s = crate::schematic::Schematic::parse(&text).with_context(|| path.display().to_string())?;
        if !s.customization.meta.is_empty() {
            bail!("{}: META values are not supported by imager build yet", path.display());
        }
        // Fields that change what Image Factory writes and that imager build does not do yet:
        // refused rather than dropped, so the schematic ID in build.json never names an image
        // this build is not.
        let c = &s.customization;
        if !c.embedded_machine_configuration.is_empty() {
            embedded = Some(EmbeddedConfig {
                config: c.embedded_machine_configuration.clone().into_bytes(),
                source: format!("{}: customization.embeddedMachineConfiguration", path.display()),
            });
        }
        for (set, field) in [
            (c.bootloader != crate::schematic::Bootloader::None, "customization.bootloader"),
            (!c.secureboot.enroll_keys.is_empty(), "customization.secureboot.enrollKeys"),
            (c.disk_image.sector_size != 0, "customization.diskImage.sectorSize"),
        ] {
            if set {
                bail!("{}: {field} is not supported by imager build yet", path.display());
            }
        }
        if !s.overlay.name.is_empty() {
            match &overlay {
                Some(o) if *o != s.overlay.name => {
                    bail!("{}: overlay {:?} conflicts with --overlay/profile {o:?}", path.display(), s.overlay.name)
                }
                _ => overlay = Some(s.overlay.name.clone()),
            }
        } else if !s.overlay.image.is_empty() {
            bail!(
                "{}: overlay.image without overlay.name (the Image Factory resolves overlays by name)",
                path.display()
            );
        }
        for name in &s.customization.system_extensions.official_extensions {
            if !official.contains(name) {
                official.push(name.clone());
            }
        }
        extra_kernel_args.extend(s.customization.extra_kernel_args.iter().cloned());
    }
    extra_kernel_args.extend(flags.extra_kernel_args.iter().cloned());
    if let Some(path) = flags.embed_config {
        if let Some(e) = &embedded {
            bail!("--embed-config {} and {} both give a machine configuration: keep one", path.display(), e.source);
        }
        let meta = std::fs::metadata(path).with_context(|| format!("--embed-config {}", path.display()))?;
        anyhow::ensure!(
            meta.len() <= crate::machine_config::MAX_CONFIG as u64,
            "--embed-config {}: {} bytes, over the {}-byte bound",
            path.display(),
            meta.len(),
            crate::machine_config::MAX_CONFIG
        );
        let config = std::fs::read(path).with_context(|| format!("--embed-config {}", path.display()))?;
        embedded = Some(EmbeddedConfig { config, source: format!("--embed-config {}", path.display()) });
    }
    let talos_agent = if flags.no_talos_agent || profile.talos_agent == Some(false) {
        TalosAgent::Off
    } else if let Some(p) = flags.agent_binary {
        TalosAgent::Binary(p.to_path_buf())
    } else if flags.agent_from_source {
        TalosAgent::FromSource
    } else {
        let text = flags
            .talos_agent_image
            .map(str::to_string)
            .or(profile.talos_agent_image.clone())
            .unwrap_or_else(default_talos_agent_image);
        TalosAgent::Image(text.parse().with_context(|| format!("--talos-agent-image {text}"))?)
    };
    let bundle = |flag: Option<&str>, default: String, what: &str| -> Result<Reference> {
        let text = flag.map(str::to_string).unwrap_or(default);
        text.parse().with_context(|| format!("{what} {text}"))
    };
    Ok(Plan {
        extensions_bundle: bundle(
            flags.extensions_bundle,
            crate::bundle::default_extensions_bundle(&talos_version),
            "--extensions-bundle",
        )?,
        overlays_bundle: bundle(
            flags.overlays_bundle,
            crate::bundle::default_overlays_bundle(&talos_version),
            "--overlays-bundle",
        )?,
        talos_version,
        base,
        embedded_config: embedded,
        official_extensions: official,
        system_extensions: system,
        overlay,
        talos_agent,
        extra_kernel_args,
    })
}

/// The Image Factory schematic equivalent to a plan: its official extensions, its overlay (with
/// the image's repository path, as the factory's UI writes it) and its extra kernel arguments.
/// Extensions that are not official (talos-agent, `--system-extension-image`) cannot be
/// expressed in a schematic and are left out.
pub fn schematic(plan: &Plan, overlay_image: Option<&Reference>) -> crate::schematic::Schematic {
    let mut s = crate::schematic::Schematic::default();
    s.customization.extra_kernel_args = plan.extra_kernel_args.clone();
    s.customization.system_extensions.official_extensions = plan.official_extensions.clone();
    if let Some(e) = &plan.embedded_config {
        // Validated as UTF-8 before the build gets here (crate::machine_config).
        s.customization.embedded_machine_configuration = String::from_utf8_lossy(&e.config).into_owned();
    }
    if let (Some(name), Some(image)) = (&plan.overlay, overlay_image) {
        s.overlay.name = name.clone();
        s.overlay.image = image.repository.clone();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(flags: &Flags<'_>) -> Plan {
        plan(flags).unwrap()
    }

    #[test]
    fn the_default_plan_is_the_operators_image() {
        let p = plan_of(&Flags::default());
        assert_eq!(p.talos_version, "v1.10.5");
        assert_eq!(p.base.to_string(), "ghcr.io/siderolabs/imager:v1.10.5");
        assert_eq!(p.official_extensions, ["siderolabs/spin", "siderolabs/tailscale"]);
        assert_eq!(p.extensions_bundle.to_string(), "ghcr.io/siderolabs/extensions:v1.10.5");
        assert_eq!(p.overlays_bundle.to_string(), "ghcr.io/siderolabs/overlays:v1.10.5");
        assert_eq!(p.talos_agent, TalosAgent::Image(default_talos_agent_image().parse().unwrap()));
        assert_eq!(p.overlay, None);
        let off = plan_of(&Flags { no_talos_agent: true, agent_from_source: true, ..Flags::default() });
        assert_eq!(off.talos_agent, TalosAgent::Off);
        let src = plan_of(&Flags { agent_from_source: true, talos_version: Some("1.11.0"), ..Flags::default() });
        assert_eq!(src.talos_agent, TalosAgent::FromSource);
        assert_eq!(src.extensions_bundle.to_string(), "ghcr.io/siderolabs/extensions:v1.11.0");
    }

    #[test]
    fn schematic_fields_not_built_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        for (yaml, field) in [
            ("customization:\n  bootloader: grub\n", "customization.bootloader"),
            ("customization:\n  diskImage: {sectorSize: 4096}\n", "customization.diskImage.sectorSize"),
            ("customization:\n  secureboot: {enrollKeys: force}\n", "customization.secureboot.enrollKeys"),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = plan(&Flags { schematic: Some(&file), ..Flags::default() }).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("not supported by imager build yet"), "{err}");
        }
        std::fs::write(&file, "owner: acme\ncustomization:\n  bootloader: none\n").unwrap();
        assert!(
            plan(&Flags { schematic: Some(&file), ..Flags::default() }).is_ok(),
            "owner and bootloader: none build"
        );
    }

    #[test]
    fn schematic_of_the_default_plan_and_with_an_overlay() {
        let p = plan_of(&Flags::default());
        let y = schematic(&p, None).marshal().unwrap();
        assert_eq!(
            y,
            "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/spin\n            - siderolabs/tailscale\n"
        );
        let p = plan_of(&Flags { overlay: Some("rpi_generic"), ..Flags::default() });
        let image: Reference = "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5".parse().unwrap();
        let y = schematic(&p, Some(&image)).marshal().unwrap();
        assert!(y.starts_with("overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\n"), "{y}");
    }
}
