//! Netboot, the whole chain under QEMU UEFI (issue 14): **UEFI firmware → TFTP → iPXE → matchbox →
//! kernel + initramfs → stand-in Talos → readiness report**, from the netboot directory
//! `imager netboot` generates from an `imager build` output.
//!
//! What is real: edk2's `QEMU_EFI.fd` (Debian's qemu-efi-aarch64) PXE-boots over QEMU's user-mode
//! network, whose built-in DHCP names `ipxe-arm64.efi` and whose built-in TFTP server serves it
//! (Debian trixie's ipxe package, extracted by `scripts/setup` into `target/netboot-peers/` and
//! copied by `imager netboot --ipxe-dir` into `netboot/tftp/`); iPXE runs `autoexec.ipxe` from that
//! TFTP server (our two lines, `dhcp` + `chain http://10.0.2.2:PORT/boot.ipxe`, standing in for the
//! dnsmasq `dhcp-boot=tag:ipxe,…/boot.ipxe` rule of `dnsmasq.conf`, which QEMU's DHCP cannot do);
//! `dnsmasq --test` checks both generated configurations. What is a test server: matchbox
//! ([`moonboot_tests::matchbox`], following poseidon/matchbox v0.11.0's `http/ipxe.go`,
//! `http/parse.go`, `server/server.go`, `storage/storagepb/group.go`, `storage/filestore.go`),
//! serving the generated `matchbox/` directory on the host's loopback (the guest's 10.0.2.2). The
//! booted system is the stand-in Talos init (a TEST PROGRAM) with the build's extensions; its
//! `ext-talos-agent` reports to a real `talos-agent wait` on loopback.
//!
//! Asserted: the console shows iPXE's banner, the EFI stub and the kernel, the stand-in's command
//! line carries the profile's arguments; matchbox saw `/boot.ipxe` → `/ipxe?…&arch=arm64…` →
//! kernel → initrd, in that order, whole files; `wait` saw `maintenance_ready` from 10.0.2.15.
//! The times from QEMU start to iPXE, to the kernel and to `maintenance_ready` are printed
//! (software emulation: many times slower than hardware). Skipped with a reason when the fixtures,
//! QEMU, edk2, iPXE or dnsmasq are missing (a failure under MOONBOOT_REQUIRE_FIXTURES=1). Deadline
//! 10 minutes; QEMU and wait are always killed. Console log:
//! `target/fixtures/logs/netboot-arm64.log`.

use moonboot_tests::fixtures::{fixtures_dir, skip, with_qemu, with_registry, Fixtures};
use moonboot_tests::matchbox::Matchbox;
use moonboot_tests::qemu::have;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MARK: &str = "MOONBOOT-STANDIN-INIT:";
/// edk2 for QEMU's arm64 `virt` machine (Debian's qemu-efi-aarch64).
const EDK2: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// From QEMU start to `maintenance_ready` (software emulation).
const DEADLINE: Duration = Duration::from_secs(600);
/// The static address the profile gives the node (QEMU user networking's guest address).
const IP_ARG: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0:::off";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `scripts/setup` extracts Debian trixie's `ipxe-*.efi`.
fn ipxe_dir() -> PathBuf {
    workspace().join("target/netboot-peers")
}

fn dnsmasq() -> Option<PathBuf> {
    if have("dnsmasq") {
        return Some("dnsmasq".into());
    }
    Some(PathBuf::from("/usr/sbin/dnsmasq")).filter(|p| p.is_file())
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's release `imager` and `talos-agent` and an `imager build --arch arm64` output in
/// `work/out` (against the fixture registry, with the static arm64 talos-agent).
struct Built {
    imager: PathBuf,
    agent: PathBuf,
    out: PathBuf,
}

fn build(f: &Fixtures, work: &Path) -> Built {
    let (imager, agent) = moonboot_tests::demo::host_binaries().expect("building imager and talos-agent");
    let agent_arm64 = moonboot_tests::stage1::build_static_agent("arm64").expect("building the arm64 talos-agent");
    let out = work.join("out");
    let t = Instant::now();
    run(
        moonboot_tests::demo::fixture_build(&imager, f, &agent_arm64)
            .arg("--ipxe-dir")
            .arg(ipxe_dir())
            .arg("--output")
            .arg(&out),
        "imager build",
    );
    eprintln!("imager build --arch arm64: {:.1} s", t.elapsed().as_secs_f64());
    Built { imager, agent, out }
}

fn work_dir(test: &str) -> PathBuf {
    let w = fixtures_dir().join("tmp").join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&w);
    std::fs::create_dir_all(&w).unwrap();
    w
}

