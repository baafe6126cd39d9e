//! The in-repo `talos-agent` system extension: the static `talos-agent` binary for the target
//! architecture, its extension service spec and its manifest (`extensions/talos-agent/`).
//!
//! Layout (talos `pkg/machinery/extensions/services/services.go`: an extension service `NAME`
//! has its spec at `/usr/local/etc/containers/NAME.yaml` and its root at
//! `/usr/local/lib/containers/NAME/`):
//! ```text
//! manifest.yaml
//! rootfs/usr/local/etc/containers/talos-agent.yaml                      0644
//! rootfs/usr/local/lib/containers/talos-agent/usr/local/bin/talos-agent  0755
//! ```
//!
//! The binary comes from `--agent-binary PATH` or is cross-compiled from this workspace
//! ([`compile`]): Debian's `/usr/bin/cargo` + `/usr/bin/rustc`, `-C target-feature=+crt-static`,
//! into `target/cross`, with `aarch64-linux-gnu-gcc` as the arm64 linker. Either way it must be
//! a static ELF executable for the target architecture ([`check_binary`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::extension::tree::{Entry, Kind, Tree};
use crate::extension::Manifest;

/// The extension's `metadata.name`.
pub const NAME: &str = "talos-agent";
/// `extensions/talos-agent/manifest.yaml`.
pub const MANIFEST: &str = include_str!("../../../extensions/talos-agent/manifest.yaml");
/// `extensions/talos-agent/talos-agent.yaml`.
pub const SERVICE_SPEC: &str = include_str!("../../../extensions/talos-agent/talos-agent.yaml");
/// Where the binary goes in the extension image.
pub const BINARY_PATH: &str = "rootfs/usr/local/lib/containers/talos-agent/usr/local/bin/talos-agent";
/// Where the service spec goes in the extension image.
pub const SPEC_PATH: &str = "rootfs/usr/local/etc/containers/talos-agent.yaml";
/// Bound on the binary: 64 MiB.
pub const MAX_BINARY: u64 = 64 << 20;

/// What an outer cargo (a test run, `cargo run`) sets for its own build and must not leak into a
/// nested cargo build (flags, wrappers, target directory and target, jobserver, package).
pub const OUTER_CARGO_VARS: [&str; 8] = [
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
];

/// Whether `name` is a variable an outer cargo sets for the process it runs (a test, `cargo run`)
/// that would change a nested build: [`OUTER_CARGO_VARS`], and the crate's own `CARGO_MANIFEST_*`,
/// `CARGO_PKG_*`, `CARGO_CRATE_NAME`, `CARGO_BIN_*`, `CARGO_TARGET_TMPDIR` and `OUT_DIR`. Cargo
/// compares a build script's `rerun-if-env-changed` variables with its own environment, and
/// ring's build script names `CARGO_MANIFEST_DIR`: a nested build that inherits the outer
/// crate's value sees ring (and everything above it) as changed, rebuilds it, and the next build
/// from a shell rebuilds it again.
pub fn is_outer_cargo_var(name: &str) -> bool {
    OUTER_CARGO_VARS.contains(&name)
        || ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_"].iter().any(|p| name.starts_with(p))
        || matches!(name, "CARGO_CRATE_NAME" | "CARGO_TARGET_TMPDIR" | "OUT_DIR")
}

/// Removes from `cmd`'s environment every variable of this process that [`is_outer_cargo_var`],
/// so that a nested cargo builds exactly what the same command builds from a shell.
pub fn clear_outer_cargo_env(cmd: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_outer_cargo_var) {
            cmd.env_remove(name);
        }
    }
}

/// The Rust target triple for a Talos architecture.
pub fn triple(arch: &str) -> Result<&'static str> {
    match arch {
        "arm64" => Ok("aarch64-unknown-linux-gnu"),
        "amd64" => Ok("x86_64-unknown-linux-gnu"),
        other => bail!("unsupported architecture {other:?}"),
    }
}

/// The workspace this imager was built from (where `compile` finds the agent's sources).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where [`compile`] (and `ci/publish.sh agents`) writes the static `talos-agent` for `arch`:
/// `<workspace>/target/cross/<triple>/release/talos-agent`.
///
/// # Errors
/// An architecture other than `arm64` and `amd64`.
pub fn compiled_path(arch: &str) -> Result<PathBuf> {
    Ok(workspace_dir().join("target/cross").join(triple(arch)?).join("release/talos-agent"))
}

