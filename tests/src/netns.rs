//! Network namespaces with no route out, for tests that must use real addresses.
//!
//! The EC2 end-to-end test lets a guest reach the instance metadata service at 169.254.169.254 and
//! the bastion's registry cache at 10.20.13.140, the addresses the user-data names. Those must never
//! be reached on the machine's own network, so they exist only on the `lo` of a namespace the test
//! creates, and everything that uses them (QEMU, whose user-mode networking turns the guest's
//! connections into the namespace's own; the registry; the metadata server; `talos-agent wait`)
//! runs inside it. [`Netns::create`] checks, before it returns, that the namespace has no interface
//! but `lo` and no route that is not on `lo`, and refuses otherwise.
//!
//! The netboot tests build a boot network in such a namespace: a bridge with the bastion's address,
//! tap devices QEMU machines attach to (`-netdev tap`), and, for proxy DHCP, a veth pair whose two
//! ends both stay in the namespace ([`Netns::add_bridge`], [`Netns::add_tap`], [`Netns::add_veth`]).
//! Every frame on it goes between processes of this machine; [`Netns::check_isolated`] allows those
//! kinds of interface and no other, and no route through a gateway.
//!
//! Needs root and iproute2 (`ip netns`). TEST TOOLING, not shipped.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    /// Creates `moonboot-<tag>-<pid>-<n>` (`<n>` counts the namespaces this process created, so no
    /// two live namespaces of one process share a name), brings `lo` up, puts each of `addresses`
    /// on it as a /32, and checks it is isolated ([`Netns::check_isolated`]); the namespace is
    /// deleted again when any step fails. The name is a file under `/run/netns`, not an interface
    /// name, so IFNAMSIZ does not bound it.
    ///
    /// # Errors
    /// Not root, no iproute2, or the namespace is not isolated.
    pub fn create(tag: &str, addresses: &[Ipv4Addr]) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let name = format!("moonboot-{tag}-{}-{}", std::process::id(), CREATED.fetch_add(1, Ordering::Relaxed));
        // A namespace left by a killed earlier process with this same id would be reused: start
        // afresh.
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name]).context("creating a network namespace (needs root)")?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        for a in addresses {
            ip(&["-n", &ns.name, "addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        ns.check_isolated()?;
        Ok(ns)
    }

    /// The namespace's name (`ip netns exec <name> …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that nothing sent in the namespace can leave the machine: every interface is `lo`, a
    /// bridge, a tap device (its other end is a file descriptor of a process here, such as QEMU) or
    /// a veth whose peer is in this namespace too; and no route, in any table or address family,
    /// is a default route or goes through a gateway.
    ///
    /// # Errors
    /// Names the interface or route that breaks the rule.
    pub fn check_isolated(&self) -> Result<()> {
        let links: serde_json::Value = serde_json::from_str(&ip(&["-n", &self.name, "-d", "-j", "link", "show"])?)
            .context("parsing `ip -j link show`")?;
        for link in links.as_array().context("`ip -j link show` is not a list")? {
            let ifname = link["ifname"].as_str().unwrap_or_default();
            let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or_default();
            let local = match kind {
                "" => ifname == "lo",
                "bridge" | "tun" => true,
                "veth" => link.get("link_netnsid").is_none(),
                _ => false,
            };
            if !local {
                bail!(
                    "network namespace {} has interface {ifname:?} (kind {kind:?}) that may lead out of the machine: refusing to run",
                    self.name
                );
            }
        }
        for family in ["-4", "-6"] {
            let routes: serde_json::Value =
                serde_json::from_str(&ip(&["-n", &self.name, "-j", family, "route", "show", "table", "all"])?)
                    .context("parsing `ip -j route show`")?;
            for route in routes.as_array().context("`ip -j route show` is not a list")? {
                if route["dst"] == "default" || route.get("gateway").is_some() || route.get("nexthops").is_some() {
                    bail!("network namespace {} has a route out ({route}): refusing to run", self.name);
                }
            }
        }
        Ok(())
    }

    /// Adds the bridge `bridge` with the address `cidr` (`10.20.13.140/24`) and brings it up.
    ///
    /// # Errors
    /// iproute2 failing, or the namespace no longer isolated.
    pub fn add_bridge(&self, bridge: &str, cidr: &str) -> Result<()> {
        ip(&["-n", &self.name, "link", "add", bridge, "type", "bridge"])?;
        ip(&["-n", &self.name, "addr", "add", cidr, "dev", bridge])?;
        ip(&["-n", &self.name, "link", "set", bridge, "up"])?;
        self.check_isolated()
    }

    /// Adds the persistent tap device `tap` as a port of `bridge`, up; QEMU started in the
    /// namespace attaches to it with `-netdev tap,ifname=TAP,script=no,downscript=no`.
    ///
    /// # Errors
    /// iproute2 failing, or the namespace no longer isolated.
    pub fn add_tap(&self, tap: &str, bridge: &str) -> Result<()> {
        ip(&["-n", &self.name, "tuntap", "add", "dev", tap, "mode", "tap"])?;
        ip(&["-n", &self.name, "link", "set", tap, "master", bridge])?;
        ip(&["-n", &self.name, "link", "set", tap, "up"])?;
        self.check_isolated()
    }

    /// Adds the veth pair `port`–`end`: `port` joins `bridge`, `end` gets the address `cidr`, both
    /// up. A second host on the boot network for a process bound to `end` (another DHCP server).
    ///
    /// # Errors
    /// iproute2 failing, or the namespace no longer isolated.
    pub fn add_veth(&self, port: &str, end: &str, bridge: &str, cidr: &str) -> Result<()> {
        ip(&["-n", &self.name, "link", "add", port, "type", "veth", "peer", "name", end])?;
        ip(&["-n", &self.name, "link", "set", port, "master", bridge])?;
        ip(&["-n", &self.name, "addr", "add", cidr, "dev", end])?;
        ip(&["-n", &self.name, "link", "set", port, "up"])?;
        ip(&["-n", &self.name, "link", "set", end, "up"])?;
        self.check_isolated()
    }

    /// `ip netns exec <name> <program>`: a command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered the namespace (`setns(2)` changes only the calling
    /// thread's namespace), and returns its result: sockets it creates belong to the namespace and
    /// stay there wherever they are used afterwards.
    ///
    /// # Errors
    /// Opening `/run/netns/<name>` or `setns` failing; `f`'s own error.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || -> Result<T> {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {path}"))?;
            // Checked, not assumed: this thread's namespace is the file's.
            let mine = std::fs::metadata("/proc/thread-self/ns/net")?;
            let theirs = file.metadata()?;
            use std::os::unix::fs::MetadataExt;
            if (mine.dev(), mine.ino()) != (theirs.dev(), theirs.ino()) {
                bail!("setns into {path} did not take effect");
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
    }

    /// A TCP listener on `addr` inside the namespace.
    ///
    /// # Errors
    /// See [`Netns::run_in`]; binding failing.
    pub fn bind(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.run_in(move || TcpListener::bind(addr).with_context(|| format!("binding {addr} in the namespace")))
    }

    /// A TCP connection to `addr` made inside the namespace.
    ///
    /// # Errors
    /// See [`Netns::run_in`]; connecting failing.
    pub fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        self.run_in(move || {
            TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                .with_context(|| format!("connecting to {addr} in the namespace"))
        })
    }

    /// Waits until something accepts TCP connections on `addr` inside the namespace.
    ///
    /// # Errors
    /// Nothing listens within `timeout`.
    pub fn wait_listening(&self, addr: SocketAddr, timeout: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.connect(addr) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(e.context(format!("{addr} never listened")))
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }
}

