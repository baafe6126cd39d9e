//! `target/fixtures/fixtures.json`: what `scripts/fixtures` built and pushed, for tests to read.
//!
//! Everything it describes is a TEST FIXTURE: stand-ins built from Debian packages, not Talos.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Schema version of `fixtures.json`.
pub const SCHEMA: u32 = 1;

/// The whole description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixtures {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Says that these are test fixtures.
    pub note: String,
    /// The Talos version the stand-in release pretends to be (`v1.10.5`).
    pub talos_version: String,
    /// `127.0.0.1:PORT` of the local `docker-registry` the images were pushed to.
    pub registry: String,
    /// The mirror option that points moonboot at it (`ghcr.io=127.0.0.1:PORT`).
    pub mirror: String,
    /// Timestamp used for every file in the fixtures (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
    /// Pushed images by short name: `imager`, `spin`, `tailscale`, `sbc-raspberrypi` (a stand-in
    /// overlay image), and the bundles `extensions` and `overlays` (see [`crate::bundles`]).
    pub images: BTreeMap<String, PushedImage>,
    /// Per-architecture inputs and outputs: `arm64`, `amd64`.
    pub arches: BTreeMap<String, ArchFixtures>,
}

/// One multi-arch image in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedImage {
    /// Repository in the registry, mirroring upstream (`siderolabs/imager`).
    pub repository: String,
    /// Tag (`v1.10.5`, `v0.19.0`, `1.84.0`).
    pub tag: String,
    /// `127.0.0.1:PORT/<repository>:<tag>`.
    pub reference: String,
    /// The upstream reference this stands in for (`ghcr.io/siderolabs/imager:v1.10.5`).
    pub upstream_reference: String,
    /// Digest of the image index.
    pub index_digest: String,
    /// Digest of each platform's image manifest, by architecture.
    pub manifests: BTreeMap<String, String>,
    /// The OCI image layout it was pushed from.
    pub layout: PathBuf,
    /// For extensions: `metadata.name` and `metadata.version` of `manifest.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionInfo>,
}

/// What an extension image's `manifest.yaml` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtensionInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.version`.
    pub version: String,
}

/// The inputs and built files of one architecture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchFixtures {
    /// Debian kernel package (`linux-image-6.1.0-56-cloud-arm64`).
    pub kernel_package: String,
    /// Its version (`6.1.192-2`).
    pub kernel_package_version: String,
    /// Kernel release, `uname -r` (`6.1.0-56-cloud-arm64`).
    pub kernel_release: String,
    /// What QEMU's `-kernel` and kexec take: the raw arm64 `Image` / the x86 bzImage.
    pub kernel_image: PathBuf,
    /// The kernel's `/boot/config-*`.
    pub kernel_config: PathBuf,
    /// `vmlinuz` as in the imager image (EFI zboot with zstd for arm64, the bzImage for amd64).
    pub vmlinuz: PathBuf,
    /// `initramfs.xz` as in the imager image (a zstd stream of a newc cpio).
    pub initramfs: PathBuf,
    /// The stand-in Talos root (`rootfs.sqsh` inside the initramfs).
    pub rootfs_sqsh: PathBuf,
    /// The extracted package's `lib/modules/<kver>` (every module, for later tests).
    pub modules_dir: PathBuf,
    /// Modules copied into the initramfs, relative to `modules_dir`, in load order.
    pub initramfs_modules: Vec<String>,
    /// Selected kernel config symbols and their values (`y`, `m`, or `unset`).
    pub kernel_config_values: BTreeMap<String, String>,
    /// Static busybox for this architecture (from Debian's `busybox-static`).
    pub busybox: PathBuf,
    /// The stand-in init (static binary of the `standin-init` crate).
    pub init: PathBuf,
    /// QEMU system emulator for this architecture.
    pub qemu_binary: String,
    /// Machine arguments for it (before `-kernel`).
    pub qemu_machine_args: Vec<String>,
    /// Serial console device name (`ttyAMA0`, `ttyS0`).
    pub console: String,
}

