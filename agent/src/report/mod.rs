//! `talos-agent report`: runs inside Talos as the extension service `ext-talos-agent`, learns the
//! node's readiness phase from apid's TLS handshake ([`phase`]), and POSTs a JSON report
//! ([`schema`]) to `talos-agent wait` on every change and as a heartbeat.
//!
//! Settings, later sources overriding earlier ones:
//! 1. the kernel command line (`/proc/cmdline`): `talos_agent.report=URL`,
//!    `talos_agent.token=TOKEN`, `talos_agent.node=NAME`, `talos_agent.role=controlplane|worker`;
//! 2. the environment (set by an `ExtensionServiceConfig` document's `environment:`):
//!    `TALOS_AGENT_REPORT`, `TALOS_AGENT_TOKEN`, `TALOS_AGENT_NODE`, `TALOS_AGENT_ROLE`;
//! 3. the flags.
//!
//! It never blocks boot and never crash-loops: without a URL it says so once and idles; network
//! and collector errors are logged (once per distinct error) and retried with backoff.
//!
//! On board images the kernel command line also says `talos_agent.mbr=repair`: then every report
//! cycle, from the start, checks the boot disk's hybrid MBR and restores it when Talos rewrote
//! it ([`boot_mbr`]); the outcome is the report's `boot_mbr`. Without that argument the disk is
//! never touched. This runs whether or not there is a collector to report to.
//!
//! Exit codes: `report` runs until killed; with `--once` it exits 0 when one report was
//! delivered and 1 when it was not (one line on stderr, [`Error`]); 2 invalid usage.

pub mod boot_mbr;
pub mod client;
pub mod facts;
pub mod phase;
pub mod schema;
#[cfg(test)]
pub mod test_disk;

use boot_artifact::artifact::kernel_args;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Backoff, Collector};
use phase::Phase;
use schema::{Apid, Bootstrap, Report};

/// Exit code of `report --once` when no report was delivered (or none could be sent).
pub const EXIT_FAILED: u8 = 1;

/// Why `talos-agent report` ended. Without `--once` only [`Error::Runtime`] ends it: the others
/// are logged and the agent idles or retries (an extension service that exits would be restarted
/// in a loop).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The async runtime could not be started.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No collector URL from the kernel command line, the environment or the flags.
    #[error("no collector URL (talos_agent.report= on the kernel command line, TALOS_AGENT_REPORT, or --url)")]
    NoUrl,
    /// `--ca-file` could not be read.
    #[error("reading {}: {source}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// The collector refused the token (401).
    #[error(transparent)]
    Unauthorized(client::SendError),
    /// `--once` gave up: no report was delivered within 30 s (the last failure is the cause).
    #[error("no report delivered within 30 s")]
    NotDelivered(#[source] client::SendError),
}

impl Error {
    /// The exit code `report` documents: [`EXIT_FAILED`] for each (2, bad usage, is clap's).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Runtime(_)
            | Error::NoUrl
            | Error::CaFile { .. }
            | Error::Client(_)
            | Error::Unauthorized(_)
            | Error::NotDelivered(_) => EXIT_FAILED,
        }
    }
}

/// A node's role, as `talos_agent.role=`, `TALOS_AGENT_ROLE` and `--role` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A control-plane node: `talosctl bootstrap` runs on one of them.
    #[value(name = "controlplane")]
    ControlPlane,
    /// A worker node.
    Worker,
}

