//! The bastion's registry cache, for real: Debian's `docker-registry` (distribution 2.8) as a
//! pull-through cache (`proxy.remoteurl`) of the fixture registry, with a byte-counting proxy
//! between the two measuring what the cache fetched from upstream (`moonboot_tests::pull_through`).
//! Agents boot (`talos-agent boot --dry-run`) a format-2 boot artifact (the fixture's arm64 kernel
//! and initramfs, pushed with Debian trixie's oras) through the cache as EC2 instances do
//! (`--registry-mirror ORIGIN=CACHE`), 10 of them at once, each round with a fresh cache:
//! 1. only with `MOONBOOT_FLEET_AGENTS=N` (N agents in both rounds; a measurement, run by hand):
//!    a cold cache, its upstream bytes printed as a multiple of the artifact (distribution fetches
//!    a blob upstream once per request that misses while it is in flight, and twice for the
//!    first, `registry/proxy/proxyblobstore.go`); not asserted, it depends on timing;
//! 2. after `imager warm --cache CACHE REF`: the fleet adds no upstream byte, and every agent
//!    planned the artifact's blobs from the cache. What warming itself cost is printed (one copy,
//!    plus what was in flight each time it hung up on a 200 answer).
//!
//! Loopback only. Skipped with a reason without the fixtures or oras.

use std::path::Path;

use boot_artifact::artifact::Role;
use moonboot_tests::demo::host_binaries;
use moonboot_tests::fixtures::{
    fixtures_dir, oras_push_boot_artifact, unique_repository, with_oras, with_registry, Fixtures,
};
use moonboot_tests::pull_through::round;

/// Pushes a boot artifact of the fixture's arm64 files (the command line made unique by `tag`,
/// so each artifact is new to the cache) to the fixture registry; returns (reference, bytes).
fn push_artifact(f: &Fixtures, work: &Path, tag: &str) -> (String, u64) {
    let a = &f.arches["arm64"];
    let dir = work.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&a.kernel_image, dir.join("kernel")).unwrap();
    std::fs::copy(&a.initramfs, dir.join("initramfs")).unwrap();
    std::fs::write(dir.join("cmdline"), format!("talos.platform=aws console=ttyS0 moonboot.test={tag}")).unwrap();
    let reference = format!("{}/{}:{tag}", f.registry, unique_repository("moonboot-test/pull-through"));
    oras_push_boot_artifact(&dir, &reference).unwrap();
    let bytes = Role::ALL.iter().map(|r| std::fs::metadata(dir.join(r.title())).unwrap().len()).sum::<u64>() + 2;
    (reference, bytes)
}

#[test]
fn a_warmed_cache_fetches_the_artifact_from_upstream_once_for_a_fleet() {
    let test = "a_warmed_cache_fetches_the_artifact_from_upstream_once_for_a_fleet";
    let Some(f) = with_registry(test) else { return };
    if !with_oras(test) {
        return;
    }
    let measure: Option<usize> = std::env::var("MOONBOOT_FLEET_AGENTS").ok().and_then(|v| v.parse().ok());
    let n = measure.unwrap_or(10);
    let (imager, agent) = host_binaries().expect("building the release imager and talos-agent");
    let work = fixtures_dir().join("tmp").join(format!("pull-through-{}", std::process::id()));
    let (reference, size) = push_artifact(&f, &work, "fleet");
    let times = |bytes: u64| bytes as f64 / size as f64;

    // 1. Cold: what a fleet costs upstream without warming (measured on request).
    if measure.is_some() {
        let cold = round(None, &agent, &f.registry, &reference, n, &work.join("cold")).unwrap();
        assert!(cold.plans.iter().all(|p| p["resolved"]["endpoint"] == cold.cache.as_str()), "served by the cache");
        println!(
            "pull-through cold: {n} agents, artifact {size} B, upstream {} B = {:.2}x",
            cold.upstream,
            times(cold.upstream)
        );
    }

    // 2. Warmed first: one copy upstream, whatever the fleet's size.
    let warm = round(Some(&imager), &agent, &f.registry, &reference, n, &work.join("warm")).unwrap();
    let warmed = warm.warmed.as_ref().unwrap();
    assert_eq!(warmed["images"][0]["arch"], "arm64", "{warmed}");
    assert_eq!(warmed["images"][0]["blobs"].as_array().unwrap().len(), 4, "config and three files: {warmed}");
    println!(
        "pull-through warmed: {n} agents, artifact {size} B, upstream {} B = {:.2}x ({} B by imager warm, misses {})",
        warm.upstream,
        times(warm.upstream),
        warm.by_warm,
        warmed["images"][0]["misses"]
    );
    assert_eq!(warm.upstream, warm.by_warm, "after imager warm, the {n} agents fetched nothing from upstream");
    assert!(warm.by_warm >= size - 2, "imager warm brought every blob: {} of {size} B", warm.by_warm);
    let digest = &warmed["images"][0]["manifest_digest"];
    for p in &warm.plans {
        assert_eq!(p["resolved"]["endpoint"], warm.cache.as_str(), "{p}");
        assert_eq!(&p["resolved"]["manifest_digest"], digest, "{p}");
        assert_eq!(p["resolved"]["boot_artifact_format"], 2, "{p}");
    }
    let _ = std::fs::remove_dir_all(&work);
}
