//! `fleet`: a fleet on one bastion, measured (a benchmark, not a test; run by `scripts/bench-fleet`).
//!
//! 1. **Agents**: N `talos-agent boot --dry-run --arch arm64` processes start at once against one
//!    `docker-registry` (the fixture registry on loopback), as when an Auto Scaling group starts N
//!    instances; then the same through the fault-injecting proxy (`moonboot_tests::faulty`) with
//!    chaos: a share of the blob GETs answered 503, stalled then dropped, cut short or corrupted.
//!    For every agent it checks: exit 0 with a plan whose manifest digest is the published one and
//!    whose blobs are all published layers (verified bytes only), or a documented exit code (3
//!    unavailable, 4 verification failed); none still running past `--timeout` plus a grace of
//!    10 s. Prints the aggregate MB/s, p50/p99 seconds per agent and the exit codes.
//! 2. **cache**: the same N agents through Debian's `docker-registry` as a pull-through cache of
//!    the fixture registry (the bastion's topology), first cold, then after `imager warm`, each
//!    with a fresh cache; prints the bytes the cache fetched from upstream as a multiple of the
//!    artifact (`moonboot_tests::pull_through`) and checks the warmed fleet fetched none.
//! 3. **wait**: `talos-agent wait` with M simulated nodes, each POSTing a report every second,
//!    plus a flood of requests with a wrong token from several threads. Prints the p50/p99 latency
//!    of good reports, the peak RSS of `wait` (VmHWM), the refusals it counted, and how many
//!    `refused:` lines it printed for them (at most about one a second by design).
//!
//! Loopback only; bounded in count and time. Exit codes: 0 every check held; 1 a check failed or a
//! step failed (the lines above say which).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use moonboot_tests::fixtures::Fixtures;
use serde_json::Value;

