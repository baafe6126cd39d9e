//! `imager extensions update` against the fixture registry: the stand-in spin and tailscale
//! images are served under their upstream names through the mirror option, and the lock file
//! ends up pinned to the index digests the registry serves, its comments intact. Skipped with a
//! reason when the fixtures or the registry are absent.

mod support;

use support::imager;

#[test]
fn pins_each_tag_to_the_served_index_digest() {
    let Some(f) = moonboot_tests::fixtures::with_registry("pins_each_tag_to_the_served_index_digest") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("lock.yaml");
    let stale = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let text = format!(
        "# pinned extensions\nextensions:\n  - name: spin # wasm\n    image: ghcr.io/siderolabs/spin:v0.19.0\n    talos: \">= v1.0.0\"\n  - name: tailscale\n    image: ghcr.io/siderolabs/tailscale:1.84.0\n    digest: {stale}\n    talos: \">= v1.5.0\"\n"
    );
    std::fs::write(&lock, &text).unwrap();
    let args = [
        "extensions",
        "update",
        "--lock",
        lock.to_str().unwrap(),
        "--registry-mirror",
        &f.mirror,
        "--insecure-registry",
        &f.registry,
    ];
    let (code, stdout, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    let spin = &f.images["spin"].index_digest;
    let tailscale = &f.images["tailscale"].index_digest;
    let want = text.replace("spin:v0.19.0\n", &format!("spin:v0.19.0\n    digest: {spin}\n")).replace(stale, tailscale);
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), want);
    assert!(stdout.contains(&format!("spin  ghcr.io/siderolabs/spin:v0.19.0  pinned {spin}")), "{stdout}");
    assert!(stdout.contains(&format!("{stale} -> {tailscale}")), "{stdout}");

    // Again: nothing changes.
    let (code, stdout, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), want);
    assert_eq!(stdout.matches("unchanged").count(), 2, "{stdout}");

    // A tag the registry does not have leaves the file as it was.
    std::fs::write(&lock, text.replace("spin:v0.19.0", "spin:v9.9.9")).unwrap();
    let (code, _, stderr) = imager(&args);
    assert_eq!(code, 1);
    assert!(stderr.contains("spin"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text.replace("spin:v0.19.0", "spin:v9.9.9"));
}
