//! Facts about the node that `report` sends: machine identity (DMI), boot ID, uptime, addresses,
//! default routes, the Talos version and the installed extensions.
//!
//! Inside Talos, `report` runs as an extension service: a container whose root is
//! `/usr/local/lib/containers/talos-agent`, in the host network namespace, with its own `/proc`
//! and a read-only `/sys` (containerd's default spec; Talos
//! `internal/app/machined/pkg/system/services/extension.go` adds `WithHostNamespace(network)`).
//! So `/proc/net/*`, `/proc/sys/kernel/random/boot_id`, `/proc/uptime`, `/proc/cmdline` and
//! `/sys/class/dmi/id/*` are the node's. Files of the Talos root (`/etc/extensions.yaml`,
//! `/etc/os-release`, `/var/lib/etcd`) are visible only where the service spec bind-mounts them;
//! every fact that is not visible is reported as absent, never guessed.
//!
//! Every path is read under a `root` prefix (`/` in production) so tests can use a directory.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Machine identity from DMI (`/sys/class/dmi/id/`, SMBIOS). Absent on machines without DMI
/// (e.g. QEMU `virt` with a device tree, Raspberry Pi) or when not readable (serial is root-only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `product_uuid` (SMBIOS system UUID; what Talos uses as the node's UUID).
    pub uuid: Option<String>,
    /// `product_serial`.
    pub serial: Option<String>,
}

/// One address of an interface (`getifaddrs(3)`), loopback excluded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address {
    /// Interface name (`eth0`).
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Prefix length, from the netmask.
    pub prefix_len: u8,
}

/// A default route (destination `0.0.0.0/0` or `::/0`) from `/proc/net/route` or
/// `/proc/net/ipv6_route`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRoute {
    /// Outgoing interface.
    pub interface: String,
    /// Next hop; absent for an on-link default route.
    pub gateway: Option<IpAddr>,
}

/// One installed system extension (`metadata` of a layer of `/etc/extensions.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
}

