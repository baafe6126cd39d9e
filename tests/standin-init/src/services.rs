//! TEST PROGRAM — starts the extension services found under `/usr/local/etc/containers/*.yaml`
//! of the mounted root, the part of Talos's `ExtensionServiceController` and `services.Extension`
//! (`internal/app/machined/pkg/controllers/runtime/extension_service.go`,
//! `internal/app/machined/pkg/system/services/extension.go`) that moonboot's tests need:
//!
//! - the spec (`pkg/machinery/extensions/services/services.go`): `name`, `depends`,
//!   `container.{entrypoint, args, environment, mounts}`, `restart`
//!   (`always` | `never` | `untilSuccess`), `logToConsole`;
//! - in maintenance mode a service that depends on `configuration` (an ExtensionServiceConfig)
//!   or on another service (e.g. `cri`, which Talos starts only once configured) never starts:
//!   the stand-in says so and skips it. `network` is satisfied once `ip=` is configured; `path`
//!   when the file exists; `time` is treated as satisfied (no time sync here);
//! - the service's root is `/usr/local/lib/containers/<name>`, made writable with an overlay
//!   (Talos's `PreFunc` does the same "to allow containerd to mount there /dev, /proc"), then
//!   `/proc` (proc), `/sys` (sysfs, read-only) and a private `/dev` as containerd's default spec
//!   gives every container (containerd v2.0.5 `pkg/oci/mounts.go` `defaultMounts`: a tmpfs, which
//!   runc fills with null, zero, full, random, urandom and tty; here bound from the host's nodes),
//!   then the spec's `mounts` (bind mounts; `ro` honoured; a bind of the host's `/dev` replaces
//!   the private one), then `chroot`;
//!   the network namespace is the host's (Talos: `WithHostNamespace(network)`);
//! - `environment` plus `PATH`; output goes to the console as `ext-<name>: <line>`; exits are
//!   restarted after 5 s as `restart:` says (Talos `restart.New`, `RestartInterval` 5 s).
//!
//! Mount sources are host paths. The stand-in never switches root: its host root is the
//! initramfs root, into which `main` copies the files Talos's running system has
//! (`/etc/extensions.yaml`, `/etc/os-release`).
//!
//! Not done: namespaces other than the mount points above, cgroups, capabilities, OOM score,
//! `environmentFile`, ExtensionServiceConfig files.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::{mount, say, Result};

/// Where the service specs are, under the root.
pub const SPECS: &str = "usr/local/etc/containers";
/// Where the service root filesystems are, under the root (`constants.ExtensionServiceRootfsPath`).
pub const ROOTFS: &str = "usr/local/lib/containers";
/// Restart interval (Talos `restart.New` default).
const RESTART_INTERVAL: Duration = Duration::from_secs(5);

/// Children started by the supervisors: PID 1's reaper leaves these to them.
pub static SUPERVISED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// One extension service spec (`logToConsole` is not read: the stand-in always logs to the console).
#[derive(Debug, Deserialize)]
pub struct Spec {
    /// Service name; the service is `ext-<name>`.
    pub name: String,
    /// Dependencies.
    #[serde(default)]
    pub depends: Vec<Dependency>,
    /// The container.
    pub container: Container,
    /// `always`, `never`, `untilSuccess`.
    #[serde(default)]
    pub restart: String,
}

/// One `depends:` entry; exactly one field is set (`time:` is not read: treated as satisfied).
#[derive(Debug, Deserialize, Default)]
pub struct Dependency {
    /// Another service.
    pub service: Option<String>,
    /// A file that must exist.
    pub path: Option<String>,
    /// Network statuses (`addresses`, `connectivity`, `hostname`, `etcfiles`).
    pub network: Option<Vec<String>>,
    /// An ExtensionServiceConfig for this service.
    pub configuration: Option<bool>,
}

/// `container:`.
#[derive(Debug, Deserialize)]
pub struct Container {
    /// Absolute path inside the service root.
    pub entrypoint: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub environment: Vec<String>,
    /// OCI runtime-spec mounts.
    #[serde(default)]
    pub mounts: Vec<SpecMount>,
}

