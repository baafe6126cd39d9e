//! The main job, end to end, on one machine (the README's
//! first command): `imager build --arch arm64` against the fixture registry → `imager publish` to
//! it → `talos-agent wait` on loopback → an arm64 QEMU VM whose first stage runs
//! `talos-agent boot` against the published boot artifact → kexec → the stand-in Talos init
//! mounts the extensions and starts `ext-talos-agent` → `talos-agent report` reaches `wait`.
//!
//! Everything runs under software emulation (QEMU TCG, no KVM): boot times are those of an
//! emulated Cortex-A57, many times slower than a Graviton instance. The stand-in Talos init is a
//! TEST PROGRAM (see `tests/standin-init`), not Talos.

use crate::fixtures::{ArchFixtures, Fixtures};
use crate::qemu::{BootSpec, Guest};
use crate::stage1::{self, Stage1};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the demo is asked to do.
pub struct Options {
    /// Working directory (build output, logs); created.
    pub work: PathBuf,
    /// Repository in the fixture registry the boot artifact is published to, e.g.
    /// `moonboot/boot` (the demo) or a [`crate::fixtures::unique_repository`] (tests: a repository
    /// no other test pushes to at the same time).
    pub repository: String,
    /// Tag published in [`Options::repository`], e.g. `demo`.
    pub tag: String,
    /// `configured` boots the stand-in with `standin.apid=configured` (apid asks for a client
    /// certificate) and waits for that phase instead of `maintenance_ready`.
    pub configured: bool,
    /// A configured control-plane node (`standin.role=controlplane`: trustd listens), waited for
    /// until `bootstrap_ready`; with `etcd_running` etcd listens too, as once bootstrapped, and
    /// the wait is for `configured`. Implies `configured`.
    pub controlplane: Option<ControlPlane>,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// The Talos version to build and whether to embed a machine configuration.
    pub image: Image,
}

/// What Talos image the demo builds: the version (its stand-in release must be served:
/// [`serve_release`]) and an optional machine configuration to embed (Talos ≥ 1.12; the node then
/// boots configured).
#[derive(Debug, Clone)]
pub struct Image {
    /// `--talos-version` (`v1.10.5` by default, the operator's).
    pub talos_version: String,
    /// `--embed-config`.
    pub embed_config: Option<PathBuf>,
}

impl Default for Image {
    fn default() -> Self {
        Image { talos_version: crate::build::TALOS_VERSION.to_string(), embed_config: None }
    }
}

impl Image {
    /// The `imager build` flags that select this image.
    pub fn build_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["--talos-version".into(), self.talos_version.clone().into()];
        if let Some(c) = &self.embed_config {
            a.push("--embed-config".into());
            a.push(c.clone().into());
        }
        a
    }

    /// The phase a node of this image reaches: `configured` with an embedded configuration,
    /// else `maintenance_ready`.
    pub fn phase(&self) -> &'static str {
        if self.embed_config.is_some() {
            "configured"
        } else {
            "maintenance_ready"
        }
    }
}

/// Makes sure the fixture registry serves a stand-in Talos `version` release (imager image,
/// extensions and overlays bundles under that tag): the fixtures build [`TALOS_VERSION`] and
/// the newest patch of each minor ([`crate::build::release_versions`]); any other supported
/// version is tagged from the served release of its minor (else from [`TALOS_VERSION`]) with
/// `skopeo copy`. Returns the release it was tagged from, if it was.
///
/// [`TALOS_VERSION`]: crate::build::TALOS_VERSION
///
/// # Errors
/// A version moonboot does not support, `skopeo`.
pub fn serve_release(f: &Fixtures, version: &str) -> Result<Option<String>> {
    let v: kernel_cmdline::preset::TalosVersion = version.parse()?;
    anyhow::ensure!(
        v.is_supported(),
        "Talos {version} is not supported (moonboot knows v1.7.0 to v{}.x)",
        kernel_cmdline::quirks::newest_minor()
    );
    let version = v.to_string();
    if f.images.values().any(|i| i.repository == crate::build::IMAGER_REPOSITORY && i.tag == version) {
        return Ok(None);
    }
    let from = crate::build::release_versions()
        .into_iter()
        .find(|r| {
            r.parse::<kernel_cmdline::preset::TalosVersion>().is_ok_and(|r| (r.major, r.minor) == (v.major, v.minor))
        })
        .unwrap_or_else(|| crate::build::TALOS_VERSION.to_string());
    for repo in
        [crate::build::IMAGER_REPOSITORY, crate::bundles::EXTENSIONS_REPOSITORY, crate::bundles::OVERLAYS_REPOSITORY]
    {
        skopeo_copy(&format!("{}/{repo}:{from}", f.registry), &format!("{}/{repo}:{version}", f.registry))?;
    }
    Ok(Some(from))
}

