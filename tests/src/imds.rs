//! An EC2 Instance Metadata Service (IMDSv2, `HttpTokens=required`) test server — a TEST FIXTURE,
//! not AWS's IMDS.
//!
//! The end-to-end test boots a Debian 12 arm64 cloud image (cloud-init 22.4.2, `DataSourceEc2Local`)
//! under QEMU, whose user-mode networking turns the guest's connections to 169.254.169.254:80 into
//! connections to this server in the test's network namespace. No real IMDS can run there, so this
//! server answers as cloud-init 22.4.2 expects AWS to, following these sources:
//!
//! **cloud-init, tag `22.4.2`** (github.com/canonical/cloud-init; the helpers the brief calls
//! `ec2_utils.py` live in `cloudinit/sources/helpers/ec2.py` in that tag):
//! - `cloudinit/sources/DataSourceEc2.py`:
//!   - `API_TOKEN_ROUTE = "latest/api/token"`, `AWS_TOKEN_TTL_SECONDS = "21600"`,
//!     `AWS_TOKEN_PUT_HEADER = "X-aws-ec2-metadata-token"` and `AWS_TOKEN_REQ_HEADER` (`…-ttl-seconds`):
//!     the token route and headers ([`TOKEN_PATH`], [`TOKEN_HEADER`], [`TTL_HEADER`]);
//!   - `_maybe_fetch_api_token` (a `PUT` through `wait_for_url`; the response *body* becomes the token)
//!     and `_get_headers` (every later request carries it, verbatim, in `X-aws-ec2-metadata-token`);
//!   - `_imds_exception_cb`: any status >= 400 on the token `PUT` aborts detection (403 is logged as
//!     "HTTP endpoint is disabled");
//!   - `min_metadata_version = "2009-04-04"`, `extended_metadata_versions = ["2021-03-23",
//!     "2018-09-24", "2016-09-02"]` and `get_metadata_api_version`, which asks
//!     `<ver>/meta-data/instance-id` in that order and takes the first 200 (here: `2021-03-23`);
//!   - `crawl_metadata`: user-data, then meta-data, then (on AWS) the identity document;
//!   - `_refresh_stale_aws_token_cb`: a 401 drops the token, the retry `PUT`s a new one (so expired
//!     tokens must answer 401, [`Imds::advance_clock`] lets a test provoke it);
//!     `_skip_or_refresh_stale_aws_token_cb`: a 404 on user-data is not retried;
//!   - `is_classic_instance`: an interface with `vpc-id` makes the instance a VPC one (network config
//!     is then rendered on new instances only);
//!   - `convert_ec2_metadata_network_config` and `get_secondary_addresses`: per MAC (matched against
//!     the guest's *lower-case* MACs) it reads `device-number`, `ipv6s`, `local-ipv4s` (a list only
//!     when there are several), `subnet-ipv4-cidr-block` and `subnet-ipv6-cidr-block`; this server
//!     serves `device-number`, `local-ipv4s` and `subnet-ipv4-cidr-block` (the instance has no
//!     IPv6, so, as on AWS, there is no `ipv6s` and no `subnet-ipv6-cidr-blocks`);
//!   - `identify_aws`: cloud-init only treats the machine as AWS (and only then uses IMDSv2 and the
//!     Local datasource) when DMI `system-uuid` starts with `ec2` and equals `system-serial-number`
//!     — a requirement on the QEMU command line, not on this server.
//! - `cloudinit/sources/helpers/ec2.py`:
//!   - `get_instance_userdata`: `<ver>/user-data`, a 404 meaning "no user-data";
//!   - `get_instance_metadata`: the tree `<ver>/meta-data/` (with the slash);
//!     `get_instance_identity`: the tree `<ver>/dynamic/instance-identity` (*without* a slash), so a
//!     directory answers with or without its trailing slash here;
//!   - `MetadataMaterializer._parse` / `_materialize`: a listing is newline-separated, a name ending
//!     in `/` is a directory, `n=name` is public key `n` (read at `n/openssh-key`); all directories
//!     are fetched (depth first, in listing order, URL with a trailing `/`) before the leaves;
//!     `MetadataLeafDecoder`: a leaf that looks like `{…}` is parsed as JSON, one with newlines
//!     becomes a list.
//! - `cloudinit/url_helper.py`: `combine_url` (path segments quoted with `safe="/:"`, so a MAC's
//!   colons are sent as-is), `readurl`, `wait_for_url` (an empty token body counts as a failure) and
//!   `dual_stack` (the `PUT` goes to `http://169.254.169.254` first and, 150 ms later if no answer
//!   came yet, also to `http://[fd00:ec2::254]`).
//!
//! **AWS documentation** (github.com/awsdocs/amazon-ec2-user-guide, `doc_source/`):
//! - `configuring-instance-metadata-service.md`: a token lives 1 s to 6 h (21600 s); with tokens
//!   required, a `GET` without a valid or with an expired token gets `401 - Unauthorized`; `GET` and
//!   `HEAD` are the retrieval methods; a `PUT` with `X-Forwarded-For` is rejected;
//! - `instancedata-data-retrieval.md`: `400` for an invalid `PUT`, `401`, `403`; metadata is
//!   `text/plain`; an unknown resource is `404 - Not Found`; a listing has one item per line; a `PUT`
//!   to a version-specific token path (`/2021-03-23/api/token`) is `403 Forbidden`; the list of
//!   versions at `/` ([`VERSIONS`]) and the top-level `meta-data/` listing;
//! - `instancedata-data-categories.md`: the categories and the version each appeared in — a
//!   category is listed and served only under versions at or after it (and under `latest`);
//! - `instance-identity-documents.md`: the fields of `dynamic/instance-identity/document`.
//!
//! The instance looks like an on-demand instance in a VPC launched without a key pair, IAM role,
//! public IP or IPv6: no `public-keys/`, `iam/`, `public-hostname`, `public-ipv4` or `ipv6s`, as
//! AWS omits them in that case. Its tree (`2021-03-23`, `latest`) is:
//! `ami-id`, `ami-launch-index`, `ami-manifest-path`, `block-device-mapping/{ami,root}`,
//! `events/maintenance/{history,scheduled}`, `hostname`, `instance-action`, `instance-id`,
//! `instance-life-cycle`, `instance-type`, `local-hostname`, `local-ipv4`, `mac`,
//! `network/interfaces/macs/<mac>/{device-number, interface-id, local-hostname, local-ipv4s, mac,
//! network-card-index, owner-id, security-group-ids, security-groups, subnet-id,
//! subnet-ipv4-cidr-block, vpc-id, vpc-ipv4-cidr-block, vpc-ipv4-cidr-blocks}`,
//! `placement/{availability-zone,region}`, `profile`, `reservation-id`, `security-groups`,
//! `services/{domain,partition}`; `dynamic/fws/instance-monitoring`,
//! `dynamic/instance-identity/document`; `user-data` when the test gives one
//! (`application/octet-stream`, the bytes as given). [`cloud_init_requests`] lists, in order, the
//! requests cloud-init 22.4.2 makes to crawl it.
//!
//! Deviations from AWS (none matters to cloud-init): plain HTTP/1.1, one request per connection
//! (`Connection: close`); no hop limit on `PUT` responses (the IP TTL is left alone); tokens come
//! from std's randomly keyed hasher, not a CSPRNG; the identity document is served unsigned (no
//! `pkcs7`, `signature`, `rsa2048` leaves); `identity-credentials/` and `metrics/` are left out; a
//! `PUT` anywhere but [`TOKEN_PATH`] is 403 (AWS documents that only for version-specific token
//! paths); a method other than `GET`/`HEAD`/`PUT` is 405; a request head over [`MAX_HEAD_BYTES`], a
//! malformed request, `Transfer-Encoding` or a body over 64 KiB is 400; the server listens where the
//! caller's listener does, so whether `fd00:ec2::254` answers is the caller's choice.
//!
//! Every answer is recorded ([`Imds::requests`], e.g. `"GET /2021-03-23/meta-data/instance-id 401"`)
//! with counters for 401s, tokens issued and user-data served.

