//! TEST PROGRAM — static IPv4 network configuration from the kernel's `ip=` argument, with the
//! classic `SIOCSIF*` / `SIOCADDRT` ioctls. Talos configures the network from `ip=` too
//! (`internal/app/machined/pkg/controllers/network/cmdline.go`, same field layout as the kernel's
//! `Documentation/admin-guide/nfs/nfsroot.rst`:
//! `ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>`).
//! Only the static IPv4 form is handled here; DHCP and IPv6 are not needed by the tests.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::{say, Result};

/// The fields of a static `ip=` argument that the stand-in uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpArg {
    /// Client address.
    pub client: Ipv4Addr,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Netmask (dotted, or a prefix length as some writers use).
    pub netmask: Ipv4Addr,
    /// Host name.
    pub hostname: Option<String>,
    /// Interface; `None` picks the first non-loopback one.
    pub device: Option<String>,
}

/// Parses the value of `ip=`. `None` for forms without a static IPv4 client address
/// (`dhcp`, `off`, IPv6, …).
pub fn parse_ip(value: &str) -> Option<IpArg> {
    let f: Vec<&str> = value.split(':').collect();
    let client: Ipv4Addr = f.first()?.parse().ok()?;
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let netmask = match field(3) {
        Some(m) if m.contains('.') => m.parse().ok()?,
        Some(m) => {
            let p: u32 = m.parse().ok()?;
            Ipv4Addr::from(u32::MAX.checked_shl(32 - p.min(32)).unwrap_or(0))
        }
        None => Ipv4Addr::new(255, 255, 255, 0),
    };
    Some(IpArg {
        client,
        gateway: field(2).and_then(|g| g.parse().ok()),
        netmask,
        hostname: field(4).map(str::to_string),
        device: field(5).map(str::to_string),
    })
}

/// `struct rtentry` of `linux/route.h` (not in the libc crate for glibc targets).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in and sockaddr have the same size (16) on Linux; plain data.
    unsafe {
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin)
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: plain data.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    r
}

struct Sock(i32);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn sock() -> Result<Sock> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(crate::errno_str("socket(AF_INET)"));
    }
    Ok(Sock(fd))
}

fn ioctl_ifreq(s: &Sock, req: libc::c_ulong, r: &mut libc::ifreq, what: &str) -> Result<()> {
    // SAFETY: the request takes a struct ifreq.
    if unsafe { libc::ioctl(s.0, req as _, r as *mut libc::ifreq) } != 0 {
        return Err(crate::errno_str(what));
    }
    Ok(())
}

fn link_up(s: &Sock, name: &str) -> Result<()> {
    let mut r = ifreq(name);
    ioctl_ifreq(s, libc::SIOCGIFFLAGS, &mut r, &format!("SIOCGIFFLAGS {name}"))?;
    // SAFETY: the union member SIOCGIFFLAGS filled.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl_ifreq(s, libc::SIOCSIFFLAGS, &mut r, &format!("SIOCSIFFLAGS {name}"))
}

/// Interface names from `/sys/class/net`, sorted.
fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Brings `lo` up (apid is dialled on 127.0.0.1) and, when the command line has a static
/// `ip=`, configures that interface, the default route and the host name. Returns whether an
/// interface besides `lo` was configured.
pub fn configure(cmdline: &str) -> Result<bool> {
    let s = sock()?;
    let mut lo = ifreq("lo");
    lo.ifr_ifru.ifru_addr = sockaddr_in(Ipv4Addr::LOCALHOST);
    ioctl_ifreq(&s, libc::SIOCSIFADDR, &mut lo, "SIOCSIFADDR lo")?;
    link_up(&s, "lo")?;
    let Some(value) = cmdline.split_whitespace().rev().find_map(|a| a.strip_prefix("ip=")) else {
        say("network: no ip= on the command line; only lo is up");
        return Ok(false);
    };
    let Some(ip) = parse_ip(value) else {
        say(&format!("network: ip={value} is not a static IPv4 configuration; only lo is up"));
        return Ok(false);
    };
    // The NIC driver may still be probing: virtio_net (a module) within a second; a USB adapter
    // on the Raspberry Pi only after dwc2's deferred probe and the hub's enumeration, about 12 s
    // after init starts under QEMU's raspi3b.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dev = loop {
        let found = match &ip.device {
            Some(d) => interfaces().into_iter().find(|i| i == d),
            None => interfaces().into_iter().find(|i| i != "lo"),
        };
        if let Some(d) = found {
            break d;
        }
        if Instant::now() >= deadline {
            return Err(format!("network: no interface {} appeared", ip.device.as_deref().unwrap_or("(any)")));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut r = ifreq(&dev);
    r.ifr_ifru.ifru_addr = sockaddr_in(ip.client);
    ioctl_ifreq(&s, libc::SIOCSIFADDR, &mut r, &format!("SIOCSIFADDR {dev}"))?;
    let mut r = ifreq(&dev);
    r.ifr_ifru.ifru_netmask = sockaddr_in(ip.netmask);
    ioctl_ifreq(&s, libc::SIOCSIFNETMASK, &mut r, &format!("SIOCSIFNETMASK {dev}"))?;
    link_up(&s, &dev)?;
    if let Some(gw) = ip.gateway {
        let name = CString::new(dev.clone()).expect("no NUL");
        // SAFETY: plain data; rt_dev points at `name`, alive across the call.
        let mut rt: RtEntry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        rt.rt_dev = name.as_ptr() as *mut libc::c_char;
        // SAFETY: SIOCADDRT takes a struct rtentry.
        if unsafe { libc::ioctl(s.0, libc::SIOCADDRT as _, &mut rt as *mut RtEntry) } != 0 {
            return Err(crate::errno_str(&format!("SIOCADDRT default via {gw} dev {dev}")));
        }
    }
    if let Some(h) = &ip.hostname {
        // SAFETY: valid buffer and length.
        unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
    }
    let prefix = u32::from(ip.netmask).count_ones();
    let gw = ip.gateway.map(|g| format!(" gateway {g}")).unwrap_or_default();
    say(&format!("network: {dev} {}/{prefix}{gw} (from ip=)", ip.client));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_forms() {
        let ip = parse_ip("10.0.2.15::10.0.2.2:255.255.255.0:node-a:eth0:off:10.0.2.3").unwrap();
        assert_eq!(ip.client, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(ip.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(ip.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(ip.hostname.as_deref(), Some("node-a"));
        assert_eq!(ip.device.as_deref(), Some("eth0"));
        let ip = parse_ip("10.0.2.15::10.0.2.2:24").unwrap();
        assert_eq!(ip.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(ip.device, None);
        assert_eq!(parse_ip("dhcp"), None);
        assert_eq!(parse_ip("[2001:db8::5]::[2001:db8::1]:64"), None);
    }

    #[test]
    fn rtentry_layout_matches_linux() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }
}
