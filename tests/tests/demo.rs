//! The README's main job as an end-to-end test: imager build → publish → wait → arm64 VM runs
//! `talos-agent boot` → kexec → stand-in Talos starts `ext-talos-agent` → its report reaches
//! `wait`. Asserts what `wait` received against what the VM printed: the phase, the apid SPKI
//! fingerprint the stand-in served, the carried-over address and the extension list. Run twice:
//! apid in maintenance mode (`maintenance_ready`) and asking for a client certificate
//! (`configured`). Software emulation; slow (minutes).

use moonboot_tests::demo::{run_demo, ControlPlane, Image, Options, Outcome};
use moonboot_tests::fixtures::{unique_repository, with_registry};
use moonboot_tests::qemu::have;
use serde_json::Value;

/// Runs the demo as `test`, publishing to a repository of its own (`short` names it): the tests
/// run in parallel, and two pushes to one repository at once can fail each other.
fn demo(test: &str, short: &str, configured: bool, controlplane: Option<ControlPlane>) -> Option<Outcome> {
    demo_of(test, short, configured, controlplane, Image::default())
}

fn demo_of(
    test: &str,
    short: &str,
    configured: bool,
    controlplane: Option<ControlPlane>,
    image: Image,
) -> Option<Outcome> {
    let f = with_registry(test)?;
    if !have(&f.arches["arm64"].qemu_binary) {
        moonboot_tests::fixtures::skip(test, "qemu-system-aarch64 is not installed (run scripts/setup)");
        return None;
    }
    let work = std::env::temp_dir().join(format!("moonboot-{test}-{}", std::process::id()));
    let o = Options {
        work: work.clone(),
        repository: format!("{}/boot", unique_repository(&format!("moonboot-test/demo-{short}"))),
        tag: "demo".into(),
        configured,
        controlplane,
        verbose: true,
        image,
    };
    let out = run_demo(&f, &o).unwrap_or_else(|e| panic!("{test}: {e:#}"));
    let _ = std::fs::remove_dir_all(&work);
    Some(out)
}

