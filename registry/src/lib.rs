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
//! The pull side (resolve, verified streaming, the pull-through cache's store) is `pull.rs`, the
//! push side `push.rs`; `verify.rs` hashes and writes what streams in, `probe.rs` speaks to a
//! pull-through cache without reading a blob.
//!
//! Everything is async (tokio); callers pick the runtime. The rustls `ring` provider is installed
//! as the process default on first use.

#![deny(missing_docs)]

pub mod auth;
mod cosign;
mod probe;
mod pull;
mod push;
pub mod token;
mod verify;

pub use cosign::VerifiedSignature;

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
    /// An image's cosign signature did not verify ([`Registry::verify_cosign`]).
    #[error("{image}: cosign signature: {reason}")]
    Signature {
        /// The image, `REPO@sha256:…`.
        image: String,
        /// What failed.
        reason: boot_artifact::cosign::SignatureError,
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

impl Resolved {
    /// The digest of the top document the reference named: the index's when it named an index,
    /// else the manifest's. When the reference pinned a digest, this is that digest (the top
    /// document was checked against it). What a signature of the reference signs, and what a
    /// tag is locked to.
    pub fn top_digest(&self) -> Sha256Digest {
        self.index_digest.unwrap_or(self.manifest_digest)
    }
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
