//! Boots the stand-in Talos initramfs (TEST FIXTURE) directly under QEMU, for arm64 and amd64,
//! and checks the stand-in init's console marker lines: the `cmdline=` line carries a token unique
//! to this run, the root (and, in the extension tests, each extension layer and the overlay) is
//! mounted, and `ready` appears; the guest then powers off.
//!
//! Skipped (with a printed reason) when `target/fixtures/fixtures.json` or the QEMU binary is
//! absent. Deadline 120 s per boot; QEMU is always killed. Console logs go to
//! `target/fixtures/logs/`.

use moonboot_tests::build::initramfs_with_extensions;
use moonboot_tests::fixtures::{fixtures_dir, loaded, with_qemu, ArchFixtures, Fixtures};
use moonboot_tests::qemu::{BootSpec, Guest};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEADLINE: Duration = Duration::from_secs(120);
const MARK: &str = "MOONBOOT-STANDIN-INIT:";

fn fixtures(test: &str, arch: &str) -> Option<(Fixtures, ArchFixtures)> {
    let f = loaded(test)?;
    let a = with_qemu(test, &f, arch)?;
    Some((f, a))
}

fn token() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("moonboot-test-{}-{nanos}", std::process::id())
}

/// Boots `initrd` with the fixtures' kernel; returns every console line once the guest is ready
/// and has powered off.
fn boot(a: &ArchFixtures, initrd: &Path, log_name: &str) -> Vec<String> {
    let token = token();
    let append = format!("console={} panic=-1 moonboot.test_token={token}", a.console);
    let log = fixtures_dir().join("logs").join(log_name);
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let mut guest = Guest::boot(&BootSpec {
        qemu: &a.qemu_binary,
        machine_args: &a.qemu_machine_args,
        kernel: &a.kernel_image,
        initrd,
        append: &append,
        extra: &[],
        log: &log,
    })
    .unwrap();
    let cmdline = guest
        .wait_for("the stand-in init's cmdline line", deadline, |l| l.contains(&format!("{MARK} cmdline=")))
        .unwrap();
    assert!(cmdline.contains(&token), "cmdline line lacks this run's token {token}: {cmdline}");
    let end = guest
        .wait_for("the stand-in init's ready or error line", deadline, |l| {
            l.contains(&format!("{MARK} ready")) || l.contains(&format!("{MARK} error:"))
        })
        .unwrap();
    assert!(end.contains("ready"), "the stand-in init failed: {end} (console log: {})", log.display());
    let status = guest.wait_exit(deadline).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
    eprintln!("{log_name}: ready after {:.1} s", start.elapsed().as_secs_f64());
    guest.lines().to_vec()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn boots_plain(arch: &str) {
    let test = format!("standin_boots_{arch}");
    let Some((_, a)) = fixtures(&test, arch) else { return };
    let lines = boot(&a, &a.initramfs, &format!("standin-boot-{arch}.log"));
    assert!(has(&lines, &format!("{MARK} layer root mounted: /rootfs.sqsh on /layers/root")));
    assert!(has(&lines, "PRETTY_NAME=moonboot stand-in of Talos (v1.10.5)"));
    assert!(has(&lines, &format!("{MARK} {} kernel modules loaded", a.initramfs_modules.len())));
}

fn boots_with_extensions(arch: &str) {
    let test = format!("standin_mounts_extensions_{arch}");
    let Some((f, a)) = fixtures(&test, arch) else { return };
    let spin = &f.images["spin"];
    let ts = &f.images["tailscale"];
    let work = fixtures_dir().join("tmp").join(format!("extensions-{arch}-{}", std::process::id()));
    let initrd = initramfs_with_extensions(
        &a.initramfs,
        &[(spin.layout.as_path(), spin.tag.as_str()), (ts.layout.as_path(), ts.tag.as_str())],
        arch,
        &work,
        f.source_date_epoch,
    )
    .unwrap();
    let lines = boot(&a, &initrd, &format!("standin-extensions-{arch}.log"));
    let _ = std::fs::remove_dir_all(&work);
    assert!(has(&lines, &format!("{MARK} layer layer0 mounted: /0.sqsh on /layers/layer0")));
    assert!(has(&lines, &format!("{MARK} layer layer1 mounted: /1.sqsh on /layers/layer1")));
    assert!(has(&lines, &format!("{MARK} root: overlay on /root lowerdir=/layers/layer1:/layers/layer0:/layers/root")));
    assert!(has(&lines, &format!("{MARK} extension service spec /usr/local/etc/containers/tailscale.yaml")));
}

#[test]
fn standin_boots_arm64() {
    boots_plain("arm64");
}

#[test]
fn standin_boots_amd64() {
    boots_plain("amd64");
}

#[test]
fn standin_mounts_extensions_arm64() {
    boots_with_extensions("arm64");
}

#[test]
fn standin_mounts_extensions_amd64() {
    boots_with_extensions("amd64");
}
