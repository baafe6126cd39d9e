//! Boots the initramfs `imager build` made (against the fixture registry) under QEMU with the
//! stand-in Talos init (a TEST PROGRAM, see tests/README.md) and checks what it prints: the three
//! extension layers mounted in Talos's order with the overlay on top, and the talos-agent
//! extension service started (`ext-talos-agent: talos-agent report: talos-agent report vX.Y.Z starting`).
//!
//! The talos-agent binary is `$MOONBOOT_AGENT_BINARY` when set, else the imager cross-compiles it.
//! Skipped with a reason when the fixtures or QEMU are absent (a failure under
//! MOONBOOT_REQUIRE_FIXTURES=1). Deadline 180 s; QEMU is always killed.

use std::process::Command;
use std::time::{Duration, Instant};

use moonboot_tests::fixtures::{fixtures_dir, with_qemu, with_registry};
use moonboot_tests::qemu::{BootSpec, Guest};

const IMAGER: &str = env!("CARGO_BIN_EXE_imager");
const MARK: &str = "MOONBOOT-STANDIN-INIT:";
const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn standin_init_boots_the_built_initramfs_and_starts_talos_agent() {
    let test = "standin_init_boots_the_built_initramfs_and_starts_talos_agent";
    let Some(f) = with_registry(test) else { return };
    let Some(a) = with_qemu(test, &f, "arm64") else { return };
    let work = fixtures_dir().join("tmp").join(format!("imager-boot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("out");
    let mut c = Command::new(IMAGER);
    c.args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .arg("--output")
        .arg(&out);
    match std::env::var_os("MOONBOOT_AGENT_BINARY") {
        Some(bin) => c.arg("--agent-binary").arg(bin),
        None => c.arg("--agent-from-source"),
    };
    let o = c.output().unwrap();
    assert!(o.status.success(), "imager build failed: {}", String::from_utf8_lossy(&o.stderr));

    let log = fixtures_dir().join("logs").join("imager-build-boot-arm64.log");
    let append = format!("console={} panic=-1 standin.hold ip=10.0.2.15::10.0.2.2:255.255.255.0:::off", a.console);
    let extra: Vec<String> =
        ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"].iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + DEADLINE;
    let mut guest = Guest::boot(&BootSpec {
        qemu: &a.qemu_binary,
        machine_args: &a.qemu_machine_args,
        kernel: &a.kernel_image,
        initrd: &out.join("initramfs-metal-arm64.xz"),
        append: &append,
        extra: &extra,
        log: &log,
    })
    .unwrap();
    // The stand-in prefixes the service's output with `ext-talos-agent:` (and the agent its own
    // `talos-agent report:`).
    let want = format!("talos-agent report v{} starting", env!("CARGO_PKG_VERSION"));
    let end = guest
        .wait_for("the talos-agent extension service's first line", deadline, |l| {
            (l.starts_with("ext-talos-agent:") && l.contains(&want)) || l.contains(&format!("{MARK} error:"))
        })
        .unwrap();
    assert!(end.contains(&want), "the stand-in init failed: {end} (console log {})", log.display());
    let lines = guest.lines().to_vec();
    drop(guest);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    for i in 0..3 {
        assert!(has(&format!("{MARK} layer layer{i} mounted: /{i}.sqsh on /layers/layer{i}")), "layer {i} not mounted");
    }
    assert!(has(&format!(
        "{MARK} root: overlay on /root lowerdir=/layers/layer2:/layers/layer1:/layers/layer0:/layers/root"
    )));
    assert!(has(&format!("{MARK} extension service spec /usr/local/etc/containers/talos-agent.yaml")));
    assert!(has(&format!("{MARK} extension service spec /usr/local/etc/containers/tailscale.yaml")));
    let _ = std::fs::remove_dir_all(&work);
}
