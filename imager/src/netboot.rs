//! Netboot assets from a build: a matchbox data directory, dnsmasq configurations and the iPXE
//! binaries the chain needs — what an operator's fileserver or the bastion serves so that a node
//! netboots the very image `imager build` made.
//!
//! The chain: UEFI firmware (or U-Boot's `bootcmd_dhcp` on a Raspberry Pi CM3, which identifies
//! as client-arch 11 too) → DHCP (dnsmasq; client-arch 11 = arm64 UEFI, 7/9 = x86-64 UEFI, RFC
//! 4578 / IANA "Processor Architecture Types") → TFTP `ipxe-<arch>.efi` → iPXE, whose DHCP
//! request carries user-class `iPXE` → `http://MATCHBOX/boot.ipxe` → matchbox `/ipxe?…&arch=…`
//! selects a group by labels → the profile's `kernel`, `initrd` and `args` → Talos.
//!
//! Layout written (`<dir>/`):
//! - `matchbox/` — a matchbox data directory (poseidon/matchbox v0.11.0
//!   `matchbox/storage/storagepb/{profile,group}.go`, `matchbox/storage/filestore.go`):
//!   `profiles/talos-<arch>.json` (`id` = file name, `name`, `boot.kernel`, `boot.initrd` list,
//!   `boot.args` list), `groups/talos-<arch>.json` (`profile`, `selector.arch` = iPXE's
//!   `${buildarch}`: `arm64` or `x86_64`), and `assets/talos/<version>/<arch>/{kernel,initramfs.xz}`;
//!   serve it with `matchbox -data-path DIR/matchbox -assets-path DIR/matchbox/assets`.
//!   With `--node MAC=ROLE`: `profiles/talos-<arch>-<role>.json` (the architecture's profile plus
//!   `talos_agent.role=<role>`) for each role named, and `groups/node-<mac>-<arch>.json`
//!   (`selector.arch` and `selector.mac`) for each node: matchbox prefers the group with more
//!   selectors (`storage/storagepb/group.go` `ByReqs`), so a named machine gets its role profile.
//! - `examples/groups/` — a per-node group selected by `mac` (matchbox normalises `mac` to
//!   lower-case colon form), to copy into `matchbox/groups/` and edit.
//! - `tftp/ipxe-arm64.efi`, `tftp/ipxe-amd64.efi` — copied from Debian's `ipxe` package
//!   (`/usr/lib/ipxe`, trixie or later for arm64) when present.
//! - `dnsmasq.conf` (the network's DHCP server) and `dnsmasq-proxy.conf` (proxy DHCP next to an
//!   existing DHCP server); both pass `dnsmasq --test`.
//! - `README.md` — how to serve it.
//!
//! The kernel is the one the boot artifact carries (an arm64 `Image` with its EFI stub, an x86
//! bzImage): iPXE starts it as an EFI application. The arguments are the build's metal command
//! line (the same `kernel_cmdline` preset as every other output) merged with Talos's rules with
//! the readiness arguments (`talos_agent.*`), `talos.config=` and extra arguments, and checked
//! against the 2048-byte limit. `${…}` in them is left for iPXE (and Talos: `talos.config` may
//! use `${uuid}`, `${serial}`, `${mac}`, `${hostname}`) — matchbox does not template `args`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_artifact::artifact::{self, kernel_args, BootBlob, Role};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::layer::{self, Wanted};
use kernel_cmdline::{Cmdline, Param};
use serde::Serialize;

use crate::cli::netboot::Args;
use crate::oci_layout::OciLayout;

/// One architecture's boot files.
pub struct BootFiles {
    /// `arm64` or `amd64`.
    pub arch: String,
    /// Talos version (`v1.10.5`).
    pub talos_version: String,
    /// The schematic ID of the build.
    pub schematic_id: String,
    /// The kernel as iPXE starts it (arm64 `Image` with EFI stub, x86 bzImage).
    pub kernel: Vec<u8>,
    /// The initramfs with extensions.
    pub initramfs: Vec<u8>,
    /// The metal command line of the build.
    pub cmdline: String,
}

