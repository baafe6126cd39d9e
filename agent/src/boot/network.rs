//! The running system's network, read to carry it over to Talos as `ip=` kernel arguments.
//!
//! What is read (through rtnetlink, the same kernel interface `ip` uses):
//! - the IPv4 default route and, when there is one, the IPv6 default route of the main table
//!   (lowest metric wins), which give the interface(s) to carry over and the gateway(s);
//! - for each such interface: name, ifindex, MAC, MTU, and its global addresses with prefix
//!   lengths — link-local, tentative, DAD-failed, deprecated and temporary (privacy) IPv6
//!   addresses are skipped, they would be wrong or useless in the next system;
//! - DNS servers from systemd-resolved's upstream list `/run/systemd/resolve/resolv.conf` (Ubuntu's
//!   `/etc/resolv.conf` only names the `127.0.0.53` stub, which does not exist under Talos),
//!   falling back to `/etc/resolv.conf`; loopback and link-local servers are skipped;
//! - the host name from `/proc/sys/kernel/hostname`.
//!
//! How Talos reads `ip=` (talos v1.10.5 `internal/app/machined/pkg/controllers/network/cmdline.go`
//! `ParseCmdlineNetwork`): every `ip=` argument is one link configuration (address/prefix, gateway,
//! link name), so IPv4 and IPv6 each get their own `ip=`; the DNS fields of *all* `ip=` arguments are
//! collected; the first non-empty host name field is used (split at the first dot into host and
//! domain name by `HostnameSpecSpec.ParseFQDN`, so a name with or without a domain both work). A
//! gateway becomes a default route on that link; an IPv4 gateway outside the prefix gets a link
//! route. A link named in `ip=` gets no default DHCP from Talos (`operator_config.go`), so the
//! static configuration replaces DHCP on it. The MTU cannot be written in `ip=` (Talos reads no MTU
//! field), it is reported in the plan only.
//!
//! ## Which device name goes into `ip=`
//! Talos resolves the device field literally (the address, route and hostname controllers pass an
//! empty `LinkResolver`), so the name must be the one the *next* kernel gives the interface:
//! - With `net.ifnames=0` on the next command line (the AWS preset has it) the kernel's own names
//!   `eth0`, `eth1`, … are used. The kernel numbers Ethernet devices in registration order, which is
//!   also the order of their ifindex on the running system (renaming by udev keeps the ifindex), so
//!   the interface becomes `eth<N>` where N is its rank among the *physical* Ethernet links
//!   (ARPHRD_ETHER without an `IFLA_LINKINFO` kind, i.e. not a bridge, veth, bond, VLAN, ifb, …)
//!   ordered by ifindex. This assumes the next kernel probes the NICs in the same order, which holds
//!   for one NIC (every single-ENI EC2 instance: `ens5` → `eth0`) and for NICs of one driver.
//!   Ubuntu's `ens5` would not exist under Talos, and the MAC cannot be written in `ip=`.
//! - Without `net.ifnames=0`, Talos's udevd applies the predictable naming scheme as Ubuntu's does,
//!   so the current name is kept.
//! - A default route over a virtual interface (bridge, bond, VLAN…) has no counterpart under Talos;
//!   the device field is then left empty and Talos picks the first non-loopback link by name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use futures_util::TryStreamExt;
use kernel_cmdline::ip::IpConfig;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use rtnetlink::packet_route::AddressFamily;
use serde::Serialize;

