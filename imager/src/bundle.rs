//! Talos's per-release bundles of official system extensions and overlays: how `imager build`
//! turns `siderolabs/spin` or `rpi_generic` into an image pinned by digest, as the Image Factory
//! does. Only the bundle of the exact Talos version is trusted: extension tags such as
//! `spin:v0.19.0` were re-pushed between Talos patch releases with other digests.
//!
//! # Extensions bundle: `ghcr.io/siderolabs/extensions:v<talos version>`
//! Built `FROM scratch` by siderolabs/extensions (`internal/extensions/pkg.yaml`, `Makefile`
//! targets `extensions-metadata`, `internal/extensions/image-digests`), one file per layer at the
//! image root:
//! - `image-digests`: one line per official extension, `ghcr.io/siderolabs/NAME:TAG@sha256:…`
//!   (the digest of the tag's image index), in the Makefile's target order;
//! - `descriptions.yaml`: a map keyed by those exact lines, each `{author, description}`.
//!
//! The Image Factory (`internal/artifacts/versions.go`, `internal/profile/profile.go`
//! `findExtension`) trims each line, cuts it at the first `@`, skips lines without one, and
//! names an extension by the reference's repository path: `siderolabs/spin`. We read the same
//! files with the same rules. The factory pulls from its own registry and drops the registry of
//! the line; we keep it (`ghcr.io`), so `--registry-mirror ghcr.io=…` applies.
//!
//! # Overlays bundle: `ghcr.io/siderolabs/overlays:v<talos version>`
//! siderolabs/overlays (`internal/overlays/pkg.yaml`, `hack/scripts/generate-digests.sh`): one
//! file `overlays.yaml`, `overlays: [{name, image, digest}]`. The factory matches the schematic's
//! `overlay.name` only (`rpi_generic` → `ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5@sha256:…`).
//!
//! Both bundles are read with the shared layer reader (whiteouts applied, sizes bounded) and are
//! themselves recorded by digest in `build.json`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::layer::{self, Wanted};
use boot_artifact::reference::Reference;
use serde::{Deserialize, Serialize};

use crate::build::pull::Puller;

/// The extensions bundle's list of pinned images.
pub const IMAGE_DIGESTS: &str = "image-digests";
/// The extensions bundle's descriptions.
pub const DESCRIPTIONS: &str = "descriptions.yaml";
/// The overlays bundle's list.
pub const OVERLAYS: &str = "overlays.yaml";
/// Bound on each bundle file: 4 MiB (v1.10.5's `image-digests` is about 8 KiB).
pub const MAX_BUNDLE_FILE: u64 = 4 << 20;

/// The default extensions bundle of a Talos version (`v1.10.5`): Talos `pkg/images`
/// `Registry/Username/extensions:<version>`.
pub fn default_extensions_bundle(talos_version: &str) -> String {
    format!("ghcr.io/siderolabs/extensions:{talos_version}")
}

/// The default overlays bundle of a Talos version.
pub fn default_overlays_bundle(talos_version: &str) -> String {
    format!("ghcr.io/siderolabs/overlays:{talos_version}")
}

/// One official extension the bundle lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfficialExtension {
    /// The Image Factory name: the repository path, `siderolabs/spin`.
    pub name: String,
    /// The reference, tag and digest: `ghcr.io/siderolabs/spin:v0.19.0@sha256:…`.
    pub image: String,
    /// The tag (`v0.19.0`).
    pub tag: Option<String>,
    /// The image index digest.
    pub digest: Sha256Digest,
    /// `author` from `descriptions.yaml` (empty when not described).
    pub author: String,
    /// `description` from `descriptions.yaml`.
    pub description: String,
}

/// One overlay the bundle lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// `rpi_generic`.
    pub name: String,
    /// `ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5`.
    pub image: String,
    /// The image index digest.
    pub digest: Sha256Digest,
}

impl Overlay {
    /// The overlay image pinned by digest.
    ///
    /// # Errors
    /// A malformed `image`.
    pub fn reference(&self) -> Result<Reference> {
        let mut r: Reference = self.image.parse().with_context(|| format!("overlay {}: image", self.name))?;
        r.digest = Some(self.digest);
        Ok(r)
    }
}

/// A bundle image as it was resolved (recorded in `build.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleSource {
    /// The reference asked for.
    pub reference: String,
    /// The index digest, when the reference named an index.
    pub index_digest: Option<String>,
    /// The platform manifest's digest.
    pub manifest_digest: String,
}

