//! OCI registry access for moonboot: resolve a reference to the image manifest of one platform,
//! stream blobs with size and digest verification, and push blobs and manifests.
//!
//! The registry protocol itself (token challenges, chunked uploads, Range requests) is
//! `oci-client`'s; this crate adds what moonboot's users need around it:
//! - **mirrors**: `ghcr.io=10.20.13.140:5000` mappings tried in order, falling back to the origin
//!   ([`boot_artifact::reference::Reference::endpoints`]), as a `registry:2` pull-through cache
//!   serves the origin's repositories under the same names;
//! - **insecure registries**: plain HTTP only for hosts named in [`Options::insecure`];
//! - **credentials** from `REGISTRY_AUTH_FILE` / `~/.docker/config.json` ([`auth`]), anonymous
//!   bearer tokens otherwise (as ghcr.io hands out);
//! - **platform selection** for the *requested* architecture, never the registry's default, with
//!   the image config's `architecture` checked too;
//! - **verified streaming**: every blob is hashed while it streams into the caller's sink, its size
//!   is bounded by the descriptor, and transient failures (connection errors, 5xx, 429, a body cut
//!   short) are retried with exponential backoff, resuming with `Range` where the registry allows.
//!
//! Everything is async (tokio); callers pick the runtime. The rustls `ring` provider is installed
//! as the process default on first use.

#![deny(missing_docs)]

pub mod auth;
mod probe;
pub mod token;
mod verify;

use verify::Verifier;

use std::path::PathBuf;
use std::time::Duration;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::{media_type, Document, ImageConfig, ParseError};
use boot_artifact::reference::{Endpoint, Mirror, Reference};
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

pub use auth::{AuthFile, Credentials};
pub use boot_artifact::oci::{Descriptor, ImageManifest};