/// systemd-resolved's list of upstream DNS servers (resolved.conf(5), "/run/systemd/resolve/resolv.conf").
pub const RESOLVED_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// The classic resolver configuration, used when systemd-resolved's file is absent.
pub const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The kernel's host name (proc(5)).
pub const PROC_HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// Errors while reading the running system's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rtnetlink socket could not be opened.
    #[error("opening an rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A netlink dump (links, addresses or routes) failed.
    #[error("reading {what} through rtnetlink: {source}")]
    Netlink {
        /// `links`, `addresses`, `IPv4 routes` or `IPv6 routes`.
        what: &'static str,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// There is no IPv4 or IPv6 default route, so there is nothing to carry over.
    #[error("no default route (IPv4 or IPv6) in the main routing table: no network to carry over")]
    NoDefaultRoute,
    /// The default route leaves through an interface that netlink did not list.
    #[error("the {family} default route uses interface index {index}, which is not listed")]
    UnknownInterface {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The route's output interface index.
        index: u32,
    },
    /// An `ip=` value could not be rendered (a host name or device with characters `ip=` cannot hold).
    #[error(transparent)]
    Ip(#[from] kernel_cmdline::Error),
}

/// One address of an interface, with its prefix length in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The address.
    pub address: IpAddr,
    /// Prefix length in bits (0–32 for IPv4, 0–128 for IPv6).
    pub prefix_len: u8,
}

/// A default route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DefaultRoute {
    /// The next hop; `None` for a route straight out of the interface (point-to-point).
    pub gateway: Option<IpAddr>,
    /// The route's metric (`RTA_PRIORITY`, 0 when absent).
    pub metric: u32,
}

/// An interface carrying a default route, as read from the running system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// The name on the running system (e.g. `ens5` on Ubuntu).
    pub name: String,
    /// The kernel's interface index.
    pub index: u32,
    /// The MAC address, lowercase `aa:bb:cc:dd:ee:ff`, when the link has one.
    pub mac: Option<String>,
    /// The MTU in bytes (not expressible in `ip=`; informational).
    pub mtu: Option<u32>,
    /// True for a physical Ethernet link (ARPHRD_ETHER and no `IFLA_LINKINFO` kind).
    pub physical: bool,
    /// `N` in the `eth<N>` name the kernel gives the link without predictable naming
    /// (`net.ifnames=0`): its rank among physical Ethernet links by ifindex. `None` when not physical.
    pub kernel_eth_index: Option<u32>,
    /// Global addresses, IPv4 first, in the kernel's order within each family.
    pub addresses: Vec<Address>,
    /// The IPv4 default route through this interface, if it is the chosen one.
    pub default_v4: Option<DefaultRoute>,
    /// The IPv6 default route through this interface, if it is the chosen one.
    pub default_v6: Option<DefaultRoute>,
}

/// The network of the running system that matters to the next one (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkState {
    /// Interfaces carrying the chosen IPv4 and/or IPv6 default route (one, or two when the
    /// families leave through different interfaces), the IPv4 one first.
    pub interfaces: Vec<Interface>,
    /// DNS servers in the order of the resolver file, loopback and link-local ones removed.
    pub dns: Vec<IpAddr>,
    /// The file the DNS servers were read from, if any.
    pub dns_source: Option<String>,
    /// The host name, when set and usable as a Talos host name.
    pub hostname: Option<String>,
}

/// How to name the device in `ip=` (see the module docs, "Which device name goes into `ip=`").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceNaming {
    /// `eth<N>`: the next command line has `net.ifnames=0`.
    KernelEthN,
    /// The interface's current name (predictable names on both sides).
    Current,
}

/// The routes, links and addresses dumped through rtnetlink, unfiltered.
#[derive(Debug, Clone, Default)]
pub struct NetlinkDump {
    /// `RTM_GETLINK` dump.
    pub links: Vec<LinkMessage>,
    /// `RTM_GETADDR` dump (both families).
    pub addresses: Vec<AddressMessage>,
    /// `RTM_GETROUTE` dumps of `AF_INET` and `AF_INET6`.
    pub routes: Vec<RouteMessage>,
}

