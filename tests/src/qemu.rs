//! Booting test guests under QEMU (software emulation) and waiting for console marker lines.
//!
//! The console is QEMU's stdio serial (`-nographic`), read through a pipe by a thread that also
//! copies it to a log file. [`Guest`] kills QEMU when dropped, whatever happened.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Whether `binary` is on PATH.
pub fn have(binary: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file())).unwrap_or(false)
}

/// A running QEMU guest.
pub struct Guest {
    child: Child,
    lines: Receiver<(Instant, String)>,
    seen: Vec<String>,
    seen_at: Vec<Instant>,
    log: PathBuf,
}

/// What to boot.
pub struct BootSpec<'a> {
    /// `qemu-system-aarch64` / `qemu-system-x86_64`.
    pub qemu: &'a str,
    /// Machine arguments (`-M virt -cpu cortex-a57 -m 1536`).
    pub machine_args: &'a [String],
    /// `-kernel`.
    pub kernel: &'a Path,
    /// `-initrd`.
    pub initrd: &'a Path,
    /// `-append`.
    pub append: &'a str,
    /// Extra arguments (devices, networking).
    pub extra: &'a [String],
    /// Where to copy the console output.
    pub log: &'a Path,
}

impl Guest {
    /// Starts QEMU with `-nographic -no-reboot` and the console on its stdout.
    pub fn boot(spec: &BootSpec<'_>) -> Result<Self> {
        let mut cmd = Command::new(spec.qemu);
        cmd.args(spec.machine_args)
            .args(["-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(spec.kernel)
            .arg("-initrd")
            .arg(spec.initrd)
            .arg("-append")
            .arg(spec.append)
            .args(spec.extra);
        Self::spawn(cmd, spec.log)
    }

    /// Starts a QEMU command line built by the caller (e.g. under `ip netns exec`, or with UEFI
    /// firmware and no `-initrd`), whose console is on its stdout; copies the console to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
        let (tx, rx) = channel();
        let log_path = log.to_path_buf();
        let mut log = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        writeln!(log, "# {shown}")?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                let _ = writeln!(log, "{line}");
                if tx.send((Instant::now(), line)).is_err() {
                    // Keep draining so QEMU never blocks on a full pipe.
                }
                buf.clear();
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let _ = tx2.send((Instant::now(), format!("[qemu stderr] {line}")));
            }
        });
        Ok(Self { child, lines: rx, seen: Vec::new(), seen_at: Vec::new(), log: log_path })
    }

    /// Waits until a console line satisfies `pred`, at most until `deadline`; returns the line.
    /// Fails when QEMU exits first or the deadline passes; the error names the log file.
    pub fn wait_for(&mut self, what: &str, deadline: Instant, pred: impl Fn(&str) -> bool) -> Result<String> {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return Ok(l.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    let hit = pred(&line);
                    self.seen.push(line.clone());
                    self.seen_at.push(at);
                    if hit {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("timed out waiting for {what}; console log: {}\n{}", self.log.display(), self.tail())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("QEMU exited before {what}; console log: {}\n{}", self.log.display(), self.tail())
                }
            }
        }
    }

    /// Waits for QEMU to exit by itself (the guest powered off), at most until `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                bail!("QEMU still running at the deadline; console log: {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Takes every console line that has arrived, without waiting, and returns them (for a caller
    /// watching several guests at once).
    ///
    /// # Errors
    /// QEMU exited (its status, the log and the console's last lines), after taking what it
    /// printed.
    pub fn drain(&mut self) -> Result<&[String]> {
        let from = self.seen.len();
        let exited = self.child.try_wait()?;
        for (at, line) in self.lines.try_iter() {
            self.seen.push(line);
            self.seen_at.push(at);
        }
        if let Some(status) = exited {
            bail!("QEMU exited ({status}); console log: {}\n{}", self.log.display(), self.tail());
        }
        Ok(&self.seen[from..])
    }

    /// When the first console line read so far that satisfies `pred` arrived.
    pub fn first_at(&self, pred: impl Fn(&str) -> bool) -> Option<Instant> {
        self.seen.iter().position(|l| pred(l)).map(|i| self.seen_at[i])
    }

    /// Every console line read so far.
    pub fn lines(&self) -> &[String] {
        &self.seen
    }

    fn tail(&self) -> String {
        let n = self.seen.len().saturating_sub(25);
        self.seen[n..].join("\n")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QEMU Machine Protocol connection (QEMU `docs/interop/qmp-spec.rst`): QEMU started with
/// `-qmp unix:PATH,server=on,wait=off` greets with `{"QMP": …}`, takes `qmp_capabilities` to
/// leave negotiation mode, then one JSON command per line, answering `{"return": …}` or
/// `{"error": {"class", "desc"}}` (asynchronous `{"event": …}` lines may come in between).
pub struct Qmp {
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path` (retrying until `deadline`: QEMU creates it as it
    /// starts) and negotiates capabilities.
    ///
    /// # Errors
    /// No socket by the deadline, or QEMU refusing the negotiation.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self> {
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => bail!("connecting to QMP at {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Self { reader: BufReader::new(stream), writer };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP at {}: no greeting, got {greeting}", path.display());
        }
        qmp.execute("qmp_capabilities", serde_json::json!({}))?;
        Ok(qmp)
    }

    /// Runs one command; returns its `return` value.
    ///
    /// # Errors
    /// QEMU answering with an error (its class and description), or the connection failing.
    pub fn execute(&mut self, command: &str, arguments: serde_json::Value) -> Result<serde_json::Value> {
        let mut line = serde_json::to_vec(&serde_json::json!({"execute": command, "arguments": arguments}))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        loop {
            let msg = self.read_message()?;
            if let Some(r) = msg.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = msg.get("error") {
                bail!("QMP {command}: {} ({})", e["desc"], e["class"]);
            }
            // An event: not the answer.
        }
    }

    fn read_message(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).context("reading from QMP")? == 0 {
            bail!("QMP connection closed");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }
}
