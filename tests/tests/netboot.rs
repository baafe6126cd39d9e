//! Netboot for real, the whole chain under QEMU UEFI on a boot network of its own: **UEFI firmware
//! → DHCP (dnsmasq) → TFTP `ipxe-<arch>.efi` (dnsmasq) → iPXE → DHCP again → matchbox
//! `/boot.ipxe` → the machine's group and profile → kernel + initramfs → stand-in Talos →
//! `maintenance_ready` at `talos-agent wait`**, several machines at once, from the netboot
//! directory `imager netboot` writes for an `imager build` output (arm64 and amd64).
//!
//! The boot network: a network namespace the test creates, holding a bridge with the bastion's
//! address 10.20.13.140/24 and one tap device per machine; [`Netns::check_isolated`] refuses to
//! run unless every interface stays inside the machine and no route has a gateway. QEMU runs in
//! it with `-netdev tap` (no user-mode network: no QEMU DHCP or TFTP). The two variants of the
//! generated configuration, each served by Debian's dnsmasq (dnsmasq-base) exactly as generated
//! with the default network flags (the `docs/netboot.md` set-up), except `tftp-root`:
//! - **full DHCP** (`dnsmasq.conf`): dnsmasq hands out the addresses, TFTP and the iPXE chain.
//!   Three arm64 machines (edk2, Debian's qemu-efi-aarch64) named with `imager netboot --node`
//!   — two control-plane nodes and a worker, each selected by its per-MAC matchbox group — and an
//!   amd64 machine (OVMF, Debian's ovmf) on the architecture's group.
//! - **proxy DHCP** (`dnsmasq-proxy.conf`): a second dnsmasq plays the VPC's DHCP server on a
//!   veth port of the same bridge (10.20.13.1, range .50–.90) and hands out the addresses; the
//!   generated one adds only boot information. One arm64 and one amd64 machine.
//!
//! Real: dnsmasq, edk2, OVMF, iPXE (Debian trixie's, copied by `imager netboot --ipxe-dir` into
//! `tftp/`), QEMU, the build's kernel and initramfs, `talos-agent report` in the booted system and
//! `talos-agent wait`. A test server: matchbox ([`moonboot_tests::matchbox`], following
//! poseidon/matchbox v0.11.0's `http/ipxe.go`, `http/parse.go`, `server/server.go`,
//! `storage/storagepb/group.go`, `storage/filestore.go`), on the host's loopback and reached at
//! 10.20.13.140:8080 through a forwarder bound in the namespace. The booted system is the stand-in
//! Talos init (a TEST PROGRAM): it takes its address from `ip=`, which the profiles fill from
//! iPXE's own DHCP lease (`ip=${ip}::${gateway}:${netmask}:::off`, expanded by iPXE), where Talos
//! would run its own DHCP client.
//!
//! Asserted for every machine: the address `wait` reports is the one the serving DHCP server's
//! lease file gives its MAC (and proxy DHCP leased nothing); dnsmasq sent it `ipxe-<arch>.efi`
//! over TFTP; matchbox saw its `/ipxe` request with its MAC and architecture, and the kernel and
//! initramfs whole; its console shows firmware PXE → iPXE → kernel → the stand-in, in order, and a
//! command line with the iPXE-expanded address and its role (`talos_agent.role=` for the named
//! nodes, none otherwise); `wait --nodes N` exits 0 with every node `maintenance_ready`, running
//! the build's Talos version and extensions, and the role its profile gave it. The times from QEMU start to each phase are printed
//! per machine (software emulation, several machines sharing the CPUs).
//!
//! Skipped with a reason when the fixtures, QEMU, edk2, OVMF, iPXE, dnsmasq or root are missing
//! (a failure under MOONBOOT_REQUIRE_FIXTURES=1). Deadline 10 minutes; QEMU, dnsmasq and wait are
//! always killed. Logs: `target/fixtures/logs/netboot-<variant>-<mac>.log` (consoles),
//! `netboot-<variant>-dnsmasq*.log`, `netboot-<variant>-wait.log`.