/// Cross-compiles `talos-agent` statically for `arch` into `<workspace>/target/cross` and returns
/// the binary's path. Cargo's progress goes to our stderr when it is a terminal or
/// `MOONBOOT_PROGRESS=1` (a fresh build takes minutes); otherwise only its errors.
///
/// # Errors
/// The workspace is not there (an installed imager: use `--agent-binary`), or cargo failed.
pub fn compile(arch: &str) -> Result<PathBuf> {
    let ws = workspace_dir();
    if !ws.join("agent/Cargo.toml").exists() {
        bail!("the talos-agent sources are not at {} (pass --agent-binary PATH)", ws.display());
    }
    let triple = triple(arch)?;
    let target_dir = ws.join("target/cross");
    let mut cmd = std::process::Command::new("/usr/bin/cargo");
    clear_outer_cargo_env(&mut cmd);
    use std::io::IsTerminal;
    let progress = std::io::stderr().is_terminal() || std::env::var_os("MOONBOOT_PROGRESS").is_some_and(|v| v == "1");
    let status = cmd
        .current_dir(&ws)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc")
        .args(["build", "--release", if progress { "--color=auto" } else { "--quiet" }, "--locked"])
        .args(["-p", "talos-agent", "--target", triple, "--target-dir"])
        .arg(&target_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running /usr/bin/cargo (Debian's cargo; scripts/setup installs it)")?;
    if !status.success() {
        bail!("cross-compiling talos-agent for {triple} failed ({status})");
    }
    compiled_path(arch)
}

/// Checks that `bin` is a 64-bit little-endian ELF executable for `arch` without a program
/// interpreter (static): ELF magic, class 2, data 1, `e_machine` 183 (aarch64) or 62 (x86-64),
/// no `PT_INTERP` (3) program header.
///
/// # Errors
/// What is wrong, naming `what`.
pub fn check_binary(bin: &[u8], arch: &str, what: &str) -> Result<()> {
    let want: u16 = if arch == "arm64" { 183 } else { 62 };
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 || bin[5] != 1 {
        bail!("{what}: not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(bin[o..o + 8].try_into().expect("8 bytes"));
    let machine = u16_at(18);
    if machine != want {
        bail!("{what}: ELF machine {machine}, not {want} ({arch})");
    }
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56) as usize);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bin.len() {
            bail!("{what}: truncated program headers");
        }
        if u32::from_le_bytes(bin[o..o + 4].try_into().expect("4 bytes")) == 3 {
            bail!(
                "{what}: dynamically linked (has a program interpreter); build it with -C target-feature=+crt-static"
            );
        }
    }
    Ok(())
}

/// The manifest, checked against this imager's version (the agent shares the workspace version).
///
/// # Errors
/// A manifest that does not parse or whose version is not `v<workspace version>`.
pub fn manifest() -> Result<Manifest> {
    let m = Manifest::parse(MANIFEST).context("extensions/talos-agent/manifest.yaml")?;
    let want = format!("v{}", env!("CARGO_PKG_VERSION"));
    if m.metadata.version != want {
        bail!("extensions/talos-agent/manifest.yaml: version {} is not the crate version {want}", m.metadata.version);
    }
    Ok(m)
}

/// The extension image's files as a flattened [`Tree`] (validated like any other extension).
///
/// # Errors
/// As [`manifest`].
pub fn tree(binary: Vec<u8>) -> Result<Tree> {
    manifest()?;
    let mut t = Tree::new();
    t.insert(
        "manifest.yaml",
        Entry { mode: 0o644, kind: Kind::File(MANIFEST.as_bytes().to_vec()), selinux_label: None },
    );
    t.insert("rootfs", Entry { mode: 0o755, kind: Kind::Dir, selinux_label: None });
    t.insert(SPEC_PATH, Entry { mode: 0o644, kind: Kind::File(SERVICE_SPEC.as_bytes().to_vec()), selinux_label: None });
    t.insert(BINARY_PATH, Entry { mode: 0o755, kind: Kind::File(binary), selinux_label: None });
    Ok(t)
}

/// The service spec's path inside the extension's rootfs (what an assembled extension keys its
/// entries by): `usr/local/etc/containers/talos-agent.yaml`.
pub fn spec_rootfs_path() -> &'static str {
    SPEC_PATH.strip_prefix("rootfs/").expect("SPEC_PATH is under rootfs/")
}

/// The mount [`board_spec`] adds, as it appears under `container.mounts` of the spec.
const DEV_MOUNT: &str = "    - source: /dev
      destination: /dev
      type: bind
      options:
        - bind
        - ro
        - nosuid
        - noexec
";

