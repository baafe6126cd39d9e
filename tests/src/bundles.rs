//! Stand-ins of Talos's per-release **bundle images** and of an **overlay image** (TEST FIXTURES),
//! in the upstream format, and helpers that build and push bundles with arbitrary content.
//!
//! # Extensions bundle: `siderolabs/extensions:v1.10.5`
//! siderolabs/extensions v1.10.5, `internal/extensions/pkg.yaml` (`variant: scratch`, `finalize`
//! `/pkg/image-digests` → `/image-digests` and `/pkg/descriptions.yaml` → `/descriptions.yaml`) and
//! the `Makefile` targets `internal/extensions/image-digests` and
//! `internal/extensions/descriptions.yaml`: an image built `FROM scratch` whose two layers each
//! hold one file at the image root, tar entry names without `./` or `/`:
//! 1. `image-digests`: one line per official extension, in the order of the Makefile's `TARGETS`
//!    (alphabetical), `ghcr.io/siderolabs/<target>:<VERSION>@sha256:<index digest>\n`;
//! 2. `descriptions.yaml`: one YAML map keyed by those exact lines, each value
//!    `{author: <metadata.author>, description: <metadata.description>}` of the extension's
//!    `manifest.yaml` (what `yq` prints: plain keys, the description as a `|` block scalar).
//!
//! # Overlays bundle: `siderolabs/overlays:v1.10.5`
//! siderolabs/overlays v1.10.5, `internal/overlays/pkg.yaml` and
//! `hack/scripts/generate-digests.sh`: one layer with one file, `overlays.yaml`:
//! `overlays: [{name, image, digest}]`, `digest` being `crane digest <image>` (the index digest).
//!
//! The Image Factory (siderolabs/image-factory `internal/artifacts/versions.go`) reads both by
//! exporting the linux/amd64 image and matching tar entry names exactly (`image-digests`,
//! `descriptions.yaml`, `overlays.yaml`), which is why the names here carry no prefix.
//!
//! # Overlay image: `siderolabs/sbc-raspberrypi:v0.1.5`
//! A stand-in with the layout of an overlay image (`profiles/`, `installers/`, `artifacts/`),
//! whose files say that they are a TEST FIXTURE. Not the real overlay.
//!
//! Like the other fixtures, every image is a linux/arm64 + linux/amd64 index (both manifests have
//! the same layers, each its own config), reproducible: fixed mtimes, uid/gid 0, sorted entries,
//! deterministic gzip. [`push_extensions_bundle`] and [`push_overlays_bundle`] build such an image
//! with whatever content a test passes (a digest the registry does not serve, malformed YAML, …)
//! and push it to the fixture registry under any repository and tag.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::Platform;

use crate::extensions::Extension;
use crate::fixtures::{Fixtures, PushedImage};
use crate::oci::{Layer, LayerBuilder, Layout};
use crate::registry::Repo;

/// Repository of the extensions bundle (under ghcr.io upstream).
pub const EXTENSIONS_REPOSITORY: &str = "siderolabs/extensions";
/// Repository of the overlays bundle.
pub const OVERLAYS_REPOSITORY: &str = "siderolabs/overlays";
/// Repository of the stand-in Raspberry Pi overlay image.
pub const SBC_RASPBERRYPI_REPOSITORY: &str = "siderolabs/sbc-raspberrypi";
/// Tag of the stand-in Raspberry Pi overlay image (what overlays v1.10.5 pins).
pub const SBC_RASPBERRYPI_VERSION: &str = "v0.1.5";
/// Overlays the stand-in overlays bundle lists, all served by `sbc-raspberrypi`.
pub const SBC_RASPBERRYPI_OVERLAYS: [&str; 2] = ["rpi_generic", "revpi_generic"];
/// The file of the extensions bundle's first layer.
pub const IMAGE_DIGESTS: &str = "image-digests";
/// The file of the extensions bundle's second layer.
pub const DESCRIPTIONS: &str = "descriptions.yaml";
/// The file of the overlays bundle's layer.
pub const OVERLAYS: &str = "overlays.yaml";

/// One official extension of an extensions bundle: a line of `image-digests` and its
/// `descriptions.yaml` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionEntry {
    /// The tagged reference, `ghcr.io/siderolabs/spin:v0.19.0`.
    pub image: String,
    /// The image index digest, `sha256:…`.
    pub digest: String,
    /// `metadata.author`.
    pub author: String,
    /// `metadata.description` (as `manifest.yaml`'s `|` block scalar holds it: ends with `\n`).
    pub description: String,
}

