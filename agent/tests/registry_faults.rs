//! `talos-agent boot` through a fault-injecting proxy in front of the fixture registry
//! (`moonboot_tests::faulty`): transient failures are retried, and each retry is a line in the
//! agent's log (stderr, which cloud-init keeps in `/var/log/cloud-init-output.log`) — the
//! registry crate's `tracing` events reach it through the agent's subscriber. A corrupted blob
//! is refused with exit code 4 and nothing planned.
//!
//! Skipped with a reason without the fixtures (a failure under MOONBOOT_REQUIRE_FIXTURES=1).
//! `--platform metal` keeps platform detection off the network.

use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use moonboot_tests::faulty;
use moonboot_tests::fixtures::with_registry;

fn dry_run(proxy: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talos-agent"))
        .args(["boot", "ghcr.io/siderolabs/imager:v1.10.5", "--dry-run", "--json", "--arch", "arm64"])
        .args(["--platform", "metal", "--no-network-carry-over", "--timeout", "60s"])
        .args(["--registry-mirror", &format!("ghcr.io={proxy}"), "--insecure-registry", proxy])
        .args(["--auth-file", "/nonexistent/moonboot-test-auth.json"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run talos-agent")
}

#[test]
fn retries_are_logged_and_corruption_is_refused() {
    let Some(f) = with_registry("retries_are_logged_and_corruption_is_refused") else { return };
    let proxy = faulty::start(&f.registry);
    proxy.faults.blob_503s.store(2, Ordering::SeqCst);
    let out = dry_run(&proxy.addr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "two 503s are retried; stderr: {stderr}");
    let retries: Vec<&str> = stderr.lines().filter(|l| l.contains("retrying")).collect();
    assert!(!retries.is_empty(), "no retry line in the log: {stderr}");
    assert!(retries.iter().all(|l| l.starts_with("talos-agent boot: ")), "{retries:?}");
    assert!(retries.iter().any(|l| l.contains("503")), "the retry line names the cause: {retries:?}");

    let proxy = faulty::start(&f.registry);
    proxy.faults.corrupt_blobs.store(true, Ordering::SeqCst);
    let out = dry_run(&proxy.addr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(stderr.contains("digest mismatch"), "{stderr}");
    assert!(out.stdout.is_empty() || !String::from_utf8_lossy(&out.stdout).contains("\"planned\""));
}
