//! `talos-agent report` against `talos-agent wait`, both as real processes on loopback, with a
//! real TLS server (rustls, self-signed rcgen certificate) standing in for apid in maintenance
//! mode (no client certificate requested) or configured (client certificate requested).
//!
//! Checks: the report reaches wait with the phase and the SPKI fingerprint of the served
//! certificate; `--json` prints one line per node; a wrong token is refused (401) and counted;
//! the timeout path exits 3 with a summary; with `talos_agent.mbr=repair` on its kernel command
//! line, report restores a boot disk image's hybrid MBR that Talos's `writePMBR` clobbered and
//! says so in the delivered report, and without it never touches the disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_talos-agent");

/// The disk images of the agent's own `report::boot_mbr` tests (one implementation).
#[path = "../src/report/test_disk.rs"]
mod test_disk;

/// A TLS server on loopback answering every handshake; returns its address and the expected
/// fingerprint (base64 SHA-256 of the SPKI as rcgen encodes the key).
fn fake_apid(request_client_cert: bool) -> (SocketAddr, String) {
    // The stand-in Talos init's apid server (tests/standin-init).
    let tls = standin_init::apid_tls(request_client_cert, rustls::DEFAULT_VERSIONS).unwrap();
    let (config, fp) = (tls.config, tls.fingerprint);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let mut c = rustls::ServerConnection::new(config).unwrap();
                while c.is_handshaking() {
                    if c.complete_io(&mut s).is_err() {
                        return;
                    }
                }
                let _ = c.complete_io(&mut s);
            });
        }
    });
    (addr, fp)
}

/// A fake node root: DMI UUID, boot ID, uptime, a Talos os-release and extensions.yaml.
fn node_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("talos-agent-report-wait-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let put = |p: &str, t: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    };
    put("sys/class/dmi/id/product_uuid", "8e3f0b1a-7d0b-4d3c-9c55-2b9f0e4f1a11\n");
    put("proc/sys/kernel/random/boot_id", "0f2c7b0e-1111-2222-3333-444455556666\n");
    put("proc/uptime", "42.50 80.00\n");
    put("etc/os-release", "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.10.5\n");
    put(
        "etc/extensions.yaml",
        "layers:\n    - image: 0.sqsh\n      metadata:\n        name: spin\n        version: v0.19.0\n    - image: 1.sqsh\n      metadata:\n        name: talos-agent\n        version: v0.1.0\n",
    );
    root
}

/// A running `talos-agent wait`; its stderr lines arrive on `stderr`.
struct Wait {
    child: Child,
    addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Wait {
    fn start(args: &[&str]) -> Wait {
        let mut child = Command::new(BIN)
            .arg("wait")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(30)).expect("wait prints its listening line");
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .parse()
            .unwrap();
        Wait { child, addr, stderr: rx }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/report", self.addr)
    }