/// What the operator's network looks like, for the generated configurations.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of matchbox (`http://10.20.13.140:8080`).
    pub matchbox_url: String,
    /// `talos.config=` URL, when nodes should fetch a machine config.
    pub talos_config: Option<String>,
    /// `talos_agent.report=` URL of `talos-agent wait`.
    pub report: Option<String>,
    /// `talos_agent.token=`.
    pub report_token: Option<String>,
    /// More kernel arguments (Talos merge rules).
    pub extra_kernel_args: Vec<String>,
    /// Where Debian's `ipxe-<arch>.efi` live.
    pub ipxe_dir: PathBuf,
    /// iPXE binaries at hand (`ipxe-<arch>.efi` → bytes), for those `ipxe_dir` lacks: what
    /// `imager build` pulled by their pins, or what `imager netboot` finds in the build's
    /// `netboot/tftp/`.
    pub ipxe: BTreeMap<String, Vec<u8>>,
    /// `dhcp-range` of dnsmasq.conf (`START,END,LEASE`).
    pub dhcp_range: String,
    /// The subnet proxy DHCP answers on (dnsmasq-proxy.conf).
    pub proxy_subnet: String,
    /// Machines with a per-MAC group and a role profile (`--node`).
    pub nodes: Vec<Node>,
}

/// A machine's role in the cluster, as `talos-agent report` reads it from
/// `talos_agent.role=` (`controlplane`, `worker`: the machine config's `machine.type`, Talos
/// `pkg/machinery/config/machine/type.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeRole {
    /// `controlplane`.
    ControlPlane,
    /// `worker`.
    Worker,
}

impl NodeRole {
    /// `controlplane` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::ControlPlane => "controlplane",
            NodeRole::Worker => "worker",
        }
    }
}

/// One `--node MAC=ROLE`: `mac` in matchbox's normal form (lower-case, colon-separated; matchbox
/// v0.11.0 `storage/storagepb/group.go` normalises a group's `mac` selector with Go's
/// `net.ParseMAC` and `String`, and the request's `mac` label likewise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `52:54:00:00:00:11`.
    pub mac: String,
    /// Which role profile the machine gets.
    pub role: NodeRole,
}

/// Parses `MAC=ROLE`: six hexadecimal octets separated by `:` or `-` (any case), then
/// `controlplane` or `worker`.
///
/// # Errors
/// A one-line reason naming the part that is wrong.
pub fn parse_node(s: &str) -> std::result::Result<Node, String> {
    let (mac, role) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected MAC=ROLE"))?;
    let octets: Vec<&str> = mac.split([':', '-']).collect();
    if octets.len() != 6 || !octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit())) {
        return Err(format!("{mac:?} is not a MAC address (six hex octets, like 52:54:00:00:00:11)"));
    }
    let role = match role {
        "controlplane" => NodeRole::ControlPlane,
        "worker" => NodeRole::Worker,
        other => return Err(format!("role {other:?}: expected controlplane or worker")),
    };
    Ok(Node { mac: octets.join(":").to_ascii_lowercase(), role })
}

/// iPXE's `${buildarch}` for a Talos architecture (iPXE `src/config/defaults/efi.h`: `arm64`,
/// `x86_64`).
pub fn ipxe_buildarch(arch: &str) -> &'static str {
    if arch == "arm64" {
        "arm64"
    } else {
        "x86_64"
    }
}

/// The DHCP client-architecture values (option 93) of UEFI on `arch`: 11 for arm64, 7 and 9 for
/// x86-64 (IANA "Processor Architecture Types").
pub fn client_archs(arch: &str) -> &'static [u8] {
    if arch == "arm64" {
        &[11]
    } else {
        &[7, 9]
    }
}

