//! The report `talos-agent wait` receives (`agent/src/report/schema.rs` `Report`, deserialised
//! from the POST body with serde_json as `wait/server.rs` does), and what `wait` does with it
//! (`agent/src/wait/table.rs`: record it, the plain line, the table, the `--json` line, the
//! primary address). Both files are included by this crate's lib with `#[path]`.
//!
//! Input: the request body. A report that parses must serialise to JSON that parses back to
//! the same report (uptime compared to a relative 1e-12: serde_json's float parsing is not
//! exact to the last bit without its `float_roundtrip` feature).

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use moonboot_fuzz::report::phase::Phase;
use moonboot_fuzz::report::schema::Report;
use moonboot_fuzz::wait::table::{self, Change, Nodes};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = serde_json::from_slice::<Report>(data) else { return };
    let peer = "192.0.2.7:40000".parse().expect("an address");
    let now = Instant::now();
    let mut nodes = Nodes::default();
    assert_eq!(nodes.record(peer, report.clone(), now), Change::New);
    assert_eq!(nodes.record(peer, report.clone(), now), Change::Same);
    let n = &nodes.nodes[&report.node];
    let line = table::line(n);
    assert!(line.starts_with("node "));
    let json = table::json_line(n);
    serde_json::from_str::<serde_json::Value>(&json).expect("the --json line is JSON");
    for until in [Phase::MaintenanceReady, Phase::Configured, Phase::BootstrapReady] {
        let t = table::table(&nodes, until, 1, now, Duration::from_secs(3));
        assert!(t.ends_with('\n'));
        assert_eq!(nodes.reached(until).count(), usize::from(report.phase >= until));
    }
    if let Some(a) = report.primary_address() {
        assert!(report.addresses.iter().any(|x| x.address == a));
    }
    let _ = report.content_key();

    let text = serde_json::to_vec(&report).expect("a report serialises");
    let mut back: Report = serde_json::from_slice(&text).expect("a serialised report parses");
    match (back.uptime_seconds, report.uptime_seconds) {
        (Some(a), Some(b)) => assert!((a - b).abs() <= b.abs() * 1e-12, "uptime {b} read back as {a}"),
        (a, b) => assert_eq!(a, b),
    }
    back.uptime_seconds = report.uptime_seconds;
    assert_eq!(back, report);
});