    /// Waits for exit; returns (code, stdout, stderr after the first line).
    fn finish(mut self) -> (i32, String, String) {
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        // The reader thread ends at the pipe's end of file, once the exited child's last lines
        // are read: collect until then, not just what has arrived so far.
        let mut err = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(30)) {
            err.push(l);
        }
        (status.code().unwrap_or(-1), out, err.join("\n"))
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(url: &str, token: &str, apid: SocketAddr, node: &str, root: &Path) -> std::process::Output {
    Command::new(BIN)
        .arg("report")
        .args(["--once", "--url", url, "--token", token, "--node", node])
        .arg("--apid")
        .arg(apid.to_string())
        .arg("--root")
        .arg(root)
        .args(["--cmdline", "/dev/null"])
        .env_remove("TALOS_AGENT_REPORT")
        .env_remove("TALOS_AGENT_TOKEN")
        .env_remove("TALOS_AGENT_NODE")
        // No system CA certificates, as in the extension service's container: plain HTTP must
        // not need them (rustls-native-certs reads only these when they are set).
        .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
        .env("SSL_CERT_DIR", "/nonexistent")
        .output()
        .unwrap()
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

#[test]
fn maintenance_report_reaches_wait_with_fingerprint() {
    let (apid, fp) = fake_apid(false);
    let root = node_root("maint");
    let wait = Wait::start(&["--token", "t0ken", "--nodes", "1", "--json", "--timeout", "60s"]);
    let r = report(&wait.url(), "t0ken", apid, "node-a", &root);
    assert!(r.status.success(), "report: {}", String::from_utf8_lossy(&r.stderr));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains(&format!("talos-agent report v{} starting", env!("CARGO_PKG_VERSION"))), "{stderr}");
    let (code, out, err) = wait.finish();
    assert_eq!(code, 0, "wait: {err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let j = &lines[0];
    assert_eq!(j["node"], "node-a");
    assert_eq!(j["phase"], "maintenance_ready");
    assert_eq!(j["fingerprint"], fp.as_str());
    assert_eq!(j["talos_version"], "v1.10.5");
    assert_eq!(j["uuid"], "8e3f0b1a-7d0b-4d3c-9c55-2b9f0e4f1a11");
    assert_eq!(j["extensions"], serde_json::json!(["spin@v0.19.0", "talos-agent@v0.1.0"]));
    assert_eq!(j["uptime_seconds"], 42.5);
    assert!(j["bootstrap_ready"].is_boolean(), "maintenance mode: bootstrap is known to be not ready");
    assert!(err.contains("1 node(s) reached maintenance_ready"), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn configured_when_apid_requests_a_client_certificate() {
    let (maint, _) = fake_apid(false);
    let (conf, fp) = fake_apid(true);
    let root = node_root("conf");
    let wait =
        Wait::start(&["--token", "t0ken", "--nodes", "1", "--until", "configured", "--json", "--timeout", "60s"]);
    // A node still in maintenance mode does not count towards --until configured.
    assert!(report(&wait.url(), "t0ken", maint, "node-m", &root).status.success());
    assert!(report(&wait.url(), "t0ken", conf, "node-c", &root).status.success());
    let (code, out, err) = wait.finish();
    assert_eq!(code, 0, "wait: {err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "only the configured node: {out}");
    assert_eq!(lines[0]["node"], "node-c");
    assert_eq!(lines[0]["phase"], "configured");
    assert_eq!(lines[0]["fingerprint"], fp.as_str());
    assert_eq!(lines[0]["bootstrap_ready"], serde_json::Value::Null, "no role given: cannot tell");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn wrong_token_is_refused_counted_and_timeout_exits_3() {
    let (apid, _) = fake_apid(false);
    let root = node_root("token");
    let wait = Wait::start(&["--token", "right", "--nodes", "1", "--timeout", "4s"]);
    let r = report(&wait.url(), "wrong", apid, "node-x", &root);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("401"), "{}", String::from_utf8_lossy(&r.stderr));
    // A request without any Authorization header is refused too.
    let mut s = TcpStream::connect(wait.addr).unwrap();
    write!(s, "POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let (code, out, err) = wait.finish();
    assert_eq!(code, 3, "timeout exit code; stderr: {err}");
    assert!(err.contains("timed out after"), "{err}");
    assert!(err.contains("0/1 node(s) reached maintenance_ready"), "{err}");
    assert!(err.contains("2 report(s) refused"), "{err}");
    assert!(out.contains("refused: report from 127.0.0.1:"), "plain lines on a non-terminal: {out}");
    assert!(out.contains("(2 so far)"), "{out}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn timeout_with_json_lists_nodes_seen() {
    let (apid, fp) = fake_apid(false);
    let root = node_root("tjson");
    let wait = Wait::start(&["--token", "t", "--nodes", "2", "--json", "--timeout", "4s"]);
    assert!(report(&wait.url(), "t", apid, "node-1", &root).status.success());
    let (code, out, err) = wait.finish();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("1/2 node(s) reached maintenance_ready"), "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["fingerprint"], fp.as_str());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn report_without_url_idles_instead_of_exiting() {
    let mut child = Command::new(BIN)
        .args(["report", "--cmdline", "/dev/null"])
        .env_remove("TALOS_AGENT_REPORT")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "report exited without a URL (would crash-loop as a service)");
    child.kill().unwrap();
    let _ = child.wait();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("no collector URL"), "{err}");
}

/// `report --once --boot-disk DISK` with `cmdline` as its kernel command line.
fn report_boot_disk(url: &str, apid: SocketAddr, root: &Path, cmdline: &str, disk: &Path) -> std::process::Output {
    let file = root.join("cmdline");
    std::fs::write(&file, cmdline).unwrap();
    Command::new(BIN)
        .arg("report")
        .args(["--once", "--url", url, "--token", "t0ken", "--node", "cm3"])
        .arg("--apid")
        .arg(apid.to_string())
        .arg("--root")
        .arg(root)
        .arg("--cmdline")
        .arg(&file)
        .arg("--boot-disk")
        .arg(disk)
        .env_remove("TALOS_AGENT_REPORT")
        .env_remove("TALOS_AGENT_TOKEN")
        .env_remove("TALOS_AGENT_NODE")
        .output()
        .unwrap()
}

#[test]
fn report_repairs_a_clobbered_boot_disk_and_says_so() {
    let (apid, _) = fake_apid(false);
    let root = node_root("mbr");
    let disk = root.join("mmcblk0.raw");
    let written = test_disk::disk_image(&disk, "EFI");
    let clobbered = test_disk::clobber(&disk);
    assert_ne!(clobbered, written);

    // Without talos_agent.mbr=repair the disk is not touched, even with --boot-disk.
    let wait = Wait::start(&["--token", "t0ken", "--nodes", "1", "--json", "--timeout", "60s"]);
    let r = report_boot_disk(&wait.url(), apid, &root, "console=ttyAMA0\n", &disk);
    assert!(r.status.success(), "report: {}", String::from_utf8_lossy(&r.stderr));
    let (code, out, err) = wait.finish();
    assert_eq!(code, 0, "wait: {err}");
    assert_eq!(json_lines(&out)[0]["boot_mbr"]["state"], "not_checked", "{out}");
    assert_eq!(test_disk::lba0(&disk), clobbered, "report touched a disk it was not asked to");

    // The CM3 image's kernel command line asks for it: repaired, reported, LBA 0 as written.
    let wait = Wait::start(&["--token", "t0ken", "--nodes", "1", "--json", "--timeout", "60s"]);
    let cmdline = "console=ttyAMA0,115200 talos.platform=metal talos_agent.mbr=repair\n";
    let r = report_boot_disk(&wait.url(), apid, &root, cmdline, &disk);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "report: {stderr}");
    assert!(stderr.contains("hybrid MBR repaired"), "{stderr}");
    let (code, out, err) = wait.finish();
    assert_eq!(code, 0, "wait: {err}");
    let m = &json_lines(&out)[0]["boot_mbr"];
    assert_eq!(m["state"], "repaired", "{out}");
    assert_eq!(m["repairs"], 1, "{out}");
    assert_eq!(m["disk"], disk.to_str().unwrap(), "{out}");
    assert!(m["detail"].as_str().unwrap().contains("type 0xEE"), "{out}");
    assert!(err.contains("boot_mbr repaired"), "wait's plain line shows it: {err}");
    assert_eq!(test_disk::lba0(&disk), written, "LBA 0 is not byte-equal to what was written");

    // A GPT that is not moonboot's: refused, reported, not written.
    let other = root.join("other.raw");
    test_disk::disk_image(&other, "BOOT");
    let before = test_disk::clobber(&other);
    let wait = Wait::start(&["--token", "t0ken", "--nodes", "1", "--json", "--timeout", "60s"]);
    assert!(report_boot_disk(&wait.url(), apid, &root, cmdline, &other).status.success());
    let (code, out, err) = wait.finish();
    assert_eq!(code, 0, "wait: {err}");
    assert_eq!(json_lines(&out)[0]["boot_mbr"]["state"], "refused", "{out}");
    assert_eq!(test_disk::lba0(&other), before, "a refused disk was written");
    std::fs::remove_dir_all(root).unwrap();
}
