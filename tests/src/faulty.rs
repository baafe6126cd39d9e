//! A fault-injecting HTTP/1.1 proxy in front of the fixture registry, for testing registry
//! clients against a real registry server with the failures real networks and registries produce:
//! 5xx answers, bodies cut short, corrupted bytes, `Range` ignored, and ghcr.io-style anonymous
//! bearer-token challenges.
//!
//! Every request is forwarded to the real `docker-registry` with `Connection: close`; the proxy
//! only changes what the fault settings say. It is a TEST FIXTURE: plain HTTP on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the proxy does to requests. All counters are shared with the test.
#[derive(Default)]
pub struct Faults {
    /// Answer this many blob GETs with `503 Service Unavailable` before forwarding them.
    pub blob_503s: AtomicUsize,
    /// Cut this many blob bodies after half their bytes (then close the connection).
    pub blob_truncations: AtomicUsize,
    /// Flip one byte in the middle of every blob body.
    pub corrupt_blobs: AtomicBool,
    /// Flip one byte in the middle of every manifest (or index) body fetched with GET: a mirror
    /// serving other bytes than the digest they are asked by.
    pub corrupt_manifests: AtomicBool,
    /// Drop the `Range` header of requests (a registry without range support).
    pub ignore_range: AtomicBool,
    /// Require `Authorization: Bearer <this>`; hand it out at `/token` to anyone (anonymous pull).
    pub bearer_token: Mutex<Option<String>>,
    /// With a bearer token: hand it out only in exchange for this refresh token (`POST /token`,
    /// `grant_type=refresh_token`, distribution `docs/spec/auth/oauth.md`), as a registry with an
    /// identity provider does for Docker config `identitytoken`s; anonymous requests get 401.
    pub refresh_token: Mutex<Option<String>>,
    /// Number of `/token` requests served.
    pub token_requests: AtomicUsize,
    /// Number of requests forwarded to the registry.
    pub forwarded: AtomicUsize,
    /// Number of blob GETs seen (including failed ones).
    pub blob_gets: AtomicUsize,
    /// Body bytes of successful blob GETs that crossed the link to the client (what a
    /// pull-through cache fetched when this is its upstream), counted when each response ends:
    /// the whole body when it was written, and what the client's kernel acknowledged
    /// (`TCP_INFO` `tcpi_bytes_acked`) when the client hung up part-way.
    pub blob_bytes: std::sync::atomic::AtomicU64,
    /// Request lines seen, in order (`GET /v2/…`), with the Range header if any.
    pub log: Mutex<Vec<String>>,
    /// Chaos: this percentage (0–100) of blob GETs gets one fault picked at random: a 503, a stall
    /// of [`Faults::stall_seconds`] before the connection is dropped, a body cut in half, or a
    /// flipped byte ([`Chaos`]). For load tests.
    pub chaos_percent: AtomicUsize,
    /// How long a chaos stall lasts, in seconds.
    pub stall_seconds: AtomicUsize,
    /// Faults chaos injected, by kind.
    pub chaos: Mutex<Chaos>,
    /// State of the chaos random generator (xorshift64; any non-zero seed).
    pub seed: std::sync::atomic::AtomicU64,
}

/// What [`Faults::chaos_percent`] injected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    /// 503 answers.
    pub unavailable: usize,
    /// Stalled, then dropped connections.
    pub stalls: usize,
    /// Bodies cut short.
    pub truncations: usize,
    /// Bodies with a flipped byte.
    pub corruptions: usize,
}

impl Faults {
    /// A number in `0..n` from the chaos generator.
    fn random(&self, n: u64) -> u64 {
        let mut x = self.seed.load(Ordering::SeqCst);
        loop {
            let mut y = if x == 0 { 0x9e37_79b9_7f4a_7c15 } else { x };
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self.seed.compare_exchange(x, y, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return y % n,
                Err(now) => x = now,
            }
        }
    }
}

/// A running proxy; it stops serving when the process exits.
pub struct Proxy {
    /// `127.0.0.1:PORT` the proxy listens on.
    pub addr: String,
    /// The fault settings and counters.
    pub faults: Arc<Faults>,
}

/// Starts a proxy to `upstream` (`HOST:PORT`) on an ephemeral loopback port.
pub fn start(upstream: &str) -> Proxy {
    start_on(TcpListener::bind("127.0.0.1:0").expect("bind proxy"), upstream)
}

/// Starts a proxy to `upstream` on a listener the caller bound, e.g. inside a test network
/// namespace ([`crate::netns::Netns::bind`]): clients reach it there, while the connections to
/// `upstream` are made from this process's own namespace (the host's loopback registry).
pub fn start_on(listener: TcpListener, upstream: &str) -> Proxy {
    let addr = listener.local_addr().unwrap().to_string();
    let faults = Arc::new(Faults::default());
    let (f, up, me) = (faults.clone(), upstream.to_string(), addr.clone());
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (f, up, me) = (f.clone(), up.clone(), me.clone());
            thread::spawn(move || {
                let _ = serve(conn, &f, &up, &me);
            });
        }
    });
    Proxy { addr, faults }
}

fn take_one(c: &AtomicUsize) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

