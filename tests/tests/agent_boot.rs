//! End-to-end proofs of `talos-agent boot`: a QEMU guest boots Debian's kernel with a small
//! stage-1 initramfs (busybox, virtio-net modules, the static `talos-agent`), brings up the
//! network (QEMU user-mode networking: the guest is 10.0.2.15, 10.0.2.2 is the host's loopback
//! where the fixture registry listens), runs `talos-agent boot` against the stand-in Talos
//! v1.10.5 release (TEST FIXTURE) through the `ghcr.io=10.0.2.2:PORT` mirror, and kexecs into it.
//! The tests assert that the SECOND kernel booted: the stand-in init prints its `/proc/cmdline`,
//! which must carry this run's token and the arguments the agent adds.
//!
//! - arm64: Debian's arm64 cloud kernel has no `CONFIG_KEXEC_FILE`, so this proves the
//!   `kexec_load` path (segments, DTB and trampoline placed by the agent);
//! - amd64: Debian's amd64 cloud kernel has `CONFIG_KEXEC_FILE=y`: this proves `kexec_file_load`.
//!
//! Skipped (with a printed reason) when the fixtures, QEMU or the cross toolchain are absent;
//! `MOONBOOT_REQUIRE_FIXTURES=1` turns skips into failures. Deadline 240 s per test (the static
//! agent is built first, a no-op when unchanged); QEMU is always killed. Console logs go to
//! `target/fixtures/logs/agent-boot-<arch>.log`.

use moonboot_tests::fixtures::{fixtures_dir, loaded, skip, ArchFixtures, Fixtures};
use moonboot_tests::qemu::{have, BootSpec, Guest};
use moonboot_tests::stage1::{self, Stage1};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEADLINE: Duration = Duration::from_secs(240);
const MARK: &str = "MOONBOOT-STANDIN-INIT:";
/// The host's CA bundle (package ca-certificates), copied where Ubuntu keeps it.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn fixtures(test: &str, arch: &str) -> Option<(Fixtures, ArchFixtures)> {
    let f = loaded(test)?;
    let a = f.arches[arch].clone();
    if !std::path::Path::new(CA_BUNDLE).exists() {
        skip(test, &format!("{CA_BUNDLE} is absent (install ca-certificates: run scripts/setup)"));
        return None;
    }
    for tool in [a.qemu_binary.as_str(), "cpio"] {
        if !have(tool) {
            skip(test, &format!("{tool} is not installed (run scripts/setup)"));
            return None;
        }
    }
    if !std::path::Path::new("/usr/bin/cargo").exists() || (arch == "arm64" && !have("aarch64-linux-gnu-gcc")) {
        skip(test, "Debian's cargo/rustc and the aarch64 cross compiler are missing (run scripts/setup)");
        return None;
    }
    Some((f, a))
}

fn token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("moonboot-agent-{}-{nanos}", std::process::id())
}

fn work_dir(arch: &str) -> PathBuf {
    fixtures_dir().join("tmp").join(format!("agent-boot-{arch}-{}", std::process::id()))
}

/// Boots `stage1_cpio`; returns every console line once the second kernel's stand-in init said
/// `ready`, and the seconds from QEMU start to that line.
fn boot_two_stages(a: &ArchFixtures, stage1_cpio: &std::path::Path, log_name: &str) -> (Vec<String>, f64) {
    let append = format!("console={} panic=-1 rdinit=/init", a.console);
    let log = fixtures_dir().join("logs").join(log_name);
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let extra: Vec<String> =
        ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"].iter().map(|s| s.to_string()).collect();
    let mut guest = Guest::boot(&BootSpec {
        qemu: &a.qemu_binary,
        machine_args: &a.qemu_machine_args,
        kernel: &a.kernel_image,
        initrd: stage1_cpio,
        append: &append,
        extra: &extra,
        log: &log,
    })
    .unwrap();
    guest
        .wait_for("stage 1 network", deadline, |l| l.contains("STAGE1: network") || l.contains("STAGE1: error"))
        .unwrap();
    let end = guest
        .wait_for("the second kernel's stand-in init ready line", deadline, |l| {
            l.contains(&format!("{MARK} ready")) || l.contains(&format!("{MARK} error:")) || l.contains("STAGE1: error")
        })
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(end.contains("ready"), "the boot failed: {end} (console log: {})", log.display());
    (guest.lines().to_vec(), secs)
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> Option<&'a String> {
    lines.iter().find(|l| l.contains(needle))
}

