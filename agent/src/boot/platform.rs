//! Which Talos platform the next system runs on: `aws` on Amazon EC2, `metal` anywhere else.
//!
//! Detection, first match wins (`--platform` overrides everything):
//! 1. **DMI** (`/sys/class/dmi/id`, readable without network; Graviton instances expose SMBIOS
//!    through ACPI like x86 ones): `sys_vendor`, `board_vendor` or `bios_vendor` is `Amazon EC2`
//!    (Nitro instances), `product_version` contains `amazon` (Xen instances: `4.11.amazon`),
//!    `product_uuid` starts with `ec2` (AWS EC2 User Guide, "Detect whether a host is an EC2
//!    instance"; cloud-init `ds-identify` `ec2_identify_platform`), or `board_asset_tag` is an
//!    instance ID (Nitro).
//! 2. **IMDSv2**: `PUT http://169.254.169.254/latest/api/token` with
//!    `X-aws-ec2-metadata-token-ttl-seconds`, then `GET /latest/meta-data/instance-id` with
//!    `X-aws-ec2-metadata-token` (AWS EC2 User Guide, "Use the Instance Metadata Service to access
//!    instance metadata"), each bounded by a short timeout, never through a proxy.
//! 3. Otherwise `metal`.

use std::path::Path;
use std::time::Duration;

use kernel_cmdline::preset::Platform;
use serde::Serialize;

/// Where Linux exposes the SMBIOS/DMI identification strings.
pub const DMI_DIR: &str = "/sys/class/dmi/id";
/// The EC2 instance metadata service (IPv4 link-local).
pub const IMDS_BASE: &str = "http://169.254.169.254";
/// Timeout of each IMDS request. IMDS answers in milliseconds; elsewhere the address is
/// unroutable and the connect would otherwise hang.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// Lifetime requested for the IMDSv2 session token, in seconds (1–21600 allowed).
const TOKEN_TTL_SECONDS: &str = "60";

/// How the platform was decided (for the JSON plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Detection {
    /// `--platform` was given.
    Flag,
    /// A DMI file identified EC2.
    Dmi {
        /// The file under `/sys/class/dmi/id` that matched.
        file: String,
        /// Its content (trimmed).
        value: String,
    },
    /// IMDSv2 answered with an instance ID.
    Imds {
        /// The instance ID (`i-…`).
        instance_id: String,
    },
    /// Neither DMI nor IMDSv2 identified EC2.
    NotEc2 {
        /// Why IMDSv2 did not identify EC2 (one line).
        imds: String,
    },
}

/// The platform and how it was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// The Talos platform.
    #[serde(serialize_with = "platform_str")]
    pub platform: Platform,
    /// How it was decided.
    pub detection: Detection,
}

