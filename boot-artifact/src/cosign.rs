//! cosign's legacy signature format, verified with a public key and written with a private one:
//! the parts that need no network (the registry side is `moonboot-registry`'s `cosign.rs`).
//!
//! The format (cosign 2.5, which still writes it by default; sources below are
//! sigstore/cosign v2.5.0 unless named):
//! - the signatures of the image `REPO@sha256:H` live in `REPO:sha256-H.sig`
//!   (`pkg/oci/remote/remote.go` `SignatureTag`), an OCI image manifest with one layer per
//!   signature;
//! - each layer has the media type [`SIMPLE_SIGNING_MEDIA_TYPE`] (`pkg/types/media.go`) and is
//!   the signed payload itself, a JSON "simple signing" document whose
//!   `critical.image.docker-manifest-digest` names the signed digest and whose `critical.type` is
//!   [`PAYLOAD_TYPE`] (sigstore/sigstore `pkg/signature/payload/payload.go`);
//! - the layer's annotation [`SIGNATURE_ANNOTATION`] holds the base64 of the ECDSA P-256 /
//!   SHA-256 signature over the payload bytes, ASN.1 DER (`pkg/oci/static/signature.go`);
//! - a key is a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `cosign generate-key-pair` writes
//!   `cosign.pub`.
//!
//! Stricter than the cosign library as Talos and Image Factory call it: a signature counts only
//! if its payload names the exact digest being verified ([`verify_payload`]), so a valid
//! signature of image Y copied onto X's `.sig` tag is refused; sizes are capped as Talos 1.13
//! caps them (`internal/pkg/containers/image/verify/internal/cosign/cosign.go`: 128 KiB per
//! signature manifest, 1 MiB per payload, 100 layers).

use std::fmt;

use base64::Engine as _;

use crate::digest::Sha256Digest;
use crate::oci::{media_type, Descriptor, ImageManifest};

/// The media type of a signature layer (cosign `pkg/types/media.go` `SimpleSigningMediaType`).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation holding the base64 DER signature (cosign `pkg/oci/static`
/// `SignatureAnnotationKey`).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// `critical.type` of a cosign image signature payload (sigstore/sigstore
/// `pkg/signature/payload/payload.go` `CosignSignatureType`).
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The largest signature manifest read (bytes; Talos 1.13 `maxManifestSize`).
pub const MAX_SIGNATURE_MANIFEST: usize = 128 << 10;

/// The largest payload layer read (bytes; Talos 1.13 `maxPayloadSize`).
pub const MAX_PAYLOAD: u64 = 1 << 20;

/// The most layers (signatures) a signature manifest may have (Talos 1.13 `maxLayers`).
pub const MAX_LAYERS: usize = 100;

/// The tag holding the signatures of `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Sha256Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// Why a signature does not verify. Each renders as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// There is no signature manifest, or it has no signature layer.
    #[error("unsigned: {0}")]
    Unsigned(String),
    /// The signature manifest or a payload is over its cap, or has too many layers.
    #[error("{0}")]
    TooLarge(String),
    /// No signature verifies with the key.
    #[error("no signature verifies with the key ({0})")]
    BadSignature(String),
    /// A signature verifies, but its payload names another digest: a signature grafted from
    /// another image.
    #[error("the signature verifies but is for {signed}, not {wanted} (a signature of another image)")]
    DigestMismatch {
        /// What the payload names.
        signed: String,
        /// The digest being verified.
        wanted: Sha256Digest,
    },
    /// A key, signature or payload that does not parse, naming the field.
    #[error("{0}")]
    Malformed(String),
}

