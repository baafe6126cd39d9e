//! The next kernel's command line, assembled in this order:
//!
//! 1. **base** — the boot artifact's `boot/cmdline`, a UKI's `.cmdline` section, or, for a stock
//!    Talos imager image, what Talos's imager would write ([`kernel_cmdline::preset::talos`]);
//! 2. **platform** — when the base was made for another platform (its `talos.platform=` differs),
//!    the target platform's arguments merged with Talos semantics ([`Cmdline::merge_talos`]:
//!    `talos.platform` and `console` replaced in place), and the old platform's other arguments
//!    removed (leaving `aws` drops `net.ifnames=0`);
//! 3. **console** — each `console=` of the running system ([`running_consoles`], from
//!    `/proc/cmdline`) whose device the line does not name yet is appended, so Talos prints where
//!    the operator reads this machine (the EC2 serial console is `ttyS0` on Graviton, `ttyAMA0`
//!    under QEMU `virt`); the last one becomes `/dev/console`, as it was for the running system.
//!    An extra `-console=DEV` removes it again;
//! 4. **network** — `ip=` per carried-over address ([`NetworkState::ip_configs`]) unless
//!    disabled, or unless the base already has `ip=` (the artifact's choice wins). The device name
//!    is `eth<N>` when the *final* line has `net.ifnames=0`, else the current name (see
//!    [`super::network`]);
//! 5. **talos.config** — `talos.config=URL`, replacing any in the base;
//! 6. **report** — `talos_agent.report=`, `talos_agent.token=`, `talos_agent.node=`,
//!    `talos_agent.role=` for the Talos-side `talos-agent report`, each replacing any in the base;
//! 7. **extra** — the user's `--extra-kernel-arg`s, joined with spaces and merged last with Talos
//!    semantics: `-key` removes a key, `-key=value` one value, `console=`/`talos.platform=`
//!    replace, anything else is added (talos `pkg/imager/imager.go` `buildCmdline`, go-procfs
//!    `AppendAll`). `-ip` removes the carried-over network.
//!
//! The result must fit [`COMMAND_LINE_SIZE`] (2048 bytes with the NUL); the error says how long
//! it would be and how many bytes each source contributed.

use boot_artifact::artifact::kernel_args;
use std::collections::HashMap;

use kernel_cmdline::preset::{self, Arch, Platform, PresetError, TalosVersion};
use kernel_cmdline::{Cmdline, Param, COMMAND_LINE_SIZE};
use serde::Serialize;

use super::network::{self, DeviceNaming, NetworkState};

/// The working limit while assembling: the real limit is checked once, on the final line, so that
/// a `-key` among the extras can still shorten a line that was long in between.
const ASSEMBLY_LIMIT: usize = 64 * 1024;

/// Errors while assembling the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base command line (artifact layer or UKI section) is not a valid kernel command line.
    #[error("the {kind} command line is invalid: {source}")]
    Base {
        /// Where the base came from.
        kind: Source,
        /// Why it was refused.
        #[source]
        source: kernel_cmdline::Error,
    },
    /// Talos's preset could not be built (unsupported version, too long).
    #[error("Talos default command line: {0}")]
    Preset(#[from] PresetError),
    /// A value given on the command line cannot be a kernel parameter (quote, control character…).
    #[error("{what} {value:?} cannot be put on the kernel command line: {source}")]
    Invalid {
        /// `--talos-config`, `--report`, `--extra-kernel-arg`, …
        what: &'static str,
        /// The refused value.
        value: String,
        /// Why.
        #[source]
        source: kernel_cmdline::Error,
    },
    /// The network could not be rendered as `ip=`.
    #[error("network carry-over: {0}")]
    Network(#[from] network::Error),
    /// The final line does not fit the kernel's buffer.
    #[error(
        "the next kernel's command line would be {len} bytes plus NUL, over the {limit}-byte limit \
         (COMMAND_LINE_SIZE); bytes by source: {by_source}"
    )]
    TooLong {
        /// Rendered length in bytes, without the NUL.
        len: usize,
        /// The limit in bytes, NUL included.
        limit: usize,
        /// `source=bytes` pairs, e.g. `artifact=301 network=88 extra=1702`.
        by_source: String,
    },
}

