//! What `wait` shows: the nodes seen so far, as a live table (on a terminal), as plain lines
//! (otherwise), and as one JSON object per node (`--json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::phase::Phase;
use crate::report::schema::{BootMbr, BootMbrState, Report};

/// The latest report of one node and when it arrived.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The latest report.
    pub report: Report,
    /// The TCP peer it came from (behind NAT, not the node's own address).
    pub peer: SocketAddr,
    /// When it arrived.
    pub seen: Instant,
}

/// Every node seen, by name, and the count of refused reports.
#[derive(Debug, Default)]
pub struct Nodes {
    /// By node name.
    pub nodes: BTreeMap<String, NodeState>,
    /// Reports refused for a missing or wrong token.
    pub refused: u64,
    /// Authenticated requests whose body was not a report.
    pub invalid: u64,
}

/// What changed with one report.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// First report of this node.
    New,
    /// The phase or fingerprint changed (or the node rebooted).
    Changed,
    /// Same phase and fingerprint (a heartbeat).
    Same,
}

impl Nodes {
    /// Records a report; says what changed.
    pub fn record(&mut self, peer: SocketAddr, report: Report, now: Instant) -> Change {
        match self.nodes.get_mut(&report.node) {
            None => {
                self.nodes.insert(report.node.clone(), NodeState { report, peer, seen: now });
                Change::New
            }
            Some(old) => {
                // One agent sends its reports one at a time (each POST completes before the
                // next), so the latest to arrive is the latest sent; a restarted agent starts
                // its sequence again at 1.
                let changed = old.report.boot_id != report.boot_id
                    || old.report.phase != report.phase
                    || old.report.apid.fingerprint != report.apid.fingerprint;
                *old = NodeState { report, peer, seen: now };
                if changed {
                    Change::Changed
                } else {
                    Change::Same
                }
            }
        }
    }

    /// Nodes whose latest phase is at least `until`.
    pub fn reached(&self, until: Phase) -> impl Iterator<Item = &NodeState> {
        self.nodes.values().filter(move |n| n.report.phase >= until)
    }
}

/// The address to show and to feed `talm`/`talosctl`: the node's own first address, else the
/// TCP peer's.
pub fn address(n: &NodeState) -> String {
    n.report.primary_address().map(|a| a.to_string()).unwrap_or_else(|| n.peer.ip().to_string())
}

fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// One plain line about a node (for logs and non-terminal output).
pub fn line(n: &NodeState) -> String {
    let r = &n.report;
    let mut s = format!(
        "node {} address {} phase {} fingerprint {}",
        r.node,
        address(n),
        r.phase,
        r.apid.fingerprint.as_deref().unwrap_or("-")
    );
    if let Some(v) = &r.talos_version {
        s.push_str(&format!(" talos {v}"));
    }
    if let Some(ext) = &r.extensions {
        let names: Vec<String> = ext.iter().map(|e| format!("{}@{}", e.name, e.version)).collect();
        s.push_str(&format!(" extensions [{}]", names.join(",")));
    }
    if let Some(up) = r.uptime_seconds {
        s.push_str(&format!(" uptime {up:.1}s"));
    }
    if r.phase == Phase::Unreachable {
        if let Some(e) = &r.apid.error {
            s.push_str(&format!(" ({e})"));
        }
    }
    if let Some(m) = r.boot_mbr.as_ref().filter(|m| m.state != BootMbrState::NotChecked) {
        s.push_str(&format!(" boot_mbr {}", boot_mbr_cell(r)));
        if let Some(d) = m.detail.as_deref().filter(|_| m.state != BootMbrState::Intact) {
            s.push_str(&format!(" ({d})"));
        }
    }
    s
}

/// The MBR cell: `-` when the node did not check (or its agent predates `boot_mbr`), else the
/// state, with the repair count when there were repairs (`repaired(2)`).
pub fn boot_mbr_cell(r: &Report) -> String {
    match &r.boot_mbr {
        None => "-".into(),
        Some(m) if m.state == BootMbrState::NotChecked => "-".into(),
        Some(m) if m.repairs > 1 => format!("{}({})", m.state, m.repairs),
        Some(m) => m.state.to_string(),
    }
}