/// Forwards every connection accepted on `listener` (typically bound inside a namespace with
/// [`Netns::bind`]) to `upstream`, connected from the calling thread's namespace (typically the
/// host's loopback): one process on the host serves instances in several namespaces. Runs until
/// the process exits.
pub fn forward(listener: TcpListener, upstream: SocketAddr) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(up) = TcpStream::connect(upstream) else { return };
                let (Ok(mut c2), Ok(mut u2)) = (conn.try_clone(), up.try_clone()) else { return };
                let (mut c, mut u) = (conn, up);
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut u, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root() && crate::qemu::have("ip")
    }

    #[test]
    fn addresses_exist_only_inside_and_nothing_routes_out() {
        if !root() {
            crate::fixtures::skip("netns::addresses_exist_only_inside…", "needs root and iproute2");
            return;
        }
        let addr: Ipv4Addr = "10.20.13.140".parse().unwrap();
        let ns = Netns::create("unit", &[addr]).unwrap();
        ns.check_isolated().unwrap();
        let listener = ns.bind(SocketAddr::from((addr, 0))).unwrap();
        let port = listener.local_addr().unwrap().port();
        // Reachable inside…
        ns.connect(SocketAddr::from((addr, port))).unwrap();
        // …and a command started in it sees the address on lo and no default route.
        let out = ns.command("ip").args(["-4", "-o", "addr", "show", "dev", "lo"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("10.20.13.140/32"));
        // A default route is noticed, even one on lo.
        ip(&["-n", ns.name(), "route", "add", "default", "dev", "lo"]).unwrap();
        let err = ns.check_isolated().unwrap_err().to_string();
        assert!(err.contains("route out"), "{err}");
        let name = ns.name().to_string();
        drop(ns);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }

    #[test]
    fn a_boot_network_stays_inside_and_a_way_out_is_noticed() {
        if !root() {
            crate::fixtures::skip("netns::a_boot_network_stays_inside…", "needs root and iproute2");
            return;
        }
        let ns = Netns::create("unit-lan", &[]).unwrap();
        ns.add_bridge("br0", "10.20.13.140/24").unwrap();
        ns.add_tap("tap0", "br0").unwrap();
        ns.add_veth("vpc0", "vpc1", "br0", "10.20.13.1/24").unwrap();
        ns.check_isolated().unwrap();
        // A default route through the bridge is a way out.
        ip(&["-n", ns.name(), "route", "add", "default", "via", "10.20.13.1", "dev", "br0"]).unwrap();
        let err = ns.check_isolated().unwrap_err().to_string();
        assert!(err.contains("route out"), "{err}");
        ip(&["-n", ns.name(), "route", "del", "default"]).unwrap();
        ns.check_isolated().unwrap();
        // A veth whose peer lives in another namespace is a way out.
        let other = Netns::create("unit-lan-peer", &[]).unwrap();
        ip(&["-n", ns.name(), "link", "add", "out0", "type", "veth", "peer", "name", "out1", "netns", other.name()])
            .unwrap();
        let err = ns.check_isolated().unwrap_err().to_string();
        assert!(err.contains("out0"), "{err}");
    }
}
