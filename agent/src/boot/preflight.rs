//! Pre-flight checks before any kexec system call: can this machine kexec the next kernel at all?
//!
//! Checked (each from the running system, read-only):
//! - root: the kexec calls need CAP_SYS_BOOT (kernel/kexec.c `kexec_load_permitted`); euid 0 is
//!   required here;
//! - lockdown (`/sys/kernel/security/lockdown`, security/lockdown/lockdown.c: the active mode in
//!   brackets, e.g. `none [integrity] confidentiality`): `integrity` and `confidentiality` block
//!   `kexec_load` (LOCKDOWN_KEXEC) and make `kexec_file_load` demand a kernel signed with a key the
//!   running kernel trusts (kernel/kexec_file.c `kimage_validate_signature`), which a Talos kernel
//!   is not on Ubuntu — an error;
//! - `/proc/sys/kernel/kexec_load_disabled` = 1 blocks both calls for good (Documentation/
//!   admin-guide/sysctl/kernel.rst) — an error;
//! - Secure Boot (the EFI variable `SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c` under
//!   `/sys/firmware/efi/efivars`: 4 bytes of attributes, then the value byte, 1 = enabled, UEFI
//!   spec 2.10 §3.3): on with lockdown `none` is a note; on with the lockdown state unreadable is
//!   an error (distribution kernels lock down under Secure Boot);
//! - memory: `MemAvailable` of `/proc/meminfo` must cover twice the artifact (memfds + the
//!   kernel's staged copy) plus [`MEMORY_MARGIN`].

use serde::Serialize;
use std::path::PathBuf;
use thiserror::Error;

/// Memory kept free on top of twice the artifact size, in bytes.
pub const MEMORY_MARGIN: u64 = 64 << 20;
/// The EFI global variable GUID of `SecureBoot`.
pub const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The kernel lockdown mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lockdown {
    /// `[none]`.
    None,
    /// `[integrity]`.
    Integrity,
    /// `[confidentiality]`.
    Confidentiality,
    /// The file is absent or unreadable (no securityfs, or a kernel without lockdown).
    Unknown,
}

/// What the checks found; serialised into the `--dry-run` plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preflight {
    /// Effective user id.
    pub euid: u32,
    /// Lockdown mode.
    pub lockdown: Lockdown,
    /// `/proc/sys/kernel/kexec_load_disabled` (false when absent).
    pub kexec_load_disabled: bool,
    /// Secure Boot state; None on non-EFI machines or without efivarfs.
    pub secure_boot: Option<bool>,
    /// `MemAvailable`, in bytes.
    pub mem_available: u64,
    /// Bytes needed: 2 × artifact + [`MEMORY_MARGIN`].
    pub mem_needed: u64,
    /// Observations that are not errors.
    pub notes: Vec<String>,
}

/// Why this machine cannot kexec now.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreflightError {
    /// Not running as root.
    #[error("must run as root (euid 0) to kexec; euid is {euid}")]
    NotRoot {
        /// Effective user id.
        euid: u32,
    },
    /// Lockdown is `integrity` or `confidentiality`.
    #[error(
        "kernel lockdown is {mode}: kexec_load is blocked and kexec_file_load only accepts kernels signed with a key this kernel trusts (disable Secure Boot or lockdown)"
    )]
    Lockdown {
        /// `integrity` or `confidentiality`.
        mode: &'static str,
    },
    /// Secure Boot is on and the lockdown state cannot be read.
    #[error(
        "Secure Boot is enabled and /sys/kernel/security/lockdown is unreadable: the kernel is most likely locked down, so kexec would need a signed kernel"
    )]
    SecureBootUnknownLockdown,
    /// `kexec_load_disabled` is 1.
    #[error("/proc/sys/kernel/kexec_load_disabled is 1: kexec is disabled until reboot")]
    KexecDisabled,
    /// Not enough available memory.
    #[error("not enough memory: MemAvailable is {available} bytes, need {needed} (2 × the {artifact}-byte artifact + 64 MiB)")]
    LowMemory {
        /// MemAvailable in bytes.
        available: u64,
        /// Bytes needed.
        needed: u64,
        /// Artifact bytes.
        artifact: u64,
    },
    /// A file that must exist could not be read or parsed.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Parses `/sys/kernel/security/lockdown` text (the active mode is bracketed).
pub fn parse_lockdown(text: &str) -> Lockdown {
    let active = text.split_whitespace().find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')));
    match active {
        Some("none") => Lockdown::None,
        Some("integrity") => Lockdown::Integrity,
        Some("confidentiality") => Lockdown::Confidentiality,
        _ => Lockdown::Unknown,
    }
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes (the file says kB, meaning KiB).
pub fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut it = line.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The Secure Boot value of an efivarfs `SecureBoot-…` file (attributes u32, then the value).
pub fn parse_secure_boot(bytes: &[u8]) -> Option<bool> {
    bytes.get(4).map(|&b| b == 1)
}

/// Where the checked files are (a root directory, `/` normally; tests point it elsewhere).
#[derive(Debug, Clone)]
pub struct Sources {
    /// Prefix of every path.
    pub root: PathBuf,
    /// Effective user id.
    pub euid: u32,
}

impl Default for Sources {
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Sources { root: PathBuf::from("/"), euid: unsafe { libc::geteuid() } }
    }
}