/// The service spec for board images: `spec` (the published one, with no `/dev` mount) with a
/// read-only bind of the host's `/dev` as its first mount, for the hybrid MBR check and repair
/// that only board images ask for (`talos_agent.mbr=repair` on their kernel command line;
/// without it `report` never opens a disk). EC2 and netboot images keep `spec` as is.
///
/// Why this mount, from Talos v1.10.5 `internal/app/machined/pkg/system/services/extension.go`
/// `getOCIOptions` (L120-150): every extension service gets `oci.WithAllDevicesAllowed` (device
/// cgroup rwm on all devices) and all grantable capabilities, the host network namespace and no
/// user namespace, but not the device nodes: containerd v2.0.5's default spec
/// (`pkg/oci/mounts.go` `defaultMounts`) gives `/dev` as a private tmpfs that runc fills with
/// null, zero, full, random, urandom and tty only, and `/sys` read-only, which already lists
/// `/sys/block` and each disk's major:minor. Talos creates a missing mount source as a 0700
/// directory before starting the service (`extension.go` Runner, L161-172), and the disk's node
/// name is not fixed (mmc aliases in the device tree), so the mount is the whole of `/dev`, which
/// exists on every node, not one disk node. Within that:
/// - `bind`, not `rbind`: none of the host's `/dev` submounts (pts, shm, mqueue); runc skips its
///   own `/dev` set-up when `/dev` is a bind mount (runc `libcontainer/rootfs_linux.go`
///   `needsSetupDev`);
/// - `ro`: no device node can be created, renamed or removed in the host's devtmpfs. It does not
///   stop writes to a block device (`fs/open.c` `do_dentry_open` takes no mount write access for
///   special files); what the agent writes is bounded by its own rules: 16 bytes of LBA 0, only
///   on a disk whose MBR and GPT are moonboot's (boot-artifact `hybrid_mbr.rs`), opened
///   read-write only to repair, under Talos's own exclusive `flock` on the disk
///   (`agent/src/mbr/mod.rs`);
/// - `nosuid`, `noexec`.
///
/// Not chosen: `mknod` of the one disk in the container's tmpfs `/dev` (possible with the
/// granted `CAP_MKNOD`, and no mount at all): that node would be another inode than the host's,
/// so `flock` on it would not exclude Talos's partition table writes (go-blockdevice v2
/// `block/device_linux.go` locks the host node).
///
/// A spec that already mounts `/dev` (a talos-agent extension published before the mount moved
/// here) is returned as it is.
///
/// # Errors
/// `spec` has no `container.mounts` list (the line `  mounts:`).
pub fn board_spec(spec: &str) -> Result<String> {
    if spec.lines().any(|l| l.trim() == "destination: /dev") {
        return Ok(spec.to_string());
    }
    let at = spec.find("\n  mounts:\n").with_context(|| format!("{NAME}.yaml has no container.mounts list"))?
        + "\n  mounts:\n".len();
    Ok(format!("{}{DEV_MOUNT}{}", &spec[..at], &spec[at..]))
}

/// The binary for `arch`: read from `given` or compiled, then checked. Returns the bytes.
///
/// # Errors
/// Reading, compiling or checking failed.
pub fn binary(arch: &str, given: Option<&Path>) -> Result<Vec<u8>> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => compile(arch)?,
    };
    let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > MAX_BINARY {
        bail!("{}: {} bytes, over the {MAX_BINARY}-byte bound", path.display(), meta.len());
    }
    let bin = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    check_binary(&bin, arch, &path.display().to_string())?;
    Ok(bin)
}

/// A reproducible tar of a flattened tree (sorted, uid/gid 0, one `mtime`), the extension
/// image's single layer.
///
/// # Errors
/// I/O errors of the tar builder.
pub fn layer_tar(tree: &Tree, mtime: u64) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let entries: BTreeMap<&str, &Entry> = tree.entries().collect();
    for (path, e) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(e.mode & 0o7777);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, path, &d[..])?;
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, t)?;
            }
            Kind::Special(what) => bail!("{path}: {what} in an extension image"),
        }
    }
    Ok(b.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_version_is_the_crate_version_and_the_tree_validates() {
        let m = manifest().unwrap();
        assert_eq!(m.metadata.name, "talos-agent");
        let t = tree(b"\x7fELF".to_vec()).unwrap();
        t.validate().unwrap();
        crate::extension::service::ServiceSpec::parse("talos-agent.yaml", SERVICE_SPEC).unwrap();
    }

    #[test]
    fn elf_checks() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 183;
        check_binary(&elf, "arm64", "x").unwrap();
        assert!(check_binary(&elf, "amd64", "x").unwrap_err().to_string().contains("machine 183"));
        assert!(check_binary(b"#!/bin/sh\n", "arm64", "x").is_err());
    }
}