/// Where `fixtures.json` is: `$MOONBOOT_FIXTURES_DIR/fixtures.json`, else
/// `<workspace>/target/fixtures/fixtures.json`.
pub fn default_path() -> PathBuf {
    fixtures_dir().join("fixtures.json")
}

/// `$MOONBOOT_FIXTURES_DIR`, else `<workspace>/target/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MOONBOOT_FIXTURES_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("fixtures")
}

impl Fixtures {
    /// Reads `fixtures.json` from `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: Self = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            f.schema == SCHEMA,
            "{}: schema {} (want {SCHEMA}): rerun scripts/fixtures",
            path.display(),
            f.schema
        );
        Ok(f)
    }

    /// Loads the default `fixtures.json`; `Ok(None)` when it is absent (tests then skip).
    pub fn load_default() -> Result<Option<Self>> {
        let p = default_path();
        if !p.exists() {
            return Ok(None);
        }
        Self::load(&p).map(Some)
    }
}

/// Tells the person running the tests that `test` was skipped and why. Written with
/// `std::io::Write` on stderr, which the test harness does not capture, so it always shows.
///
/// # Panics
/// When `MOONBOOT_REQUIRE_FIXTURES=1` (set by `scripts/test`): there, a skip is a failure.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    if std::env::var_os("MOONBOOT_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {reason} (MOONBOOT_REQUIRE_FIXTURES=1 turns skips into failures)");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The fixtures for a test that needs the fixture registry: `None` (after [`skip`] printed why)
/// when `fixtures.json` is absent or the registry does not answer — which is a failure under
/// `MOONBOOT_REQUIRE_FIXTURES=1`.
///
/// # Panics
/// When `fixtures.json` exists but cannot be read.
pub fn with_registry(test: &str) -> Option<Fixtures> {
    let f = loaded(test)?;
    if let Err(e) = crate::registry::get(&f.registry, "/v2/", &[]) {
        let reason = format!(
            "the fixture registry {} does not answer ({e:#}): run scripts/fixtures (it restarts it)",
            f.registry
        );
        skip(test, &reason);
        return None;
    }
    Some(f)
}

/// The fixtures for a test: `None` (after [`skip`] printed why) when `fixtures.json` is absent —
/// a failure under `MOONBOOT_REQUIRE_FIXTURES=1`.
///
/// # Panics
/// When `fixtures.json` exists but cannot be read.
pub fn loaded(test: &str) -> Option<Fixtures> {
    match Fixtures::load_default() {
        Ok(Some(f)) => Some(f),
        Ok(None) => {
            skip(test, "target/fixtures/fixtures.json is absent (run scripts/fixtures to build the fixtures)");
            None
        }
        Err(e) => panic!("{e:#}"),
    }
}

/// `arch`'s fixtures for a test that boots QEMU: `None` (after [`skip`] printed why) when the
/// architecture's QEMU binary is not installed.
///
/// # Panics
/// When `f` has no fixtures for `arch`.
pub fn with_qemu(test: &str, f: &Fixtures, arch: &str) -> Option<ArchFixtures> {
    let a = f.arches[arch].clone();
    if !crate::qemu::have(&a.qemu_binary) {
        skip(test, &format!("{} is not installed (run scripts/setup)", a.qemu_binary));
        return None;
    }
    Some(a)
}

/// Debian trixie's `oras` (1.2), which `scripts/setup` extracts to `target/peers/oras`.
pub fn oras() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/oras")
}

/// For a test that needs [`oras`]: `true`, or `false` after [`skip`] said why (a failure under
/// `MOONBOOT_REQUIRE_FIXTURES=1`).
pub fn with_oras(test: &str) -> bool {
    let there = oras().exists();
    if !there {
        skip(test, "target/peers/oras is absent (Debian trixie's oras; run scripts/setup)");
    }
    there
}

