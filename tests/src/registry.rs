//! A minimal client of the OCI distribution API (plain HTTP/1.1 over `std::net::TcpStream`),
//! enough for tests to read what `scripts/fixtures` pushed to the local `docker-registry`.
//!
//! Only `GET` with `Connection: close`; bodies by `Content-Length`, chunked, or until EOF;
//! one redirect level (the filesystem storage driver serves blobs directly).

use anyhow::{bail, Context, Result};
use std::fmt::Display;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::media_type::ACCEPTED_MANIFESTS;

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-cased), in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str())
    }
}

fn decode_chunked(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").context("chunk size line")?;
        let size_str = std::str::from_utf8(&b[..line_end])?.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).context("chunk size")?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("chunk truncated")?);
        b = b.get(size + 2..).context("chunk truncated")?;
    }
}

/// `GET http://{host}{path}` with extra request headers.
pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: moonboot-tests\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("reading the response to GET {path}"))?;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of HTTP headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).context("HTTP headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    let mut resp = Response { status, headers, body: Vec::new() };
    resp.body = if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decode_chunked(rest)?
    } else if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len).context("HTTP body shorter than Content-Length")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

/// A repository on a plain-HTTP registry (`127.0.0.1:5055`, `siderolabs/imager`).
pub struct Repo<'a> {
    /// `host:port`.
    pub host: &'a str,
    /// Repository name.
    pub name: &'a str,
}

impl Repo<'_> {
    /// Fetches a manifest or index by tag or digest (a tag, `sha256:…` or a [`Sha256Digest`]).
    /// Returns the media type and the bytes, after checking `Docker-Content-Digest` against the body.
    pub fn manifest(&self, reference: impl Display) -> Result<(String, Vec<u8>)> {
        let reference = reference.to_string();
        let accept = ACCEPTED_MANIFESTS.join(", ");
        let path = format!("/v2/{}/manifests/{reference}", self.name);
        let r = get(self.host, &path, &[("Accept", &accept)])?;
        if r.status != 200 {
            bail!("GET {path}: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        let digest = Sha256Digest::of(&r.body).to_string();
        if let Some(d) = r.header("docker-content-digest") {
            if d != digest {
                bail!("GET {path}: Docker-Content-Digest {d} but the body hashes to {digest}");
            }
        }
        if reference.starts_with("sha256:") && reference != digest {
            bail!("GET {path}: body hashes to {digest}");
        }
        let media_type = r.header("content-type").unwrap_or_default().to_string();
        Ok((media_type, r.body))
    }

    /// Fetches a blob by digest (`sha256:…` or a [`Sha256Digest`]) and checks its digest.
    pub fn blob(&self, digest: impl Display) -> Result<Vec<u8>> {
        let digest = digest.to_string();
        let path = format!("/v2/{}/blobs/{digest}", self.name);
        let mut r = get(self.host, &path, &[])?;
        if matches!(r.status, 301 | 302 | 303 | 307 | 308) {
            let loc = r.header("location").context("redirect without Location")?.to_string();
            let rest = loc.strip_prefix("http://").context("redirect to a non-HTTP URL")?;
            let (host, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            r = get(host, p, &[])?;
        }
        if r.status != 200 {
            bail!("GET {path}: HTTP {}", r.status);
        }
        let got = Sha256Digest::of(&r.body).to_string();
        if got != digest {
            bail!("GET {path}: body hashes to {got}");
        }
        Ok(r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(response: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(response).unwrap();
        });
        addr
    }

    #[test]
    fn content_length_body() {
        let host = serve_once(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
        let r = get(&host, "/", &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn chunked_body() {
        let host =
            serve_once(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let r = get(&host, "/x", &[]).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"abcde");
    }
}
