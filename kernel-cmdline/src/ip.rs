//! Rendering the `ip=` kernel argument for one interface, as Talos parses it.
//!
//! Field order (Linux `Documentation/admin-guide/nfs/nfsroot.rst`, parsed by Talos itself in
//! `internal/app/machined/pkg/controllers/network/cmdline.go` `ParseCmdlineNetwork`):
//!
//! ```text
//! ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>:<ntp0-ip>
//! ```
//!
//! Talos splits the value on `:` outside square brackets and trims the brackets
//! (`splitIPArgument`), so IPv6 addresses are written as `[2001:db8::2]`. The netmask field may
//! be a prefix length or a mask (`strconv.Atoi` first); we write a dotted mask for IPv4, as the
//! kernel's own `ipconfig` expects, and the prefix length for IPv6. The server field is ignored by
//! Talos and left empty. Only `dhcp` in the autoconf field means anything to Talos; we write `off`
//! for a static address, which both Talos and the kernel read as static. DNS fields feed Talos's
//! resolvers, the NTP field its time servers; the host name is used unless `talos.hostname=` is
//! given. Each `ip=` argument configures one link. Trailing empty fields are omitted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::{Error, Param};

/// The `<autoconf>` field: how the kernel (and Talos) should configure the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Autoconf {
    /// `off` (also spelled `none`): static configuration from the other fields.
    #[default]
    Off,
    /// `dhcp`.
    Dhcp,
    /// `dhcp6`.
    Dhcp6,
}

impl Autoconf {
    /// The field's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Autoconf::Off => "off",
            Autoconf::Dhcp => "dhcp",
            Autoconf::Dhcp6 => "dhcp6",
        }
    }
}

/// A static configuration for one interface.
///
/// `client` and `gateway`, and every DNS server, must be of the same family as the address, except
/// DNS servers, which may be of either family (Talos accepts both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The interface address.
    pub client: IpAddr,
    /// Prefix length in bits (0–32 for IPv4, rendered as a dotted netmask; 0–128 for IPv6).
    pub prefix_len: u8,
    /// The default gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The host name (no `:` or white space).
    pub hostname: Option<String>,
    /// The interface name as the *next* kernel names it (e.g. `eth0` with `net.ifnames=0`).
    pub device: Option<String>,
    /// The autoconf field; [`Autoconf::Off`] for a static address.
    pub autoconf: Autoconf,
    /// Up to two DNS servers (the format has two fields).
    pub dns: Vec<IpAddr>,
    /// An NTP server.
    pub ntp: Option<IpAddr>,
}

impl IpConfig {
    /// A static configuration for `client`/`prefix_len` with every other field empty.
    pub fn new(client: IpAddr, prefix_len: u8) -> IpConfig {
        IpConfig {
            client,
            prefix_len,
            gateway: None,
            hostname: None,
            device: None,
            autoconf: Autoconf::Off,
            dns: Vec::new(),
            ntp: None,
        }
    }

    /// The value of the `ip=` argument (without `ip=`).
    ///
    /// # Errors
    /// [`Error::Ip`] when the prefix length is out of range for the family, the gateway's family
    /// differs from the address's, more than two DNS servers are given, or the host name or
    /// device holds `:`, white space, a quote or a control character.
    pub fn render(&self) -> Result<String, Error> {
        let v6 = self.client.is_ipv6();
        let max = if v6 { 128 } else { 32 };
        if self.prefix_len > max {
            return Err(Error::Ip(format!("prefix length {} exceeds {max}", self.prefix_len)));
        }
        if let Some(gw) = self.gateway {
            if gw.is_ipv6() != v6 {
                return Err(Error::Ip(format!("gateway {gw} is not of the family of {}", self.client)));
            }
        }
        if self.dns.len() > 2 {
            return Err(Error::Ip(format!("{} DNS servers given, the format holds 2", self.dns.len())));
        }
        for (what, s) in [("hostname", &self.hostname), ("device", &self.device)] {
            if let Some(s) = s {
                if s.is_empty()
                    || s.bytes().any(|b| b == b':' || b == b'"' || b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    return Err(Error::Ip(format!("{what} {s:?} cannot be written in ip=")));
                }
            }
        }
        let netmask = if v6 {
            self.prefix_len.to_string()
        } else {
            let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
            Ipv4Addr::from(mask).to_string()
        };
        let mut fields = vec![
            Addr(self.client).to_string(),
            String::new(),
            self.gateway.map(|g| Addr(g).to_string()).unwrap_or_default(),
            netmask,
            self.hostname.clone().unwrap_or_default(),
            self.device.clone().unwrap_or_default(),
            self.autoconf.as_str().to_string(),
        ];
        fields.extend(self.dns.iter().map(|d| Addr(*d).to_string()));
        if let Some(ntp) = self.ntp {
            fields.resize(9, String::new());
            fields.push(Addr(ntp).to_string());
        }
        Ok(fields.join(":"))
    }

