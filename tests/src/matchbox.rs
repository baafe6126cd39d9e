//! A matchbox-compatible HTTP server for the netboot test — a TEST FIXTURE, not matchbox.
//!
//! It serves a matchbox data directory (`profiles/`, `groups/`, `assets/`) the way
//! poseidon/matchbox v0.11.0 does, following these files of that tag:
//! - `matchbox/http/server.go` — the routes: `/` (`matchbox\n`), `/boot.ipxe` and `/boot.ipxe.0`
//!   (the bootstrap script), `/ipxe` (profile selection + rendering), `/assets/…` (files); any
//!   other path is a 404 (`404 page not found\n`, as Go's `http.NotFound`);
//! - `matchbox/http/ipxe.go` — the bootstrap script [`IPXE_BOOTSTRAP`] and the template
//!   `kernel {{.Kernel}}{{range .Args}} {{.}}{{end}}` / `initrd <each>` / `boot` ([`render_ipxe`]);
//!   no matching profile (or a profile without `boot`) → 404;
//! - `matchbox/http/parse.go` (`labelsFromRequest`) — every query parameter is a label (its first
//!   value; Go's `url.ParseQuery`: `&`-separated, pairs with `;` or bad escapes dropped, `+` is a
//!   space); a key that is `mac` in any case is kept only if it parses as a MAC address, then
//!   normalised to lower-case colon form (Go's `net.ParseMAC` + `HardwareAddr.String`, so iPXE's
//!   `${mac:hexhyp}` `52-54-00-12-34-56` becomes `52:54:00:12:34:56`) ([`labels_from_query`],
//!   [`parse_mac`]);
//! - `matchbox/server/server.go` (`SelectGroup`, `SelectProfile`) and
//!   `matchbox/storage/storagepb/group.go` (`ByReqs`, `selectorString`, `Matches`, `Normalize`) —
//!   groups are tried most selectors first, ties by *reverse* lexical order of the sorted,
//!   comma-joined `k=v` strings; the first group whose selectors all equal the labels wins; then
//!   `profiles/<group.profile>.json`, which must have a non-empty `id`; no group → 404
//!   ([`select_group`]);
//! - `matchbox/storage/filestore.go` and `matchbox/storage/fs.go` — `GroupList` reads every entry of
//!   `groups/` (sorted by name), strips its extension and reads `groups/<stem>.json`; a file that
//!   does not parse (or whose `mac` selector is not a MAC address) is skipped; paths are cleaned
//!   within the data directory (`path.Clean("/"+name)`).
//!
//! JSON fields are matched as Go's `encoding/json` does: exact name first, else case-insensitive.
//!
//! Deviations (none matters to iPXE): plain HTTP/1.1 with `Connection: close` after every response;
//! `/assets/` answers GET/HEAD for regular files only (no directory listings, no `Range`, type
//! `application/octet-stream`); a request path with a `..` segment is refused with 400 (matchbox's
//! Go `ServeMux` would redirect to the cleaned path, which stays inside the assets directory
//! either way); other non-canonical paths get Go's 301 to the cleaned path.
//!
//! Every request is recorded ([`Matchbox::requests`]) so a test can assert the chain iPXE followed.
//! The server listens on `127.0.0.1` only, runs on a thread and stops when dropped.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// matchbox's `ipxeBootstrap` (`matchbox/http/ipxe.go`), served at `/boot.ipxe`: it makes iPXE
/// chain to `/ipxe` (relative to the script's URL) with the machine's labels.
pub const IPXE_BOOTSTRAP: &str = "#!ipxe\nchain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n";

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its head was read.
    pub at: Instant,
    /// When the answer was sent (for `/assets/`: the whole file).
    pub done: Instant,
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent (`/ipxe?uuid=…&arch=arm64`).
    pub target: String,
    /// The percent-decoded path.
    pub path: String,
    /// The labels matchbox derives from the query ([`labels_from_query`]).
    pub labels: BTreeMap<String, String>,
    /// Status code of the answer.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

/// A matchbox group (`storagepb.Group` as parsed from `groups/*.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `id`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `profile`: the id of the profile to boot.
    pub profile: String,
    /// `selector`, with a `mac` selector normalised.
    pub selector: BTreeMap<String, String>,
}

