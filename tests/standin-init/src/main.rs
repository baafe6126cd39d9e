//! TEST PROGRAM — the `/init` of moonboot's stand-in Talos initramfs. **Not Talos.**
//!
//! `scripts/fixtures` builds a stand-in Talos v1.10.5 release out of Debian's cloud kernels so that
//! moonboot's tests can boot "Talos" under QEMU without access to ghcr.io. This program is the
//! `init` inside that stand-in `initramfs.xz`. It does the part of Talos's early init that matters
//! to moonboot, and nothing else:
//!
//! 1. mounts `/proc`, `/sys` and `/dev` (devtmpfs) and writes to `/dev/console`;
//! 2. prints `MOONBOOT-STANDIN-INIT: cmdline=<contents of /proc/cmdline>`;
//! 3. loads every kernel module shipped under `/lib/modules/<kver>/` (`finit_module(2)`), in the
//!    order of `/lib/modules/<kver>/modules.load` when that file exists, retrying until no more load;
//! 4. attaches `/rootfs.sqsh` to a loop device (set up here through `/dev/loop-control` ioctls) and
//!    mounts it (squashfs, read-only) at `/layers/root`;
//! 5. if `/extensions.yaml` exists, mounts each listed `<n>.sqsh` at `/layers/layerN` (N = position
//!    in the list, from 0) and mounts an overlay at `/root` with
//!    `lowerdir=/layers/layerN-1:…:/layers/layer0:/layers/root` (the last extension on top), as
//!    Talos does; without extensions `/layers/root` is bind-mounted at `/root`;
//! 6. prints one line per mounted layer, the root's `PRETTY_NAME` and the extension service specs it
//!    sees under `/root/usr/local/etc/containers/`;
//! 7. copies `/extensions.yaml` to `/etc/extensions.yaml` (Talos bind-mounts it there in the
//!    running system: `internal/app/init/main.go`, `constants.ExtensionsRuntimeConfigFile`) and
//!    the root's `/etc/os-release` to `/etc/os-release`, so extension service mounts find them;
//! 8. brings up `lo` and configures the static IPv4 `ip=` of the command line ([`net`]);
//! 9. reads an embedded machine configuration, when an extension put one at
//!    `/usr/local/etc/talos/config.yaml`, and masks its directory as Talos does
//!    ([`embedded_config`]);
//! 10. answers TLS on :50000 like apid in maintenance mode, or, with `standin.apid=configured` or
//!     an embedded configuration complete for boot, like a configured apid that requests a client
//!     certificate, and prints the served certificate's SPKI fingerprint ([`apid`]);
//!     With `standin.role=controlplane` trustd's :50001 accepts connections, and with
//!     `standin.etcd=running` also etcd's :2379, as on a bootstrapped node ([`controlplane`]);
//! 11. starts the extension services of `/root/usr/local/etc/containers/*.yaml` that Talos would
//!     start in maintenance mode, chrooted into their roots, output on the console as
//!     `ext-<name>: …`, restarted as their spec says ([`services`]);
//! 12. prints `MOONBOOT-STANDIN-INIT: ready`;
//! 13. powers off (`reboot(RB_POWER_OFF)`), unless `standin.hold` is on the kernel command line,
//!     in which case it sleeps forever (reaping children).
//!
//! On any failure it prints `MOONBOOT-STANDIN-INIT: error: …` and powers off the same way, so a
//! test sees the failure at once instead of waiting for its deadline. Every line it prints starts
//! with `MOONBOOT-STANDIN-INIT:`, which marks it as this test program's output, except the output
//! of extension services, which starts with `ext-<name>: `.
//!
//! # Deviation from Talos: kernel modules
//! Talos builds squashfs, overlayfs, loop and virtio into its kernel. Debian's cloud kernels, which
//! the fixtures use instead, build them as modules (`=m` in `/boot/config-*`), so the stand-in
//! initramfs carries those `.ko` files under `/lib/modules/<kver>/` and this init loads them
//! first. A real Talos initramfs has no `/lib/modules` of this kind.
//!
//! Not done: `switch_root` (the initramfs root stays the host root), DHCP, IPv6, service
//! namespaces beyond chroot + mounts.

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod apid;
mod controlplane;
mod embedded_config;
mod net;
mod services;