/// A verification key: ECDSA P-256, as in `cosign.pub`: its uncompressed point (04‖X‖Y, SEC 1
/// §2.3.3), which ring checks is on the curve when it verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 65]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// The DER SubjectPublicKeyInfo of a P-256 key up to its uncompressed point (RFC 5480 §2:
/// SEQUENCE { SEQUENCE { id-ecPublicKey 1.2.840.10045.2.1, secp256r1 1.2.840.10045.3.1.7 },
/// BIT STRING (0 unused bits) 04‖X‖Y }), as Go's `x509.MarshalPKIXPublicKey` writes `cosign.pub`.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The base64 body of the one PEM block labelled `label` in `pem`, decoded.
fn pem_body(pem: &str, label: &str) -> Result<Vec<u8>, SignatureError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start =
        pem.find(&begin).ok_or_else(|| SignatureError::Malformed(format!("not a PEM {label}: no {begin:?} line")))?;
    let rest = &pem[start + begin.len()..];
    let stop = rest.find(&end).ok_or_else(|| SignatureError::Malformed(format!("PEM {label}: no {end:?} line")))?;
    let b64: String = rest[..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| SignatureError::Malformed(format!("PEM {label}: the body is not base64: {e}")))
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY`: a SubjectPublicKeyInfo of an EC P-256 key ([`SPKI_P256_PREFIX`]).
    ///
    /// # Errors
    /// [`SignatureError::Malformed`] naming what is wrong (not PEM, not P-256, not a point).
    pub fn from_pem(pem: &str) -> Result<PublicKey, SignatureError> {
        let der = pem_body(pem, "PUBLIC KEY")?;
        let point = der
            .strip_prefix(&SPKI_P256_PREFIX[..])
            .and_then(|p| <[u8; 65]>::try_from(p).ok())
            .filter(|p| p[0] == 0x04)
            .ok_or_else(|| {
                SignatureError::Malformed(
                    "PUBLIC KEY is not an uncompressed EC P-256 key (cosign keys are; RSA, other curves and \
                     compressed points are not supported)"
                        .into(),
                )
            })?;
        Ok(PublicKey(point))
    }

    /// Reads and parses the PEM file at `path` ([`PublicKey::from_pem`]).
    ///
    /// # Errors
    /// One line without the path (callers name their flag and the path): the I/O error, or what
    /// [`PublicKey::from_pem`] refused.
    pub fn from_pem_file(path: &std::path::Path) -> Result<PublicKey, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        PublicKey::from_pem(&pem).map_err(|e| e.to_string())
    }

    /// The DER SubjectPublicKeyInfo (uncompressed point).
    fn spki_der(&self) -> Vec<u8> {
        let mut der = SPKI_P256_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        der
    }

    /// The key as a PEM `PUBLIC KEY` (64-character lines), as `cosign.pub` holds it.
    pub fn to_pem(&self) -> String {
        let b64 = self.spki_base64();
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The DER SubjectPublicKeyInfo in base64 on one line (the PEM body without its line
    /// breaks), as the EC2 user-data carries the key.
    pub fn spki_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.spki_der())
    }

    /// The SPKI fingerprint: `sha256:` of the DER SubjectPublicKeyInfo, as build.json records a
    /// key.
    pub fn fingerprint(&self) -> Sha256Digest {
        Sha256Digest::of(&self.spki_der())
    }
}

/// A signing key (feature `sign`): ECDSA P-256, from a PEM `PRIVATE KEY` (PKCS#8, e.g. `openssl genpkey -algorithm
/// EC -pkeyopt ec_paramgen_curve:P-256`) or `EC PRIVATE KEY` (SEC1); `cosign import-key-pair
/// --key` takes the same file. Signatures are deterministic (RFC 6979), so signing the same
/// digest again writes the same bytes.
#[cfg(feature = "sign")]
#[derive(Clone)]
pub struct SigningKey(p256::ecdsa::SigningKey);

#[cfg(feature = "sign")]
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public_key().fingerprint())
    }
}