/// The stand-in control plane's etcd (see [`Options::controlplane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlane {
    /// Never bootstrapped: nothing listens on :2379.
    NotBootstrapped,
    /// Bootstrapped (or joined): etcd listens on :2379.
    Bootstrapped,
}

impl Options {
    /// The phase `wait` waits for.
    pub fn until(&self) -> &'static str {
        match self.controlplane {
            Some(ControlPlane::NotBootstrapped) => "bootstrap_ready",
            Some(ControlPlane::Bootstrapped) => "configured",
            None if self.configured => "configured",
            None => self.image.phase(),
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// `imager publish --json`'s report.
    pub published: Value,
    /// The reference the VM booted.
    pub boot_reference: String,
    /// One JSON object per node, as `talos-agent wait --json` printed them.
    pub nodes: Vec<Value>,
    /// The table `wait` printed last (stderr), for humans.
    pub wait_log: String,
    /// What the VM's console printed.
    pub console: Vec<String>,
    /// The SPKI fingerprint the stand-in apid printed.
    pub served_fingerprint: Option<String>,
    /// Seconds from QEMU start to `wait` exiting successfully.
    pub seconds_to_phase: f64,
    /// Seconds of each step: build, publish, boot.
    pub step_seconds: Vec<(&'static str, f64)>,
}

/// The marker the stand-in init prints before each of its lines.
pub const STANDIN_MARK: &str = "MOONBOOT-STANDIN-INIT:";

fn say(o: &Options, s: &str) {
    if o.verbose {
        eprintln!("demo: {s}");
    }
}

/// The host's release `imager` and its `talos-agent`, built if needed (cargo's fingerprints make
/// this a no-op when nothing changed); returns their paths.
///
/// - `imager`: `cargo build --release -p moonboot-imager`, exactly as `ci/publish.sh build` builds
///   it (building other packages in the same invocation would unify features differently and
///   relink it).
/// - `talos-agent`: the static agent for the host's architecture ([`stage1::build_static_agent`]),
///   the same binary the imager packs and `ci/publish.sh` publishes for that architecture, so the
///   tests build the agent once per architecture.
///
/// Cargo's progress goes to stderr when `MOONBOOT_PROGRESS=1` (the demo sets it: a fresh machine
/// compiles for minutes). With `MOONBOOT_PREBUILT=1` (set by `scripts/test`, which builds every
/// binary once before the tests) no cargo runs here: the binaries must already be there.
///
/// # Errors
/// A build failed, a prebuilt binary is missing, or the host is neither x86-64 nor aarch64.
pub fn host_binaries() -> Result<(PathBuf, PathBuf)> {
    let root = stage1::workspace();
    let imager = root.join("target/release/imager");
    let Some(host_arch) = kernel_cmdline::preset::Arch::native() else {
        bail!("no static talos-agent for a {} host", std::env::consts::ARCH);
    };
    if stage1::prebuilt() {
        if !imager.is_file() {
            bail!("MOONBOOT_PREBUILT=1 but {} is missing (scripts/test builds it first)", imager.display());
        }
    } else {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        moonboot_imager::build::agent_extension::clear_outer_cargo_env(&mut cmd);
        let progress = std::env::var_os("MOONBOOT_PROGRESS").is_some_and(|v| v == "1");
        cmd.current_dir(&root)
            .args(["build", "--release", "--locked", "-p", "moonboot-imager"])
            .arg(if progress { "--color=never" } else { "--quiet" })
            .stdin(Stdio::null());
        if progress {
            cmd.stderr(Stdio::inherit());
        }
        let out = cmd.output().context("running cargo build")?;
        if !out.status.success() {
            bail!("cargo build --release -p moonboot-imager failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok((imager, stage1::build_static_agent(host_arch.as_str())?))
}

/// `imager build --arch arm64` against the fixture registry (its mirror, plain HTTP to it) with the
/// static `agent` packed into the talos-agent extension; callers add their own flags and `--output`.
pub fn fixture_build(imager: &Path, f: &Fixtures, agent: &Path) -> Command {
    let mut cmd = Command::new(imager);
    cmd.args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .arg("--agent-binary")
        .arg(agent);
    cmd
}

/// `skopeo copy --all --preserve-digests` of `from` to `to` (`HOST:PORT/REPO:TAG` on plain-HTTP
/// registries): the image or index with every platform, under the same digests.
///
/// # Errors
/// skopeo failed (its stderr).
pub fn skopeo_copy(from: &str, to: &str) -> Result<()> {
    run(
        Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{from}"))
            .arg(format!("docker://{to}")),
        "skopeo copy",
    )
    .map(drop)
}

/// Runs `cmd` to completion; its stdout, or an error with its stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("{what}: starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// A loopback TCP port nothing listens on (bound and released at once). Only for a port that must
/// be *closed*: another process may take it meanwhile, so a server that is to listen binds port 0
/// itself and says which port it got (`talos-agent wait`: [`wait_listening_address`]).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The address in the line `talos-agent wait` prints first on stderr,
/// `talos-agent wait: listening on ADDR (POST /v1/report), waiting for …` (part of its interface),
/// so that it can be started with `--listen 127.0.0.1:0` and tell which port it got.
///
/// # Errors
/// The line names no `listening on ADDR`.
pub fn wait_listening_address(line: &str) -> Result<SocketAddr> {
    line.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("no `listening on ADDR` in talos-agent wait's first line {line:?}"))
}

/// `talos-agent wait`'s stderr lines after the first, each with the instant it arrived.
pub type WaitLines = std::sync::mpsc::Receiver<(Instant, String)>;

/// Copies `talos-agent wait`'s stderr line by line to `log` on a thread of its own, and returns
/// the address its first line names ([`wait_listening_address`]), that thread, which ends at
/// the end of the pipe (once `wait` exited), and the lines after the first as they come.
///
/// # Errors
/// `wait` printed no first line within 30 s (it failed to start: what it printed is in `log`), or
/// that line names no address.
pub fn wait_stderr_to_log(
    stderr: std::process::ChildStderr,
    mut log: std::fs::File,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>, WaitLines)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let copier = std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            let _ = tx.send((Instant::now(), line));
        }
    });
    let (_, first) = rx
        .recv_timeout(Duration::from_secs(30))
        .context("talos-agent wait exited or printed no `listening on` line within 30 s (see its log)")?;
    Ok((wait_listening_address(&first)?, copier, rx))
}