#[derive(Serialize)]
struct Profile {
    id: String,
    name: String,
    boot: ProfileBoot,
}

#[derive(Serialize, Clone)]
struct ProfileBoot {
    kernel: String,
    initrd: Vec<String>,
    args: Vec<String>,
}

#[derive(Serialize)]
struct Group {
    id: String,
    name: String,
    profile: String,
    selector: BTreeMap<String, String>,
}

/// The profile's kernel arguments: the build's command line, then readiness, config, the role
/// (a role profile's `talos_agent.role=`) and extras, merged as Talos does.
///
/// # Errors
/// An argument that does not parse, a line over 2048 bytes.
pub fn profile_args(cmdline: &str, opts: &Options, role: Option<NodeRole>) -> Result<Vec<String>> {
    let mut line = Cmdline::parse(cmdline).context("the build's command line")?;
    let mut extra = Cmdline::new();
    let mut set = |key: &str, value: &Option<String>| -> Result<()> {
        if let Some(v) = value {
            extra.push(Param::new(key, Some(v)).with_context(|| format!("{key}={v}"))?)?;
        }
        Ok(())
    };
    set("talos.config", &opts.talos_config)?;
    set(kernel_args::REPORT, &opts.report)?;
    set(kernel_args::TOKEN, &opts.report_token)?;
    set(kernel_args::ROLE, &role.map(|r| r.as_str().to_string()))?;
    let more = crate::kernel_args::parse_extra(&opts.extra_kernel_args)?;
    for p in more.params() {
        extra.push(p.clone())?;
    }
    line.merge_talos(&extra).context("the netboot kernel arguments")?;
    Ok(line.params().iter().map(|p| p.to_string()).collect())
}

/// Removes the files of `dir` whose names `matches` (nothing when `dir` does not exist).
fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        if matches(&e.file_name().to_string_lossy()) {
            std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("netboot documents always serialise");
    b.push(b'\n');
    b
}

/// The dnsmasq configurations (full DHCP, proxy DHCP) for `arches`.
pub fn dnsmasq_configs(arches: &[&str], opts: &Options) -> (String, String) {
    let boot_ipxe = format!("{}/boot.ipxe", opts.matchbox_url.trim_end_matches('/'));
    let mut common = String::from(
        "# Generated by moonboot imager. DHCP and TFTP only: no DNS.\nport=0\nenable-tftp\n\
         # Where netboot/tftp/ is copied.\ntftp-root=/var/lib/tftpboot\n\
         # iPXE identifies itself with user-class iPXE: hand it matchbox, not iPXE again.\n\
         dhcp-userclass=set:ipxe,iPXE\nlog-dhcp\n",
    );
    for a in arches {
        for c in client_archs(a) {
            common.push_str(&format!("dhcp-match=set:efi-{a},option:client-arch,{c}\n"));
        }
    }
    let mut full = format!("{common}# The boot network's addresses (edit).\ndhcp-range={}\n", opts.dhcp_range);
    for a in arches {
        full.push_str(&format!("dhcp-boot=tag:!ipxe,tag:efi-{a},ipxe-{a}.efi\n"));
    }
    full.push_str(&format!("dhcp-boot=tag:ipxe,{boot_ipxe}\n"));

    let mut proxy = format!(
        "{common}# Proxy DHCP: the existing DHCP server keeps handing out addresses (edit the subnet).\n\
         dhcp-range={},proxy\n",
        opts.proxy_subnet
    );
    for a in arches {
        let csa = if *a == "arm64" { "ARM64_EFI" } else { "X86-64_EFI" };
        // A basename with its suffix: dnsmasq then adds no PXE layer suffix (dnsmasq(8)).
        proxy.push_str(&format!("pxe-service=tag:!ipxe,{csa},\"iPXE ({a})\",ipxe-{a}.efi\n"));
    }
    proxy.push_str(&format!("dhcp-boot=tag:ipxe,{boot_ipxe}\n"));
    (full, proxy)
}

