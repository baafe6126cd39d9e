//! `talos-agent boot`: fetch a Talos kernel + initramfs by digest, verify every byte, carry the
//! network over, and kexec into Talos.
//!
//! The steps overlap where they can: the platform, the network and the pre-flight checks are read
//! while the registry resolves the reference, and all layers download in parallel, each streaming
//! through sha256 and its extractor into memfds ([`fetch`]). The command line is assembled and its
//! length checked ([`cmdline`]) as soon as its base is known — before any large blob is fetched
//! for stock Talos images and URLs. Nothing is loaded until every blob has been verified; on any
//! failure nothing is loaded and the running system is left as it was.
//!
//! Logs are single lines on stderr (`talos-agent boot: …`), as cloud-init's output log keeps them;
//! `--json` prints the result (or the error) as one JSON object on stdout.

pub mod cmdline;
pub mod fetch;
pub mod kexec;
pub mod network;
pub mod platform;
pub mod preflight;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::{Mirror, Reference};
use kernel_cmdline::preset::{Arch, Platform, TalosVersion};
use serde::Serialize;

/// Exit codes of `talos-agent boot` (also in `--help`).
pub mod exit {
    /// Success: loaded and executing (never returns), loaded (`--no-exec`) or planned (`--dry-run`).
    pub const OK: u8 = 0;
    /// An unexpected local failure (memfd, runtime).
    pub const INTERNAL: u8 = 1;
    /// Bad usage (clap's code).
    pub const USAGE: u8 = 2;
    /// The source could not be reached: registry or URL unavailable, auth refused, `--timeout` passed.
    pub const UNAVAILABLE: u8 = 3;
    /// Verification failed: a digest or size did not match.
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
4 verification failed (digest or size), 5 content cannot be booted (architecture, format,
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
    /// Extra CA certificate (PEM) to trust for registries; repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Architecture to boot (arm64 or amd64). Default: the running one; kexec cannot cross.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Talos platform of the next system (aws or metal). Default: aws on EC2 (DMI, then IMDSv2),
    /// metal elsewhere.
    #[arg(long, value_name = "PLATFORM", value_parser = platform::parse_platform)]
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

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Logs one line on stderr with the time since start.
pub(crate) fn log(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("talos-agent boot: [{t:7.3}s] {msg}");
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

impl From<fetch::Error> for Failure {
    fn from(e: fetch::Error) -> Failure {
        Failure::new(e.exit_code(), e.to_string())
    }
}

/// The plan / result printed with `--dry-run` or `--json`.
#[derive(Serialize)]
struct Plan {
    /// `planned` (dry run), `loaded` (--no-exec), `executing`.
    status: &'static str,
    arch: String,
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
    preflight: Result<preflight::Preflight, String>,
    /// The syscall used (`--no-exec`) or expected (`--dry-run`).
    syscall: String,
    blobs: Vec<fetch::BlobReport>,
    bytes_transferred: u64,
    seconds: Timings,
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

/// The running architecture in OCI terms.
fn running_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other,
    }
}

/// Runs `talos-agent boot`.
pub fn run(args: Args) -> ExitCode {
    START.get_or_init(Instant::now);
    let json = args.json || args.dry_run;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(json, Failure::new(exit::INTERNAL, format!("starting the async runtime: {e}"))),
    };
    match runtime.block_on(boot(&args)) {
        Ok(plan) => {
            if json {
                println!("{}", serde_json::to_string(&plan).expect("plan serialises"));
            }
            if let Err(e) = &plan.preflight {
                if args.dry_run {
                    return fail(false, Failure::new(exit::PREFLIGHT, format!("pre-flight: {e}")));
                }
            }
            ExitCode::from(exit::OK)
        }
        Err(f) => fail(json, f),
    }
}

fn fail(json: bool, f: Failure) -> ExitCode {
    eprintln!("talos-agent boot: error: {}", f.message);
    if json {
        println!("{}", serde_json::json!({"status": "failed", "error": f.message, "exit_code": f.code}));
    }
    ExitCode::from(f.code)
}

fn parse_sha256(flag: &str, v: &Option<String>) -> Result<Sha256Digest, Failure> {
    let v = v.as_deref().unwrap_or_default();
    let hex = v.strip_prefix("sha256:").unwrap_or(v).to_ascii_lowercase();
    Sha256Digest::from_hex(&hex).map_err(|_| Failure::new(exit::USAGE, format!("{flag} {v:?} is not 64 hex digits")))
}

/// The Talos version for a stock image: `--talos-version`, else the tag when it is one.
fn talos_version(args: &Args, reference: Option<&Reference>) -> Result<Option<TalosVersion>, Failure> {
    if let Some(v) = &args.talos_version {
        return v.parse().map(Some).map_err(|e| Failure::new(exit::USAGE, format!("--talos-version: {e}")));
    }
    Ok(reference.and_then(|r| r.tag.as_deref()).and_then(|t| t.parse().ok()))
}

async fn boot(args: &Args) -> Result<Plan, Failure> {
    let arch_name = args.arch.clone().unwrap_or_else(|| running_arch().to_string());
    let arch = match arch_name.as_str() {
        "arm64" => Arch::Arm64,
        "amd64" => Arch::Amd64,
        other => return Err(Failure::new(exit::USAGE, format!("--arch {other:?}: expected arm64 or amd64"))),
    };
    if arch_name != running_arch() && !args.dry_run {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "cannot kexec an {arch_name} kernel on {} (only --dry-run may fetch another architecture)",
                running_arch()
            ),
        ));
    }
    let mirrors = args
        .registry_mirrors
        .iter()
        .map(|m| m.parse::<Mirror>().map_err(|e| Failure::new(exit::USAGE, e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let source = match (&args.source, &args.kernel) {
        (Some(s), _) => {
            fetch::Source::Image(s.parse::<Reference>().map_err(|e| Failure::new(exit::USAGE, format!("SOURCE: {e}")))?)
        }
        (None, Some(k)) => fetch::Source::Urls {
            kernel: k.clone(),
            kernel_sha256: parse_sha256("--kernel-sha256", &args.kernel_sha256)?,
            initrd: args.initrd.clone().unwrap_or_default(),
            initrd_sha256: parse_sha256("--initrd-sha256", &args.initrd_sha256)?,
        },
        (None, None) => return Err(Failure::new(exit::USAGE, "give SOURCE or --kernel/--initrd")),
    };
    let reference = match &source {
        fetch::Source::Image(r) => Some(r),
        fetch::Source::Urls { .. } => None,
    };
    let version = talos_version(args, reference)?;

    // Everything local, read while the network work runs.
    let local = async {
        let detected =
            platform::detect(args.platform, Path::new(platform::DMI_DIR), platform::IMDS_BASE, platform::IMDS_TIMEOUT)
                .await;
        let net = if args.no_network_carry_over { None } else { Some(network::read_running_system().await) };
        (detected, net)
    };
    let fetching = async {
        match &source {
            fetch::Source::Image(r) => {
                let registry = moonboot_registry::Registry::new(moonboot_registry::Options {
                    mirrors: mirrors.clone(),
                    insecure: args.insecure_registries.clone(),
                    auth_file: args.auth_file.clone(),
                    retries: args.retries,
                    ca_files: args.registry_ca.clone(),
                    ..Default::default()
                })
                .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
                Ok::<_, Failure>(fetch::fetch_image(&registry, r, &arch_name).await?)
            }
            fetch::Source::Urls { kernel, kernel_sha256, initrd, initrd_sha256 } => {
                Ok(fetch::fetch_urls(kernel, *kernel_sha256, initrd, *initrd_sha256, &arch_name, args.retries).await?)
            }
        }
    };
    let fetch_start = Instant::now();
    let timed = tokio::time::timeout(args.timeout, fetching);
    let ((detected, net), fetched) = tokio::join!(local, timed);
    let fetched: fetch::Fetched = fetched.map_err(|_| {
        Failure::new(
            exit::UNAVAILABLE,
            format!("--timeout {:?} passed before every blob was fetched and verified", args.timeout),
        )
    })??;
    let fetch_seconds = fetch_start.elapsed().as_secs_f64();
    log(&format!(
        "kernel {} ({} bytes, from {}), initramfs {} ({} bytes): verified",
        fetched.kernel.sha256,
        fetched.kernel.len,
        fetched.kernel_container,
        fetched.initramfs.sha256,
        fetched.initramfs.len
    ));

    let (network, network_error) = match net {
        Some(Ok(n)) => (Some(n), None),
        Some(Err(e)) => {
            log(&format!("network carry-over skipped: {e}"));
            (None, Some(e.to_string()))
        }
        None => (None, None),
    };

    // The command line.
    let base = match (&fetched.cmdline, fetched.kind) {
        (Some(text), fetch::Kind::TalosUki) => cmdline::Base::uki(text),
        (Some(text), _) => cmdline::Base::artifact(text),
        (None, _) => {
            let v = version.ok_or_else(|| {
                Failure::new(
                    exit::USAGE,
                    "cannot tell the Talos version of this image (its tag is not a version): pass --talos-version",
                )
            })?;
            cmdline::Base::talos_preset(v, detected.platform, arch)
        }
    }
    .map_err(|e| Failure::new(exit::CONTENT, e.to_string()))?;
    let node = args.node.clone().or_else(|| network.as_ref().and_then(|n| n.hostname.clone()));
    let assembled = cmdline::assemble(&cmdline::Request {
        base,
        platform: detected.platform,
        arch,
        talos_version: version,
        network: network.as_ref(),
        talos_config: args.talos_config.as_deref(),
        agent: cmdline::AgentParams {
            report: args.report.clone(),
            token: args.report_token.clone(),
            node: if args.report.is_some() { node } else { None },
            role: None,
        },
        extra: &args.extra_kernel_args,
    })
    .map_err(|e| Failure::new(exit::CONTENT, e.to_string()))?;
    log(&format!("next kernel's command line ({} bytes): {}", assembled.kexec_len, assembled.cmdline));

    let total = fetched.kernel.len + fetched.initramfs.len;
    let pre = preflight::preflight(total).map_err(|e| e.to_string());
    let bytes_transferred = fetched.blobs.iter().map(|b| b.size).sum();
    let mut plan = Plan {
        status: "planned",
        arch: arch_name.clone(),
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
        platform: detected,
        network,
        network_error,
        preflight: pre,
        syscall: kexec::planned().to_string(),
        blobs: fetched.blobs.clone(),
        bytes_transferred,
        seconds: Timings { fetch: fetch_seconds, total: START.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0) },
    };
    if args.dry_run {
        log("dry run: no kexec system call made");
        return Ok(plan);
    }
    if let Err(e) = &plan.preflight {
        return Err(Failure::new(exit::PREFLIGHT, format!("pre-flight: {e}")));
    }
    let buf = plan.cmdline.cmdline.as_kexec_bytes().map_err(|e| Failure::new(exit::CONTENT, e.to_string()))?;
    let syscall = kexec::load(fetched.kernel.file, fetched.initramfs.file, &buf)
        .map_err(|e| Failure::new(exit::KEXEC, e.to_string()))?;
    log(&format!("loaded the next kernel with {syscall}"));
    plan.syscall = syscall.to_string();
    plan.seconds.total = START.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
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
    Err(Failure::new(exit::KEXEC, format!("reboot(LINUX_REBOOT_CMD_KEXEC): {err}")))
}
