//! End-to-end readiness proof under QEMU: the stand-in Talos initramfs (TEST FIXTURE) with the
//! spin and tailscale stand-in extensions plus a talos-agent extension layer built here (the real
//! `extensions/talos-agent/{manifest.yaml,talos-agent.yaml}` and a statically cross-built
//! `talos-agent`) boots with user-mode networking; the stand-in init configures `ip=`, answers TLS
//! on :50000 like apid and starts `ext-talos-agent` (`talos-agent report`), which reports to a
//! `talos-agent wait` on the host's loopback (the guest reaches it as 10.0.2.2).
//!
//! Asserted: wait exits 0 with `--json` saying the node reached the phase, with the SPKI
//! fingerprint the stand-in printed for the certificate it served, the guest's address
//! 10.0.2.15, the Talos version and the three extensions; the console shows the agent's start
//! line and tailscale skipped (it depends on `cri`, never started in maintenance mode). Boot 1:
//! maintenance mode → `maintenance_ready`; boot 2 with `standin.apid=configured` → `configured`.
//!
//! The agent is built with Debian's toolchain into `target/cross` by
//! `moonboot_tests::stage1::build_static_agent` (as the imager builds the agent it packs; with
//! `MOONBOOT_PREBUILT=1` the binaries `scripts/test` built there are used):
//! `aarch64-unknown-linux-gnu` for the guest and `x86_64-unknown-linux-gnu` for `wait` on the host
//! (and the amd64 guest). Skipped with a reason when the fixtures, QEMU or that toolchain are
//! absent. Console logs: `target/fixtures/logs/standin-services-*.log`.

use boot_artifact::oci::Platform;
use moonboot_tests::build::initramfs_with_extensions;
use moonboot_tests::demo::wait_listening_address;
use moonboot_tests::fixtures::{fixtures_dir, loaded, skip, with_qemu, ArchFixtures};
use moonboot_tests::oci::{LayerBuilder, Layout};
use moonboot_tests::qemu::{BootSpec, Guest};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MARK: &str = "MOONBOOT-STANDIN-INIT:";
/// Deadline for one boot, from QEMU start to wait's exit (software emulation).
const DEADLINE: Duration = Duration::from_secs(300);

/// The static `talos-agent` for `guest_arch` (the guest's) and for amd64 (`wait` on the host),
/// both from [`moonboot_tests::stage1::build_static_agent`]: built with Debian's toolchain into
/// `target/cross` exactly as the imager builds the agent it packs, or, with `MOONBOOT_PREBUILT=1`,
/// the binaries `scripts/test` built there before the tests. Returns (guest binary, host binary),
/// or why they cannot be had.
fn static_agents(guest_arch: &str) -> Result<(PathBuf, PathBuf), String> {
    if !moonboot_tests::stage1::prebuilt() && !Path::new("/usr/bin/cargo").exists() {
        return Err("Debian's cargo/rustc (/usr/bin/cargo) are not installed (run scripts/setup)".into());
    }
    let t = Instant::now();
    let build = |arch: &str| {
        moonboot_tests::stage1::build_static_agent(arch)
            .unwrap_or_else(|e| panic!("building the static talos-agent for {arch}: {e:#}"))
    };
    let guest = build(guest_arch);
    let host = build("amd64");
    eprintln!("talos-agent for {guest_arch} + host ready in {:.1} s", t.elapsed().as_secs_f64());
    Ok((guest, host))
}

/// An OCI image layout of a talos-agent extension for `arch`: the repository's manifest and
/// service spec, and `binary` at `rootfs/usr/local/lib/containers/talos-agent/usr/local/bin/`.
fn agent_extension_layout(arch: &str, binary: &Path, dir: &Path, epoch: u64) -> PathBuf {
    let manifest = include_str!("../../extensions/talos-agent/manifest.yaml");
    let spec = include_str!("../../extensions/talos-agent/talos-agent.yaml");
    let mut b = LayerBuilder::new(epoch);
    b.file("manifest.yaml", manifest, 0o644)
        .file("rootfs/usr/local/etc/containers/talos-agent.yaml", spec, 0o644)
        .file(
            "rootfs/usr/local/lib/containers/talos-agent/usr/local/bin/talos-agent",
            std::fs::read(binary).unwrap(),
            0o755,
        );
    let layer = b.build("talos-agent extension (test layer)").unwrap();
    let layout = Layout::create(dir).unwrap();
    let desc = layout.put_image(&Platform::linux(arch), &[&layer], epoch, &BTreeMap::new(), &BTreeMap::new()).unwrap();
    layout.finish_index(vec![desc], &BTreeMap::new(), "test").unwrap();
    dir.to_path_buf()
}

