//! Registry credentials from a Docker/Podman auth file.
//!
//! Format (docker/cli `cli/config/configfile/file.go`, containers/image `docs/containers-auth.json.5.md`):
//! `{"auths": {"<key>": {"auth": base64("user:password")} | {"username": …, "password": …} |
//! {"identitytoken": …}}}`. A key is a host (`10.20.13.140:5000`), optionally with a scheme and a
//! path (`https://ghcr.io/v1/`); Docker Hub's key is `https://index.docker.io/v1/`.
//! Credential helpers (`credsStore`, `credHelpers`) are not run: the agent runs from cloud-init
//! without them; a host that has only a helper entry is used anonymously.
//!
//! Where to look: `REGISTRY_AUTH_FILE` if set (Podman/skopeo's variable), else
//! `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`. A missing file means anonymous
//! access; an unreadable or malformed one is an error (it names the file and the field).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// Credentials for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic credentials (also used to obtain bearer tokens).
    Basic {
        /// User name.
        username: String,
        /// Password or personal access token.
        password: String,
    },
    /// An OAuth2 identity token (`identitytoken`), sent as a bearer token.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// Why an auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file exists but could not be read.
    #[error("reading registry auth file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid auth file.
    #[error("registry auth file {path}: {field}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The offending field (`auths["ghcr.io"].auth`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Credentials by registry host (`HOST[:PORT]`; Docker Hub as `docker.io`).
#[derive(Debug, Default, Clone)]
pub struct AuthFile {
    entries: BTreeMap<String, Credentials>,
}

/// The auth file to read when none is given: `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
/// `$HOME/.docker/config.json`, in that order of precedence.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://ghcr.io/v2` → `ghcr.io`; `host:5000` stays.
fn normalise_key(key: &str) -> String {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

impl AuthFile {
    /// Reads `path`; a file that does not exist yields no credentials.
    pub fn load(path: &Path) -> Result<AuthFile, AuthFileError> {
        match std::fs::read(path) {
            Ok(bytes) => AuthFile::parse(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
            Err(source) => Err(AuthFileError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// Parses the contents of an auth file; `path` is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<AuthFile, AuthFileError> {
        let malformed =
            |field: String, reason: String| AuthFileError::Malformed { path: path.to_path_buf(), field, reason };
        let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| malformed("(file)".into(), e.to_string()))?;
        let mut entries = BTreeMap::new();
        for (key, e) in raw.auths {
            let creds = if let Some(token) = e.identitytoken.filter(|t| !t.is_empty()) {
                Some(Credentials::IdentityToken(token))
            } else if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|err| malformed(format!("auths[{key:?}].auth"), format!("not base64: {err}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| malformed(format!("auths[{key:?}].auth"), "not UTF-8".into()))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| malformed(format!("auths[{key:?}].auth"), "not user:password".into()))?;
                Some(Credentials::Basic { username: u.to_string(), password: p.to_string() })
            } else {
                match (e.username, e.password) {
                    (Some(username), Some(password)) => Some(Credentials::Basic { username, password }),
                    _ => None,
                }
            };
            if let Some(c) = creds {
                entries.insert(normalise_key(&key), c);
            }
        }
        Ok(AuthFile { entries })
    }

    /// The credentials for `host` (`HOST[:PORT]`, `docker.io` or `registry-1.docker.io` for Docker Hub).
    pub fn get(&self, host: &str) -> Option<&Credentials> {
        self.entries.get(&normalise_key(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_and_podman_entries() {
        let f = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "10.20.13.140:5000":{"username":"ci","password":"s3cret"},
            "https://ghcr.io":{"identitytoken":"tok"},
            "helper.example":{}
        },"credsStore":"desktop"}"#;
        let a = AuthFile::parse(f, Path::new("x")).unwrap();
        assert_eq!(
            a.get("registry-1.docker.io"),
            Some(&Credentials::Basic { username: "user".into(), password: "pass".into() })
        );
        assert_eq!(
            a.get("10.20.13.140:5000"),
            Some(&Credentials::Basic { username: "ci".into(), password: "s3cret".into() })
        );
        assert_eq!(a.get("ghcr.io"), Some(&Credentials::IdentityToken("tok".into())));
        assert_eq!(a.get("helper.example"), None);
        assert!(!format!("{:?}", a.get("ghcr.io")).contains("tok"), "secrets are not printed");
    }

    #[test]
    fn malformed_files_name_the_field() {
        let e = AuthFile::parse(br#"{"auths":{"h":{"auth":"!!"}}}"#, Path::new("/x.json")).unwrap_err();
        assert!(e.to_string().contains(r#"auths["h"].auth"#), "{e}");
        let e = AuthFile::parse(br#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#, Path::new("/x.json")).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
        assert!(AuthFile::load(Path::new("/nonexistent/config.json")).unwrap().get("h").is_none());
    }
}