impl Sources {
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

/// Runs every check for an artifact of `total_bytes` (kernel + initramfs) on this machine.
///
/// # Errors
/// The first failed check, as a [`PreflightError`].
pub fn preflight(total_bytes: u64) -> Result<Preflight, PreflightError> {
    preflight_in(&Sources::default(), total_bytes)
}

/// [`preflight`] against the files under `src.root`.
///
/// # Errors
/// As [`preflight`].
pub fn preflight_in(src: &Sources, total_bytes: u64) -> Result<Preflight, PreflightError> {
    let read = |p: &str| std::fs::read(src.path(p)).ok();
    let mut notes = Vec::new();
    if src.euid != 0 {
        return Err(PreflightError::NotRoot { euid: src.euid });
    }
    let disabled = read("/proc/sys/kernel/kexec_load_disabled")
        .map(|b| String::from_utf8_lossy(&b).trim() == "1")
        .unwrap_or(false);
    if disabled {
        return Err(PreflightError::KexecDisabled);
    }
    let lockdown = read("/sys/kernel/security/lockdown")
        .map(|b| parse_lockdown(&String::from_utf8_lossy(&b)))
        .unwrap_or(Lockdown::Unknown);
    match lockdown {
        Lockdown::Integrity => return Err(PreflightError::Lockdown { mode: "integrity" }),
        Lockdown::Confidentiality => return Err(PreflightError::Lockdown { mode: "confidentiality" }),
        _ => {}
    }
    let secure_boot = if src.path("/sys/firmware/efi").exists() {
        read(&format!("/sys/firmware/efi/efivars/{SECURE_BOOT_VAR}")).and_then(|b| parse_secure_boot(&b))
    } else {
        None
    };
    match (secure_boot, lockdown) {
        (Some(true), Lockdown::Unknown) => return Err(PreflightError::SecureBootUnknownLockdown),
        (Some(true), _) => notes.push("Secure Boot is enabled but the kernel is not locked down".to_string()),
        _ => {}
    }
    if lockdown == Lockdown::Unknown {
        notes.push("lockdown state unknown (/sys/kernel/security/lockdown unreadable)".to_string());
    }
    let meminfo = src.path("/proc/meminfo");
    let text = std::fs::read_to_string(&meminfo)
        .map_err(|e| PreflightError::Read { path: meminfo.display().to_string(), reason: e.to_string() })?;
    let mem_available = parse_mem_available(&text).ok_or_else(|| PreflightError::Read {
        path: meminfo.display().to_string(),
        reason: "no MemAvailable line".to_string(),
    })?;
    let mem_needed = total_bytes.saturating_mul(2).saturating_add(MEMORY_MARGIN);
    if mem_available < mem_needed {
        return Err(PreflightError::LowMemory { available: mem_available, needed: mem_needed, artifact: total_bytes });
    }
    Ok(Preflight {
        euid: src.euid,
        lockdown,
        kexec_load_disabled: disabled,
        secure_boot,
        mem_available,
        mem_needed,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of a real `/proc/meminfo` (Linux 6.1, 1.5 GiB QEMU guest).
    const MEMINFO: &str = "\
MemTotal:        1497760 kB
MemFree:         1395032 kB
MemAvailable:    1367124 kB
Buffers:               0 kB
Cached:            60456 kB
";

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_mem_available(MEMINFO), Some(1_367_124 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_lockdown("[none] integrity confidentiality\n"), Lockdown::None);
        assert_eq!(parse_lockdown("none [integrity] confidentiality\n"), Lockdown::Integrity);
        assert_eq!(parse_lockdown("none integrity [confidentiality]\n"), Lockdown::Confidentiality);
        assert_eq!(parse_lockdown(""), Lockdown::Unknown);
        assert_eq!(parse_secure_boot(&[0x06, 0, 0, 0, 1]), Some(true));
        assert_eq!(parse_secure_boot(&[0x06, 0, 0, 0, 0]), Some(false));
        assert_eq!(parse_secure_boot(&[0x06, 0, 0, 0]), None);
    }

    struct Tree(PathBuf);
    impl Tree {
        fn new(name: &str) -> Tree {
            let d = std::env::temp_dir().join(format!("moonboot-preflight-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            let t = Tree(d);
            t.put("/proc/meminfo", MEMINFO.as_bytes());
            t
        }
        fn put(&self, p: &str, data: &[u8]) {
            let f = self.0.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, data).unwrap();
        }
        fn src(&self, euid: u32) -> Sources {
            Sources { root: self.0.clone(), euid }
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn checks_in_order() {
        let t = Tree::new("ok");
        t.put("/sys/kernel/security/lockdown", b"[none] integrity confidentiality\n");
        t.put("/proc/sys/kernel/kexec_load_disabled", b"0\n");
        let p = preflight_in(&t.src(0), 100 << 20).unwrap();
        assert_eq!(p.lockdown, Lockdown::None);
        assert_eq!(p.mem_needed, (200 << 20) + MEMORY_MARGIN);
        assert_eq!(p.secure_boot, None);
        assert!(p.notes.is_empty());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["lockdown"], "none");

        assert_eq!(preflight_in(&t.src(1000), 1), Err(PreflightError::NotRoot { euid: 1000 }));
        assert!(matches!(preflight_in(&t.src(0), 1 << 30), Err(PreflightError::LowMemory { .. })));

        t.put("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", &[6, 0, 0, 0, 1]);
        let p = preflight_in(&t.src(0), 1).unwrap();
        assert_eq!(p.secure_boot, Some(true));
        assert_eq!(p.notes.len(), 1);

        t.put("/sys/kernel/security/lockdown", b"none [integrity] confidentiality\n");
        assert_eq!(preflight_in(&t.src(0), 1), Err(PreflightError::Lockdown { mode: "integrity" }));
        std::fs::remove_file(t.0.join("sys/kernel/security/lockdown")).unwrap();
        assert_eq!(preflight_in(&t.src(0), 1), Err(PreflightError::SecureBootUnknownLockdown));

        t.put("/proc/sys/kernel/kexec_load_disabled", b"1\n");
        assert_eq!(preflight_in(&t.src(0), 1), Err(PreflightError::KexecDisabled));
    }
}