/// Largest manifest or index accepted, in bytes (distribution caps manifests at 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Largest image config read by [`Registry::resolve`], in bytes.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;
/// Blobs of at least this many bytes (1 MiB) are requested with `Range: bytes=0-` so that only
/// our own SHA-256 pass runs over them (see `fetch_attempt`).
const RANGE_FROM_ZERO_MIN: u64 = 1 << 20;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mirrors, tried in order before the origin registry they mirror.
    pub mirrors: Vec<Mirror>,
    /// `HOST[:PORT]` of registries reached over plain HTTP. Every other host uses TLS.
    pub insecure: Vec<String>,
    /// Auth file to read; `None` reads [`auth::default_path`].
    pub auth_file: Option<PathBuf>,
    /// Retries per endpoint for transient failures (so `retries + 1` attempts).
    pub retries: u32,
    /// Delay before the first retry; doubles on each retry, capped at 5 s.
    pub backoff: Duration,
    /// Connection timeout per attempt.
    pub connect_timeout: Duration,
    /// Longest silence on a connection before the attempt counts as failed.
    pub read_timeout: Duration,
    /// Extra PEM CA certificates to trust (a bastion registry with a private CA).
    pub ca_files: Vec<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mirrors: Vec::new(),
            insecure: Vec::new(),
            auth_file: None,
            retries: 4,
            backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            ca_files: Vec::new(),
        }
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The auth file could not be used.
    #[error(transparent)]
    AuthFile(#[from] auth::AuthFileError),
    /// A CA file could not be read.
    #[error("reading CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTPS client could not be set up (typically: no CA certificates on this system).
    #[error("setting up TLS: {reason} (install the ca-certificates package or pass a CA file)")]
    Tls {
        /// The reason.
        reason: String,
    },
    /// No endpoint could serve the reference; one reason per endpoint tried, in order.
    #[error("{reference}: {}", join_attempts(.attempts))]
    Unavailable {
        /// The reference (origin form).
        reference: String,
        /// `(host, reason)` for each endpoint tried.
        attempts: Vec<(String, String)>,
    },
    /// The index has no manifest for the requested platform.
    #[error("{reference}: no linux/{arch} image in its index (it has: {})", if available.is_empty() { "nothing".to_string() } else { available.join(", ") })]
    NoPlatform {
        /// The reference.
        reference: String,
        /// The requested architecture.
        arch: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// The image (or its config) is for another architecture than requested.
    #[error("{reference}: image is for {found}, not linux/{arch}")]
    WrongArchitecture {
        /// The reference.
        reference: String,
        /// The requested architecture.
        arch: String,
        /// What the image config says.
        found: String,
    },
    /// A manifest, index or config does not parse; names the field.
    #[error("{what}: {source}")]
    Malformed {
        /// Which document (`manifest of ghcr.io/…@sha256:…`).
        what: String,
        /// The field and reason.
        source: ParseError,
    },
    /// Bytes did not hash to the digest they were fetched by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// The digest asked for.
        expected: Sha256Digest,
        /// The digest of the bytes received.
        actual: Sha256Digest,
    },
    /// A blob was longer or shorter than its descriptor says.
    #[error("{what}: size mismatch: descriptor says {expected} bytes, registry sent {actual}{}", if *.more { " or more" } else { "" })]
    SizeMismatch {
        /// What was fetched.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// Bytes received.
        actual: u64,
        /// True when the transfer was cut off because it exceeded `expected`.
        more: bool,
    },
    /// A document is larger than allowed.
    #[error("{what}: larger than the {limit}-byte limit")]
    TooLarge {
        /// What was fetched.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Writing to the caller's sink failed.
    #[error("{what}: writing: {source}")]
    Sink {
        /// What was being fetched.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry refused the credentials (or their absence): 401 or 403.
    #[error("{registry}: {reason}; credentials used: {credentials}")]
    Unauthorized {
        /// `HOST[:PORT]` of the registry.
        registry: String,
        /// What the registry said.
        reason: String,
        /// Where the credentials came from ([`Registry::credential_source`]).
        credentials: String,
    },
    /// A push failed.
    #[error("pushing {what} to {target}: {reason}")]
    Push {
        /// What was pushed (`blob sha256:…`, `manifest`).
        what: String,
        /// Where.
        target: String,
        /// The registry's or transport's reason.
        reason: String,
        /// Whether asking again may succeed: a 5xx, 408 or 429 answer, a failed connection, or
        /// one of distribution's answers to a read that raced a concurrent writer of the same
        /// repository ([`concurrent_writer_answer`]).
        transient: bool,
    },
}

fn join_attempts(attempts: &[(String, String)]) -> String {
    attempts.iter().map(|(h, r)| format!("{h}: {r}")).collect::<Vec<_>>().join("; ")
}

/// A reference resolved to one platform's image manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference as asked for (origin registry, not the mirror).
    pub reference: Reference,
    /// The endpoint that answered; blobs are fetched from it first.
    pub endpoint: Endpoint,
    /// The digest of the index the platform manifest was selected from, if the reference named an index.
    pub index_digest: Option<Sha256Digest>,
    /// The digest of the platform's image manifest.
    pub manifest_digest: Sha256Digest,
    /// The image manifest.
    pub manifest: ImageManifest,
    /// The manifest's bytes, exactly as served (they hash to `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    /// The image config's bytes (they hash to `manifest.config.digest`).
    pub config_bytes: Vec<u8>,
}

/// A registry client with mirrors, insecure hosts and credentials applied.
pub struct Registry {
    client: oci_client::Client,
    options: Options,
    auth: AuthFile,
    /// The auth file read (or looked for), for messages about credentials.
    auth_path: Option<PathBuf>,
    /// Plain HTTP client for token endpoints (identity-token exchange).
    http: reqwest::Client,
    /// Access tokens obtained with identity tokens, by (host, repository, push).
    tokens: std::sync::Mutex<std::collections::HashMap<(String, String, bool), String>>,
}

/// Whether an error is worth retrying on the same endpoint.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429 || *code == 408,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, oci_client::errors::OciErrorCode::Toomanyrequests))
        }
        _ => false,
    }
}

