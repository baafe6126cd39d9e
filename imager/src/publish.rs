//! `imager publish`: push the boot artifacts `imager build` wrote (one OCI image layout per
//! architecture, `<output>/boot-<arch>/`) to a registry under one tag, as a multi-arch OCI image
//! index, and the talos-agent extension image next to them.
//!
//! - Each architecture's manifest, config and layers are pushed exactly as stored in the layout,
//!   so the manifest digest in the registry is the one `build.json` and `SHA256SUMS` name. The
//!   manifest is pushed by digest; only the index gets the tag.
//! - The index (`application/vnd.oci.image.index.v1+json`, image-spec `image-index.md`) lists each
//!   manifest with `platform: {architecture: <arch>, os: linux}`, in the order the architectures
//!   were given; its bytes depend only on the manifests, so publishing the same build twice gives
//!   the same index digest.
//! - Idempotent: a blob or manifest the repository already has (`HEAD /v2/<repo>/blobs/<digest>`,
//!   `HEAD /v2/<repo>/manifests/<digest>`, distribution-spec "Checking if content exists") is not
//!   uploaded again but counted as skipped, and a tag that already names the index is left alone:
//!   publishing the same build twice pushes nothing. A tag that named other content is moved, and
//!   the report says from which digest (`tags[].previous`).
//! - Credentials come from `--auth-file`, else `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//!   `~/.docker/config.json` (basic `auth`, `username`/`password`, `identitytoken`); a 401/403
//!   fails with the registry and the credential source named.
//! - The talos-agent extension image (`<output>/extension-talos-agent-<arch>/`, written by
//!   `imager build` / `imager extension build`) goes to `REGISTRY/REPO-extension:TAG` unless
//!   `--extension-to` names another reference; when the build wrote none, publish says so and
//!   pushes the boot artifacts alone.
//! - `--agent-to REF` publishes the static `talos-agent` binaries — `--agent-binary ARCH=PATH`, or
//!   without it `<output>/talos-agent-<arch>` ([`agent_binary_path`], written by `imager build`)
//!   for each architecture given with `--arch` or present — as an OCI artifact index: per
//!   architecture a manifest with `artifactType`
//!   [`AGENT_ARTIFACT_TYPE`], the empty config (`application/vnd.oci.empty.v1+json`, `{}`) and one
//!   layer holding the binary as is, annotated `org.opencontainers.image.title: talos-agent` — the
//!   layout `oras push` writes, so `oras pull` and `skopeo copy` read it, and a stock Ubuntu
//!   fetches the layer blob by digest with `curl` and checks its sha256 before running it.
//! - `--board-inputs DIR` publishes the Raspberry Pi CM3 board inputs in DIR, each checked against
//!   its compiled-in pin, as the artifact [`crate::board::inputs`] describes, to
//!   `--board-inputs-repository` under the tag of the pin set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use boot_artifact::artifact::{self, ANNOTATION_FORMAT};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::Reference;
use moonboot_registry::{Options, Registry};
use serde::Serialize;

use crate::cli::publish::Args;
use boot_artifact::oci::{media_type, Descriptor, ImageIndex, ImageManifest, Platform};

use crate::oci_layout::{LayoutError, LayoutImage, OciLayout};

/// `artifactType` of the talos-agent binary artifact.
pub const AGENT_ARTIFACT_TYPE: &str = "application/vnd.moonboot.talos-agent.binary.v1";
/// The annotation that names a file in an artifact (image-spec `annotations.md`; what `oras`
/// reads to name the file it pulls).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// Largest blob read into memory for an upload: 2 GiB (a Talos initramfs with extensions is
/// about 100 MiB).
pub const MAX_BLOB_SIZE: u64 = 2 << 30;

/// Where `imager build` writes the boot artifact of `arch`: `<output>/boot-<arch>/`.
pub fn boot_layout_dir(output: &Path, arch: &str) -> PathBuf {
    output.join(format!("boot-{arch}"))
}