/// The extensions bundle of one Talos version.
#[derive(Debug, Clone)]
pub struct ExtensionsBundle {
    /// Where it came from.
    pub source: BundleSource,
    /// The official extensions, in the bundle's order.
    pub extensions: Vec<OfficialExtension>,
}

/// The overlays bundle of one Talos version.
#[derive(Debug, Clone)]
pub struct OverlaysBundle {
    /// Where it came from.
    pub source: BundleSource,
    /// The overlays, in the bundle's order.
    pub overlays: Vec<Overlay>,
}

#[derive(Deserialize)]
struct Description {
    #[serde(default)]
    author: String,
    #[serde(default)]
    description: String,
}

/// Parses `image-digests` (and `descriptions.yaml`, when present) into official extensions.
///
/// # Errors
/// A line whose reference or digest does not parse (naming the line), a name listed twice,
/// malformed `descriptions.yaml`.
pub fn parse_extensions(image_digests: &str, descriptions: Option<&str>) -> Result<Vec<OfficialExtension>> {
    let described: BTreeMap<String, Description> = match descriptions {
        Some(text) if !text.trim().is_empty() => {
            crate::yaml::from_str(text).map_err(|e| anyhow::anyhow!("{DESCRIPTIONS}: {e}"))?
        }
        _ => BTreeMap::new(),
    };
    let mut out: Vec<OfficialExtension> = Vec::new();
    for (n, raw) in image_digests.lines().enumerate() {
        let line = raw.trim();
        let Some((tagged, digest)) = line.split_once('@') else { continue };
        let at = || format!("{IMAGE_DIGESTS} line {}: {line:?}", n + 1);
        let digest: Sha256Digest = digest.parse().with_context(at)?;
        let r: Reference = tagged.parse().with_context(at)?;
        if r.digest.is_some() {
            bail!("{}: two digests", at());
        }
        let name = r.repository.clone();
        if out.iter().any(|e| e.name == name) {
            bail!("{}: {name} is listed twice", at());
        }
        let d = described.get(line);
        out.push(OfficialExtension {
            name,
            image: line.to_string(),
            tag: r.tag.clone(),
            digest,
            author: d.map(|d| d.author.trim().to_string()).unwrap_or_default(),
            description: d.map(|d| d.description.trim().to_string()).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Parses `overlays.yaml`.
///
/// # Errors
/// YAML errors naming the field, a name listed twice.
pub fn parse_overlays(text: &str) -> Result<Vec<Overlay>> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        overlays: Vec<Overlay>,
    }
    let f: File = crate::yaml::from_str(text).map_err(|e| anyhow::anyhow!("{OVERLAYS}: {e}"))?;
    for (i, o) in f.overlays.iter().enumerate() {
        if f.overlays[..i].iter().any(|p| p.name == o.name) {
            bail!("{OVERLAYS}: overlay {} is listed twice", o.name);
        }
    }
    Ok(f.overlays)
}

/// The names in `known` closest to `wanted`: those containing it or contained in it, or within
/// an edit distance of a third of its length; at most five, closest first.
pub fn near_matches<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let w = wanted.to_ascii_lowercase();
    let short = w.rsplit('/').next().unwrap_or(&w).to_string();
    let mut scored: Vec<(usize, &str)> = known
        .into_iter()
        .filter_map(|k| {
            let kl = k.to_ascii_lowercase();
            let ks = kl.rsplit('/').next().unwrap_or(&kl);
            let d = edit_distance(&short, ks).min(edit_distance(&w, &kl));
            let related = !short.is_empty() && (ks.contains(short.as_str()) || short.contains(ks));
            (related || d <= (short.len() / 3).max(1)).then_some((if related { 0 } else { d }, k))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, k)| k).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn unknown(what: &str, wanted: &str, source: &str, known: Vec<&str>) -> anyhow::Error {
    let near = near_matches(wanted, known.iter().copied());
    let hint = if near.is_empty() {
        format!("it lists {} of them; see `imager extensions list`", known.len())
    } else {
        format!("did you mean {}?", near.join(", "))
    };
    anyhow::anyhow!("{what} {wanted:?} is not in {source}: {hint}")
}

impl ExtensionsBundle {
    /// The official extension named `name` (`siderolabs/spin`).
    ///
    /// # Errors
    /// An unknown name, with the near matches.
    pub fn find(&self, name: &str) -> Result<&OfficialExtension> {
        self.extensions.iter().find(|e| e.name == name).ok_or_else(|| {
            unknown(
                "official extension",
                name,
                &self.source.reference,
                self.extensions.iter().map(|e| e.name.as_str()).collect(),
            )
        })
    }
}

impl OverlaysBundle {
    /// The overlay named `name` (`rpi_generic`).
    ///
    /// # Errors
    /// An unknown name, with the near matches.
    pub fn find(&self, name: &str) -> Result<&Overlay> {
        self.overlays.iter().find(|o| o.name == name).ok_or_else(|| {
            unknown("overlay", name, &self.source.reference, self.overlays.iter().map(|o| o.name.as_str()).collect())
        })
    }
}

/// Pulls the bundle image `reference` for `arch` and reads `files` (root paths) out of it,
/// layers stacked. Returns the source and each file's text (`None` when absent).
fn read_bundle(
    puller: &Puller,
    reference: &Reference,
    arch: &str,
    files: &[&str],
) -> Result<(BundleSource, Vec<Option<String>>)> {
    let resolved = puller.resolve_signed(reference, arch).context("bundle")?;
    let wanted: Vec<Wanted> = files.iter().map(|f| Wanted::new(*f, MAX_BUNDLE_FILE)).collect();
    let mut layers = Vec::new();
    for d in &resolved.manifest.layers {
        let blob = puller.fetch_small(&resolved, d, MAX_BUNDLE_FILE).with_context(|| format!("bundle {reference}"))?;
        let found = layer::extract(&blob[..], layer::expansion_limit(d.size), &wanted, layer::to_vec)
            .with_context(|| format!("bundle {reference}: layer {}", d.digest))?;
        layers.push(found);
    }
    let mut stacked = layer::stack(layers);
    let texts = files
        .iter()
        .map(|f| {
            stacked
                .remove(*f)
                .map(|bytes| String::from_utf8(bytes).with_context(|| format!("bundle {reference}: /{f} is not UTF-8")))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let source = BundleSource {
        reference: reference.to_string(),
        index_digest: resolved.index_digest.map(|d| d.to_string()),
        manifest_digest: resolved.manifest_digest.to_string(),
    };
    Ok((source, texts))
}

/// Pulls and parses the extensions bundle `reference` (platform `linux/<arch>`).
///
/// # Errors
/// The registry's (naming the bundle and the endpoints tried), a bundle without
/// `image-digests`, malformed contents.
pub fn extensions_bundle(puller: &Puller, reference: &Reference, arch: &str) -> Result<ExtensionsBundle> {
    let (source, mut texts) = read_bundle(puller, reference, arch, &[IMAGE_DIGESTS, DESCRIPTIONS])?;
    let descriptions = texts.pop().flatten();
    let digests = texts
        .pop()
        .flatten()
        .with_context(|| format!("bundle {reference} has no /{IMAGE_DIGESTS}: is it a Talos extensions bundle?"))?;
    let extensions =
        parse_extensions(&digests, descriptions.as_deref()).with_context(|| format!("bundle {reference}"))?;
    Ok(ExtensionsBundle { source, extensions })
}

/// Pulls and parses the overlays bundle `reference` (platform `linux/<arch>`).
///
/// # Errors
/// As [`extensions_bundle`], for `overlays.yaml`.
pub fn overlays_bundle(puller: &Puller, reference: &Reference, arch: &str) -> Result<OverlaysBundle> {
    let (source, mut texts) = read_bundle(puller, reference, arch, &[OVERLAYS])?;
    let text = texts
        .pop()
        .flatten()
        .with_context(|| format!("bundle {reference} has no /{OVERLAYS}: is it a Talos overlays bundle?"))?;
    let overlays = parse_overlays(&text).with_context(|| format!("bundle {reference}"))?;
    Ok(OverlaysBundle { source, overlays })
}

/// Runs `imager extensions list`.
///
/// # Errors
/// A bundle that cannot be reached or read, with context.
pub fn run_list(args: &crate::cli::extensions::ListArgs) -> Result<()> {
    let mut version = args.talos_version.clone();
    if !version.starts_with('v') {
        version.insert(0, 'v');
    }
    let puller = Puller::new(args.registry.options()?)?;
    let arch = args.arch.as_str();
    let ext_ref: Reference = args
        .extensions_bundle
        .clone()
        .unwrap_or_else(|| default_extensions_bundle(&version))
        .parse()
        .context("--extensions-bundle")?;
    let extensions = extensions_bundle(&puller, &ext_ref, arch)?;
    let overlays = if args.overlays {
        let r: Reference = args
            .overlays_bundle
            .clone()
            .unwrap_or_else(|| default_overlays_bundle(&version))
            .parse()
            .context("--overlays-bundle")?;
        Some(overlays_bundle(&puller, &r, arch)?)
    } else {
        None
    };
    if args.json {
        let mut v = serde_json::json!({
            "extensions_bundle": extensions.source,
            "extensions": extensions.extensions,
        });
        if let Some(o) = &overlays {
            v["overlays_bundle"] = serde_json::to_value(&o.source)?;
            v["overlays"] = serde_json::to_value(&o.overlays)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let digest = extensions.source.index_digest.as_deref().unwrap_or(&extensions.source.manifest_digest);
    println!("{} ({digest})", extensions.source.reference);
    for e in &extensions.extensions {
        let summary = e.description.lines().next().unwrap_or_default();
        println!("  {:<40} {:<14} {}  {summary}", e.name, e.tag.as_deref().unwrap_or("-"), e.digest);
    }
    if let Some(o) = overlays {
        let digest = o.source.index_digest.as_deref().unwrap_or(&o.source.manifest_digest);
        println!("{} ({digest})", o.source.reference);
        for ov in &o.overlays {
            println!("  {:<40} {:<48} {}", ov.name, ov.image, ov.digest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_digests_and_descriptions_as_the_factory_reads_them() {
        let digests = format!(
            "ghcr.io/siderolabs/amd-ucode:20250509@{}\n  ghcr.io/siderolabs/spin:v0.19.0@{}  \n\nnot a line\nghcr.io/siderolabs/tailscale:1.84.0@{}\n",
            d('a'),
            d('b'),
            d('c')
        );
        let descriptions = format!(
            "ghcr.io/siderolabs/spin:v0.19.0@{}:\n  author: Sven Pfennig\n  description: |\n    This system extension provides support for spin runtime (WebAssembly) containers.\n",
            d('b')
        );
        let e = parse_extensions(&digests, Some(&descriptions)).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["siderolabs/amd-ucode", "siderolabs/spin", "siderolabs/tailscale"]);
        assert_eq!(e[1].tag.as_deref(), Some("v0.19.0"));
        assert_eq!(e[1].digest.to_string(), d('b'));
        assert_eq!(e[1].author, "Sven Pfennig");
        assert!(e[1].description.starts_with("This system extension provides support for spin"));
        assert_eq!(e[2].author, "", "undescribed extensions still load");

        let bad = format!("ghcr.io/siderolabs/spin:v0.19.0@md5:{}\n", "0".repeat(32));
        let err = format!("{:#}", parse_extensions(&bad, None).unwrap_err());
        assert!(err.contains("image-digests line 1"), "{err}");
        let twice = format!("ghcr.io/siderolabs/spin:a@{}\nghcr.io/siderolabs/spin:b@{}\n", d('a'), d('b'));
        assert!(format!("{:#}", parse_extensions(&twice, None).unwrap_err()).contains("listed twice"));
    }

    #[test]
    fn overlays_yaml() {
        let text = format!(
            "overlays:\n  - name: rpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5\n    digest: {}\n",
            d('e')
        );
        let o = parse_overlays(&text).unwrap();
        assert_eq!(o[0].name, "rpi_generic");
        assert_eq!(
            o[0].reference().unwrap().to_string(),
            format!("ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5@{}", d('e'))
        );
        let missing = "overlays:\n  - name: rpi_generic\n    image: x\n";
        let err = format!("{:#}", parse_overlays(missing).unwrap_err());
        assert!(err.contains("digest"), "{err}");
    }

    #[test]
    fn unknown_names_list_near_matches() {
        let known = ["siderolabs/spin", "siderolabs/tailscale", "siderolabs/gvisor", "siderolabs/amd-ucode"];
        assert_eq!(near_matches("spin", known), ["siderolabs/spin"]);
        assert_eq!(near_matches("siderolabs/tailscal", known), ["siderolabs/tailscale"]);
        assert_eq!(near_matches("siderolabs/gvisr", known), ["siderolabs/gvisor"]);
        assert!(near_matches("siderolabs/zzzzzzzz", known).is_empty());
        let e = unknown("official extension", "spin", "ghcr.io/siderolabs/extensions:v1.10.5", known.to_vec());
        assert_eq!(
            e.to_string(),
            "official extension \"spin\" is not in ghcr.io/siderolabs/extensions:v1.10.5: did you mean siderolabs/spin?"
        );
    }
}
