//! moonboot-registry against a real OCI registry (Docker Distribution serving the fixtures), with
//! failures injected by a proxy in between (`moonboot_tests::faulty`): mirror fallback, anonymous
//! bearer-token challenge, 5xx then success, bodies cut short (resumed with Range, or restarted
//! when Range is ignored), corrupted bytes, and a wrong-architecture index entry.

use std::sync::atomic::Ordering;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::{Mirror, Reference};
use moonboot_registry::{Error, Options, Registry, Resolved};
use moonboot_tests::faulty;
use moonboot_tests::fixtures::{with_registry, Fixtures};
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A client whose only route to ghcr.io is `mirrors` (all plain HTTP), with fast retries and no
/// auth file.
fn client(mirrors: &[&str]) -> Registry {
    let options = Options {
        mirrors: mirrors.iter().map(|m| format!("ghcr.io={m}").parse::<Mirror>().unwrap()).collect(),
        insecure: mirrors.iter().map(|m| m.to_string()).collect(),
        auth_file: Some("/nonexistent/moonboot-test-auth.json".into()),
        retries: 3,
        backoff: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    Registry::new(options).unwrap()
}

fn imager() -> Reference {
    "ghcr.io/siderolabs/imager:v1.10.5".parse().unwrap()
}

fn expected_manifest(f: &Fixtures, arch: &str) -> Sha256Digest {
    f.images["imager"].manifests[arch].parse().unwrap()
}

/// Fetches the largest layer and checks it against the digest in the manifest.
fn fetch_largest(reg: &Registry, rt: &tokio::runtime::Runtime, r: &Resolved) -> Result<Vec<u8>, Error> {
    let layer = r.manifest.layers.iter().max_by_key(|l| l.size).unwrap().clone();
    let mut out = Vec::new();
    rt.block_on(reg.fetch_blob(r, &layer, &mut out))?;
    assert_eq!(out.len() as u64, layer.size);
    assert_eq!(Sha256Digest::of(&out), layer.digest);
    Ok(out)
}

#[test]
fn resolves_each_architecture_through_the_mirror_and_streams_verified_blobs() {
    let Some(f) = with_registry("resolves_each_architecture_through_the_mirror") else { return };
    let rt = rt();
    let reg = client(&[&f.registry]);
    for arch in ["arm64", "amd64"] {
        let r = rt.block_on(reg.resolve(&imager(), arch)).unwrap();
        assert_eq!(r.manifest_digest, expected_manifest(&f, arch), "{arch}");
        assert_eq!(r.index_digest.unwrap().to_string(), f.images["imager"].index_digest);
        assert_eq!(r.endpoint.host, f.registry);
        assert_eq!(Sha256Digest::of(&r.config_bytes), r.manifest.config.digest);
        fetch_largest(&reg, &rt, &r).unwrap();
    }
    // By digest too: the platform manifest itself.
    let pinned: Reference = format!("ghcr.io/siderolabs/imager@{}", expected_manifest(&f, "arm64")).parse().unwrap();
    let r = rt.block_on(reg.resolve(&pinned, "arm64")).unwrap();
    assert_eq!(r.index_digest, None);
    // And the arm64 manifest asked for as amd64 is refused by its config.
    let e = rt.block_on(reg.resolve(&pinned, "amd64")).unwrap_err();
    assert!(matches!(e, Error::WrongArchitecture { .. }), "{e}");
    assert!(e.to_string().contains("linux/arm64"), "{e}");
}

#[test]
fn falls_back_past_dead_and_empty_mirrors_in_order() {
    let Some(f) = with_registry("falls_back_past_dead_and_empty_mirrors_in_order") else { return };
    let rt = rt();
    // 127.0.0.1:9 refuses connections; the proxy's /v2/… for an unknown name returns 404 (via the registry).
    let dead = "127.0.0.1:9";
    let reg = client(&[dead, &f.registry]);
    let r = rt.block_on(reg.resolve(&imager(), "arm64")).unwrap();
    assert_eq!(r.endpoint.host, f.registry, "the second mirror answered");

    // Nothing answers: the error lists every endpoint tried, mirrors first, then the origin.
    let reg = Registry::new(Options {
        mirrors: vec![format!("ghcr.io={dead}").parse().unwrap()],
        insecure: vec![dead.into()],
        auth_file: Some("/nonexistent".into()),
        retries: 0,
        connect_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .unwrap();
    let missing: Reference = "ghcr.io/siderolabs/no-such-image:v1".parse().unwrap();
    let e = rt.block_on(reg.resolve(&missing, "arm64")).unwrap_err();
    let Error::Unavailable { attempts, .. } = &e else { panic!("{e}") };
    assert_eq!(attempts[0].0, dead);
    assert_eq!(attempts.last().unwrap().0, "ghcr.io", "the origin is tried last");
    assert!(e.to_string().starts_with("ghcr.io/siderolabs/no-such-image:v1: 127.0.0.1:9: "), "{e}");
}

#[test]
fn answers_an_anonymous_bearer_challenge_like_ghcr() {
    let Some(f) = with_registry("answers_an_anonymous_bearer_challenge_like_ghcr") else { return };
    let proxy = faulty::start(&f.registry);
    *proxy.faults.bearer_token.lock().unwrap() = Some("anon-token-123".into());
    let rt = rt();
    let reg = client(&[&proxy.addr]);
    let r = rt.block_on(reg.resolve(&imager(), "arm64")).unwrap();
    fetch_largest(&reg, &rt, &r).unwrap();
    assert!(proxy.faults.token_requests.load(Ordering::SeqCst) >= 1, "a token was requested");
    assert!(proxy.faults.forwarded.load(Ordering::SeqCst) >= 3, "requests went through with the token");
}

#[test]
fn retries_5xx_and_resumes_truncated_blobs() {
    let Some(f) = with_registry("retries_5xx_and_resumes_truncated_blobs") else { return };
    let proxy = faulty::start(&f.registry);
    let rt = rt();
    let reg = client(&[&proxy.addr]);
    let r = rt.block_on(reg.resolve(&imager(), "arm64")).unwrap();

    proxy.faults.blob_503s.store(2, Ordering::SeqCst);
    proxy.faults.blob_truncations.store(1, Ordering::SeqCst);
    fetch_largest(&reg, &rt, &r).unwrap();
    let log = proxy.faults.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.contains("range=bytes=")), "the cut-off transfer resumed with Range: {log:#?}");

    // A registry that ignores Range resends from byte 0; the prefix is skipped, the result still verifies.
    proxy.faults.ignore_range.store(true, Ordering::SeqCst);
    proxy.faults.blob_truncations.store(1, Ordering::SeqCst);
    fetch_largest(&reg, &rt, &r).unwrap();

    // Persistent 5xx: gives up after the retries with the reason.
    proxy.faults.blob_503s.store(100, Ordering::SeqCst);
    let e = fetch_largest(&reg, &rt, &r).unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
}

#[test]
fn refuses_corrupted_blobs_and_wrong_sizes() {
    let Some(f) = with_registry("refuses_corrupted_blobs_and_wrong_sizes") else { return };
    let proxy = faulty::start(&f.registry);
    let rt = rt();
    let reg = client(&[&proxy.addr]);
    let r = rt.block_on(reg.resolve(&imager(), "arm64")).unwrap();
    proxy.faults.corrupt_blobs.store(true, Ordering::SeqCst);
    let e = fetch_largest(&reg, &rt, &r).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    proxy.faults.corrupt_blobs.store(false, Ordering::SeqCst);

    // A descriptor that claims fewer bytes than the blob has: the transfer stops at the claim.
    let mut layer = r.manifest.layers[0].clone();
    layer.size -= 1;
    let mut sink = Vec::new();
    let e = rt.block_on(reg.fetch_blob(&r, &layer, &mut sink)).unwrap_err();
    assert!(matches!(e, Error::SizeMismatch { more: true, .. }), "{e}");
    assert!(sink.len() as u64 <= layer.size, "nothing beyond the descriptor's size reached the sink");
}

#[test]
fn refuses_an_index_without_the_architecture() {
    let Some(f) = with_registry("refuses_an_index_without_the_architecture") else { return };
    let rt = rt();
    let reg = client(&[&f.registry]);
    let e = rt.block_on(reg.resolve(&imager(), "riscv64")).unwrap_err();
    assert!(matches!(e, Error::NoPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/amd64") && e.to_string().contains("linux/arm64"), "{e}");
}

#[test]
fn identity_tokens_are_exchanged_for_access_tokens() {
    let Some(f) = with_registry("identity_tokens_are_exchanged_for_access_tokens") else { return };
    let proxy = faulty::start(&f.registry);
    *proxy.faults.bearer_token.lock().unwrap() = Some("access-7c1f".into());
    *proxy.faults.refresh_token.lock().unwrap() = Some("refresh-2b9e".into());
    // The proxy is named directly (no mirror), so that a failure never falls back to ghcr.io.
    let direct: Reference = format!("{}/siderolabs/imager:v1.10.5", proxy.addr).parse().unwrap();
    let dir = moonboot_tests::fixtures::fixtures_dir().join("tmp").join(format!("identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_identity_token = |token: &str| {
        let file = dir.join(format!("{token}.json"));
        std::fs::write(&file, format!(r#"{{"auths":{{"{}":{{"identitytoken":"{token}"}}}}}}"#, proxy.addr)).unwrap();
        let options = Options {
            insecure: vec![proxy.addr.clone()],
            auth_file: Some(file),
            retries: 0,
            backoff: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(2),
            ..Options::default()
        };
        Registry::new(options).unwrap()
    };
    let rt = rt();
    // The refresh token is exchanged for the access token, which then serves the pull.
    let r = rt.block_on(with_identity_token("refresh-2b9e").resolve(&direct, "arm64")).unwrap();
    assert_eq!(r.manifest_digest, expected_manifest(&f, "arm64"));
    let posts = proxy.faults.log.lock().unwrap().iter().filter(|l| l.starts_with("POST /token")).count();
    assert!(posts >= 1, "no refresh-token exchange: {:?}", proxy.faults.log.lock().unwrap());
    // A refresh token the endpoint refuses: the pull fails, and says why; nothing is sent as a
    // bearer token that was never granted.
    let before = proxy.faults.forwarded.load(Ordering::SeqCst);
    let err = rt.block_on(with_identity_token("stale").resolve(&direct, "arm64")).unwrap_err().to_string();
    assert!(err.contains("refused the identity token"), "{err}");
    assert_eq!(proxy.faults.forwarded.load(Ordering::SeqCst), before, "nothing reached the registry");
    let _ = std::fs::remove_dir_all(&dir);
}
