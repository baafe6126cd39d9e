//! Pull: resolve a reference to one platform's manifest and stream blobs through SHA-256 with
//! bounded size, retries resumed with `Range`, mirrors then the origin; and a pull-through
//! cache's store started or checked without reading a blob (`probe.rs`).

use super::*;

/// The result of one streaming attempt.
enum Attempt {
    /// All bytes arrived (the digest is checked by the caller).
    Done,
    /// A transient failure: retry this endpoint after a backoff.
    Retry(String),
    /// This endpoint cannot serve the blob (404, 401…): try the next one.
    Next(String),
    /// A final error.
    Fail(Error),
}

impl Registry {
    /// Fetches a manifest document at one endpoint with retries; verifies its digest when the
    /// digest is known.
    async fn fetch_document(
        &self,
        host: &str,
        r: &Reference,
        digest: Option<&Sha256Digest>,
    ) -> Result<(Vec<u8>, Sha256Digest), String> {
        let oref = Self::at(host, r, digest);
        let auth = self.auth_for(host, &r.repository, false).await?;
        let mut attempt = 0;
        loop {
            match self.client.pull_manifest_raw(&oref, &auth, &media_type::ACCEPTED_MANIFESTS).await {
                Ok((bytes, _)) => {
                    if bytes.len() > MAX_MANIFEST_SIZE {
                        return Err(format!("manifest larger than {MAX_MANIFEST_SIZE} bytes"));
                    }
                    let actual = Sha256Digest::of(&bytes);
                    if let Some(expected) = digest.or(r.digest.as_ref()) {
                        if *expected != actual {
                            return Err(format!("manifest digest mismatch: expected {expected}, got {actual}"));
                        }
                    }
                    return Ok((bytes.to_vec(), actual));
                }
                Err(e) if transient(&e) && attempt < self.options.retries => {
                    tracing::warn!(host, error = %describe(&e), attempt, "manifest fetch failed, retrying");
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(OciDistributionError::DigestError(e)) => return Err(format!("manifest digest mismatch: {e}")),
                Err(e) => return Err(describe(&e)),
            }
        }
    }

    /// Resolves `reference` to the `linux/<arch>` image manifest (`arch` in OCI terms: `arm64`,
    /// `amd64`), trying each mirror in order and then the origin. The manifest and the image
    /// config are verified against their digests, and the config's `architecture` must be `arch`.
    ///
    /// Errors: [`Error::Unavailable`] when no endpoint serves it (with each endpoint's reason),
    /// [`Error::NoPlatform`], [`Error::WrongArchitecture`], [`Error::Malformed`].
    pub async fn resolve(&self, reference: &Reference, arch: &str) -> Result<Resolved, Error> {
        let mut attempts = Vec::new();
        for endpoint in reference.endpoints(&self.options.mirrors, &self.options.insecure) {
            match self.resolve_at(&endpoint, reference, arch).await {
                Ok(Ok(r)) => return Ok(r),
                // A definite answer about the content (no such platform, malformed) ends the search:
                // a mirror serves the origin's bytes, so asking the origin would give the same answer.
                Ok(Err(e)) => return Err(e),
                Err(reason) => {
                    tracing::warn!(host = %endpoint.host, %reason, "registry endpoint failed");
                    attempts.push((endpoint.host.clone(), reason));
                }
            }
        }
        Err(Error::Unavailable { reference: reference.to_string(), attempts })
    }

    /// `Err(reason)`: try the next endpoint. `Ok(Err(e))`: a final error about the content.
    async fn resolve_at(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        arch: &str,
    ) -> Result<Result<Resolved, Error>, String> {
        let host = endpoint.host.as_str();
        let (bytes, digest) = self.fetch_document(host, reference, None).await?;
        let what = |d: &Sha256Digest| format!("manifest {}@{d}", reference_name(reference));
        let doc = match Document::parse(&bytes, None) {
            Ok(d) => d,
            Err(source) => return Ok(Err(Error::Malformed { what: what(&digest), source })),
        };
        let (index_digest, manifest_digest, manifest_bytes, manifest) = match doc {
            Document::Manifest(m) => (None, digest, bytes, m),
            Document::Index(index) => {
                let chosen = index.manifests.iter().find(|e| {
                    e.platform.as_ref().is_some_and(|p| p.is_linux(arch)) && media_type::is_manifest(&e.media_type)
                });
                let Some(chosen) = chosen else {
                    let available = index
                        .manifests
                        .iter()
                        .map(|e| e.platform.as_ref().map_or_else(|| "?/?".to_string(), |p| p.to_string()))
                        .collect();
                    return Ok(Err(Error::NoPlatform {
                        reference: reference.to_string(),
                        arch: arch.into(),
                        available,
                    }));
                };
                let child = chosen.digest;
                let (mbytes, mdigest) = self.fetch_document(host, reference, Some(&child)).await?;
                match Document::parse(&mbytes, Some(&chosen.media_type)) {
                    Ok(Document::Manifest(m)) => (Some(digest), mdigest, mbytes, m),
                    Ok(Document::Index(_)) => {
                        return Ok(Err(Error::Malformed {
                            what: what(&child),
                            source: ParseError {
                                field: "mediaType".into(),
                                reason: "a nested index where an image manifest was expected".into(),
                            },
                        }))
                    }
                    Err(source) => return Ok(Err(Error::Malformed { what: what(&child), source })),
                }
            }
        };
        let mut resolved = Resolved {
            reference: reference.clone(),
            endpoint: endpoint.clone(),
            index_digest,
            manifest_digest,
            manifest,
            manifest_bytes,
            config_bytes: Vec::new(),
        };
        let config = resolved.manifest.config.clone();
        if config.size > MAX_CONFIG_SIZE {
            return Ok(Err(Error::TooLarge { what: format!("config of {reference}"), limit: MAX_CONFIG_SIZE }));
        }
        let mut bytes = Vec::with_capacity(config.size as usize);
        match self.fetch_blob(&resolved, &config, &mut bytes).await {
            Ok(()) => {}
            Err(Error::Unavailable { attempts, .. }) => return Err(join_attempts(&attempts)),
            Err(e) => return Ok(Err(e)),
        }
        match ImageConfig::parse(&bytes) {
            Ok(p) => {
                // An empty `architecture` (an artifact config) says nothing; any other must match.
                if !p.architecture.is_empty() && (p.architecture != arch || (!p.os.is_empty() && p.os != "linux")) {
                    return Ok(Err(Error::WrongArchitecture {
                        reference: reference.to_string(),
                        arch: arch.into(),
                        found: format!("{}/{}", if p.os.is_empty() { "?" } else { &p.os }, p.architecture),
                    }));
                }
            }
            Err(source) => return Ok(Err(Error::Malformed { what: format!("config of {reference}"), source })),
        }
        resolved.config_bytes = bytes;
        Ok(Ok(resolved))
    }

    /// Streams the blob `desc` of `from`'s repository into `sink`, hashing as it goes.
    ///
    /// The sink receives every byte of the blob exactly once and in order, and nothing beyond
    /// `desc.size`. On success the bytes had `desc.size` and `desc.digest`. On any error the sink
    /// may hold a prefix — or, for [`Error::DigestMismatch`], all — of bytes that must be discarded.
    /// Transient failures are retried with backoff, resuming at the current offset with `Range`
    /// (a registry that ignores `Range` resends from 0 and the already-written prefix is skipped);
    /// after `retries` the next endpoint (mirror or origin) continues from the same offset.
    pub async fn fetch_blob(
        &self,
        from: &Resolved,
        desc: &Descriptor,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<(), Error> {
        self.fetch_verified(from, desc, Verifier::inline(sink)).await
    }

    /// [`Registry::fetch_blob`], with hashing and writing on a thread of their own, so the next
    /// bytes are received while the previous ones are hashed and written (`verify.rs`): for large
    /// blobs on fast links. `sink` is flushed and dropped when the blob ends (keep another handle
    /// to what it writes to, e.g. a `try_clone` of a file).
    ///
    /// # Errors
    /// Those of [`Registry::fetch_blob`]; [`Error::Sink`] when no thread can be started.
    pub async fn fetch_blob_threaded(
        &self,
        from: &Resolved,
        desc: &Descriptor,
        sink: Box<dyn std::io::Write + Send>,
    ) -> Result<(), Error> {
        let what = || blob_name(from, desc);
        let verifier = Verifier::threaded(sink).map_err(|source| Error::Sink { what: what(), source })?;
        self.fetch_verified(from, desc, verifier).await
    }

    async fn fetch_verified(&self, from: &Resolved, desc: &Descriptor, verifier: Verifier<'_>) -> Result<(), Error> {
        let what = blob_name(from, desc);
        let mut verifier = Some(verifier);
        let mut offset = 0u64;
        let mut endpoints = vec![from.endpoint.clone()];
        for e in from.reference.endpoints(&self.options.mirrors, &self.options.insecure) {
            if e != from.endpoint {
                endpoints.push(e);
            }
        }
        let mut attempts = Vec::new();
        for endpoint in &endpoints {
            let oref = Self::at(&endpoint.host, &from.reference, Some(&from.manifest_digest));
            let auth = match self.auth_for(&endpoint.host, &from.reference.repository, false).await {
                Ok(a) => a,
                Err(reason) => {
                    attempts.push((endpoint.host.clone(), reason));
                    continue;
                }
            };
            self.client.store_auth_if_needed(oref.resolve_registry(), &auth).await;
            let mut tries = 0;
            let last = loop {
                let v = verifier.as_mut().expect("taken only when done");
                match self.fetch_attempt(&oref, desc, &what, v, &mut offset).await {
                    Attempt::Done => {
                        let v = verifier.take().expect("taken only once");
                        let hash = v.finish().await.map_err(|source| Error::Sink { what: what.clone(), source })?;
                        let actual = Sha256Digest::from_bytes(hash);
                        if actual != desc.digest {
                            return Err(Error::DigestMismatch { what, expected: desc.digest, actual });
                        }
                        return Ok(());
                    }
                    Attempt::Fail(e) => return Err(e),
                    Attempt::Retry(reason) if tries < self.options.retries => {
                        tracing::warn!(host = %endpoint.host, %reason, offset, "blob transfer failed, retrying");
                        self.backoff(tries).await;
                        tries += 1;
                    }
                    Attempt::Retry(reason) | Attempt::Next(reason) => break reason,
                }
            };
            attempts.push((endpoint.host.clone(), last));
        }
        Err(Error::Unavailable { reference: what, attempts })
    }

    /// Asks a pull-through cache at `from`'s endpoint to store the blob `desc`, reading nothing:
    /// over plain HTTP, a request for it on a connection closed as soon as the request is sent
    /// (`probe.rs`; the cache stores a blob it missed in the background, distribution 2.8
    /// `registry/proxy/proxyblobstore.go` `storeLocal`). `Ok(false)` when the endpoint is HTTPS:
    /// use [`Registry::blob_is_local`], whose answer also starts the store.
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the endpoint, when the request could not be sent.
    pub async fn start_storing(&self, from: &Resolved, desc: &Descriptor) -> Result<bool, Error> {
        if !from.endpoint.plain_http || desc.size == 0 {
            return Ok(false);
        }
        let host = &from.endpoint.host;
        probe::request_and_hang_up(host, &from.reference.repository, &desc.digest.to_string()).await.map_err(
            |reason| Error::Unavailable { reference: blob_name(from, desc), attempts: vec![(host.clone(), reason)] },
        )?;
        Ok(true)
    }

    /// Asks `from`'s endpoint for the first byte of `desc` (`Range: bytes=0-0`) and hangs up
    /// without reading any longer answer. `Ok(true)` when the registry answered with that range
    /// (206): it serves the blob from its own storage. A pull-through cache that does not hold
    /// the blob yet answers 200 and streams the whole blob from upstream (distribution 2.8
    /// `registry/proxy/proxyblobstore.go`: `copyContent` ignores Range), and on a first miss
    /// starts storing it (`storeLocal`); dropping that answer at once stops the streamed copy.
    /// An empty blob counts as held. Over plain HTTP the request goes on a connection of its own
    /// with a 4 KiB receive window (`probe.rs`); over HTTPS, or when the registry asks for
    /// credentials, through `oci-client`. What a 200 answer costs upstream before the hang-up
    /// reaches the cache is what the cache had received from upstream (up to a few MiB on a fast
    /// link).
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the endpoint and the answer.
    pub async fn blob_is_local(&self, from: &Resolved, desc: &Descriptor) -> Result<bool, Error> {
        if desc.size == 0 {
            return Ok(true);
        }
        let what = blob_name(from, desc);
        let host = from.endpoint.host.clone();
        if from.endpoint.plain_http {
            let digest = desc.digest.to_string();
            match probe::first_byte(&host, &from.reference.repository, &digest).await {
                Ok(probe::Probe::Partial) => return Ok(true),
                Ok(probe::Probe::Full) => return Ok(false),
                Ok(probe::Probe::Unsupported) => {}
                Err(reason) => return Err(Error::Unavailable { reference: what, attempts: vec![(host, reason)] }),
            }
        }
        let oref = Self::at(&host, &from.reference, Some(&from.manifest_digest));
        let auth = self
            .auth_for(&host, &from.reference.repository, false)
            .await
            .map_err(|reason| Error::Unavailable { reference: what.clone(), attempts: vec![(host.clone(), reason)] })?;
        self.client.store_auth_if_needed(oref.resolve_registry(), &auth).await;
        let layer = oci_descriptor(desc);
        match self.client.pull_blob_stream_partial(&oref, &layer, 0, Some(1)).await {
            Ok(BlobResponse::Partial(_)) => Ok(true),
            Ok(BlobResponse::Full(stream)) => {
                drop(stream);
                Ok(false)
            }
            Err(e) => Err(Error::Unavailable { reference: what, attempts: vec![(host, describe(&e))] }),
        }
    }

    async fn fetch_attempt(
        &self,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        what: &str,
        verifier: &mut Verifier<'_>,
        offset: &mut u64,
    ) -> Attempt {
        if *offset == desc.size && desc.size > 0 {
            return Attempt::Done;
        }
        let layer = oci_descriptor(desc);
        // Large blobs are asked for with `Range: bytes=OFFSET-` even from byte 0: oci-client
        // hashes a full (200) response itself, which would be a second SHA-256 pass over every
        // byte on top of `hasher`, the one our caller checks; a partial (206) response it leaves
        // to us. Small blobs (and empty ones, where a range is unsatisfiable) use a plain GET.
        let response = if *offset == 0 && desc.size < RANGE_FROM_ZERO_MIN {
            self.client.pull_blob_stream(oref, &layer).await.map(|s| (s, 0u64))
        } else {
            match self.client.pull_blob_stream_partial(oref, &layer, *offset, None).await {
                Ok(BlobResponse::Partial(s)) => Ok((s, 0)),
                // The registry ignored Range: skip what the sink already has.
                Ok(BlobResponse::Full(s)) => Ok((s, *offset)),
                Err(e) => Err(e),
            }
        };
        let (mut stream, mut skip) = match response {
            Ok((s, skip)) => (s.stream, skip),
            Err(e) if transient(&e) => return Attempt::Retry(describe(&e)),
            Err(e) => return Attempt::Next(describe(&e)),
        };
        while let Some(chunk) = stream.next().await {
            let mut chunk = match chunk {
                Ok(c) => c,
                // oci-client verifies a full response itself and reports a mismatch as an error
                // after the last byte: our own hash (checked by the caller) says the same thing.
                Err(_) if *offset == desc.size => break,
                // A cut-off stream is a transient failure that resumes at `offset`.
                Err(e) => return Attempt::Retry(format!("transfer interrupted at byte {offset}: {e}")),
            };
            if skip > 0 {
                let n = (skip as usize).min(chunk.len());
                let _ = chunk.split_to(n);
                skip -= n as u64;
                if chunk.is_empty() {
                    continue;
                }
            }
            let remaining = desc.size - *offset;
            if chunk.len() as u64 > remaining {
                return Attempt::Fail(Error::SizeMismatch {
                    what: what.into(),
                    expected: desc.size,
                    actual: *offset + chunk.len() as u64,
                    more: true,
                });
            }
            let n = chunk.len() as u64;
            if let Err(source) = verifier.take(chunk).await {
                return Attempt::Fail(Error::Sink { what: what.into(), source });
            }
            *offset += n;
        }
        if *offset < desc.size {
            return Attempt::Retry(format!("connection closed after {} of {} bytes", offset, desc.size));
        }
        Attempt::Done
    }
}

/// `blob sha256:… of REGISTRY/REPO`, how errors and logs name a blob.
fn blob_name(from: &Resolved, desc: &Descriptor) -> String {
    format!("blob {} of {}", desc.digest, reference_name(&from.reference))
}