/// Prefix of every line this program prints.
const MARK: &str = "MOONBOOT-STANDIN-INIT:";

/// Where the output goes: `/dev/console` once devtmpfs is mounted, else inherited stdout.
static CONSOLE: OnceLock<File> = OnceLock::new();

/// Prints one marker line with a single `write(2)`, so kernel messages are unlikely to split it.
fn say(msg: &str) {
    console_line(&format!("{MARK} {msg}"));
}

/// Prints one line as it is (extension service output), with a single `write(2)`.
fn console_line(text: &str) {
    let line = format!("{text}\n");
    match CONSOLE.get() {
        Some(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = io::stdout().write_all(line.as_bytes());
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in path")
}

fn errno_str(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    // A bind mount of a file needs an existing file as its target: create directories only
    // where nothing exists.
    if !Path::new(target).exists() {
        fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    }
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    let data_ptr = if data.is_empty() { std::ptr::null() } else { d.as_ptr().cast() };
    // SAFETY: all pointers are valid NUL-terminated strings (or null for no data).
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, data_ptr) };
    if rc != 0 {
        return Err(errno_str(&format!("mount -t {fstype} {src} {target} ({data})")));
    }
    Ok(())
}

/// Mounts the pseudo filesystems and points stdin/stdout/stderr at `/dev/console`.
fn early_mounts() -> Result<()> {
    mount("proc", "/proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "")?;
    mount("sysfs", "/sys", "sysfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "")?;
    // devtmpfs may already be mounted (CONFIG_DEVTMPFS_MOUNT does not apply to initramfs, but be
    // tolerant); EBUSY is fine.
    if let Err(e) = mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755") {
        if !Path::new("/dev/console").exists() {
            return Err(e);
        }
    }
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
        .map_err(|e| format!("open /dev/console: {e}"))?;
    for fd in 0..3 {
        // SAFETY: dup2 on valid descriptors.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
    let _ = CONSOLE.set(console);
    Ok(())
}

/// The kernel release (`uname -r`).
fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: uname NUL-terminates release.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

fn collect_ko(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_ko(&p, out);
        } else if p.extension().is_some_and(|x| x == "ko") {
            out.push(p);
        }
    }
}