/// An OCI runtime-spec mount (`source`, `destination`, `type`, `options`).
#[derive(Debug, Deserialize)]
pub struct SpecMount {
    /// Host path.
    #[serde(default)]
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// `bind` (the only kind the stand-in handles).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `bind`, `rbind`, `ro`, …
    #[serde(default)]
    pub options: Vec<String>,
}

/// Why a spec is not started in maintenance mode, if it is not.
pub fn blocked_in_maintenance(spec: &Spec, network_up: bool) -> Option<String> {
    for d in &spec.depends {
        if d.configuration == Some(true) {
            return Some(
                "waits for its ExtensionServiceConfig (depends: configuration), never present in maintenance mode"
                    .into(),
            );
        }
        if let Some(s) = &d.service {
            return Some(format!("waits for service {s}, which Talos starts only once configured"));
        }
        if let Some(p) = &d.path {
            if !Path::new(p).exists() {
                return Some(format!("waits for path {p}, which does not exist"));
            }
        }
        if d.network.is_some() && !network_up {
            return Some("waits for network, not configured (no ip= on the command line)".into());
        }
    }
    None
}

/// Reads every spec under `<root>/usr/local/etc/containers/` and starts the runnable ones.
pub fn start_all(root: &Path, network_up: bool) {
    let dir = root.join(SPECS);
    let Ok(rd) = fs::read_dir(&dir) else { return };
    let mut files: Vec<PathBuf> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
    files.sort();
    for file in files {
        let spec: Spec = match fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_saphyr::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                say(&format!("service spec {}: {e}", file.display()));
                continue;
            }
        };
        if let Some(why) = blocked_in_maintenance(&spec, network_up) {
            say(&format!("ext-{}: skipped: {why}", spec.name));
            continue;
        }
        match prepare(root, &spec) {
            Ok(rootfs) => {
                say(&format!(
                    "ext-{}: starting {} {:?} in {}",
                    spec.name,
                    spec.container.entrypoint,
                    spec.container.args,
                    rootfs.display()
                ));
                std::thread::spawn(move || supervise(spec, rootfs));
            }
            Err(e) => say(&format!("ext-{}: not started: {e}", spec.name)),
        }
    }
}

fn has(opts: &[String], o: &str) -> bool {
    opts.iter().any(|x| x == o)
}