/// A running `talos-agent wait`.
struct Wait {
    child: Child,
    port: u16,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Wait {
    fn start(bin: &Path, token: &str, until: &str) -> Wait {
        let mut child = Command::new(bin)
            .args(["wait", "--listen", "127.0.0.1:0", "--token", token, "--nodes", "1", "--until", until])
            .args(["--json", "--timeout"])
            .arg(format!("{}s", DEADLINE.as_secs()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = |r: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            rx
        };
        let stdout = pipe(Box::new(child.stdout.take().unwrap()));
        let stderr = pipe(Box::new(child.stderr.take().unwrap()));
        let first = stderr.recv_timeout(Duration::from_secs(30)).expect("wait prints where it listens");
        let port = wait_listening_address(&first).unwrap_or_else(|e| panic!("{e:#}")).port();
        Wait { child, port, stdout, stderr }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("moonboot-test-{}-{nanos}", std::process::id())
}

struct Setup {
    arch_fixtures: ArchFixtures,
    initrd: PathBuf,
    host_agent: PathBuf,
    work: PathBuf,
}

fn setup(test: &str, arch: &str) -> Option<Setup> {
    let f = loaded(test)?;
    let a = with_qemu(test, &f, arch)?;
    let (guest_agent, host_agent) = match static_agents(arch) {
        Ok(x) => x,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let work = fixtures_dir().join("tmp").join(format!("services-{test}-{}", std::process::id()));
    let layout = agent_extension_layout(arch, &guest_agent, &work.join("talos-agent-oci"), f.source_date_epoch);
    let spin = &f.images["spin"];
    let ts = &f.images["tailscale"];
    let initrd = initramfs_with_extensions(
        &a.initramfs,
        &[
            (spin.layout.as_path(), spin.tag.as_str()),
            (ts.layout.as_path(), ts.tag.as_str()),
            (layout.as_path(), "test"),
        ],
        arch,
        &work.join("initramfs"),
        f.source_date_epoch,
    )
    .unwrap();
    Some(Setup { arch_fixtures: a, initrd, host_agent, work })
}

/// Boots with the collector on the host; returns (wait's JSON line, console lines, the
/// fingerprint the stand-in printed, seconds from QEMU start to wait's exit).
fn boot_and_wait(s: &Setup, arch: &str, apid_mode: &str, until: &str) -> (serde_json::Value, Vec<String>, String, f64) {
    let a = &s.arch_fixtures;
    let token = token();
    let wait = Wait::start(&s.host_agent, &token, until);
    let node = format!("standin-{arch}-{apid_mode}");
    let mut append = format!(
        "console={} panic=-1 standin.hold ip=10.0.2.15::10.0.2.2:255.255.255.0:::off \
         talos_agent.report=http://10.0.2.2:{}/v1/report talos_agent.token={token} talos_agent.node={node}",
        a.console, wait.port
    );
    if apid_mode == "configured" {
        append.push_str(" standin.apid=configured");
    }
    let log = fixtures_dir().join("logs").join(format!("standin-services-{arch}-{apid_mode}.log"));
    let extra: Vec<String> =
        ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"].iter().map(|s| s.to_string()).collect();
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let mut guest = Guest::boot(&BootSpec {
        qemu: &a.qemu_binary,
        machine_args: &a.qemu_machine_args,
        kernel: &a.kernel_image,
        initrd: &s.initrd,
        append: &append,
        extra: &extra,
        log: &log,
    })
    .unwrap();
    let fp_line = guest
        .wait_for("the stand-in apid's fingerprint line", deadline, |l| {
            l.contains(&format!("{MARK} apid fingerprint=")) || l.contains(&format!("{MARK} error:"))
        })
        .unwrap();
    assert!(!fp_line.contains("error:"), "the stand-in init failed: {fp_line} (console log {})", log.display());
    let fingerprint = fp_line.split("fingerprint=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(fp_line.contains(&format!("mode={}", if apid_mode == "configured" { "configured" } else { "maintenance" })));
    // wait prints its JSON line and exits once the report arrives.
    let json = loop {
        match wait.stdout.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => break line,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let err: Vec<String> = wait.stderr.try_iter().collect();
                panic!("wait exited without a JSON line: {}\nconsole log {}", err.join("\n"), log.display());
            }
        }
        // Keep the console flowing into the log and fail early if the init failed.
        let _ = guest.wait_for("nothing", Instant::now() + Duration::from_millis(10), |_| false);
        let failed = |l: &&String| {
            l.contains(&format!("{MARK} error:"))
                || l.contains(&format!("{MARK} ext-talos-agent: not started"))
                || l.contains(&format!("{MARK} ext-talos-agent: cannot start"))
        };
        if let Some(l) = guest.lines().iter().find(failed) {
            panic!("the stand-in init failed: {l} (console log {})", log.display());
        }
        assert!(Instant::now() < deadline, "no report reached wait within {DEADLINE:?}; console log {}", log.display());
    };
    let secs = start.elapsed().as_secs_f64();
    let mut wait = wait;
    let status = wait.child.wait().unwrap();
    let err: Vec<String> = wait.stderr.try_iter().collect();
    assert!(status.success(), "wait exit status {status}: {}", err.join("\n"));
    // Let the console catch up on the agent's lines, then stop the guest.
    let _ = guest.wait_for("the agent's delivery line", Instant::now() + Duration::from_secs(10), |l| {
        l.contains("ext-talos-agent: talos-agent report: report delivered")
    });
    let lines = guest.lines().to_vec();
    drop(guest);
    (serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json:?}: {e}")), lines, fingerprint, secs)
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn reports_readiness(arch: &str) {
    let test = format!("standin_services_report_readiness_{arch}");
    let Some(s) = setup(&test, arch) else { return };
    for (mode, phase) in [("maintenance", "maintenance_ready"), ("configured", "configured")] {
        let (j, lines, fingerprint, secs) = boot_and_wait(&s, arch, mode, phase);
        eprintln!("{arch} {mode}: wait saw {phase} {secs:.1} s after QEMU started (software emulation)");
        assert_eq!(j["node"], format!("standin-{arch}-{mode}"));
        assert_eq!(j["phase"], phase, "{j}");
        assert_eq!(j["fingerprint"], fingerprint.as_str(), "the fingerprint of the certificate the stand-in served");
        assert_eq!(j["address"], "10.0.2.15");
        assert_eq!(j["talos_version"], "v1.10.5");
        assert_eq!(
            j["extensions"],
            serde_json::json!([
                "spin@v0.19.0",
                "tailscale@1.84.0",
                format!("talos-agent@v{}", env!("CARGO_PKG_VERSION"))
            ])
        );
        assert!(has(&lines, &format!("{MARK} network: eth0 10.0.2.15/24 gateway 10.0.2.2")));
        assert!(has(&lines, &format!("{MARK} ext-tailscale: skipped: waits for service cri")));
        assert!(has(
            &lines,
            &format!("ext-talos-agent: talos-agent report: talos-agent report v{} starting", env!("CARGO_PKG_VERSION"))
        ));
        assert!(has(&lines, &format!("ext-talos-agent: talos-agent report: phase {phase} fingerprint {fingerprint}")));
        // Least privilege: outside board images the service gets the private /dev of every
        // container, not the host's (its spec's mounts are the two read-only files).
        assert!(has(&lines, "ext-talos-agent: mounted /etc/os-release on /etc/os-release (ro)"));
        assert!(
            !has(&lines, "ext-talos-agent: mounted /dev on /dev"),
            "the host's /dev is bound outside a board image"
        );
    }
    let _ = std::fs::remove_dir_all(&s.work);
}

#[test]
fn standin_services_report_readiness_arm64() {
    reports_readiness("arm64");
}