/// Writes the netboot directory `dir` (created; our files in it replaced) for `builds`.
/// Returns the paths written, relative to `dir`, with their sha256.
///
/// # Errors
/// Kernel arguments that do not merge or exceed the limit; I/O.
pub fn write_netboot(dir: &Path, builds: &[BootFiles], opts: &Options) -> Result<BTreeMap<String, Sha256Digest>> {
    if builds.is_empty() {
        bail!("no architecture to write netboot assets for");
    }
    let mut macs = std::collections::BTreeSet::new();
    for n in &opts.nodes {
        if !macs.insert(n.mac.as_str()) {
            bail!("--node {}: this MAC is given more than once", n.mac);
        }
    }
    // Per-node groups and role profiles of an earlier run, which this one may not write again.
    for b in builds {
        let arch = b.arch.as_str();
        let node_group = format!("-{arch}.json");
        let role_profiles = [format!("talos-{arch}-controlplane.json"), format!("talos-{arch}-worker.json")];
        remove_matching(&dir.join("matchbox/groups"), |n| n.starts_with("node-") && n.ends_with(&node_group))?;
        remove_matching(&dir.join("matchbox/profiles"), |n| role_profiles.iter().any(|r| r == n))?;
    }
    let mut written = BTreeMap::new();
    let mut put = |rel: String, data: &[u8]| -> Result<()> {
        write(&dir.join(&rel), data)?;
        written.insert(rel, Sha256Digest::of(data));
        Ok(())
    };
    let mut arches = Vec::new();
    let mut missing = Vec::new();
    for b in builds {
        let arch = b.arch.as_str();
        arches.push(arch);
        let assets = format!("talos/{}/{arch}", b.talos_version);
        put(format!("matchbox/assets/{assets}/kernel"), &b.kernel)?;
        put(format!("matchbox/assets/{assets}/initramfs.xz"), &b.initramfs)?;
        let id = format!("talos-{arch}");
        let profile = Profile {
            id: id.clone(),
            name: format!("Talos {} {arch} (schematic {})", b.talos_version, b.schematic_id),
            boot: ProfileBoot {
                kernel: format!("/assets/{assets}/kernel"),
                initrd: vec![format!("/assets/{assets}/initramfs.xz")],
                args: profile_args(&b.cmdline, opts, None).with_context(|| format!("{arch} profile"))?,
            },
        };
        put(format!("matchbox/profiles/{id}.json"), &json(&profile))?;
        let roles: std::collections::BTreeSet<NodeRole> = opts.nodes.iter().map(|n| n.role).collect();
        for role in roles {
            let role_profile = Profile {
                id: format!("{id}-{}", role.as_str()),
                name: format!("{} ({} nodes)", profile.name, role.as_str()),
                boot: ProfileBoot {
                    args: profile_args(&b.cmdline, opts, Some(role))
                        .with_context(|| format!("{arch} {} profile", role.as_str()))?,
                    ..profile.boot.clone()
                },
            };
            put(format!("matchbox/profiles/{}.json", role_profile.id), &json(&role_profile))?;
        }
        for node in &opts.nodes {
            let group = Group {
                id: format!("node-{}-{arch}", node.mac.replace(':', "-")),
                name: format!("{} {} ({arch})", node.role.as_str(), node.mac),
                profile: format!("{id}-{}", node.role.as_str()),
                selector: BTreeMap::from([
                    ("arch".to_string(), ipxe_buildarch(arch).to_string()),
                    ("mac".to_string(), node.mac.clone()),
                ]),
            };
            put(format!("matchbox/groups/{}.json", group.id), &json(&group))?;
        }
        let group = Group {
            id: id.clone(),
            name: format!("every {arch} machine (iPXE ${{buildarch}} {})", ipxe_buildarch(arch)),
            profile: id.clone(),
            selector: BTreeMap::from([("arch".to_string(), ipxe_buildarch(arch).to_string())]),
        };
        put(format!("matchbox/groups/{id}.json"), &json(&group))?;
        let mac = if arch == "arm64" { "b8:27:eb:00:00:01" } else { "52:54:00:00:00:01" };
        let example = Group {
            id: format!("node-{}", mac.replace(':', "-")),
            name: format!("one {arch} node by MAC address (copy to matchbox/groups/, edit)"),
            profile: id.clone(),
            selector: BTreeMap::from([
                ("arch".to_string(), ipxe_buildarch(arch).to_string()),
                ("mac".to_string(), mac.to_string()),
            ]),
        };
        put(format!("examples/groups/{}.json", example.id), &json(&example))?;
        let file = crate::board::inputs::ipxe_file(arch);
        let ipxe = opts.ipxe_dir.join(&file);
        match std::fs::read(&ipxe).ok().or_else(|| opts.ipxe.get(&file).cloned()) {
            Some(data) => put(format!("tftp/{file}"), &data)?,
            None => {
                crate::build::progress::line(&format!(
                    "note: no {} (Debian's ipxe package, trixie or later for arm64; --ipxe-dir) and none published \
                     (`imager publish --ipxe-inputs`): netboot/tftp/ left without it",
                    ipxe.display()
                ));
                missing.push(arch);
            }
        }
    }
    let (full, proxy) = dnsmasq_configs(&arches, opts);
    put("dnsmasq.conf".into(), full.as_bytes())?;
    put("dnsmasq-proxy.conf".into(), proxy.as_bytes())?;
    put("README.md".into(), readme(&arches, &missing, opts).as_bytes())?;
    Ok(written)
}