/// The architectures (arm64 first) whose `dir(output, arch)` exists under `output`
/// ([`boot_layout_dir`], [`extension_layout_dir`], [`agent_binary_path`]): what a command does
/// without `--arch`.
pub fn arches_present(output: &Path, dir: fn(&Path, &str) -> PathBuf) -> Vec<&'static str> {
    ["arm64", "amd64"].into_iter().filter(|a| dir(output, a).exists()).collect()
}

/// Where `imager build` writes the static talos-agent binary of `arch`:
/// `<output>/talos-agent-<arch>`.
pub fn agent_binary_path(output: &Path, arch: &str) -> PathBuf {
    output.join(format!("talos-agent-{arch}"))
}

/// Where `imager build` writes the talos-agent extension image of `arch`:
/// `<output>/extension-talos-agent-<arch>/`.
pub fn extension_layout_dir(output: &Path, arch: &str) -> PathBuf {
    output.join(format!("extension-talos-agent-{arch}"))
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A layout could not be read.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The registry refused or failed an operation.
    #[error(transparent)]
    Registry(#[from] moonboot_registry::Error),
    /// A `boot-<arch>/` layout holds something other than a boot artifact.
    #[error("{dir}: the linux/{arch} image is not a boot artifact ({reason})")]
    NotBootArtifact {
        /// The layout.
        dir: PathBuf,
        /// The architecture.
        arch: String,
        /// Why: no boot artifact markings, or what [`artifact::boot_layers`] refused.
        reason: String,
    },
    /// The registry answered with another digest than the bytes we pushed.
    #[error("{target}: registry stored {got} for a manifest whose digest is {expected}")]
    DigestChanged {
        /// Where it was pushed.
        target: String,
        /// The digest of our bytes.
        expected: Sha256Digest,
        /// The digest the push reported.
        got: Sha256Digest,
    },
}

/// Blob upload counts of one publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlobCounts {
    /// Blobs uploaded.
    pub pushed: u64,
    /// Bytes uploaded.
    pub pushed_bytes: u64,
    /// Blobs the repository already had.
    pub skipped: u64,
    /// Bytes not uploaded because the repository had them.
    pub skipped_bytes: u64,
}

/// One platform's manifest in a pushed index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedManifest {
    /// `arm64`, `amd64`.
    pub arch: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// `REGISTRY/REPO@DIGEST`.
    pub reference: String,
}

/// One pushed multi-arch image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedImage {
    /// `REGISTRY/REPO:TAG`.
    pub reference: String,
    /// The index's digest.
    pub index_digest: String,
    /// `REGISTRY/REPO@INDEX_DIGEST`: what to give `talos-agent boot`.
    pub pinned: String,
    /// The per-architecture manifests, in index order.
    pub manifests: Vec<PushedManifest>,
}

/// One cosign signature `imager publish --sign-key` pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureRecord {
    /// The signed image, `REGISTRY/REPO@sha256:…`.
    pub image: String,
    /// Where its signature is, `REGISTRY/REPO:sha256-<hex>.sig`.
    pub signature: String,
    /// The signature manifest's digest.
    pub signature_manifest: String,
}

/// What happened to one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagUpdate {
    /// `REGISTRY/REPO:TAG`.
    pub reference: String,
    /// The digest the tag names now.
    pub digest: String,
    /// The digest it named before, when it existed.
    pub previous: Option<String>,
    /// `created`, `unchanged` or `moved` (it named other content before).
    pub status: &'static str,
}

/// Everything one publish pushed or found present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pushes {
    /// Blob upload counts.
    pub blobs: BlobCounts,
    /// Manifests and indexes uploaded.
    pub manifests_pushed: u64,
    /// Manifests and indexes the repository already had.
    pub manifests_skipped: u64,
    /// The digest of every blob, manifest and index uploaded, in upload order.
    pub pushed: Vec<String>,
    /// The tags set.
    pub tags: Vec<TagUpdate>,
}