/// Load a fleet of agents and a readiness collector on loopback.
#[derive(Parser)]
#[command(name = "fleet")]
struct Cli {
    /// Working directory (build output, logs).
    #[arg(long, default_value = "target/bench/fleet")]
    work: PathBuf,
    /// Concurrent `talos-agent boot --dry-run` processes.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// The agents' `--timeout`, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Percentage of blob GETs the proxy faults in the chaos round.
    #[arg(long, default_value_t = 10)]
    chaos: usize,
    /// Seconds a stalled blob GET hangs before the proxy drops it.
    #[arg(long, default_value_t = 15)]
    stall: usize,
    /// Simulated nodes reporting to `wait` every second.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Seconds the `wait` load lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Threads sending wrong-token requests as fast as they can.
    #[arg(long, default_value_t = 4)]
    flood_threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("fleet: a check failed (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("fleet: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(cli: &Cli) -> Result<bool> {
    let f = Fixtures::load_default()?.context("target/fixtures/fixtures.json is absent: run scripts/fixtures")?;
    let work = std::fs::canonicalize(".")?.join(&cli.work);
    std::fs::create_dir_all(&work)?;
    let o = moonboot_tests::ec2::Options {
        image: moonboot_tests::demo::Image::default(),
        work: work.clone(),
        verbose: true,
        nodes: 1,
        boot_repository: moonboot_tests::ec2::BOOT_REPOSITORY.into(),
        agent_repository: moonboot_tests::ec2::AGENT_REPOSITORY.into(),
    };
    let built = moonboot_tests::ec2::build_and_publish(&f, &o)?;
    let published = published_layers(&built.out, &built.boot_digest)?;
    let artifact_bytes: u64 = published.values().sum();
    println!("boot artifact {} ({} layers, {:.1} MB)", built.boot_digest, published.len(), artifact_bytes as f64 / 1e6);

    let mut ok = true;
    let reference = |host: &str| format!("{host}/{}@{}", o.boot_repository, built.boot_digest);
    ok &= agents_round(cli, &built.agent_host, "clean", &reference(&f.registry), &f.registry, &published, None)?;
    let proxy = moonboot_tests::faulty::start(&f.registry);
    proxy.faults.chaos_percent.store(cli.chaos, Ordering::SeqCst);
    proxy.faults.stall_seconds.store(cli.stall, Ordering::SeqCst);
    proxy.faults.seed.store(0x5eed_f1ee7, Ordering::SeqCst);
    ok &=
        agents_round(cli, &built.agent_host, "chaos", &reference(&proxy.addr), &proxy.addr, &published, Some(&proxy))?;
    ok &= cache_round(
        cli,
        &built.imager,
        &built.agent_host,
        &f.registry,
        &reference(&f.registry),
        artifact_bytes,
        &work,
    )?;
    ok &= wait_round(cli, &built.agent_host, &work)?;
    Ok(ok)
}

/// Round 3: the agents through a pull-through cache of the fixture registry, cold, then warmed by
/// `imager warm`; upstream bytes as a multiple of the artifact.
fn cache_round(
    cli: &Cli,
    imager: &std::path::Path,
    agent: &std::path::Path,
    origin: &str,
    reference: &str,
    size: u64,
    work: &std::path::Path,
) -> Result<bool> {
    let times = |b: u64| b as f64 / size as f64;
    let cold =
        moonboot_tests::pull_through::round(None, agent, origin, reference, cli.agents, &work.join("cache-cold"))?;
    println!(
        "cache cold: {} agents at once, upstream {:.1} MB = {:.2}x the artifact, fleet {:.1} s",
        cold.agents,
        cold.upstream as f64 / 1e6,
        times(cold.upstream),
        cold.fleet_seconds
    );
    let warm = moonboot_tests::pull_through::round(
        Some(imager),
        agent,
        origin,
        reference,
        cli.agents,
        &work.join("cache-warm"),
    )?;
    let misses = warm.warmed.as_ref().map(|w| w["images"][0]["misses"].to_string()).unwrap_or_default();
    println!(
        "cache warmed: {} agents at once, upstream {:.1} MB = {:.2}x the artifact (imager warm {:.1} MB, misses {misses}; the fleet {:.1} MB), fleet {:.1} s",
        warm.agents,
        warm.upstream as f64 / 1e6,
        times(warm.upstream),
        warm.by_warm as f64 / 1e6,
        (warm.upstream - warm.by_warm) as f64 / 1e6,
        warm.fleet_seconds
    );
    let ok = warm.upstream == warm.by_warm;
    if !ok {
        println!("cache warmed: FAILED: the fleet fetched from upstream after imager warm");
    }
    let _ = std::fs::remove_dir_all(work.join("cache-cold"));
    let _ = std::fs::remove_dir_all(work.join("cache-warm"));
    Ok(ok)
}

/// Every layer (and config) digest of the published manifest, with its size.
fn published_layers(out: &std::path::Path, manifest: &str) -> Result<BTreeMap<String, u64>> {
    let hex = manifest.trim_start_matches("sha256:");
    let path = out.join("boot-arm64/blobs/sha256").join(hex);
    let m: Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let mut all = BTreeMap::new();
    for d in m["layers"].as_array().context("manifest has no layers")?.iter().chain(std::iter::once(&m["config"])) {
        all.insert(d["digest"].as_str().unwrap_or_default().to_string(), d["size"].as_u64().unwrap_or(0));
    }
    Ok(all)
}

struct AgentResult {
    code: Option<i32>,
    seconds: f64,
    plan: Option<Value>,
    stderr_tail: String,
}

fn agents_round(
    cli: &Cli,
    agent: &std::path::Path,
    name: &str,
    reference: &str,
    registry: &str,
    published: &BTreeMap<String, u64>,
    proxy: Option<&moonboot_tests::faulty::Proxy>,
) -> Result<bool> {
    println!("\n== {} agents at once, {name} ({reference})", cli.agents);
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..cli.agents {
        let child = Command::new(agent)
            .args(["boot", reference, "--insecure-registry", registry, "--arch", "arm64", "--platform", "metal"])
            .args(["--dry-run", "--json", "--timeout", &format!("{}s", cli.timeout)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting talos-agent boot")?;
        children.push((Instant::now(), child));
    }
    let grace = Duration::from_secs(cli.timeout + 10);
    let results: Vec<AgentResult> = std::thread::scope(|s| {
        let handles: Vec<_> = children
            .into_iter()
            .map(|(t, mut child)| {
                s.spawn(move || {
                    let mut out = child.stdout.take().expect("piped");
                    let mut err = child.stderr.take().expect("piped");
                    let reader = std::thread::spawn(move || {
                        let (mut o, mut e) = (String::new(), String::new());
                        let _ = out.read_to_string(&mut o);
                        let _ = err.read_to_string(&mut e);
                        (o, e)
                    });
                    let code = loop {
                        if let Ok(Some(st)) = child.try_wait() {
                            break st.code();
                        }
                        if t.elapsed() > grace {
                            let _ = child.kill();
                            let _ = child.wait();
                            break None; // hung
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    let seconds = t.elapsed().as_secs_f64();
                    let (o, e) = reader.join().unwrap_or_default();
                    let tail = e.lines().rev().take(2).collect::<Vec<_>>().join(" | ");
                    AgentResult { code, seconds, plan: serde_json::from_str(&o).ok(), stderr_tail: tail }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("agent thread")).collect()
    });
    let wall = start.elapsed().as_secs_f64();

    let mut ok = true;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bytes = 0u64;
    let mut times: Vec<f64> = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let code = r.code.map_or("hung".to_string(), |c| c.to_string());
        *codes.entry(code.clone()).or_default() += 1;
        times.push(r.seconds);
        match r.code {
            Some(0) => {
                let Some(plan) = &r.plan else {
                    println!("agent {i}: exit 0 without a JSON plan");
                    ok = false;
                    continue;
                };
                let manifest = plan["resolved"]["manifest_digest"].as_str().unwrap_or_default();
                let wanted = reference.rsplit('@').next().unwrap_or_default();
                if manifest != wanted {
                    println!("agent {i}: planned manifest {manifest}, published {wanted}");
                    ok = false;
                }
                for b in plan["blobs"].as_array().into_iter().flatten() {
                    let d = b["digest"].as_str().unwrap_or_default();
                    if !published.contains_key(d) && d != wanted {
                        println!("agent {i}: blob {d} is not a published layer");
                        ok = false;
                    }
                }
                bytes += plan["bytes_transferred"].as_u64().unwrap_or(0);
            }
            Some(3) | Some(4) if proxy.is_some() => {}
            None => {
                println!(
                    "agent {i}: still running {:.0} s after start (--timeout {} s): killed",
                    r.seconds, cli.timeout
                );
                ok = false;
            }
            Some(c) => {
                println!("agent {i}: undocumented outcome, exit {c}: {}", r.stderr_tail);
                ok = false;
            }
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "wall {wall:.2} s; aggregate {:.1} MB/s ({:.1} MB verified by {} agents); per agent p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        bytes as f64 / 1e6 / wall,
        bytes as f64 / 1e6,
        codes.get("0").copied().unwrap_or(0),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN)
    );
    println!("exit codes: {}", codes.iter().map(|(c, n)| format!("{c}×{n}")).collect::<Vec<_>>().join(" "));
    if let Some(p) = proxy {
        let c = *p.faults.chaos.lock().unwrap();
        println!(
            "chaos injected over {} blob GETs: {} × 503, {} stalls, {} truncations, {} corruptions",
            p.faults.blob_gets.load(Ordering::SeqCst),
            c.unavailable,
            c.stalls,
            c.truncations,
            c.corruptions
        );
        for r in results.iter().filter(|r| r.code == Some(4)).take(2) {
            println!("  a verification failure, as the agent said it: {}", r.stderr_tail);
        }
    }
    println!(
        "check: {}",
        if ok { "every agent planned the published digests or exited 3/4; none hung" } else { "FAILED" }
    );
    Ok(ok)
}

/// A minimal valid report (`agent/src/report/schema.rs`, schema 1) for node `i`.
fn report_body(i: usize, sequence: u64) -> String {
    serde_json::json!({
        "schema": 1, "agent_version": "0.1.0", "node": format!("sim-{i:04}"), "sequence": sequence,
        "machine": {"uuid": null, "serial": null}, "boot_id": null, "uptime_seconds": 1.0,
        "talos_version": "v1.10.5",
        "addresses": [{"interface": "eth0", "address": format!("10.20.{}.{}", 14 + i / 250, 1 + i % 250), "prefix_len": 20}],
        "default_routes": [], "extensions": null, "extensions_error": null, "phase": "maintenance_ready",
        "apid": {"address": "127.0.0.1:50000", "fingerprint": null, "client_cert_requested": false, "error": null},
        "bootstrap": {"ready": false, "reason": "not configured yet"}
    })
    .to_string()
}

/// POSTs `body` with `token`; the HTTP status and the seconds it took.
fn post(addr: SocketAddr, token: &str, body: &str) -> Option<(u16, f64)> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST /v1/report HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    let status = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
    Some((status, t.elapsed().as_secs_f64()))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn wait_round(cli: &Cli, agent: &std::path::Path, work: &std::path::Path) -> Result<bool> {
    println!(
        "\n== talos-agent wait: {} nodes reporting every second + {} wrong-token flood threads, {} s",
        cli.nodes, cli.flood_threads, cli.seconds
    );
    let token = "fleet-good-token";
    let log = work.join("wait-flood.log");
    // Without --json its event lines (new:, refused:, …) go to stdout, the summary to stderr; both
    // into the log, stderr through a copier that reads the port wait got from its first line.
    let file = std::fs::File::create(&log)?;
    let mut wait = Command::new(agent)
        .args(["wait", "--listen", "127.0.0.1:0", "--token", token, "--nodes", &(cli.nodes + 1).to_string()])
        .args(["--until", "maintenance_ready", "--timeout", &format!("{}s", cli.seconds + 2)])
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting talos-agent wait")?;
    let stderr = wait.stderr.take().expect("piped");
    let (addr, stderr_copier, _) = match moonboot_tests::demo::wait_stderr_to_log(stderr, file) {
        Ok(x) => x,
        Err(e) => {
            let _ = wait.kill();
            let _ = wait.wait();
            return Err(e.context(format!("talos-agent wait, log {}", log.display())));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let flood_sent = Arc::new(AtomicU64::new(0));
    let flood_refused = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        // Good reports: 50 threads, each owning nodes/50 nodes, one round per second.
        let workers = 50.min(cli.nodes.max(1));
        for w in 0..workers {
            let (stop, lat, fail) = (stop.clone(), latencies.clone(), failures.clone());
            let mine: Vec<usize> = (0..cli.nodes).filter(|i| i % workers == w).collect();
            s.spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    let round = Instant::now();
                    seq += 1;
                    for &i in &mine {
                        match post(addr, token, &report_body(i, seq)) {
                            Some((204, secs)) => lat.lock().unwrap().push(secs),
                            _ => {
                                fail.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    if let Some(left) = Duration::from_secs(1).checked_sub(round.elapsed()) {
                        std::thread::sleep(left);
                    }
                }
            });
        }
        for _ in 0..cli.flood_threads {
            let (stop, sent, refused) = (stop.clone(), flood_sent.clone(), flood_refused.clone());
            s.spawn(move || {
                let body = report_body(99_999, 1);
                while !stop.load(Ordering::SeqCst) {
                    sent.fetch_add(1, Ordering::SeqCst);
                    if let Some((401, _)) = post(addr, "wrong-token", &body) {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        let (stop2, peak2) = (stop.clone(), peak.clone());
        let pid = wait.id();
        s.spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if let Some(k) = peak_rss_kib(pid) {
                    peak2.fetch_max(k, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_secs(cli.seconds));
        stop.store(true, Ordering::SeqCst);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let status = wait.wait()?;
    let _ = stderr_copier.join();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let refused_lines = text.lines().filter(|l| l.starts_with("refused:")).count();
    let counted = text
        .lines()
        .rev()
        .find_map(|l| l.split("; ").find(|p| p.contains("report(s) refused")).map(|p| p.trim().to_string()))
        .unwrap_or_else(|| "no summary line".to_string());
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    println!(
        "good reports: {} delivered in {elapsed:.1} s ({:.0}/s), {} failed; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        lat.len() as f64 / elapsed,
        failures.load(Ordering::SeqCst),
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(f64::NAN) * 1e3
    );
    println!(
        "flood: {} wrong-token requests ({:.0}/s), {} answered 401; wait counted: {counted}; it printed {refused_lines} `refused:` lines",
        flood_sent.load(Ordering::SeqCst),
        flood_sent.load(Ordering::SeqCst) as f64 / elapsed,
        flood_refused.load(Ordering::SeqCst)
    );
    println!(
        "wait: peak RSS (VmHWM) {:.1} MiB; exit {status} (it waits for one node more than report, so it times out)",
        peak.load(Ordering::SeqCst) as f64 / 1024.0
    );
    let bounded = (refused_lines as f64) <= elapsed + 5.0;
    let all_good = failures.load(Ordering::SeqCst) == 0;
    println!(
        "check: {}",
        match (all_good, bounded) {
            (true, true) => "every good report accepted; refusal lines bounded (≤ about one a second)".to_string(),
            (false, _) => "FAILED: good reports were not accepted".to_string(),
            (_, false) => format!("FAILED: {refused_lines} refusal lines in {elapsed:.0} s"),
        }
    );
    Ok(all_good && bounded)
}