impl ExtensionEntry {
    /// The entry of a stand-in extension whose image index has digest `digest`.
    pub fn of(ext: &Extension, digest: &str) -> Self {
        Self {
            image: ext.upstream_reference(),
            digest: digest.to_string(),
            author: ext.author.to_string(),
            description: format!("{}\n", ext.description),
        }
    }

    /// The `image-digests` line (without `\n`): `<image>@<digest>`.
    pub fn line(&self) -> String {
        format!("{}@{}", self.image, self.digest)
    }
}

/// One overlay of an overlays bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayEntry {
    /// `rpi_generic`.
    pub name: String,
    /// The tagged reference, `ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5`.
    pub image: String,
    /// The image index digest, `sha256:…`.
    pub digest: String,
}

/// `image-digests`: each entry's [`ExtensionEntry::line`] followed by `\n`, in the given order.
pub fn image_digests(entries: &[ExtensionEntry]) -> String {
    entries.iter().map(|e| e.line() + "\n").collect()
}

/// `descriptions.yaml` as the upstream Makefile's `yq` writes it: one map keyed by the
/// `image-digests` lines, in the given order, each `{author, description}`.
pub fn descriptions_yaml(entries: &[ExtensionEntry]) -> String {
    let mut y = String::new();
    for e in entries {
        y.push_str(&format!("{}:\n  author: {}\n", yaml_scalar(&e.line()), yaml_scalar(&e.author)));
        y.push_str(&yaml_block("description", &e.description, "  "));
    }
    y
}

/// `overlays.yaml`: `overlays:` with one `{name, image, digest}` item per entry.
pub fn overlays_yaml(entries: &[OverlayEntry]) -> String {
    let mut y = String::from("overlays:\n");
    for o in entries {
        y.push_str(&format!(
            "  - name: {}\n    image: {}\n    digest: {}\n",
            yaml_scalar(&o.name),
            yaml_scalar(&o.image),
            yaml_scalar(&o.digest)
        ));
    }
    y
}