fn platform_str<S: serde::Serializer>(p: &Platform, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

/// Why IMDSv2 gave no instance ID.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// Connecting, sending or receiving failed, or the timeout passed.
    #[error("{what}: {source}")]
    Http {
        /// `token request` or `instance-id request`.
        what: &'static str,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with a non-success status.
    #[error("{what}: HTTP status {status}")]
    Status {
        /// `token request` or `instance-id request`.
        what: &'static str,
        /// The status code.
        status: u16,
    },
    /// The instance ID is not `i-` followed by hex digits.
    #[error("instance-id {0:?} is not an EC2 instance ID")]
    NotAnInstanceId(String),
}

/// True for an EC2 instance ID: `i-` and 8 or 17 lowercase hex digits.
fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The first DMI file under `dir` that identifies EC2, with its trimmed content.
pub fn dmi_ec2(dir: &Path) -> Option<(String, String)> {
    type Check = fn(&str) -> bool;
    let checks: [(&str, Check); 6] = [
        ("sys_vendor", |v| v == "Amazon EC2"),
        ("board_vendor", |v| v == "Amazon EC2"),
        ("bios_vendor", |v| v == "Amazon EC2"),
        ("product_version", |v| v.to_ascii_lowercase().contains("amazon")),
        ("product_uuid", |v| v.to_ascii_lowercase().starts_with("ec2")),
        ("board_asset_tag", is_instance_id),
    ];
    checks.iter().find_map(|(file, check)| {
        let value = std::fs::read_to_string(dir.join(file)).ok()?;
        let value = value.trim();
        check(value).then(|| (file.to_string(), value.to_string()))
    })
}

/// Asks IMDSv2 at `base` (e.g. [`IMDS_BASE`]) for the instance ID, each request bounded by `timeout`.
///
/// # Errors
/// [`ImdsError`]: no answer in time, a refused token (IMDS disabled, or the hop limit reached), a
/// non-success status, or an answer that is not an instance ID.
pub async fn imds_instance_id(base: &str, timeout: Duration) -> Result<String, ImdsError> {
    // reqwest is built with `rustls-no-provider` (shared with the registry client): a client cannot
    // be built before a process-wide crypto provider is installed, even for plain HTTP. Installing
    // fails harmlessly when another part of the agent did it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|source| ImdsError::Http { what: "HTTP client", source })?;
    let what = "token request";
    let resp = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
        .send()
        .await
        .map_err(|source| ImdsError::Http { what, source })?;
    if !resp.status().is_success() {
        return Err(ImdsError::Status { what, status: resp.status().as_u16() });
    }
    let token = resp.text().await.map_err(|source| ImdsError::Http { what, source })?;
    let what = "instance-id request";
    let resp = client
        .get(format!("{base}/latest/meta-data/instance-id"))
        .header("X-aws-ec2-metadata-token", token.trim())
        .send()
        .await
        .map_err(|source| ImdsError::Http { what, source })?;
    if !resp.status().is_success() {
        return Err(ImdsError::Status { what, status: resp.status().as_u16() });
    }
    let id = resp.text().await.map_err(|source| ImdsError::Http { what, source })?;
    let id = id.trim();
    if !is_instance_id(id) {
        return Err(ImdsError::NotAnInstanceId(id.chars().take(64).collect()));
    }
    Ok(id.to_string())
}

/// Decides the platform: `flag` if given, else DMI under `dmi_dir`, else IMDSv2 at `imds_base`,
/// else `metal`. Never fails: what did not work is recorded in [`Detection::NotEc2`].
pub async fn detect(flag: Option<Platform>, dmi_dir: &Path, imds_base: &str, timeout: Duration) -> Detected {
    if let Some(platform) = flag {
        return Detected { platform, detection: Detection::Flag };
    }
    if let Some((file, value)) = dmi_ec2(dmi_dir) {
        return Detected { platform: Platform::Aws, detection: Detection::Dmi { file, value } };
    }
    match imds_instance_id(imds_base, timeout).await {
        Ok(instance_id) => Detected { platform: Platform::Aws, detection: Detection::Imds { instance_id } },
        Err(e) => {
            Detected { platform: Platform::Metal, detection: Detection::NotEc2 { imds: crate::error_chain::chain(&e) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// How the stand-in IMDS behaves.
    #[derive(Clone, Copy)]
    enum Mode {
        /// IMDSv2 as on EC2.
        Ec2,
        /// The token request is refused (IMDS v2 disabled / hop limit): 403 as EC2 answers then.
        TokenForbidden,
        /// Accepts connections and never answers.
        Silent,
    }

    /// A real HTTP/1.1 server on 127.0.0.1 serving the two IMDSv2 endpoints; returns its base URL and
    /// the request lines + token headers it saw.
    fn serve(mode: Mode) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if let Mode::Silent = mode {
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut request = String::new();
                        if reader.read_line(&mut request).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = Vec::new();
                        let mut content_length = 0;
                        loop {
                            let mut h = String::new();
                            reader.read_line(&mut h).unwrap();
                            let h = h.trim_end().to_string();
                            if h.is_empty() {
                                break;
                            }
                            let lower = h.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                content_length = v.trim().parse().unwrap();
                            }
                            headers.push(lower);
                        }
                        let mut body = vec![0; content_length];
                        reader.read_exact(&mut body).unwrap();
                        let header = |name: &str| {
                            headers.iter().find_map(|h| h.strip_prefix(name).map(|v| v.trim().to_string()))
                        };
                        let request = request.trim_end().to_string();
                        let token = header("x-aws-ec2-metadata-token:");
                        let ttl = header("x-aws-ec2-metadata-token-ttl-seconds:");
                        log.lock().unwrap().push(format!("{request} token={token:?} ttl={ttl:?}"));
                        let (status, body) = match (mode, request.as_str()) {
                            (Mode::TokenForbidden, _) => ("403 Forbidden", ""),
                            (_, "PUT /latest/api/token HTTP/1.1") if ttl.is_some() => ("200 OK", "AQAEAtoken=="),
                            (_, "GET /latest/meta-data/instance-id HTTP/1.1")
                                if token.as_deref() == Some("aqaeatoken==") =>
                            {
                                ("200 OK", "i-0123456789abcdef0")
                            }
                            _ => ("401 Unauthorized", ""),
                        };
                        let reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        stream.write_all(reply.as_bytes()).unwrap();
                    }
                });
            }
        });
        (base, seen)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn imdsv2_token_then_instance_id() {
        let (base, seen) = serve(Mode::Ec2);
        let id = rt().block_on(imds_instance_id(&base, IMDS_TIMEOUT)).unwrap();
        assert_eq!(id, "i-0123456789abcdef0");
        // Header names are case-insensitive; the server lowercases what it saw.
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "PUT /latest/api/token HTTP/1.1 token=None ttl=Some(\"60\")",
                "GET /latest/meta-data/instance-id HTTP/1.1 token=Some(\"aqaeatoken==\") ttl=None",
            ]
        );
    }

    #[test]
    fn imds_refusals_and_silence_are_errors() {
        let (base, _) = serve(Mode::TokenForbidden);
        let err = rt().block_on(imds_instance_id(&base, IMDS_TIMEOUT)).unwrap_err();
        assert!(matches!(err, ImdsError::Status { what: "token request", status: 403 }), "{err}");

        let (base, _) = serve(Mode::Silent);
        let err = rt().block_on(imds_instance_id(&base, Duration::from_millis(300))).unwrap_err();
        assert!(matches!(&err, ImdsError::Http { source, .. } if source.is_timeout()), "{err:?}");

        // Nothing listens on the port any more: bound and released on purpose, a closed port is
        // what this checks.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = rt().block_on(imds_instance_id(&format!("http://127.0.0.1:{port}"), IMDS_TIMEOUT)).unwrap_err();
        assert!(matches!(err, ImdsError::Http { what: "token request", .. }), "{err}");
    }

    fn dmi_dir(files: &[(&str, &str)]) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "moonboot-dmi-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), format!("{content}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn dmi_identifies_nitro_graviton_and_xen() {
        // A c7g (Graviton3, Nitro) as Ubuntu 22.04 shows it.
        let nitro = dmi_dir(&[
            ("sys_vendor", "Amazon EC2"),
            ("product_name", "c7g.large"),
            ("bios_vendor", "Amazon EC2"),
            ("board_asset_tag", "i-0123456789abcdef0"),
        ]);
        assert_eq!(dmi_ec2(&nitro), Some(("sys_vendor".into(), "Amazon EC2".into())));
        let xen = dmi_dir(&[("sys_vendor", "Xen"), ("product_version", "4.11.amazon"), ("bios_vendor", "Xen")]);
        assert_eq!(dmi_ec2(&xen), Some(("product_version".into(), "4.11.amazon".into())));
        let uuid = dmi_dir(&[("product_uuid", "EC2E1916-9099-7CAF-FD21-012345678901")]);
        assert_eq!(dmi_ec2(&uuid).unwrap().0, "product_uuid");
        let qemu = dmi_dir(&[("sys_vendor", "QEMU"), ("product_uuid", "6b2d1a57-0000-0000-0000-000000000000")]);
        assert_eq!(dmi_ec2(&qemu), None);
        for d in [nitro, xen, uuid, qemu] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn detect_order_flag_dmi_imds_metal() {
        let rt = rt();
        let empty = dmi_dir(&[]);
        let ec2 = dmi_dir(&[("sys_vendor", "Amazon EC2")]);
        let (imds, _) = serve(Mode::Ec2);
        let (refusing, _) = serve(Mode::TokenForbidden);

        let d = rt.block_on(detect(Some(Platform::Metal), &ec2, &imds, IMDS_TIMEOUT));
        assert_eq!(d, Detected { platform: Platform::Metal, detection: Detection::Flag });
        let d = rt.block_on(detect(None, &ec2, &refusing, IMDS_TIMEOUT));
        assert_eq!(d.platform, Platform::Aws);
        assert!(matches!(d.detection, Detection::Dmi { .. }));
        let d = rt.block_on(detect(None, &empty, &imds, IMDS_TIMEOUT));
        assert_eq!(d.detection, Detection::Imds { instance_id: "i-0123456789abcdef0".into() });
        let d = rt.block_on(detect(None, &empty, &refusing, IMDS_TIMEOUT));
        assert_eq!(d.platform, Platform::Metal);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"platform": "metal", "detection": {"method": "not_ec2", "imds": "token request: HTTP status 403"}})
        );
        for dir in [empty, ec2] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn instance_ids() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-1234abcd"));
        assert!(!is_instance_id("i-XYZ"));
        assert!(!is_instance_id("<html>"));
    }
}