fn module_name(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn finit_module(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    let params = c"";
    // SAFETY: finit_module(fd, param_values, flags) with a valid fd and NUL-terminated string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Loads the modules under `/lib/modules/<kver>/`; returns how many loaded.
fn load_modules() -> Result<usize> {
    let release = kernel_release();
    let mut base = PathBuf::from("/lib/modules").join(&release);
    if !base.is_dir() {
        // Fall back to the only directory there, if any (the fixture ships exactly one).
        let dirs: Vec<PathBuf> = fs::read_dir("/lib/modules")
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        match dirs.as_slice() {
            [] => {
                say("no /lib/modules: loading no kernel modules");
                return Ok(0);
            }
            [one] => {
                say(&format!("warning: running kernel {release} but modules are for {}", one.display()));
                base = one.clone();
            }
            _ => return Err(format!("no /lib/modules/{release} and several other module trees")),
        }
    }
    let mut pending: Vec<PathBuf> = Vec::new();
    if let Ok(list) = fs::read_to_string(base.join("modules.load")) {
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            pending.push(base.join(line));
        }
    } else {
        collect_ko(&base, &mut pending);
    }
    // Load in order; a module whose dependencies are not loaded yet fails (ENOENT/EINVAL for
    // unknown symbols) and is retried after the others, until a pass loads nothing more.
    let mut loaded = 0;
    loop {
        let mut failed = Vec::new();
        let mut progress = false;
        for p in pending {
            match finit_module(&p) {
                Ok(()) => {
                    say(&format!("module {} loaded", module_name(&p)));
                    loaded += 1;
                    progress = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    progress = true;
                }
                Err(e) => failed.push((p, e)),
            }
        }
        if failed.is_empty() {
            return Ok(loaded);
        }
        if !progress {
            let list: Vec<String> = failed.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
            return Err(format!("kernel modules did not load: {}", list.join("; ")));
        }
        pending = failed.into_iter().map(|(p, _)| p).collect();
    }
}

// Loop device ioctls and structures (linux/loop.h).
const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CONFIGURE: u64 = 0x4C0A;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u32 = 7;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn ioctl(fd: i32, req: u64, arg: usize) -> i32 {
    // SAFETY: callers pass a request and an argument of the kind that request expects.
    unsafe { libc::ioctl(fd, req as _, arg) }
}

/// Attaches `file` read-only to a free loop device; returns the device path and an open
/// descriptor of it. Keep that descriptor open until the device is mounted: with
/// `LO_FLAGS_AUTOCLEAR` the kernel detaches the file when the last opener closes the device.
fn attach_loop(file: &str) -> Result<(String, File)> {
    let ctl = File::open("/dev/loop-control").map_err(|e| format!("open /dev/loop-control: {e}"))?;
    let n = ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE, 0);
    if n < 0 {
        return Err(errno_str("LOOP_CTL_GET_FREE"));
    }
    let dev = format!("/dev/loop{n}");
    if !Path::new(&dev).exists() {
        let c = cstr(&dev);
        // SAFETY: valid path; makedev of the loop major and the minor the kernel handed out.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(LOOP_MAJOR, n as u32)) };
        if rc != 0 {
            return Err(errno_str(&format!("mknod {dev}")));
        }
    }
    let backing = File::open(file).map_err(|e| format!("open {file}: {e}"))?;
    let loopdev = OpenOptions::new().read(true).open(&dev).map_err(|e| format!("open {dev}: {e}"))?;
    // SAFETY: zeroed plain-data structure.
    let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
    cfg.fd = backing.as_raw_fd() as u32;
    cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    let name = file.as_bytes();
    let len = name.len().min(63);
    cfg.info.lo_file_name[..len].copy_from_slice(&name[..len]);
    if ioctl(loopdev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig as usize) != 0 {
        // Kernels before 5.8 have no LOOP_CONFIGURE: fall back to LOOP_SET_FD (a read-only
        // backing descriptor makes a read-only loop device).
        if ioctl(loopdev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd() as usize) != 0 {
            return Err(errno_str(&format!("attaching {file} to {dev}")));
        }
    }
    // The loop device holds its own reference to the backing file; with AUTOCLEAR it is
    // detached again once it is unmounted (and no descriptor is open).
    Ok((dev, loopdev))
}

fn mount_squashfs(image: &str, target: &str) -> Result<String> {
    let (dev, _held_open_until_mounted) = attach_loop(image)?;
    mount(&dev, target, "squashfs", libc::MS_RDONLY, "")?;
    Ok(dev)
}