/// Reads a small text file under `root`, trimmed; `None` when absent, unreadable or empty.
pub fn read_trimmed(root: &Path, path: &str) -> Option<String> {
    let text = fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// DMI identity from `<root>/sys/class/dmi/id/{product_uuid,product_serial}`.
pub fn machine(root: &Path) -> Machine {
    Machine {
        uuid: read_trimmed(root, "sys/class/dmi/id/product_uuid"),
        serial: read_trimmed(root, "sys/class/dmi/id/product_serial"),
    }
}

/// `/proc/sys/kernel/random/boot_id`: a UUID the kernel draws at each boot.
pub fn boot_id(root: &Path) -> Option<String> {
    read_trimmed(root, "proc/sys/kernel/random/boot_id")
}

/// Seconds since boot: the first field of `/proc/uptime`.
pub fn uptime_seconds(root: &Path) -> Option<f64> {
    read_trimmed(root, "proc/uptime")?.split_whitespace().next()?.parse().ok()
}

/// The Talos version (`VERSION_ID`) from `<root>/etc/os-release` when `ID=talos` (Talos writes
/// it from `constants.OSReleaseTemplate`: `ID=talos`, `VERSION_ID=v1.10.5`). `None` on other
/// systems or when the file is not visible.
pub fn talos_version(root: &Path) -> Option<String> {
    let text = fs::read_to_string(root.join("etc/os-release")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    (field("ID").as_deref() == Some("talos")).then(|| field("VERSION_ID")).flatten()
}

/// Shape of `/etc/extensions.yaml` (Talos `pkg/machinery/extensions/config.go`: `layers:` of
/// `{image, metadata: Manifest.Metadata}`), written by the imager into the initramfs as
/// `/extensions.yaml` and bind-mounted read-only at `/etc/extensions.yaml` of the running system
/// (`internal/app/init/main.go`, `constants.ExtensionsRuntimeConfigFile`).
#[derive(Deserialize)]
struct ExtensionsConfig {
    #[serde(default)]
    layers: Vec<ExtensionsLayer>,
}

#[derive(Deserialize)]
struct ExtensionsLayer {
    metadata: ExtensionsMetadata,
}

#[derive(Deserialize)]
struct ExtensionsMetadata {
    name: String,
    #[serde(default)]
    version: String,
}

/// The extensions listed in `<root>/etc/extensions.yaml`, in layer order. `None` when the file
/// is not visible; `Some(Err)` when it does not parse.
pub fn extensions(root: &Path) -> Option<Result<Vec<Extension>, String>> {
    let path = root.join("etc/extensions.yaml");
    let text = fs::read_to_string(&path).ok()?;
    Some(parse_extensions(&text).map_err(|e| format!("{}: {e}", path.display())))
}

fn parse_extensions(text: &str) -> Result<Vec<Extension>, String> {
    if text.trim().is_empty() {
        // Talos's root ships an empty /etc/extensions.yaml as the bind-mount target.
        return Ok(Vec::new());
    }
    let cfg: ExtensionsConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    Ok(cfg.layers.into_iter().map(|l| Extension { name: l.metadata.name, version: l.metadata.version }).collect())
}

/// Whether the etcd data directory (`<root>/var/lib/etcd`, Talos `constants.EtcdDataPath`) is
/// empty: `Some(true)` empty, `Some(false)` holds data, `None` not visible from here.
pub fn etcd_data_empty(root: &Path) -> Option<bool> {
    let mut rd = fs::read_dir(root.join("var/lib/etcd")).ok()?;
    Some(rd.next().is_none())
}

/// Whether something accepts TCP connections on `addr`: `Some(true)` a connection was accepted,
/// `Some(false)` it was refused (nothing listens), `None` anything else (timeout, unreachable):
/// cannot tell. The connection is closed at once; nothing is sent.
pub fn listening(addr: std::net::SocketAddr, timeout: std::time::Duration) -> Option<bool> {
    match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(false),
        Err(_) => None,
    }
}

/// Every non-loopback address of every interface that is up, sorted.
pub fn addresses() -> Vec<Address> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out = Vec::new();
    for a in addrs {
        if a.flags.contains(InterfaceFlags::IFF_LOOPBACK) || !a.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else { continue };
        let pair = if let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            Some((IpAddr::V4(ip.ip()), m.ip().to_bits().count_ones() as u8))
        } else if let (Some(ip), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            Some((IpAddr::V6(ip.ip()), m.ip().to_bits().count_ones() as u8))
        } else {
            None
        };
        if let Some((address, prefix_len)) = pair {
            out.push(Address { interface: a.interface_name, address, prefix_len });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The default routes of `<root>/proc/net/route` (IPv4) and `<root>/proc/net/ipv6_route`.
pub fn default_routes(root: &Path) -> Vec<DefaultRoute> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string(root.join("proc/net/route")) {
        out.extend(parse_route_v4(&text));
    }
    if let Ok(text) = fs::read_to_string(root.join("proc/net/ipv6_route")) {
        out.extend(parse_route_v6(&text));
    }
    out
}

/// `/proc/net/route` (`net/ipv4/fib_trie.c` `fib_route_seq_show`): a header line, then
/// `Iface Destination Gateway Flags RefCnt Use Metric Mask …`, addresses as 8 hex digits in
/// host byte order (little-endian on arm64 and x86). RTF_UP = 0x1.
fn parse_route_v4(text: &str) -> Vec<DefaultRoute> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dst), Some(gw), Some(flags), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[3]), hex(f[7])) else {
            continue;
        };
        if dst != 0 || mask != 0 || flags & 0x1 == 0 {
            continue;
        }
        // The kernel prints the __be32 with %08X as a host-order integer, so the value's bytes in
        // native order are the address's octets (on little- and big-endian hosts alike).
        let gateway = (gw != 0).then(|| IpAddr::V4(Ipv4Addr::from(gw.to_ne_bytes())));
        out.push(DefaultRoute { interface: f[0].to_string(), gateway });
    }
    out
}