#[cfg(feature = "sign")]
impl SigningKey {
    /// Parses a PEM private key (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, P-256).
    ///
    /// # Errors
    /// [`SignatureError::Malformed`]: another format (an encrypted cosign.key included: export
    /// it with `openssl` or use a key made for this), another curve.
    pub fn from_pem(pem: &str) -> Result<SigningKey, SignatureError> {
        let pem = pem.trim();
        if pem.contains("ENCRYPTED") {
            return Err(SignatureError::Malformed(
                "an encrypted private key: give an unencrypted PEM P-256 key (PRIVATE KEY or EC PRIVATE KEY)".into(),
            ));
        }
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey(k));
        }
        p256::SecretKey::from_sec1_pem(pem).map(|s| SigningKey(s.into())).map_err(|e| {
            SignatureError::Malformed(format!("not a PEM P-256 private key (PRIVATE KEY or EC PRIVATE KEY): {e}"))
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let point = self.0.verifying_key().to_sec1_point(false);
        PublicKey(point.as_bytes().try_into().expect("an uncompressed P-256 point is 65 bytes"))
    }

    /// The base64 DER signature of `payload`, as [`SIGNATURE_ANNOTATION`] holds it.
    pub fn sign(&self, payload: &[u8]) -> String {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.0.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// The simple-signing payload cosign signs for `docker_reference` (`REGISTRY/REPO`, no tag) at
/// `digest`, byte for byte as cosign 2.5 writes it with no annotations.
pub fn payload(docker_reference: &str, digest: &Sha256Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": digest.to_string() },
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    }))
    .expect("JSON values always serialise")
}

/// Checks one signature: `signature_b64` must verify over `payload` with `key`, and the payload
/// must be a cosign image signature of exactly `wanted`.
///
/// # Errors
/// [`SignatureError::BadSignature`] (including a signature that is not base64 DER),
/// [`SignatureError::DigestMismatch`], [`SignatureError::Malformed`] (the payload's fields).
pub fn verify_payload(
    key: &PublicKey,
    payload: &[u8],
    signature_b64: &str,
    wanted: &Sha256Digest,
) -> Result<(), SignatureError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| SignatureError::BadSignature(format!("{SIGNATURE_ANNOTATION} is not base64: {e}")))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &key.0[..])
        .verify(payload, &der)
        .map_err(|_| SignatureError::BadSignature("the signature does not match the payload and key".into()))?;
    let doc: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| SignatureError::Malformed(format!("signed payload: not JSON: {e}")))?;
    let critical = &doc["critical"];
    if critical["type"].as_str() != Some(PAYLOAD_TYPE) {
        return Err(SignatureError::Malformed(format!(
            "signed payload: critical.type is {}, not {PAYLOAD_TYPE:?}",
            critical["type"]
        )));
    }
    let Some(signed) = critical["image"]["docker-manifest-digest"].as_str() else {
        return Err(SignatureError::Malformed("signed payload: no critical.image.docker-manifest-digest".into()));
    };
    if signed != wanted.to_string() {
        return Err(SignatureError::DigestMismatch { signed: signed.to_string(), wanted: *wanted });
    }
    Ok(())
}

/// The signature layers of a signature manifest whose bytes were `manifest_len` long, each with
/// its base64 signature, after the size caps.
///
/// # Errors
/// [`SignatureError::TooLarge`] (manifest, layer count or a payload over its cap),
/// [`SignatureError::Unsigned`] (no simple-signing layer with a signature annotation).
pub fn signature_layers(
    manifest: &ImageManifest,
    manifest_len: usize,
) -> Result<Vec<(Descriptor, String)>, SignatureError> {
    if manifest_len > MAX_SIGNATURE_MANIFEST {
        return Err(SignatureError::TooLarge(format!(
            "signature manifest is {manifest_len} bytes, over the {MAX_SIGNATURE_MANIFEST}-byte cap"
        )));
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(SignatureError::TooLarge(format!(
            "signature manifest has {} layers, over the cap of {MAX_LAYERS}",
            manifest.layers.len()
        )));
    }
    let mut out = Vec::new();
    for l in &manifest.layers {
        if l.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let Some(sig) = l.annotations.get(SIGNATURE_ANNOTATION) else { continue };
        if l.size > MAX_PAYLOAD {
            return Err(SignatureError::TooLarge(format!(
                "signature payload {} is {} bytes, over the {MAX_PAYLOAD}-byte cap",
                l.digest, l.size
            )));
        }
        out.push((l.clone(), sig.clone()));
    }
    if out.is_empty() {
        return Err(SignatureError::Unsigned("the signature manifest has no signature layer".into()));
    }
    Ok(out)
}