/// The `image:` values of `/extensions.yaml`, in order. A minimal reader of the one shape Talos
/// writes (`layers: [{image: "<n>.sqsh", metadata: {…}}]`): it does not parse YAML in general.
fn extension_images(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix("image:")
        })
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn os_release_pretty_name(root: &str) -> Option<String> {
    let text = fs::read_to_string(format!("{root}/etc/os-release")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
}

fn mount_layers() -> Result<()> {
    let dev = mount_squashfs("/rootfs.sqsh", "/layers/root")?;
    say(&format!("layer root mounted: /rootfs.sqsh on /layers/root ({dev}, squashfs)"));
    let mut lower = vec!["/layers/root".to_string()];
    if let Ok(yaml) = fs::read_to_string("/extensions.yaml") {
        let images = extension_images(&yaml);
        for (i, image) in images.iter().enumerate() {
            let src = format!("/{}", image.trim_start_matches('/'));
            let target = format!("/layers/layer{i}");
            let dev = mount_squashfs(&src, &target)?;
            say(&format!("layer layer{i} mounted: {src} on {target} ({dev}, squashfs)"));
            lower.insert(0, target);
        }
    }
    if lower.len() == 1 {
        mount("/layers/root", "/root", "", libc::MS_BIND, "")?;
        say("root: /layers/root bind-mounted on /root (no extensions)");
    } else {
        let opts = format!("lowerdir={}", lower.join(":"));
        mount("overlay", "/root", "overlay", libc::MS_RDONLY, &opts)?;
        say(&format!("root: overlay on /root {opts}"));
    }
    if let Some(name) = os_release_pretty_name("/root") {
        say(&format!("root os-release PRETTY_NAME={name}"));
    }
    if let Ok(rd) = fs::read_dir("/root/usr/local/etc/containers") {
        let mut specs: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        specs.sort();
        for s in specs {
            say(&format!("extension service spec /usr/local/etc/containers/{s}"));
        }
    }
    Ok(())
}

/// Puts the files Talos's running system has at these paths into the stand-in's host root (the
/// initramfs root, which stays `/`).
fn talos_runtime_files() -> Result<()> {
    fs::create_dir_all("/etc").map_err(|e| format!("mkdir /etc: {e}"))?;
    if Path::new("/extensions.yaml").exists() {
        fs::copy("/extensions.yaml", "/etc/extensions.yaml").map_err(|e| format!("copy /extensions.yaml: {e}"))?;
        say("copied /extensions.yaml to /etc/extensions.yaml (Talos bind-mounts it there)");
    }
    if Path::new("/root/etc/os-release").exists() {
        fs::copy("/root/etc/os-release", "/etc/os-release").map_err(|e| format!("copy os-release: {e}"))?;
    }
    Ok(())
}

fn run() -> Result<()> {
    early_mounts()?;
    say("TEST PROGRAM (moonboot stand-in init, not Talos) started");
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("read /proc/cmdline: {e}"))?;
    say(&format!("cmdline={}", cmdline.trim_end_matches('\n')));
    let n = load_modules()?;
    say(&format!("{n} kernel modules loaded"));
    mount_layers()?;
    mount("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=0755")?;
    talos_runtime_files()?;
    let network_up = net::configure(&cmdline)?;
    embedded_config::acquire()?;
    apid::start(&cmdline)?;
    controlplane::start(&cmdline)?;
    services::start_all(Path::new("/root"), network_up);
    Ok(())
}

fn hold_requested(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|a| a == "standin.hold" || a.strip_prefix("standin.hold=").is_some_and(|v| v != "0"))
}

fn power_off() -> ! {
    say("powering off");
    // SAFETY: plain syscalls.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on error; PID 1 must not exit.
    hold()
}

/// Reaps orphans forever, leaving the children of the service supervisors to them.
fn hold() -> ! {
    loop {
        loop {
            // SAFETY: waitid with WNOWAIT only peeks at a waitable child.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
            // SAFETY: si_pid is valid for SIGCHLD-style siginfo filled by waitid.
            let pid = unsafe { info.si_pid() };
            if rc != 0 || pid == 0 {
                break;
            }
            let supervised = services::SUPERVISED.lock().map(|s| s.as_ref().is_some_and(|s| s.contains(&pid)));
            if supervised.unwrap_or(true) {
                break;
            }
            let mut status = 0;
            // SAFETY: reaps that one orphan.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn main() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        eprintln!("{MARK} TEST PROGRAM: the stand-in init must run as PID 1 of a test VM; refusing");
        std::process::exit(2);
    }
    let result = run();
    // Read here, not from run(): on the error path run() may not have got that far.
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match result {
        Ok(_) => say("ready"),
        Err(e) => say(&format!("error: {e}")),
    }
    if hold_requested(&cmdline) {
        say("holding (standin.hold on the command line)");
        hold();
    }
    power_off();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_images_reads_talos_shape() {
        let yaml = "layers:\n    - image: 0.sqsh\n      metadata:\n        name: spin\n        version: v0.19.0\n    - image: \"1.sqsh\"\n      metadata:\n        name: tailscale\n";
        assert_eq!(extension_images(yaml), vec!["0.sqsh", "1.sqsh"]);
        assert!(extension_images("layers: []\n").is_empty());
    }

    #[test]
    fn hold_flag() {
        assert!(hold_requested("console=ttyS0 standin.hold"));
        assert!(hold_requested("standin.hold=1 quiet"));
        assert!(!hold_requested("standin.hold=0"));
        assert!(!hold_requested("standin.holdx"));
    }

    #[test]
    fn loop_config_layout_matches_linux() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
