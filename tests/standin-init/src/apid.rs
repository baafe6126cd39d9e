//! TEST PROGRAM — answers TLS on port 50000 the way Talos's API does, so `talos-agent report`'s
//! phase detection is exercised against a real handshake:
//! - default (`maintenance` mode): a self-signed server certificate, no client certificate
//!   requested (Talos `internal/app/maintenance/provider.go`, `tls.ServerOnly`);
//! - `standin.apid=configured` on the kernel command line: the handshake also requests a client
//!   certificate, and the stand-in requires one but accepts any (apid requires one signed by the
//!   OS CA: `internal/app/apid/pkg/provider/provider.go`, `tls.Mutual`).
//!
//! The certificate is generated at boot (rcgen, ECDSA P-256). Its SPKI fingerprint, computed here
//! from the key as rcgen encodes it (base64 of SHA-256 of the DER SubjectPublicKeyInfo, as
//! siderolabs/crypto `x509.SPKIFingerprint` and `talosctl --cert-fingerprint`), is printed as
//! `MOONBOOT-STANDIN-INIT: apid fingerprint=<…> mode=<…>` so tests compare it with what the
//! agent reports. No API is served: after the handshake the connection is closed.

use std::net::TcpListener;

use crate::{say, Result};

/// `configured` when `standin.apid=configured` is on the command line or the image embeds a
/// machine configuration complete for boot ([`crate::embedded_config`]), else `maintenance`.
pub fn mode(cmdline: &str) -> &'static str {
    if cmdline.split_whitespace().any(|a| a == "standin.apid=configured") || crate::embedded_config::complete() {
        "configured"
    } else {
        "maintenance"
    }
}

/// Generates the certificate, prints its fingerprint, and serves handshakes on `0.0.0.0:50000`
/// in a background thread.
pub fn start(cmdline: &str) -> Result<()> {
    let mode = mode(cmdline);
    let tls = standin_init::apid_tls(mode == "configured", rustls::ALL_VERSIONS)?;
    let (config, fingerprint) = (tls.config, tls.fingerprint);
    let listener = TcpListener::bind("0.0.0.0:50000").map_err(|e| format!("apid: listening on :50000: {e}"))?;
    say(&format!("apid fingerprint={fingerprint} mode={mode} listening on :50000"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let Ok(mut conn) = rustls::ServerConnection::new(config) else { return };
                while conn.is_handshaking() {
                    if conn.complete_io(&mut stream).is_err() {
                        return;
                    }
                }
                conn.send_close_notify();
                let _ = conn.complete_io(&mut stream);
            });
        }
    });
    Ok(())
}