/// `/proc/net/ipv6_route` (`net/ipv6/route.c` `rt6_info_seq_show`): `dst dst_len src src_len
/// next_hop metric refcnt use flags iface`, addresses as 32 hex digits in network order.
/// RTF_UP = 0x1.
fn parse_route_v6(text: &str) -> Vec<DefaultRoute> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9] == "lo" {
            continue;
        }
        let (Ok(dst), Ok(len), Ok(gw), Ok(flags)) = (
            u128::from_str_radix(f[0], 16),
            u8::from_str_radix(f[1], 16),
            u128::from_str_radix(f[4], 16),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        if dst != 0 || len != 0 || flags & 0x1 == 0 {
            continue;
        }
        let gateway = (gw != 0).then(|| IpAddr::V6(Ipv6Addr::from(gw)));
        out.push(DefaultRoute { interface: f[9].to_string(), gateway });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("talos-agent-facts-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn route_tables() {
        // As a little-endian kernel prints ip=10.0.2.15::10.0.2.2:255.255.255.0 (gateway 10.0.2.2).
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_route_v4(v4);
        assert_eq!(r, vec![DefaultRoute { interface: "eth0".into(), gateway: Some("10.0.2.2".parse().unwrap()) }]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00450003 eth0\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(
            parse_route_v6(v6),
            vec![DefaultRoute { interface: "eth0".into(), gateway: Some("fe80::1".parse().unwrap()) }]
        );
    }

    #[test]
    fn files_under_root() {
        let root = tmp("files");
        assert_eq!(machine(&root), Machine::default());
        assert_eq!(boot_id(&root), None);
        assert_eq!(talos_version(&root), None);
        assert_eq!(extensions(&root), None);
        assert_eq!(etcd_data_empty(&root), None);
        put(&root, "sys/class/dmi/id/product_uuid", "4c4c4544-0042-3510-8052-b4c04f335431\n");
        put(&root, "proc/sys/kernel/random/boot_id", "0f2c7b0e-7d0b-4d3c-9c55-2b9f0e4f1a11\n");
        put(&root, "proc/uptime", "12.34 20.00\n");
        put(&root, "etc/os-release", "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.10.5\nPRETTY_NAME=\"Talos (v1.10.5)\"\n");
        put(
            &root,
            "etc/extensions.yaml",
            "layers:\n    - image: 0.sqsh\n      metadata:\n        name: spin\n        version: v0.19.0\n        author: Sven Pfennig\n        description: |\n          spin\n        compatibility:\n          talos:\n            version: '>= v1.0.0'\n    - image: 1.sqsh\n      metadata:\n        name: tailscale\n        version: 1.84.0\n",
        );
        fs::create_dir_all(root.join("var/lib/etcd")).unwrap();
        assert_eq!(machine(&root).uuid.as_deref(), Some("4c4c4544-0042-3510-8052-b4c04f335431"));
        assert_eq!(machine(&root).serial, None);
        assert_eq!(boot_id(&root).as_deref(), Some("0f2c7b0e-7d0b-4d3c-9c55-2b9f0e4f1a11"));
        assert_eq!(uptime_seconds(&root), Some(12.34));
        assert_eq!(talos_version(&root).as_deref(), Some("v1.10.5"));
        let ext = extensions(&root).unwrap().unwrap();
        assert_eq!(
            ext,
            vec![
                Extension { name: "spin".into(), version: "v0.19.0".into() },
                Extension { name: "tailscale".into(), version: "1.84.0".into() }
            ]
        );
        assert_eq!(etcd_data_empty(&root), Some(true));
        put(&root, "var/lib/etcd/member/snap/db", "x");
        assert_eq!(etcd_data_empty(&root), Some(false));
        put(&root, "etc/os-release", "ID=debian\nVERSION_ID=12\n");
        assert_eq!(talos_version(&root), None);
        put(&root, "etc/extensions.yaml", "");
        assert_eq!(extensions(&root), Some(Ok(vec![])));
        put(&root, "etc/extensions.yaml", "layers: [");
        assert!(extensions(&root).unwrap().is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn addresses_exclude_loopback() {
        assert!(addresses().iter().all(|a| !a.address.is_loopback()));
    }

    #[test]
    fn listening_tells_accepted_from_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::time::Duration::from_millis(500);
        assert_eq!(listening(addr, t), Some(true));
        drop(l);
        assert_eq!(listening(addr, t), Some(false));
    }
}