    /// The whole `ip=…` parameter.
    ///
    /// # Errors
    /// As [`IpConfig::render`].
    pub fn to_param(&self) -> Result<Param, Error> {
        Param::new("ip", Some(self.render()?))
    }
}

/// An address as the `ip=` format writes it: IPv6 in brackets.
struct Addr(IpAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "[{a}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Talos reads from one `ip=` value, re-stated from talos
    /// `internal/app/machined/pkg/controllers/network/cmdline.go` (`splitIPArgument`,
    /// `ParseCmdlineNetwork`) to check our field positions: (address, prefix, gateway, hostname,
    /// device, dns, ntp).
    type Parsed = (IpAddr, u8, Option<IpAddr>, Option<String>, Option<String>, Vec<IpAddr>, Vec<IpAddr>);

    fn talos_parse(value: &str) -> Parsed {
        let (mut fields, mut cur, mut depth) = (Vec::new(), String::new(), 0);
        for c in value.chars() {
            match c {
                '[' => {
                    depth += 1;
                    cur.push(c)
                }
                ']' => {
                    depth -= 1;
                    cur.push(c)
                }
                ':' if depth == 0 => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        let f: Vec<String> = fields.iter().map(|s| s.trim_matches(['[', ']']).to_string()).collect();
        let get = |i: usize| f.get(i).filter(|s| !s.is_empty()).cloned();
        let addr: IpAddr = f[0].parse().unwrap();
        let prefix = match get(3) {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(m) => m.parse::<u8>().unwrap_or_else(|_| match m.parse::<IpAddr>().unwrap() {
                IpAddr::V4(a) => u32::from(a).count_ones() as u8,
                IpAddr::V6(a) => u128::from(a).count_ones() as u8,
            }),
        };
        let ip = |i: usize| get(i).map(|s| s.parse::<IpAddr>().unwrap());
        let dns = [7, 8].iter().filter_map(|i| ip(*i)).collect();
        let ntp = ip(9).into_iter().collect();
        (addr, prefix, ip(2), get(4), get(5), dns, ntp)
    }

    /// The checker reads Talos's own vectors (`cmdline_test.go`, v1.11.6) as Talos does …
    #[test]
    fn checker_agrees_with_talos_vectors() {
        let p = talos_parse("172.20.0.2:172.21.0.1:172.20.0.1:255.255.255.0:master1:eth1::10.0.0.1:10.0.0.2:10.0.0.1");
        assert_eq!(
            p,
            (
                v4("172.20.0.2"),
                24,
                Some(v4("172.20.0.1")),
                Some("master1".into()),
                Some("eth1".into()),
                vec![v4("10.0.0.1"), v4("10.0.0.2")],
                vec![v4("10.0.0.1")]
            )
        );
        let a = talos_parse("[2a03:1:2::12]::[2a03:1:2::11]:[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8]:master:eth0:off:[2001:4860:4860::8888]:[2606:4700::1111]:[2606:4700:f1::1]");
        let b = talos_parse("[2a03:1:2::12]::[2a03:1:2::11]:125:master:eth0:off:[2001:4860:4860::8888]:[2606:4700::1111]:[2606:4700:f1::1]");
        assert_eq!(a, b);
        assert_eq!(a.1, 125);
    }

    /// … and reads back exactly what we render, for both families.
    #[test]
    fn talos_reads_back_what_we_render() {
        for (client, prefix, gw, dns, ntp) in [
            ("10.20.13.57", 20, "10.20.0.1", vec!["10.20.0.2", "1.1.1.1"], Some("10.20.0.3")),
            ("2001:db8::a", 64, "fe80::1", vec!["2001:4860:4860::6464"], None),
            ("2a03:1:2::12", 125, "2a03:1:2::11", vec![], Some("2606:4700:f1::1")),
        ] {
            let mut c = IpConfig::new(v4(client), prefix);
            c.gateway = Some(v4(gw));
            c.hostname = Some("ip-10-20-13-57".into());
            c.device = Some("eth0".into());
            c.dns = dns.iter().map(|d| v4(d)).collect();
            c.ntp = ntp.map(v4);
            let got = talos_parse(&c.render().unwrap());
            assert_eq!(
                got,
                (
                    c.client,
                    prefix,
                    c.gateway,
                    c.hostname.clone(),
                    c.device.clone(),
                    c.dns.clone(),
                    c.ntp.into_iter().collect::<Vec<_>>()
                )
            );
        }
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_full() {
        let mut c = IpConfig::new(v4("10.20.13.57"), 24);
        c.gateway = Some(v4("10.20.13.1"));
        c.hostname = Some("node-1".into());
        c.device = Some("eth0".into());
        c.dns = vec![v4("10.20.0.2"), v4("1.1.1.1")];
        assert_eq!(
            c.to_param().unwrap().to_string(),
            "ip=10.20.13.57::10.20.13.1:255.255.255.0:node-1:eth0:off:10.20.0.2:1.1.1.1"
        );
    }

    #[test]
    fn ipv4_minimal_and_odd_prefixes() {
        assert_eq!(IpConfig::new(v4("10.0.2.15"), 24).render().unwrap(), "10.0.2.15:::255.255.255.0:::off");
        assert_eq!(IpConfig::new(v4("10.0.0.1"), 0).render().unwrap(), "10.0.0.1:::0.0.0.0:::off");
        assert_eq!(IpConfig::new(v4("10.0.0.1"), 32).render().unwrap(), "10.0.0.1:::255.255.255.255:::off");
        assert_eq!(IpConfig::new(v4("10.0.0.1"), 20).render().unwrap(), "10.0.0.1:::255.255.240.0:::off");
    }

    #[test]
    fn ipv6_in_brackets() {
        let mut c = IpConfig::new(v4("2001:db8::2"), 64);
        c.gateway = Some(v4("2001:db8::1"));
        c.device = Some("eth0".into());
        c.dns = vec![v4("2001:4860:4860::8888")];
        assert_eq!(c.render().unwrap(), "[2001:db8::2]::[2001:db8::1]:64::eth0:off:[2001:4860:4860::8888]");
    }

    #[test]
    fn ntp_pads_dns_fields() {
        let mut c = IpConfig::new(v4("192.168.1.5"), 24);
        c.ntp = Some(v4("192.168.1.1"));
        assert_eq!(c.render().unwrap(), "192.168.1.5:::255.255.255.0:::off:::192.168.1.1");
    }

    #[test]
    fn refuses_what_cannot_be_written() {
        assert!(IpConfig::new(v4("10.0.0.1"), 33).render().is_err());
        let mut c = IpConfig::new(v4("10.0.0.1"), 8);
        c.gateway = Some(v4("fe80::1"));
        assert!(c.render().is_err());
        let mut c = IpConfig::new(v4("10.0.0.1"), 8);
        c.hostname = Some("a:b".into());
        assert!(c.render().is_err());
        let mut c = IpConfig::new(v4("10.0.0.1"), 8);
        c.dns = vec![v4("1.1.1.1"); 3];
        assert!(c.render().is_err());
    }
}