impl Role {
    /// `controlplane` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

/// Arguments of `talos-agent report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Collector URL (`http://HOST:PORT/v1/report` of `talos-agent wait`); default: the
    /// `talos_agent.report=` kernel argument or `TALOS_AGENT_REPORT`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token; default: `talos_agent.token=` or `TALOS_AGENT_TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Node name; default: `talos_agent.node=`, `TALOS_AGENT_NODE`, else the DMI UUID, the first
    /// address, or the boot ID.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The node's role, needed to tell bootstrap readiness; default: `talos_agent.role=` or
    /// `TALOS_AGENT_ROLE`.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<Role>,
    /// apid address to probe.
    #[arg(long, value_name = "ADDR", default_value = phase::DEFAULT_APID)]
    pub apid: SocketAddr,
    /// PEM bundle of CAs for an `https://` collector (replaces the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Seconds between probes of apid.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub interval: u64,
    /// Seconds between reports when nothing changed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub heartbeat: u64,
    /// Deliver one report (retrying for up to 30 s) and exit.
    #[arg(long)]
    pub once: bool,
    /// The boot disk whose hybrid MBR `talos_agent.mbr=repair` checks and repairs; default: found
    /// as `talos-agent mbr` finds it (the first whole disk under /sys/block with moonboot's
    /// Raspberry Pi layout). Without `talos_agent.mbr=repair` on the kernel command line no disk
    /// is touched, whatever this says.
    #[arg(long, value_name = "PATH")]
    pub boot_disk: Option<PathBuf>,
    /// Where the kernel command line is read from.
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline", hide = true)]
    pub cmdline: PathBuf,
    /// Prefix of every file read (`/proc`, `/sys`, `/etc`, `/var`), for tests.
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
}

/// The resolved settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Collector URL.
    pub url: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// Node name.
    pub node: Option<String>,
    /// Role: `Err` holds a value from the kernel command line or the environment that is neither
    /// `controlplane` nor `worker` (reported in the bootstrap reason, never guessed).
    pub role: Option<Result<Role, String>>,
}

impl Settings {
    /// Merges the three sources: command line < environment < flags. Empty values count as
    /// unset. `env` looks up one variable.
    pub fn resolve(cmdline: &str, env: impl Fn(&str) -> Option<String>, args: &Args) -> Settings {
        let line = kernel_cmdline::Cmdline::parse(cmdline.trim()).ok();
        let from_cmdline = |key: &str| -> Option<String> {
            // The last occurrence wins, as the kernel's own __setup handling does.
            line.as_ref()?.values(key).filter_map(|v| v.map(str::to_string)).last()
        };
        let pick = |key: &str, var: &str, flag: &Option<String>| {
            flag.clone()
                .filter(|v| !v.is_empty())
                .or_else(|| env(var).filter(|v| !v.is_empty()))
                .or_else(|| from_cmdline(key).filter(|v| !v.is_empty()))
        };
        let role = match args.role {
            Some(r) => Some(Ok(r)),
            None => pick(kernel_args::ROLE, "TALOS_AGENT_ROLE", &None)
                .map(|v| <Role as clap::ValueEnum>::from_str(&v, false).map_err(|_| v)),
        };
        Settings {
            url: pick(kernel_args::REPORT, "TALOS_AGENT_REPORT", &args.url),
            token: pick(kernel_args::TOKEN, "TALOS_AGENT_TOKEN", &args.token),
            node: pick(kernel_args::NODE, "TALOS_AGENT_NODE", &args.node),
            role,
        }
    }
}

