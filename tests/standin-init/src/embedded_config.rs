//! TEST PROGRAM — what Talos ≥ 1.12 does with an embedded machine configuration, as far as
//! moonboot's tests need it (talos v1.14.0-rc.1
//! `internal/app/machined/pkg/controllers/config/acquire.go`):
//! - `processEmbeddedConfig`: when `/usr/local/etc/talos/config.yaml` exists in the root (an
//!   extension put it there: moonboot's `embedded-config`), read it, then mask the directory with
//!   a read-only tmpfs so that extension services never see it;
//! - `stateEmbedded`: a configuration that is complete for boot (`CompleteForBoot`: it has the
//!   v1alpha1 document, `pkg/machinery/config/container/container.go`) ends acquisition: the node
//!   is configured. Otherwise Talos goes on to maintenance mode.
//!
//! The stand-in prints `MOONBOOT-STANDIN-INIT: embedded config path=… bytes=N sha256=… mode=0NNN
//! selinux=LABEL complete=BOOL` (LABEL: the file's `security.selinux` extended attribute as the
//! booted kernel reads it through the overlay from the extension's squashfs, `-` when it has none)
//! and, when complete, serves apid as configured ([`crate::apid::mode`]). It does
//! not apply anything from the configuration.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

use sha2::Digest;

use crate::{say, Result};

/// Where Talos reads it, in the root (talos `constants.EmbeddedConfigDirectory` +
/// `constants.ConfigFilename`).
const DIR: &str = "/root/usr/local/etc/talos";
const FILE: &str = "config.yaml";

static COMPLETE: OnceLock<bool> = OnceLock::new();

/// Whether [`acquire`] found a configuration complete for boot.
pub fn complete() -> bool {
    COMPLETE.get().copied().unwrap_or(false)
}

/// Reads and masks the embedded configuration, if any.
pub fn acquire() -> Result<()> {
    let path = format!("{DIR}/{FILE}");
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = COMPLETE.set(false);
            return Ok(());
        }
        Err(e) => return Err(format!("embedded config {path}: {e}")),
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("embedded config {path}: {e}"))?;
    let complete = has_v1alpha1(&bytes);
    let _ = COMPLETE.set(complete);
    say(&format!(
        "embedded config path=/usr/local/etc/talos/{FILE} bytes={} sha256={} mode={:04o} selinux={} complete={complete}",
        bytes.len(),
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>(),
        meta.permissions().mode() & 0o7777,
        selinux_label(&path).unwrap_or_else(|| "-".into())
    ));
    crate::mount(
        "tmpfs",
        DIR,
        "tmpfs",
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RELATIME,
        "mode=0755",
    )?;
    say(&format!("masked {} with a read-only tmpfs", DIR.trim_start_matches("/root")));
    Ok(())
}

/// The `security.selinux` extended attribute of `path` (trailing NUL dropped), if it has one.
fn selinux_label(path: &str) -> Option<String> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut buf = [0u8; 4096];
    // SAFETY: both strings are NUL-terminated; buf is valid for buf.len() bytes.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"security.selinux".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    let label = buf[..n].strip_suffix(b"\0").unwrap_or(&buf[..n]);
    Some(String::from_utf8_lossy(label).into_owned())
}

/// Whether a document has no `kind` and one of `machine`, `cluster`, `debug`, `persist` (the
/// v1alpha1 document, as Talos's decoder types it).
fn has_v1alpha1(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else { return false };
    let Ok(docs) = serde_saphyr::from_multiple::<BTreeMap<String, serde::de::IgnoredAny>>(text) else {
        return false;
    };
    docs.iter().any(|d| {
        !d.contains_key("kind") && ["machine", "cluster", "debug", "persist"].iter().any(|k| d.contains_key(*k))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn complete_means_a_v1alpha1_document() {
        assert!(super::has_v1alpha1(b"version: v1alpha1\nmachine:\n  type: worker\n"));
        assert!(super::has_v1alpha1(b"apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n---\nmachine: {}\n"));
        assert!(!super::has_v1alpha1(b"apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n"));
        assert!(!super::has_v1alpha1(b"version: v1alpha1\n"));
    }
}