/// (a) Both dnsmasq configurations — of the netboot directory `imager build` writes and of one
/// `imager netboot` writes — pass `dnsmasq --test`, and chain iPXE to matchbox's `/boot.ipxe`.
#[test]
fn generated_dnsmasq_configs_pass_dnsmasq_test() {
    let test = "generated_dnsmasq_configs_pass_dnsmasq_test";
    let Some(f) = with_registry(test) else { return };
    let Some(dnsmasq) = dnsmasq() else {
        skip(test, "dnsmasq (Debian's dnsmasq-base) is not installed (run scripts/setup)");
        return;
    };
    let work = work_dir("netboot-dnsmasq");
    let b = build(&f, &work);
    let netboot = work.join("netboot");
    run(
        Command::new(&b.imager)
            .args(["netboot", "--from"])
            .arg(&b.out)
            .arg("--output")
            .arg(&netboot)
            .args(["--matchbox-url", "http://192.0.2.10:8080", "--report", "http://192.0.2.10:8090/v1/report"])
            .args(["--report-token", "t0k3n"]),
        "imager netboot",
    );
    for dir in [b.out.join("netboot"), netboot] {
        for name in ["dnsmasq.conf", "dnsmasq-proxy.conf"] {
            let conf = dir.join(name);
            let text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
            let o =
                Command::new(&dnsmasq).arg("--test").arg(format!("--conf-file={}", conf.display())).output().unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success(), "dnsmasq --test {}: {said}\n{text}", conf.display());
            assert!(said.contains("syntax check OK"), "{said}");
            assert!(text.contains("ipxe-arm64.efi"), "{}: names ipxe-arm64.efi:\n{text}", conf.display());
            assert!(
                text.lines().any(|l| l.starts_with("dhcp-boot=tag:ipxe,") && l.ends_with("/boot.ipxe")),
                "{}: iPXE is chained to matchbox's /boot.ipxe:\n{text}",
                conf.display()
            );
            eprintln!("dnsmasq --test {}: {}", conf.display(), said.trim());
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A console marker: its name and how to recognise its line.
type Marker = (&'static str, fn(&str) -> bool);

/// Kills the child on drop.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a reader, each with the instant it arrived, on a channel.
fn lines_of(r: impl Read + Send + 'static, prefix: &'static str, log: Option<File>) -> Receiver<(Instant, String)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut log = log;
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let line = format!("{prefix}{}", String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']));
            if let Some(l) = log.as_mut() {
                let _ = writeln!(l, "{line}");
            }
            // Keep draining when nobody listens any more, so the writer never blocks.
            let _ = tx.send((Instant::now(), line));
            buf.clear();
        }
    });
    rx
}

/// A running `talos-agent wait --json` on 127.0.0.1 (any free port).
struct Wait {
    _child: Killed,
    port: u16,
    stdout: Receiver<(Instant, String)>,
    stderr: Receiver<(Instant, String)>,
}

fn start_wait(bin: &Path, token: &str) -> Wait {
    let mut child = Command::new(bin)
        .args(["wait", "--listen", "127.0.0.1:0", "--token", token, "--nodes", "1", "--until", "maintenance_ready"])
        .args(["--json", "--timeout"])
        .arg(format!("{}s", DEADLINE.as_secs() + 60))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting talos-agent wait");
    let stdout = lines_of(child.stdout.take().unwrap(), "", None);
    let stderr = lines_of(child.stderr.take().unwrap(), "", None);
    let child = Killed(child);
    let (_, first) = stderr.recv_timeout(Duration::from_secs(30)).expect("wait prints where it listens");
    let port = moonboot_tests::demo::wait_listening_address(&first).unwrap_or_else(|e| panic!("{e:#}")).port();
    Wait { _child: child, port, stdout, stderr }
}

