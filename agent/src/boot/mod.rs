//! `talos-agent boot`: fetch a Talos kernel + initramfs by digest, verify every byte, carry the
//! network over, and kexec into Talos.
//!
//! The steps, each a function here: [`resolve`] (what to boot, from the flags) → [`fetch`]
//! (resolve the reference, download and verify, within `--timeout`; [`survey`] reads the platform
//! and the running network alongside) → [`assemble`] (the next kernel's command line, its length
//! checked: [`cmdline`]) → [`preflight`] (can this machine kexec now?) → [`load`] (kexec). All
//! blobs download in parallel, each streaming through sha256 and its extractor into memfds
//! ([`fetch`](mod@fetch)). Nothing is loaded until every blob has been verified and pre-flight has
//! passed; on any failure nothing is loaded and the running system is left as it was.
//!
//! Logs go through `tracing` as single lines on stderr (`talos-agent boot: [  1.234s] …`), as
//! cloud-init's output log keeps them. A failure is an [`Error`] with its exit code, printed once
//! by `main`; `--json` prints the result (or the error) as one JSON object on stdout.

pub mod cmdline;
pub mod fetch;
pub mod kexec;
pub mod network;
pub mod platform;
pub mod preflight;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::{Mirror, Reference, ReferenceError};
use kernel_cmdline::preset::{Arch, Platform, TalosVersion, VersionError};
use serde::Serialize;

/// Exit codes of `talos-agent boot` (also in `--help`).
pub mod exit {
    /// Success: loaded and executing (never returns), loaded (`--no-exec`) or planned (`--dry-run`).
    #[allow(dead_code)] // Documentation: success is `ExitCode::SUCCESS`, from `main`.
    pub const OK: u8 = 0;
    /// An unexpected local failure (memfd, runtime).
    pub const INTERNAL: u8 = 1;
    /// Bad usage (clap's code).
    pub const USAGE: u8 = 2;
    /// The source could not be reached: registry or URL unavailable, auth refused, `--timeout` passed.
    pub const UNAVAILABLE: u8 = 3;
    /// Verification failed: a digest or size did not match, or the `--signature-key` signature.
    pub const VERIFY: u8 = 4;
    /// The content cannot be booted: wrong architecture, malformed manifest, unknown kernel format,
    /// decompression bound, hostile layer, command line over 2048 bytes.
    pub const CONTENT: u8 = 5;
    /// This machine cannot kexec: not root, lockdown, `kexec_load_disabled`, too little memory.
    pub const PREFLIGHT: u8 = 6;
    /// The kexec system call (load or reboot) failed.
    pub const KEXEC: u8 = 7;
}

const AFTER_HELP: &str = "\
Exit codes: 0 done (loaded and rebooting; with --no-exec loaded; with --dry-run planned),
1 internal error, 2 bad usage, 3 source unreachable (registry/URL, auth, --timeout),
4 verification failed (digest, size or --signature-key), 5 content cannot be booted (architecture, format,
malformed manifest, hostile layer, command line over 2048 bytes), 6 pre-flight refused
(not root, lockdown, kexec_load_disabled, memory), 7 kexec system call failed.
On any failure nothing is loaded and the running system is untouched.

Examples:
  talos-agent boot 10.20.13.140:5000/moonboot/boot@sha256:… --insecure-registry 10.20.13.140:5000
  talos-agent boot ghcr.io/siderolabs/imager:v1.10.5 --registry-mirror ghcr.io=10.20.13.140:5000 \\
      --insecure-registry 10.20.13.140:5000 --report http://10.20.13.140:8090 --report-token T
  talos-agent boot --kernel https://…/vmlinuz --kernel-sha256 … --initrd https://…/initramfs.xz \\
      --initrd-sha256 … --talos-version v1.10.5 --dry-run --json";

