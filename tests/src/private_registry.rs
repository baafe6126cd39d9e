//! A private `docker-registry` (Debian's distribution 2.8) for one test: its own storage under a
//! directory the test owns, listening on `127.0.0.1:0` — the kernel picks a free port and the
//! registry's own `listening on ADDR` log line says which, so no two tests can race for a port —
//! optionally behind htpasswd (basic) authentication, or as a pull-through cache of another
//! registry (`proxy.remoteurl`, what the operator's bastion runs). Killed on drop.
//!
//! Use it where a test must see a registry that nothing else writes (a cold repository, every
//! repository and tag listed); tests that only read the stand-in release use the shared fixtures
//! registry.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running private registry.
pub struct PrivateRegistry {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    /// Its directory: `config.yml`, `registry.log`, `data/` (the storage root).
    pub dir: PathBuf,
}

impl PrivateRegistry {
    /// Starts `docker-registry serve` with its config, storage and log under `dir` (created), with
    /// basic authentication against `htpasswd` (a file `htpasswd -B` wrote) when given, and waits
    /// (at most 20 s) for its `listening on` line.
    ///
    /// # Errors
    /// `docker-registry` is missing (run `scripts/setup`), exits, or does not say where it listens.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Result<PrivateRegistry> {
        let extra = match htpasswd {
            Some(file) => format!("auth:\n  htpasswd:\n    realm: moonboot-test\n    path: {}\n", file.display()),
            None => String::new(),
        };
        Self::start_config(dir, &extra)
    }

    /// Starts a pull-through cache of `upstream` (`http://127.0.0.1:PORT`, distribution's
    /// `proxy.remoteurl`), as [`PrivateRegistry::start`] does otherwise.
    ///
    /// # Errors
    /// As [`PrivateRegistry::start`].
    pub fn start_proxy(dir: &Path, upstream: &str) -> Result<PrivateRegistry> {
        Self::start_config(dir, &format!("proxy:\n  remoteurl: {upstream}\n"))
    }

    fn start_config(dir: &Path, extra: &str) -> Result<PrivateRegistry> {
        std::fs::create_dir_all(dir.join("data"))?;
        let mut config = format!(
            "# moonboot tests: a private registry (TEST)\n\
             version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n",
            dir.join("data").display()
        );
        config.push_str(extra);
        std::fs::write(dir.join("config.yml"), config)?;
        let mut log = std::fs::File::create(dir.join("registry.log"))?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting docker-registry (run scripts/setup)")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        // Copies the registry's log to registry.log for as long as it runs (a full pipe would
        // stop it), sending the address of its `listening on 127.0.0.1:PORT` line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("msg=\"listening on ").nth(1) {
                    let _ = tx.send(rest.split('"').next().unwrap_or("").to_string());
                }
                let _ = writeln!(log, "{line}");
            }
        });
        let mut registry = PrivateRegistry { child, addr: String::new(), dir: dir.to_path_buf() };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) if addr.starts_with("127.0.0.1:") => registry.addr = addr,
            Ok(other) => bail!("docker-registry listens on {other:?}, not on loopback"),
            Err(_) => {
                let status = registry.child.try_wait()?;
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                bail!("docker-registry did not say where it listens within 20 s ({status:?}): {log}");
            }
        }
        Ok(registry)
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