fn token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("moonboot-netboot-{}-{nanos}", std::process::id())
}

/// (b) The chain, arm64: edk2 → TFTP → iPXE → matchbox → kernel + initramfs → stand-in Talos →
/// `talos-agent wait` sees `maintenance_ready`.
#[test]
fn netboot_chain_under_qemu_uefi_reaches_maintenance_ready_arm64() {
    let test = "netboot_chain_under_qemu_uefi_reaches_maintenance_ready_arm64";
    let Some(f) = with_registry(test) else { return };
    let Some(a) = with_qemu(test, &f, "arm64") else { return };
    if !Path::new(EDK2).is_file() {
        skip(test, &format!("{EDK2} is absent (Debian's qemu-efi-aarch64; run scripts/setup)"));
        return;
    }
    if !ipxe_dir().join("ipxe-arm64.efi").is_file() {
        skip(test, "target/netboot-peers/ipxe-arm64.efi is absent (Debian trixie's ipxe; run scripts/setup)");
        return;
    }
    let work = work_dir("netboot-chain");
    let b = build(&f, &work);

    // The collector, then the netboot directory pointing the profile's report at it.
    let token = token();
    let wait = start_wait(&b.agent, &token);
    let netboot = work.join("netboot");
    let report = format!("http://10.0.2.2:{}/v1/report", wait.port);
    let extra = [
        IP_ARG,
        // The stand-in keeps running (and serving apid) after `ready`; a panic ends QEMU.
        "standin.hold",
        "panic=-1",
        // The build's metal line ends with console=tty0 (Talos's default): the last console= is
        // /dev/console, where the stand-in prints; this machine has only the serial port.
        "-console=tty0",
        "talos_agent.node=netboot-arm64",
    ];
    let mut cmd = Command::new(&b.imager);
    cmd.args(["netboot", "--arch", "arm64", "--from"])
        .arg(&b.out)
        .arg("--output")
        .arg(&netboot)
        .arg("--ipxe-dir")
        .arg(ipxe_dir())
        .args(["--report", &report, "--report-token", &token]);
    for e in extra {
        cmd.arg(format!("--extra-kernel-arg={e}"));
    }
    run(&mut cmd, "imager netboot");
    let profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(netboot.join("matchbox/profiles/talos-arm64.json")).unwrap()).unwrap();
    let boot = &profile["boot"];
    let kernel_path = boot["kernel"].as_str().expect("profile boot.kernel").to_string();
    let initrd_paths: Vec<String> =
        boot["initrd"].as_array().expect("profile boot.initrd").iter().map(|v| v.as_str().unwrap().into()).collect();
    let args: Vec<String> =
        boot["args"].as_array().expect("profile boot.args").iter().map(|v| v.as_str().unwrap().into()).collect();
    for want in
        ["talos.platform=metal", "console=ttyAMA0", IP_ARG, "standin.hold", &format!("talos_agent.report={report}")]
    {
        assert!(args.iter().any(|a| a == want), "profile args {args:?} lack {want}");
    }
    assert!(!args.iter().any(|a| a == "console=tty0"), "{args:?}");

    // matchbox over the generated data directory; QEMU's TFTP root = netboot/tftp + autoexec.ipxe.
    let matchbox = Matchbox::start(&netboot.join("matchbox")).unwrap();
    let tftp = work.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    for e in std::fs::read_dir(netboot.join("tftp")).expect("netboot/tftp/") {
        let e = e.unwrap();
        std::fs::copy(e.path(), tftp.join(e.file_name())).unwrap();
    }
    assert!(tftp.join("ipxe-arm64.efi").is_file(), "imager netboot copied ipxe-arm64.efi into tftp/");
    std::fs::write(
        tftp.join("autoexec.ipxe"),
        format!(
            "#!ipxe\necho moonboot test: autoexec.ipxe\ndhcp\nchain http://10.0.2.2:{}/boot.ipxe\n",
            matchbox.port()
        ),
    )
    .unwrap();

    let log_path = fixtures_dir().join("logs").join("netboot-arm64.log");
    std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
    let mut qemu = Command::new(&a.qemu_binary);
    qemu.args(["-M", "virt", "-cpu", "cortex-a57", "-m", "1024", "-nographic", "-no-reboot", "-bios", EDK2])
        .arg("-netdev")
        .arg(format!("user,id=n0,tftp={},bootfile=ipxe-arm64.efi", tftp.display()))
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut log = File::create(&log_path).unwrap();
    writeln!(log, "# {qemu:?}").unwrap();
    let start = Instant::now();
    let mut child = qemu.spawn().expect("starting qemu-system-aarch64");
    let console = lines_of(child.stdout.take().unwrap(), "", Some(log.try_clone().unwrap()));
    let qemu_err = lines_of(child.stderr.take().unwrap(), "[qemu stderr] ", Some(log));
    let mut qemu = Killed(child);
    let deadline = start + DEADLINE;

    // Markers, in the order they appear, with the first instant each was seen.
    let markers: [Marker; 6] = [
        ("edk2 PXE", |l: &str| l.contains("Start PXE over IPv4")),
        ("iPXE banner", |l: &str| l.contains("iPXE") && l.contains("Open Source Network Boot Firmware")),
        ("EFI stub", |l: &str| l.contains("EFI stub: Booting Linux Kernel")),
        ("kernel", |l: &str| l.contains("Booting Linux on physical CPU")),
        ("stand-in cmdline", |l: &str| l.contains(&format!("{MARK} cmdline="))),
        ("stand-in apid", |l: &str| l.contains(&format!("{MARK} apid fingerprint="))),
    ];
    let mut seen_at: Vec<Option<Instant>> = vec![None; markers.len()];
    let mut lines: Vec<String> = Vec::new();
    let fail = |l: &str| {
        l.contains(&format!("{MARK} error:"))
            || l.contains(&format!("{MARK} ext-talos-agent: not started"))
            || l.contains(&format!("{MARK} ext-talos-agent: cannot start"))
            || l.contains("Kernel panic")
            // iPXE's errors end with their explanation URL in parentheses.
            || l.contains("(https://ipxe.org/")
    };
    let tail = |lines: &[String]| lines[lines.len().saturating_sub(30)..].join("\n");
    let (json, ready_at) = loop {
        match console.recv_timeout(Duration::from_millis(200)) {
            Ok((at, line)) => {
                for (i, (_, pred)) in markers.iter().enumerate() {
                    if seen_at[i].is_none() && pred(&line) {
                        seen_at[i] = Some(at);
                    }
                }
                let bad = fail(&line);
                lines.push(line);
                assert!(!bad, "the chain failed; console log {}:\n{}", log_path.display(), tail(&lines));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let err: Vec<String> = qemu_err.try_iter().map(|(_, l)| l).collect();
                panic!("QEMU exited; console log {}:\n{}\n{}", log_path.display(), tail(&lines), err.join("\n"));
            }
        }
        if let Ok((at, line)) = wait.stdout.try_recv() {
            break (line, at);
        }
        if let Ok(Some(st)) = qemu.0.try_wait() {
            // Drain what is left, then report.
            lines.extend(console.try_iter().map(|(_, l)| l));
            panic!("QEMU exited ({st}); console log {}:\n{}", log_path.display(), tail(&lines));
        }
        assert!(
            Instant::now() < deadline,
            "no maintenance_ready within {DEADLINE:?}; matchbox saw {:?}; console log {}:\n{}",
            matchbox.requests().iter().map(|r| format!("{} {} {}", r.method, r.target, r.status)).collect::<Vec<_>>(),
            log_path.display(),
            tail(&lines)
        );
    };
    // Let the agent's delivery line reach the console, then stop the VM.
    let until = Instant::now() + Duration::from_secs(10);
    while let Ok((_, line)) = console.recv_timeout(until.saturating_duration_since(Instant::now())) {
        let done = line.contains("ext-talos-agent: talos-agent report: report delivered");
        lines.push(line);
        if done {
            break;
        }
    }
    drop(qemu);
    let wait_err: Vec<String> = wait.stderr.try_iter().map(|(_, l)| l).collect();

    // What wait received.
    let j: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("wait printed {json:?}: {e}"));
    assert_eq!(j["phase"], "maintenance_ready", "{j}\n{}", wait_err.join("\n"));
    assert_eq!(j["node"], "netboot-arm64", "{j}");
    assert_eq!(j["address"], "10.0.2.15", "{j}");
    assert_eq!(j["talos_version"], "v1.10.5", "{j}");
    let ext: Vec<&str> = j["extensions"].as_array().expect("extensions").iter().filter_map(|e| e.as_str()).collect();
    assert!(ext.iter().any(|e| e.starts_with("talos-agent@")), "{ext:?}");

    // Every marker, in order.
    for (i, (name, _)) in markers.iter().enumerate() {
        assert!(seen_at[i].is_some(), "no {name} on the console (log {})", log_path.display());
    }
    let at: Vec<Instant> = seen_at.iter().map(|t| t.unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "markers out of order (log {})", log_path.display());
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("moonboot test: autoexec.ipxe"), "iPXE ran autoexec.ipxe from the TFTP server");
    // iPXE hands the initramfs to the kernel's EFI stub through the LoadFile2 protocol (no
    // `initrd=` argument needed).
    assert!(has("EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path"), "log {}", log_path.display());
    let served = lines
        .iter()
        .find_map(|l| l.split(&format!("{MARK} apid fingerprint=")).nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert_eq!(j["fingerprint"], served, "the reported fingerprint is the stand-in apid's");

    // The stand-in's command line carries the profile's arguments.
    let cmdline = lines.iter().find(|l| l.contains(&format!("{MARK} cmdline="))).unwrap();
    let tokens: Vec<&str> = cmdline.split("cmdline=").nth(1).unwrap().split_whitespace().collect();
    for arg in &args {
        assert!(tokens.contains(&arg.as_str()), "{arg} (profile) not on the kernel command line: {cmdline}");
    }

    // matchbox saw the chain, in order.
    let reqs = matchbox.requests();
    let seen: Vec<(String, String, u16)> = reqs.iter().map(|r| (r.method.clone(), r.path.clone(), r.status)).collect();
    let mut want = vec![
        ("GET".to_string(), "/boot.ipxe".to_string(), 200),
        ("GET".to_string(), "/ipxe".to_string(), 200),
        ("GET".to_string(), kernel_path.clone(), 200),
    ];
    want.extend(initrd_paths.iter().map(|p| ("GET".to_string(), p.clone(), 200)));
    assert_eq!(seen, want, "matchbox requests: {reqs:#?}");
    let ipxe = &reqs[1];
    assert!(ipxe.target.starts_with("/ipxe?uuid="), "{}", ipxe.target);
    assert!(ipxe.target.contains("&arch=arm64"), "{}", ipxe.target);
    assert_eq!(ipxe.labels.get("arch").map(String::as_str), Some("arm64"));
    assert_eq!(ipxe.labels.get("mac").map(String::as_str), Some("52:54:00:12:34:56"), "QEMU's default MAC, normalised");
    let assets = netboot.join("matchbox");
    for r in &reqs[2..] {
        let size = std::fs::metadata(assets.join(r.path.trim_start_matches('/'))).unwrap().len();
        assert_eq!(r.bytes, size, "{} sent whole", r.path);
    }

    // The times the issue asks for.
    let secs = |t: Instant| t.duration_since(start).as_secs_f64();
    eprintln!("netboot arm64 (QEMU TCG, software emulation; cortex-a57, 1 GiB):");
    for (i, (name, _)) in markers.iter().enumerate() {
        eprintln!("  QEMU start → {name:<17} {:>6.1} s", secs(at[i]));
    }
    eprintln!("  QEMU start → maintenance_ready {:>6.1} s (wait's report)", secs(ready_at));
    for r in &reqs {
        eprintln!(
            "  matchbox {:>6.1} s  {} {} → {} ({} bytes in {:.1} s)",
            secs(r.at),
            r.method,
            r.target,
            r.status,
            r.bytes,
            r.done.duration_since(r.at).as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
