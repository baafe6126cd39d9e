//! The bastion's registry cache, measured: Debian's `docker-registry` (distribution 2.8) as a
//! pull-through cache (`proxy.remoteurl`) of an upstream registry, with the byte-counting proxy
//! [`crate::faulty`] (no faults) between the two, and a fleet of `talos-agent boot --dry-run`
//! processes starting at once through the cache (`--registry-mirror ORIGIN=CACHE`, as EC2
//! instances do). Used by `tests/tests/pull_through.rs` (asserts) and the `fleet` benchmark
//! driver (prints).
//!
//! Each round starts a cache of its own with empty storage, so a round is cold unless it warms.
//! Loopback only.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::faulty;
use crate::private_registry::PrivateRegistry;

/// What one round cost upstream.
pub struct Round {
    /// Agents started at once.
    pub agents: usize,
    /// Blob bytes the cache fetched from upstream in the whole round (warming included), once the
    /// cache's background stores ended.
    pub upstream: u64,
    /// Of which `imager warm`'s (0 for a cold round).
    pub by_warm: u64,
    /// `imager warm --json`'s output, for a warmed round.
    pub warmed: Option<Value>,
    /// Each agent's `--json` plan.
    pub plans: Vec<Value>,
    /// The cache's address (`127.0.0.1:PORT`), for checking where the agents' plans came from.
    pub cache: String,
    /// Wall seconds of the fleet (from the first start to the last exit).
    pub fleet_seconds: f64,
}

/// Starts `n` agents at once on `reference` (at `origin`, an insecure registry) through `cache`;
/// returns each one's plan, once all have exited.
///
/// # Errors
/// An agent that does not start, fails or prints no JSON plan.
pub fn fleet(agent: &Path, origin: &str, cache: &str, reference: &str, n: usize) -> Result<Vec<Value>> {
    let children = (0..n)
        .map(|_| {
            Command::new(agent)
                .args(["boot", reference, "--dry-run", "--json", "--arch", "arm64", "--platform", "metal"])
                .args(["--no-network-carry-over", "--timeout", "300s"])
                .args(["--registry-mirror", &format!("{origin}={cache}")])
                .args(["--insecure-registry", origin, "--insecure-registry", cache])
                .args(["--auth-file", "/nonexistent/moonboot-test-auth.json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting talos-agent")
        })
        .collect::<Result<Vec<_>>>()?;
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                bail!("an agent failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            serde_json::from_slice(&out.stdout).context("an agent's plan")
        })
        .collect()
}

/// The count once the cache's background stores have ended: unchanged for one second (the cache
/// keeps storing a blob after the request that missed has been answered), at most 120 s.
pub fn settled(count: &dyn Fn() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = count();
    let mut still = 0;
    while still < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// One round: a fresh cache of `origin` (through a byte counter); with `imager`, `imager warm
/// --cache CACHE reference` first; then `n` agents at once. `work` holds the cache's storage.
///
/// # Errors
/// A cache that does not start, `imager warm` failing, an agent failing.
pub fn round(
    imager: Option<&Path>,
    agent: &Path,
    origin: &str,
    reference: &str,
    n: usize,
    work: &Path,
) -> Result<Round> {
    let counter = faulty::start(origin);
    let cache = PrivateRegistry::start_proxy(work, &format!("http://{}", counter.addr))?;
    let upstream = || counter.faults.blob_bytes.load(Ordering::SeqCst);
    let mut warmed = None;
    let mut by_warm = 0;
    if let Some(imager) = imager {
        let out = Command::new(imager)
            .args(["warm", reference, "--cache", &cache.addr, "--insecure-registry", &cache.addr, "--json"])
            .output()
            .context("running imager warm")?;
        if !out.status.success() {
            bail!("imager warm: {}", String::from_utf8_lossy(&out.stderr));
        }
        warmed = Some(serde_json::from_slice(&out.stdout).context("imager warm --json")?);
        by_warm = settled(&upstream);
    }
    let start = Instant::now();
    let plans = fleet(agent, origin, &cache.addr, reference, n)?;
    let fleet_seconds = start.elapsed().as_secs_f64();
    Ok(Round {
        agents: n,
        upstream: settled(&upstream),
        by_warm,
        warmed,
        plans,
        cache: cache.addr.clone(),
        fleet_seconds,
    })
}
