//! `imager warm`: read every blob of a published image once through a registry pull-through
//! cache, so that a fleet booting at once from that cache finds everything there.
//!
//! Why: distribution's proxy (registry:2 `proxy.remoteurl`) fetches a blob from upstream in full
//! for every request that misses while another fetch of the same blob is still in flight
//! (distribution `registry/proxy/proxyblobstore.go`: `ServeBlob` → `copyContent`, per request).
//! Fifty agents starting together against a cold cache can pull the boot artifact from upstream
//! up to fifty times. After `imager warm`, each blob came from upstream once and every agent
//! reads it from the cache's storage.
//!
//! Reading a blob through the cache in full would cost two copies upstream: on a first miss
//! distribution both stores the blob (`storeLocal`, in the background) and streams it to the
//! client from upstream again (`copyContent`). So `imager warm` first sends one request per layer
//! and hangs up without reading the answer: over plain HTTP (the bastion's cache) on a connection
//! closed as soon as the request is sent, which stops the streamed copy at its first write; over
//! HTTPS as soon as the answer's head says 200. The cache keeps storing each blob. Then, 0.5 s
//! after those requests and again after 1 s, then every 2 s, it asks for each blob's first byte
//! until the cache answers with the range (206), which it can only do from its own storage; it
//! reads the blob from the cache, verifies it against its digest (a cache serving other bytes is
//! an error) and throws it away. Every request the cache answers from upstream costs what was in
//! flight when the hang-up reached it: 64 KiB for the first request over plain HTTP, up to a few
//! MiB for a first-byte request while the blob is still being stored (`misses` in the output).
//!
//! The reference is asked of the cache under the same repository path (the cache mirrors the
//! upstream registry, as `talos-agent boot --registry-mirror ORIGIN=CACHE` expects), one
//! architecture after the other.

use std::time::{Duration, Instant};

use anyhow::Context;
use boot_artifact::reference::Reference;
use moonboot_registry::Registry;
use serde::Serialize;

pub use crate::cli::warm::Args;

/// What was read through the cache.
#[derive(Debug, Serialize)]
pub struct Warmed {
    /// The reference as asked of the cache (`CACHE/REPO…`).
    pub reference: String,
    /// One entry per architecture found.
    pub images: Vec<WarmedImage>,
    /// Bytes of every blob read (configs and layers), counted once per digest.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// One architecture's image, read through the cache.
#[derive(Debug, Serialize)]
pub struct WarmedImage {
    /// `arm64`, `amd64`.
    pub arch: String,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The blobs, `sha256:…`, config first.
    pub blobs: Vec<String>,
    /// How many first-byte requests the cache answered from upstream (200) before it held each
    /// layer (each cost upstream what was in flight when it hung up): 0 when the cache held it
    /// the first time it was asked. The request that starts the store over plain HTTP reads no
    /// answer and is not counted.
    pub misses: Vec<u32>,
}

/// How long the cache may take to store one blob before warming gives up.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Reads every blob of `reference` for each of `arches` through `cache` (`HOST[:PORT]`), one
/// architecture after the other. Architectures the reference does not have are skipped; none at all is an
/// error.
///
/// # Errors
/// The registry's, with the reference; "has none of …" when no architecture matched.
pub async fn warm(registry: &Registry, reference: &Reference, cache: &str, arches: &[&str]) -> anyhow::Result<Warmed> {
    let start = Instant::now();
    let at = Reference { registry: cache.to_string(), ..reference.clone() };
    let mut images = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut bytes = 0;
    for arch in arches {
        let resolved = match registry.resolve(&at, arch).await {
            Ok(r) => r,
            Err(moonboot_registry::Error::NoPlatform { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("warming {at} through {cache}")),
        };
        // The config came through the cache while resolving.
        let config = &resolved.manifest.config;
        if seen.insert(config.digest) {
            bytes += config.size;
        }
        let mut blobs = vec![config.digest.to_string()];
        // First one request per layer, so the cache stores them all at once; then, layer by
        // layer, ask again until it holds each. `Some(held)` when the first request's answer
        // said; `None` when it was sent without waiting for one.
        let mut pending = Vec::new();
        for layer in &resolved.manifest.layers {
            blobs.push(layer.digest.to_string());
            if !seen.insert(layer.digest) {
                continue;
            }
            // Over plain HTTP the request that starts the store is sent without waiting for the
            // answer (the cheapest hang-up); over HTTPS the first-byte request does it.
            let answer = if registry.start_storing(&resolved, layer).await.with_context(|| context(&at, layer))? {
                None
            } else {
                Some(registry.blob_is_local(&resolved, layer).await.with_context(|| context(&at, layer))?)
            };
            pending.push((layer, answer));
        }
        let asked = tokio::time::Instant::now();
        let mut misses = Vec::new();
        for (layer, answer) in pending {
            let deadline = Instant::now() + STORE_TIMEOUT;
            let mut wait = Duration::from_millis(500);
            // The first look is 0.5 s after the requests that started the stores.
            let mut look_at = asked + wait;
            let mut missed = u32::from(answer == Some(false));
            let mut held = answer == Some(true);
            while !held {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{}: {cache} did not store it within {} s",
                    context(&at, layer),
                    STORE_TIMEOUT.as_secs()
                );
                tokio::time::sleep_until(look_at).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                held = registry.blob_is_local(&resolved, layer).await.with_context(|| context(&at, layer))?;
                missed += u32::from(!held);
                look_at = tokio::time::Instant::now() + wait;
            }
            misses.push(missed);
            // From the cache's own storage now: verified, then thrown away.
            registry.fetch_blob(&resolved, layer, &mut std::io::sink()).await.with_context(|| context(&at, layer))?;
            bytes += layer.size;
        }
        images.push(WarmedImage {
            arch: arch.to_string(),
            manifest_digest: resolved.manifest_digest.to_string(),
            blobs,
            misses,
        });
    }
    anyhow::ensure!(!images.is_empty(), "{at} has none of the architectures {}", arches.join(", "));
    Ok(Warmed { reference: at.to_string(), images, bytes, seconds: start.elapsed().as_secs_f64() })
}

fn context(at: &Reference, layer: &moonboot_registry::Descriptor) -> String {
    format!("warming {at}: blob {}", layer.digest)
}

/// Runs `imager warm`.
///
/// # Errors
/// A reference that does not parse, and those of [`warm`].
pub fn run(args: &Args) -> anyhow::Result<()> {
    let reference: Reference =
        args.reference.parse().with_context(|| format!("{} is not an image reference", args.reference))?;
    let options = moonboot_registry::Options { insecure: args.insecure_registries.clone(), ..Default::default() };
    let registry = Registry::new(options)?;
    let arches: Vec<&str> =
        if args.arch.is_empty() { vec!["arm64", "amd64"] } else { args.arch.iter().map(|a| a.as_str()).collect() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let warmed = runtime.block_on(warm(&registry, &reference, &args.cache, &arches))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&warmed)?);
    } else {
        for i in &warmed.images {
            println!("{}  linux/{}  {} blobs", i.manifest_digest, i.arch, i.blobs.len());
        }
        println!(
            "warmed {} through {}: {:.1} MiB in {:.1} s",
            reference,
            args.cache,
            warmed.bytes as f64 / (1 << 20) as f64,
            warmed.seconds
        );
    }
    Ok(())
}
