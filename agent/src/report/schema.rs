//! The readiness report: the JSON body `report` POSTs to `wait` (`POST /v1/report`,
//! `Content-Type: application/json`, `Authorization: Bearer <token>`).
//!
//! ```json
//! {"schema":1,"agent_version":"0.1.0","node":"node-a","sequence":3,
//!  "machine":{"uuid":"…","serial":null},"boot_id":"…","uptime_seconds":12.3,
//!  "talos_version":"v1.10.5","addresses":[{"interface":"eth0","address":"10.0.2.15","prefix_len":24}],
//!  "default_routes":[{"interface":"eth0","gateway":"10.0.2.2"}],
//!  "extensions":[{"name":"talos-agent","version":"v0.1.0"}],"extensions_error":null,
//!  "phase":"maintenance_ready",
//!  "apid":{"address":"127.0.0.1:50000","fingerprint":"…base64…","client_cert_requested":false,"error":null},
//!  "bootstrap":{"ready":null,"reason":"…"}}
//! ```
//! Absent facts are `null` (or empty lists), never guessed. Unknown fields are ignored by `wait`
//! so newer agents can add fields; a change of meaning bumps [`SCHEMA`].

use serde::{Deserialize, Serialize};

use super::facts::{Address, DefaultRoute, Extension, Machine};
use super::phase::Phase;

/// Version of this format.
pub const SCHEMA: u32 = 1;

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The talos-agent version that sent it.
    pub agent_version: String,
    /// The node's name: `talos_agent.node`, else the DMI UUID, else the first address, else the
    /// boot ID. `wait` counts distinct names.
    pub node: String,
    /// Counts the reports this agent process attempted to send (from 1; a restarted agent starts
    /// again).
    pub sequence: u64,
    /// DMI identity.
    pub machine: Machine,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: Option<String>,
    /// Seconds since boot (`/proc/uptime`).
    pub uptime_seconds: Option<f64>,
    /// `VERSION_ID` of the Talos `/etc/os-release`, when visible.
    pub talos_version: Option<String>,
    /// Non-loopback addresses of interfaces that are up.
    pub addresses: Vec<Address>,
    /// Default routes.
    pub default_routes: Vec<DefaultRoute>,
    /// Extensions of `/etc/extensions.yaml`; `null` when the file is not visible.
    pub extensions: Option<Vec<Extension>>,
    /// Why `/etc/extensions.yaml` could not be read, if it could not.
    pub extensions_error: Option<String>,
    /// The phase.
    pub phase: Phase,
    /// What the TLS probe of apid showed.
    pub apid: Apid,
    /// Whether `talosctl bootstrap` may be run.
    pub bootstrap: Bootstrap,
}

/// The apid probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apid {
    /// The address dialled (`127.0.0.1:50000`).
    pub address: String,
    /// SPKI fingerprint of the served certificate (base64 of SHA-256, as `--cert-fingerprint`).
    pub fingerprint: Option<String>,
    /// Whether apid asked for a client certificate.
    pub client_cert_requested: Option<bool>,
    /// Why the probe failed, if it did.
    pub error: Option<String>,
}

/// Bootstrap readiness: `ready` is `null` when the agent cannot tell, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// `true` ready, `false` not ready, `null` cannot tell.
    pub ready: Option<bool>,
    /// Why (always set).
    pub reason: String,
}

impl Report {
    /// The first address (sorted: IPv4 before IPv6), the one shown and fed to `talm`.
    pub fn primary_address(&self) -> Option<std::net::IpAddr> {
        self.addresses.iter().map(|a| a.address).min_by_key(|a| (a.is_ipv6(), *a))
    }

    /// Everything but the counters that change every time (sequence, uptime): two reports with
    /// equal keys say the same thing, so `report` sends only a heartbeat between changes.
    pub fn content_key(&self) -> String {
        let mut r = self.clone();
        r.sequence = 0;
        r.uptime_seconds = None;
        serde_json::to_string(&r).unwrap_or_default()
    }
}