/// Arguments of `talos-agent boot`.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// What to boot: a moonboot boot artifact or a stock Talos imager/installer image, as
    /// REGISTRY/REPO[:TAG][@sha256:DIGEST]. Omit it with --kernel/--initrd.
    #[arg(value_name = "SOURCE", required_unless_present = "kernel")]
    pub source: Option<String>,
    /// Kernel URL (http/https) instead of SOURCE; needs --kernel-sha256, --initrd, --initrd-sha256.
    #[arg(long, value_name = "URL", conflicts_with = "source", requires_all = ["kernel_sha256", "initrd", "initrd_sha256"])]
    pub kernel: Option<String>,
    /// sha256 of the kernel at --kernel (64 hex digits, `sha256:` prefix optional).
    #[arg(long, value_name = "HEX")]
    pub kernel_sha256: Option<String>,
    /// Initramfs URL, with --kernel.
    #[arg(long, value_name = "URL", requires = "kernel")]
    pub initrd: Option<String>,
    /// sha256 of the initramfs at --initrd.
    #[arg(long, value_name = "HEX")]
    pub initrd_sha256: Option<String>,
    /// Registry mirror ORIGIN=HOST[:PORT] (e.g. ghcr.io=10.20.13.140:5000); repeatable, tried in
    /// order before the origin.
    #[arg(long = "registry-mirror", value_name = "ORIGIN=HOST[:PORT]")]
    pub registry_mirrors: Vec<String>,
    /// Registry reached over plain HTTP (HOST[:PORT]); repeatable. Every other registry uses TLS.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Registry credentials file (Docker config.json format). Default: $REGISTRY_AUTH_FILE, else
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json; anonymous when absent.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Refuse SOURCE unless its cosign signature verifies with this public key (PEM `PUBLIC KEY`,
    /// ECDSA P-256, as `cosign.pub`), checked before any layer is fetched: the legacy
    /// `sha256-<hex>.sig` signature that `imager publish --sign-key` and `cosign sign --key`
    /// write, signing exactly the digest SOURCE pins (or its tag resolves to).
    #[arg(long, value_name = "FILE", conflicts_with = "kernel")]
    pub signature_key: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for registries; repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Architecture to boot. Default: the running one; kexec cannot cross (another one only with
    /// --dry-run).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,
    /// Talos platform of the next system. Default: aws on EC2 (DMI, then IMDSv2), metal
    /// elsewhere.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<Platform>,
    /// Talos version of a stock image whose tag is not a version (e.g. v1.10.5); picks Talos's
    /// default kernel arguments.
    #[arg(long, value_name = "VERSION")]
    pub talos_version: Option<String>,
    /// Machine config URL for Talos (`talos.config=URL`).
    #[arg(long, value_name = "URL")]
    pub talos_config: Option<String>,
    /// Readiness collector for the Talos-side agent (`talos_agent.report=URL`), e.g. the URL of
    /// `talos-agent wait`.
    #[arg(long, value_name = "URL")]
    pub report: Option<String>,
    /// Shared token for readiness reports (`talos_agent.token=`).
    #[arg(long, value_name = "TOKEN", requires = "report")]
    pub report_token: Option<String>,
    /// Node name in readiness reports (`talos_agent.node=`). Default: this machine's host name.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Extra kernel argument, merged last as Talos does: `-key` removes a key, `-key=value` one
    /// value, `console=`/`talos.platform=` replace. Repeatable.
    #[arg(long = "extra-kernel-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub extra_kernel_args: Vec<String>,
    /// Do not carry the running network over as `ip=` arguments (Talos then uses DHCP).
    #[arg(long)]
    pub no_network_carry_over: bool,
    /// The running system's command line, whose `console=` values are carried over (tests).
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline", hide = true)]
    pub proc_cmdline: PathBuf,
    /// Give up after this long (e.g. 90s, 10m); covers resolving and every download.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::wait::parse_duration)]
    pub timeout: Duration,
    /// Retries per registry endpoint (or URL) for transient failures.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub retries: u32,
    /// Load the kernel but do not reboot into it.
    #[arg(long, conflicts_with = "dry_run")]
    pub no_exec: bool,
    /// Do all the work (download, verify, unpack, command line, pre-flight) but make no kexec
    /// system call; print the plan as JSON on stdout.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result (or the error) as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Logs one progress line through `tracing` (`talos-agent boot: [  1.234s] msg` on stderr, see
/// `crate::logging`).
pub(crate) fn log(msg: &str) {
    tracing::info!("{msg}");
}

/// Why `talos-agent boot` failed. [`Error::exit_code`] maps each to its documented exit code
/// ([`exit`]); after every one of them nothing is left loaded and the running system is untouched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The async runtime could not be started.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// This machine is neither arm64 nor amd64 and `--arch` was not given.
    #[error("this machine is {0}, neither arm64 nor amd64: pass --arch (with --dry-run)")]
    UnknownArch(&'static str),
    /// `--arch` names another architecture than the running one without `--dry-run`: kexec
    /// cannot cross architectures.
    #[error("cannot kexec an {wanted} kernel on {running} (only --dry-run may fetch another architecture)")]
    CrossArch {
        /// The `--arch` value.
        wanted: Arch,
        /// The running architecture.
        running: &'static str,
    },
    /// SOURCE is not an image reference.
    #[error("SOURCE: {0}")]
    Source(#[source] ReferenceError),
    /// A `--registry-mirror` is not `ORIGIN=HOST[:PORT]`.
    #[error("--registry-mirror: {0}")]
    Mirror(#[source] ReferenceError),
    /// `--kernel-sha256` or `--initrd-sha256` is not 64 hex digits.
    #[error("{flag} {value:?} is not 64 hex digits")]
    Sha256 {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// Neither SOURCE nor `--kernel` was given.
    #[error("give SOURCE or --kernel/--initrd")]
    NoSource,
    /// `--signature-key` cannot be read or is not a P-256 public key.
    #[error("--signature-key {}: {reason}", path.display())]
    SignatureKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--talos-version` is not a version.
    #[error("--talos-version: {0}")]
    TalosVersion(#[source] VersionError),
    /// A stock image whose tag is not a Talos version, without `--talos-version`: Talos's default
    /// kernel arguments cannot be picked.
    #[error("cannot tell the Talos version of this image (its tag is not a version): pass --talos-version")]
    NoTalosVersion,
    /// The registry client could not be set up (credentials file, CA file, TLS roots).
    #[error(transparent)]
    Registry(moonboot_registry::Error),
    /// Resolving, downloading, verifying or unpacking failed; the exit code is
    /// [`fetch::Error::exit_code`]'s.
    #[error(transparent)]
    Fetch(#[from] fetch::Error),
    /// `--timeout` passed before every blob was fetched and verified.
    #[error("--timeout {0:?} passed before every blob was fetched and verified")]
    Timeout(Duration),
    /// The next kernel's command line cannot be built (an unparsable base, no Talos preset for
    /// the version, a value that cannot be a kernel parameter, over 2048 bytes).
    #[error(transparent)]
    Cmdline(#[from] cmdline::Error),
    /// The command line does not fit the buffer `kexec_file_load` takes.
    #[error("kernel command line: {0}")]
    CmdlineBuffer(#[source] kernel_cmdline::Error),
    /// A pre-flight check refused: this machine cannot kexec now.
    #[error("pre-flight: {0}")]
    Preflight(#[source] preflight::PreflightError),
    /// Loading the next kernel failed.
    #[error(transparent)]
    Load(#[from] kexec::KexecError),
    /// The kexec reboot returned (the loaded kernel has been unloaded again).
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC): {0}")]
    Reboot(#[source] std::io::Error),
}

impl Error {
    /// The exit code `talos-agent boot` documents for this error (see [`exit`] and `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Runtime(_) => exit::INTERNAL,
            Error::UnknownArch(_)
            | Error::CrossArch { .. }
            | Error::Source(_)
            | Error::Mirror(_)
            | Error::Sha256 { .. }
            | Error::NoSource
            | Error::SignatureKey { .. }
            | Error::TalosVersion(_)
            | Error::NoTalosVersion => exit::USAGE,
            Error::Registry(_) | Error::Timeout(_) => exit::UNAVAILABLE,
            Error::Fetch(e) => e.exit_code(),
            Error::Cmdline(_) | Error::CmdlineBuffer(_) => exit::CONTENT,
            Error::Preflight(_) => exit::PREFLIGHT,
            Error::Load(_) | Error::Reboot(_) => exit::KEXEC,
        }
    }
}

/// The plan / result printed with `--dry-run` or `--json`.
#[derive(Serialize)]
struct Plan {
    /// `planned` (dry run), `loaded` (--no-exec), `executing`.
    status: &'static str,
    arch: &'static str,
    source: fetch::Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved: Option<fetch::ResolvedReport>,
    kernel: FileReport,
    initramfs: FileReport,
    cmdline: cmdline::Assembled,
    platform: platform::Detected,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<network::NetworkState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_error: Option<String>,
    /// `{"Ok": {…}}` or `{"Err": "why"}`.
    #[serde(serialize_with = "preflight_result")]
    preflight: Result<preflight::Preflight, preflight::PreflightError>,
    /// The syscall used (`--no-exec`) or expected (`--dry-run`).
    syscall: String,
    blobs: Vec<fetch::BlobReport>,
    bytes_transferred: u64,
    /// The SHA-256 code every byte was verified with: `aarch64-sha2` (ARMv8 SHA-2 instructions),
    /// `x86-sha` (SHA-NI) or `soft` ([`boot_artifact::digest::sha256_implementation`]).
    sha256_implementation: &'static str,
    seconds: Timings,
}

fn preflight_result<S: serde::Serializer>(
    r: &Result<preflight::Preflight, preflight::PreflightError>,
    s: S,
) -> Result<S::Ok, S::Error> {
    r.as_ref().map_err(|e| e.to_string()).serialize(s)
}

#[derive(Serialize)]
struct FileReport {
    sha256: String,
    size: u64,
    /// How it arrived (kernel only).
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<String>,
}

#[derive(Serialize)]
struct Timings {
    fetch: f64,
    total: f64,
}

/// Runs `talos-agent boot`. With `--json` (or `--dry-run`) the result, or the error, is printed as
/// one JSON object on stdout; the caller prints the error's line on stderr.
///
/// # Errors
/// [`Error`], with its exit code. A `--dry-run` whose pre-flight checks refused prints its plan
/// and still ends with [`Error::Preflight`].
pub fn run(args: Args) -> Result<(), Error> {
    let json = args.json || args.dry_run;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
        .and_then(|runtime| runtime.block_on(boot(&args)));
    let plan = match result {
        Ok(plan) => plan,
        Err(e) => {
            if json {
                let message = crate::error_chain::chain(&e);
                println!("{}", serde_json::json!({"status": "failed", "error": message, "exit_code": e.exit_code()}));
            }
            return Err(e);
        }
    };
    if json {
        println!("{}", serde_json::to_string(&plan).expect("plan serialises"));
    }
    // Only a dry run gets here with a refused pre-flight: it plans anyway, and says so.
    plan.preflight.map(drop).map_err(Error::Preflight)
}

/// What to boot, from the flags alone.
struct Target {
    /// The architecture of the next kernel.
    arch: Arch,
    /// The image or the URLs.
    source: fetch::Source,
    /// `--registry-mirror`s, in order.
    mirrors: Vec<Mirror>,
    /// `--talos-version`, else the tag of the reference when it is a version.
    version: Option<TalosVersion>,
    /// `--signature-key`.
    signature_key: Option<boot_artifact::cosign::PublicKey>,
}

/// What was read from this machine while the downloads ran.
struct Local {
    /// The platform of the next system.
    platform: platform::Detected,
    /// The running network (`None` with `--no-network-carry-over`).
    network: Option<Result<network::NetworkState, network::Error>>,
}

/// The whole of `boot`: [`resolve`] → [`fetch`] (with [`survey`] alongside) → [`assemble`] →
/// [`preflight`] → [`load`]. Returns the plan for `--dry-run` and `--no-exec`; otherwise does not
/// return unless the kexec reboot fails.
async fn boot(args: &Args) -> Result<Plan, Error> {
    let target = resolve(args)?;
    // Everything local is read while the network work runs.
    let (local, fetched) = tokio::join!(survey(args), fetch(args, &target));
    let (fetched, fetch_seconds) = fetched?;
    log(&format!(
        "kernel {} ({} bytes, from {}), initramfs {} ({} bytes): verified (SHA-256: {})",
        fetched.kernel.sha256,
        fetched.kernel.len,
        fetched.kernel_container,
        fetched.initramfs.sha256,
        fetched.initramfs.len,
        boot_artifact::digest::sha256_implementation()
    ));
    let (network, network_error) = match local.network {
        Some(Ok(n)) => (Some(n), None),
        Some(Err(e)) => {
            let e = crate::error_chain::chain(&e);
            tracing::warn!("network carry-over skipped: {e}");
            (None, Some(e))
        }
        None => (None, None),
    };
    let assembled = assemble(args, &target, &fetched, &local.platform, network.as_ref())?;
    log(&format!("next kernel's command line ({} bytes): {}", assembled.kexec_len, assembled.cmdline));
    let pre = preflight(&fetched);
    let plan = Plan {
        status: "planned",
        arch: target.arch.as_str(),
        source: fetched.kind,
        resolved: fetched.resolved.clone(),
        kernel: FileReport {
            sha256: fetched.kernel.sha256.to_string(),
            size: fetched.kernel.len,
            container: Some(fetched.kernel_container.clone()),
        },
        initramfs: FileReport {
            sha256: fetched.initramfs.sha256.to_string(),
            size: fetched.initramfs.len,
            container: None,
        },
        cmdline: assembled,
        platform: local.platform,
        network,
        network_error,
        preflight: pre,
        syscall: kexec::planned().to_string(),
        blobs: fetched.blobs.clone(),
        bytes_transferred: fetched.blobs.iter().map(|b| b.size).sum(),
        sha256_implementation: boot_artifact::digest::sha256_implementation().as_str(),
        seconds: Timings { fetch: fetch_seconds, total: crate::elapsed().as_secs_f64() },
    };
    if args.dry_run {
        log("dry run: no kexec system call made");
        return Ok(plan);
    }
    load(args, fetched.kernel.file, fetched.initramfs.file, plan)
}

/// Step 1, resolve: what to boot, from the flags alone (no I/O): the architecture (`--arch`,
/// else the running one; another one only with `--dry-run`), the source (SOURCE, or the
/// `--kernel`/`--initrd` URLs and their sha256), the registry mirrors, and the Talos version
/// (`--talos-version`, else the reference's tag when it is one).
fn resolve(args: &Args) -> Result<Target, Error> {
    let native = Arch::native();
    let running = native.map(Arch::as_str).unwrap_or(std::env::consts::ARCH);
    let arch = match (args.arch, native) {
        (Some(a), _) => a,
        (None, Some(n)) => n,
        (None, None) => return Err(Error::UnknownArch(running)),
    };
    if native != Some(arch) && !args.dry_run {
        return Err(Error::CrossArch { wanted: arch, running });
    }
    let mirrors = args
        .registry_mirrors
        .iter()
        .map(|m| m.parse::<Mirror>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Mirror)?;
    let source = match (&args.source, &args.kernel) {
        (Some(s), _) => fetch::Source::Image(s.parse::<Reference>().map_err(Error::Source)?),
        (None, Some(k)) => fetch::Source::Urls {
            kernel: k.clone(),
            kernel_sha256: parse_sha256("--kernel-sha256", &args.kernel_sha256)?,
            initrd: args.initrd.clone().unwrap_or_default(),
            initrd_sha256: parse_sha256("--initrd-sha256", &args.initrd_sha256)?,
        },
        (None, None) => return Err(Error::NoSource),
    };
    let version = match (&args.talos_version, &source) {
        (Some(v), _) => Some(v.parse().map_err(Error::TalosVersion)?),
        (None, fetch::Source::Image(r)) => r.tag.as_deref().and_then(|t| t.parse().ok()),
        (None, fetch::Source::Urls { .. }) => None,
    };
    let signature_key = match &args.signature_key {
        None => None,
        Some(path) => Some(
            boot_artifact::cosign::PublicKey::from_pem_file(path)
                .map_err(|reason| Error::SignatureKey { path: path.clone(), reason })?,
        ),
    };
    Ok(Target { arch, source, mirrors, version, signature_key })
}

fn parse_sha256(flag: &'static str, v: &Option<String>) -> Result<Sha256Digest, Error> {
    let v = v.as_deref().unwrap_or_default();
    let hex = v.strip_prefix("sha256:").unwrap_or(v).to_ascii_lowercase();
    Sha256Digest::from_hex(&hex).map_err(|_| Error::Sha256 { flag, value: v.to_string() })
}

/// Alongside step 2: reads this machine while the downloads run: the platform of the next system
/// (`--platform`, else DMI, then IMDSv2) and, unless `--no-network-carry-over`, the running
/// network to carry over.
async fn survey(args: &Args) -> Local {
    let platform =
        platform::detect(args.platform, Path::new(platform::DMI_DIR), platform::IMDS_BASE, platform::IMDS_TIMEOUT)
            .await;
    let network = if args.no_network_carry_over { None } else { Some(network::read_running_system().await) };
    Local { platform, network }
}

/// Step 2, fetch: resolves the reference (through the mirrors) or takes the URLs, and downloads
/// every blob in parallel, each streamed through sha256 and its extractor into memfds
/// ([`fetch`](mod@fetch)), all within `--timeout`. Returns what was fetched and verified, and the
/// seconds it took.
async fn fetch(args: &Args, target: &Target) -> Result<(fetch::Fetched, f64), Error> {
    let start = Instant::now();
    let fetching = async {
        match &target.source {
            fetch::Source::Image(r) => {
                let registry = moonboot_registry::Registry::new(moonboot_registry::Options {
                    mirrors: target.mirrors.clone(),
                    insecure: args.insecure_registries.clone(),
                    auth_file: args.auth_file.clone(),
                    retries: args.retries,
                    ca_files: args.registry_ca.clone(),
                    ..Default::default()
                })
                .map_err(Error::Registry)?;
                Ok::<_, Error>(
                    fetch::fetch_image(&registry, r, target.arch.as_str(), target.signature_key.as_ref()).await?,
                )
            }
            fetch::Source::Urls { kernel, kernel_sha256, initrd, initrd_sha256 } => Ok(fetch::fetch_urls(
                kernel,
                *kernel_sha256,
                initrd,
                *initrd_sha256,
                target.arch.as_str(),
                args.retries,
            )
            .await?),
        }
    };
    let fetched = tokio::time::timeout(args.timeout, fetching).await.map_err(|_| Error::Timeout(args.timeout))??;
    Ok((fetched, start.elapsed().as_secs_f64()))
}

/// Step 3, assemble: the next kernel's command line: the base (the artifact's or the UKI's own
/// line, else Talos's defaults for the version, platform and architecture), the platform, the
/// running system's `console=`, the carried-over network, `talos.config=`, the readiness reporter's `talos_agent.*` arguments and
/// `--extra-kernel-arg`s, its length checked against the kernel's limit ([`cmdline`]).
fn assemble(
    args: &Args,
    target: &Target,
    fetched: &fetch::Fetched,
    detected: &platform::Detected,
    network: Option<&network::NetworkState>,
) -> Result<cmdline::Assembled, Error> {
    let base = match (&fetched.cmdline, fetched.kind) {
        (Some(text), fetch::Kind::TalosUki) => cmdline::Base::uki(text)?,
        (Some(text), _) => cmdline::Base::artifact(text)?,
        (None, _) => {
            let v = target.version.ok_or(Error::NoTalosVersion)?;
            cmdline::Base::talos_preset(v, detected.platform, target.arch)?
        }
    };
    let node = args.node.clone().or_else(|| network.and_then(|n| n.hostname.clone()));
    // An unreadable /proc/cmdline only means no console to carry over.
    let consoles = cmdline::running_consoles(&std::fs::read_to_string(&args.proc_cmdline).unwrap_or_default());
    Ok(cmdline::assemble(&cmdline::Request {
        base,
        platform: detected.platform,
        arch: target.arch,
        talos_version: target.version,
        consoles: &consoles,
        network,
        talos_config: args.talos_config.as_deref(),
        agent: cmdline::AgentParams {
            report: args.report.clone(),
            token: args.report_token.clone(),
            node: if args.report.is_some() { node } else { None },
            role: None,
        },
        extra: &args.extra_kernel_args,
    })?)
}

/// Step 4, pre-flight: can this machine kexec what was fetched now (root, lockdown,
/// `kexec_load_disabled`, memory for twice the artifact)? The result goes into the plan; a
/// refusal stops [`load`], and a dry run reports it after printing its plan.
fn preflight(fetched: &fetch::Fetched) -> Result<preflight::Preflight, preflight::PreflightError> {
    preflight::preflight(fetched.kernel.len + fetched.initramfs.len)
}

/// Step 5, load: refuses if pre-flight did, loads the verified kernel, initramfs and command line
/// (`kexec_file_load`, or `kexec_load` where only that exists), and — unless `--no-exec` — syncs
/// and reboots into it. Returns the plan only with `--no-exec`; a failed reboot unloads the
/// kernel again and is an error.
fn load(args: &Args, kernel: File, initramfs: File, mut plan: Plan) -> Result<Plan, Error> {
    if let Err(e) = plan.preflight {
        return Err(Error::Preflight(e));
    }
    let buf = plan.cmdline.cmdline.as_kexec_bytes().map_err(Error::CmdlineBuffer)?;
    let syscall = kexec::load(kernel, initramfs, &buf)?;
    log(&format!("loaded the next kernel with {syscall}"));
    plan.syscall = syscall.to_string();
    plan.seconds.total = crate::elapsed().as_secs_f64();
    if args.no_exec {
        plan.status = "loaded";
        return Ok(plan);
    }
    plan.status = "executing";
    if args.json {
        println!("{}", serde_json::to_string(&plan).expect("plan serialises"));
    }
    log("syncing file systems and rebooting into the loaded kernel (kexec)");
    let err = kexec::exec();
    // Still here: the reboot failed. Unload so that nothing is left behind.
    let _ = kexec::unload();
    Err(Error::Reboot(err))
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

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("boot").chain(extra.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn typed_flags() {
        let a = args(&["r.example/x:v1.10.5", "--arch", "arm64", "--platform", "aws"]).unwrap();
        assert_eq!(a.arch, Some(Arch::Arm64));
        assert_eq!(a.platform, Some(Platform::Aws));
        let a = args(&["r.example/x:v1.10.5", "--arch", "amd64", "--platform", "metal"]).unwrap();
        assert_eq!((a.arch, a.platform), (Some(Arch::Amd64), Some(Platform::Metal)));
        for bad in [["--arch", "riscv64"], ["--platform", "gcp"]] {
            let e = args(&["r.example/x", bad[0], bad[1]]).err().unwrap();
            assert_eq!(e.exit_code(), i32::from(exit::USAGE), "{e}");
        }
    }

    #[test]
    fn resolve_refuses_with_the_cause() {
        let native = Arch::native().expect("tests run on amd64 or arm64");
        let other = if native == Arch::Amd64 { "arm64" } else { "amd64" };
        let e = resolve(&args(&["r.example/x:v1.10.5", "--arch", other]).unwrap()).err().unwrap();
        assert!(matches!(e, Error::CrossArch { .. }), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.to_string().contains("only --dry-run"), "{e}");
        let t = resolve(&args(&["r.example/x:v1.10.5", "--arch", other, "--dry-run"]).unwrap()).unwrap();
        assert_eq!(t.arch.as_str(), other);
        assert_eq!(t.version, Some(TalosVersion::new(1, 10, 5)));

        let e = resolve(&args(&["r.example/x", "--registry-mirror", "nonsense"]).unwrap()).err().unwrap();
        assert!(matches!(e, Error::Mirror(_)) && e.to_string().starts_with("--registry-mirror: "), "{e}");
        let urls = ["--kernel", "http://h/k", "--kernel-sha256", "00", "--initrd", "http://h/i", "--initrd-sha256"];
        let e = resolve(&args(&[&urls[..], &["11"]].concat()).unwrap()).err().unwrap();
        assert_eq!(e.to_string(), r#"--kernel-sha256 "00" is not 64 hex digits"#);
        let e = resolve(&args(&["r.example/x", "--talos-version", "latest"]).unwrap()).err().unwrap();
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.to_string().starts_with("--talos-version: "), "{e}");
    }

    #[test]
    fn exit_codes() {
        use std::io;
        assert_eq!(Error::Runtime(io::Error::other("x")).exit_code(), exit::INTERNAL);
        assert_eq!(Error::NoTalosVersion.exit_code(), exit::USAGE);
        assert_eq!(Error::Timeout(Duration::from_secs(1)).exit_code(), exit::UNAVAILABLE);
        let f = fetch::Error::Content("no kernel".into());
        assert_eq!(Error::from(f).exit_code(), fetch::Error::Content(String::new()).exit_code());
        assert_eq!(Error::Preflight(preflight::PreflightError::KexecDisabled).exit_code(), exit::PREFLIGHT);
        assert_eq!(Error::Load(kexec::KexecError::Cmdline { len: 0 }).exit_code(), exit::KEXEC);
        assert_eq!(Error::Reboot(io::Error::other("x")).exit_code(), exit::KEXEC);
        let e = Error::Preflight(preflight::PreflightError::NotRoot { euid: 1000 });
        assert_eq!(crate::error_chain::chain(&e), "pre-flight: must run as root (euid 0) to kexec; euid is 1000");
    }
}
