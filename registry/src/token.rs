//! Docker config `identitytoken`s: OAuth2 refresh tokens that `docker login` stores for
//! registries with an identity provider (Azure Container Registry, Harbor with OIDC, …). They are
//! not access tokens: before each repository and operation the client exchanges one for an access
//! token at the registry's token endpoint, as docker/cli and containers/image do.
//!
//! Protocol (distribution `docs/spec/auth/oauth.md`, "Refresh token format"; the challenge from
//! `docs/spec/auth/token.md`):
//! 1. `GET /v2/` answers `401` with `WWW-Authenticate: Bearer realm="…",service="…"`;
//! 2. `POST <realm>` with an `application/x-www-form-urlencoded` body `grant_type=refresh_token`,
//!    `service`, `scope=repository:<name>:pull[,push]`, `client_id`, `refresh_token`;
//! 3. the JSON answer's `access_token` (or `token`) is the bearer token for that scope.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `client_id` sent with token requests.
pub const CLIENT_ID: &str = "moonboot";

/// Parses the parameters of a `WWW-Authenticate: Bearer k="v",k2="v2"` challenge (RFC 6750 §3);
/// `None` when it is not a Bearer challenge.
pub fn bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header.trim().strip_prefix("Bearer")?.trim_start();
    let mut params = BTreeMap::new();
    let mut s = rest;
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

/// `application/x-www-form-urlencoded` encoding of one value (WHATWG URL "urlencoded
/// serializer": unreserved bytes as is, space as `+`, the rest percent-encoded).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The form body of a refresh-token exchange.
pub fn refresh_form(service: &str, scope: &str, refresh_token: &str) -> String {
    format!(
        "grant_type=refresh_token&service={}&scope={}&client_id={}&refresh_token={}",
        form_encode(service),
        form_encode(scope),
        form_encode(CLIENT_ID),
        form_encode(refresh_token)
    )
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Takes the access token out of a token endpoint's JSON answer.
///
/// # Errors
/// Not JSON, or neither `access_token` nor `token`.
pub fn access_token(body: &[u8]) -> Result<String, String> {
    let r: TokenResponse = serde_json::from_slice(body).map_err(|e| format!("token endpoint answer: {e}"))?;
    r.access_token
        .or(r.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "token endpoint answer has no access_token".to_string())
}

/// Exchanges `refresh_token` for an access token to `scope` at `base` (`http(s)://HOST[:PORT]`).
///
/// # Errors
/// The reason, as one line: no Bearer challenge, the endpoint refusing the token, transport errors.
pub async fn exchange(
    client: &reqwest::Client,
    base: &str,
    scope: &str,
    refresh_token: &str,
) -> Result<String, String> {
    let probe = client.get(format!("{base}/v2/")).send().await.map_err(|e| format!("GET {base}/v2/: {e}"))?;
    let challenge = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_challenge)
        .ok_or_else(|| {
            format!("{base}/v2/ sent no Bearer challenge (HTTP {}): identity tokens need one", probe.status())
        })?;
    let realm = challenge.get("realm").ok_or("the Bearer challenge names no realm")?;
    let service = challenge.get("service").map(String::as_str).unwrap_or_default();
    let resp = client
        .post(realm)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(refresh_form(service, scope, refresh_token))
        .send()
        .await
        .map_err(|e| format!("POST {realm}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("POST {realm}: {e}"))?;
    if !status.is_success() {
        return Err(format!("the token endpoint {realm} refused the identity token (HTTP {status})"));
    }
    access_token(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_forms_and_answers() {
        let c = bearer_challenge(
            r#"Bearer realm="https://r.example/oauth2/token",service="r.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "https://r.example/oauth2/token");
        assert_eq!(c["service"], "r.example");
        assert_eq!(c["scope"], "repository:a/b:pull");
        assert!(bearer_challenge(r#"Basic realm="x""#).is_none());
        assert_eq!(bearer_challenge("Bearer realm=plain, service=s").unwrap()["service"], "s");
        assert_eq!(
            refresh_form("r.example", "repository:a/b:pull,push", "t/k+n="),
            "grant_type=refresh_token&service=r.example&scope=repository%3Aa%2Fb%3Apull%2Cpush&client_id=moonboot&refresh_token=t%2Fk%2Bn%3D"
        );
        assert_eq!(access_token(br#"{"access_token":"A","expires_in":300}"#).unwrap(), "A");
        assert_eq!(access_token(br#"{"token":"T"}"#).unwrap(), "T");
        assert!(access_token(br#"{"refresh_token":"x"}"#).is_err());
    }
}