/// A signature manifest as cosign writes it for one signature: the image config (empty
/// platform, the payload as its one diff ID) and `payload` as the one
/// [`SIMPLE_SIGNING_MEDIA_TYPE`] layer annotated with `signature_b64`. Returns the manifest and
/// the config's bytes.
pub fn signature_manifest(payload: &[u8], signature_b64: &str) -> (ImageManifest, Vec<u8>) {
    let mut layer = Descriptor::of(SIMPLE_SIGNING_MEDIA_TYPE, payload);
    layer.annotations.insert(SIGNATURE_ANNOTATION.into(), signature_b64.into());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer.digest.to_string()] },
    }))
    .expect("JSON values always serialise");
    let manifest = ImageManifest::new(Descriptor::of(media_type::OCI_CONFIG, &config), vec![layer], Default::default());
    (manifest, config)
}

#[cfg(all(test, feature = "sign"))]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        use p256::pkcs8::EncodePrivateKey as _;
        let k = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
        // Through PEM, as a user's key file arrives.
        SigningKey::from_pem(&k.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap()).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_its_digest_and_key() {
        let k = key();
        let x = Sha256Digest::of(b"image X");
        let y = Sha256Digest::of(b"image Y");
        let p = payload("127.0.0.1:5000/siderolabs/spin", &x);
        let s = k.sign(&p);
        assert_eq!(s, k.sign(&p), "RFC 6979: deterministic");
        let public = PublicKey::from_pem(&k.public_key().to_pem()).unwrap();
        // The user-data's one-line form, folded back into PEM as its script does (fold -w 64).
        let b64 = public.spki_base64();
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let refolded = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
        assert_eq!(PublicKey::from_pem(&refolded).unwrap(), public);
        verify_payload(&public, &p, &s, &x).unwrap();
        // The graft: X's valid signature offered for Y.
        assert!(matches!(verify_payload(&public, &p, &s, &y), Err(SignatureError::DigestMismatch { .. })));
        // One flipped byte of the signature, of the payload.
        let mut der = base64::engine::general_purpose::STANDARD.decode(&s).unwrap();
        let n = der.len() - 1;
        der[n] ^= 1;
        let flipped = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(matches!(verify_payload(&public, &p, &flipped, &x), Err(SignatureError::BadSignature(_))));
        let mut p2 = p.clone();
        p2[10] ^= 1;
        assert!(matches!(verify_payload(&public, &p2, &s, &x), Err(SignatureError::BadSignature(_))));
        // Another key.
        let other = SigningKey(p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap()).public_key();
        assert!(matches!(verify_payload(&other, &p, &s, &x), Err(SignatureError::BadSignature(_))));
    }

    #[test]
    fn the_manifest_carries_the_signature_and_caps_apply() {
        let k = key();
        let x = Sha256Digest::of(b"image X");
        let p = payload("r/x", &x);
        let (m, _config) = signature_manifest(&p, &k.sign(&p));
        let bytes = m.to_json();
        let layers = signature_layers(&m, bytes.len()).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].0.digest, Sha256Digest::of(&p));
        assert!(matches!(signature_layers(&m, MAX_SIGNATURE_MANIFEST + 1), Err(SignatureError::TooLarge(_))));
        let mut big = m.clone();
        big.layers[0].size = MAX_PAYLOAD + 1;
        assert!(matches!(signature_layers(&big, 10), Err(SignatureError::TooLarge(_))));
        let mut many = m.clone();
        many.layers = vec![m.layers[0].clone(); MAX_LAYERS + 1];
        assert!(matches!(signature_layers(&many, 10), Err(SignatureError::TooLarge(_))));
        let mut none = m.clone();
        none.layers[0].annotations.clear();
        assert!(matches!(signature_layers(&none, 10), Err(SignatureError::Unsigned(_))));
        assert_eq!(signature_tag(&x), format!("sha256-{}.sig", x.hex()));
    }

    #[test]
    fn keys_name_what_is_wrong() {
        assert!(PublicKey::from_pem("nonsense").unwrap_err().to_string().contains("PUBLIC KEY"));
        assert!(SigningKey::from_pem("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n")
            .unwrap_err()
            .to_string()
            .contains("encrypted"));
    }
}