/// Makes the service root writable (overlay on tmpfs) and mounts `/proc`, `/sys`, a private
/// `/dev` and the spec's mounts into it; returns its path.
fn prepare(root: &Path, spec: &Spec) -> Result<PathBuf> {
    let lower = root.join(ROOTFS).join(&spec.name);
    if !lower.is_dir() {
        return Err(format!("{} does not exist", lower.display()));
    }
    let state = PathBuf::from("/run/standin/services").join(&spec.name);
    let (upper, work, merged) =
        (state.join("upper"), state.join("work"), PathBuf::from("/run/containers").join(&spec.name));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    mount("overlay", &merged.to_string_lossy(), "overlay", 0, &opts)?;
    let m = |p: &str| merged.join(p.trim_start_matches('/')).to_string_lossy().into_owned();
    mount("proc", &m("proc"), "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "")?;
    mount("sysfs", &m("sys"), "sysfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY, "")?;
    mount("tmpfs", &m("dev"), "tmpfs", libc::MS_NOSUID | libc::MS_NOEXEC, "mode=755,size=64k")?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = merged.join("dev").join(node);
        fs::write(&target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
        mount(&format!("/dev/{node}"), &target.to_string_lossy(), "", libc::MS_BIND, "")?;
    }
    for sm in &spec.container.mounts {
        let bind = sm.kind.is_empty() || sm.kind == "bind" || has(&sm.options, "bind") || has(&sm.options, "rbind");
        if !bind {
            say(&format!(
                "ext-{}: mount {} of type {:?} not supported by the stand-in; skipped",
                spec.name, sm.destination, sm.kind
            ));
            continue;
        }
        let src = Path::new(&sm.source);
        let target = merged.join(sm.destination.trim_start_matches('/'));
        if src.is_dir() {
            fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
        } else if src.exists() {
            if let Some(p) = target.parent() {
                fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
            }
            if !target.exists() {
                fs::write(&target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
            }
        } else {
            // Talos creates missing sources as directories (mode 0700) before starting.
            fs::create_dir_all(src).map_err(|e| format!("mkdir {}: {e}", src.display()))?;
            fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
        }
        let t = target.to_string_lossy().into_owned();
        let rec = if has(&sm.options, "rbind") { libc::MS_REC } else { 0 };
        mount(&sm.source, &t, "", libc::MS_BIND | rec, "")?;
        if has(&sm.options, "ro") {
            mount("none", &t, "", libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | rec, "")?;
        }
        say(&format!(
            "ext-{}: mounted {} on {}{}",
            spec.name,
            sm.source,
            sm.destination,
            if has(&sm.options, "ro") { " (ro)" } else { "" }
        ));
    }
    Ok(merged)
}

/// Runs the service in its root until the restart policy says stop.
fn supervise(spec: Spec, rootfs: PathBuf) {
    let name = spec.name.clone();
    loop {
        let root_c = std::ffi::CString::new(rootfs.to_string_lossy().as_bytes()).expect("no NUL");
        let mut cmd = Command::new(&spec.container.entrypoint);
        cmd.args(&spec.container.args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for kv in &spec.container.environment {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        // SAFETY: chroot and chdir are async-signal-safe syscalls; the CString is prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut guard = SUPERVISED.lock().expect("not poisoned");
        let child = cmd.spawn();
        let mut child = match child {
            Ok(c) => {
                guard.get_or_insert_with(HashSet::new).insert(c.id() as i32);
                drop(guard);
                c
            }
            Err(e) => {
                drop(guard);
                say(&format!("ext-{name}: cannot start {}: {e}", spec.container.entrypoint));
                if spec.restart == "never" {
                    return;
                }
                std::thread::sleep(RESTART_INTERVAL);
                continue;
            }
        };
        let pid = child.id() as i32;
        let pipes: Vec<Box<dyn std::io::Read + Send>> =
            vec![Box::new(child.stdout.take().expect("piped")), Box::new(child.stderr.take().expect("piped"))];
        let readers: Vec<_> = pipes
            .into_iter()
            .map(|p| {
                let name = name.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(p).lines().map_while(|l| l.ok()) {
                        crate::console_line(&format!("ext-{name}: {line}"));
                    }
                })
            })
            .collect();
        let status = child.wait();
        if let Some(set) = SUPERVISED.lock().expect("not poisoned").as_mut() {
            set.remove(&pid);
        }
        for r in readers {
            let _ = r.join();
        }
        let ok = matches!(&status, Ok(s) if s.success());
        say(&format!("ext-{name}: exited ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())));
        match spec.restart.as_str() {
            "never" => return,
            "untilSuccess" if ok => return,
            _ => {}
        }
        std::thread::sleep(RESTART_INTERVAL);
        say(&format!("ext-{name}: restarting"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAILSCALE: &str = "name: tailscale\ndepends:\n  - service: cri\n  - network:\n    - addresses\n    - connectivity\ncontainer:\n  entrypoint: /usr/local/bin/containerboot\n  environment:\n    - PATH=/usr/local/bin\n  mounts:\n    - source: /var/lib/tailscale\n      destination: /var/lib/tailscale\n      type: bind\n      options:\n        - bind\n        - rw\nrestart: always\n";

    #[test]
    fn reads_specs_and_skips_cri_dependents() {
        let ts: Spec = serde_saphyr::from_str(TAILSCALE).unwrap();
        assert_eq!(ts.container.mounts[0].destination, "/var/lib/tailscale");
        assert!(blocked_in_maintenance(&ts, true).unwrap().contains("service cri"));
        let agent: Spec =
            serde_saphyr::from_str(include_str!("../../../extensions/talos-agent/talos-agent.yaml")).unwrap();
        assert_eq!(agent.name, "talos-agent");
        assert_eq!(agent.container.args, vec!["report"]);
        assert_eq!(agent.restart, "always");
        assert_eq!(blocked_in_maintenance(&agent, true), None);
        assert!(blocked_in_maintenance(&agent, false).is_some());
        let cfg: Spec = serde_saphyr::from_str(
            "name: x\ndepends:\n  - configuration: true\ncontainer:\n  entrypoint: /x\nrestart: never\n",
        )
        .unwrap();
        assert!(blocked_in_maintenance(&cfg, true).unwrap().contains("configuration"));
    }
}