/// `talos-agent boot` from the fixture registry, then the stand-in Talos init in the second kernel.
/// `want_sha256`: the SHA-256 implementation the agent reports on the emulated CPU (`-cpu
/// cortex-a57` has the ARMv8 SHA-2 instructions).
fn agent_boots(arch: &str, want_syscall: &str, want_sha256: &str) {
    let test = format!("agent_boot_kexecs_{arch}");
    let Some((f, a)) = fixtures(&test, arch) else { return };
    let agent = stage1::build_static_agent(arch).unwrap();
    let token = token();
    let port = f.registry.rsplit(':').next().unwrap().to_string();
    let registry = format!("10.0.2.2:{port}");
    let script = format!(
        "echo STAGE1: running talos-agent boot\n\
         talos-agent boot ghcr.io/siderolabs/imager:v1.10.5 --registry-mirror ghcr.io={registry} \
         --insecure-registry {registry} --platform metal --extra-kernel-arg moonboot.test_token={token} \
         --extra-kernel-arg console={console}\n\
         fail \"talos-agent boot returned\"",
        console = a.console
    );
    let work = work_dir(arch);
    let cpio = stage1::build(
        &Stage1 {
            arch: &a,
            script: &script,
            files: vec![
                ("usr/bin/talos-agent".into(), agent, true),
                // Ubuntu has a CA bundle; the agent's HTTPS clients load the system's roots.
                ("etc/ssl/certs/ca-certificates.crt".into(), CA_BUNDLE.into(), false),
            ],
        },
        &work,
    )
    .unwrap();
    let (lines, secs) = boot_two_stages(&a, &cpio, &format!("agent-boot-{arch}.log"));
    let _ = std::fs::remove_dir_all(&work);

    let cmdline = line_with(&lines, &format!("{MARK} cmdline=")).expect("the stand-in init printed its cmdline");
    assert!(cmdline.contains(&format!("moonboot.test_token={token}")), "second kernel lacks the token: {cmdline}");
    assert!(cmdline.contains("talos.platform=metal"), "{cmdline}");
    assert!(cmdline.contains("ip="), "network not carried over: {cmdline}");
    assert!(cmdline.contains("10.0.2.15"), "the guest address is not in ip=: {cmdline}");
    assert!(!cmdline.contains("rdinit=/init"), "stage 1's own command line leaked into the next kernel: {cmdline}");
    let used = lines
        .iter()
        .find(|l| l.contains("talos-agent") && l.contains("loaded") && l.contains("kexec"))
        .unwrap_or_else(|| panic!("the agent did not log which kexec syscall it used"));
    assert!(
        used.contains(want_syscall) && (want_syscall == "kexec_file_load" || !used.contains("kexec_file_load")),
        "expected {want_syscall}: {used}"
    );
    let verified = lines
        .iter()
        .find(|l| l.contains("initramfs") && l.contains(": verified"))
        .expect("the agent said what it verified");
    assert!(verified.contains(&format!("(SHA-256: {want_sha256})")), "{verified}");
    eprintln!("{test}: second kernel ready {secs:.1} s after QEMU start ({want_syscall})");
}

/// QEMU's default x86-64 CPU (`qemu64`, the amd64 guest's) has no SHA extensions: the agent
/// falls back to portable code and says so.
const AMD64_SHA256: &str = "soft";

#[test]
fn agent_boot_kexecs_arm64() {
    agent_boots("arm64", "kexec_load", "aarch64-sha2");
}

#[test]
fn agent_boot_kexecs_amd64() {
    agent_boots("amd64", "kexec_file_load", AMD64_SHA256);
}