/// Pushes the files `kernel`, `initramfs` and `cmdline` of `dir` to `reference` (plain HTTP) with
/// `oras push --artifact-type`, as a format-2 boot artifact: each file a blob titled by its name
/// and typed by its role's media type, as `docs/ARCHITECTURE.md` tells producers. Returns oras's
/// `--format json` report (`digest`, `artifactType`, …).
///
/// # Errors
/// oras failing (its stderr), or a report that is not JSON.
pub fn oras_push_boot_artifact(dir: &Path, reference: &str) -> Result<serde_json::Value> {
    use boot_artifact::artifact::{Role, ARTIFACT_TYPE};
    let out = std::process::Command::new(oras())
        .current_dir(dir)
        .args(["push", "--plain-http", "--format", "json", reference, "--artifact-type", ARTIFACT_TYPE])
        .args(Role::ALL.map(|r| format!("{}:{}", r.title(), r.media_type())))
        .output()
        .context("running oras")?;
    if !out.status.success() {
        anyhow::bail!("oras push {reference}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("oras push --format json")
}

/// A repository name in the fixture registry that no other push uses: `<prefix>-<pid>-<n>`, where
/// `<pid>` is this process's id and `<n>` counts the calls in this process (so two tests of one
/// binary, or one test asking twice, get different names). Pass `moonboot-test/<what>`.
///
/// Every repository a test pushes to must come from here (or be otherwise unique per test and
/// process): docker-registry's filesystem driver rewrites a repository's link files in place
/// (truncate, then write), so two pushes of the same blobs to one repository at once can make each
/// other's manifest PUT fail with `DIGEST_INVALID`, even under different tags.
pub fn unique_repository(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed))
}

/// An exclusive lock on a shared fixture resource, held until dropped (see [`lock`]).
#[derive(Debug)]
pub struct FixtureLock {
    path: PathBuf,
    _flock: nix::fcntl::Flock<std::fs::File>,
}

impl FixtureLock {
    /// The lock file, `<fixtures dir>/locks/<name>.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock `name` (a file name: letters, digits, `-`, `_`), waiting for whoever
/// holds it: `flock(2)` on `<fixtures dir>/locks/<name>.lock` (created if absent; never deleted).
/// It serialises every process using this fixtures directory, and so the registry `scripts/fixtures`
/// serves from it: every test binary and every concurrent run of the suite. The lock goes with the
/// returned guard, and with the process if it dies.
///
/// For resources that cannot be made unique per test: a reference every default `imager build`
/// pulls, or fixed paths under the fixtures directory.
///
/// # Errors
/// `name` is not a plain file name, the lock file cannot be created, or `flock` fails.
pub fn lock(name: &str) -> Result<FixtureLock> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "lock name {name:?} is not a plain file name"
    );
    let dir = fixtures_dir().join("locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // Try first without waiting, to say on stderr why a test stands still.
    let mut blocking = false;
    loop {
        let arg = if blocking { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
        match Flock::lock(file, arg) {
            Ok(flock) => return Ok(FixtureLock { path, _flock: flock }),
            Err((f, Errno::EWOULDBLOCK)) if !blocking => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "waiting for {} (another test holds it)", path.display());
                (file, blocking) = (f, true);
            }
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e).with_context(|| format!("flock {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_repositories_differ_per_call_and_name_the_process() {
        let (a, b) = (unique_repository("moonboot-test/x"), unique_repository("moonboot-test/x"));
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        for r in [&a, &b] {
            assert!(r.starts_with(&format!("moonboot-test/x-{pid}-")), "{r}");
        }
    }

    #[test]
    fn a_lock_excludes_other_holders_until_dropped() {
        use nix::fcntl::{Flock, FlockArg};
        let held = lock(&format!("unit-test-{}", std::process::id())).unwrap();
        let path = held.path().to_path_buf();
        let open = || std::fs::File::open(&path).unwrap();
        // flock(2) locks belong to the open file description: a second open conflicts even here.
        assert!(Flock::lock(open(), FlockArg::LockExclusiveNonblock).is_err(), "taken twice");
        drop(held);
        assert!(Flock::lock(open(), FlockArg::LockExclusiveNonblock).is_ok(), "not released on drop");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn lock_names_must_be_plain_file_names() {
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(lock(bad).is_err(), "{bad:?}");
        }
    }
}