/// Kills the child on drop.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `talos-agent wait --json` on the host's loopback, its JSON lines collected as they come (the EC2
/// path reaches it through each instance's namespace, the quick path as QEMU's 10.0.2.2).
pub struct Waiter {
    /// Where it listens (`127.0.0.1:PORT`, the port it was given by the kernel).
    pub addr: SocketAddr,
    child: Killed,
    lines: std::sync::mpsc::Receiver<String>,
    stderr_copier: Option<std::thread::JoinHandle<()>>,
    stderr_lines: WaitLines,
    /// Its stderr (the readiness table), complete once [`Waiter::poll`] returned its exit status.
    pub log: PathBuf,
    /// Each JSON object it printed so far.
    pub nodes: Vec<Value>,
    /// When it first said each node (name) reached each phase, from its `new:` and `changed:`
    /// lines (`new: node NAME address A phase P …`, talos-agent `wait/mod.rs`, `wait/table.rs`
    /// `line`), as far as [`Waiter::poll`] has read them.
    pub reached: std::collections::BTreeMap<(String, String), Instant>,
}

impl Waiter {
    /// Starts `talos-agent wait --listen 127.0.0.1:0 --nodes N --until PHASE --timeout T --json`
    /// and reads the port it listens on from its first line; its stderr goes to `log`.
    ///
    /// # Errors
    /// When it cannot be started or does not say where it listens.
    pub fn start(agent: &Path, token: &str, nodes: usize, until: &str, timeout: &str, log: &Path) -> Result<Self> {
        let mut child = Killed(
            Command::new(agent)
                .args(["wait", "--listen", "127.0.0.1:0", "--token", token])
                .args(["--nodes", &nodes.to_string(), "--until", until, "--timeout", timeout, "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting talos-agent wait")?,
        );
        let stdout = child.0.stdout.take().expect("piped");
        let stderr = child.0.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (addr, stderr_copier, stderr_lines) =
            wait_stderr_to_log(stderr, log_file).with_context(|| format!("talos-agent wait, log {}", log.display()))?;
        Ok(Self {
            addr,
            child,
            lines: rx,
            stderr_copier: Some(stderr_copier),
            stderr_lines,
            log: log.to_path_buf(),
            nodes: Vec::new(),
            reached: Default::default(),
        })
    }

    fn note_phases(&mut self) {
        for (at, line) in self.stderr_lines.try_iter() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 7 && (w[0] == "new:" || w[0] == "changed:") && w[1] == "node" && w[5] == "phase" {
                self.reached.entry((w[2].to_string(), w[6].to_string())).or_insert(at);
            }
        }
    }