/// What `imager publish` did; its `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The boot artifacts (absent when only the extension image was published).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<PushedImage>,
    /// The talos-agent extension image, if the build wrote one.
    pub extension: Option<PushedImage>,
    /// Why no extension image was pushed, or which architectures lacked one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_note: Option<String>,
    /// The talos-agent binaries artifact, with `--agent-binary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<PushedImage>,
    /// The board inputs artifact, with `--board-inputs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board_inputs: Option<PushedImage>,
    /// The iPXE binaries artifact, with `--ipxe-inputs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipxe_inputs: Option<PushedImage>,
    /// The cosign signatures pushed with `--sign-key`: one per index and per manifest of the boot
    /// artifact, the extension image and the agent binaries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureRecord>,
    /// The SPKI fingerprint of the `--sign-key`'s public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Blob upload counts over everything pushed.
    pub blobs: BlobCounts,
    /// Manifests and indexes uploaded.
    pub manifests_pushed: u64,
    /// Manifests and indexes already present.
    pub manifests_skipped: u64,
    /// Every digest uploaded.
    pub pushed: Vec<String>,
    /// Every tag set, with what it named before.
    pub tags: Vec<TagUpdate>,
}

/// Where a source's blobs are read from.
enum BlobStore {
    /// An OCI image layout on disk (verified while read).
    Layout(OciLayout),
    /// Blobs built in memory, by digest.
    Memory(std::collections::BTreeMap<Sha256Digest, Vec<u8>>),
}

/// One architecture's image, ready to push.
pub struct Source {
    /// `arm64`, `amd64`.
    pub arch: String,
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The manifest's bytes exactly as they are pushed.
    pub manifest_bytes: Vec<u8>,
    blobs: BlobStore,
}

impl Source {
    /// Opens `dir` and picks its `linux/<arch>` image.
    ///
    /// # Errors
    /// [`PublishError::Layout`].
    pub fn open(dir: &Path, arch: &str) -> Result<Source, PublishError> {
        let layout = OciLayout::open(dir)?;
        let LayoutImage { descriptor, manifest, manifest_bytes, .. } = layout.resolve(Some(arch))?;
        Ok(Source { arch: arch.to_string(), descriptor, manifest, manifest_bytes, blobs: BlobStore::Layout(layout) })
    }

    /// The talos-agent binary `bin` for `arch` as an artifact (see the module docs).
    pub fn agent_binary(arch: &str, bin: Vec<u8>) -> Source {
        Source::files(arch, AGENT_ARTIFACT_TYPE, vec![("talos-agent".into(), bin)])
    }

    /// Files as an artifact of `artifact_type` for `arch`, the layout `oras push` writes: the empty
    /// config (`application/vnd.oci.empty.v1+json`, `{}`) and one layer per file, as is
    /// (`application/octet-stream`), annotated `org.opencontainers.image.title` with its name, in
    /// the order given.
    pub fn files(arch: &str, artifact_type: &str, files: Vec<(String, Vec<u8>)>) -> Source {
        let config = Descriptor::of(media_type::OCI_EMPTY, b"{}");
        let mut blobs = std::collections::BTreeMap::from([(config.digest, b"{}".to_vec())]);
        let mut layers = Vec::new();
        for (title, data) in files {
            let mut layer = Descriptor::of("application/octet-stream", &data);
            layer.annotations.insert(ANNOTATION_TITLE.into(), title);
            blobs.insert(layer.digest, data);
            layers.push(layer);
        }
        let mut manifest = ImageManifest::new(config, layers, Default::default());
        manifest.artifact_type = Some(artifact_type.into());
        let manifest_bytes = manifest.to_json();
        let descriptor = Descriptor::of(media_type::OCI_MANIFEST, &manifest_bytes);
        Source { arch: arch.to_string(), descriptor, manifest, manifest_bytes, blobs: BlobStore::Memory(blobs) }
    }

    fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, PublishError> {
        match &self.blobs {
            BlobStore::Layout(l) => Ok(l.read_blob(desc, "blob", MAX_BLOB_SIZE)?),
            BlobStore::Memory(m) => Ok(m.get(&desc.digest).cloned().expect("every blob of an in-memory source")),
        }
    }
}

/// Pushes the blobs and the manifest of `source` to `repo`'s repository (its tag is not touched),
/// skipping what the repository already has, and returns the manifest's digest.
///
/// # Errors
/// [`PublishError::Layout`] when a blob does not match its descriptor, [`PublishError::Registry`]
/// (with [`moonboot_registry::Error::Unauthorized`] naming the credential source),
/// [`PublishError::DigestChanged`].
pub async fn push_image(
    registry: &Registry,
    repo: &Reference,
    source: &Source,
    log: &mut Pushes,
) -> Result<Sha256Digest, PublishError> {
    push_missing_blobs(registry, repo, source, log, true).await?;
    let expected = source.descriptor.digest;
    let target = Reference { tag: None, digest: Some(expected), ..repo.clone() };
    if registry.manifest_digest(&target).await? == Some(expected) {
        log.manifests_skipped += 1;
        return Ok(expected);
    }
    let bytes = &source.manifest_bytes;
    put_manifest(registry, &target, &source.descriptor.media_type, bytes, References::Blobs(source), log).await?;
    Ok(expected)
}

/// Uploads each blob of `source` (config, then layers; each digest once) that `repo`'s repository
/// does not have (`HEAD`), counting the ones it has as skipped when `count_skipped`.
async fn push_missing_blobs(
    registry: &Registry,
    repo: &Reference,
    source: &Source,
    log: &mut Pushes,
    count_skipped: bool,
) -> Result<(), PublishError> {
    let manifest = &source.manifest;
    let mut seen = BTreeSet::new();
    for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !seen.insert(desc.digest) {
            continue;
        }
        if registry.blob_exists(repo, &desc.digest).await? {
            if count_skipped {
                log.blobs.skipped += 1;
                log.blobs.skipped_bytes += desc.size;
            }
            continue;
        }
        let data = source.read_blob(desc)?;
        registry.push_blob(repo, data, &desc.digest).await?;
        log.blobs.pushed += 1;
        log.blobs.pushed_bytes += desc.size;
        log.pushed.push(desc.digest.to_string());
    }
    Ok(())
}