/// Where a parameter of the final line came from (for the JSON plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The boot artifact's `boot/cmdline` layer.
    Artifact,
    /// The UKI's `.cmdline` section.
    Uki,
    /// Talos's imager defaults for a stock imager image ([`preset::talos`]).
    TalosPreset,
    /// The target platform's arguments (the base was for another platform).
    Platform,
    /// `console=` of the running system.
    Console,
    /// `ip=` from the running system.
    Network,
    /// `--talos-config`.
    TalosConfig,
    /// `--report`, `--report-token`, node name and role for the Talos-side agent.
    Report,
    /// `--extra-kernel-arg`.
    Extra,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Artifact => "artifact",
            Source::Uki => "uki",
            Source::TalosPreset => "talos_preset",
            Source::Platform => "platform",
            Source::Console => "console",
            Source::Network => "network",
            Source::TalosConfig => "talos_config",
            Source::Report => "report",
            Source::Extra => "extra",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The base command line and where it came from ([`Source::Artifact`], [`Source::Uki`] or
/// [`Source::TalosPreset`]).
#[derive(Debug, Clone)]
pub struct Base {
    /// The line.
    pub line: Cmdline,
    /// Its origin.
    pub source: Source,
}

impl Base {
    /// The artifact's `boot/cmdline` (one line, UTF-8; a trailing newline or NUL is tolerated).
    ///
    /// # Errors
    /// [`Error::Base`] for anything [`Cmdline::parse`] refuses.
    pub fn artifact(text: &str) -> Result<Base, Error> {
        Base::from_text(text, Source::Artifact)
    }

    /// A UKI's `.cmdline` section (systemd-stub tolerates a trailing NUL and white space).
    ///
    /// # Errors
    /// [`Error::Base`] for anything [`Cmdline::parse`] refuses.
    pub fn uki(text: &str) -> Result<Base, Error> {
        Base::from_text(text, Source::Uki)
    }

    /// What Talos's imager writes for `version`, `platform` and `arch` without overlay or extras.
    ///
    /// # Errors
    /// [`Error::Preset`] (e.g. a Talos version outside 1.7–1.11).
    pub fn talos_preset(version: TalosVersion, platform: Platform, arch: Arch) -> Result<Base, Error> {
        let line = preset::talos(version, platform, arch, None, &Cmdline::new())?;
        Ok(Base { line, source: Source::TalosPreset })
    }

    fn from_text(text: &str, source: Source) -> Result<Base, Error> {
        let text = text.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
        let line = Cmdline::parse(text).map_err(|e| Error::Base { kind: source, source: e })?;
        Ok(Base { line, source })
    }
}

/// Values for the Talos-side `talos-agent report` (`talos_agent.*` kernel arguments).
#[derive(Debug, Clone, Default)]
pub struct AgentParams {
    /// `talos_agent.report=URL`: where to send readiness reports.
    pub report: Option<String>,
    /// `talos_agent.token=T`: bearer token for the reports.
    pub token: Option<String>,
    /// `talos_agent.node=NAME`: the node's name in the reports.
    pub node: Option<String>,
    /// `talos_agent.role=controlplane|worker`.
    pub role: Option<String>,
}

/// Everything the next command line is made of (see the module docs for the order).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The base line.
    pub base: Base,
    /// The target platform.
    pub platform: Platform,
    /// The target architecture (platform arguments differ per architecture for `metal`).
    pub arch: Arch,
    /// The Talos version when known (image tag or annotation); platform arguments only differ by
    /// version for metal amd64 before 1.8, so without it 1.10.0 is assumed.
    pub talos_version: Option<TalosVersion>,
    /// The running system's `console=` values ([`running_consoles`]), in order.
    pub consoles: &'a [String],
    /// The network to carry over; `None` with `--no-network-carry-over`.
    pub network: Option<&'a NetworkState>,
    /// `--talos-config URL`.
    pub talos_config: Option<&'a str>,
    /// `talos_agent.*` values.
    pub agent: AgentParams,
    /// `--extra-kernel-arg` values, in order (each may hold several space-separated parameters).
    pub extra: &'a [String],
}

/// One parameter of the final line and its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The parameter as rendered.
    pub param: String,
    /// Where it came from.
    pub source: Source,
}