/// A YAML scalar for `s`: plain when that reads back as the same string, else double-quoted
/// (JSON string syntax, which YAML's double-quoted style accepts).
fn yaml_scalar(s: &str) -> String {
    let first = s.chars().next();
    let plain = first.is_some_and(|c| !"-?:,[]{}#&*!|>'\"%@`".contains(c) && !c.is_whitespace())
        && !s.ends_with(char::is_whitespace)
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(|c| c.is_control())
        && !s.chars().all(|c| c.is_ascii_digit() || ".+-_eExXoO".contains(c))
        && !["true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"]
            .contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

/// `<indent><key>: |` and `text` as a literal block scalar (indented two more), with the chomping
/// indicator that keeps `text`'s final line breaks; double-quoted when a block cannot hold it.
fn yaml_block(key: &str, text: &str, indent: &str) -> String {
    let body = text.trim_end_matches('\n');
    let breaks = text.len() - body.len();
    let blockable = !body.is_empty()
        && !body.starts_with([' ', '\t'])
        && !body.chars().any(|c| c.is_control() && c != '\n')
        && !body.lines().any(|l| l.ends_with([' ', '\t']));
    if !blockable {
        return format!("{indent}{key}: {}\n", serde_json::to_string(text).expect("a string serializes"));
    }
    let chomp = match breaks {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let mut y = format!("{indent}{key}: |{chomp}\n");
    for l in body.split('\n') {
        if l.is_empty() {
            y.push('\n');
        } else {
            y.push_str(&format!("{indent}  {l}\n"));
        }
    }
    for _ in 1..breaks {
        y.push('\n');
    }
    y
}

/// One layer holding the single regular file `name` (mode 0644, uid/gid 0, mtime `mtime`) at the
/// image root: the tar entry name is exactly `name`.
pub fn single_file_layer(name: &str, data: &[u8], mtime: u64) -> Result<Layer> {
    ensure!(
        !name.is_empty() && !name.contains('/') && name != "." && name != "..",
        "{name:?} is not a file name at the image root"
    );
    let mut b = LayerBuilder::new(mtime);
    b.file(name, data.to_vec(), 0o644);
    b.build(&format!("COPY {name} / (TEST FIXTURE)"))
}

/// The two layers of an extensions bundle: `image-digests`, then `descriptions.yaml`.
pub fn extensions_bundle_layers(image_digests: &str, descriptions: &str, mtime: u64) -> Result<[Layer; 2]> {
    Ok([
        single_file_layer(IMAGE_DIGESTS, image_digests.as_bytes(), mtime)?,
        single_file_layer(DESCRIPTIONS, descriptions.as_bytes(), mtime)?,
    ])
}

/// The one layer of an overlays bundle: `overlays.yaml`.
pub fn overlays_bundle_layer(overlays_yaml: &str, mtime: u64) -> Result<Layer> {
    single_file_layer(OVERLAYS, overlays_yaml.as_bytes(), mtime)
}

/// The one layer of the stand-in `siderolabs/sbc-raspberrypi:<version>` overlay image
/// (`v0.1.5`, `v0.2.0`: each Talos release pins one, see [`kernel_cmdline::quirks::RELEASES`]).
pub fn sbc_raspberrypi_layer(version: &str, mtime: u64) -> Result<Layer> {
    let what = format!("ghcr.io/{SBC_RASPBERRYPI_REPOSITORY}:{version}");
    let mut b = LayerBuilder::new(mtime);
    b.file(
        "profiles/rpi_generic.yaml",
        format!("# moonboot TEST FIXTURE: stand-in profile of the rpi_generic overlay of {what}\narch: arm64\n"),
        0o644,
    );
    b.file(
        "installers/rpi_generic",
        format!(
            "#!/bin/sh\n# moonboot TEST FIXTURE: stand-in installer of the rpi_generic overlay of {what}.\n\
             echo \"moonboot stand-in rpi_generic overlay installer ({what}): not the real program\" >&2\nexit 1\n"
        ),
        0o755,
    );
    b.file(
        "artifacts/arm64/firmware/boot/README.moonboot-test",
        format!("moonboot TEST FIXTURE: stand-in of {what}. No Raspberry Pi firmware here.\n"),
        0o644,
    );
    b.build(&format!("moonboot stand-in of {what}, TEST FIXTURE"))
}

/// Writes an OCI image layout at `dir` (recreated) holding an index tagged `tag` over one
/// linux/arm64 and one linux/amd64 image with the same `layers` (base first), each with its own
/// config; `what` goes into the description label. Returns its description with `reference`
/// empty and `upstream_reference` `ghcr.io/<repository>:<tag>`.
///
/// # Errors
/// Writing the layout.
pub fn write_layout(
    dir: &Path,
    repository: &str,
    tag: &str,
    layers: &[&Layer],
    epoch: u64,
    what: &str,
) -> Result<PushedImage> {
    let upstream = format!("ghcr.io/{repository}:{tag}");
    let labels = BTreeMap::from([(
        "org.opencontainers.image.description".to_string(),
        format!("moonboot stand-in of {upstream} ({what}): TEST FIXTURE, not the real image"),
    )]);
    let layout = Layout::create(dir)?;
    let mut manifests = Vec::new();
    let mut digests = BTreeMap::new();
    for arch in crate::build::ARCHES {
        let desc = layout.put_image(&Platform::linux(arch), layers, epoch, &labels, &BTreeMap::new())?;
        digests.insert(arch.to_string(), desc.digest.to_string());
        manifests.push(desc);
    }
    let index = layout.finish_index(manifests, &labels, tag)?;
    Ok(PushedImage {
        repository: repository.to_string(),
        tag: tag.to_string(),
        reference: String::new(),
        upstream_reference: upstream,
        index_digest: index.digest.to_string(),
        manifests: digests,
        layout: dir.to_path_buf(),
        extension: None,
    })
}

/// Writes an extensions bundle with these files as an OCI image layout at `dir`.
///
/// # Errors
/// Writing the layout.
pub fn build_extensions_bundle(
    dir: &Path,
    repository: &str,
    tag: &str,
    image_digests: &str,
    descriptions: &str,
    epoch: u64,
) -> Result<PushedImage> {
    let [digests, descs] = extensions_bundle_layers(image_digests, descriptions, epoch)?;
    write_layout(dir, repository, tag, &[&digests, &descs], epoch, "the extensions bundle")
}

/// Writes an overlays bundle with this `overlays.yaml` as an OCI image layout at `dir`.
///
/// # Errors
/// Writing the layout.
pub fn build_overlays_bundle(
    dir: &Path,
    repository: &str,
    tag: &str,
    overlays_yaml: &str,
    epoch: u64,
) -> Result<PushedImage> {
    let layer = overlays_bundle_layer(overlays_yaml, epoch)?;
    write_layout(dir, repository, tag, &[&layer], epoch, "the overlays bundle")
}

/// Writes the stand-in `siderolabs/sbc-raspberrypi:<version>` as an OCI image layout at `dir`.
///
/// # Errors
/// Writing the layout.
pub fn build_sbc_raspberrypi(dir: &Path, version: &str, epoch: u64) -> Result<PushedImage> {
    let layer = sbc_raspberrypi_layer(version, epoch)?;
    write_layout(dir, SBC_RASPBERRYPI_REPOSITORY, version, &[&layer], epoch, "an overlay image")
}

/// The stand-in `image-digests` and `descriptions.yaml` of extensions v1.10.5 for these stand-in
/// extensions (pass them in the upstream order, alphabetical) and their index digests.
pub fn standin_extensions_files(extensions: &[(&Extension, &str)]) -> (String, String) {
    let entries: Vec<ExtensionEntry> = extensions.iter().map(|(e, d)| ExtensionEntry::of(e, d)).collect();
    (image_digests(&entries), descriptions_yaml(&entries))
}

/// The stand-in `overlays.yaml` of an overlays bundle: [`SBC_RASPBERRYPI_OVERLAYS`], all pinned to
/// the stand-in `sbc-raspberrypi:<version>` (`v0.1.5` for overlays v1.10.5) of index digest
/// `digest`.
pub fn standin_overlays_yaml(version: &str, digest: &str) -> String {
    let entries: Vec<OverlayEntry> = SBC_RASPBERRYPI_OVERLAYS
        .iter()
        .map(|n| OverlayEntry {
            name: n.to_string(),
            image: format!("ghcr.io/{SBC_RASPBERRYPI_REPOSITORY}:{version}"),
            digest: digest.to_string(),
        })
        .collect();
    overlays_yaml(&entries)
}

/// Pushes the layout of `img` to `registry` (`127.0.0.1:PORT`) as `<repository>:<tag>` with
/// `skopeo copy --all --preserve-digests`, as `scripts/fixtures` does, and checks that the
/// registry serves the built index digest. Returns `<registry>/<repository>:<tag>`.
///
/// # Errors
/// `skopeo`, or the registry serving another digest.
pub fn push(registry: &str, img: &PushedImage) -> Result<String> {
    let reference = format!("{registry}/{}:{}", img.repository, img.tag);
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{}", img.layout.display(), img.tag))
        .arg(format!("docker://{reference}"))
        .output()
        .context("running skopeo (is it installed? run scripts/setup)")?;
    ensure!(out.status.success(), "skopeo copy to {reference}: {}", String::from_utf8_lossy(&out.stderr).trim());
    let (_, body) = Repo { host: registry, name: &img.repository }.manifest(&img.tag)?;
    let got = Sha256Digest::of(&body).to_string();
    ensure!(got == img.index_digest, "{reference} serves index {got}, built {}", img.index_digest);
    Ok(reference)
}

fn layout_dir(work: &Path, repository: &str, tag: &str) -> std::path::PathBuf {
    work.join(format!("bundle-{}-{tag}", repository.replace('/', "_")))
}

/// Builds an extensions bundle holding exactly these `image-digests` and `descriptions.yaml`
/// (any content: the files are not checked) under `work`, and pushes it to the fixture registry
/// as `<repository>:<tag>`. Returns the pushed reference, `<registry>/<repository>:<tag>`;
/// point moonboot at it through the mirror `ghcr.io=<registry>` as `ghcr.io/<repository>:<tag>`.
///
/// # Errors
/// Writing the layout, `skopeo`, the registry.
pub fn push_extensions_bundle(
    f: &Fixtures,
    work: &Path,
    repository: &str,
    tag: &str,
    image_digests: &str,
    descriptions: &str,
) -> Result<String> {
    let dir = layout_dir(work, repository, tag);
    let img = build_extensions_bundle(&dir, repository, tag, image_digests, descriptions, f.source_date_epoch)?;
    push(&f.registry, &img)
}

/// Builds an overlays bundle holding exactly this `overlays.yaml` (any content) under `work`,
/// and pushes it to the fixture registry as `<repository>:<tag>`. Returns the pushed reference.
///
/// # Errors
/// Writing the layout, `skopeo`, the registry.
pub fn push_overlays_bundle(
    f: &Fixtures,
    work: &Path,
    repository: &str,
    tag: &str,
    overlays_yaml: &str,
) -> Result<String> {
    let dir = layout_dir(work, repository, tag);
    let img = build_overlays_bundle(&dir, repository, tag, overlays_yaml, f.source_date_epoch)?;
    push(&f.registry, &img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::{SPIN, TAILSCALE};
    use std::io::Read;

    fn entries(layer: &Layer) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer.blob[..]).read_to_end(&mut tar).unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                assert!(e.header().entry_type().is_file());
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let name = String::from_utf8(h.path_bytes().into_owned()).unwrap();
                (name, h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap(), data)
            })
            .collect()
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_digests_and_descriptions() {
        let (digests, descs) = standin_extensions_files(&[(&SPIN, D1), (&TAILSCALE, D2)]);
        assert_eq!(
            digests,
            format!("ghcr.io/siderolabs/spin:v0.19.0@{D1}\nghcr.io/siderolabs/tailscale:1.84.0@{D2}\n")
        );
        assert_eq!(
            descs,
            format!(
                "ghcr.io/siderolabs/spin:v0.19.0@{D1}:\n  author: Sven Pfennig\n  description: |\n    {}\n\
                 ghcr.io/siderolabs/tailscale:1.84.0@{D2}:\n  author: Beau Trepp\n  description: |\n    {}\n",
                SPIN.description, TAILSCALE.description
            )
        );
    }

    #[test]
    fn overlays() {
        assert_eq!(
            standin_overlays_yaml(SBC_RASPBERRYPI_VERSION, D1),
            format!(
                "overlays:\n  - name: rpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5\n    digest: {D1}\n\
                 \x20 - name: revpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.5\n    digest: {D1}\n"
            )
        );
    }

    #[test]
    fn scalars_and_blocks() {
        assert_eq!(yaml_scalar("Sidero Labs"), "Sidero Labs");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar("1.0"), "\"1.0\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("-x"), "\"-x\"");
        assert_eq!(yaml_block("d", "a\n\nb\n", ""), "d: |\n  a\n\n  b\n");
        assert_eq!(yaml_block("d", "a", ""), "d: |-\n  a\n");
        assert_eq!(yaml_block("d", "a\n\n", ""), "d: |+\n  a\n\n");
        assert_eq!(yaml_block("d", " a\n", ""), "d: \" a\\n\"\n");
        assert_eq!(yaml_block("d", "", ""), "d: \"\"\n");
    }

    #[test]
    fn bundle_layers_hold_exactly_one_root_file() {
        let [a, b] = extensions_bundle_layers("x\n", "y: z\n", 1234).unwrap();
        let o = overlays_bundle_layer("overlays: []\n", 1234).unwrap();
        for (layer, name, data) in
            [(&a, "image-digests", "x\n"), (&b, "descriptions.yaml", "y: z\n"), (&o, "overlays.yaml", "overlays: []\n")]
        {
            let e = entries(layer);
            assert_eq!(e.len(), 1, "{name}");
            assert_eq!(e[0], (name.to_string(), 0o644, 0, 0, 1234, data.as_bytes().to_vec()));
        }
        assert!(single_file_layer("a/b", b"", 0).is_err());
        // Reproducible.
        assert_eq!(extensions_bundle_layers("x\n", "y: z\n", 1234).unwrap()[0].blob, a.blob);
    }

    #[test]
    fn layout_is_multiarch_and_reproducible() {
        let base = std::env::temp_dir().join(format!("moonboot-bundles-test-{}", std::process::id()));
        let one = build_overlays_bundle(&base.join("1"), OVERLAYS_REPOSITORY, "v1", "overlays: []\n", 5).unwrap();
        let two = build_overlays_bundle(&base.join("2"), OVERLAYS_REPOSITORY, "v1", "overlays: []\n", 5).unwrap();
        assert_eq!(one.index_digest, two.index_digest);
        assert_eq!(one.manifests.keys().collect::<Vec<_>>(), ["amd64", "arm64"]);
        assert_ne!(one.manifests["amd64"], one.manifests["arm64"], "each platform has its own config");
        assert_eq!(one.upstream_reference, "ghcr.io/siderolabs/overlays:v1");
        for arch in ["amd64", "arm64"] {
            assert_eq!(crate::oci::layout_layers(&one.layout, "v1", arch).unwrap().len(), 1);
        }
        let sbc = build_sbc_raspberrypi(&base.join("3"), SBC_RASPBERRYPI_VERSION, 5).unwrap();
        let blob = &crate::oci::layout_layers(&sbc.layout, SBC_RASPBERRYPI_VERSION, "arm64").unwrap()[0];
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "profiles/rpi_generic.yaml",
            "installers/rpi_generic",
            "artifacts/arm64/firmware/boot/README.moonboot-test",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