/// Runs `talos-agent report`: with `--once` until one report is delivered, else forever.
///
/// # Errors
/// [`Error`]; without `--once` only [`Error::Runtime`].
pub fn run(args: Args) -> Result<(), Error> {
    tracing::info!("talos-agent report v{} starting", env!("CARGO_PKG_VERSION"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), Error> {
    let cmdline = std::fs::read_to_string(&args.cmdline).unwrap_or_else(|e| {
        tracing::info!("cannot read {}: {e}; using the environment and flags only", args.cmdline.display());
        String::new()
    });
    let settings = Settings::resolve(&cmdline, |k| std::env::var(k).ok(), &args);
    let disk = match &args.boot_disk {
        Some(p) => boot_mbr::Disk::Given(p.clone()),
        None => boot_mbr::Disk::Find(args.root.join("sys/block")),
    };
    let watch = Arc::new(Mutex::new(boot_mbr::Watch::new(boot_mbr::Request::from_cmdline(&cmdline), disk)));
    let collector = match connect(&args, &settings) {
        Ok(c) => c,
        Err(e) if args.once => return Err(e),
        Err(e) => match idle(&e, &watch, Duration::from_secs(args.interval.max(1))).await {},
    };
    tracing::info!("reporting to {} (apid probe {}, heartbeat {} s)", collector.url(), args.apid, args.heartbeat);
    let interval = Duration::from_secs(args.interval.max(1));
    let heartbeat = Duration::from_secs(args.heartbeat.max(1));
    let once_deadline = Instant::now() + Duration::from_secs(30);
    let mut sequence = 0u64;
    let mut last_sent: Option<(String, Instant)> = None;
    let mut next_attempt = Instant::now();
    let mut backoff = Backoff::default();
    let mut last_error = String::new();
    let mut last_phase: Option<Phase> = None;
    let mut last_mbr: Option<(Instant, schema::BootMbr)> = None;
    loop {
        // At most once per interval, also while the loop spins faster to retry a delivery.
        let boot_mbr = match &last_mbr {
            Some((at, m)) if at.elapsed() < interval => m.clone(),
            _ => {
                let m = check_boot_mbr(&watch).await;
                last_mbr = Some((Instant::now(), m.clone()));
                m
            }
        };
        let report = gather(&args, &settings, sequence + 1, boot_mbr).await;
        if last_phase != Some(report.phase) {
            let fp = report.apid.fingerprint.as_deref().unwrap_or("-");
            let why = report.apid.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            tracing::info!("phase {} fingerprint {fp}{why}", report.phase);
            last_phase = Some(report.phase);
        }
        let key = report.content_key();
        let due = match &last_sent {
            None => true,
            Some((k, at)) => *k != key || at.elapsed() >= heartbeat,
        };
        if due && Instant::now() >= next_attempt {
            match collector.send(&report).await {
                Ok(()) => {
                    sequence = report.sequence;
                    if backoff.failures() > 0 || last_sent.is_none() {
                        tracing::info!("report delivered to {} (phase {})", collector.url(), report.phase);
                    }
                    backoff.reset();
                    last_error.clear();
                    last_sent = Some((key, Instant::now()));
                    if args.once {
                        return Ok(());
                    }
                }
                Err(e) => {
                    sequence = report.sequence;
                    if args.once && matches!(e, client::SendError::Unauthorized { .. }) {
                        return Err(Error::Unauthorized(e));
                    }
                    let wait = backoff.fail();
                    if args.once && Instant::now() + wait > once_deadline {
                        return Err(Error::NotDelivered(e));
                    }
                    let msg = crate::error_chain::chain(&e);
                    if msg != last_error {
                        tracing::warn!("{msg} (retrying; next in {} s)", wait.as_secs());
                        last_error = msg;
                    }
                    next_attempt = Instant::now() + wait;
                }
            }
        }
        let sleep = if last_sent.is_none() || !last_error.is_empty() {
            next_attempt.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(200), interval)
        } else {
            interval
        };
        tokio::time::sleep(sleep).await;
    }
}

/// The collector client from the settings: its URL, the token (a report without one is sent
/// anyway, and refused by `wait`), and `--ca-file`.
fn connect(args: &Args, settings: &Settings) -> Result<Collector, Error> {
    let url = settings.url.as_deref().ok_or(Error::NoUrl)?;
    let token = settings.token.clone().unwrap_or_else(|| {
        tracing::warn!("no token (talos_agent.token=, TALOS_AGENT_TOKEN or --token): sending reports without one");
        String::new()
    });
    let ca = match &args.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|source| Error::CaFile { path: p.clone(), source })?),
        None => None,
    };
    Ok(Collector::new(url, &token, ca.as_deref(), Duration::from_secs(10))?)
}

/// Says why there is nothing to report, then idles forever (an extension service that exits
/// would be restarted in a loop), still checking the boot disk's MBR every `interval` when the
/// kernel command line asks for it: the board must stay bootable with or without a collector.
async fn idle(why: &Error, watch: &Arc<Mutex<boot_mbr::Watch>>, interval: Duration) -> Infallible {
    match why {
        Error::NoUrl => tracing::warn!("{why}: idling"),
        _ => {
            tracing::error!("{}", crate::error_chain::chain(why));
            tracing::info!("idling (an extension service that exits would be restarted in a loop)");
        }
    }
    loop {
        check_boot_mbr(watch).await;
        tokio::time::sleep(interval).await;
    }
}