    /// Collects what `wait` printed; its exit status once it exited.
    ///
    /// # Errors
    /// When its status cannot be read.
    pub fn poll(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let status = self.child.0.try_wait()?;
        let mut take = |line: String| {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                self.nodes.push(v);
            }
        };
        if status.is_some() {
            // Its last lines may still be in the pipes: the reader threads end at their end of file.
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
                take(line);
            }
            if let Some(copier) = self.stderr_copier.take() {
                let _ = copier.join();
            }
        } else {
            while let Ok(line) = self.lines.try_recv() {
                take(line);
            }
        }
        self.note_phases();
        Ok(status)
    }
}

/// Runs the demo.
///
/// # Errors
/// Any step that fails, with its output.
pub fn run_demo(f: &Fixtures, o: &Options) -> Result<Outcome> {
    let a: &ArchFixtures = f.arches.get("arm64").context("fixtures have no arm64")?;
    std::fs::create_dir_all(&o.work)?;
    let mut steps = Vec::new();

    say(o, "building the host tools (imager, talos-agent) and the static aarch64 talos-agent");
    let (imager, agent_host) = host_binaries()?;
    let agent_arm64 = stage1::build_static_agent("arm64")?;

    // 1. imager build --arch arm64
    let out = o.work.join("_out");
    say(o, &format!("imager build --arch arm64 --registry-mirror {} → {}", f.mirror, out.display()));
    let t = Instant::now();
    if let Some(from) = serve_release(f, &o.image.talos_version)? {
        say(
            o,
            &format!(
                "the fixtures serve no stand-in Talos {}: tagged the stand-in {from} as it",
                o.image.talos_version
            ),
        );
    }
    run(fixture_build(&imager, f, &agent_arm64).args(o.image.build_args()).arg("--output").arg(&out), "imager build")?;
    steps.push(("imager build", t.elapsed().as_secs_f64()));

    // 2. imager publish
    let target = format!("{}/{}:{}", f.registry, o.repository, o.tag);
    say(o, &format!("imager publish --to {target}"));
    let t = Instant::now();
    let published = run(
        Command::new(&imager)
            .args(["publish", "--to", &target, "--arch", "arm64", "--insecure-registry", &f.registry, "--json"])
            .arg("--output")
            .arg(&out),
        "imager publish",
    )?;
    steps.push(("imager publish", t.elapsed().as_secs_f64()));
    let published: Value = serde_json::from_slice(&published).context("imager publish --json output")?;
    let index = published["boot"]["index_digest"]
        .as_str()
        .with_context(|| format!("no index digest in publish output: {published}"))?
        .to_string();
    // The VM reaches the host's loopback registry as 10.0.2.2 (QEMU user networking).
    let port = f.registry.rsplit(':').next().unwrap_or("5055");
    let guest_registry = format!("10.0.2.2:{port}");
    let boot_reference = format!("{guest_registry}/{}@{index}", o.repository);

    // 3. talos-agent wait on loopback
    let token = format!("demo-{:016x}", rand_u64());
    let until = o.until();
    let wait_log = o.work.join("wait.log");
    let mut wait = Waiter::start(&agent_host, &token, 1, until, "15m", &wait_log)?;
    let wait_port = wait.addr.port();
    say(o, &format!("talos-agent wait --listen {} --nodes 1 --until {until}", wait.addr));

    // 4. the arm64 VM: stage 1 runs talos-agent boot
    // `standin.hold`: the stand-in init keeps running (and serving apid) instead of powering off.
    let mut extra = format!("--extra-kernel-arg console={} --extra-kernel-arg standin.hold", a.console);
    if o.configured || o.controlplane.is_some() {
        extra.push_str(" --extra-kernel-arg standin.apid=configured");
    }
    if let Some(cp) = o.controlplane {
        extra.push_str(" --extra-kernel-arg standin.role=controlplane");
        if cp == ControlPlane::Bootstrapped {
            extra.push_str(" --extra-kernel-arg standin.etcd=running");
        }
    }
    let script = format!(
        "echo STAGE1: running talos-agent boot\n\
         talos-agent boot {boot_reference} --insecure-registry {guest_registry} --platform metal \
         --report http://10.0.2.2:{wait_port}/v1/report --report-token {token} --node demo-node-1 {extra}\n\
         fail \"talos-agent boot returned $?\""
    );
    let stage = stage1::build(
        &Stage1 { arch: a, script: &script, files: vec![("usr/bin/talos-agent".into(), agent_arm64.clone(), true)] },
        &o.work,
    )?;
    let log = o.work.join("console-arm64.log");
    say(o, &format!("booting the arm64 VM under QEMU (software emulation); console in {}", log.display()));
    let append = format!("console={} panic=-1 rdinit=/init", a.console);
    let extra_args: Vec<String> =
        ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"].iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    let mut guest = Guest::boot(&BootSpec {
        qemu: &a.qemu_binary,
        machine_args: &a.qemu_machine_args,
        kernel: &a.kernel_image,
        initrd: &stage,
        append: &append,
        extra: &extra_args,
        log: &log,
    })?;

    // 5. wait exits when the node reached the phase.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = wait.poll()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!(
                "no readiness report within 10 minutes; console in {}, wait log in {}",
                log.display(),
                wait_log.display()
            );
        }
        // Watch the console meanwhile: a failed first stage or a dead VM ends the demo at once.
        match guest
            .wait_for("a stage-1 error", Instant::now() + Duration::from_millis(100), |l| l.contains("STAGE1: error"))
        {
            Ok(line) => bail!("the VM's first stage failed: {line}; console in {}", log.display()),
            Err(e) if e.to_string().starts_with("QEMU exited") => bail!("{e:#}"),
            Err(_) => {}
        }
    };
    let seconds_to_phase = t.elapsed().as_secs_f64();
    steps.push(("VM power-on to phase", seconds_to_phase));
    let wait_text = std::fs::read_to_string(&wait_log).unwrap_or_default();
    if !status.success() {
        bail!("talos-agent wait exited with {status}: {}", wait_text.trim());
    }
    // Give the console a moment to flush, then stop the VM.
    let _ = guest.wait_for("console", Instant::now() + Duration::from_millis(500), |_| false);
    let console = guest.lines().to_vec();
    drop(guest);
    let served_fingerprint = console.iter().find_map(|l| {
        let i = l.find("apid fingerprint=")?;
        Some(l[i + "apid fingerprint=".len()..].split_whitespace().next()?.to_string())
    });
    Ok(Outcome {
        published,
        boot_reference,
        nodes: wait.nodes,
        wait_log: wait_text,
        console,
        served_fingerprint,
        seconds_to_phase,
        step_seconds: steps,
    })
}

/// A random u64 from the kernel (for tokens); 0 when `/dev/urandom` cannot be read.
pub fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_says_where_it_listens_in_its_first_line() {
        let line = "talos-agent wait: listening on 127.0.0.1:40123 (POST /v1/report), waiting for 1 node(s) to reach \
                    maintenance_ready";
        assert_eq!(wait_listening_address(line).unwrap(), "127.0.0.1:40123".parse::<SocketAddr>().unwrap());
        let v6 =
            "talos-agent wait: listening on [::1]:8090 (POST /v1/report), waiting for 2 node(s) to reach configured";
        assert_eq!(wait_listening_address(v6).unwrap(), "[::1]:8090".parse::<SocketAddr>().unwrap());
        let err = wait_listening_address("talos-agent wait: error: address in use").unwrap_err().to_string();
        assert!(err.contains("no `listening on ADDR`"), "{err}");
    }
}