/// The assembled line (for kexec and the JSON plan).
#[derive(Debug, Clone, Serialize)]
pub struct Assembled {
    /// The line, with the default [`COMMAND_LINE_SIZE`] limit.
    #[serde(serialize_with = "display")]
    pub cmdline: Cmdline,
    /// Bytes `kexec_file_load` gets: rendered length + 1 (NUL).
    pub kexec_len: usize,
    /// Each parameter in order with its origin.
    pub origins: Vec<Origin>,
    /// How the `ip=` device was named; `None` when no network was carried over.
    pub device_naming: Option<DeviceNaming>,
    /// Decisions worth telling the operator (one line each).
    pub notes: Vec<String>,
}

fn display<S: serde::Serializer>(c: &Cmdline, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

/// The platform's own arguments (`talos.platform=` + `KernelArgs`), taken from [`preset::talos`]
/// by dropping the trailing [`preset::default_args`].
fn platform_args(version: TalosVersion, platform: Platform, arch: Arch) -> Result<Cmdline, Error> {
    let full = preset::talos(version, platform, arch, None, &Cmdline::new())?;
    let keep = full.params().len() - preset::default_args(version).params().len();
    let mut line = Cmdline::new();
    for p in &full.params()[..keep] {
        line.push(p.clone()).expect("a prefix of a valid line fits");
    }
    Ok(line)
}

fn platform_from(name: &str) -> Option<Platform> {
    match name {
        "aws" => Some(Platform::Aws),
        "metal" => Some(Platform::Metal),
        _ => None,
    }
}

/// The `console=` values of a kernel command line (`/proc/cmdline` of the running system), in
/// order; an unreadable or unparsable line gives none.
pub fn running_consoles(proc_cmdline: &str) -> Vec<String> {
    match Cmdline::parse(proc_cmdline.trim()) {
        Ok(line) => line.values("console").flatten().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Tracks which source last contributed each (key, value).
#[derive(Default)]
struct Attribution(HashMap<(String, Option<String>), Source>);

impl Attribution {
    fn mark(&mut self, params: &[Param], source: Source) {
        for p in params {
            self.0.insert((p.key().to_string(), p.value().map(str::to_string)), source);
        }
    }

    fn of(&self, p: &Param) -> Source {
        self.0.get(&(p.key().to_string(), p.value().map(str::to_string))).copied().unwrap_or(Source::Extra)
    }
}

/// Assembles the next kernel's command line (see the module docs).
///
/// # Errors
/// [`Error::Preset`], [`Error::Invalid`] (a value that cannot be a kernel parameter),
/// [`Error::Network`], [`Error::TooLong`] (with the length and the bytes per source).
pub fn assemble(req: &Request<'_>) -> Result<Assembled, Error> {
    // The device name depends on the final line's net.ifnames, which the extras may change: build
    // the line once without the network to decide it.
    let naming = match req.network {
        Some(_) => {
            let probe = build(req, None)?;
            Some(match probe.line.get("net.ifnames") {
                Some(Some("0")) => DeviceNaming::KernelEthN,
                _ => DeviceNaming::Current,
            })
        }
        None => None,
    };
    let built = build(req, naming)?;
    let mut line = built.line;
    let origins: Vec<Origin> =
        line.params().iter().map(|p| Origin { param: p.to_string(), source: built.attribution.of(p) }).collect();
    let len = line.len();
    if len + 1 > COMMAND_LINE_SIZE {
        let mut bytes: Vec<(Source, usize)> = Vec::new();
        for o in &origins {
            match bytes.iter_mut().find(|(s, _)| *s == o.source) {
                Some((_, n)) => *n += o.param.len() + 1,
                None => bytes.push((o.source, o.param.len() + 1)),
            }
        }
        let by_source = bytes.iter().map(|(s, n)| format!("{s}={n}")).collect::<Vec<_>>().join(" ");
        return Err(Error::TooLong { len, limit: COMMAND_LINE_SIZE, by_source });
    }
    line.set_limit(COMMAND_LINE_SIZE).expect("checked above");
    let device_naming = naming.filter(|_| origins.iter().any(|o| o.source == Source::Network));
    Ok(Assembled { cmdline: line, kexec_len: len + 1, origins, device_naming, notes: built.notes })
}

struct Built {
    line: Cmdline,
    attribution: Attribution,
    notes: Vec<String>,
}

/// One pass over the stages; `naming` `None` leaves the network out.
fn build(req: &Request<'_>, naming: Option<DeviceNaming>) -> Result<Built, Error> {
    let mut notes = Vec::new();
    let mut attribution = Attribution::default();
    let mut line = req.base.line.clone();
    line.set_limit(ASSEMBLY_LIMIT).expect("a larger limit always fits");
    attribution.mark(line.params(), req.base.source);

    // Platform.
    let version = req.talos_version.unwrap_or(TalosVersion::new(1, 10, 0));
    let target = req.platform.as_str();
    match line.get("talos.platform") {
        Some(Some(p)) if p == target => {}
        base_platform => {
            let new = platform_args(version, req.platform, req.arch)?;
            let mut merge = Cmdline::new();
            merge.set_limit(ASSEMBLY_LIMIT).expect("larger");
            let old = base_platform.flatten().map(str::to_string);
            if let Some(old_args) = old.as_deref().and_then(platform_from) {
                for p in platform_args(version, old_args, req.arch)?.params() {
                    if !new.contains(p.key()) && !merge.contains(&format!("-{}", p.key())) {
                        merge
                            .push(Param::new(format!("-{}", p.key()), None::<&str>).expect("valid key"))
                            .expect("fits");
                    }
                }
            }
            for p in new.params() {
                merge.push(p.clone()).expect("fits");
            }
            line.merge_talos(&merge).expect("within the assembly limit");
            attribution.mark(new.params(), Source::Platform);
            notes.push(match old {
                Some(old) => format!("base command line is for platform {old}; switched to {target}"),
                None => format!("base command line names no platform; added {target}'s arguments"),
            });
        }
    }

    // Console.
    let device = |v: &str| v.split(',').next().unwrap_or_default().to_string();
    let named: Vec<String> = line.values("console").flatten().map(device).collect();
    let mut added = Vec::new();
    for value in req.consoles {
        if named.contains(&device(value)) || added.iter().any(|p: &Param| p.value().map(device) == Some(device(value)))
        {
            continue;
        }
        let param = Param::new("console", Some(value.as_str())).map_err(|source| Error::Invalid {
            what: "the running system's console=",
            value: value.clone(),
            source,
        })?;
        added.push(param);
    }
    if !added.is_empty() {
        for p in &added {
            line.push(p.clone()).expect("within the assembly limit");
        }
        attribution.mark(&added, Source::Console);
        notes.push(format!(
            "added the running system's {} (the line named no such console)",
            added.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ")
        ));
    }

    // Network.
    if let (Some(state), Some(naming)) = (req.network, naming) {
        if line.contains("ip") {
            notes.push("base command line already has ip=: network not carried over".into());
        } else {
            let mut params = Vec::new();
            for c in state.ip_configs(naming)? {
                params.push(c.to_param().map_err(network::Error::Ip)?);
            }
            for p in &params {
                line.push(p.clone()).expect("within the assembly limit");
            }
            attribution.mark(&params, Source::Network);
        }
    }

    // talos.config and the Talos-side agent.
    let mut set = |key: &str, value: Option<&str>, what: &'static str, source: Source| -> Result<(), Error> {
        let Some(value) = value else { return Ok(()) };
        let param =
            Param::new(key, Some(value)).map_err(|source| Error::Invalid { what, value: value.to_string(), source })?;
        if line.contains(key) && line.get(key) != Some(Some(value)) {
            notes.push(format!("{key}= of the base command line replaced"));
        }
        line.set(key, &[Some(value)]).expect("validated, within the assembly limit");
        attribution.mark(&[param], source);
        Ok(())
    };
    set("talos.config", req.talos_config, "--talos-config", Source::TalosConfig)?;
    let a = &req.agent;
    set(kernel_args::REPORT, a.report.as_deref(), "--report", Source::Report)?;
    set(kernel_args::TOKEN, a.token.as_deref(), "--report-token", Source::Report)?;
    set(kernel_args::NODE, a.node.as_deref(), "node name", Source::Report)?;
    set(kernel_args::ROLE, a.role.as_deref(), "node role", Source::Report)?;

    // Extras.
    if !req.extra.is_empty() {
        let joined = req.extra.join(" ");
        let extra = Cmdline::parse(&joined).map_err(|source| Error::Invalid {
            what: "--extra-kernel-arg",
            value: joined.clone(),
            source,
        })?;
        line.merge_talos(&extra).map_err(|source| Error::Invalid {
            what: "--extra-kernel-arg",
            value: joined,
            source,
        })?;
        attribution.mark(extra.params(), Source::Extra);
    }
    Ok(Built { line, attribution, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::network::{Address, DefaultRoute, Interface};

    const AWS_1105: &str = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1";
    const METAL_ARM64_1105: &str = "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1";

    fn v1105() -> TalosVersion {
        TalosVersion::new(1, 10, 5)
    }

    fn ec2_network() -> NetworkState {
        NetworkState {
            interfaces: vec![Interface {
                name: "ens5".into(),
                index: 2,
                mac: Some("0a:1b:2c:3d:4e:5f".into()),
                mtu: Some(9001),
                physical: true,
                kernel_eth_index: Some(0),
                addresses: vec![
                    Address { address: "10.20.13.57".parse().unwrap(), prefix_len: 20 },
                    Address { address: "2600:1f18:abcd:1200::17".parse().unwrap(), prefix_len: 128 },
                ],
                default_v4: Some(DefaultRoute { gateway: Some("10.20.0.1".parse().unwrap()), metric: 100 }),
                default_v6: Some(DefaultRoute { gateway: Some("fe80::1".parse().unwrap()), metric: 1024 }),
            }],
            dns: vec!["10.20.0.2".parse().unwrap()],
            dns_source: Some("/run/systemd/resolve/resolv.conf".into()),
            hostname: Some("ip-10-20-13-57".into()),
        }
    }

    fn request<'a>(
        base: Base,
        platform: Platform,
        network: Option<&'a NetworkState>,
        extra: &'a [String],
    ) -> Request<'a> {
        Request {
            base,
            platform,
            arch: Arch::Arm64,
            talos_version: Some(v1105()),
            consoles: &[],
            network,
            talos_config: None,
            agent: AgentParams::default(),
            extra,
        }
    }

    #[test]
    fn stock_imager_on_ec2_with_everything() {
        let net = ec2_network();
        let extra = vec!["-selinux".to_string(), "talos.logging.kernel=tcp://10.20.13.140:5170".to_string()];
        let mut req = request(
            Base::talos_preset(v1105(), Platform::Aws, Arch::Arm64).unwrap(),
            Platform::Aws,
            Some(&net),
            &extra,
        );
        req.talos_config = Some("http://10.20.13.140:8080/config?uuid=${uuid}");
        req.agent = AgentParams {
            report: Some("http://10.20.13.140:8090/v1/report".into()),
            token: Some("s3cret".into()),
            node: Some("cp-1".into()),
            role: None,
        };
        let got = assemble(&req).unwrap();
        assert_eq!(
            got.cmdline.to_string(),
            "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on \
             consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix \
             ima_hash=sha512 \
             ip=10.20.13.57::10.20.0.1:255.255.240.0:ip-10-20-13-57:eth0:off:10.20.0.2 \
             ip=[2600:1f18:abcd:1200::17]::[fe80::1]:128::eth0:off \
             talos.config=http://10.20.13.140:8080/config?uuid=${uuid} \
             talos_agent.report=http://10.20.13.140:8090/v1/report talos_agent.token=s3cret talos_agent.node=cp-1 \
             talos.logging.kernel=tcp://10.20.13.140:5170"
        );
        assert_eq!(got.kexec_len, got.cmdline.to_string().len() + 1);
        assert_eq!(got.device_naming, Some(DeviceNaming::KernelEthN));
        let sources: Vec<(&str, Source)> = got.origins.iter().map(|o| (o.param.as_str(), o.source)).collect();
        assert_eq!(sources[0], ("talos.platform=aws", Source::TalosPreset));
        assert_eq!(
            (sources[12].1, sources[13].1, sources[14].1),
            (Source::TalosPreset, Source::Network, Source::Network)
        );
        assert_eq!(sources[15], ("talos.config=http://10.20.13.140:8080/config?uuid=${uuid}", Source::TalosConfig));
        assert_eq!((sources[16].1, sources[18].1), (Source::Report, Source::Report));
        assert_eq!(sources.last().unwrap().1, Source::Extra);
        assert!(got.notes.is_empty(), "{:?}", got.notes);
    }

    #[test]
    fn metal_artifact_switched_to_aws_and_back() {
        let base = Base::artifact(&format!("{METAL_ARM64_1105}\n")).unwrap();
        let got = assemble(&request(base, Platform::Aws, None, &[])).unwrap();
        assert_eq!(
            got.cmdline.to_string(),
            "talos.platform=aws console=tty1 console=ttyS0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 \
             nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 \
             selinux=1 net.ifnames=0"
        );
        assert_eq!(got.origins[0].source, Source::Platform);
        assert_eq!(got.origins[3].source, Source::Artifact);
        assert_eq!(got.origins.last().unwrap().source, Source::Platform);
        assert_eq!(got.notes, ["base command line is for platform metal; switched to aws"]);
        assert_eq!(got.device_naming, None);

        // aws → metal drops net.ifnames=0, so the network keeps the current device name.
        let net = ec2_network();
        let base = Base::uki(&format!("{AWS_1105}\0")).unwrap();
        let got = assemble(&request(base, Platform::Metal, Some(&net), &[])).unwrap();
        assert_eq!(
            got.cmdline.to_string(),
            format!(
                "{METAL_ARM64_1105} ip=10.20.13.57::10.20.0.1:255.255.240.0:ip-10-20-13-57:ens5:off:10.20.0.2 \
                 ip=[2600:1f18:abcd:1200::17]::[fe80::1]:128::ens5:off"
            )
        );
        assert_eq!(got.device_naming, Some(DeviceNaming::Current));
    }

    #[test]
    fn extras_decide_the_device_name_and_can_drop_the_network() {
        let net = ec2_network();
        let base = || Base::talos_preset(v1105(), Platform::Aws, Arch::Arm64).unwrap();
        let extra = vec!["-net.ifnames".to_string()];
        let got = assemble(&request(base(), Platform::Aws, Some(&net), &extra)).unwrap();
        assert!(!got.cmdline.contains("net.ifnames"));
        assert_eq!(
            got.cmdline.values("ip").next(),
            Some(Some("10.20.13.57::10.20.0.1:255.255.240.0:ip-10-20-13-57:ens5:off:10.20.0.2"))
        );

        let extra = vec!["-ip ip=10.20.13.57:::255.255.240.0::eth0:dhcp".to_string()];
        let got = assemble(&request(base(), Platform::Aws, Some(&net), &extra)).unwrap();
        assert_eq!(got.cmdline.values("ip").collect::<Vec<_>>(), [Some("10.20.13.57:::255.255.240.0::eth0:dhcp")]);
        assert_eq!(got.device_naming, None, "no carried-over ip= is left");
        assert_eq!(got.origins.last().unwrap().source, Source::Extra);

        let base_with_ip = Base::artifact(&format!("{AWS_1105} ip=dhcp")).unwrap();
        let got = assemble(&request(base_with_ip, Platform::Aws, Some(&net), &[])).unwrap();
        assert_eq!(got.cmdline.to_string(), format!("{AWS_1105} ip=dhcp"));
        assert_eq!(got.notes, ["base command line already has ip=: network not carried over"]);
    }

    #[test]
    fn replaced_values_and_invalid_values() {
        let base = Base::artifact(&format!("{AWS_1105} talos.config=http://old/")).unwrap();
        let mut req = request(base, Platform::Aws, None, &[]);
        req.talos_config = Some("http://new/");
        let got = assemble(&req).unwrap();
        assert_eq!(got.cmdline.to_string(), format!("{AWS_1105} talos.config=http://new/"));
        assert_eq!(got.notes, ["talos.config= of the base command line replaced"]);

        req.talos_config = Some("http://x/\"y");
        assert!(matches!(assemble(&req), Err(Error::Invalid { what: "--talos-config", .. })));
        let extra = vec!["a=\"b".to_string()];
        let req = request(Base::artifact(AWS_1105).unwrap(), Platform::Aws, None, &extra);
        assert!(matches!(assemble(&req), Err(Error::Invalid { what: "--extra-kernel-arg", .. })));
        assert!(matches!(Base::artifact("a\nb"), Err(Error::Base { kind: Source::Artifact, .. })));
    }

    #[test]
    fn over_the_limit_says_how_long_and_why() {
        let net = ec2_network();
        let big = vec![format!("foo={}", "x".repeat(1800))];
        let base = Base::talos_preset(v1105(), Platform::Aws, Arch::Arm64).unwrap();
        let err = assemble(&request(base.clone(), Platform::Aws, Some(&net), &big)).unwrap_err();
        let preset_len = AWS_1105.len() + 1;
        assert_eq!(
            err.to_string(),
            format!(
                "the next kernel's command line would be {} bytes plus NUL, over the 2048-byte limit \
                 (COMMAND_LINE_SIZE); bytes by source: talos_preset={preset_len} network=128 extra=1805",
                preset_len + 128 + 1805 - 1
            )
        );
        // Exactly at the limit: 2047 bytes + NUL.
        let exact = 2047 - AWS_1105.len() - 1 - "foo=".len();
        let fits = vec![format!("foo={}", "x".repeat(exact))];
        let got = assemble(&request(base.clone(), Platform::Aws, None, &fits)).unwrap();
        assert_eq!(got.kexec_len, 2048);
        assert_eq!(got.cmdline.as_kexec_bytes().unwrap().len(), 2048);
        // A line over the limit in between (base + network) is fine when the extras shorten it again.
        let full = Base::artifact(&got.cmdline.to_string()).unwrap();
        let drop_ip = vec!["-ip".to_string()];
        let got = assemble(&request(full, Platform::Aws, Some(&net), &drop_ip)).unwrap();
        assert_eq!(got.kexec_len, 2048);
    }

    #[test]
    fn running_console_is_carried_over_when_the_line_lacks_it() {
        // Ubuntu on Graviton: console=tty1 console=ttyS0, both in Talos's aws arguments: nothing added.
        let base = Base::talos_preset(v1105(), Platform::Aws, Arch::Arm64).unwrap();
        let ubuntu = running_consoles("BOOT_IMAGE=/vmlinuz root=LABEL=cloudimg-rootfs ro console=tty1 console=ttyS0");
        assert_eq!(ubuntu, ["tty1", "ttyS0"]);
        let mut req = request(base.clone(), Platform::Aws, None, &[]);
        req.consoles = &ubuntu;
        let got = assemble(&req).unwrap();
        assert_eq!(got.cmdline.to_string(), AWS_1105);
        // QEMU virt: the running serial console is ttyAMA0 (with options); it is appended last, so it
        // becomes /dev/console, and the origin says where it came from.
        let virt = running_consoles("root=/dev/nvme0n1 rw console=ttyAMA0,115200n8");
        let mut req = request(base.clone(), Platform::Aws, None, &[]);
        req.consoles = &virt;
        let got = assemble(&req).unwrap();
        let line = got.cmdline.to_string();
        assert!(line.ends_with(" console=ttyAMA0,115200n8"), "{line}");
        assert!(line.contains("console=tty1 console=ttyS0"), "{line}");
        assert_eq!(got.origins.iter().filter(|o| o.source == Source::Console).count(), 1);
        assert!(got.notes.iter().any(|n| n.contains("console=ttyAMA0,115200n8")), "{:?}", got.notes);
        // The same device with other options counts as named.
        let same = vec!["ttyS0,115200".to_string()];
        let mut req = request(base.clone(), Platform::Aws, None, &[]);
        req.consoles = &same;
        assert_eq!(assemble(&req).unwrap().cmdline.to_string(), AWS_1105);
        // An extra `-console=DEV` removes it again.
        let extra = vec!["-console=ttyAMA0,115200n8".to_string()];
        let mut req = request(base, Platform::Aws, None, &extra);
        req.consoles = &virt;
        assert_eq!(assemble(&req).unwrap().cmdline.to_string(), AWS_1105);
        // An unparsable /proc/cmdline carries nothing over.
        assert!(running_consoles("console=\"unterminated").is_empty());
    }
}
