//! Learning the node's readiness phase locally, without credentials, from apid's TLS handshake.
//!
//! Talos serves its API on TCP port 50000 in both of its states, so a TCP connect tells nothing:
//! - **maintenance mode** (no machine config yet): the maintenance service answers with a
//!   self-signed server certificate and does not ask for a client certificate
//!   (`internal/app/maintenance/provider.go`: `tls.WithClientAuthType(tls.ServerOnly)`; the
//!   certificate comes from `MaintenanceServiceCerts`,
//!   `internal/app/machined/pkg/controllers/runtime/maintenance_service.go`);
//! - **configured**: apid requires a client certificate signed by the cluster's OS CA
//!   (`internal/app/apid/pkg/provider/provider.go`: `tls.WithClientAuthType(tls.Mutual)`, i.e.
//!   Go's `RequireAndVerifyClientCert`), so its handshake carries a `CertificateRequest`.
//!
//! [`probe`] dials apid, accepts whatever certificate the server presents (it has no CA to check
//! it against: that is the point of `--cert-fingerprint`) but still checks the handshake
//! signature, so the server proved it holds the key of the certificate whose fingerprint we
//! report, and records whether the server asked for a client certificate (we never send one).
//!
//! The fingerprint is what `talosctl apply-config --insecure --cert-fingerprint` and
//! `talm apply -i --cert-fingerprint` take: the standard base64 of the SHA-256 of the leaf
//! certificate's DER `SubjectPublicKeyInfo` (siderolabs/crypto `x509.SPKIFingerprint`,
//! `Fingerprint.String()` = `base64.StdEncoding`; compared by `x509.MatchSPKIFingerprints`).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Where apid listens on every Talos node (`constants.ApidPort`, 50000), seen from the node.
pub const DEFAULT_APID: &str = "127.0.0.1:50000";

/// A readiness phase. Ordered: a node in a later phase has passed the earlier ones.
///
/// Also the value of `wait --until` (clap's `ValueEnum`, the wire names; `unreachable` is not one:
/// every node has been there).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Phase {
    /// apid did not complete a TLS handshake (not started yet, or the probe failed).
    #[value(skip)]
    Unreachable,
    /// Talos is in maintenance mode: the handshake completed without a client certificate
    /// request. `talosctl apply-config --insecure` / `talm apply -i` will be accepted.
    MaintenanceReady,
    /// A machine config is applied: apid requests a client certificate.
    Configured,
    /// Configured, a control-plane node, and its etcd data directory is empty:
    /// `talosctl bootstrap` may be run against it.
    BootstrapReady,
}

impl Phase {
    /// The wire name (`maintenance_ready`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unreachable => "unreachable",
            Phase::MaintenanceReady => "maintenance_ready",
            Phase::Configured => "configured",
            Phase::BootstrapReady => "bootstrap_ready",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one TLS handshake with apid showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The server asked for a client certificate (a `CertificateRequest` message).
    pub client_cert_requested: bool,
    /// SPKI fingerprint of the server's leaf certificate ([`spki_fingerprint`]).
    pub fingerprint: String,
    /// The leaf certificate, DER.
    pub certificate: Vec<u8>,
}

impl Probe {
    /// [`Phase::Configured`] when a client certificate was requested, else
    /// [`Phase::MaintenanceReady`].
    pub fn phase(&self) -> Phase {
        if self.client_cert_requested {
            Phase::Configured
        } else {
            Phase::MaintenanceReady
        }
    }
}

/// Why a probe did not learn the phase.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// TCP connect, read or write failed (apid not listening yet, timeout).
    #[error("connecting to apid at {addr}: {source}")]
    Io {
        /// The address dialled.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake failed before the server presented and proved a certificate.
    #[error("TLS handshake with apid at {addr}: {source}")]
    Tls {
        /// The address dialled.
        addr: SocketAddr,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The server's leaf certificate is not a DER X.509 certificate we can read the SPKI of.
    #[error("apid at {addr} sent a certificate whose SubjectPublicKeyInfo cannot be read: {reason}")]
    Certificate {
        /// The address dialled.
        addr: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
}

/// What the handshake callbacks saw; shared between the verifier, the resolver and [`probe`].
#[derive(Debug, Default)]
struct Seen {
    certificate: Option<Vec<u8>>,
    client_cert_requested: bool,
    signature_verified: bool,
}

/// Accepts any server certificate, records it, and checks the handshake signature with it.
#[derive(Debug)]
struct RecordingVerifier {
    seen: Arc<Mutex<Seen>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen.lock().expect("not poisoned").certificate = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let ok = verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)?;
        self.seen.lock().expect("not poisoned").signature_verified = true;
        Ok(ok)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let ok = verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)?;
        self.seen.lock().expect("not poisoned").signature_verified = true;
        Ok(ok)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Records that the server asked for a client certificate; never offers one.
#[derive(Debug)]
struct RecordingResolver {
    seen: Arc<Mutex<Seen>>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.seen.lock().expect("not poisoned").client_cert_requested = true;
        None
    }

    fn has_certs(&self) -> bool {
        // Says "ask me" so that rustls consults resolve() when a CertificateRequest arrives.
        true
    }
}