/// `README.md` of the netboot directory; `missing`: the architectures whose iPXE binary was not
/// found, which the reader must add to `tftp/` before copying it.
fn readme(arches: &[&str], missing: &[&str], opts: &Options) -> String {
    let tftp = if missing.is_empty() {
        "Copy `tftp/`".to_string()
    } else {
        format!(
            "`tftp/` lacks {}: put {} there from Debian's `ipxe` package (trixie or later for arm64; or run \n  \
             `imager netboot --ipxe-dir DIR` again), then copy `tftp/`",
            missing.iter().map(|a| format!("`ipxe-{a}.efi`")).collect::<Vec<_>>().join(" and "),
            if missing.len() == 1 { "it" } else { "them" }
        )
    };
    format!(
        "# Netboot assets (generated by moonboot imager)\n\n\
         Architectures: {}. matchbox: {}.\n\n\
         - `matchbox -data-path matchbox -assets-path matchbox/assets -address 0.0.0.0:8080` serves the profiles,\n  \
           groups and assets (groups select by iPXE's `${{buildarch}}`; `examples/groups/` selects one node by MAC).\n\
         {nodes}\
         - {tftp} to dnsmasq's `tftp-root` (`/var/lib/tftpboot`), then run dnsmasq with `dnsmasq.conf` (it is\n  \
           the network's DHCP server) or `dnsmasq-proxy.conf` (another DHCP server hands out addresses).\n\
         - UEFI machines fetch `ipxe-<arch>.efi` by TFTP; iPXE asks again with user-class `iPXE` and is sent to\n  \
           `boot.ipxe`, which chains matchbox's `/ipxe` with the machine's labels.\n\
         - Raspberry Pi CM3: its boot ROM cannot netboot; U-Boot on the eMMC (`rpi_arm64`, `bootcmd_dhcp`) asks DHCP\n  \
           as client-arch 11, receives `ipxe-arm64.efi` like any arm64 UEFI machine, and continues the same chain.\n",
        arches.join(", "),
        opts.matchbox_url,
        nodes = if opts.nodes.is_empty() {
            String::new()
        } else {
            format!(
                "- `matchbox/groups/node-*.json` send the {} machines named with `--node` to the profile of their role\n  \
                 (`talos-<arch>-controlplane`, `talos-<arch>-worker`: `talos_agent.role=` added).\n",
                opts.nodes.len()
            )
        },
    )
}