/// What a manifest or index references, to confirm before its upload is tried again.
enum References<'a> {
    /// An image manifest: the blobs of this source.
    Blobs(&'a Source),
    /// An index: these sources' manifests (and their blobs).
    Manifests(&'a [Source]),
}

/// How many times a manifest upload is tried in all while the registry gives transient answers.
const MANIFEST_ATTEMPTS: u32 = 6;

/// Uploads a manifest or index (`bytes`, `media_type`) under `target` and checks that the
/// registry stored it under its digest. A transient answer — a 5xx, or distribution's
/// `DIGEST_INVALID` / `MANIFEST_BLOB_UNKNOWN` while another publisher of the same content rewrites
/// the repository's links ([`moonboot_registry::concurrent_writer_answer`]) — is followed by a
/// confirmation that everything `refs` names is in the repository (uploading what is missing),
/// a backoff, and another upload: [`MANIFEST_ATTEMPTS`] in all, each retry said on stderr.
async fn put_manifest(
    registry: &Registry,
    target: &Reference,
    media_type: &str,
    bytes: &[u8],
    refs: References<'_>,
    log: &mut Pushes,
) -> Result<(), PublishError> {
    let expected = Sha256Digest::of(bytes);
    let mut attempt = 0;
    let got = loop {
        match registry.push_manifest(target, media_type, bytes.to_vec()).await {
            Ok(got) => break got,
            Err(e @ moonboot_registry::Error::Push { transient: true, .. }) if attempt + 1 < MANIFEST_ATTEMPTS => {
                attempt += 1;
                eprintln!(
                    "imager: {e}; confirming its references and pushing it again ({attempt}/{})",
                    MANIFEST_ATTEMPTS - 1
                );
                registry.backoff(attempt - 1).await;
                confirm_references(registry, target, &refs, log).await?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    if got != expected {
        return Err(PublishError::DigestChanged { target: target.to_string(), expected, got });
    }
    log.manifests_pushed += 1;
    log.pushed.push(expected.to_string());
    Ok(())
}

/// Makes sure `target`'s repository has everything `refs` names: missing blobs are uploaded, and
/// a missing manifest of an index is uploaded once (its own failure is returned, not retried here).
async fn confirm_references(
    registry: &Registry,
    target: &Reference,
    refs: &References<'_>,
    log: &mut Pushes,
) -> Result<(), PublishError> {
    let sources = match refs {
        References::Blobs(source) => std::slice::from_ref(*source),
        References::Manifests(sources) => sources,
    };
    for source in sources {
        push_missing_blobs(registry, target, source, log, false).await?;
        if let References::Manifests(_) = refs {
            let digest = source.descriptor.digest;
            let at = Reference { tag: None, digest: Some(digest), ..target.clone() };
            if registry.manifest_digest(&at).await? != Some(digest) {
                registry.push_manifest(&at, &source.descriptor.media_type, source.manifest_bytes.clone()).await?;
                log.manifests_pushed += 1;
                log.pushed.push(digest.to_string());
            }
        }
    }
    Ok(())
}

/// The bytes of the multi-arch index over `sources` (compact JSON, fields in image-spec order:
/// `schemaVersion`, `mediaType`, `manifests`), each entry the manifest's descriptor with
/// `platform` `linux/<arch>` and no annotations. No `artifactType` either, even for an artifact
/// (the manifest carries it): skopeo 1.9 (Debian 12) drops that field when it copies an index,
/// which would change the index digest users pin.
pub fn index_bytes(sources: &[Source]) -> Vec<u8> {
    let manifests = sources
        .iter()
        .map(|s| {
            let mut d = s.descriptor.clone();
            d.platform = Some(Platform::linux(&s.arch));
            d.artifact_type = None;
            d.annotations.clear();
            d
        })
        .collect();
    ImageIndex::new(manifests).to_json()
}

/// Pushes every source's image to `target`'s repository, then the index over them under
/// `target`'s tag — unless the tag already names it.
///
/// # Errors
/// As [`push_image`].
pub async fn push_multi_arch(
    registry: &Registry,
    target: &Reference,
    sources: &[Source],
    log: &mut Pushes,
) -> Result<PushedImage, PublishError> {
    let repo_name = format!("{}/{}", target.registry, target.repository);
    let mut manifests = Vec::new();
    for s in sources {
        let digest = push_image(registry, target, s, log).await?;
        manifests.push(PushedManifest {
            arch: s.arch.clone(),
            digest: digest.to_string(),
            size: s.descriptor.size,
            reference: format!("{repo_name}@{digest}"),
        });
    }
    let bytes = index_bytes(sources);
    let expected = Sha256Digest::of(&bytes);
    let tagged = Reference { digest: None, ..target.clone() };
    let previous = registry.manifest_digest(&tagged).await?;
    let status = match previous {
        Some(p) if p == expected => "unchanged",
        Some(_) => "moved",
        None => "created",
    };
    if status == "unchanged" {
        log.manifests_skipped += 1;
    } else {
        put_manifest(registry, &tagged, media_type::OCI_INDEX, &bytes, References::Manifests(sources), log).await?;
    }
    log.tags.push(TagUpdate {
        reference: tagged.to_string(),
        digest: expected.to_string(),
        previous: previous.map(|d| d.to_string()),
        status,
    });
    Ok(PushedImage {
        reference: tagged.to_string(),
        index_digest: expected.to_string(),
        pinned: format!("{repo_name}@{expected}"),
        manifests,
    })
}

/// The boot artifact sources of `arches` under `output` (every `boot-<arch>/` present when
/// `arches` is empty), each checked to be a boot artifact.
///
/// # Errors
/// [`PublishError::Layout`], [`PublishError::NotBootArtifact`].
pub fn boot_sources(output: &Path, arches: &[&str]) -> Result<Vec<Source>, PublishError> {
    let mut out = Vec::new();
    for arch in arches {
        let dir = boot_layout_dir(output, arch);
        let source = Source::open(&dir, arch)?;
        let reason = match artifact::boot_layers(&source.manifest) {
            Ok(Some(_)) => None,
            Ok(None) => {
                Some(format!("no artifactType {} and no {ANNOTATION_FORMAT} annotation", artifact::ARTIFACT_TYPE))
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = reason {
            return Err(PublishError::NotBootArtifact { dir, arch: arch.to_string(), reason });
        }
        out.push(source);
    }
    Ok(out)
}

/// The default extension target: `REGISTRY/REPO-extension` with `to`'s tag.
pub fn default_extension_target(to: &Reference) -> Reference {
    Reference { repository: format!("{}-extension", to.repository), digest: None, ..to.clone() }
}

fn human_bytes(n: u64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// Runs `imager publish`.
///
/// # Errors
/// Invalid references, missing layouts, registry failures, each with context.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sign_key = match &args.sign_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| format!("--sign-key {}", path.display()))?;
            Some(
                boot_artifact::cosign::SigningKey::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("--sign-key {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let to: Option<Reference> = match &args.to {
        Some(t) => {
            let r: Reference = t.parse()?;
            anyhow::ensure!(r.digest.is_none() && r.tag.is_some(), "--to {t}: give a tag, not a digest");
            Some(r)
        }
        None => None,
    };
    let extension_to = match (&args.extension_to, &to) {
        (Some(r), _) => {
            let r: Reference = r.parse()?;
            anyhow::ensure!(r.digest.is_none(), "--extension-to {r}: give a tag, not a digest");
            Some(r)
        }
        (None, Some(to)) => Some(default_extension_target(to)),
        (None, None) => None,
    };
    let mut agents = Vec::new();
    for spec in &args.agent_binaries {
        let (arch, path) = spec
            .split_once('=')
            .with_context(|| format!("--agent-binary {spec}: expected ARCH=PATH (arm64=…, amd64=…)"))?;
        let arch: kernel_cmdline::preset::Arch =
            arch.parse().map_err(|e: String| anyhow::anyhow!("--agent-binary {spec}: {e}"))?;
        let bin = std::fs::read(path).with_context(|| format!("--agent-binary {spec}: reading {path}"))?;
        crate::build::agent_extension::check_binary(&bin, arch.as_str(), path)?;
        agents.push(Source::agent_binary(arch.as_str(), bin));
    }
    let agent_to = match &args.agent_to {
        Some(r) => {
            let r: Reference = r.parse()?;
            anyhow::ensure!(r.digest.is_none() && r.tag.is_some(), "--agent-to {r}: give a tag, not a digest");
            Some(r)
        }
        None => None,
    };
    anyhow::ensure!(agent_to.is_some() || agents.is_empty(), "--agent-binary needs --agent-to");
    if agent_to.is_some() && agents.is_empty() {
        // The binaries `imager build` wrote next to the boot artifacts.
        let arches: Vec<&str> = if args.arch.is_empty() {
            arches_present(&args.output, agent_binary_path)
        } else {
            args.arch.iter().map(|a| a.as_str()).collect()
        };
        anyhow::ensure!(
            !arches.is_empty(),
            "--agent-to without --agent-binary: no talos-agent-<arch> under {} (imager build writes it when it \
             packs talos-agent)",
            args.output.display()
        );
        for arch in arches {
            let path = agent_binary_path(&args.output, arch);
            let what = path.display().to_string();
            let size = std::fs::metadata(&path).with_context(|| format!("--agent-to: reading {what}"))?.len();
            anyhow::ensure!(
                size <= crate::build::agent_extension::MAX_BINARY,
                "{what}: {size} bytes, over the {}-byte bound",
                crate::build::agent_extension::MAX_BINARY
            );
            let bin = std::fs::read(&path).with_context(|| format!("--agent-to: reading {what}"))?;
            crate::build::agent_extension::check_binary(&bin, arch, &what)?;
            agents.push(Source::agent_binary(arch, bin));
        }
    }
    let board_inputs = match &args.board_inputs {
        Some(dir) => Some(inputs_sources(
            dir,
            &args.board_inputs_repository,
            crate::cli::build::Board::RpiCm3.as_str(),
            &crate::board::rpi_cm3_pins()?,
        )?),
        None => None,
    };
    let ipxe_inputs = match &args.ipxe_inputs {
        Some(dir) => Some(inputs_sources(
            dir,
            &args.board_inputs_repository,
            crate::board::inputs::IPXE,
            &crate::board::ipxe_pins()?,
        )?),
        None => None,
    };
    let arches: Vec<&str> = if extension_to.is_none() {
        Vec::new() // only the agent binaries or pinned inputs
    } else if !args.arch.is_empty() {
        args.arch.iter().map(|a| a.as_str()).collect()
    } else if to.is_some() {
        arches_present(&args.output, boot_layout_dir)
    } else {
        arches_present(&args.output, extension_layout_dir)
    };
    if extension_to.is_some() && arches.is_empty() {
        if to.is_some() {
            anyhow::bail!("no boot artifact under {} (imager build writes boot-<arch>/ there)", args.output.display());
        }
        anyhow::bail!(
            "no talos-agent extension image under {} (imager extension build writes extension-talos-agent-<arch>/)",
            args.output.display()
        );
    }
    let boot = match &to {
        Some(_) => boot_sources(&args.output, &arches)?,
        None => Vec::new(),
    };
    let mut extension = Vec::new();
    let mut missing = Vec::new();
    for arch in &arches {
        let dir = extension_layout_dir(&args.output, arch);
        if OciLayout::is_layout(&dir) {
            extension.push(Source::open(&dir, arch)?);
        } else {
            missing.push(dir.display().to_string());
        }
    }
    anyhow::ensure!(to.is_some() || missing.is_empty(), "no talos-agent extension image at {}", missing.join(", "));
    let extension_note = (!missing.is_empty()).then(|| {
        format!("no talos-agent extension image at {}: not published for those architectures", missing.join(", "))
    });

    let options =
        Options { insecure: args.insecure_registries.clone(), auth_file: args.auth_file.clone(), ..Options::default() };
    let registry = Registry::new(options)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let report = runtime.block_on(async {
        let mut log = Pushes::default();
        let boot = match &to {
            Some(to) => Some(push_multi_arch(&registry, to, &boot, &mut log).await?),
            None => None,
        };
        let extension = match &extension_to {
            Some(t) if !extension.is_empty() => Some(push_multi_arch(&registry, t, &extension, &mut log).await?),
            _ => None,
        };
        let agent = match &agent_to {
            Some(t) => Some(push_multi_arch(&registry, t, &agents, &mut log).await?),
            None => None,
        };
        let board_inputs = match &board_inputs {
            Some((t, sources)) => Some(push_multi_arch(&registry, t, sources, &mut log).await?),
            None => None,
        };
        let ipxe_inputs = match &ipxe_inputs {
            Some((t, sources)) => Some(push_multi_arch(&registry, t, sources, &mut log).await?),
            None => None,
        };
        // cosign signatures of what moonboot builds (not of the pinned Debian inputs, which carry
        // their own pins): every index and every per-architecture manifest.
        let mut signatures = Vec::new();
        if let Some(key) = &sign_key {
            let signed = [(&to, &boot), (&extension_to, &extension), (&agent_to, &agent)];
            for (repo, image) in signed.into_iter().filter_map(|(r, i)| Some((r.as_ref()?, i.as_ref()?))) {
                let digests = std::iter::once(image.index_digest.as_str())
                    .chain(image.manifests.iter().map(|m| m.digest.as_str()));
                for d in digests {
                    let digest: Sha256Digest = d.parse().expect("a digest this publish formatted");
                    let sig = registry.push_cosign_signature(repo, &digest, key).await?;
                    signatures.push(SignatureRecord {
                        image: format!("{}/{}@{digest}", repo.registry, repo.repository),
                        signature: format!(
                            "{}/{}:{}",
                            repo.registry,
                            repo.repository,
                            boot_artifact::cosign::signature_tag(&digest)
                        ),
                        signature_manifest: sig.to_string(),
                    });
                }
            }
        }
        Ok::<_, PublishError>(Report {
            boot,
            extension,
            extension_note,
            agent,
            board_inputs,
            ipxe_inputs,
            signatures,
            signing_key: sign_key.as_ref().map(|k| k.public_key().fingerprint().to_string()),
            blobs: log.blobs,
            manifests_pushed: log.manifests_pushed,
            manifests_skipped: log.manifests_skipped,
            pushed: log.pushed,
            tags: log.tags,
        })
    })?;
    print_report(&report, args.json);
    Ok(())
}

/// The pinned inputs of the set `set` (`rpi-cm3`, `ipxe`) in `dir`, each checked against its
/// compiled-in pin, as the artifact `imager build` pulls ([`crate::board::inputs`]): one manifest
/// per architecture ([`inputs::arch_of`](crate::board::inputs::arch_of)), and where it goes:
/// `repo`, tagged with the pin set's tag.
///
/// # Errors
/// A file missing or not matching its pin; `repo` not a repository.
fn inputs_sources(
    dir: &Path,
    repo: &str,
    set: &str,
    pins: &[crate::board::inputs::Pin],
) -> anyhow::Result<(Reference, Vec<Source>)> {
    use crate::board::inputs;
    let mut loaded = inputs::load(pins, dir).map_err(anyhow::Error::msg)?;
    let mut by_arch: std::collections::BTreeMap<&str, Vec<(String, Vec<u8>)>> = Default::default();
    for p in pins {
        let data = loaded.remove(&p.file).expect("load returns every pin");
        by_arch.entry(inputs::arch_of(p)).or_default().push((p.file.clone(), data));
    }
    let target = inputs::reference(repo, set, pins)?;
    let sources = by_arch.into_iter().map(|(arch, files)| Source::files(arch, inputs::ARTIFACT_TYPE, files)).collect();
    Ok((target, sources))
}

fn print_report(report: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("a report always serialises"));
        return;
    }
    if let Some(note) = &report.extension_note {
        eprintln!("imager: note: {note}");
    }
    for image in report
        .boot
        .iter()
        .chain(&report.extension)
        .chain(&report.agent)
        .chain(&report.board_inputs)
        .chain(&report.ipxe_inputs)
    {
        println!("{}  index  {}", image.index_digest, image.reference);
        for m in &image.manifests {
            println!("{}  {:<5}  {}", m.digest, m.arch, m.reference);
        }
    }
    for sig in &report.signatures {
        println!("signed {}  ({})", sig.image, sig.signature);
    }
    for t in &report.tags {
        match (t.status, &t.previous) {
            ("moved", Some(p)) => println!("tag {} moved from {p} to {}", t.reference, t.digest),
            (status, _) => println!("tag {} {status}", t.reference),
        }
    }
    let b = &report.blobs;
    println!(
        "blobs: {} pushed ({}), {} skipped as already present ({}); manifests: {} pushed, {} already present",
        b.pushed,
        human_bytes(b.pushed_bytes),
        b.skipped,
        human_bytes(b.skipped_bytes),
        report.manifests_pushed,
        report.manifests_skipped
    );
}