/// The boot part of a matchbox profile (`storagepb.NetBoot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetBoot {
    /// `kernel`.
    pub kernel: String,
    /// `initrd`.
    pub initrd: Vec<String>,
    /// `args`.
    pub args: Vec<String>,
}

/// A matchbox profile (`storagepb.Profile`, the fields this server uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `id` (required).
    pub id: String,
    /// `name`.
    pub name: String,
    /// `boot`; a profile without it renders no iPXE script (404).
    pub boot: Option<NetBoot>,
}

impl Group {
    /// `selectorString`: the sorted `k=v` pairs joined with `,`.
    pub fn selector_string(&self) -> String {
        let mut reqs: Vec<String> = self.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        reqs.sort();
        reqs.join(",")
    }

    /// `Matches`: every selector equals the label of the same (case-sensitive) key.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Go's `net.ParseMAC`: `xx:xx:…`, `xx-xx-…` (6, 8 or 20 octets, two hex digits each) or
/// `xxxx.xxxx.…`; returns the octets.
pub fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() < 14 {
        return None;
    }
    let hex = |pair: &[u8]| -> Option<u8> { u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok() };
    let ok_len = |n: usize| n == 6 || n == 8 || n == 20;
    let is_hex = |c: u8| c.is_ascii_hexdigit();
    if b[2] == b':' || b[2] == b'-' {
        if (b.len() + 1) % 3 != 0 {
            return None;
        }
        let n = (b.len() + 1) / 3;
        if !ok_len(n) {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let x = i * 3;
            if !is_hex(b[x]) || !is_hex(b[x + 1]) || (x + 2 < b.len() && b[x + 2] != b[2]) {
                return None;
            }
            out.push(hex(&b[x..x + 2])?);
        }
        Some(out)
    } else if b[4] == b'.' {
        if (b.len() + 1) % 5 != 0 {
            return None;
        }
        let n = 2 * (b.len() + 1) / 5;
        if !ok_len(n) {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for i in (0..n).step_by(2) {
            let x = i / 2 * 5;
            if !b[x..x + 4].iter().all(|c| is_hex(*c)) || (x + 4 < b.len() && b[x + 4] != b'.') {
                return None;
            }
            out.push(hex(&b[x..x + 2])?);
            out.push(hex(&b[x + 2..x + 4])?);
        }
        Some(out)
    } else {
        None
    }
}

/// `HardwareAddr.String`: lower-case hex octets joined with `:`.
pub fn format_mac(octets: &[u8]) -> String {
    octets.iter().map(|o| format!("{o:02x}")).collect::<Vec<_>>().join(":")
}

fn unhex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Go's `url.QueryUnescape` (`+` is a space); `None` for a bad `%` escape.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (h, l) = (*b.get(i + 1)?, *b.get(i + 2)?);
                out.push(unhex(h)? << 4 | unhex(l)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.PathUnescape` (`+` stays); `None` for a bad escape.
fn path_unescape(s: &str) -> Option<String> {
    query_unescape(&s.replace('+', "%2B"))
}

/// `labelsFromRequest`: the labels of a raw query string.
pub fn labels_from_query(raw_query: &str) -> BTreeMap<String, String> {
    // url.ParseQuery, first value per key (values.Get).
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw_query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (query_unescape(k), query_unescape(v)) else { continue };
        values.entry(k).or_insert(v);
    }
    let mut labels = BTreeMap::new();
    for (k, v) in values {
        if k.eq_ignore_ascii_case("mac") {
            // set mac if and only if it parses
            if let Some(hw) = parse_mac(&v) {
                labels.insert(k, format_mac(&hw));
            }
        } else {
            labels.insert(k, v);
        }
    }
    labels
}

/// A JSON object's field as Go's `encoding/json` finds it: exact key, else case-insensitive.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn string_field(obj: &Map<String, Value>, name: &str) -> Result<String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => anyhow::bail!("{name}: not a string: {other}"),
    }
}

fn string_list(obj: &Map<String, Value>, name: &str) -> Result<Vec<String>> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Null => Ok(String::new()),
                other => anyhow::bail!("{name}: not a string: {other}"),
            })
            .collect(),
        Some(other) => anyhow::bail!("{name}: not a list: {other}"),
    }
}

fn object(v: &Value) -> Result<&Map<String, Value>> {
    v.as_object().with_context(|| format!("not a JSON object: {v}"))
}

/// `storagepb.ParseGroup`: a group document, with its `mac` selector (any case of the key)
/// normalised; an unparseable MAC is an error.
pub fn parse_group(data: &[u8]) -> Result<Group> {
    let v: Value = serde_json::from_slice(data).context("group JSON")?;
    let o = object(&v)?;
    let mut selector = BTreeMap::new();
    match field(o, "selector") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => anyhow::bail!("selector {k}: not a string: {other}"),
                };
                selector.insert(k.clone(), v);
            }
        }
        Some(other) => anyhow::bail!("selector: not an object: {other}"),
    }
    match field(o, "metadata") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(other) => anyhow::bail!("metadata: not an object: {other}"),
    }
    for (k, v) in selector.iter_mut() {
        if k.eq_ignore_ascii_case("mac") {
            *v = format_mac(&parse_mac(v).with_context(|| format!("invalid MAC address {v:?}"))?);
        }
    }
    Ok(Group {
        id: string_field(o, "id")?,
        name: string_field(o, "name")?,
        profile: string_field(o, "profile")?,
        selector,
    })
}

/// A profile document (`json.Unmarshal` into `storagepb.Profile`, then `AssertValid`: `id` is
/// required).
pub fn parse_profile(data: &[u8]) -> Result<Profile> {
    let v: Value = serde_json::from_slice(data).context("profile JSON")?;
    let o = object(&v)?;
    for f in ["ignition_id", "cloud_id", "generic_id"] {
        string_field(o, f)?;
    }
    let boot = match field(o, "boot") {
        None | Some(Value::Null) => None,
        Some(b) => {
            let b = object(b).context("boot")?;
            Some(NetBoot {
                kernel: string_field(b, "kernel")?,
                initrd: string_list(b, "initrd")?,
                args: string_list(b, "args")?,
            })
        }
    };
    let p = Profile { id: string_field(o, "id")?, name: string_field(o, "name")?, boot };
    anyhow::ensure!(!p.id.is_empty(), "Id is required");
    Ok(p)
}

/// matchbox's `ipxeTemplate` applied to a profile's boot section.
pub fn render_ipxe(boot: &NetBoot) -> String {
    let mut s = format!("#!ipxe\nkernel {}", boot.kernel);
    for a in &boot.args {
        s.push(' ');
        s.push_str(a);
    }
    for i in &boot.initrd {
        s.push_str("\ninitrd ");
        s.push_str(i);
    }
    s.push_str("\nboot\n");
    s
}

/// `Dir.sanitize`: `name` cleaned as `path.Clean("/"+name)`, below `root`.
fn sanitize(root: &Path, name: &str) -> Option<PathBuf> {
    if name.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(parts.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// `fileStore.GroupList`: every group of `data/groups` that parses, in directory order.
pub fn list_groups(data: &Path) -> Result<Vec<Group>> {
    let dir = data.join("groups");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut groups = Vec::new();
    for n in names {
        // filepath.Ext: from the last dot of the name.
        let stem = match n.rfind('.') {
            Some(i) => &n[..i],
            None => n.as_str(),
        };
        let Some(p) = sanitize(data, &format!("groups/{stem}.json")) else { continue };
        if let Ok(g) = std::fs::read(&p).map_err(anyhow::Error::from).and_then(|d| parse_group(&d)) {
            groups.push(g);
        }
    }
    Ok(groups)
}

/// `ByReqs` reversed: most selectors first, ties by reverse order of [`Group::selector_string`]
/// (a stable sort, so identical selectors keep directory order).
pub fn sort_groups(groups: &mut [Group]) {
    groups.sort_by(|a, b| {
        b.selector.len().cmp(&a.selector.len()).then_with(|| b.selector_string().cmp(&a.selector_string()))
    });
}

/// `SelectGroup`: the first group, in [`sort_groups`] order, whose selectors all match `labels`.
pub fn select_group(mut groups: Vec<Group>, labels: &BTreeMap<String, String>) -> Option<Group> {
    sort_groups(&mut groups);
    groups.into_iter().find(|g| g.matches(labels))
}

/// `SelectProfile`: the selected group's profile, read from `data/profiles/<id>.json`.
pub fn select_profile(data: &Path, labels: &BTreeMap<String, String>) -> Option<Profile> {
    let group = select_group(list_groups(data).ok()?, labels)?;
    let p = sanitize(data, &format!("profiles/{}.json", group.profile))?;
    parse_profile(&std::fs::read(p).ok()?).ok()
}

/// What the server answers for `method` `target`: status, content type and body (or a file).
enum Answer {
    Text(u16, &'static str, String),
    File(PathBuf, u64),
    Redirect(String),
}

/// Go's `path.Clean` of an absolute path.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut s = format!("/{}", parts.join("/"));
    // ServeMux keeps a trailing slash.
    if p.ends_with('/') && s != "/" {
        s.push('/');
    }
    s
}

fn not_found() -> Answer {
    Answer::Text(404, "text/plain; charset=utf-8", "404 page not found\n".into())
}

fn answer(data: &Path, assets: &Path, path: &str, raw_query: &str) -> Answer {
    if path.split('/').any(|c| c == "..") {
        return Answer::Text(400, "text/plain; charset=utf-8", "invalid URL path\n".into());
    }
    let clean = clean_path(path);
    if clean != path {
        let q = if raw_query.is_empty() { String::new() } else { format!("?{raw_query}") };
        return Answer::Redirect(format!("{clean}{q}"));
    }
    match path {
        "/" => Answer::Text(200, "text/plain; charset=utf-8", "matchbox\n".into()),
        "/boot.ipxe" | "/boot.ipxe.0" => Answer::Text(200, "text/plain; charset=utf-8", IPXE_BOOTSTRAP.into()),
        "/ipxe" => match select_profile(data, &labels_from_query(raw_query)).and_then(|p| p.boot) {
            Some(boot) => Answer::Text(200, "text/plain; charset=utf-8", render_ipxe(&boot)),
            None => not_found(),
        },
        p if p.starts_with("/assets/") => {
            let Some(f) = sanitize(assets, &p["/assets/".len()..]) else { return not_found() };
            match std::fs::metadata(&f) {
                Ok(m) if m.is_file() => Answer::File(f, m.len()),
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// The running server.
pub struct Matchbox {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Matchbox {
    /// Serves `data` (with `profiles/`, `groups/`) and `data/assets` on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn start(data: &Path) -> Result<Self> {
        Self::start_with(data, &data.join("assets"), 0)
    }

    /// Serves `data` and `assets` on `127.0.0.1:port` (0: any free port).
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn start_with(data: &Path, assets: &Path, port: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).context("binding the matchbox test server")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (data, assets) = (data.to_path_buf(), assets.to_path_buf());
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (data, assets, reqs) = (data.clone(), assets.clone(), reqs.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &data, &assets, &reqs);
                });
            }
        });
        Ok(Self { addr, requests, stop, thread: Some(thread) })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Matchbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request on `conn`, answered with `Connection: close`.
fn serve(conn: TcpStream, data: &Path, assets: &Path, log: &Mutex<Vec<Request>>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_write_timeout(Some(Duration::from_secs(120)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0u64;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        head.push(line);
        anyhow::ensure!(head.len() < 100, "too many header lines");
    }
    std::io::copy(&mut r.by_ref().take(content_length), &mut std::io::sink())?;
    let at = Instant::now();
    let first = head.first().cloned().unwrap_or_default();
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path_unescape(raw_path);
    let ans = match &path {
        Some(p) if p.starts_with('/') => answer(data, assets, p, raw_query),
        _ => Answer::Text(400, "text/plain; charset=utf-8", "bad request\n".into()),
    };
    let mut w = conn;
    let head_only = method == "HEAD";
    let (status, bytes) = match ans {
        Answer::Text(status, ctype, body) => {
            let reason = match status {
                200 => "OK",
                400 => "Bad Request",
                _ => "Not Found",
            };
            write!(
                w,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if !head_only {
                w.write_all(body.as_bytes())?;
            }
            (status, if head_only { 0 } else { body.len() as u64 })
        }
        Answer::Redirect(loc) => {
            write!(
                w,
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            (301, 0)
        }
        Answer::File(p, len) => {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            let sent = if head_only { 0 } else { std::io::copy(&mut std::fs::File::open(&p)?, &mut w)? };
            (200, sent)
        }
    };
    w.flush()?;
    log.lock().unwrap().push(Request {
        at,
        done: Instant::now(),
        method,
        labels: labels_from_query(raw_query),
        path: path.unwrap_or_default(),
        target,
        status,
        bytes,
    });
    let _ = w.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, sel: &[(&str, &str)]) -> Group {
        Group {
            id: id.into(),
            name: String::new(),
            profile: id.into(),
            selector: sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn labels(q: &[(&str, &str)]) -> BTreeMap<String, String> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn groups_sort_most_selectors_first_then_reverse_lexical() {
        // matchbox group_test.go TestGroupSort sorts ascending; SelectGroup uses the reverse.
        let one = group("one", &[("region", "a")]);
        let two = group("two", &[("region", "a"), ("zone", "z")]);
        let dual = group("dual", &[("region", "b"), ("zone", "z")]);
        let test = group("test", &[("uuid", "a1b2c3d4"), ("mac", "52:da:00:89:d8:10")]);
        let noprof = group("noprof", &[("uuid", "a1b2c3d4")]);
        let mut g = vec![test.clone(), noprof.clone(), one.clone(), two.clone(), dual.clone()];
        sort_groups(&mut g);
        let ids: Vec<&str> = g.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["dual", "two", "test", "noprof", "one"]);
        assert_eq!(two.selector_string(), "region=a,zone=z");
        assert_eq!(test.selector_string(), "mac=52:da:00:89:d8:10,uuid=a1b2c3d4");
    }

    #[test]
    fn the_most_specific_matching_group_wins() {
        let all = group("all", &[]);
        let arm = group("arm", &[("arch", "arm64")]);
        let node = group("node", &[("arch", "arm64"), ("mac", "52:54:00:12:34:56")]);
        let gs = vec![all, arm, node];
        let sel = |q: &str| select_group(gs.clone(), &labels_from_query(q)).map(|g| g.id);
        assert_eq!(sel("arch=arm64&mac=52-54-00-12-34-56").as_deref(), Some("node"));
        assert_eq!(sel("arch=arm64&mac=52-54-00-12-34-57").as_deref(), Some("arm"));
        assert_eq!(sel("arch=x86_64").as_deref(), Some("all"));
        // Keys are case-sensitive: `ARCH` is not `arch`.
        assert_eq!(sel("ARCH=arm64").as_deref(), Some("all"));
        let arm_only = vec![group("arm", &[("arch", "arm64")])];
        assert_eq!(select_group(arm_only, &labels_from_query("arch=x86_64")), None);
    }

    #[test]
    fn mac_labels_are_normalised_like_net_parse_mac() {
        // parse_test.go TestLabelsFromRequest.
        let l = labels_from_query("mac=52-da-00-89-d8-10");
        assert_eq!(l, labels(&[("mac", "52:da:00:89:d8:10")]));
        let l = labels_from_query("UUID=a1b2c3&MAC=52:DA:00:89:d8:10");
        assert_eq!(l, labels(&[("UUID", "a1b2c3"), ("MAC", "52:da:00:89:d8:10")]));
        assert_eq!(labels_from_query("mac=x:x:x:x:x:x"), labels(&[]));
        assert_eq!(labels_from_query("mac=5254.0012.3456")["mac"], "52:54:00:12:34:56");
        assert_eq!(labels_from_query("mac=02:00:5e:10:00:00:00:01")["mac"], "02:00:5e:10:00:00:00:01");
        for bad in ["52-54-00-12-34", "52-54:00-12-34-56", "5254.0012.34567", "52-54-00-12-34-5g"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        // What iPXE sends: empty labels stay (and so can be matched as ""), first value wins,
        // `+` and %-escapes decode, pairs with `;` are dropped.
        let l = labels_from_query("uuid=&mac=52-54-00-12-34-56&domain=&arch=arm64&arch=x&h=a+b%2F;x=y&k=%zz");
        assert_eq!(l, labels(&[("uuid", ""), ("mac", "52:54:00:12:34:56"), ("domain", ""), ("arch", "arm64")]));
        assert_eq!(labels_from_query("hostname=a+b%2Fc")["hostname"], "a b/c");
    }

    #[test]
    fn groups_parse_like_matchbox() {
        let g = parse_group(
            br#"{"id":"n","Profile":"p","selector":{"MAC":"52-DA-00-89-D8-10","os":"installed"},"metadata":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(g.profile, "p");
        assert_eq!(g.selector["MAC"], "52:da:00:89:d8:10");
        assert!(parse_group(br#"{"id":"n","profile":"p","selector":{"mac":"not-a-mac"}}"#).is_err());
        assert!(parse_group(br#"{"id":"n","profile":"p","selector":{"a":1}}"#).is_err());
        assert!(parse_profile(br#"{"name":"no id","boot":{"kernel":"/k"}}"#).is_err());
    }

    #[test]
    fn ipxe_script_matches_matchbox_template() {
        // ipxe_test.go TestIPXEHandler.
        let b = NetBoot {
            kernel: "/image/kernel".into(),
            initrd: vec!["/image/initrd_a".into(), "/image/initrd_b".into()],
            args: vec!["a=b".into(), "c".into()],
        };
        assert_eq!(
            render_ipxe(&b),
            "#!ipxe\nkernel /image/kernel a=b c\ninitrd /image/initrd_a\ninitrd /image/initrd_b\nboot\n"
        );
        let b = NetBoot { kernel: "/k".into(), initrd: vec![], args: vec![] };
        assert_eq!(render_ipxe(&b), "#!ipxe\nkernel /k\nboot\n");
    }

    fn get(port: u16, target: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[test]
    fn serves_a_data_directory_over_http() {
        let dir = std::env::temp_dir().join(format!("moonboot-matchbox-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["profiles", "groups", "assets/talos/arm64"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("profiles/talos-arm64.json"),
            r#"{"id":"talos-arm64","boot":{"kernel":"/assets/talos/arm64/kernel","initrd":["/assets/talos/arm64/initramfs.xz"],"args":["talos.platform=metal","console=ttyAMA0"]}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("groups/talos-arm64.json"),
            r#"{"id":"talos-arm64","profile":"talos-arm64","selector":{"arch":"arm64"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("groups/broken.json"), "{").unwrap();
        std::fs::write(dir.join("assets/talos/arm64/kernel"), b"KERNEL").unwrap();
        std::fs::write(dir.join("secret"), b"outside assets").unwrap();
        let m = Matchbox::start(&dir).unwrap();
        let p = m.port();
        assert_eq!(get(p, "/"), (200, "matchbox\n".into()));
        assert_eq!(get(p, "/boot.ipxe"), (200, IPXE_BOOTSTRAP.into()));
        let q = "/ipxe?uuid=00000000-0000-0000-0000-000000000000&mac=52-54-00-12-34-56&domain=&hostname=&serial=&arch=arm64";
        assert_eq!(
            get(p, q),
            (
                200,
                "#!ipxe\nkernel /assets/talos/arm64/kernel talos.platform=metal console=ttyAMA0\n\
                 initrd /assets/talos/arm64/initramfs.xz\nboot\n"
                    .into()
            )
        );
        assert_eq!(get(p, "/ipxe?arch=x86_64").0, 404, "no matching group");
        assert_eq!(get(p, "/assets/talos/arm64/kernel"), (200, "KERNEL".into()));
        assert_eq!(get(p, "/assets/talos/arm64/missing").0, 404);
        assert_eq!(get(p, "/assets/talos").0, 404, "no directory listing");
        assert_eq!(get(p, "/assets/../secret").0, 400);
        assert_eq!(get(p, "/assets/%2e%2e/secret").0, 400);
        assert_eq!(get(p, "/elsewhere").0, 404);
        let seen: Vec<(String, u16)> = m.requests().into_iter().map(|r| (r.path, r.status)).collect();
        assert_eq!(
            seen[..4],
            [("/".into(), 200), ("/boot.ipxe".into(), 200), ("/ipxe".into(), 200), ("/ipxe".into(), 404)]
        );
        assert_eq!(m.requests()[2].labels["mac"], "52:54:00:12:34:56");
        drop(m);
        assert!(TcpStream::connect(("127.0.0.1", p)).is_err(), "stopped on drop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
