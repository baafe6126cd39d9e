//! An extension service spec (`/usr/local/etc/containers/<name>.yaml`), read by
//! `moonboot_imager::extension::service::ServiceSpec::parse`: YAML shape and the rules of Talos's
//! `services.go` (name, restart kind, entrypoint, exactly one kind per dependency).
//!
//! Input: the spec's text (UTF-8; other bytes are skipped).

#![no_main]

use libfuzzer_sys::fuzz_target;
use moonboot_imager::extension::service::ServiceSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = ServiceSpec::parse("fuzz.yaml", text) else { return };
    // What a spec that passed is promised to be.
    assert!(!spec.name.is_empty());
    assert!(spec.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
    assert!(["always", "never", "untilSuccess"].contains(&spec.restart.as_str()));
    assert!(!spec.container.entrypoint.is_empty());
    for d in &spec.depends {
        let set = [d.service.is_some(), d.path.is_some(), !d.network.is_empty(), d.time, d.configuration];
        assert_eq!(set.iter().filter(|x| **x).count(), 1, "{d:?}");
        if let Some(p) = &d.path {
            assert!(p.starts_with('/'));
        }
    }
});