use base64::Engine as _;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where IMDSv2 session tokens are `PUT` (`API_TOKEN_ROUTE` in cloud-init's `DataSourceEc2.py`).
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The request header of a token `PUT` giving its lifetime in seconds, echoed in the answer.
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// The request header that carries the token on every `GET`/`HEAD`.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// The longest token lifetime AWS grants (6 h); the shortest is 1 s.
pub const MAX_TTL_SECONDS: u64 = 21600;
/// The largest request head (request line and headers) this server reads; larger ones get 400.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The largest request body read (and discarded); larger ones get 400.
const MAX_BODY_BYTES: u64 = 64 * 1024;

/// The metadata versions IMDS lists at `/` (`instancedata-data-retrieval.md`), `latest` last.
/// cloud-init 22.4.2 probes `2021-03-23`, `2018-09-24`, `2016-09-02` and falls back to `2009-04-04`.
pub const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "latest",
];

/// The metadata version cloud-init 22.4.2 settles on (the first of its `extended_metadata_versions`).
pub const CLOUD_INIT_VERSION: &str = "2021-03-23";

/// The account that "launched" the instance (`accountId`, `owner-id`).
pub const ACCOUNT_ID: &str = "123456789012";
const INTERFACE_ID: &str = "eni-0a1b2c3d4e5f60718";
const SUBNET_ID: &str = "subnet-0f1e2d3c4b5a69788";
const VPC_ID: &str = "vpc-0c1d2e3f4a5b69788";
const SECURITY_GROUP_ID: &str = "sg-0b1c2d3e4f5a69788";
const SECURITY_GROUP: &str = "default";
const RESERVATION_ID: &str = "r-0d1e2f3a4b5c69788";
const ROOT_DEVICE: &str = "/dev/xvda";

/// What the metadata service says about the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `instance-id` (`i-…`).
    pub instance_id: String,
    /// `instance-type` (`m7g.medium`).
    pub instance_type: String,
    /// `placement/region` (`eu-central-1`).
    pub region: String,
    /// `placement/availability-zone` (`eu-central-1a`).
    pub availability_zone: String,
    /// `ami-id` (`ami-…`).
    pub image_id: String,
    /// `local-hostname` and `hostname` (`ip-10-0-2-15.eu-central-1.compute.internal`).
    pub local_hostname: String,
    /// `local-ipv4`, and the interface's `local-ipv4s`.
    pub local_ipv4: String,
    /// `mac`, and the one interface under `network/interfaces/macs/`; served lower-case, as
    /// cloud-init matches it against the guest's lower-case MACs.
    pub mac: String,
    /// The interface's `subnet-ipv4-cidr-block` (also served as its VPC's CIDR block).
    pub subnet_cidr: String,
    /// `user-data`, served byte for byte; `None`: `user-data` is 404 and not listed.
    pub user_data: Option<Vec<u8>>,
}

impl Instance {
    /// An `m7g.medium` (Graviton 3, arm64) in `eu-central-1a`, instance `i-0123456789abcdef0`, with
    /// one interface `mac` (e.g. QEMU's `52:54:00:12:34:56`) at `ipv4` (e.g. user-mode networking's
    /// `10.0.2.15`) in the /24 around it, and no user-data.
    pub fn example(mac: &str, ipv4: &str) -> Self {
        let subnet_cidr = match ipv4.parse::<Ipv4Addr>() {
            Ok(a) => {
                let [a, b, c, _] = a.octets();
                format!("{a}.{b}.{c}.0/24")
            }
            Err(_) => format!("{ipv4}/24"),
        };
        Self {
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "m7g.medium".into(),
            region: "eu-central-1".into(),
            availability_zone: "eu-central-1a".into(),
            image_id: "ami-0fedcba9876543210".into(),
            local_hostname: format!("ip-{}.eu-central-1.compute.internal", ipv4.replace('.', "-")),
            local_ipv4: ipv4.into(),
            mac: mac.to_ascii_lowercase(),
            subnet_cidr,
            user_data: None,
        }
    }
}

