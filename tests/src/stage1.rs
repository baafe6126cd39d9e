//! The first stage of the kexec end-to-end tests: a static `talos-agent` for the guest's
//! architecture and a small initramfs (busybox, virtio-net modules, an `/init` script) that
//! brings up the network under QEMU and runs it. The second stage is the stand-in Talos release
//! that `talos-agent boot` fetches from the fixture registry and kexecs into.
//!
//! Everything here is TEST tooling: the initramfs is not shipped.

use crate::fixtures::ArchFixtures;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `scripts/test` built every binary before the tests (`MOONBOOT_PREBUILT=1`): tests
/// then use them as they are and run no cargo of their own.
pub fn prebuilt() -> bool {
    std::env::var_os("MOONBOOT_PREBUILT").is_some_and(|v| v == "1")
}

/// Builds the static release `talos-agent` for `arch` (`arm64`, `amd64`) with Debian's toolchain
/// into `target/cross/` — the imager's own builder of the talos-agent extension
/// (`moonboot_imager::build::agent_extension::compile`), so tests boot exactly what the imager
/// packs — and checks that it is a static ELF for `arch`. Returns the binary's path. With
/// [`prebuilt`], nothing is compiled: the binary `ci/publish.sh agents` wrote is used.
///
/// # Errors
/// When the build fails, the prebuilt binary is missing, or the result is not a static
/// executable for `arch`.
pub fn build_static_agent(arch: &str) -> Result<PathBuf> {
    use moonboot_imager::build::agent_extension;
    let bin = if prebuilt() {
        let bin = agent_extension::compiled_path(arch)?;
        if !bin.is_file() {
            bail!("MOONBOOT_PREBUILT=1 but {} is missing (scripts/test builds it first)", bin.display());
        }
        bin
    } else {
        agent_extension::compile(arch)?
    };
    let elf = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    agent_extension::check_binary(&elf, arch, &bin.display().to_string())?;
    Ok(bin)
}

/// What goes into a stage-1 initramfs besides busybox and the modules.
pub struct Stage1<'a> {
    /// The fixtures of the guest's architecture (busybox, modules, kernel release).
    pub arch: &'a ArchFixtures,
    /// The `/init` script body run by busybox `sh` after the common set-up (mounts, modules,
    /// `eth0` by DHCP); it runs with `set -x` off and should end by powering off on failure.
    pub script: &'a str,
    /// Extra files: (path in the initramfs, file on the host); made executable when `exec`.
    pub files: Vec<(String, PathBuf, bool)>,
}

/// The udhcpc script: configures the leased address, default route and resolv.conf (busybox's
/// udhcpc exports `interface`, `ip`, `mask` (prefix length), `router`, `dns`).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
"#;

fn init_script(modules: &[String], body: &str) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         # moonboot kexec end-to-end test, stage 1 (TEST PROGRAM)\n\
         /bin/busybox mkdir -p /proc /sys /dev /tmp /etc /sbin /usr/bin /usr/sbin /run\n\
         /bin/busybox --install -s\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t securityfs securityfs /sys/kernel/security 2>/dev/null\n\
         fail() { echo \"STAGE1: error: $*\"; poweroff -f; }\n\
         echo \"STAGE1: up, kernel $(uname -r)\"\n",
    );
    for m in modules {
        s.push_str(&format!("insmod /lib/modules/{m} || fail \"insmod {m}\"\n"));
    }
    s.push_str(
        "hostname stage1\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done\n\
         ip link set lo up\n\
         ip link set eth0 up || fail 'no eth0'\n\
         udhcpc -i eth0 -n -q -t 10 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1 || fail 'udhcpc'\n\
         echo \"STAGE1: network $(ip -4 -o addr show dev eth0 | awk '{print $4}') via $(ip route | awk '/default/ {print $3}')\"\n",
    );
    s.push_str(body);
    s.push('\n');
    s
}

/// Writes the stage-1 initramfs (an uncompressed newc cpio) for `spec` under `work`; returns
/// its path.
///
/// Layout: `/bin/busybox`, `/init` (the common set-up, then `spec.script`), `/etc/udhcpc.script`,
/// `/lib/modules/<rel>` for every module of `arch.initramfs_modules` (loaded in that order),
/// and `spec.files`.
///
/// # Errors
/// When a file cannot be copied or `cpio` fails.
pub fn build(spec: &Stage1<'_>, work: &Path) -> Result<PathBuf> {
    let stage = work.join("stage1");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(stage.join("bin"))?;
    let put = |rel: &str, src: &Path, exec: bool| -> Result<()> {
        let dst = stage.join(rel.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().expect("has a parent"))?;
        fs::copy(src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }))?;
        Ok(())
    };
    let write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        let dst = stage.join(rel.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().expect("has a parent"))?;
        fs::write(&dst, text)?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("bin/busybox", &spec.arch.busybox, true)?;
    for m in &spec.arch.initramfs_modules {
        put(&format!("lib/modules/{m}"), &spec.arch.modules_dir.join(m), false)?;
    }
    // Like the Ubuntu instance it stands for, the first stage has the system's CA certificates
    // (the agent's HTTPS client refuses to start without any).
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.exists() {
        put("etc/ssl/certs/ca-certificates.crt", bundle, false)?;
    }
    for (rel, src, exec) in &spec.files {
        put(rel, src, *exec)?;
    }
    write("etc/udhcpc.script", UDHCPC_SCRIPT, 0o755)?;
    write("init", &init_script(&spec.arch.initramfs_modules, spec.script), 0o755)?;

    let mut list = Vec::new();
    collect(&stage, &stage, &mut list)?;
    list.sort();
    let out = work.join("stage1.cpio");
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(File::create(&out)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cpio (run scripts/setup)")?;
    child.stdin.take().expect("piped").write_all((list.join("\n") + "\n").as_bytes())?;
    let res = child.wait_with_output()?;
    if !res.status.success() {
        bail!("cpio failed: {}", String::from_utf8_lossy(&res.stderr).trim());
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        out.push(p.strip_prefix(root).expect("under root").to_string_lossy().into_owned());
        if p.is_dir() {
            collect(root, &p, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_loads_modules_in_order() {
        let s = init_script(&["a.ko".into(), "b/c.ko".into()], "echo hi");
        let a = s.find("insmod /lib/modules/a.ko").unwrap();
        let c = s.find("insmod /lib/modules/b/c.ko").unwrap();
        assert!(a < c && c < s.find("udhcpc").unwrap());
        assert!(s.ends_with("echo hi\n"));
    }
}