/// Whether `e` is an answer distribution (registry:2) gives while another client writes the same
/// repository, which a later attempt does not get: `DIGEST_INVALID`, `MANIFEST_BLOB_UNKNOWN` or
/// `BLOB_UNKNOWN` to a manifest `PUT`.
///
/// Why: distribution's filesystem storage driver writes a file by opening it, truncating it and
/// then writing (`registry/storage/driver/filesystem/driver.go` `PutContent` → `Writer`, v2.8.3),
/// and a blob upload or manifest `PUT` rewrites the repository's link files that way even when
/// they already hold the same digest (`registry/storage/linkedblobstore.go` `linkBlob`). A
/// concurrent reader of a link can find it empty: `blobStore.readlink` (`blobstore.go`) then fails
/// `digest.Parse` with `ErrDigestInvalidFormat`, which the manifest `PUT` handler answers as
/// `DIGEST_INVALID` (`registry/handlers/manifests.go`) and the manifest verifier counts as an
/// unknown blob (`registry/storage/ocimanifesthandler.go` `verifyManifest`); the same empty tag
/// link makes a `HEAD` of the tag answer 500 `UNKNOWN`.
pub fn concurrent_writer_answer(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode as C;
    const CODES: [&str; 3] = ["\"DIGEST_INVALID\"", "\"MANIFEST_BLOB_UNKNOWN\"", "\"BLOB_UNKNOWN\""];
    match e {
        OciDistributionError::ServerError { code: 400 | 404, message, .. } => CODES.iter().any(|c| message.contains(c)),
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|x| matches!(x.code, C::DigestInvalid | C::ManifestBlobUnknown | C::BlobUnknown))
        }
        _ => false,
    }
}

