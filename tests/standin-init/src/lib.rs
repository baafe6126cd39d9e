//! TEST PROGRAM library part: a TLS server configured like Talos's apid, shared by the stand-in
//! init (`src/apid.rs`) and the tests of `talos-agent report`'s phase detection, so all of them
//! exercise the same server:
//! - maintenance mode: a self-signed certificate, no client certificate requested (Talos
//!   `internal/app/maintenance/provider.go`, `tls.ServerOnly`);
//! - configured: the handshake also requests a client certificate; this server requires one but
//!   accepts any (apid requires one signed by the OS CA: `internal/app/apid/pkg/provider/provider.go`,
//!   `tls.Mutual`).

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// Requires a client certificate and accepts any (signatures are still checked).
#[derive(Debug)]
pub struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A freshly generated apid-like TLS server configuration.
pub struct ApidTls {
    /// The rustls server configuration (ALPN `h2`, like apid's gRPC).
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate's DER SubjectPublicKeyInfo as rcgen encodes it.
    pub spki: Vec<u8>,
    /// Base64 (standard, padded) of SHA-256 of `spki`: siderolabs/crypto `x509.SPKIFingerprint`,
    /// what `talosctl --cert-fingerprint` takes.
    pub fingerprint: String,
}

/// Generates a self-signed ECDSA P-256 certificate for `talos-standin` / 127.0.0.1 and a server
/// configuration that requests a client certificate when `request_client_cert` (configured) and
/// not otherwise (maintenance mode), for the given TLS versions.
///
/// # Errors
/// Key generation or configuration failures, as text.
pub fn apid_tls(
    request_client_cert: bool,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
) -> Result<ApidTls, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("apid: generating a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec!["talos-standin".to_string()])
        .map_err(|e| format!("apid: certificate parameters: {e}"))?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = params.self_signed(&key).map_err(|e| format!("apid: self-signing: {e}"))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let fingerprint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("apid: {e}"))?;
    let builder = if request_client_cert {
        builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
    } else {
        builder.with_no_client_auth()
    };
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| format!("apid: key: {e}"))?;
    let mut config = builder.with_single_cert(vec![cert.der().clone()], key_der).map_err(|e| format!("apid: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ApidTls { config: Arc::new(config), spki, fingerprint })
}