/// Dumps links, addresses and IPv4/IPv6 routes through a fresh rtnetlink connection.
///
/// Needs a tokio runtime (the connection task is spawned on it and ended before returning).
///
/// # Errors
/// [`Error::Socket`], [`Error::Netlink`].
pub async fn dump() -> Result<NetlinkDump, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
    let task = tokio::spawn(connection);
    let result = async {
        let links = handle.link().get().execute().try_collect().await;
        let links = links.map_err(|source| Error::Netlink { what: "links", source })?;
        let addresses = handle.address().get().execute().try_collect().await;
        let addresses = addresses.map_err(|source| Error::Netlink { what: "addresses", source })?;
        let v4 = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes: Vec<RouteMessage> = handle
            .route()
            .get(v4)
            .execute()
            .try_collect()
            .await
            .map_err(|source| Error::Netlink { what: "IPv4 routes", source })?;
        let v6 = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build();
        let v6_routes: Vec<RouteMessage> = handle
            .route()
            .get(v6)
            .execute()
            .try_collect()
            .await
            .map_err(|source| Error::Netlink { what: "IPv6 routes", source })?;
        routes.extend(v6_routes);
        Ok(NetlinkDump { links, addresses, routes })
    }
    .await;
    task.abort();
    result
}

/// Reads the running system's network: rtnetlink, then the resolver files and the host name.
///
/// # Errors
/// Those of [`dump`] and [`NetworkState::from_netlink`]. Unreadable resolver or host name files are
/// not errors (the fields stay empty).
pub async fn read_running_system() -> Result<NetworkState, Error> {
    let dump = dump().await?;
    let (dns, dns_source) = read_dns(Path::new(RESOLVED_RESOLV_CONF), Path::new(ETC_RESOLV_CONF));
    let hostname = std::fs::read_to_string(PROC_HOSTNAME).ok().and_then(|t| parse_hostname(&t));
    NetworkState::from_netlink(&dump, dns, dns_source, hostname)
}

/// DNS servers from the first of `resolved` and `fallback` that exists and names at least one
/// usable server, with that file's path.
pub fn read_dns(resolved: &Path, fallback: &Path) -> (Vec<IpAddr>, Option<String>) {
    for path in [resolved, fallback] {
        if let Ok(text) = std::fs::read_to_string(path) {
            let servers = parse_resolv_conf(&text);
            if !servers.is_empty() {
                return (servers, Some(path.display().to_string()));
            }
        }
    }
    (Vec::new(), None)
}

/// The `nameserver` addresses of a resolv.conf(5) text, in order, without duplicates, loopback
/// (`127.0.0.53`, `::1`) or link-local servers (a zone such as `%ens5` cannot be written in `ip=`),
/// and without unparsable entries. Comments start with `#` or `;`.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        let link_local = match addr {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.is_unicast_link_local(),
        };
        if addr.is_loopback() || addr.is_unspecified() || link_local || servers.contains(&addr) {
            continue;
        }
        servers.push(addr);
    }
    servers
}

/// The host name from the text of `/proc/sys/kernel/hostname`, if usable by Talos.
///
/// Talos splits it at the first dot into host and domain name and refuses a host name part longer
/// than 63 bytes or a whole name over 253 (`HostnameSpecSpec.Validate`); `ip=` cannot hold `:`.
/// Unset names (`(none)`, `localhost`, empty) and names with characters other than letters,
/// digits, `-` and `.` give `None`.
pub fn parse_hostname(text: &str) -> Option<String> {
    let name = text.trim();
    let first = name.split('.').next().unwrap_or_default();
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if first.is_empty() || first.len() > 63 || name.len() > 253 || !valid_chars {
        return None;
    }
    if name == "localhost" || name.starts_with("localhost.") {
        return None;
    }
    Some(name.to_string())
}

/// Chooses the default route of one family: main table, destination prefix length 0, unicast,
/// with an output interface; the lowest metric wins (ties: the first listed).
fn default_route(routes: &[RouteMessage], family: AddressFamily) -> Option<(u32, DefaultRoute)> {
    let mut best: Option<(u32, DefaultRoute)> = None;
    for r in routes {
        if r.header.address_family != family || r.header.destination_prefix_length != 0 {
            continue;
        }
        if r.header.kind != RouteType::Unicast {
            continue;
        }
        let mut table = u32::from(r.header.table);
        let (mut oif, mut gateway, mut metric) = (None, None, 0);
        for a in &r.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            continue;
        }
        let Some(oif) = oif else { continue };
        if best.is_none_or(|(_, b)| metric < b.metric) {
            best = Some((oif, DefaultRoute { gateway, metric }));
        }
    }
    best
}