/// The boot files of the boot artifact layout `boot-<arch>/` under an `imager build` output.
///
/// # Errors
/// A layout that is missing, not a boot artifact, or whose layers do not hold the files.
pub fn from_build_output(out: &Path, arch: &str) -> Result<BootFiles> {
    let dir = crate::publish::boot_layout_dir(out, arch);
    let layout = OciLayout::open(&dir)?;
    let image = layout.resolve(Some(arch))?;
    let boot = artifact::boot_layers(&image.manifest)
        .with_context(|| dir.display().to_string())?
        .with_context(|| format!("{}: not a boot artifact", dir.display()))?;
    let read = |role: Role| -> Result<Vec<u8>> {
        let context = || format!("{}: the {} of the boot artifact", dir.display(), role.as_str());
        match boot.get(role) {
            BootBlob::Raw(desc) => Ok(layout.read_blob(desc, "boot file", 4 << 30).with_context(context)?),
            BootBlob::InTar { layer: desc, path } => {
                let wanted = [Wanted::new(path, 4 << 30)];
                let found =
                    layer::extract(layout.open_blob(desc)?, layer::expansion_limit(desc.size), &wanted, layer::to_vec)
                        .with_context(context)?;
                let (_, data) =
                    found.files.into_iter().next().with_context(|| format!("{}: holds no {path}", context()))?;
                Ok(data)
            }
        }
    };
    let ann = |k: &str| image.manifest.annotation(k).unwrap_or_default().to_string();
    Ok(BootFiles {
        arch: arch.to_string(),
        talos_version: ann(artifact::ANNOTATION_TALOS_VERSION),
        schematic_id: ann(artifact::ANNOTATION_SCHEMATIC_ID),
        cmdline: String::from_utf8(read(Role::Cmdline)?).context("the command line is not UTF-8")?,
        kernel: read(Role::Kernel)?,
        initramfs: read(Role::Initramfs)?,
    })
}

impl Options {
    /// The options `imager netboot` was given.
    pub fn from_args(args: &Args) -> Options {
        Options {
            talos_config: args.talos_config.clone(),
            report: args.report.clone(),
            report_token: args.report_token.clone(),
            extra_kernel_args: args.extra_kernel_args.clone(),
            ..Options::network(&args.network)
        }
    }

    /// Options with `network`'s values and no readiness, config or extra arguments (what
    /// `imager build` writes).
    pub fn network(network: &crate::cli::netboot::NetworkFlags) -> Options {
        Options {
            matchbox_url: network.matchbox_url.clone(),
            talos_config: None,
            report: None,
            report_token: None,
            extra_kernel_args: Vec::new(),
            ipxe_dir: network.ipxe_dir.clone(),
            ipxe: BTreeMap::new(),
            dhcp_range: network.dhcp_range.clone(),
            proxy_subnet: network.proxy_subnet.clone(),
            nodes: network.nodes.clone(),
        }
    }
}