/// Dials `addr`, runs one TLS handshake (TLS 1.2 or 1.3, ALPN `h2` as gRPC clients offer) and
/// reports what the server showed. `timeout` bounds the connect and each read/write.
///
/// A server that asks for a client certificate and then rejects the empty answer (as Go's
/// `RequireAndVerifyClientCert` does, with a `certificate_required` alert during or right after
/// the handshake) still yields `Ok` with `client_cert_requested: true`, provided it presented a
/// certificate and proved its key first.
///
/// # Errors
/// [`ProbeError`] when no certificate was presented and proved.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<Probe, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|source| ProbeError::Tls { addr, source })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordingVerifier { seen: seen.clone(), provider }))
        .with_client_cert_resolver(Arc::new(RecordingResolver { seen: seen.clone() }));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Talos's certificates name the node's addresses; any name works since nothing is verified.
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|source| ProbeError::Tls { addr, source })?;
    let mut sock = TcpStream::connect_timeout(&addr, timeout).map_err(|source| ProbeError::Io { addr, source })?;
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    let _ = sock.set_nodelay(true);
    let mut outcome = Ok(());
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            outcome = Err(e);
            break;
        }
    }
    // TLS 1.3: a server that rejects the empty client certificate says so after our Finished;
    // read once more so an immediate alert is seen (not needed for the verdict, only tidy).
    if outcome.is_ok() {
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
    }
    let seen = std::mem::take(&mut *seen.lock().expect("not poisoned"));
    let certificate = match (seen.certificate, seen.signature_verified) {
        (Some(c), true) => c,
        _ => {
            return Err(match outcome {
                Err(e) => match e.into_inner().and_then(|inner| inner.downcast::<rustls::Error>().ok()) {
                    Some(tls) => ProbeError::Tls { addr, source: *tls },
                    None => ProbeError::Io { addr, source: io::Error::other("connection closed during the handshake") },
                },
                Ok(()) => ProbeError::Io { addr, source: io::Error::other("handshake ended without a certificate") },
            })
        }
    };
    let fingerprint = spki_fingerprint(&certificate).map_err(|reason| ProbeError::Certificate { addr, reason })?;
    Ok(Probe { client_cert_requested: seen.client_cert_requested, fingerprint, certificate })
}

/// The SPKI fingerprint of a DER X.509 certificate, as Talos prints and `--cert-fingerprint`
/// takes it: standard base64 (with padding) of SHA-256 over the DER `SubjectPublicKeyInfo`
/// (siderolabs/crypto `x509.SPKIFingerprint` hashes `Certificate.RawSubjectPublicKeyInfo`).
///
/// # Errors
/// A short reason when `cert_der` is not shaped like a certificate.
pub fn spki_fingerprint(cert_der: &[u8]) -> Result<String, &'static str> {
    let spki = subject_public_key_info(cert_der)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki)))
}

/// One DER TLV: (tag, whole encoding including header, contents).
fn der_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("truncated DER (tag)")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte DER tags are not used in certificates");
    }
    let (&first, rest) = rest.split_first().ok_or("truncated DER (length)")?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length");
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    let end = header.checked_add(len).ok_or("bad DER length")?;
    if input.len() < end {
        return Err("truncated DER (contents)");
    }
    Ok((tag, &input[..end], &input[header..end]))
}

