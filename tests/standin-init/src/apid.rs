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
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{say, Result};

/// Requires a client certificate and accepts any (signatures are still checked).
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `configured` when `standin.apid=configured` is on the command line, else `maintenance`.
pub fn mode(cmdline: &str) -> &'static str {
    if cmdline.split_whitespace().any(|a| a == "standin.apid=configured") {
        "configured"
    } else {
        "maintenance"
    }
}

/// Generates the certificate, prints its fingerprint, and serves handshakes on `0.0.0.0:50000`
/// in a background thread.
pub fn start(cmdline: &str) -> Result<()> {
    let mode = mode(cmdline);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("apid: generating a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec!["talos-standin".to_string()])
        .map_err(|e| format!("apid: certificate parameters: {e}"))?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = params.self_signed(&key).map_err(|e| format!("apid: self-signing: {e}"))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let fingerprint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("apid: {e}"))?;
    let builder = if mode == "configured" {
        builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
    } else {
        builder.with_no_client_auth()
    };
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| format!("apid: key: {e}"))?;
    let mut config = builder.with_single_cert(vec![cert.der().clone()], key_der).map_err(|e| format!("apid: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = Arc::new(config);
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