fn check(out: &Outcome, phase: &str) -> Value {
    assert_eq!(out.nodes.len(), 1, "one node reported: {:#?}", out.nodes);
    let n = out.nodes[0].clone();
    assert_eq!(n["node"], "demo-node-1", "{n}");
    assert_eq!(n["phase"], phase, "{n}");
    let served = out.served_fingerprint.as_deref().expect("the stand-in apid printed its fingerprint");
    assert_eq!(n["fingerprint"].as_str(), Some(served), "reported fingerprint = served certificate's");
    let addresses: Vec<&str> = n["addresses"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(addresses.contains(&"10.0.2.15"), "the carried-over address: {n}");
    let ext: Vec<String> =
        n["extensions"].as_array().expect("extensions").iter().filter_map(|e| e.as_str().map(String::from)).collect();
    for name in ["spin@", "tailscale@", "talos-agent@"] {
        assert!(ext.iter().any(|e| e.starts_with(name)), "{name} in the extension list: {ext:?}");
    }
    // The second kernel really booted the published artifact with our command line.
    let cmdline = out
        .console
        .iter()
        .find(|l| l.contains(&format!("{} cmdline=", moonboot_tests::demo::STANDIN_MARK)))
        .expect("the stand-in init printed its command line");
    assert!(cmdline.contains("talos_agent.report=http://10.0.2.2:"), "{cmdline}");
    assert!(cmdline.contains("ip=10.0.2.15"), "{cmdline}");
    eprintln!("demo ({phase}): VM power-on to {phase} in {:.1} s (software emulation)", out.seconds_to_phase);
    n
}

/// The line the booted stand-in init printed: `/proc/cmdline` of the kexec'd kernel.
fn booted_cmdline(out: &Outcome) -> String {
    let mark = format!("{} cmdline=", moonboot_tests::demo::STANDIN_MARK);
    let line = out.console.iter().find(|l| l.contains(&mark)).expect("the stand-in init printed its command line");
    line[line.find(&mark).unwrap() + mark.len()..].to_string()
}

/// Talos v1.14.0, the newest stand-in release: the kernel kexec'd from the boot artifact runs
/// with 1.14's arguments (talos v1.14.0-rc.1 `pkg/machinery/kernel/kernel.go`: no
/// `init_on_alloc`, `nvme_core.io_timeout` only on aws, `proc_mem.force_override=never`) and
/// reaches `maintenance_ready`. Then the same release with an embedded machine configuration
/// reaches `configured` with nothing applied over the network: the stand-in init read the
/// configuration from the `embedded-config` extension (same bytes, mode 0400, Talos's SELinux
/// label as the booted kernel reads the squashfs xattr) and masked it.
#[test]
fn talos_1_14_reaches_maintenance_ready_then_configured_from_an_embedded_config() {
    let v114 = Image { talos_version: "v1.14.0".into(), embed_config: None };
    let Some(out) = demo_of("demo_1_14_maintenance_ready", "v1-14-maintenance", false, None, v114.clone()) else {
        return;
    };
    check(&out, "maintenance_ready");
    let cmdline = booted_cmdline(&out);
    // The platform's `console=` arguments give way to the running machine's console (carried
    // over by talos-agent boot); Talos's default arguments follow, in kernel.go's order.
    let want = "talos.platform=metal console=ttyAMA0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on \
                selinux=1 module.sig_enforce=1 proc_mem.force_override=never ";
    assert!(cmdline.starts_with(want), "1.14's arguments on the booted kernel:\n{cmdline}\nwant:\n{want}");
    assert!(!cmdline.contains("init_on_alloc") && !cmdline.contains("nvme_core"), "{cmdline}");
    assert!(!out.console.iter().any(|l| l.contains("embedded config")), "no embedded configuration");

    let dir = std::env::temp_dir().join(format!("moonboot-demo-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("worker.yaml");
    let text = "version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: demo-node-1\n";
    std::fs::write(&config, text).unwrap();
    let embedded = Image { embed_config: Some(config), ..v114 };
    let Some(out) = demo_of("demo_1_14_embedded_configured", "v1-14-embedded", false, None, embedded) else {
        return;
    };
    let n = check(&out, "configured");
    assert_eq!(n["bootstrap_ready"], Value::Null, "no role given, no trustd: cannot tell, never guessed: {n}");
    assert!(!booted_cmdline(&out).contains("standin.apid"), "configured by the embedded configuration alone");
    let sha = boot_artifact::digest::Sha256Digest::of(text.as_bytes()).hex();
    let read = format!(
        "embedded config path=/usr/local/etc/talos/config.yaml bytes={} sha256={sha} mode=0400 \
         selinux=system_u:object_r:system_state_t:s0 complete=true",
        text.len()
    );
    assert!(out.console.iter().any(|l| l.contains(&read)), "the stand-in read the embedded configuration: {read}");
    assert!(out.console.iter().any(|l| l.contains("masked /usr/local/etc/talos")), "and masked it");
    let ext: Vec<&str> = n["extensions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(
        ext.last().map(|e| e.starts_with("embedded-config@")),
        Some(true),
        "embedded-config comes last: {ext:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bootstrap rule on the stand-in control plane, both answers: configured with trustd on
/// :50001 and nothing on etcd's :2379 → `bootstrap_ready`; the same with etcd listening (as
/// once bootstrapped) → stays `configured`, never ready again.
#[test]
fn bootstrap_ready_only_while_etcd_does_not_listen() {
    let Some(out) =
        demo("bootstrap_ready_not_bootstrapped", "not-bootstrapped", true, Some(ControlPlane::NotBootstrapped))
    else {
        return;
    };
    let n = check(&out, "bootstrap_ready");
    assert_eq!(n["bootstrap_ready"], true, "{n}");
    assert!(n["bootstrap_reason"].as_str().unwrap_or_default().contains("nothing listens on etcd's :2379"), "{n}");
    assert!(out.console.iter().any(|l| l.contains("trustd listening on :50001")), "the stand-in ran trustd");
    assert!(!out.console.iter().any(|l| l.contains("etcd listening on :2379")), "etcd must not listen");

    let Some(out) = demo("bootstrap_ready_bootstrapped", "bootstrapped", true, Some(ControlPlane::Bootstrapped)) else {
        return;
    };
    let n = check(&out, "configured");
    assert_eq!(n["bootstrap_ready"], false, "etcd listens: already bootstrapped: {n}");
    assert!(out.console.iter().any(|l| l.contains("etcd listening on :2379")), "the stand-in ran etcd");
    let reason = n["bootstrap_reason"].as_str().unwrap_or_default();
    assert!(reason.contains(":2379") && reason.contains("bootstrapped or has joined"), "{n}");
}