/// The table: a header, one row per node (NODE, ADDRESS, PHASE, FINGERPRINT, MBR, AGE), and
/// the count of refused reports. MBR is [`boot_mbr_cell`].
pub fn table(nodes: &Nodes, until: Phase, want: usize, now: Instant, elapsed: Duration) -> String {
    let rows: Vec<[String; 6]> = nodes
        .nodes
        .values()
        .map(|n| {
            [
                n.report.node.clone(),
                address(n),
                n.report.phase.to_string(),
                n.report.apid.fingerprint.clone().unwrap_or_else(|| "-".into()),
                boot_mbr_cell(&n.report),
                short_age(now.saturating_duration_since(n.seen)),
            ]
        })
        .collect();
    let head = ["NODE", "ADDRESS", "PHASE", "FINGERPRINT", "MBR", "AGE"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt_row = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = width[i] - c.chars().count();
                s.push_str(&format!("{c}{:pad$}  ", ""));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = format!(
        "talos-agent wait: {}/{want} nodes at {until} or later ({} s elapsed)\n",
        nodes.reached(until).count(),
        elapsed.as_secs()
    );
    out.push_str(&fmt_row(head));
    out.push('\n');
    for r in &rows {
        out.push_str(&fmt_row([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        out.push('\n');
    }
    out.push_str(&format!("refused (wrong or missing token): {}", nodes.refused));
    if nodes.invalid > 0 {
        out.push_str(&format!("; invalid bodies: {}", nodes.invalid));
    }
    out.push('\n');
    out
}

/// The `--json` line of a node: what `talm apply -i` / `talosctl apply-config --insecure` need
/// (`address`, `fingerprint` for `--cert-fingerprint`) and what was reported.
#[derive(Serialize)]
pub struct JsonLine<'a> {
    /// Node name.
    pub node: &'a str,
    /// [`address`].
    pub address: String,
    /// Every reported address.
    pub addresses: Vec<String>,
    /// Phase.
    pub phase: Phase,
    /// apid SPKI fingerprint (base64 SHA-256), for `--cert-fingerprint`.
    pub fingerprint: Option<&'a str>,
    /// Talos version, when visible.
    pub talos_version: Option<&'a str>,
    /// `name@version` of each extension, when visible.
    pub extensions: Option<Vec<String>>,
    /// DMI UUID.
    pub uuid: Option<&'a str>,
    /// Boot ID.
    pub boot_id: Option<&'a str>,
    /// Seconds since the node booted, at its latest report.
    pub uptime_seconds: Option<f64>,
    /// Bootstrap readiness (`null`: the node cannot tell).
    pub bootstrap_ready: Option<bool>,
    /// Why (`configured control plane; nothing listens on etcd's :2379 …`).
    pub bootstrap_reason: &'a str,
    /// TCP peer the latest report came from.
    pub peer: String,
    /// The boot disk's hybrid MBR as the node reported it (`state`, `disk`, `detail`,
    /// `repairs`); `null` from agents that predate it.
    pub boot_mbr: Option<&'a BootMbr>,
    /// The role the node was given, as given (`controlplane`, `worker`); `null` when none was.
    pub role: Option<&'a str>,
}

/// Renders the `--json` line of a node.
pub fn json_line(n: &NodeState) -> String {
    let r = &n.report;
    let j = JsonLine {
        node: &r.node,
        address: address(n),
        addresses: r.addresses.iter().map(|a| a.address.to_string()).collect(),
        phase: r.phase,
        fingerprint: r.apid.fingerprint.as_deref(),
        talos_version: r.talos_version.as_deref(),
        extensions: r.extensions.as_ref().map(|e| e.iter().map(|e| format!("{}@{}", e.name, e.version)).collect()),
        uuid: r.machine.uuid.as_deref(),
        boot_id: r.boot_id.as_deref(),
        uptime_seconds: r.uptime_seconds,
        bootstrap_ready: r.bootstrap.ready,
        bootstrap_reason: &r.bootstrap.reason,
        peer: n.peer.to_string(),
        boot_mbr: r.boot_mbr.as_ref(),
        role: r.role.as_deref(),
    };
    serde_json::to_string(&j).expect("serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::facts::{Address, Machine};
    use crate::report::schema::{Apid, Bootstrap};

    fn report(node: &str, phase: Phase, fp: &str) -> Report {
        Report {
            schema: 1,
            agent_version: "0.1.0".into(),
            node: node.into(),
            sequence: 1,
            machine: Machine::default(),
            boot_id: Some("b".into()),
            uptime_seconds: Some(3.0),
            talos_version: Some("v1.10.5".into()),
            addresses: vec![
                Address { interface: "eth0".into(), address: "fd00::5".parse().unwrap(), prefix_len: 64 },
                Address { interface: "eth0".into(), address: "10.0.2.15".parse().unwrap(), prefix_len: 24 },
            ],
            default_routes: vec![],
            extensions: None,
            extensions_error: None,
            phase,
            apid: Apid {
                address: "127.0.0.1:50000".into(),
                fingerprint: Some(fp.into()),
                client_cert_requested: Some(false),
                error: None,
            },
            bootstrap: Bootstrap { ready: Some(false), reason: "x".into() },
            boot_mbr: None,
            role: None,
        }
    }

    #[test]
    fn records_changes_and_renders() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let now = Instant::now();
        let mut n = Nodes::default();
        assert_eq!(n.record(peer, report("a", Phase::MaintenanceReady, "fp1"), now), Change::New);
        assert_eq!(n.record(peer, report("a", Phase::MaintenanceReady, "fp1"), now), Change::Same);
        assert_eq!(n.record(peer, report("b", Phase::Unreachable, "-"), now), Change::New);
        assert_eq!(n.reached(Phase::MaintenanceReady).count(), 1);
        assert_eq!(n.record(peer, report("a", Phase::Configured, "fp1"), now), Change::Changed);
        assert_eq!(n.reached(Phase::Configured).count(), 1);
        assert_eq!(n.reached(Phase::BootstrapReady).count(), 0);
        n.refused = 2;
        let t = table(&n, Phase::MaintenanceReady, 2, now, Duration::from_secs(7));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "talos-agent wait: 1/2 nodes at maintenance_ready or later (7 s elapsed)");
        assert!(lines[1].starts_with("NODE  ADDRESS    PHASE"), "{t}");
        assert!(lines[2].starts_with("a     10.0.2.15  configured"), "IPv4 first: {t}");
        assert_eq!(lines[4], "refused (wrong or missing token): 2");
        let j: serde_json::Value = serde_json::from_str(&json_line(&n.nodes["a"])).unwrap();
        assert_eq!(j["address"], "10.0.2.15");
        assert_eq!(j["fingerprint"], "fp1");
        assert_eq!(j["addresses"], serde_json::json!(["fd00::5", "10.0.2.15"]));
        assert_eq!(j["boot_mbr"], serde_json::Value::Null);
    }

    #[test]
    fn shows_the_boot_mbr_and_reads_reports_without_it() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let now = Instant::now();
        let mut r = report("cm3", Phase::MaintenanceReady, "fp");
        r.boot_mbr = Some(BootMbr {
            state: BootMbrState::Repaired,
            disk: Some("/dev/mmcblk0".into()),
            detail: Some("slot 1 was type 0xEE status 0x00 LBA 1 +7634943".into()),
            repairs: 2,
        });
        // A report from an agent that predates `boot_mbr` still parses, as `null`.
        let mut old = serde_json::to_value(report("old", Phase::MaintenanceReady, "fp2")).unwrap();
        old.as_object_mut().unwrap().remove("boot_mbr");
        let old: Report = serde_json::from_value(old).unwrap();
        assert_eq!(old.boot_mbr, None);
        let mut n = Nodes::default();
        n.record(peer, r, now);
        n.record(peer, old, now);
        let t = table(&n, Phase::MaintenanceReady, 2, now, Duration::from_secs(1));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("FINGERPRINT  MBR          AGE"), "{t}");
        assert!(lines[2].starts_with("cm3 ") && lines[2].contains("  repaired(2)  0s"), "{t}");
        assert!(lines[3].starts_with("old ") && lines[3].contains("  -            0s"), "{t}");
        let l = line(&n.nodes["cm3"]);
        assert!(l.ends_with(" boot_mbr repaired(2) (slot 1 was type 0xEE status 0x00 LBA 1 +7634943)"), "{l}");
        let j: serde_json::Value = serde_json::from_str(&json_line(&n.nodes["cm3"])).unwrap();
        assert_eq!(j["boot_mbr"]["state"], "repaired");
        assert_eq!(j["boot_mbr"]["repairs"], 2);
        assert_eq!(j["boot_mbr"]["disk"], "/dev/mmcblk0");
        let j: serde_json::Value = serde_json::from_str(&json_line(&n.nodes["old"])).unwrap();
        assert_eq!(j["boot_mbr"], serde_json::Value::Null);
    }
}