/// The kernel-visible facts of one link.
struct LinkFacts {
    name: String,
    mac: Option<String>,
    mtu: Option<u32>,
    physical: bool,
}

fn link_facts(link: &LinkMessage) -> LinkFacts {
    let (mut name, mut mac, mut mtu, mut kind) = (String::new(), None, None, false);
    for a in &link.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                mac = Some(bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
            }
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => kind |= infos.iter().any(|i| matches!(i, LinkInfo::Kind(_))),
            _ => {}
        }
    }
    let physical = link.header.link_layer_type == LinkLayerType::Ether && !kind;
    LinkFacts { name, mac, mtu, physical }
}

/// True when an address is worth carrying over (see the module docs).
fn usable_address(msg: &AddressMessage) -> Option<Address> {
    if msg.header.scope != AddressScope::Universe {
        return None;
    }
    let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
    let (mut local, mut address) = (None, None);
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point links);
    // IPv6 only sends IFA_ADDRESS.
    let ip = local.or(address)?;
    // For IPv6 the "secondary" flag is IFA_F_TEMPORARY (RFC 4941 privacy addresses).
    let unusable =
        AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated | AddressFlags::Secondary;
    if ip.is_ipv6() && flags.intersects(unusable) {
        return None;
    }
    if let IpAddr::V6(v6) = ip {
        if v6.is_unicast_link_local() {
            return None;
        }
    }
    Some(Address { address: ip, prefix_len: msg.header.prefix_len })
}

impl NetworkState {
    /// Builds the state from a netlink dump plus the DNS servers and host name read elsewhere.
    ///
    /// # Errors
    /// [`Error::NoDefaultRoute`] when neither family has a default route;
    /// [`Error::UnknownInterface`] when a default route's interface is not in the link dump.
    pub fn from_netlink(
        dump: &NetlinkDump,
        dns: Vec<IpAddr>,
        dns_source: Option<String>,
        hostname: Option<String>,
    ) -> Result<NetworkState, Error> {
        let v4 = default_route(&dump.routes, AddressFamily::Inet);
        let v6 = default_route(&dump.routes, AddressFamily::Inet6);
        if v4.is_none() && v6.is_none() {
            return Err(Error::NoDefaultRoute);
        }
        let mut physical: Vec<u32> =
            dump.links.iter().filter(|l| link_facts(l).physical).map(|l| l.header.index).collect();
        physical.sort_unstable();
        let mut by_index: BTreeMap<u32, usize> = BTreeMap::new();
        let mut interfaces: Vec<Interface> = Vec::new();
        for (family, route) in [("IPv4", v4), ("IPv6", v6)] {
            let Some((index, route)) = route else { continue };
            let slot = match by_index.get(&index) {
                Some(slot) => *slot,
                None => {
                    let link = dump
                        .links
                        .iter()
                        .find(|l| l.header.index == index)
                        .ok_or(Error::UnknownInterface { family, index })?;
                    let facts = link_facts(link);
                    let mut addresses: Vec<Address> =
                        dump.addresses.iter().filter(|a| a.header.index == index).filter_map(usable_address).collect();
                    addresses.sort_by_key(|a| a.address.is_ipv6());
                    interfaces.push(Interface {
                        name: facts.name,
                        index,
                        mac: facts.mac,
                        mtu: facts.mtu,
                        physical: facts.physical,
                        kernel_eth_index: physical.iter().position(|i| *i == index).map(|p| p as u32),
                        addresses,
                        default_v4: None,
                        default_v6: None,
                    });
                    by_index.insert(index, interfaces.len() - 1);
                    interfaces.len() - 1
                }
            };
            if family == "IPv4" {
                interfaces[slot].default_v4 = Some(route);
            } else {
                interfaces[slot].default_v6 = Some(route);
            }
        }
        Ok(NetworkState { interfaces, dns, dns_source, hostname })
    }