/// The DER `SubjectPublicKeyInfo` (with its SEQUENCE header) of an X.509 certificate
/// (RFC 5280 §4.1: `Certificate ::= SEQUENCE { tbsCertificate, … }`, `TBSCertificate ::=
/// SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, … }`). The bytes are returned as they are in the certificate, never
/// re-encoded, so the hash matches Go's `RawSubjectPublicKeyInfo`.
fn subject_public_key_info(cert_der: &[u8]) -> Result<&[u8], &'static str> {
    const SEQUENCE: u8 = 0x30;
    let (tag, _, cert) = der_tlv(cert_der)?;
    if tag != SEQUENCE {
        return Err("certificate is not a SEQUENCE");
    }
    let (tag, _, mut tbs) = der_tlv(cert)?;
    if tag != SEQUENCE {
        return Err("tbsCertificate is not a SEQUENCE");
    }
    // Skip the optional [0] EXPLICIT version.
    if tbs.first() == Some(&0xa0) {
        let (_, whole, _) = der_tlv(tbs)?;
        tbs = &tbs[whole.len()..];
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        let (_, whole, _) = der_tlv(tbs)?;
        tbs = &tbs[whole.len()..];
    }
    let (tag, spki, _) = der_tlv(tbs)?;
    if tag != SEQUENCE {
        return Err("subjectPublicKeyInfo is not a SEQUENCE");
    }
    Ok(spki)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use std::net::TcpListener;
    use std::thread;

    /// A self-signed server certificate and its key, as the maintenance service has.
    fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["talos-test".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        // rcgen encodes the SPKI itself (yasna): an independent check of our DER walk.
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        (cert.der().clone(), PrivateKeyDer::try_from(key.serialize_der()).unwrap(), spki)
    }

    /// Serves `accepts` TLS handshakes on a loopback port with a fresh self-signed certificate;
    /// returns the address and the SPKI DER of the served key.
    fn serve(
        request_client_cert: bool,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
        accepts: usize,
    ) -> (SocketAddr, Vec<u8>) {
        // The stand-in Talos init's apid server (tests/standin-init), so unit tests and the QEMU
        // tests face the same server.
        let tls = standin_init::apid_tls(request_client_cert, versions).unwrap();
        let (config, spki) = (tls.config, tls.spki);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(accepts) {
                let mut stream = stream.unwrap();
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut stream).is_err() {
                        break;
                    }
                }
                let _ = conn.complete_io(&mut stream);
            }
        });
        (addr, spki)
    }

    const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    fn fingerprint_of(spki: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki))
    }

    #[test]
    fn maintenance_mode_server_is_maintenance_ready() {
        for versions in [rustls::ALL_VERSIONS, TLS12_ONLY] {
            let (addr, spki) = serve(false, versions, 1);
            let p = probe(addr, Duration::from_secs(10)).unwrap();
            assert_eq!(p.phase(), Phase::MaintenanceReady);
            assert!(!p.client_cert_requested);
            assert_eq!(p.fingerprint, fingerprint_of(&spki));
            assert_eq!(subject_public_key_info(&p.certificate).unwrap(), &spki[..]);
        }
    }

    #[test]
    fn client_cert_request_means_configured() {
        for versions in [rustls::ALL_VERSIONS, TLS12_ONLY] {
            let (addr, spki) = serve(true, versions, 1);
            let p = probe(addr, Duration::from_secs(10)).unwrap();
            assert_eq!(p.phase(), Phase::Configured, "versions {versions:?}");
            assert_eq!(p.fingerprint, fingerprint_of(&spki));
        }
    }

    #[test]
    fn closed_port_is_an_io_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(probe(addr, Duration::from_secs(5)), Err(ProbeError::Io { .. })));
    }

    #[test]
    fn plain_tcp_server_is_not_ready() {
        // A port that accepts and closes (what `nc -z` would call "open") is not readiness.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().take(1) {
                drop(s);
            }
        });
        assert!(probe(addr, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn fingerprint_is_talos_encoding() {
        // sha256("") in standard base64, padded: the shape talosctl prints.
        assert_eq!(fingerprint_of(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        let (cert, _, spki) = self_signed();
        assert_eq!(spki_fingerprint(&cert).unwrap(), fingerprint_of(&spki));
        assert!(spki_fingerprint(b"\x30\x03\x02\x01\x01").is_err());
        assert!(spki_fingerprint(&cert[..cert.len() - 1]).is_err());
    }

    #[test]
    fn phases_are_ordered_and_named() {
        assert!(Phase::Unreachable < Phase::MaintenanceReady);
        assert!(Phase::MaintenanceReady < Phase::Configured);
        assert!(Phase::Configured < Phase::BootstrapReady);
        for p in [Phase::Unreachable, Phase::MaintenanceReady, Phase::Configured, Phase::BootstrapReady] {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Phase>(&format!("\"{p}\"")).unwrap(), p);
        }
        // The `wait --until` values: the wire names, but not `unreachable`.
        use clap::ValueEnum;
        let until: Vec<&str> = Phase::value_variants().iter().map(|p| p.as_str()).collect();
        assert_eq!(until, ["maintenance_ready", "configured", "bootstrap_ready"]);
        for p in Phase::value_variants() {
            assert_eq!(Phase::from_str(p.as_str(), false), Ok(*p));
        }
        assert!(Phase::from_str("ready", false).is_err());
    }
}