/// One line for an oci-client error, with the transport cause when there is one.
fn describe(e: &OciDistributionError) -> String {
    use std::error::Error as _;
    match e {
        OciDistributionError::RequestError(r) => {
            let mut s = if r.is_connect() {
                "connection failed".to_string()
            } else if r.is_timeout() {
                "timed out".to_string()
            } else {
                r.to_string()
            };
            let mut src = r.source();
            let mut last = String::new();
            while let Some(cause) = src {
                last = cause.to_string();
                src = cause.source();
            }
            if !last.is_empty() && !s.contains(&last) {
                s = format!("{s}: {last}");
            }
            s
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let m = message.trim();
            if m.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {}", m.chars().take(200).collect::<String>())
            }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().map(|e| format!("{:?}: {}", e.code, e.message)).collect::<Vec<_>>().join(", ")
        }
        OciDistributionError::UnauthorizedError { .. } => "unauthorized (check credentials in the auth file)".into(),
        other => other.to_string(),
    }
}

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
    /// Builds a client. Reads the auth file and CA files now, so a bad one fails early.
    pub fn new(options: Options) -> Result<Registry, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let auth_path = options.auth_file.clone().or_else(auth::default_path);
        let auth = match &auth_path {
            Some(p) => AuthFile::load(p)?,
            None => AuthFile::default(),
        };
        let mut extra = Vec::new();
        let mut http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("moonboot/", env!("CARGO_PKG_VERSION")));
        for path in &options.ca_files {
            let data = std::fs::read(path).map_err(|source| Error::CaFile { path: path.clone(), source })?;
            let cert = reqwest::Certificate::from_pem(&data)
                .map_err(|e| Error::CaFile { path: path.clone(), source: std::io::Error::other(e) })?;
            http = http.add_root_certificate(cert);
            extra
                .push(oci_client::client::Certificate { encoding: oci_client::client::CertificateEncoding::Pem, data });
        }
        let http = http.build().map_err(|e| Error::Tls { reason: e.to_string() })?;
        let config = ClientConfig {
            protocol: if options.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(options.insecure.clone())
            },
            extra_root_certificates: extra,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            user_agent: concat!("moonboot/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        // `Client::new` would fall back to a default client — which panics — when the TLS set-up
        // fails, e.g. on a system without CA certificates: fail with the reason instead.
        let client = oci_client::Client::try_from(config).map_err(|e| Error::Tls { reason: describe(&e) })?;
        Ok(Registry { client, options, auth, auth_path, http, tokens: Default::default() })
    }

    /// Where the credentials for `host` come from, for messages: `credentials for HOST from
    /// FILE`, or why the requests are anonymous.
    pub fn credential_source(&self, host: &str) -> String {
        let file = self.auth_path.as_ref().map(|p| p.display().to_string());
        match (self.auth.get(host), file) {
            (Some(Credentials::Basic { username, .. }), Some(f)) => {
                format!("user {username:?} for {host} from {f}")
            }
            (Some(Credentials::IdentityToken(_)), Some(f)) => format!("the identity token for {host} from {f}"),
            (Some(_), None) => format!("credentials for {host}"),
            (None, Some(f)) => format!("anonymous (no credentials for {host} in {f})"),
            (None, None) => "anonymous (no auth file: set REGISTRY_AUTH_FILE or DOCKER_CONFIG)".to_string(),
        }
    }

    /// The options this client was built with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The credentials for `repository` at `host`: basic credentials as they are, an identity
    /// token exchanged for an access token to that repository (pull, or pull and push) at the
    /// registry's token endpoint ([`token`]), cached for the life of this client.
    ///
    /// # Errors
    /// Why the exchange failed, as one line.
    async fn auth_for(&self, host: &str, repository: &str, push: bool) -> Result<RegistryAuth, String> {
        match self.auth.get(host) {
            Some(Credentials::Basic { username, password }) => {
                Ok(RegistryAuth::Basic(username.clone(), password.clone()))
            }
            Some(Credentials::IdentityToken(refresh)) => {
                let key = (host.to_string(), repository.to_string(), push);
                if let Some(t) = self.tokens.lock().expect("token cache").get(&key) {
                    return Ok(RegistryAuth::Bearer(t.clone()));
                }
                let scheme = if self.options.insecure.iter().any(|h| h == host) { "http" } else { "https" };
                let scope = format!("repository:{repository}:{}", if push { "pull,push" } else { "pull" });
                let access = token::exchange(&self.http, &format!("{scheme}://{host}"), &scope, refresh)
                    .await
                    .map_err(|e| format!("exchanging the identity token for {host}: {e}"))?;
                self.tokens.lock().expect("token cache").insert(key, access.clone());
                Ok(RegistryAuth::Bearer(access))
            }
            None => Ok(RegistryAuth::Anonymous),
        }
    }

    /// The oci-client reference for `r` at `host`, by digest when given, else by tag.
    fn at(host: &str, r: &Reference, digest: Option<&Sha256Digest>) -> oci_client::Reference {
        match digest.or(r.digest.as_ref()) {
            Some(d) => oci_client::Reference::with_digest(host.to_string(), r.repository.clone(), d.to_string()),
            None => oci_client::Reference::with_tag(
                host.to_string(),
                r.repository.clone(),
                r.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }

    /// Sleeps before retry number `attempt + 1`: [`Options::backoff`] doubled `attempt` times,
    /// at most 5 s.
    pub async fn backoff(&self, attempt: u32) {
        let d = self.options.backoff.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(5));
        tokio::time::sleep(d).await;
    }

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
        let what = || format!("blob {} of {}", desc.digest, reference_name(&from.reference));
        let verifier = Verifier::threaded(sink).map_err(|source| Error::Sink { what: what(), source })?;
        self.fetch_verified(from, desc, verifier).await
    }

    async fn fetch_verified(&self, from: &Resolved, desc: &Descriptor, verifier: Verifier<'_>) -> Result<(), Error> {
        let what = format!("blob {} of {}", desc.digest, reference_name(&from.reference));
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
            |reason| Error::Unavailable {
                reference: format!("blob {} of {}", desc.digest, reference_name(&from.reference)),
                attempts: vec![(host.clone(), reason)],
            },
        )?;
        Ok(true)
    }

    /// Asks `from`'s endpoint for the first byte of `desc` (`Range: bytes=0-0`) and hangs up
    /// without reading any longer answer. `Ok(true)` when the registry answered with that range
    /// (206): it serves the blob from its own storage. A pull-through cache that does not hold
    /// the blob yet answers 200 and streams the whole blob from upstream (distribution 2.8
    /// `registry/proxy/proxyblobstore.go`: `copyContent` ignores Range), and on a first miss
    /// starts storing it (`storeLocal`); dropping that answer at once stops the streamed copy.
    /// An empty blob counts as held. What a 200 answer costs upstream before the hang-up reaches
    /// the cache is what the links' buffers held (a few MiB on a fast link).
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the endpoint and the answer.
    pub async fn blob_is_local(&self, from: &Resolved, desc: &Descriptor) -> Result<bool, Error> {
        if desc.size == 0 {
            return Ok(true);
        }
        let what = format!("blob {} of {}", desc.digest, reference_name(&from.reference));
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

fn reference_name(r: &Reference) -> String {
    format!("{}/{}", r.registry, r.repository)
}

/// `desc` as oci-client's descriptor type, for its blob requests.
fn oci_descriptor(desc: &Descriptor) -> oci_client::manifest::OciDescriptor {
    oci_client::manifest::OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.to_string(),
        size: desc.size as i64,
        ..Default::default()
    }
}