    /// The `ip=` configurations Talos should get, one per carried-over address, in this order:
    /// for each interface, its IPv4 addresses (the first with the IPv4 gateway), then its IPv6
    /// addresses (the first with the IPv6 gateway). The host name goes into the first one only
    /// (Talos uses the first it finds); DNS servers two per `ip=` from the first on (Talos collects
    /// them from every `ip=`; servers beyond the available fields are dropped). An interface whose
    /// family has no default route through it contributes no addresses of that family.
    ///
    /// # Errors
    /// [`Error::Ip`] when a value cannot be written (it is checked by rendering each one).
    pub fn ip_configs(&self, naming: DeviceNaming) -> Result<Vec<IpConfig>, Error> {
        let mut configs = Vec::new();
        for iface in &self.interfaces {
            let device = match naming {
                _ if !iface.physical => None,
                DeviceNaming::KernelEthN => iface.kernel_eth_index.map(|n| format!("eth{n}")),
                DeviceNaming::Current => Some(iface.name.clone()),
            };
            for (v6, route) in [(false, iface.default_v4), (true, iface.default_v6)] {
                let Some(route) = route else { continue };
                let mut gateway = route.gateway;
                for a in iface.addresses.iter().filter(|a| a.address.is_ipv6() == v6) {
                    let mut c = IpConfig::new(a.address, a.prefix_len);
                    c.gateway = gateway.take();
                    c.device = device.clone();
                    configs.push(c);
                }
            }
        }
        if let Some(first) = configs.first_mut() {
            first.hostname = self.hostname.clone();
        }
        for (config, dns) in configs.iter_mut().zip(self.dns.chunks(2)) {
            config.dns = dns.to_vec();
        }
        for c in &configs {
            c.render()?;
        }
        Ok(configs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::InfoKind;
    use rtnetlink::packet_route::route::RouteProtocol;

    fn link(index: u32, name: &str, mac: [u8; 6], mtu: u32, kind: Option<InfoKind>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.link_layer_type = LinkLayerType::Ether;
        m.attributes =
            vec![LinkAttribute::IfName(name.into()), LinkAttribute::Address(mac.to_vec()), LinkAttribute::Mtu(mtu)];
        if let Some(k) = kind {
            m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
        }
        m
    }

    fn loopback() -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = 1;
        m.header.link_layer_type = LinkLayerType::Loopback;
        m.attributes = vec![LinkAttribute::IfName("lo".into()), LinkAttribute::Mtu(65536)];
        m
    }

    fn addr(index: u32, ip: &str, prefix: u8, scope: AddressScope, flags: AddressFlags) -> AddressMessage {
        let ip: IpAddr = ip.parse().unwrap();
        let mut m = AddressMessage::default();
        m.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        m.header.prefix_len = prefix;
        m.header.scope = scope;
        m.header.index = index;
        m.attributes = vec![AddressAttribute::Address(ip), AddressAttribute::Flags(flags)];
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        }
        m
    }