/// A node of the metadata tree.
enum Node {
    /// A listing: `(name, version it appeared in, node)`, listed in this order.
    Dir(Vec<(String, &'static str, Node)>),
    /// A value, served as `text/plain`.
    Leaf(Vec<u8>),
}

fn leaf(v: impl AsRef<str>) -> Node {
    Node::Leaf(v.as_ref().as_bytes().to_vec())
}

fn dir(entries: Vec<(&str, &'static str, Node)>) -> Node {
    Node::Dir(entries.into_iter().map(|(n, since, node)| (n.to_string(), since, node)).collect())
}

/// Whether a category that appeared in `since` exists in metadata version `version`.
fn visible(since: &str, version: &str) -> bool {
    // Versions are `1.0` and ISO dates, which sort lexically; `latest` has everything.
    version == "latest" || since <= version
}

impl Node {
    fn listing(&self, version: &str) -> Option<String> {
        let Node::Dir(entries) = self else { return None };
        let names: Vec<String> = entries
            .iter()
            .filter(|(_, since, _)| visible(since, version))
            .map(|(name, _, node)| match node {
                Node::Dir(_) => format!("{name}/"),
                Node::Leaf(_) => name.clone(),
            })
            .collect();
        Some(names.join("\n"))
    }

    fn child(&self, name: &str, version: &str) -> Option<&Node> {
        let Node::Dir(entries) = self else { return None };
        entries.iter().find(|(n, since, _)| n == name && visible(since, version)).map(|(_, _, node)| node)
    }

    /// The node at `segments` below this one.
    fn lookup(&self, segments: &[&str], version: &str) -> Option<&Node> {
        segments.iter().try_fold(self, |node, seg| node.child(seg, version))
    }
}

/// `meta-data/`, versions from `instancedata-data-categories.md`.
fn meta_data(i: &Instance) -> Node {
    let mac = i.mac.to_ascii_lowercase();
    let interface = dir(vec![
        ("device-number", "2011-01-01", leaf("0")),
        ("interface-id", "2011-01-01", leaf(INTERFACE_ID)),
        ("local-hostname", "2011-01-01", leaf(&i.local_hostname)),
        ("local-ipv4s", "2011-01-01", leaf(&i.local_ipv4)),
        ("mac", "2011-01-01", leaf(&mac)),
        ("network-card-index", "2020-11-01", leaf("0")),
        ("owner-id", "2011-01-01", leaf(ACCOUNT_ID)),
        ("security-group-ids", "2011-01-01", leaf(SECURITY_GROUP_ID)),
        ("security-groups", "2011-01-01", leaf(SECURITY_GROUP)),
        ("subnet-id", "2011-01-01", leaf(SUBNET_ID)),
        ("subnet-ipv4-cidr-block", "2011-01-01", leaf(&i.subnet_cidr)),
        ("vpc-id", "2011-01-01", leaf(VPC_ID)),
        ("vpc-ipv4-cidr-block", "2011-01-01", leaf(&i.subnet_cidr)),
        ("vpc-ipv4-cidr-blocks", "2016-06-30", leaf(&i.subnet_cidr)),
    ]);
    let network = dir(vec![(
        "interfaces",
        "2011-01-01",
        dir(vec![("macs", "2011-01-01", dir(vec![(mac.as_str(), "2011-01-01", interface)]))]),
    )]);
    dir(vec![
        ("ami-id", "1.0", leaf(&i.image_id)),
        ("ami-launch-index", "1.0", leaf("0")),
        ("ami-manifest-path", "1.0", leaf("(unknown)")),
        (
            "block-device-mapping",
            "2007-12-15",
            dir(vec![("ami", "2007-12-15", leaf(ROOT_DEVICE)), ("root", "2007-12-15", leaf(ROOT_DEVICE))]),
        ),
        (
            "events",
            "2018-08-17",
            dir(vec![(
                "maintenance",
                "2018-08-17",
                dir(vec![("history", "2018-08-17", leaf("[]")), ("scheduled", "2018-08-17", leaf("[]"))]),
            )]),
        ),
        ("hostname", "1.0", leaf(&i.local_hostname)),
        ("instance-action", "2008-09-01", leaf("none")),
        ("instance-id", "1.0", leaf(&i.instance_id)),
        ("instance-life-cycle", "2019-10-01", leaf("on-demand")),
        ("instance-type", "2007-08-29", leaf(&i.instance_type)),
        ("local-hostname", "2007-01-19", leaf(&i.local_hostname)),
        ("local-ipv4", "1.0", leaf(&i.local_ipv4)),
        ("mac", "2011-01-01", leaf(&mac)),
        ("network", "2011-01-01", network),
        (
            "placement",
            "2008-02-01",
            dir(vec![
                ("availability-zone", "2008-02-01", leaf(&i.availability_zone)),
                ("region", "2020-08-24", leaf(&i.region)),
            ]),
        ),
        // In AWS's example listing, not in the categories table: served in every version.
        ("profile", "1.0", leaf("default-hvm")),
        ("reservation-id", "1.0", leaf(RESERVATION_ID)),
        ("security-groups", "1.0", leaf(SECURITY_GROUP)),
        (
            "services",
            "2014-02-25",
            dir(vec![("domain", "2014-02-25", leaf("amazonaws.com")), ("partition", "2015-10-20", leaf("aws"))]),
        ),
    ])
}

/// The instance identity document (`instance-identity-documents.md`), pretty-printed like AWS's.
fn identity_document(i: &Instance, pending_time: &str) -> String {
    let doc = serde_json::json!({
        "accountId": ACCOUNT_ID,
        "architecture": "arm64",
        "availabilityZone": i.availability_zone,
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": i.image_id,
        "instanceId": i.instance_id,
        "instanceType": i.instance_type,
        "kernelId": null,
        "pendingTime": pending_time,
        "privateIp": i.local_ipv4,
        "ramdiskId": null,
        "region": i.region,
        "version": "2017-09-30",
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// `dynamic/`.
fn dynamic(i: &Instance, pending_time: &str) -> Node {
    dir(vec![
        ("fws", "2009-04-04", dir(vec![("instance-monitoring", "2009-04-04", leaf("disabled"))])),
        (
            "instance-identity",
            "2009-04-04",
            dir(vec![("document", "2009-04-04", leaf(identity_document(i, pending_time)))]),
        ),
    ])
}

/// The requests cloud-init 22.4.2's `DataSourceEc2Local` makes, in order, to crawl `instance` on
/// AWS when every request succeeds the first time, in the form of [`Imds::requests`]: the token
/// `PUT`, the version probe, user-data, the `meta-data/` tree as `MetadataMaterializer` walks it
/// (directories first, depth first, then leaves, each in listing order), and the identity tree.
pub fn cloud_init_requests(instance: &Instance) -> Vec<String> {
    fn walk(node: &Node, url: &str, out: &mut Vec<String>) {
        let Node::Dir(entries) = node else { return };
        let shown = || entries.iter().filter(|(_, since, _)| visible(since, CLOUD_INIT_VERSION));
        let base = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        for (name, _, child) in shown().filter(|(_, _, n)| matches!(n, Node::Dir(_))) {
            let child_url = format!("{base}{name}/");
            out.push(format!("GET {child_url} 200"));
            walk(child, &child_url, out);
        }
        for (name, _, _) in shown().filter(|(_, _, n)| matches!(n, Node::Leaf(_))) {
            out.push(format!("GET {base}{name} 200"));
        }
    }
    let v = CLOUD_INIT_VERSION;
    let user_data = if instance.user_data.is_some() { 200 } else { 404 };
    let mut out = vec![
        format!("PUT {TOKEN_PATH} 200"),
        format!("GET /{v}/meta-data/instance-id 200"),
        format!("GET /{v}/user-data {user_data}"),
    ];
    let meta_url = format!("/{v}/meta-data/");
    out.push(format!("GET {meta_url} 200"));
    walk(&meta_data(instance), &meta_url, &mut out);
    let identity_url = format!("/{v}/dynamic/instance-identity");
    out.push(format!("GET {identity_url} 200"));
    if let Some(identity) = dynamic(instance, "").child("instance-identity", v) {
        walk(identity, &identity_url, &mut out);
    }
    out
}

#[derive(Default)]
struct Log {
    requests: Vec<String>,
    unauthorized: usize,
    tokens_issued: usize,
    user_data_served: usize,
}

/// State shared by the server's threads.
struct Shared {
    instance: Instance,
    meta_data: Node,
    dynamic: Node,
    log: Mutex<Log>,
    /// Token → when it expires (on the server's clock, [`Shared::now`]).
    tokens: Mutex<HashMap<String, Instant>>,
    /// How far [`Imds::advance_clock`] moved the server's clock ahead.
    skew: Mutex<Duration>,
    minted: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn now(&self) -> Instant {
        Instant::now() + *lock(&self.skew)
    }

    /// A fresh token: 40 bytes from std's randomly keyed hasher, base64 (56 characters, like AWS's).
    fn mint(&self) -> String {
        let n = self.minted.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mut bytes = Vec::with_capacity(40);
        for i in 0..5u64 {
            bytes.extend_from_slice(&RandomState::new().hash_one((n, i, nanos)).to_le_bytes());
        }
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    }
}

/// The running server. Dropping the last [`Arc`] stops accepting and closes the listener.
pub struct Imds {
    shared: Arc<Shared>,
    addr: Option<SocketAddr>,
    accept: Option<JoinHandle<()>>,
    polling: bool,
}

impl Imds {
    /// Serves `instance` on `listener` (made by the caller, e.g. bound to `169.254.169.254:80` in
    /// another network namespace; nothing is bound here) from a thread that accepts connections and
    /// answers each on a thread of its own.
    pub fn serve(listener: TcpListener, instance: Instance) -> Arc<Imds> {
        let pending_time = rfc3339(SystemTime::now());
        let shared = Arc::new(Shared {
            meta_data: meta_data(&instance),
            dynamic: dynamic(&instance, &pending_time),
            instance,
            log: Mutex::new(Log::default()),
            tokens: Mutex::new(HashMap::new()),
            skew: Mutex::new(Duration::ZERO),
            minted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let addr = listener.local_addr().ok();
        // Polling lets drop stop the loop without connecting to the listener, which may be in a
        // namespace this thread cannot reach.
        let polling = listener.set_nonblocking(true).is_ok();
        let state = shared.clone();
        let accept =
            std::thread::Builder::new().name("imds-accept".into()).spawn(move || accept_loop(&listener, &state)).ok();
        Arc::new(Imds { shared, addr, accept, polling })
    }

    /// The address of the listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The instance served.
    pub fn instance(&self) -> &Instance {
        &self.shared.instance
    }

    /// Every request answered so far, in order, as `"<method> <target> <status>"` (the target as
    /// sent), e.g. `"PUT /latest/api/token 200"`; `-` for what an unparsable request lacks.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.log).requests.clone()
    }

    /// How many requests were answered 401 (no, unknown or expired token).
    pub fn unauthorized(&self) -> usize {
        lock(&self.shared.log).unauthorized
    }

    /// How many tokens were issued (200s to the token `PUT`).
    pub fn tokens_issued(&self) -> usize {
        lock(&self.shared.log).tokens_issued
    }

    /// How many `GET`s of `…/user-data` were answered 200.
    pub fn user_data_served(&self) -> usize {
        lock(&self.shared.log).user_data_served
    }

    /// Moves the clock tokens expire by ahead by `by`, so a test can expire tokens without waiting.
    pub fn advance_clock(&self, by: Duration) {
        *lock(&self.shared.skew) += by;
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if self.polling {
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }
}

/// How often the accept loop looks for connections (and for [`Imds`] being dropped); a request can
/// wait this long to be accepted.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let state = shared.clone();
                let _ = std::thread::Builder::new().name("imds-conn".into()).spawn(move || handle(&state, conn));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // WouldBlock (nothing to accept) or a transient error (e.g. out of descriptors).
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    /// Lower-case names, trimmed values.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

enum Incoming {
    /// The peer closed (or stalled) before sending a whole request: nothing to answer.
    Gone,
    /// A request that cannot be served: 400, with the method and target if they could be read.
    Bad(Option<(String, String)>),
    Request(Request),
}

/// The end of the head in `buf`, and where the body starts.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, i + 4))
        } else if buf[i..].starts_with(b"\n\n") {
            Some((i, i + 2))
        } else {
            None
        }
    })
}

fn request_line(line: &str) -> Option<(String, String)> {
    let mut parts = line.split_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && version.starts_with("HTTP/")).then(|| (method.to_string(), target.to_string()))
}

/// The method and target of a head that is refused, if its first line is complete and parses.
fn first_line(buf: &[u8]) -> Option<(String, String)> {
    let line = &buf[..buf.iter().position(|&b| b == b'\n')?];
    request_line(std::str::from_utf8(line).ok()?.trim_end_matches('\r'))
}

fn read_request(conn: &mut TcpStream) -> Incoming {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (end, body_start) = loop {
        if let Some(found) = head_end(&buf) {
            break found;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Incoming::Bad(first_line(&buf));
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Incoming::Gone,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if end > MAX_HEAD_BYTES {
        return Incoming::Bad(first_line(&buf));
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else { return Incoming::Bad(None) };
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let Some((method, target)) = lines.next().and_then(request_line) else { return Incoming::Bad(None) };
    let mut headers = Vec::new();
    for line in lines {
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.starts_with([' ', '\t']) => {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            }
            _ => return Incoming::Bad(Some((method, target))),
        }
    }
    let req = Request { method, target, headers };
    if req.header("transfer-encoding").is_some() {
        return Incoming::Bad(Some((req.method, req.target)));
    }
    let length = match req.header("content-length").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY_BYTES => n,
        Some(_) => return Incoming::Bad(Some((req.method, req.target))),
    };
    let have = (buf.len() - body_start) as u64;
    if have < length {
        let missing = length - have;
        match std::io::copy(&mut conn.take(missing), &mut std::io::sink()) {
            Ok(n) if n == missing => {}
            _ => return Incoming::Gone,
        }
    }
    Incoming::Request(req)
}

/// An answer.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    /// A 200 on `…/user-data`.
    user_data: bool,
}

impl Response {
    fn text(body: impl Into<Vec<u8>>) -> Self {
        Self { status: 200, content_type: "text/plain", body: body.into(), headers: Vec::new(), user_data: false }
    }

    /// An error page shaped like IMDS's.
    fn error(status: u16) -> Self {
        let title = format!("{status} - {}", reason(status));
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
             <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
             \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
             <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
             <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
        );
        Self { status, content_type: "text/html", body: body.into_bytes(), headers: Vec::new(), user_data: false }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// The path of a request target (origin or absolute form), percent-decoded, without the query.
fn target_path(target: &str) -> Option<String> {
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn answer(shared: &Shared, req: &Request) -> Response {
    let Some(path) = target_path(&req.target) else { return Response::error(400) };
    match req.method.as_str() {
        "PUT" => put(shared, req, &path),
        "GET" | "HEAD" => get(shared, req, &path),
        _ => {
            let mut r = Response::error(405);
            r.headers.push(("Allow", "GET, HEAD, PUT".into()));
            r
        }
    }
}

/// A token `PUT`.
fn put(shared: &Shared, req: &Request, path: &str) -> Response {
    if path != TOKEN_PATH || req.header("x-forwarded-for").is_some() {
        return Response::error(403);
    }
    let ttl = req
        .header(TTL_HEADER)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| (1..=MAX_TTL_SECONDS).contains(n));
    let Some(ttl) = ttl else { return Response::error(400) };
    let token = shared.mint();
    let now = shared.now();
    let mut tokens = lock(&shared.tokens);
    tokens.retain(|_, expires| *expires > now);
    tokens.insert(token.clone(), now + Duration::from_secs(ttl));
    drop(tokens);
    let mut r = Response::text(token);
    r.headers.push((TTL_HEADER, ttl.to_string()));
    r
}

/// A `GET` or `HEAD` of metadata.
fn get(shared: &Shared, req: &Request, path: &str) -> Response {
    let authorized = req.header(TOKEN_HEADER).is_some_and(|token| {
        let now = shared.now();
        lock(&shared.tokens).get(token).is_some_and(|expires| *expires > now)
    });
    if !authorized {
        return Response::error(401);
    }
    if path == "/" {
        return Response::text(VERSIONS.join("\n"));
    }
    let mut segments: Vec<&str> = path[1..].split('/').collect();
    // A trailing slash asks for the same resource (cloud-init asks for directories both ways).
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    if segments.contains(&"") {
        return Response::error(404);
    }
    let (version, rest) = (segments[0], &segments[1..]);
    if !VERSIONS.contains(&version) {
        return Response::error(404);
    }
    let i = &shared.instance;
    let node = match rest {
        [] => {
            let mut items = vec!["meta-data"];
            if visible("2009-04-04", version) {
                items.insert(0, "dynamic");
            }
            if i.user_data.is_some() {
                items.push("user-data");
            }
            return Response::text(items.join("\n"));
        }
        ["user-data"] => {
            return match &i.user_data {
                Some(data) => Response {
                    content_type: "application/octet-stream",
                    user_data: true,
                    ..Response::text(data.clone())
                },
                None => Response::error(404),
            };
        }
        ["meta-data", below @ ..] => shared.meta_data.lookup(below, version),
        ["dynamic", below @ ..] if visible("2009-04-04", version) => shared.dynamic.lookup(below, version),
        _ => None,
    };
    match node {
        Some(Node::Leaf(value)) => Response::text(value.clone()),
        Some(listing @ Node::Dir(_)) => Response::text(listing.listing(version).unwrap_or_default()),
        None => Response::error(404),
    }
}

fn handle(shared: &Shared, mut conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let (method, target, response) = match read_request(&mut conn) {
        Incoming::Gone => return,
        Incoming::Bad(line) => {
            let (m, t) = line.unwrap_or_else(|| ("-".into(), "-".into()));
            (m, t, Response::error(400))
        }
        Incoming::Request(req) => {
            let response = answer(shared, &req);
            (req.method, req.target, response)
        }
    };
    let head_only = method == "HEAD";
    {
        let mut log = lock(&shared.log);
        log.requests.push(format!("{method} {target} {}", response.status));
        match response.status {
            401 => log.unauthorized += 1,
            200 if method == "PUT" => log.tokens_issued += 1,
            200 if response.user_data && method == "GET" => log.user_data_served += 1,
            _ => {}
        }
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nDate: {}\r\nServer: EC2ws\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        http_date(SystemTime::now()),
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    let _ = conn.write_all(&out).and_then(|()| conn.flush());
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Let the peer read the answer before the socket closes (unread input would reset it).
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = std::io::copy(&mut (&mut conn).take(MAX_BODY_BYTES), &mut std::io::sink());
}

/// Seconds since the epoch split into (days, hour, minute, second).
fn split_time(t: SystemTime) -> (i64, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    ((secs / 86_400) as i64, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60)
}

/// `2024-05-01T12:34:56Z`, as `pendingTime`.
fn rfc3339(t: SystemTime) -> String {
    moonboot_imager::build::artifact::rfc3339(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// `Wed, 01 May 2024 12:34:56 GMT` (RFC 9110 IMF-fixdate).
fn http_date(t: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, h, m, s) = split_time(t);
    let (year, month, day) = moonboot_imager::build::artifact::civil_from_days(days);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(month - 1) as usize];
    format!("{weekday}, {day:02} {month} {year:04} {h:02}:{m:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: &str = "52:54:00:12:34:56";

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8(self.body.clone()).unwrap()
        }
    }

    fn start(instance: Instance) -> (Arc<Imds>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (Imds::serve(listener, instance), addr)
    }

    fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn.write_all(request).unwrap();
        let mut data = Vec::new();
        conn.read_to_end(&mut data).unwrap();
        let (end, start) = head_end(&data).expect("a response head");
        let head = std::str::from_utf8(&data[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let reply = Reply { status, headers, body: data[start..].to_vec() };
        let length: usize = reply.header("content-length").unwrap().parse().unwrap();
        if !request.starts_with(b"HEAD ") {
            assert_eq!(reply.body.len(), length, "Content-Length");
        }
        assert_eq!(reply.header("connection"), Some("close"));
        reply
    }

    fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/22.4.2\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if method == "PUT" {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        raw(addr, req.as_bytes())
    }

    fn get(addr: SocketAddr, path: &str, token: &str) -> Reply {
        request(addr, "GET", path, &[(TOKEN_HEADER, token)])
    }

    fn token(addr: SocketAddr, ttl: &str) -> String {
        let r = request(addr, "PUT", TOKEN_PATH, &[(TTL_HEADER, ttl)]);
        assert_eq!(r.status, 200);
        r.text()
    }

    fn example() -> Instance {
        Instance::example(MAC, "10.0.2.15")
    }

    #[test]
    fn example_instance() {
        let i = Instance::example("52:54:00:AB:CD:EF", "10.0.2.15");
        assert_eq!(i.instance_id, "i-0123456789abcdef0");
        assert_eq!(i.instance_type, "m7g.medium");
        assert_eq!((i.region.as_str(), i.availability_zone.as_str()), ("eu-central-1", "eu-central-1a"));
        assert_eq!(i.local_hostname, "ip-10-0-2-15.eu-central-1.compute.internal");
        assert_eq!(i.mac, "52:54:00:ab:cd:ef");
        assert_eq!(i.subnet_cidr, "10.0.2.0/24");
        assert_eq!(i.user_data, None);
    }

    #[test]
    fn no_token_is_401() {
        let (imds, addr) = start(example());
        let r = request(addr, "GET", "/2021-03-23/meta-data/instance-id", &[]);
        assert_eq!(r.status, 401);
        assert_eq!(request(addr, "GET", "/latest/meta-data/", &[(TOKEN_HEADER, "made-up")]).status, 401);
        assert_eq!(request(addr, "HEAD", "/no/such/path", &[]).status, 401);
        assert_eq!(imds.unauthorized(), 3);
        assert_eq!(imds.tokens_issued(), 0);
        assert_eq!(
            imds.requests(),
            ["GET /2021-03-23/meta-data/instance-id 401", "GET /latest/meta-data/ 401", "HEAD /no/such/path 401"]
        );
    }

    #[test]
    fn token_flow_serves_user_data_exactly() {
        let user_data: Vec<u8> = b"#cloud-config\r\nruncmd: [\"echo hi\"]\n\x00\xff\xfe binary tail".to_vec();
        let (imds, addr) = start(Instance { user_data: Some(user_data.clone()), ..example() });
        let r = request(addr, "PUT", TOKEN_PATH, &[(TTL_HEADER, "21600")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header(TTL_HEADER), Some("21600"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        let t = r.text();
        assert_eq!(t.len(), 56, "{t}");
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)), "{t}");
        assert_ne!(t, token(addr, "60"), "tokens are fresh");

        let r = get(addr, "/2021-03-23/user-data", &t);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.body, user_data);
        assert_eq!(get(addr, "/latest/user-data", &t).body, user_data);
        let head = request(addr, "HEAD", "/latest/user-data", &[(TOKEN_HEADER, &t)]);
        assert_eq!((head.status, head.body.len()), (200, 0));
        assert_eq!(head.header("content-length"), Some(user_data.len().to_string().as_str()));
        assert_eq!(get(addr, "/latest/", &t).text(), "dynamic\nmeta-data\nuser-data");

        assert_eq!(imds.tokens_issued(), 2);
        assert_eq!(imds.user_data_served(), 2, "GETs only");
        assert_eq!(imds.unauthorized(), 0);
        assert_eq!(imds.requests()[0], "PUT /latest/api/token 200");
        assert_eq!(imds.requests()[2], "GET /2021-03-23/user-data 200");
    }

    #[test]
    fn no_user_data_is_404() {
        let (imds, addr) = start(example());
        let t = token(addr, "21600");
        assert_eq!(get(addr, "/2021-03-23/user-data", &t).status, 404);
        assert_eq!(get(addr, "/2021-03-23/", &t).text(), "dynamic\nmeta-data");
        assert_eq!(imds.user_data_served(), 0);
    }

    #[test]
    fn bad_ttl_is_400() {
        let (imds, addr) = start(example());
        for ttl in ["0", "21601", "-5", "abc", "", "1.5", "99999999999999999999999"] {
            let r = request(addr, "PUT", TOKEN_PATH, &[(TTL_HEADER, ttl)]);
            assert_eq!(r.status, 400, "ttl {ttl:?}");
        }
        assert_eq!(request(addr, "PUT", TOKEN_PATH, &[]).status, 400, "no TTL");
        // Header names are case-insensitive; 1 and 21600 are the bounds.
        let r = request(addr, "PUT", TOKEN_PATH, &[("x-AWS-ec2-metadata-token-ttl-seconds", "1")]);
        assert_eq!((r.status, r.header(TTL_HEADER)), (200, Some("1")));
        assert_eq!(imds.tokens_issued(), 1);
        assert_eq!(imds.requests().iter().filter(|l| l.ends_with(" 400")).count(), 8);
    }

    #[test]
    fn forwarded_put_is_403() {
        let (imds, addr) = start(example());
        let r = request(addr, "PUT", TOKEN_PATH, &[(TTL_HEADER, "21600"), ("X-Forwarded-For", "10.0.0.1")]);
        assert_eq!(r.status, 403);
        assert_eq!(request(addr, "PUT", "/2021-03-23/api/token", &[(TTL_HEADER, "21600")]).status, 403);
        assert_eq!(imds.tokens_issued(), 0);
        assert_eq!(imds.requests(), ["PUT /latest/api/token 403", "PUT /2021-03-23/api/token 403"]);
    }

    #[test]
    fn meta_data_listings() {
        let (_imds, addr) = start(example());
        let t = token(addr, "21600");
        for path in ["/latest/meta-data/", "/2021-03-23/meta-data", "/2016-09-02/meta-data/"] {
            let r = get(addr, path, &t);
            assert_eq!((r.status, r.header("content-type")), (200, Some("text/plain")), "{path}");
            let items: Vec<String> = r.text().lines().map(String::from).collect();
            for want in ["instance-id", "local-hostname", "hostname", "local-ipv4", "mac", "ami-id", "network/"] {
                assert!(items.iter().any(|i| i == want), "{path}: {want} in {items:?}");
            }
            assert!(items.contains(&"placement/".to_string()));
            assert!(!items.iter().any(|i| i.starts_with("public-keys")), "no key pair");
        }
        // Categories newer than the version asked for are not there.
        let old = get(addr, "/2009-04-04/meta-data/", &t).text();
        assert!(!old.lines().any(|l| l == "mac" || l == "network/" || l == "events/"), "{old}");
        assert_eq!(get(addr, "/2009-04-04/meta-data/mac", &t).status, 404);
        assert_eq!(get(addr, "/2016-09-02/meta-data/placement/", &t).text(), "availability-zone");
        assert_eq!(get(addr, "/latest/meta-data/placement/", &t).text(), "availability-zone\nregion");

        assert_eq!(get(addr, "/latest/meta-data/instance-id", &t).text(), "i-0123456789abcdef0");
        assert_eq!(get(addr, "/latest/meta-data/instance-type", &t).text(), "m7g.medium");
        assert_eq!(get(addr, "/latest/meta-data/placement/availability-zone", &t).text(), "eu-central-1a");
        assert_eq!(get(addr, "/latest/meta-data/placement/region", &t).text(), "eu-central-1");
        assert_eq!(get(addr, "/2021-03-23/meta-data/network/interfaces/macs/", &t).text(), format!("{MAC}/"));
        let nic = format!("/2021-03-23/meta-data/network/interfaces/macs/{MAC}/");
        let leaves = get(addr, &nic, &t).text();
        for want in ["device-number", "interface-id", "local-ipv4s", "mac", "subnet-ipv4-cidr-block", "vpc-id"] {
            assert!(leaves.lines().any(|l| l == want), "{want} in {leaves}");
        }
        assert_eq!(get(addr, &format!("{nic}device-number"), &t).text(), "0");
        assert_eq!(get(addr, &format!("{nic}local-ipv4s"), &t).text(), "10.0.2.15");
        assert_eq!(get(addr, &format!("{nic}subnet-ipv4-cidr-block"), &t).text(), "10.0.2.0/24");
        // combine_url would send a colon as-is, but an escaped one means the same path.
        assert_eq!(
            get(addr, "/latest/meta-data/network/interfaces/macs/52%3A54%3A00%3A12%3A34%3A56/mac", &t).text(),
            MAC
        );

        let versions = get(addr, "/", &t).text();
        for v in ["2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest"] {
            assert!(versions.lines().any(|l| l == v), "{v}");
        }
        for missing in [
            "/latest/meta-data/nope",
            "/latest/meta-data/public-keys/",
            "/1999-01-01/meta-data/",
            "/latest/meta-data//instance-id",
            "/latest/foo",
            TOKEN_PATH,
        ] {
            assert_eq!(get(addr, missing, &t).status, 404, "{missing}");
        }
    }

    #[test]
    fn identity_document_is_json() {
        let (_imds, addr) = start(example());
        let t = token(addr, "21600");
        // cloud-init asks for the directory without a slash.
        assert_eq!(get(addr, "/2021-03-23/dynamic/instance-identity", &t).text(), "document");
        assert_eq!(get(addr, "/2021-03-23/dynamic/", &t).text(), "fws/\ninstance-identity/");
        let r = get(addr, "/2021-03-23/dynamic/instance-identity/document", &t);
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(text.trim().starts_with('{') && text.trim().ends_with('}'), "MetadataLeafDecoder parses it");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
        assert_eq!(doc["architecture"], "arm64");
        assert_eq!(doc["availabilityZone"], "eu-central-1a");
        assert_eq!(doc["region"], "eu-central-1");
        assert_eq!(doc["instanceType"], "m7g.medium");
        assert_eq!(doc["imageId"], "ami-0fedcba9876543210");
        assert_eq!(doc["privateIp"], "10.0.2.15");
        assert_eq!(doc["accountId"], ACCOUNT_ID);
        assert_eq!(doc["version"], "2017-09-30");
        let pending = doc["pendingTime"].as_str().unwrap();
        assert_eq!(pending.len(), 20, "{pending}");
        assert!(pending.ends_with('Z') && pending.as_bytes()[10] == b'T', "{pending}");
    }

    #[test]
    fn tokens_expire() {
        let (imds, addr) = start(example());
        let t = token(addr, "1");
        assert_eq!(get(addr, "/latest/meta-data/instance-id", &t).status, 200);
        imds.advance_clock(Duration::from_millis(1100));
        assert_eq!(get(addr, "/latest/meta-data/instance-id", &t).status, 401);
        // A new token works; a long one survives the same step.
        let long = token(addr, "21600");
        imds.advance_clock(Duration::from_secs(21599));
        assert_eq!(get(addr, "/latest/meta-data/instance-id", &long).status, 200);
        imds.advance_clock(Duration::from_secs(2));
        assert_eq!(get(addr, "/latest/meta-data/instance-id", &long).status, 401);
        assert_eq!(imds.unauthorized(), 2);
    }

    #[test]
    fn methods_and_malformed_requests() {
        let (imds, addr) = start(example());
        let t = token(addr, "21600");
        let r = request(addr, "DELETE", "/latest/meta-data/", &[(TOKEN_HEADER, &t)]);
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PUT")));
        assert_eq!(request(addr, "POST", TOKEN_PATH, &[(TTL_HEADER, "60")]).status, 405);
        assert_eq!(request(addr, "PUT", "/latest/meta-data/instance-id", &[(TTL_HEADER, "60")]).status, 403);

        let mut huge = b"GET /latest/meta-data/ HTTP/1.1\r\nX-Pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(raw(addr, &huge).status, 400);
        assert_eq!(raw(addr, b"nonsense\r\n\r\n").status, 400);
        assert_eq!(raw(addr, b"GET relative HTTP/1.1\r\n\r\n").status, 400);
        assert_eq!(raw(addr, b"GET / HTTP/1.1\r\nno colon\r\n\r\n").status, 400);
        let chunked =
            format!("PUT {TOKEN_PATH} HTTP/1.1\r\n{TTL_HEADER}: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(raw(addr, chunked.as_bytes()).status, 400);
        // A body is read and ignored; an absolute-form target is understood.
        let body = format!(
            "PUT http://169.254.169.254{TOKEN_PATH} HTTP/1.1\r\n{TTL_HEADER}: 60\r\nContent-Length: 5\r\n\r\nhello"
        );
        assert_eq!(raw(addr, body.as_bytes()).status, 200);

        let log = imds.requests();
        assert_eq!(log[1], "DELETE /latest/meta-data/ 405");
        assert_eq!(log[4], "GET /latest/meta-data/ 400", "a too-large head is logged with its request line");
        assert_eq!(log[5], "- - 400");
        assert_eq!(imds.tokens_issued(), 2);
    }

    /// A port of cloud-init 22.4.2's `MetadataMaterializer` (`cloudinit/sources/helpers/ec2.py`)
    /// over HTTP: every request it makes must succeed.
    fn materialize(addr: SocketAddr, token: &str, url: &str) {
        let r = get(addr, url, token);
        assert_eq!(r.status, 200, "{url}");
        let (mut leaves, mut children) = (Vec::new(), Vec::new());
        for field in r.text().lines().map(str::trim) {
            let name = field.trim_end_matches('/');
            if field.is_empty() || name.is_empty() || name == "security-credentials" {
                continue;
            }
            if field.ends_with('/') {
                if !children.contains(&name.to_string()) {
                    children.push(name.to_string());
                }
            } else {
                let resource = match field.split_once('=') {
                    Some((n, _)) if n.parse::<i64>().is_ok() => format!("{n}/openssh-key"),
                    _ => name.to_string(),
                };
                leaves.push(resource);
            }
        }
        let base = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        for child in children {
            materialize(addr, token, &format!("{base}{child}/"));
        }
        for resource in leaves {
            let r = get(addr, &format!("{base}{resource}"), token);
            assert_eq!(r.status, 200, "{base}{resource}");
        }
    }

    /// `DataSourceEc2.crawl_metadata` on AWS, the happy path.
    fn cloud_init_crawl(addr: SocketAddr) {
        let t = token(addr, AWS_TOKEN_TTL_SECONDS);
        assert_eq!(get(addr, "/2021-03-23/meta-data/instance-id", &t).status, 200, "get_metadata_api_version");
        let _ = get(addr, "/2021-03-23/user-data", &t);
        materialize(addr, &t, "/2021-03-23/meta-data/");
        materialize(addr, &t, "/2021-03-23/dynamic/instance-identity");
    }

    const AWS_TOKEN_TTL_SECONDS: &str = "21600";

    #[test]
    fn cloud_init_crawl_matches_the_prediction() {
        for user_data in [None, Some(b"#cloud-config\n".to_vec())] {
            let instance = Instance { user_data, ..example() };
            let (imds, addr) = start(instance.clone());
            cloud_init_crawl(addr);
            let predicted = cloud_init_requests(&instance);
            assert_eq!(imds.requests(), predicted);
            assert_eq!(imds.unauthorized(), 0);
            assert_eq!(imds.tokens_issued(), 1);
            assert_eq!(imds.user_data_served(), usize::from(instance.user_data.is_some()));
        }
        let predicted = cloud_init_requests(&example());
        assert_eq!(
            predicted[..5],
            [
                "PUT /latest/api/token 200",
                "GET /2021-03-23/meta-data/instance-id 200",
                "GET /2021-03-23/user-data 404",
                "GET /2021-03-23/meta-data/ 200",
                "GET /2021-03-23/meta-data/block-device-mapping/ 200",
            ]
        );
        assert!(predicted.contains(&format!("GET /2021-03-23/meta-data/network/interfaces/macs/{MAC}/vpc-id 200")));
        assert_eq!(
            predicted[predicted.len() - 2..],
            ["GET /2021-03-23/dynamic/instance-identity 200", "GET /2021-03-23/dynamic/instance-identity/document 200",]
        );
    }

    #[test]
    fn concurrent_clients() {
        let (imds, addr) = start(example());
        let t = token(addr, "21600");
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || get(addr, "/latest/meta-data/local-ipv4", &t).text())
            })
            .collect();
        for th in threads {
            assert_eq!(th.join().unwrap(), "10.0.2.15");
        }
        assert_eq!(imds.requests().len(), 17);
    }

    #[test]
    fn drop_closes_the_listener() {
        let (imds, addr) = start(example());
        assert_eq!(imds.local_addr(), Some(addr));
        assert_eq!(imds.instance().instance_id, "i-0123456789abcdef0");
        drop(imds);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn formats() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc3339(t), "1994-11-06T08:49:37Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(target_path("/a%2Fb?x=1"), Some("/a/b".into()));
        assert_eq!(target_path("/bad%zz"), None);
        assert_eq!(target_path("http://169.254.169.254"), Some("/".into()));
    }
}
