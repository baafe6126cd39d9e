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
//!  "bootstrap":{"ready":null,"reason":"…"},"role":"controlplane",
//!  "boot_mbr":{"state":"repaired","disk":"/dev/mmcblk0","detail":"slot 1 was type 0xEE …","repairs":1}}
//! ```
//! Absent facts are `null` (or empty lists), never guessed. Unknown fields are ignored by `wait`
//! so newer agents can add fields; a change of meaning bumps [`SCHEMA`]. Fields added since the
//! first agents are optional when read: `boot_mbr` and `role` (absent from older reports: `null`).

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
    /// The boot disk's hybrid MBR (`talos_agent.mbr=repair`, board images); `null` in reports
    /// of agents that predate the field.
    #[serde(default)]
    pub boot_mbr: Option<BootMbr>,
    /// The role the node was given (`talos_agent.role=`, `TALOS_AGENT_ROLE`, `--role`), as given;
    /// `null` when none was, and in reports of agents that predate the field.
    #[serde(default)]
    pub role: Option<String>,
}

/// What `report` found, and did, about the boot disk's hybrid MBR (`report::boot_mbr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootMbr {
    /// The outcome.
    pub state: BootMbrState,
    /// The disk examined (`/dev/mmcblk0`), when one was.
    pub disk: Option<String>,
    /// What slot 1 held before the last repair (`repaired`), why the disk was refused
    /// (`refused`) or could not be examined (`error`), or why nothing was checked
    /// (`not_checked`); `null` when `intact`.
    pub detail: Option<String>,
    /// How many times this agent process restored slot 1.
    pub repairs: u64,
}

/// [`BootMbr::state`], in JSON `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMbrState {
    /// The kernel command line does not ask for it (`talos_agent.mbr=repair`): the disk was not
    /// touched.
    NotChecked,
    /// The hybrid MBR is as the imager wrote it, and this agent never had to restore it.
    Intact,
    /// Talos had rewritten MBR slot 1 (`writePMBR`) and this agent restored it; it stays
    /// `repaired` while later checks find it intact, so that the operator sees it happened.
    Repaired,
    /// The disk's MBR or GPT is not what moonboot writes (or no disk is moonboot's): nothing was
    /// written.
    Refused,
    /// The disk could not be found, opened, read, locked or written.
    Error,
}

impl BootMbrState {
    /// The `snake_case` name (`not_checked`, `intact`, …), as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMbrState::NotChecked => "not_checked",
            BootMbrState::Intact => "intact",
            BootMbrState::Repaired => "repaired",
            BootMbrState::Refused => "refused",
            BootMbrState::Error => "error",
        }
    }
}

impl std::fmt::Display for BootMbrState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