use moonboot_tests::demo::{Killed, Waiter};
use moonboot_tests::fixtures::{fixtures_dir, skip, with_qemu, with_registry, Fixtures};
use moonboot_tests::matchbox::Matchbox;
use moonboot_tests::netns::{forward, Netns};
use moonboot_tests::qemu::{have, Guest};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MARK: &str = "MOONBOOT-STANDIN-INIT:";
/// edk2 for QEMU's arm64 `virt` machine (Debian's qemu-efi-aarch64).
const EDK2: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// OVMF, edk2 for QEMU's x86-64 machines (Debian's ovmf).
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// The bastion's address on the boot network (the default flags of `imager netboot`).
const BASTION: &str = "10.20.13.140";
/// The VPC's DHCP server of the proxy variant, and its range.
const VPC_DHCP: &str = "10.20.13.1";
const VPC_RANGE: &str = "10.20.13.50,10.20.13.90,255.255.255.0,12h";
/// From the first QEMU start to the last `maintenance_ready` (software emulation, all machines
/// sharing two CPUs).
const DEADLINE: Duration = Duration::from_secs(600);
/// The operator's goal for a node, from power-on to maintenance mode.
const GOAL: Duration = Duration::from_secs(300);
/// Kernel arguments the test adds to every profile.
const EXTRA: [&str; 5] = [
    // The address iPXE's DHCP got, for the stand-in (Talos runs its own DHCP client instead).
    "ip=${ip}::${gateway}:${netmask}:::off",
    // Each node's name in its report: its MAC, as iPXE writes it with hyphens.
    "talos_agent.node=${mac:hexhyp}",
    // The stand-in keeps running (and serving apid) after `ready`; a panic ends QEMU.
    "standin.hold",
    "panic=-1",
    // The build's metal line ends with console=tty0 (Talos's default): the last console= is
    // /dev/console, where the stand-in prints; these machines show only the serial port.
    "-console=tty0",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `scripts/setup` extracts Debian trixie's `ipxe-*.efi`.
fn ipxe_dir() -> PathBuf {
    workspace().join("target/netboot-peers")
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

fn work_dir(test: &str) -> PathBuf {
    let w = fixtures_dir().join("tmp").join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&w);
    std::fs::create_dir_all(&w).unwrap();
    // dnsmasq's TFTP refuses any path with `..` in it, the root's included.
    std::fs::canonicalize(&w).unwrap()
}

/// One machine of a test: its architecture, MAC address and the role `--node` gave it.
#[derive(Clone, Copy)]
struct Machine {
    arch: &'static str,
    mac: &'static str,
    role: Option<&'static str>,
}

impl Machine {
    /// The node name iPXE's `${mac:hexhyp}` makes of the MAC.
    fn name(&self) -> String {
        self.mac.replace(':', "-")
    }
}

const FULL: [Machine; 4] = [
    Machine { arch: "arm64", mac: "52:54:00:00:00:11", role: Some("controlplane") },
    Machine { arch: "arm64", mac: "52:54:00:00:00:12", role: Some("controlplane") },
    Machine { arch: "arm64", mac: "52:54:00:00:00:13", role: Some("worker") },
    Machine { arch: "amd64", mac: "52:54:00:00:00:21", role: None },
];
const PROXY: [Machine; 2] = [
    Machine { arch: "arm64", mac: "52:54:00:00:00:31", role: None },
    Machine { arch: "amd64", mac: "52:54:00:00:00:41", role: None },
];

/// What both tests share: the host's `talos-agent` (for `wait`), the report token and the netboot
/// directory, made once per process.
struct Shared {
    agent: PathBuf,
    token: String,
    netboot: PathBuf,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// `imager build` for arm64 and amd64 into one output, then `imager netboot` with the default
/// network flags, the readiness collector at 10.20.13.140:8090, the three named arm64 machines
/// (`--node`) and [`EXTRA`]. The amd64 profile comes from a second `imager netboot --arch amd64`
/// that adds `console=ttyS0` (x86's serial port; Talos's amd64 metal line has only
/// `console=tty0`), copied over the first one's, as an operator edits a profile.
fn shared(f: &Fixtures) -> &'static Shared {
    SHARED.get_or_init(|| {
        let work = work_dir("netboot-build");
        let (imager, agent) = moonboot_tests::demo::host_binaries().expect("building imager and talos-agent");
        let out = work.join("out");
        for arch in ["arm64", "amd64"] {
            let static_agent = moonboot_tests::stage1::build_static_agent(arch).expect("building talos-agent");
            let t = Instant::now();
            let mut cmd = Command::new(&imager);
            cmd.args(["build", "--arch", arch, "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
                .arg("--agent-binary")
                .arg(&static_agent)
                .arg("--ipxe-dir")
                .arg(ipxe_dir())
                .arg("--output")
                .arg(&out);
            run(&mut cmd, "imager build");
            eprintln!("imager build --arch {arch}: {:.1} s", t.elapsed().as_secs_f64());
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let token = format!("moonboot-netboot-{}-{nanos}", std::process::id());
        let netboot_cmd = |dir: &Path, arch: Option<&str>, more: &[&str]| {
            let mut cmd = Command::new(&imager);
            cmd.args(["netboot", "--from"]).arg(&out).arg("--output").arg(dir).arg("--ipxe-dir").arg(ipxe_dir());
            cmd.args(["--report", &format!("http://{BASTION}:8090/v1/report"), "--report-token", &token]);
            if let Some(a) = arch {
                cmd.args(["--arch", a]);
            }
            for m in FULL.iter().filter(|m| m.role.is_some()) {
                cmd.arg(format!("--node={}={}", m.mac, m.role.unwrap()));
            }
            for e in EXTRA.iter().chain(more) {
                cmd.arg(format!("--extra-kernel-arg={e}"));
            }
            run(&mut cmd, "imager netboot");
        };
        let netboot = work.join("netboot");
        netboot_cmd(&netboot, None, &[]);
        let amd64 = work.join("netboot-amd64");
        netboot_cmd(&amd64, Some("amd64"), &["console=ttyS0"]);
        for e in std::fs::read_dir(amd64.join("matchbox/profiles")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), netboot.join("matchbox/profiles").join(e.file_name())).unwrap();
        }
        Shared { agent, token, netboot }
    })
}

/// Which configuration the bastion's dnsmasq runs.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Full,
    Proxy,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Proxy => "proxy",
        }
    }
}

