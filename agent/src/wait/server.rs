//! The collector: an HTTP/1.1 server (hyper) that accepts `POST /v1/report` with
//! `Authorization: Bearer <token>` and a JSON [`Report`] body (at most [`MAX_BODY`] bytes).
//!
//! Answers: `204` accepted; `401` missing or wrong token (counted); `400` a body that is not a
//! report; `404` another path; `405` another method; `413` a body over the limit. The token is
//! compared in constant time: both the presented and the expected token are hashed with SHA-256
//! and the digests compared with `subtle`, so neither the content nor the length of the
//! expected token leaks through timing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use crate::report::schema::Report;

/// The path reports are POSTed to.
pub const PATH: &str = "/v1/report";
/// Largest accepted body, bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// What the server tells the main loop.
#[derive(Debug)]
pub enum Event {
    /// An authenticated, well-formed report.
    Report {
        /// The TCP peer it came from.
        peer: SocketAddr,
        /// The report.
        report: Box<Report>,
    },
    /// A request with a missing or wrong token was refused.
    Refused {
        /// The TCP peer.
        peer: SocketAddr,
    },
    /// An authenticated request whose body was not a report.
    Invalid {
        /// The TCP peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Checks a bearer token in constant time (see the module documentation).
#[derive(Clone)]
pub struct TokenCheck {
    expected: [u8; 32],
}

impl TokenCheck {
    /// Expects `token`.
    pub fn new(token: &str) -> Self {
        Self { expected: Sha256::digest(token.as_bytes()).into() }
    }

    /// Whether an `Authorization` header value carries the expected bearer token.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let presented = authorization
            .and_then(|h| {
                let scheme = h.get(..7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then(|| &h[7..])
            })
            .unwrap_or(b"");
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // An absent header hashes the empty string; an empty expected token is refused below.
        bool::from(digest.ct_eq(&self.expected)) && authorization.is_some()
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    r
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    check: Arc<TokenCheck>,
    events: UnboundedSender<Event>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != PATH {
        return Ok(reply(StatusCode::NOT_FOUND, "not found (reports go to POST /v1/report)"));
    }
    if req.method() != Method::POST {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
        return Ok(r);
    }
    let auth = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
    if !check.accepts(auth) {
        let _ = events.send(Event::Refused { peer });
        let mut r = reply(StatusCode::UNAUTHORIZED, "wrong or missing bearer token");
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let reason = if too_big { format!("body over {MAX_BODY} bytes") } else { format!("reading the body: {e}") };
            let _ = events.send(Event::Invalid { peer, reason: reason.clone() });
            let status = if too_big { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return Ok(reply(status, &reason));
        }
    };
    match serde_json::from_slice::<Report>(&body) {
        Ok(report) => {
            let _ = events.send(Event::Report { peer, report: Box::new(report) });
            Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new())).expect("valid"))
        }
        Err(e) => {
            let reason = format!("not a report: {e}");
            let _ = events.send(Event::Invalid { peer, reason: reason.clone() });
            Ok(reply(StatusCode::BAD_REQUEST, &reason))
        }
    }
}

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, check: TokenCheck, events: UnboundedSender<Event>) {
    let check = Arc::new(check);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // EMFILE and the like: back off a little instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let check = check.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| handle(req, peer, check.clone(), events.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, svc);
            let _ = conn.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let c = TokenCheck::new("s3cret");
        assert!(c.accepts(Some(b"Bearer s3cret")));
        assert!(c.accepts(Some(b"bearer s3cret")));
        assert!(!c.accepts(Some(b"Bearer s3cre")));
        assert!(!c.accepts(Some(b"Bearer s3cret2")));
        assert!(!c.accepts(Some(b"Basic s3cret")));
        assert!(!c.accepts(Some(b"s3cret")));
        assert!(!c.accepts(None));
        let empty = TokenCheck::new("");
        assert!(!empty.accepts(None));
        assert!(empty.accepts(Some(b"Bearer ")));
    }
}
