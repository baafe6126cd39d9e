//! cosign signatures over the network: verifying an image's legacy `.sig` signatures with a key
//! before its bytes are used, and pushing one ([`boot_artifact::cosign`] has the format).

use boot_artifact::cosign::{self, PublicKey, SignatureError};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::Reference;

use crate::{Error, Registry};

/// A signature that verified: what `build.json` records next to the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifiedSignature {
    /// The signed image, `REPO@sha256:…` (origin form).
    pub image: String,
    /// The digest of the signature manifest (`…:sha256-<hex>.sig`) as served.
    pub signature_manifest: Sha256Digest,
    /// The digest of the signed payload that verified.
    pub payload: Sha256Digest,
    /// The SPKI fingerprint of the key it verified with.
    pub key: Sha256Digest,
}

impl Registry {
    /// Verifies that `digest` in `image`'s repository carries a cosign signature by `key`
    /// (the legacy `sha256-<hex>.sig` tag, through the mirrors then the origin like every pull):
    /// at least one signature layer must verify with `key` and sign exactly `digest`. Sizes are
    /// capped ([`cosign::MAX_SIGNATURE_MANIFEST`], [`cosign::MAX_PAYLOAD`], [`cosign::MAX_LAYERS`]).
    ///
    /// # Errors
    /// [`Error::Signature`] with [`SignatureError::Unsigned`] when no endpoint serves the
    /// signature tag; otherwise the most telling failure over the layers (a grafted signature,
    /// then a malformed payload, then a bad signature). Transport errors on the payloads as
    /// [`Registry::fetch_blob`].
    pub async fn verify_cosign(
        &self,
        image: &Reference,
        digest: &Sha256Digest,
        key: &PublicKey,
    ) -> Result<VerifiedSignature, Error> {
        let name = format!("{}/{}@{digest}", image.registry, image.repository);
        let fail = |reason| Error::Signature { image: name.clone(), reason };
        let sig_ref = Reference { tag: Some(cosign::signature_tag(digest)), digest: None, ..image.clone() };
        // A signature manifest has an image config with an empty platform: any architecture.
        let resolved = match self.resolve(&sig_ref, "amd64").await {
            Ok(r) => r,
            Err(Error::Unavailable { attempts, .. }) => {
                let why = crate::join_attempts(&attempts);
                return Err(fail(SignatureError::Unsigned(format!("no {} ({why})", cosign::signature_tag(digest)))));
            }
            Err(e) => return Err(e),
        };
        let layers = cosign::signature_layers(&resolved.manifest, resolved.manifest_bytes.len()).map_err(fail)?;
        let mut best: Option<SignatureError> = None;
        for (layer, signature) in layers {
            let mut payload = Vec::with_capacity(layer.size as usize);
            self.fetch_blob(&resolved, &layer, &mut payload).await?;
            match cosign::verify_payload(key, &payload, &signature, digest) {
                Ok(()) => {
                    return Ok(VerifiedSignature {
                        image: name,
                        signature_manifest: resolved.manifest_digest,
                        payload: layer.digest,
                        key: key.fingerprint(),
                    })
                }
                Err(e) => {
                    let rank = |e: &SignatureError| match e {
                        SignatureError::DigestMismatch { .. } => 3,
                        SignatureError::Malformed(_) => 2,
                        _ => 1,
                    };
                    if best.as_ref().is_none_or(|b| rank(&e) > rank(b)) {
                        best = Some(e);
                    }
                }
            }
        }
        Err(fail(best.expect("signature_layers returns at least one layer")))
    }

    /// Signs (feature `sign`) `digest` in `image`'s repository with `key` and pushes the signature as cosign does:
    /// the payload and config blobs, then the signature manifest under `sha256-<hex>.sig`
    /// (replacing what that tag held). Deterministic: signing the same digest with the same key
    /// pushes the same manifest. Returns the signature manifest's digest.
    ///
    /// # Errors
    /// Those of [`Registry::push_blob`] and [`Registry::push_manifest`].
    #[cfg(feature = "sign")]
    pub async fn push_cosign_signature(
        &self,
        image: &Reference,
        digest: &Sha256Digest,
        key: &cosign::SigningKey,
    ) -> Result<Sha256Digest, Error> {
        let payload = cosign::payload(&format!("{}/{}", image.registry, image.repository), digest);
        let (manifest, config) = cosign::signature_manifest(&payload, &key.sign(&payload));
        let target = Reference { tag: Some(cosign::signature_tag(digest)), digest: None, ..image.clone() };
        for (data, d) in [(config, manifest.config.digest), (payload, manifest.layers[0].digest)] {
            if !self.blob_exists(&target, &d).await? {
                self.push_blob(&target, data, &d).await?;
            }
        }
        self.push_manifest(&target, boot_artifact::oci::media_type::OCI_MANIFEST, manifest.to_json()).await
    }
}
