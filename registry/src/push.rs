//! Push: blobs and manifests, with the credentials for the target, retries of transient answers
//! (including distribution's answers to a concurrent writer of the same repository), and the
//! existence checks the imager makes before it pushes.

use super::*;

impl Registry {
    fn push_host(&self, target: &Reference) -> String {
        target.endpoints(&[], &self.options.insecure).remove(0).host
    }

    /// Turns an error of a push-side request into [`Error::Unauthorized`] when it is a 401/403,
    /// else [`Error::Push`].
    fn push_error(&self, what: String, target: &Reference, e: &OciDistributionError) -> Error {
        let denied = match e {
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => true,
            OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
            OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied
                )
            }),
            OciDistributionError::RequestError(r) => r.status().is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403),
            _ => false,
        };
        if denied {
            let host = self.push_host(target);
            let said = match e {
                OciDistributionError::RequestError(r) => {
                    r.status().map_or_else(|| describe(e), |s| format!("HTTP {s}"))
                }
                other => describe(other),
            };
            return Error::Unauthorized {
                reason: format!("authentication refused ({said}) at {what} of {target}"),
                credentials: self.credential_source(&host),
                registry: host,
            };
        }
        Error::Push {
            what,
            target: target.to_string(),
            reason: describe(e),
            transient: transient(e) || concurrent_writer_answer(e),
        }
    }

    /// Runs a push-side request `op`, again after a backoff while it fails with a transient
    /// [`Error::Push`] (at most [`Options::retries`] more times), saying so on stderr.
    async fn push_retrying<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e @ Error::Push { transient: true, .. }) if attempt < self.options.retries => {
                    eprintln!("registry: {e}; asking again ({}/{})", attempt + 1, self.options.retries);
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn push_credentials(&self, host: &str, target: &Reference) -> Result<RegistryAuth, Error> {
        self.auth_for(host, &target.repository, true).await.map_err(|reason| Error::Unauthorized {
            registry: host.to_string(),
            reason,
            credentials: self.credential_source(host),
        })
    }

    /// Authenticates for pushing to `target`'s repository. Returns the oci-client reference
    /// (by `target`'s digest when it has one, else its tag) and the credentials used.
    async fn push_auth(&self, target: &Reference) -> Result<(oci_client::Reference, RegistryAuth), Error> {
        let host = self.push_host(target);
        let oref = Self::at(&host, target, None);
        let auth = self.push_credentials(&host, target).await?;
        self.client
            .auth(&oref, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.push_error("credentials".into(), target, &e))?;
        Ok((oref, auth))
    }

    /// The digest of the manifest `target` (by tag or digest) names in its repository, or `None`
    /// when the registry does not have it. HEAD first; a registry that sends no
    /// `Docker-Content-Digest` is asked with GET, and the body hashed.
    ///
    /// # Errors
    /// [`Error::Unauthorized`], [`Error::Push`] for other failures.
    pub async fn manifest_digest(&self, target: &Reference) -> Result<Option<Sha256Digest>, Error> {
        self.push_retrying(|| self.manifest_digest_once(target)).await
    }

    async fn manifest_digest_once(&self, target: &Reference) -> Result<Option<Sha256Digest>, Error> {
        let (oref, auth) = self.push_auth(target).await?;
        match self.client.fetch_manifest_digest(&oref, &auth).await {
            Ok(d) => {
                let digest = ImageDigestText(&d).parse(target)?;
                Ok(Some(digest))
            }
            Err(OciDistributionError::ImageManifestNotFoundError(_)) => Ok(None),
            Err(OciDistributionError::ServerError { code: 404, .. }) => Ok(None),
            Err(OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().all(|x| {
                    matches!(
                        x.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                    )
                }) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.push_error("manifest (existence check)".into(), target, &e)),
        }
    }

    /// Whether `target`'s repository already has the blob `digest` (HEAD request), asked again
    /// after transient failures.
    ///
    /// # Errors
    /// [`Error::Unauthorized`], [`Error::Push`].
    pub async fn blob_exists(&self, target: &Reference, digest: &Sha256Digest) -> Result<bool, Error> {
        self.push_retrying(|| async {
            let (oref, _) = self.push_auth(target).await?;
            self.client
                .blob_exists(&oref, &digest.to_string())
                .await
                .map_err(|e| self.push_error(format!("blob {digest} (existence check)"), target, &e))
        })
        .await
    }

    /// Uploads a blob to `target`'s repository, again after transient failures. The digest is
    /// checked locally first.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], [`Error::Unauthorized`], [`Error::Push`].
    pub async fn push_blob(&self, target: &Reference, data: Vec<u8>, digest: &Sha256Digest) -> Result<(), Error> {
        let actual = Sha256Digest::of(&data);
        if actual != *digest {
            return Err(Error::DigestMismatch { what: "blob to push".into(), expected: *digest, actual });
        }
        // Shared, not copied: each attempt hands oci-client the same buffer.
        let data = bytes::Bytes::from(data);
        self.push_retrying(|| async {
            let (oref, _) = self.push_auth(target).await?;
            self.client
                .push_blob(&oref, data.clone(), &digest.to_string())
                .await
                .map(|_| ())
                .map_err(|e| self.push_error(format!("blob {digest}"), target, &e))
        })
        .await
    }

    /// Uploads a manifest or index under `target`'s tag (or digest) and returns its digest. One
    /// attempt: a transient [`Error::Push`] (including distribution's answers to a concurrent
    /// writer, [`concurrent_writer_answer`]) is the caller's to retry, after it has confirmed
    /// that the blobs and manifests the document references are there.
    ///
    /// # Errors
    /// [`Error::Unauthorized`], [`Error::Push`].
    pub async fn push_manifest(
        &self,
        target: &Reference,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Sha256Digest, Error> {
        let digest = Sha256Digest::of(&bytes);
        let (oref, _) = self.push_auth(target).await?;
        let content_type = media_type.parse().map_err(|_| Error::Push {
            what: "manifest".into(),
            target: target.to_string(),
            reason: format!("media type {media_type:?} is not a valid header value"),
            transient: false,
        })?;
        self.client
            .push_manifest_raw(&oref, bytes, content_type)
            .await
            .map_err(|e| self.push_error("manifest".into(), target, &e))?;
        Ok(digest)
    }
}

/// A digest as a registry sent it in `Docker-Content-Digest`.
struct ImageDigestText<'a>(&'a str);

impl ImageDigestText<'_> {
    fn parse(&self, target: &Reference) -> Result<Sha256Digest, Error> {
        self.0.parse().map_err(|_| Error::Push {
            what: "manifest (existence check)".into(),
            target: target.to_string(),
            reason: format!("the registry named it {:?}, not a sha256 digest", self.0),
            transient: false,
        })
    }
}
