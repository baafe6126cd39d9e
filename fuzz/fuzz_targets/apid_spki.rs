//! The DER reader that takes the SPKI fingerprint of apid's certificate, as received in the TLS
//! handshake by `talos-agent report` (`agent/src/report/phase.rs` `spki_fingerprint`, included by
//! this crate's lib with `#[path]`).
//!
//! Input: the certificate's DER bytes. A fingerprint is standard base64 of a SHA-256: 44 bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moonboot_fuzz::report::phase::spki_fingerprint;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = spki_fingerprint(data) {
        assert_eq!(f.len(), 44, "{f}");
        assert!(f.ends_with('='));
    }
});