    fn route(dst_len: u8, gw: Option<&str>, oif: u32, metric: Option<u32>, v6: bool) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        m.header.destination_prefix_length = dst_len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        m.header.protocol = RouteProtocol::Dhcp;
        m.attributes = vec![RouteAttribute::Table(254), RouteAttribute::Oif(oif)];
        if let Some(g) = gw {
            let g: IpAddr = g.parse().unwrap();
            m.attributes.push(RouteAttribute::Gateway(g.into()));
        }
        if let Some(p) = metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        m
    }

    /// An Ubuntu 22.04 EC2 instance: `ens5` (ifindex 2) with DHCP, docker0 bridge, IPv6 from the VPC.
    fn ec2_dump() -> NetlinkDump {
        let none = AddressFlags::empty();
        NetlinkDump {
            links: vec![
                loopback(),
                link(2, "ens5", [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f], 9001, None),
                link(3, "docker0", [2, 0x42, 0, 0, 0, 1], 1500, Some(InfoKind::Bridge)),
            ],
            addresses: vec![
                addr(1, "127.0.0.1", 8, AddressScope::Host, AddressFlags::Permanent),
                addr(2, "fe80::81b:2cff:fe3d:4e5f", 64, AddressScope::Link, AddressFlags::Permanent),
                addr(2, "2600:1f18:abcd:1200::17", 128, AddressScope::Universe, none),
                addr(2, "2600:1f18:abcd:1200::99", 64, AddressScope::Universe, AddressFlags::Tentative),
                addr(2, "2600:1f18:abcd:1200:aaaa::1", 64, AddressScope::Universe, AddressFlags::Secondary),
                addr(2, "10.20.13.57", 20, AddressScope::Universe, none),
                addr(3, "172.17.0.1", 16, AddressScope::Universe, AddressFlags::Permanent),
            ],
            routes: vec![
                route(0, Some("10.20.0.1"), 2, Some(100), false),
                route(20, None, 2, Some(100), false),
                route(16, None, 3, None, false),
                route(0, Some("fe80::1"), 2, Some(1024), true),
            ],
        }
    }

    #[test]
    fn ec2_instance_carries_over_to_eth0() {
        let dns = vec!["10.20.0.2".parse().unwrap()];
        let state = NetworkState::from_netlink(
            &ec2_dump(),
            dns,
            Some(RESOLVED_RESOLV_CONF.into()),
            Some("ip-10-20-13-57".into()),
        )
        .unwrap();
        assert_eq!(state.interfaces.len(), 1);
        let i = &state.interfaces[0];
        assert_eq!((i.name.as_str(), i.index, i.mtu, i.kernel_eth_index), ("ens5", 2, Some(9001), Some(0)));
        assert_eq!(i.mac.as_deref(), Some("0a:1b:2c:3d:4e:5f"));
        let addrs: Vec<String> = i.addresses.iter().map(|a| format!("{}/{}", a.address, a.prefix_len)).collect();
        assert_eq!(addrs, ["10.20.13.57/20", "2600:1f18:abcd:1200::17/128"]);

        let rendered =
            |naming| -> Vec<String> { state.ip_configs(naming).unwrap().iter().map(|c| c.render().unwrap()).collect() };
        assert_eq!(
            rendered(DeviceNaming::KernelEthN),
            [
                "10.20.13.57::10.20.0.1:255.255.240.0:ip-10-20-13-57:eth0:off:10.20.0.2",
                "[2600:1f18:abcd:1200::17]::[fe80::1]:128::eth0:off",
            ]
        );
        assert_eq!(
            rendered(DeviceNaming::Current)[0],
            "10.20.13.57::10.20.0.1:255.255.240.0:ip-10-20-13-57:ens5:off:10.20.0.2"
        );
    }

    #[test]
    fn lowest_metric_wins_and_eth_index_counts_physical_links_only() {
        let mut dump = ec2_dump();
        // A second NIC registered later (ifindex 4 → eth1), with a better IPv4 default route.
        dump.links.push(link(4, "ens6", [0x0a, 0, 0, 0, 0, 2], 1500, None));
        dump.links.push(link(5, "veth1", [0x0a, 0, 0, 0, 0, 3], 1500, Some(InfoKind::Veth)));
        dump.addresses.push(addr(4, "10.20.14.9", 24, AddressScope::Universe, AddressFlags::Permanent));
        dump.routes.push(route(0, Some("10.20.14.1"), 4, Some(50), false));
        let state = NetworkState::from_netlink(&dump, vec![], None, None).unwrap();
        let names: Vec<(&str, Option<u32>)> =
            state.interfaces.iter().map(|i| (i.name.as_str(), i.kernel_eth_index)).collect();
        assert_eq!(names, [("ens6", Some(1)), ("ens5", Some(0))]);
        let rendered: Vec<String> =
            state.ip_configs(DeviceNaming::KernelEthN).unwrap().iter().map(|c| c.render().unwrap()).collect();
        assert_eq!(
            rendered,
            ["10.20.14.9::10.20.14.1:255.255.255.0::eth1:off", "[2600:1f18:abcd:1200::17]::[fe80::1]:128::eth0:off"]
        );
    }

    #[test]
    fn virtual_interface_gets_no_device_and_dns_spreads_two_per_ip() {
        let dump = NetlinkDump {
            links: vec![loopback(), link(7, "br0", [2, 0, 0, 0, 0, 7], 1500, Some(InfoKind::Bridge))],
            addresses: vec![
                addr(7, "192.168.1.10", 24, AddressScope::Universe, AddressFlags::Permanent),
                addr(7, "192.168.1.11", 24, AddressScope::Universe, AddressFlags::Permanent),
            ],
            routes: vec![route(0, Some("192.168.1.1"), 7, None, false)],
        };
        let dns: Vec<IpAddr> =
            ["192.168.1.1", "1.1.1.1", "2606:4700::1111"].iter().map(|s| s.parse().unwrap()).collect();
        let state = NetworkState::from_netlink(&dump, dns, None, Some("node.lab.example".into())).unwrap();
        let rendered: Vec<String> =
            state.ip_configs(DeviceNaming::KernelEthN).unwrap().iter().map(|c| c.render().unwrap()).collect();
        assert_eq!(
            rendered,
            [
                "192.168.1.10::192.168.1.1:255.255.255.0:node.lab.example::off:192.168.1.1:1.1.1.1",
                "192.168.1.11:::255.255.255.0:::off:[2606:4700::1111]",
            ]
        );
    }

    #[test]
    fn no_default_route_is_an_error() {
        let mut dump = ec2_dump();
        dump.routes.retain(|r| r.header.destination_prefix_length != 0);
        assert!(matches!(NetworkState::from_netlink(&dump, vec![], None, None), Err(Error::NoDefaultRoute)));
        let mut dump = ec2_dump();
        dump.links.retain(|l| l.header.index != 2);
        assert!(matches!(
            NetworkState::from_netlink(&dump, vec![], None, None),
            Err(Error::UnknownInterface { family: "IPv4", index: 2 })
        ));
    }

    #[test]
    fn resolv_conf_skips_stub_loopback_link_local_and_comments() {
        let stub = "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch ec2.internal\n";
        assert!(parse_resolv_conf(stub).is_empty());
        let upstream = "nameserver 10.20.0.2\nnameserver fe80::1%ens5\n ; nameserver 9.9.9.9\nnameserver 2600:1f18::253 # v6\nnameserver ::1\nnameserver 10.20.0.2\nnameserver bogus\n";
        let got: Vec<String> = parse_resolv_conf(upstream).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.20.0.2", "2600:1f18::253"]);
    }

    #[test]
    fn resolved_file_first_then_etc() {
        let dir = std::env::temp_dir().join(format!("moonboot-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (resolved, etc) = (dir.join("resolved"), dir.join("etc"));
        std::fs::write(&etc, "nameserver 127.0.0.53\nnameserver 192.0.2.53\n").unwrap();
        assert_eq!(read_dns(&resolved, &etc), (vec!["192.0.2.53".parse().unwrap()], Some(etc.display().to_string())));
        std::fs::write(&resolved, "nameserver 10.20.0.2\n").unwrap();
        assert_eq!(read_dns(&resolved, &etc).0, vec!["10.20.0.2".parse::<IpAddr>().unwrap()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hostnames() {
        assert_eq!(parse_hostname("ip-10-20-13-57\n").as_deref(), Some("ip-10-20-13-57"));
        assert_eq!(parse_hostname("node1.lab.example\n").as_deref(), Some("node1.lab.example"));
        for bad in ["", "(none)", "localhost", "localhost.localdomain", "a:b", &"x".repeat(64)] {
            assert_eq!(parse_hostname(bad), None, "{bad:?}");
        }
    }

    /// The real host: what rtnetlink gives must agree with `ip -j route show default` and
    /// `ip -j addr show dev X` (iproute2, the reference reader of the same kernel tables).
    #[test]
    fn real_host_agrees_with_iproute2() {
        let ip_json = |args: &[&str]| -> Option<serde_json::Value> {
            let out = std::process::Command::new("ip").args(args).output().ok()?;
            out.status.success().then(|| serde_json::from_slice(&out.stdout).ok())?
        };
        let Some(serde_json::Value::Array(v4)) = ip_json(&["-4", "-j", "route", "show", "default"]) else {
            eprintln!("SKIPPED real_host_agrees_with_iproute2: `ip -j` is not available");
            return;
        };
        let v6 = match ip_json(&["-6", "-j", "route", "show", "default"]) {
            Some(serde_json::Value::Array(v)) => v,
            _ => Vec::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dump = rt.block_on(dump()).expect("netlink dump");
        let state = match NetworkState::from_netlink(&dump, vec![], None, None) {
            Err(Error::NoDefaultRoute) => {
                assert!(v4.is_empty() && v6.is_empty(), "iproute2 sees a default route, netlink did not");
                eprintln!("SKIPPED real_host_agrees_with_iproute2: this host has no default route");
                return;
            }
            other => other.unwrap(),
        };
        let best = |routes: &[serde_json::Value]| {
            routes.iter().min_by_key(|r| r["metric"].as_u64().unwrap_or(0)).map(|r| {
                (r["dev"].as_str().unwrap().to_string(), r["gateway"].as_str().map(|g| g.parse::<IpAddr>().unwrap()))
            })
        };
        for (routes, pick) in [(&v4, false), (&v6, true)] {
            let want = best(routes);
            let got = state
                .interfaces
                .iter()
                .find_map(|i| if pick { i.default_v6 } else { i.default_v4 }.map(|r| (i.name.clone(), r.gateway)));
            assert_eq!(got, want, "default route (IPv6: {pick})");
        }
        for iface in &state.interfaces {
            let Some(serde_json::Value::Array(links)) = ip_json(&["-j", "addr", "show", "dev", &iface.name]) else {
                panic!("ip addr show dev {}", iface.name);
            };
            let l = &links[0];
            assert_eq!(l["ifindex"].as_u64(), Some(u64::from(iface.index)));
            assert_eq!(l["mtu"].as_u64(), iface.mtu.map(u64::from));
            assert_eq!(l["address"].as_str(), iface.mac.as_deref());
            let want: Vec<Address> = l["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["scope"] == "global")
                .filter(|a| {
                    !["tentative", "dadfailed", "deprecated", "temporary"].iter().any(|f| a[*f].as_bool() == Some(true))
                })
                .map(|a| Address {
                    address: a["local"].as_str().unwrap().parse().unwrap(),
                    prefix_len: a["prefixlen"].as_u64().unwrap() as u8,
                })
                .collect();
            let mut want_sorted = want.clone();
            want_sorted.sort_by_key(|a| a.address.is_ipv6());
            assert_eq!(iface.addresses, want_sorted, "addresses of {}", iface.name);
            assert!(!iface.addresses.is_empty());
        }
        // And the rendering is what Talos can read back: one ip= per address, a gateway on the first
        // of each family.
        let configs = state.ip_configs(DeviceNaming::Current).unwrap();
        let carried = |i: &Interface| {
            i.addresses
                .iter()
                .filter(|a| if a.address.is_ipv6() { i.default_v6.is_some() } else { i.default_v4.is_some() })
                .count()
        };
        assert_eq!(configs.len(), state.interfaces.iter().map(carried).sum::<usize>());
    }
}