/// One [`boot_mbr::Watch::check`], off the async thread (it waits for the disk's lock).
async fn check_boot_mbr(watch: &Arc<Mutex<boot_mbr::Watch>>) -> schema::BootMbr {
    let w = Arc::clone(watch);
    tokio::task::spawn_blocking(move || w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).check())
        .await
        .unwrap_or_else(|e| schema::BootMbr {
            state: schema::BootMbrState::Error,
            disk: None,
            detail: Some(format!("the check failed: {e}")),
            repairs: 0,
        })
}

/// Probes apid and reads the facts; one report.
async fn gather(args: &Args, settings: &Settings, sequence: u64, boot_mbr: schema::BootMbr) -> Report {
    let addr = args.apid;
    let probe = tokio::task::spawn_blocking(move || phase::probe(addr, Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| Err(phase::ProbeError::Io { addr, source: std::io::Error::other(e.to_string()) }));
    let root = args.root.as_path();
    let machine = facts::machine(root);
    let boot_id = facts::boot_id(root);
    let addresses = facts::addresses();
    let (extensions, extensions_error) = match facts::extensions(root) {
        None => (None, None),
        Some(Ok(e)) => (Some(e), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let (mut phase, apid) = match &probe {
        Ok(p) => (
            p.phase(),
            Apid {
                address: addr.to_string(),
                fingerprint: Some(p.fingerprint.clone()),
                client_cert_requested: Some(p.client_cert_requested),
                error: None,
            },
        ),
        Err(e) => (
            Phase::Unreachable,
            Apid {
                address: addr.to_string(),
                fingerprint: None,
                client_cert_requested: None,
                error: Some(crate::error_chain::chain(e)),
            },
        ),
    };
    let role = settings.role.as_ref().map(|r| r.as_ref().copied().map_err(String::as_str));
    // The ports are probed on apid's host, and only once Talos is configured.
    let probe_port = |port: u16| {
        if phase >= Phase::Configured {
            facts::listening(SocketAddr::new(addr.ip(), port), PORT_PROBE_TIMEOUT)
        } else {
            None
        }
    };
    let signals = Signals {
        etcd_data_empty: facts::etcd_data_empty(root),
        etcd_listening: probe_port(ETCD_CLIENT_PORT),
        trustd_listening: probe_port(TRUSTD_PORT),
    };
    let bootstrap = bootstrap_readiness(phase, role, signals);
    if bootstrap.ready == Some(true) {
        phase = Phase::BootstrapReady;
    }
    let node = settings
        .node
        .clone()
        .or_else(|| machine.uuid.clone())
        .or_else(|| {
            let mut a = addresses.iter().map(|a| a.address).collect::<Vec<_>>();
            a.sort_by_key(|a| (a.is_ipv6(), *a));
            a.first().map(|a| a.to_string())
        })
        .or_else(|| boot_id.clone())
        .unwrap_or_else(|| "unknown".to_string());
    Report {
        schema: schema::SCHEMA,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        node,
        sequence,
        machine,
        boot_id,
        uptime_seconds: facts::uptime_seconds(root),
        talos_version: facts::talos_version(root),
        addresses,
        default_routes: facts::default_routes(root),
        extensions,
        extensions_error,
        phase,
        apid,
        bootstrap,
        boot_mbr: Some(boot_mbr),
        role: settings.role.as_ref().map(|r| match r {
            Ok(r) => r.as_str().to_string(),
            Err(other) => other.clone(),
        }),
    }
}

/// etcd's client port (Talos `constants.EtcdClientPort`).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// trustd's port (Talos `constants.TrustdPort`).
pub const TRUSTD_PORT: u16 = 50001;
/// How long a port probe waits for an answer on the node itself.
pub const PORT_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// What the agent can see, without credentials, that tells whether `talosctl bootstrap` may run
/// on this node (each `None` when it cannot tell).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Whether `/var/lib/etcd` is empty, when it is visible ([`facts::etcd_data_empty`]).
    pub etcd_data_empty: Option<bool>,
    /// Whether anything listens on etcd's client port of this node.
    pub etcd_listening: Option<bool>,
    /// Whether anything listens on trustd's port of this node.
    pub trustd_listening: Option<bool>,
}

/// Bootstrap readiness from what is known: the phase, the declared role (`Err`: a value that is
/// no role) and [`Signals`]. Never guesses: what it cannot tell gives `ready: None` and the reason.
///
/// The rule rests on Talos v1.10 (tag v1.10.5):
/// - **etcd listens only once bootstrapped or joined.** A control-plane node loads the etcd
///   service at boot (`internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer_tasks.go`,
///   `StartAllServices`), but with an empty data directory and no bootstrap request its `PreFunc`
///   (`internal/app/machined/pkg/system/services/etcd.go`, `argsForControlPlane` →
///   `buildInitialCluster`) keeps waiting ("etcd is waiting to join the cluster"); the etcd
///   process, and so its listener, is created only after `PreFunc` returns
///   (`internal/app/machined/pkg/system/service_runner.go`). Its client URLs always cover
///   loopback (`internal/app/machined/pkg/controllers/etcd/spec.go`). So: something on
///   `:2379` ⇒ bootstrapped (or joined): never bootstrap again; nothing there on a configured
///   control plane ⇒ not bootstrapped yet. A TCP connect needs no etcd client certificate.
/// - **trustd runs only on control-plane nodes** (`StartAllServices` adds it for the
///   control-plane machine type), so trustd on `:50001` gives the role when none was declared.
/// - Extension services share the host's network namespace
///   (`internal/app/machined/pkg/system/services/extension.go`), so these probes reach the node's
///   own ports from the `ext-talos-agent` service with no mount and no credential.
///
/// A second control-plane node looks the same as the first until it joins: run `talosctl
/// bootstrap` on exactly one of the nodes that report ready (`talos-agent wait --until
/// bootstrap_ready` exits at the first).
pub fn bootstrap_readiness(phase: Phase, role: Option<Result<Role, &str>>, s: Signals) -> Bootstrap {
    let no = |reason: &str| Bootstrap { ready: Some(false), reason: reason.to_string() };
    let unknown = |reason: &str| Bootstrap { ready: None, reason: reason.to_string() };
    if phase < Phase::Configured {
        return no("not configured yet (apid does not request a client certificate)");
    }
    let role = match (role, s.trustd_listening) {
        (Some(Ok(r)), _) => r,
        (Some(Err(other)), _) => return unknown(&format!("unknown role {other:?} (controlplane or worker)")),
        (None, Some(true)) => Role::ControlPlane,
        (None, _) => {
            return unknown("role not given (talos_agent.role=controlplane|worker) and trustd (:50001) not listening")
        }
    };
    if role == Role::Worker {
        return no("a worker node: bootstrap runs on a control-plane node");
    }
    if s.etcd_listening == Some(true) {
        return no("etcd listens on :2379: this node is bootstrapped or has joined");
    }
    if s.etcd_data_empty == Some(false) {
        return no("etcd data directory /var/lib/etcd is not empty (already bootstrapped?)");
    }
    match (s.etcd_listening, s.etcd_data_empty) {
        (Some(false), _) => Bootstrap {
            ready: Some(true),
            reason: "configured control plane; nothing listens on etcd's :2379 (Talos starts etcd only after bootstrap or join)"
                .into(),
        },
        (None, Some(true)) => Bootstrap { ready: Some(true), reason: "control plane, configured, etcd data empty".into() },
        _ => unknown("cannot tell whether etcd runs: :2379 did not answer and /var/lib/etcd is not visible"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        Cli::parse_from(std::iter::once("report").chain(extra.iter().copied())).args
    }

    #[test]
    fn settings_precedence() {
        let cmdline = "console=ttyS0 talos_agent.report=http://10.0.2.2:8090/v1/report talos_agent.token=abc talos_agent.node=cp-1\n";
        let none = |_: &str| None;
        let s = Settings::resolve(cmdline, none, &args(&[]));
        assert_eq!(s.url.as_deref(), Some("http://10.0.2.2:8090/v1/report"));
        assert_eq!(s.token.as_deref(), Some("abc"));
        assert_eq!(s.node.as_deref(), Some("cp-1"));
        assert_eq!(s.role, None);
        let env = |k: &str| match k {
            "TALOS_AGENT_TOKEN" => Some("from-env".to_string()),
            "TALOS_AGENT_ROLE" => Some("controlplane".to_string()),
            "TALOS_AGENT_NODE" => Some(String::new()),
            _ => None,
        };
        let s = Settings::resolve(cmdline, env, &args(&["--url", "https://collector/v1/report"]));
        assert_eq!(s.url.as_deref(), Some("https://collector/v1/report"));
        assert_eq!(s.token.as_deref(), Some("from-env"));
        assert_eq!(s.node.as_deref(), Some("cp-1"), "an empty variable counts as unset");
        assert_eq!(s.role, Some(Ok(Role::ControlPlane)));
        assert_eq!(Settings::resolve("quiet", none, &args(&[])), Settings::default());
        // The flag is typed (clap refuses other values); the other sources keep what they said.
        let s = Settings::resolve("talos_agent.role=control-plane", none, &args(&[]));
        assert_eq!(s.role, Some(Err("control-plane".to_string())));
        let s = Settings::resolve("talos_agent.role=control-plane", none, &args(&["--role", "worker"]));
        assert_eq!(s.role, Some(Ok(Role::Worker)));
        let s = Settings::resolve("talos_agent.role=worker", none, &args(&[]));
        assert_eq!(s.role, Some(Ok(Role::Worker)));
        assert!(Cli::try_parse_from(["report", "--role", "master"]).is_err());
    }

    #[test]
    fn bootstrap_never_guesses() {
        use Phase::*;
        let cp = Some(Ok(Role::ControlPlane));
        let sig =
            |empty, etcd, trustd| Signals { etcd_data_empty: empty, etcd_listening: etcd, trustd_listening: trustd };
        assert_eq!(bootstrap_readiness(MaintenanceReady, cp, sig(Some(true), Some(false), None)).ready, Some(false));
        assert_eq!(bootstrap_readiness(Configured, None, sig(Some(true), Some(false), None)).ready, None);
        assert_eq!(bootstrap_readiness(Configured, cp, sig(None, None, None)).ready, None);
        assert_eq!(
            bootstrap_readiness(Configured, Some(Ok(Role::Worker)), sig(Some(true), Some(false), None)).ready,
            Some(false)
        );
        assert_eq!(bootstrap_readiness(Configured, cp, sig(Some(false), None, None)).ready, Some(false));
        assert_eq!(bootstrap_readiness(Configured, cp, sig(Some(true), None, None)).ready, Some(true));
        let odd = bootstrap_readiness(Configured, Some(Err("master")), sig(Some(true), Some(false), Some(true)));
        assert_eq!(odd.ready, None);
        assert!(odd.reason.contains("master"), "{}", odd.reason);
        // The port signals (what real Talos lets an extension service see): etcd closed on a
        // configured control plane → ready; etcd open → never again, whatever the data directory.
        let ready = bootstrap_readiness(Configured, cp, sig(None, Some(false), None));
        assert_eq!(ready.ready, Some(true));
        assert!(ready.reason.contains(":2379"), "{}", ready.reason);
        let done = bootstrap_readiness(Configured, cp, sig(Some(true), Some(true), None));
        assert_eq!(done.ready, Some(false));
        assert!(done.reason.contains("bootstrapped or has joined"), "{}", done.reason);
        // trustd gives the role when none was declared; a declared role wins.
        assert_eq!(bootstrap_readiness(Configured, None, sig(None, Some(false), Some(true))).ready, Some(true));
        assert_eq!(bootstrap_readiness(Configured, None, sig(None, Some(false), Some(false))).ready, None);
        let w = Some(Ok(Role::Worker));
        assert_eq!(bootstrap_readiness(Configured, w, sig(None, Some(false), Some(true))).ready, Some(false));
    }
}
