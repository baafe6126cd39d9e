//! OCI image references and registry mirrors.
//!
//! A reference is `[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]`, with the rules of
//! distribution/reference (`reference.go`, `normalize.go`): the first path component is a
//! registry when it contains `.` or `:` or is `localhost`; otherwise the registry is Docker Hub
//! (`docker.io`, served at `registry-1.docker.io`) and a single-component repository gets
//! `library/`. Repository components are lowercase `[a-z0-9]` runs joined by `.`, `_`, `__` or
//! `-`; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. Without tag or digest the tag is `latest`.
//!
//! A [`Mirror`] (`ghcr.io=10.20.13.140:5000`) serves the same repositories under the same names,
//! as a `registry:2` pull-through cache does; [`Reference::endpoints`] lists where to try, mirrors
//! first in the order given, then the origin. Plain HTTP is used only for registries named in
//! the insecure list.

use std::fmt;
use std::str::FromStr;

use crate::digest::Sha256Digest;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port (`ghcr.io`, `10.20.13.140:5000`, `docker.io`).
    pub registry: String,
    /// Repository path (`siderolabs/imager`, `library/busybox`).
    pub repository: String,
    /// Tag, if given (or `latest` when neither tag nor digest was).
    pub tag: Option<String>,
    /// Digest, if given; it wins over the tag when fetching.
    pub digest: Option<Sha256Digest>,
}

/// Why a reference or mirror did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The text is not a valid reference; the message says which part.
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        /// The input.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A mirror is not `ORIGIN=HOST[:PORT]`.
    #[error("invalid registry mirror {0:?}: expected ORIGIN=HOST[:PORT], e.g. ghcr.io=10.20.13.140:5000")]
    Mirror(String),
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'a'..=b'z' | b'0'..=b'9' => i += 1,
            b'.' | b'_' | b'-' => {
                let start = i;
                while i < b.len() && !b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let sep = &c[start..i];
                let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
                if !ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'[' || b == b']' || b == b':');
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Invalid { reference: s.to_string(), reason: reason.to_string() };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Sha256Digest>().map_err(|e| invalid(&e.to_string()))?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(&format!("tag {t:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                if !valid_host(first) {
                    return Err(invalid(&format!("registry {first:?} is not HOST[:PORT]")));
                }
                (first.to_string(), path.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            return Err(invalid("repository components must be lowercase [a-z0-9] joined by '.', '_', '__' or '-'"));
        }
        if repository.len() + registry.len() + 1 > 255 {
            return Err(invalid("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

impl fmt::Display for Reference {
    /// The normalised form: `REGISTRY/REPOSITORY[:TAG][@DIGEST]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// What to ask the registry for in `/v2/<repository>/manifests/<here>`: the digest when
    /// pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// Where to fetch from, in order: each mirror whose origin is this reference's registry (in
    /// the order given), then the registry itself. A host is contacted over plain HTTP only if it
    /// is in `insecure`.
    pub fn endpoints(&self, mirrors: &[Mirror], insecure: &[String]) -> Vec<Endpoint> {
        let hosts =
            mirrors.iter().filter(|m| m.origin == self.registry).map(|m| m.host.clone()).chain(std::iter::once(
                if self.registry == DOCKER_HUB { DOCKER_HUB_API.to_string() } else { self.registry.clone() },
            ));
        let mut out: Vec<Endpoint> = Vec::new();
        for host in hosts {
            if !out.iter().any(|e| e.host == host) {
                let plain_http = insecure.contains(&host);
                out.push(Endpoint { host, plain_http });
            }
        }
        out
    }
}

/// A registry to contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST[:PORT]`.
    pub host: String,
    /// True only for hosts the user named as insecure.
    pub plain_http: bool,
}

impl Endpoint {
    /// `https://HOST` or, for an insecure registry, `http://HOST`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.plain_http { "http" } else { "https" }, self.host)
    }
}

/// A registry mirror: `ORIGIN=HOST[:PORT]` (e.g. `ghcr.io=10.20.13.140:5000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The registry whose repositories the mirror serves (`ghcr.io`, `docker.io`).
    pub origin: String,
    /// The mirror's `HOST[:PORT]`.
    pub host: String,
}

impl FromStr for Mirror {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        let (origin, host) = s.split_once('=').ok_or_else(|| ReferenceError::Mirror(s.to_string()))?;
        let host = host.strip_prefix("http://").or_else(|| host.strip_prefix("https://")).unwrap_or(host);
        let host = host.trim_end_matches('/');
        if !valid_host(origin) || !valid_host(host) {
            return Err(ReferenceError::Mirror(s.to_string()));
        }
        Ok(Mirror { origin: origin.to_string(), host: host.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_distribution_reference() {
        assert_eq!(r("ghcr.io/siderolabs/imager:v1.10.5").to_string(), "ghcr.io/siderolabs/imager:v1.10.5");
        assert_eq!(r("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r("siderolabs/spin").to_string(), "docker.io/siderolabs/spin:latest");
        assert_eq!(r("localhost/a/b:1").registry, "localhost");
        let p = r(&format!("10.20.13.140:5000/moonboot/boot@{D}"));
        assert_eq!(p.registry, "10.20.13.140:5000");
        assert_eq!(p.tag, None);
        assert_eq!(p.manifest_reference(), D);
        let both = r(&format!("ghcr.io/siderolabs/spin:v0.19.0@{D}"));
        assert_eq!(both.tag.as_deref(), Some("v0.19.0"));
        assert_eq!(both.manifest_reference(), D, "the digest wins");
        assert_eq!(r("127.0.0.1:5055/siderolabs/imager").tag.as_deref(), Some("latest"));
        assert_eq!(r("a/b__c/d-e--f.g:t").repository, "a/b__c/d-e--f.g");
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "ghcr.io/",
            "ghcr.io/Siderolabs/imager",
            "ghcr.io/siderolabs/imager:",
            "ghcr.io/siderolabs/imager:-x",
            "ghcr.io/siderolabs//imager",
            "ghcr.io/siderolabs/imager@sha256:abc",
            "ghcr.io/siderolabs/imager@md5:2cf24dba5fb0a30e26e83b2ac5b9e29e",
            "ghcr.io/-a/b",
            "ghcr.io/a___b",
            "ghcr.io:x/a",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn mirrors_first_in_order_then_origin_plain_http_only_where_named() {
        let mirrors: Vec<Mirror> =
            ["ghcr.io=10.20.13.140:5000", "docker.io=10.20.13.140:5001", "ghcr.io=http://127.0.0.1:5055/"]
                .iter()
                .map(|m| m.parse().unwrap())
                .collect();
        let insecure = vec!["10.20.13.140:5000".to_string()];
        let e = r("ghcr.io/siderolabs/imager:v1.10.5").endpoints(&mirrors, &insecure);
        assert_eq!(
            e,
            vec![
                Endpoint { host: "10.20.13.140:5000".into(), plain_http: true },
                Endpoint { host: "127.0.0.1:5055".into(), plain_http: false },
                Endpoint { host: "ghcr.io".into(), plain_http: false },
            ]
        );
        assert_eq!(e[0].base_url(), "http://10.20.13.140:5000");
        assert_eq!(e[2].base_url(), "https://ghcr.io");
        let hub = r("busybox").endpoints(&mirrors, &insecure);
        assert_eq!(hub[1].host, "registry-1.docker.io");
        assert!(!hub[0].plain_http, "only the named host is insecure");
        for bad in ["ghcr.io", "=x", "ghcr.io=", "ghcr.io=a b"] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad:?}");
        }
    }
}