fn serve(mut client: TcpStream, f: &Faults, upstream: &str, me: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let request_line = head.first().cloned().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let content_length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    f.log.lock().unwrap().push(match header("range") {
        Some(r) => format!("{method} {path} range={r}"),
        None => format!("{method} {path}"),
    });

    if path.starts_with("/token") {
        f.token_requests.fetch_add(1, Ordering::SeqCst);
        if let Some(refresh) = f.refresh_token.lock().unwrap().clone() {
            let form = String::from_utf8_lossy(&body).into_owned();
            let field = |k: &str| form.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string));
            let granted = method == "POST"
                && field("grant_type").as_deref() == Some("refresh_token")
                && field("refresh_token").as_deref() == Some(refresh.as_str());
            if !granted {
                let b = br#"{"error":"invalid_grant"}"#;
                return respond(&mut client, "401 Unauthorized", &[("Content-Type", "application/json")], b);
            }
        }
        let token = f.bearer_token.lock().unwrap().clone().unwrap_or_default();
        let b = format!("{{\"token\":\"{token}\",\"access_token\":\"{token}\",\"expires_in\":300}}");
        return respond(&mut client, "200 OK", &[("Content-Type", "application/json")], b.as_bytes());
    }
    if let Some(token) = f.bearer_token.lock().unwrap().clone() {
        if header("authorization").as_deref() != Some(&format!("Bearer {token}")) {
            let challenge =
                format!("Bearer realm=\"http://{me}/token\",service=\"moonboot-test\",scope=\"repository:test:pull\"");
            let b = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            return respond(
                &mut client,
                "401 Unauthorized",
                &[("WWW-Authenticate", &challenge), ("Content-Type", "application/json")],
                b,
            );
        }
    }
    let is_blob_get = method == "GET" && path.contains("/blobs/sha256:");
    // 0: none, 1: 503, 2: stall, 3: truncate, 4: corrupt.
    let mut chaos = 0;
    if is_blob_get {
        f.blob_gets.fetch_add(1, Ordering::SeqCst);
        if take_one(&f.blob_503s) {
            return respond(&mut client, "503 Service Unavailable", &[], b"try again");
        }
        let pct = f.chaos_percent.load(Ordering::SeqCst) as u64;
        if pct > 0 && f.random(100) < pct {
            chaos = 1 + f.random(4);
        }
        match chaos {
            1 => {
                f.chaos.lock().unwrap().unavailable += 1;
                return respond(&mut client, "503 Service Unavailable", &[], b"try again");
            }
            2 => {
                f.chaos.lock().unwrap().stalls += 1;
                thread::sleep(std::time::Duration::from_secs(f.stall_seconds.load(Ordering::SeqCst) as u64));
                return client.shutdown(std::net::Shutdown::Both);
            }
            _ => {}
        }
    }

    // Forward.
    f.forwarded.fetch_add(1, Ordering::SeqCst);
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{request_line}\r\n");
    for h in head.iter().skip(1) {
        let name = h.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name == "connection" || name == "authorization" || (name == "range" && f.ignore_range.load(Ordering::SeqCst))
        {
            continue;
        }
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).unwrap_or(resp.len());
    let (resp_head, resp_body) = resp.split_at(split);
    let mut resp_body = resp_body.to_vec();
    let ok = resp_head.starts_with(b"HTTP/1.1 20");
    let is_manifest_get = method == "GET" && path.contains("/manifests/");
    if is_manifest_get && ok && f.corrupt_manifests.load(Ordering::SeqCst) && !resp_body.is_empty() {
        let mid = resp_body.len() / 2;
        resp_body[mid] ^= 0x01;
    }
    if is_blob_get && ok && chaos == 4 && !resp_body.is_empty() {
        f.chaos.lock().unwrap().corruptions += 1;
        let i = f.random(resp_body.len() as u64) as usize;
        resp_body[i] ^= 0x20;
    }
    if is_blob_get && ok && f.corrupt_blobs.load(Ordering::SeqCst) && !resp_body.is_empty() {
        let mid = resp_body.len() / 2;
        resp_body[mid] ^= 0xff;
    }
    let truncate = chaos == 3 && {
        f.chaos.lock().unwrap().truncations += 1;
        true
    };
    if is_blob_get && ok && resp_body.len() > 1 && (truncate || take_one(&f.blob_truncations)) {
        // Send the head as is (with the full Content-Length) and half the body, then hang up.
        client.write_all(resp_head)?;
        client.write_all(&resp_body[..resp_body.len() / 2])?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    let acked_before = tcp_info(&client).map_or(0, |i| i.tcpi_bytes_acked);
    let mut written = client.write_all(resp_head);
    for chunk in resp_body.chunks(64 << 10) {
        if written.is_err() {
            break;
        }
        written = client.write_all(chunk);
    }
    if is_blob_get && ok {
        // Count what the client's kernel acknowledged (what crossed the link), not what this
        // side's send buffer took: a client that hangs up part-way resets the connection, and
        // what sat in the buffer then never left.
        let total = acked_before + (resp_head.len() + resp_body.len()) as u64;
        let acked = delivered(&client, total);
        let body = acked.saturating_sub(acked_before + resp_head.len() as u64);
        f.blob_bytes.fetch_add(body.min(resp_body.len() as u64), Ordering::SeqCst);
    }
    written?;
    client.flush()
}

/// The connection's Linux `TCP_INFO` (`include/uapi/linux/tcp.h`), if the kernel gives it.
fn tcp_info(socket: &TcpStream) -> Option<libc::tcp_info> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    (rc == 0).then_some(info)
}

/// The connection's bytes acknowledged by the peer (`tcpi_bytes_acked`) once they reach `total`,
/// or once the connection is closed or reset (`tcpi_state` `TCP_CLOSE`), or after 10 s.
fn delivered(socket: &TcpStream, total: u64) -> u64 {
    const TCP_CLOSE: u8 = 7;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let Some(info) = tcp_info(socket) else { return 0 };
        if info.tcpi_bytes_acked >= total || info.tcpi_state == TCP_CLOSE || std::time::Instant::now() > deadline {
            return info.tcpi_bytes_acked;
        }
        thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn respond(client: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<()> {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    client.write_all(r.as_bytes())?;
    client.write_all(body)?;
    client.flush()
}
