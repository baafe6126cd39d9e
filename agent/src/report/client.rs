//! Delivering reports: HTTP(S) POST with a bearer token, with exponential backoff between
//! failed attempts. Never gives up: a collector that is down now may be up later.
//!
//! Plain `http://` collectors are allowed: the report holds nothing secret (the fingerprint is
//! public by design: it is what the operator pins), and the bearer token, which `wait` checks,
//! authenticates the sender. The token itself crosses the network in the clear with `http://`,
//! so it should be a per-run random value (it also sits in `/proc/cmdline`, readable by every
//! process on the node). Use `https://` (system roots, or `--ca-file`) where that matters.

use std::time::Duration;

use super::schema::Report;

/// Backoff after the first failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connecting, TLS or the transfer failed (or timed out).
    #[error("POST {url}: {source}")]
    Transport {
        /// The collector URL.
        url: String,
        /// reqwest's error, with its causes.
        source: reqwest::Error,
    },
    /// The collector answered 401: the token is wrong.
    #[error("POST {url}: 401 Unauthorized (the collector refused the token)")]
    Unauthorized {
        /// The collector URL.
        url: String,
    },
    /// Any other non-2xx answer.
    #[error("POST {url}: HTTP {status}")]
    Status {
        /// The collector URL.
        url: String,
        /// The status code.
        status: u16,
    },
}

/// Why the HTTP client for the collector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--ca-file` bundle is not PEM certificates.
    #[error("reading the CA bundle: {0}")]
    CaBundle(#[source] reqwest::Error),
    /// reqwest could not build its client (TLS configuration).
    #[error("building the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A collector endpoint.
pub struct Collector {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Collector {
    /// A client for `url` with bearer `token`; `ca_pem` (PEM bundle) replaces the system roots
    /// for `https://` collectors; without it an `https://` collector needs the system's CA
    /// certificates (`/etc/ssl/certs`), which the extension service's container has only when
    /// its spec mounts them. Requests time out after `timeout`. Proxies are not used: the
    /// collector is expected on the operator's network.
    ///
    /// # Errors
    /// [`ClientError`]: the CA bundle does not parse, or reqwest cannot build its TLS
    /// configuration.
    pub fn new(url: &str, token: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, ClientError> {
        // reqwest is built without a default crypto provider; the workspace uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .user_agent(concat!("talos-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::CaBundle)?;
            b = b.tls_certs_only(certs);
        } else if !url.starts_with("https://") {
            // Plain HTTP needs no roots. Without this, reqwest loads the system's CA certificates
            // and fails where there are none, as in the extension service's container.
            b = b.tls_certs_only(Vec::new());
        }
        let http = b.build().map_err(ClientError::Build)?;
        Ok(Self { http, url: url.to_string(), token: token.to_string() })
    }

    /// The collector URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs one report (`Content-Type: application/json`, `Authorization: Bearer <token>`).
    ///
    /// # Errors
    /// [`SendError`] on any transport failure or non-2xx answer.
    pub async fn send(&self, report: &Report) -> Result<(), SendError> {
        let body = serde_json::to_vec(report).expect("a report always serializes");
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await
            .map_err(|source| SendError::Transport { url: self.url.clone(), source })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 401 {
            Err(SendError::Unauthorized { url: self.url.clone() })
        } else {
            Err(SendError::Status { url: self.url.clone(), status: status.as_u16() })
        }
    }
}

/// Exponential backoff: [`BACKOFF_MIN`] after the first failure, doubling up to
/// [`BACKOFF_MAX`]; reset by a success.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure; returns how long to wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = BACKOFF_MIN.saturating_mul(1u32 << (self.failures - 1).min(16));
        d.min(BACKOFF_MAX)
    }

    /// Records a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..8).map(|_| b.fail().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.fail(), BACKOFF_MIN);
    }
}