/// Runs `imager netboot`: renders the netboot directory from an `imager build` output.
///
/// # Errors
/// As [`from_build_output`] and [`write_netboot`].
pub fn run(args: &Args) -> Result<()> {
    let arches: Vec<&str> = if args.arch.is_empty() {
        crate::publish::arches_present(&args.from, crate::publish::boot_layout_dir)
    } else {
        args.arch.iter().map(|a| a.as_str()).collect()
    };
    if arches.is_empty() {
        bail!("no boot artifact under {} (imager build writes boot-<arch>/ there)", args.from.display());
    }
    let builds = arches.iter().map(|a| from_build_output(&args.from, a)).collect::<Result<Vec<_>>>()?;
    let mut opts = Options::from_args(args);
    // The iPXE binaries `imager build` wrote (pulled by their pins), for those --ipxe-dir lacks.
    for a in &arches {
        let file = crate::board::inputs::ipxe_file(a);
        if let Ok(data) = std::fs::read(args.from.join("netboot/tftp").join(&file)) {
            opts.ipxe.insert(file, data);
        }
    }
    let written = write_netboot(&args.output, &builds, &opts)?;
    println!("{} files in {} ({})", written.len(), args.output.display(), arches.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            matchbox_url: "http://10.20.13.140:8080".into(),
            talos_config: Some("http://10.20.13.140:8080/generic?uuid=${uuid}&mac=${mac:hexhyp}".into()),
            report: Some("http://10.20.13.140:8090/v1/report".into()),
            report_token: Some("t0k3n".into()),
            extra_kernel_args: vec!["-console=tty0".into()],
            ipxe_dir: PathBuf::from("/nonexistent"),
            ipxe: BTreeMap::new(),
            dhcp_range: "10.20.13.100,10.20.13.200,12h".into(),
            proxy_subnet: "10.20.13.0".into(),
            nodes: Vec::new(),
        }
    }

    #[test]
    fn profile_args_merge_readiness_config_and_extras() {
        let base = "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1";
        let args = profile_args(base, &opts(), None).unwrap();
        assert_eq!(
            args,
            [
                "talos.platform=metal",
                "console=ttyAMA0",
                "init_on_alloc=1",
                "talos.config=http://10.20.13.140:8080/generic?uuid=${uuid}&mac=${mac:hexhyp}",
                "talos_agent.report=http://10.20.13.140:8090/v1/report",
                "talos_agent.token=t0k3n",
            ]
        );
        let mut long = opts();
        long.extra_kernel_args = vec![format!("x={}", "y".repeat(2100))];
        assert!(profile_args(base, &long, None).is_err(), "the 2048-byte limit holds");
    }

    /// `docs/netboot.md` shows the `dnsmasq.conf` that `imager netboot` writes for an arm64
    /// build with its default flags, byte for byte.
    #[test]
    fn docs_netboot_shows_the_generated_dnsmasq_conf() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            network: crate::cli::netboot::NetworkFlags,
        }
        let flags = <Flags as clap::Parser>::parse_from(["imager"]);
        let (full, _) = dnsmasq_configs(&["arm64"], &Options::network(&flags.network));
        let doc = include_str!("../../docs/netboot.md");
        let start = doc.find("```ini\n").expect("docs/netboot.md has an ini block") + "```ini\n".len();
        let end = start + doc[start..].find("```").expect("the ini block ends");
        assert_eq!(&doc[start..end], full, "docs/netboot.md's dnsmasq.conf is not what imager netboot writes");
    }

    /// `--node` writes a per-MAC group per architecture and one profile per role, which is the
    /// architecture's profile plus `talos_agent.role=`.
    #[test]
    fn nodes_get_per_mac_groups_and_role_profiles() {
        assert_eq!(
            parse_node("52-54-00-AA-00-11=controlplane"),
            Ok(Node { mac: "52:54:00:aa:00:11".into(), role: NodeRole::ControlPlane })
        );
        for bad in
            ["52:54:00:00:00:11", "52:54:00:00:11=worker", "52:54:00:00:00:1g=worker", "52:54:00:00:00:11=master"]
        {
            assert!(parse_node(bad).is_err(), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("moonboot-netboot-nodes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut o = opts();
        o.nodes = vec![
            parse_node("52:54:00:00:00:11=controlplane").unwrap(),
            parse_node("52:54:00:00:00:13=worker").unwrap(),
        ];
        let boot = BootFiles {
            arch: "arm64".into(),
            talos_version: "v1.10.5".into(),
            schematic_id: "s".into(),
            kernel: b"k".to_vec(),
            initramfs: b"i".to_vec(),
            cmdline: "talos.platform=metal console=ttyAMA0".into(),
        };
        let written = write_netboot(&dir, std::slice::from_ref(&boot), &o).unwrap();
        let read = |rel: &str| -> serde_json::Value {
            assert!(written.contains_key(rel), "{rel} not written: {:?}", written.keys());
            serde_json::from_slice(&std::fs::read(dir.join(rel)).unwrap()).unwrap()
        };
        let base = read("matchbox/profiles/talos-arm64.json");
        let cp = read("matchbox/profiles/talos-arm64-controlplane.json");
        let worker = read("matchbox/profiles/talos-arm64-worker.json");
        let args = |p: &serde_json::Value| -> Vec<String> {
            p["boot"]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
        };
        let mut want = args(&base);
        want.push("talos_agent.role=controlplane".into());
        assert_eq!(args(&cp), want);
        assert_eq!(*want.last_mut().unwrap(), "talos_agent.role=controlplane");
        assert!(args(&worker).contains(&"talos_agent.role=worker".to_string()));
        assert_eq!(cp["boot"]["kernel"], base["boot"]["kernel"]);
        let g = read("matchbox/groups/node-52-54-00-00-00-11-arm64.json");
        assert_eq!(g["profile"], "talos-arm64-controlplane");
        assert_eq!(g["selector"], serde_json::json!({"arch": "arm64", "mac": "52:54:00:00:00:11"}));
        assert_eq!(read("matchbox/groups/node-52-54-00-00-00-13-arm64.json")["profile"], "talos-arm64-worker");
        // Again without the worker: its group and the worker profile go.
        o.nodes.pop();
        let again = write_netboot(&dir, std::slice::from_ref(&boot), &o).unwrap();
        assert!(again.contains_key("matchbox/groups/node-52-54-00-00-00-11-arm64.json"));
        assert!(!dir.join("matchbox/groups/node-52-54-00-00-00-13-arm64.json").exists());
        assert!(!dir.join("matchbox/profiles/talos-arm64-worker.json").exists());
        assert!(dir.join("matchbox/groups/talos-arm64.json").exists());
        // One MAC, two roles: refused.
        o.nodes.push(parse_node("52:54:00:00:00:11=worker").unwrap());
        let e = write_netboot(&dir, &[boot], &o).unwrap_err().to_string();
        assert!(e.contains("52:54:00:00:00:11") && e.contains("more than once"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The directory's README tells to copy `tftp/` only when it holds every iPXE binary.
    #[test]
    fn readme_names_missing_ipxe_binaries() {
        let whole = readme(&["arm64", "amd64"], &[], &opts());
        assert!(whole.contains("- Copy `tftp/` to dnsmasq's `tftp-root`"), "{whole}");
        let lacking = readme(&["arm64", "amd64"], &["arm64"], &opts());
        assert!(lacking.contains("- `tftp/` lacks `ipxe-arm64.efi`: put it there"), "{lacking}");
        assert!(!lacking.contains("Copy `tftp/`"), "{lacking}");
    }

    #[test]
    fn dnsmasq_configs_name_each_architecture() {
        let (full, proxy) = dnsmasq_configs(&["arm64", "amd64"], &opts());
        assert!(full.contains("dhcp-match=set:efi-arm64,option:client-arch,11\n"), "{full}");
        assert!(full.contains("dhcp-match=set:efi-amd64,option:client-arch,7\n"));
        assert!(full.contains("dhcp-match=set:efi-amd64,option:client-arch,9\n"));
        assert!(full.contains("dhcp-boot=tag:!ipxe,tag:efi-arm64,ipxe-arm64.efi\n"));
        assert!(full.contains("dhcp-boot=tag:ipxe,http://10.20.13.140:8080/boot.ipxe\n"));
        assert!(proxy.contains("dhcp-range=10.20.13.0,proxy\n"), "{proxy}");
        assert!(proxy.contains("pxe-service=tag:!ipxe,ARM64_EFI,\"iPXE (arm64)\",ipxe-arm64.efi\n"), "{proxy}");
    }
}