/// The boot network of one test, with its servers running.
struct Lan {
    ns: Netns,
    _dnsmasq: Vec<Killed>,
    /// dnsmasq's log (the generated configuration's instance).
    dnsmasq_log: PathBuf,
    /// The lease file of the DHCP server that hands out addresses.
    leases: PathBuf,
    /// The generated instance's own lease file (proxy DHCP: must stay empty).
    bastion_leases: PathBuf,
    matchbox: Matchbox,
    wait: Waiter,
}

/// Starts a dnsmasq in the namespace, logging to `log`, and waits until it has bound `iface`.
fn start_dnsmasq(ns: &Netns, args: &[String], iface: &str, log: &Path) -> Killed {
    let file = File::create(log).unwrap();
    let child = ns
        .command("dnsmasq")
        .args(["--keep-in-foreground", "--bind-interfaces", "--log-facility=-", "--pid-file"])
        // Stays root in this throwaway namespace: the checkout may sit under a directory the
        // `nobody` dnsmasq drops to cannot enter (TFTP still serves only world-readable files).
        .arg("--user=root")
        .arg(format!("--interface={iface}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starting dnsmasq");
    let child = Killed(child);
    let bound = format!("sockets bound exclusively to interface {iface}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(&bound) {
            return child;
        }
        assert!(Instant::now() < deadline, "dnsmasq did not bind {iface} within 30 s; {}:\n{text}", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_lan(s: &Shared, variant: Variant, machines: &[Machine], work: &Path) -> Lan {
    let logs = fixtures_dir().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ns = Netns::create(&format!("netboot-{}", variant.name()), &[]).expect("creating the boot network's namespace");
    ns.add_bridge("br0", &format!("{BASTION}/24")).unwrap();
    for i in 0..machines.len() {
        ns.add_tap(&format!("tap{i}"), "br0").unwrap();
    }
    if variant == Variant::Proxy {
        ns.add_veth("vpc0", "vpc1", "br0", &format!("{VPC_DHCP}/24")).unwrap();
    }
    ns.check_isolated().unwrap();

    // The generated configuration, with its TFTP root where the test copied netboot/tftp/.
    let tftp = work.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    for e in std::fs::read_dir(s.netboot.join("tftp")).expect("netboot/tftp/") {
        let e = e.unwrap();
        std::fs::copy(e.path(), tftp.join(e.file_name())).unwrap();
    }
    let name = if variant == Variant::Full { "dnsmasq.conf" } else { "dnsmasq-proxy.conf" };
    let generated = std::fs::read_to_string(s.netboot.join(name)).unwrap();
    assert_eq!(generated.lines().filter(|l| l.starts_with("tftp-root=")).count(), 1, "{name}:\n{generated}");
    let conf: String = generated
        .lines()
        .map(|l| if l.starts_with("tftp-root=") { format!("tftp-root={}\n", tftp.display()) } else { format!("{l}\n") })
        .collect();
    let conf_path = work.join(name);
    std::fs::write(&conf_path, conf).unwrap();

    let mut dnsmasq = Vec::new();
    let bastion_leases = work.join("bastion.leases");
    let dnsmasq_log = logs.join(format!("netboot-{}-dnsmasq.log", variant.name()));
    dnsmasq.push(start_dnsmasq(
        &ns,
        &[format!("--conf-file={}", conf_path.display()), format!("--dhcp-leasefile={}", bastion_leases.display())],
        "br0",
        &dnsmasq_log,
    ));
    let leases = if variant == Variant::Proxy {
        let vpc_leases = work.join("vpc.leases");
        dnsmasq.push(start_dnsmasq(
            &ns,
            &[
                "--port=0".into(),
                format!("--dhcp-range={VPC_RANGE}"),
                format!("--dhcp-leasefile={}", vpc_leases.display()),
            ],
            "vpc1",
            &logs.join("netboot-proxy-dnsmasq-vpc.log"),
        ));
        vpc_leases
    } else {
        bastion_leases.clone()
    };

    // matchbox and wait on the host's loopback, reached at the bastion's address.
    let matchbox = Matchbox::start(&s.netboot.join("matchbox")).unwrap();
    let at = |port: u16| SocketAddr::from((BASTION.parse::<std::net::Ipv4Addr>().unwrap(), port));
    forward(ns.bind(at(8080)).unwrap(), SocketAddr::from(([127, 0, 0, 1], matchbox.port())));
    let wait_log = logs.join(format!("netboot-{}-wait.log", variant.name()));
    let timeout = format!("{}s", DEADLINE.as_secs() + 60);
    let wait = Waiter::start(&s.agent, &s.token, machines.len(), "maintenance_ready", &timeout, &wait_log)
        .unwrap_or_else(|e| panic!("{e:#}"));
    forward(ns.bind(at(8090)).unwrap(), wait.addr);
    Lan { ns, _dnsmasq: dnsmasq, dnsmasq_log, leases, bastion_leases, matchbox, wait }
}

/// A console marker: its name and how to recognise its line.
type Marker = (&'static str, fn(&str) -> bool);

fn markers(arch: &str) -> Vec<Marker> {
    let mut m: Vec<Marker> = vec![
        ("firmware PXE", |l: &str| l.contains("Start PXE over IPv4")),
        ("iPXE", |l: &str| l.contains("iPXE") && l.contains("Open Source Network Boot Firmware")),
    ];
    if arch == "arm64" {
        // The generic EFI stub (arm64) says so; x86's own stub is silent.
        m.push(("EFI stub", |l: &str| l.contains("EFI stub: Booting Linux Kernel")));
    }
    m.push(("kernel", |l: &str| l.contains("Linux version")));
    m.push(("stand-in cmdline", |l: &str| l.contains(&format!("{MARK} cmdline="))));
    m.push(("stand-in apid", |l: &str| l.contains(&format!("{MARK} apid fingerprint="))));
    m
}

/// A running machine and what its console showed.
struct Booting {
    m: Machine,
    guest: Guest,
    log: PathBuf,
    markers: Vec<Marker>,
    start: Instant,
}

fn boot(lan: &Lan, f: &Fixtures, variant: Variant, index: usize, m: Machine) -> Booting {
    let mut cmd = lan.ns.command(&f.arches[m.arch].qemu_binary);
    if m.arch == "arm64" {
        cmd.args(["-M", "virt", "-cpu", "cortex-a57", "-bios", EDK2]);
    } else {
        cmd.args(["-M", "q35", "-bios", OVMF]);
    }
    cmd.args(["-m", "1024", "-nographic", "-no-reboot"])
        .arg("-netdev")
        .arg(format!("tap,id=n0,ifname=tap{index},script=no,downscript=no"))
        // romfile=: the firmware's own virtio-net driver and PXE, not QEMU's iPXE option ROM.
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,romfile=,mac={}", m.mac));
    let log = fixtures_dir().join("logs").join(format!("netboot-{}-{}.log", variant.name(), m.name()));
    let start = Instant::now();
    let guest = Guest::spawn(cmd, &log).unwrap_or_else(|e| panic!("{}: {e:#}", m.mac));
    Booting { m, guest, log, markers: markers(m.arch), start }
}

impl Booting {
    /// Takes the console's new lines; panics on a failure line or when QEMU exited.
    fn poll(&mut self) {
        let new = self.guest.drain().unwrap_or_else(|e| panic!("{}: {e:#}", self.m.mac));
        let bad = new.iter().find(|line| {
            line.contains(&format!("{MARK} error:"))
                || line.contains(&format!("{MARK} ext-talos-agent: not started"))
                || line.contains(&format!("{MARK} ext-talos-agent: cannot start"))
                || line.contains("Kernel panic")
                // The firmware found nothing to boot and started its shell.
                || line.contains("startup.nsh")
                // iPXE giving up (its statistics lines and the look for an `autoexec.ipxe` carry
                // error URLs too, and are not failures).
                || line.contains("Could not boot")
                || line.contains("Could not start download")
                || line.contains("No more network devices")
                || line.contains("No configuration methods succeeded")
        });
        let bad = bad.cloned();
        if let Some(bad) = bad {
            let lines = self.guest.lines();
            panic!(
                "{}: the chain failed at {bad:?}; console log {}:\n{}",
                self.m.mac,
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }

    /// When each marker's first line arrived.
    fn seen_at(&self) -> Vec<Option<Instant>> {
        self.markers.iter().map(|(_, pred)| self.guest.first_at(pred)).collect()
    }
}

/// `MAC → address` from a dnsmasq lease file (`EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID` per line).
fn leases(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn netboot_machines(test: &str, variant: Variant, machines: &[Machine]) {
    let Some(f) = with_registry(test) else { return };
    for arch in ["arm64", "amd64"] {
        if with_qemu(test, &f, arch).is_none() {
            return;
        }
    }
    for (path, what) in
        [(EDK2, "Debian's qemu-efi-aarch64"), (OVMF, "Debian's ovmf"), ("/usr/sbin/dnsmasq", "Debian's dnsmasq-base")]
    {
        if !Path::new(path).is_file() {
            skip(test, &format!("{path} is absent ({what}; run scripts/setup)"));
            return;
        }
    }
    for arch in ["arm64", "amd64"] {
        if !ipxe_dir().join(format!("ipxe-{arch}.efi")).is_file() {
            skip(
                test,
                &format!("target/netboot-peers/ipxe-{arch}.efi is absent (Debian trixie's ipxe; run scripts/setup)"),
            );
            return;
        }
    }
    if !nix::unistd::geteuid().is_root() || !have("ip") {
        skip(test, "needs root and iproute2 (a network namespace with a bridge and tap devices)");
        return;
    }
    let s = shared(&f);
    let work = work_dir(&format!("netboot-{}", variant.name()));
    let mut lan = start_lan(s, variant, machines, &work);

    let first = Instant::now();
    let mut nodes: Vec<Booting> = machines.iter().enumerate().map(|(i, m)| boot(&lan, &f, variant, i, *m)).collect();
    let deadline = first + DEADLINE;
    let status = loop {
        std::thread::sleep(Duration::from_millis(100));
        for n in &mut nodes {
            n.poll();
        }
        // Once wait exited, poll has read its pipes to their end.
        if let Some(status) = lan.wait.poll().expect("waiting for talos-agent wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "not every node reached maintenance_ready within {DEADLINE:?}; wait's log {}; consoles:\n{}",
            lan.wait.log.display(),
            nodes.iter().map(|n| format!("{}: {}", n.m.mac, n.log.display())).collect::<Vec<_>>().join("\n")
        );
    };
    assert!(status.success(), "talos-agent wait failed ({status}): its log {}", lan.wait.log.display());
    // What the consoles printed meanwhile (markers included).
    for n in &mut nodes {
        n.poll();
    }
    let requests = lan.matchbox.requests();
    let dnsmasq_log = std::fs::read_to_string(&lan.dnsmasq_log).unwrap();
    let leased = leases(&lan.leases);
    let json = &lan.wait.nodes;
    let reports: BTreeMap<String, &serde_json::Value> =
        json.iter().map(|j| (j["node"].as_str().unwrap_or_default().to_string(), j)).collect();
    assert_eq!(reports.len(), machines.len(), "one report per machine: {json:#?}");
    if variant == Variant::Proxy {
        assert!(leases(&lan.bastion_leases).is_empty(), "proxy DHCP handed out no address");
    }

    let profiles = s.netboot.join("matchbox/profiles");
    for n in &nodes {
        let m = n.m;
        let j = reports.get(&m.name()).unwrap_or_else(|| panic!("no report from {} in {json:#?}", m.name()));
        assert_eq!(j["phase"], "maintenance_ready", "{j}");
        assert_eq!(j["talos_version"], "v1.10.5", "{j}");
        assert_eq!(j["role"], m.role.map_or(serde_json::Value::Null, |r| r.into()), "{}: {j}", m.mac);
        let ext: Vec<&str> =
            j["extensions"].as_array().expect("extensions").iter().filter_map(|e| e.as_str()).collect();
        assert!(ext.iter().any(|e| e.starts_with("talos-agent@")), "{ext:?}");
        // The address: the one the serving DHCP server leased to this MAC.
        let address = leased.get(m.mac).unwrap_or_else(|| panic!("{}: no lease in {}", m.mac, lan.leases.display()));
        assert_eq!(j["address"], address.as_str(), "{}: reported address vs lease; {j}", m.mac);
        // TFTP: dnsmasq sent this machine its iPXE.
        let sent = format!("ipxe-{}.efi to {address}", m.arch);
        assert!(
            dnsmasq_log.lines().any(|l| l.contains("dnsmasq-tftp") && l.contains("sent ") && l.contains(&sent)),
            "{}: dnsmasq's log has no TFTP `sent …{sent}` ({})",
            m.mac,
            lan.dnsmasq_log.display()
        );
        // Console: every marker, in order.
        let seen_at = n.seen_at();
        for (i, (name, _)) in n.markers.iter().enumerate() {
            assert!(seen_at[i].is_some(), "{}: no {name} on the console (log {})", m.mac, n.log.display());
        }
        let at: Vec<Instant> = seen_at.iter().map(|t| t.unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "{}: markers out of order (log {})", m.mac, n.log.display());
        let lines = n.guest.lines();
        let served = lines
            .iter()
            .find_map(|l| l.split(&format!("{MARK} apid fingerprint=")).nth(1))
            .and_then(|r| r.split_whitespace().next())
            .unwrap();
        assert_eq!(j["fingerprint"], served, "{}: the reported fingerprint is the stand-in apid's", m.mac);
        if m.arch == "arm64" {
            // iPXE hands the initramfs to the EFI stub through LoadFile2 (no `initrd=` needed).
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path")),
                "{}: log {}",
                m.mac,
                n.log.display()
            );
        }
        // The command line: the profile of its group, with iPXE's expansions.
        let cmdline = lines.iter().find(|l| l.contains(&format!("{MARK} cmdline="))).unwrap();
        let tokens: Vec<&str> = cmdline.split("cmdline=").nth(1).unwrap().split_whitespace().collect();
        let gateway = if variant == Variant::Full { BASTION } else { VPC_DHCP };
        let ip = format!("ip={address}::{gateway}:255.255.255.0:::off");
        assert!(tokens.contains(&ip.as_str()), "{}: {ip} not on the command line: {cmdline}", m.mac);
        assert!(tokens.contains(&format!("talos_agent.node={}", m.name()).as_str()), "{cmdline}");
        assert!(!cmdline.contains("${"), "iPXE expanded every setting: {cmdline}");
        let profile_id = match m.role {
            Some(role) => format!("talos-{}-{role}", m.arch),
            None => format!("talos-{}", m.arch),
        };
        let profile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(profiles.join(format!("{profile_id}.json"))).unwrap()).unwrap();
        for arg in profile["boot"]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()) {
            if !arg.contains("${") {
                assert!(
                    tokens.contains(&arg),
                    "{}: {arg} (profile {profile_id}) not on the command line: {cmdline}",
                    m.mac
                );
            }
        }
        let roles: Vec<&&str> = tokens.iter().filter(|t| t.starts_with("talos_agent.role=")).collect();
        match m.role {
            Some(role) => assert_eq!(roles, [&format!("talos_agent.role={role}").as_str()], "{}: {cmdline}", m.mac),
            None => assert!(roles.is_empty(), "{}: {cmdline}", m.mac),
        }
        // matchbox: this machine's /ipxe request carried its MAC and architecture.
        let buildarch = if m.arch == "arm64" { "arm64" } else { "x86_64" };
        assert!(
            requests.iter().any(|r| r.path == "/ipxe"
                && r.labels.get("mac").map(String::as_str) == Some(m.mac)
                && r.labels.get("arch").map(String::as_str) == Some(buildarch)),
            "{}: no /ipxe request with its labels: {requests:#?}",
            m.mac
        );
    }
    // Every kernel and initramfs download was whole, one of each per machine.
    let assets = s.netboot.join("matchbox");
    let downloads: Vec<_> = requests.iter().filter(|r| r.path.starts_with("/assets/")).collect();
    assert_eq!(downloads.len(), 2 * machines.len(), "{requests:#?}");
    for r in &downloads {
        assert_eq!(r.status, 200, "{r:?}");
        let size = std::fs::metadata(assets.join(r.path.trim_start_matches('/'))).unwrap().len();
        assert_eq!(r.bytes, size, "{} sent whole", r.path);
    }

    // The times, per machine, against the operator's goal.
    eprintln!(
        "netboot, {} DHCP, {} machines at once (QEMU TCG, software emulation on this host's CPUs):",
        variant.name(),
        machines.len()
    );
    for n in &nodes {
        let secs = |t: Instant| t.duration_since(n.start).as_secs_f64();
        let mut row = format!("  {} {} {:<12}", n.m.mac, n.m.arch, n.m.role.unwrap_or("(arch group)"));
        for ((name, _), at) in n.markers.iter().zip(n.seen_at()) {
            row.push_str(&format!(" {name} {:.1} s,", secs(at.unwrap())));
        }
        let ready = lan.wait.reached[&(n.m.name(), "maintenance_ready".to_string())];
        row.push_str(&format!(" maintenance_ready {:.1} s", secs(ready)));
        eprintln!("{row}");
        assert!(ready.duration_since(n.start) < DEADLINE);
    }
    let last = nodes
        .iter()
        .map(|n| lan.wait.reached[&(n.m.name(), "maintenance_ready".to_string())])
        .max()
        .unwrap()
        .duration_since(first);
    eprintln!(
        "  all {} in maintenance mode {:.1} s after the first QEMU start (goal: {} s on hardware)",
        machines.len(),
        last.as_secs_f64(),
        GOAL.as_secs()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&work);
}

/// dnsmasq as the network's DHCP server: three arm64 machines by their per-MAC groups (two
/// control-plane nodes and a worker) and an amd64 machine by its architecture's group.
#[test]
fn dnsmasq_dhcp_netboots_three_arm64_nodes_by_mac_and_an_amd64_node() {
    netboot_machines("dnsmasq_dhcp_netboots_three_arm64_nodes_by_mac_and_an_amd64_node", Variant::Full, &FULL);
}

/// dnsmasq as proxy DHCP beside the VPC's DHCP server: one arm64 and one amd64 machine.
#[test]
fn proxy_dhcp_beside_another_dhcp_server_netboots_arm64_and_amd64() {
    netboot_machines("proxy_dhcp_beside_another_dhcp_server_netboots_arm64_and_amd64", Variant::Proxy, &PROXY);
}
