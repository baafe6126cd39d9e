//! The first-byte request of [`crate::Registry::blob_is_local`] over plain HTTP, on a connection
//! of its own whose receive buffer is 4 KiB.
//!
//! Why a connection of its own: when a pull-through cache does not hold the blob yet, it answers
//! by streaming the whole blob from upstream (distribution 2.8 `registry/proxy/proxyblobstore.go`:
//! `copyContent` ignores `Range`), and what it has received from upstream before our hang-up
//! reaches it is paid for upstream. With a 4 KiB receive window (`SO_RCVBUF` set before
//! `connect`, so the window scale is small too) the cache's writes to us block after a few KiB
//! and it stops reading from upstream; the hang-up then costs what the cache's socket from
//! upstream holds, instead of what a fast link delivers while the answer's head is parsed.
//!
//! [`request_and_hang_up`] goes further for the request that only has to start the cache's
//! store: it sends the request and closes the connection without waiting for any answer. The cache
//! still serves the request (distribution 2.8 stores the blob in the background whatever happens
//! to the client), and its first write to us fails at once: measured through Debian's
//! docker-registry 2.8.2 on loopback, such a request cost 64 KiB upstream on top of the stored
//! copy, against 0.1–3.4 MiB for a request that waited for the answer's head with a 4 KiB window.
//!
//! HTTPS endpoints and registries that ask for credentials are left to `oci-client`
//! ([`Probe::Unsupported`]); the HTTP/1.1 exchange itself is `hyper`'s.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// The receive buffer asked for: the kernel doubles it for bookkeeping (`socket(7)`
/// `SO_RCVBUF`), which still leaves a window of a few KiB.
const RECV_BUFFER: u32 = 4096;

/// The `User-Agent` of both requests.
const USER_AGENT: &str = concat!("moonboot/", env!("CARGO_PKG_VERSION"));

/// The distribution API path of a blob (`/v2/<name>/blobs/<digest>`).
fn blob_path(repository: &str, digest: &str) -> String {
    format!("/v2/{repository}/blobs/{digest}")
}

/// How long the answer's head (or sending the request) may take; a cache that misses asks
/// upstream first.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the first-byte request found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// 206: the registry serves the range from its own storage.
    Partial,
    /// 200: the whole blob, streamed from upstream; the connection was dropped unread.
    Full,
    /// Not for this path (credentials asked for, or an answer to leave to `oci-client`).
    Unsupported,
}

/// Sends `GET http://{host}/v2/{repository}/blobs/{digest}` (`Range: bytes=0-0`, `Connection:
/// close`) over a fresh connection and closes it at once, reading nothing.
///
/// # Errors
/// One line: the host unreachable or the connection failing within 60 s.
pub(crate) async fn request_and_hang_up(host: &str, repository: &str, digest: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let send = async {
        let mut stream =
            tokio::net::TcpStream::connect(host).await.map_err(|e| format!("connecting to {host}: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nRange: bytes=0-0\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n",
            blob_path(repository, digest)
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("{host}: {e}"))?;
        // An orderly close (FIN after the request), not a reset, which could discard the request.
        stream.shutdown().await.map_err(|e| format!("{host}: {e}"))
    };
    tokio::time::timeout(HEAD_TIMEOUT, send)
        .await
        .map_err(|_| format!("{host} did not take the request within {} s", HEAD_TIMEOUT.as_secs()))?
}

/// `GET http://{host}/v2/{repository}/blobs/{digest}` with `Range: bytes=0-0` over a fresh
/// connection with a 4 KiB receive buffer; never reads a body.
///
/// # Errors
/// One line: the host unreachable, the connection failing, no answer within 60 s.
pub(crate) async fn first_byte(host: &str, repository: &str, digest: &str) -> Result<Probe, String> {
    let addr = tokio::net::lookup_host(host.to_string())
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| format!("socket: {e}"))?;
    socket.set_recv_buffer_size(RECV_BUFFER).map_err(|e| format!("SO_RCVBUF: {e}"))?;
    let exchange = async {
        let stream = socket.connect(addr).await.map_err(|e| format!("connecting to {host}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let request = hyper::Request::get(blob_path(repository, digest))
            .header(hyper::header::HOST, host)
            .header(hyper::header::RANGE, "bytes=0-0")
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        // The connection is driven only until the answer's head is in; dropping both halves
        // then closes the socket with whatever is unread, so the cache sees a reset.
        let answer = tokio::select! {
            r = sender.send_request(request) => r.map_err(|e| format!("{host}: {e}"))?,
            r = connection => return Err(match r {
                Ok(()) => format!("{host} closed the connection before answering"),
                Err(e) => format!("{host}: {e}"),
            }),
        };
        Ok(match answer.status().as_u16() {
            206 => Probe::Partial,
            200 => Probe::Full,
            _ => Probe::Unsupported,
        })
    };
    tokio::time::timeout(HEAD_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{host} did not answer within {} s", HEAD_TIMEOUT.as_secs()))?
}
