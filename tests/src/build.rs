//! The builder behind `scripts/fixtures` (TEST FIXTURES, never shipped): a stand-in Talos v1.10.5
//! release, stand-in releases of the newest patch of every minor from 1.10 on
//! ([`release_versions`]) and stand-in extension images, built from Debian's arm64 and amd64
//! cloud kernels and `busybox-static`, written as OCI image layouts under `target/fixtures/oci/`.
//! Every release shares one kernel-and-initramfs layer and the extension images; what differs is
//! what differs upstream: the tag, `talos.spdx.json` from 1.11, and the sbc-raspberrypi version
//! the overlays bundle pins.
//!
//! Layout of `target/fixtures/` (everything here is generated; nothing is committed):
//! - `debs/*.deb` (downloaded by the script) and `debs/<deb name>/` (extracted with `dpkg-deb -x`);
//! - `build/<arch>/`: `rootfs/` → `rootfs.sqsh`, `initramfs/` → `initramfs.cpio` →
//!   `initramfs.xz`, `vmlinuz` (arm64: EFI zboot), `Image` (arm64, only if Debian's was compressed);
//! - `oci/{imager,spin,tailscale,sbc-raspberrypi,extensions,overlays}/`: the OCI image layouts
//!   pushed by the script (the last three: [`crate::bundles`]), and `oci/<name>@<version>/` for the
//!   other releases ([`image_names`]);
//! - `build/description.json` + `build/inputs.key`: the cache (a run whose inputs — debs, init
//!   binaries, this program, the epoch — are unchanged rebuilds nothing);
//! - `fixtures.json.pending` and `push.list`, which the script turns into `fixtures.json` after a
//!   successful push.
//!
//! Reproducibility: every file gets mtime `SOURCE_DATE_EPOCH` (default [`DEFAULT_EPOCH`]), uid/gid
//! 0, sorted entries (`cpio --reproducible -R 0:0`, `mksquashfs -all-root -mkfs-time -all-time`,
//! deterministic tars and gzip, zstd is deterministic for a given level).

use crate::bundles;
use crate::extensions::{Extension, SPIN, TAILSCALE};
use crate::fixtures::{ArchFixtures, ExtensionInfo, Fixtures, PushedImage, SCHEMA};
use crate::kmod;
use crate::oci::{rfc3339, Layer, LayerBuilder, Layout};
use crate::zboot;
use anyhow::{bail, ensure, Context, Result};
use boot_artifact::oci::Platform;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Talos version the stand-in release pretends to be.
pub const TALOS_VERSION: &str = "v1.10.5";
/// Repository of the Talos imager image (under ghcr.io upstream).
pub const IMAGER_REPOSITORY: &str = "siderolabs/imager";
/// Default SOURCE_DATE_EPOCH: 2025-07-01T00:00:00Z (around the Talos v1.10.5 release).
pub const DEFAULT_EPOCH: u64 = 1_751_328_000;
/// zstd level of the zboot payload (as the kernel build: `zstd -22 --ultra`).
pub const ZBOOT_ZSTD_LEVEL: u32 = 22;
/// zstd level of `initramfs.xz` and of `rootfs.sqsh` (Talos ≥ 1.8 uses 18).
pub const INITRAMFS_ZSTD_LEVEL: u32 = 18;
/// Bump to invalidate every cached build output.
const BUILD_FORMAT: &str = "moonboot-fixtures-build-2";
/// The two architectures, in GOARCH spelling.
pub const ARCHES: [&str; 2] = ["arm64", "amd64"];

/// Modules the stand-in init needs (or a later network test will), when Debian builds them as
/// modules; their dependencies are added. Talos builds all of these in.
pub const WANTED_MODULES: &[&str] =
    &["loop", "squashfs", "overlay", "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net"];

/// Kernel config symbols recorded in `fixtures.json`.
pub const CONFIG_SYMBOLS: &[&str] = &[
    "CONFIG_BLK_DEV_LOOP",
    "CONFIG_SQUASHFS",
    "CONFIG_SQUASHFS_ZSTD",
    "CONFIG_OVERLAY_FS",
    "CONFIG_VIRTIO",
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_MMIO",
    "CONFIG_VIRTIO_BLK",
    "CONFIG_VIRTIO_NET",
    "CONFIG_DEVTMPFS",
    "CONFIG_RD_ZSTD",
    "CONFIG_RD_XZ",
    "CONFIG_MODULE_DECOMPRESS",
    "CONFIG_MODULE_SIG_FORCE",
    "CONFIG_KEXEC",
    "CONFIG_KEXEC_FILE",
    "CONFIG_EFI_ZBOOT",
];

/// Busybox applets linked in the stand-in root's `/usr/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "cat",
    "chroot",
    "cp",
    "date",
    "dmesg",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "head",
    "hostname",
    "ifconfig",
    "ip",
    "kill",
    "ln",
    "ls",
    "mkdir",
    "mount",
    "mv",
    "nc",
    "ping",
    "poweroff",
    "printf",
    "ps",
    "reboot",
    "rm",
    "route",
    "sed",
    "sleep",
    "switch_root",
    "tail",
    "test",
    "true",
    "udhcpc",
    "umount",
    "uname",
    "wc",
    "wget",
];

/// One architecture's inputs, as the script passes them.
#[derive(Debug, Clone)]
pub struct ArchInput {
    /// `arm64` or `amd64`.
    pub arch: String,
    /// The Debian kernel package (`linux-image-<abi>-cloud-<arch>_*.deb`).
    pub kernel_deb: PathBuf,
    /// The Debian `busybox-static` package for this architecture.
    pub busybox_deb: PathBuf,
    /// The static stand-in init built for this architecture.
    pub init: PathBuf,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// `target/fixtures` (absolute).
    pub out: PathBuf,
    /// Both architectures' inputs.
    pub inputs: Vec<ArchInput>,
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
    /// `127.0.0.1:PORT` the script will push to.
    pub registry: String,
    /// Rebuild even when the inputs are unchanged.
    pub force: bool,
}

pub(crate) fn log(msg: &str) {
    eprintln!("fixtures: {msg}");
}

/// Runs a command; errors carry the command line and its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown} (is it installed? run scripts/setup)"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// `path size mtime` — a cheap identity of an input file for cache keys.
pub(crate) fn stamp(path: &Path) -> Result<String> {
    let m = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mtime = m.modified()?.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    Ok(format!("{} {} {mtime}", path.display(), m.len()))
}

pub(crate) fn key_of(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

pub(crate) fn write_file(path: &Path, data: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub(crate) fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

pub(crate) fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    mkdir(path)
}

/// Sets the mtime of every file and directory under `root` (not following symlinks, which the
/// consumers of these trees override anyway) to `epoch`, children before parents.
fn set_tree_mtime(root: &Path, epoch: u64) -> Result<()> {
    let t = UNIX_EPOCH + Duration::from_secs(epoch);
    fn walk(p: &Path, t: SystemTime) -> Result<()> {
        let meta = fs::symlink_metadata(p)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        if meta.is_dir() {
            for e in fs::read_dir(p)? {
                walk(&e?.path(), t)?;
            }
        }
        File::open(p)?.set_modified(t).with_context(|| format!("setting the mtime of {}", p.display()))?;
        Ok(())
    }
    walk(root, t)
}

/// Relative paths of everything under `root`, sorted bytewise (parents before children).
fn sorted_tree(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, p: &Path, out: &mut Vec<String>) -> Result<()> {
        for e in fs::read_dir(p)? {
            let e = e?;
            let path = e.path();
            out.push(path.strip_prefix(root)?.to_string_lossy().into_owned());
            if e.file_type()?.is_dir() {
                walk(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Extracts a .deb under `out/debs/<name>/` unless already extracted from the same file.
pub fn extract_deb(deb: &Path, debs_dir: &Path) -> Result<PathBuf> {
    let name = deb.file_name().context("deb without a file name")?.to_string_lossy();
    let dest = debs_dir.join(name.trim_end_matches(".deb"));
    let marker = dest.join(".moonboot-extracted");
    let want = stamp(deb)?;
    if fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(dest);
    }
    log(&format!("extracting {}", deb.display()));
    fresh_dir(&dest)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dest))?;
    fs::write(&marker, want)?;
    Ok(dest)
}

fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

pub(crate) fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no {prefix}* in {}", dir.display()),
        _ => bail!("several {prefix}* in {}: {found:?}", dir.display()),
    }
}

/// Everything learnt about one architecture while building it.
struct ArchBuild {
    arch: String,
    fixtures: ArchFixtures,
}

fn qemu_for(arch: &str) -> (String, Vec<String>, String) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match arch {
        "arm64" => {
            ("qemu-system-aarch64".into(), s(&["-M", "virt", "-cpu", "cortex-a57", "-m", "1536"]), "ttyAMA0".into())
        }
        _ => ("qemu-system-x86_64".into(), s(&["-m", "1536"]), "ttyS0".into()),
    }
}

fn os_release() -> String {
    format!(
        "NAME=\"Talos (moonboot stand-in)\"\nID=talos\nVERSION_ID={TALOS_VERSION}\n\
         PRETTY_NAME=\"moonboot stand-in of Talos ({TALOS_VERSION}), TEST FIXTURE\"\n\
         HOME_URL=\"https://www.talos.dev/\"\nMOONBOOT_STANDIN=1\n"
    )
}

/// `mksquashfs` as Talos does for its root and extensions (zstd, `-all-root -noappend`), with
/// every timestamp set to `epoch`.
pub fn mksquashfs(dir: &Path, out: &Path, epoch: u64) -> Result<()> {
    let _ = fs::remove_file(out);
    let e = epoch.to_string();
    run(Command::new("mksquashfs")
        .arg(dir)
        .arg(out)
        .args(["-noappend", "-all-root", "-no-xattrs", "-no-progress", "-quiet"])
        .args(["-comp", "zstd", "-Xcompression-level", &INITRAMFS_ZSTD_LEVEL.to_string()])
        .args(["-mkfs-time", &e, "-all-time", &e]))?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Packs the tree `stage` into a reproducible newc cpio (`cpio --reproducible -R 0:0`, sorted,
/// every mtime `epoch`) at `cpio_path`, and compresses it with zstd into `out`.
pub fn cpio_zstd(stage: &Path, cpio_path: &Path, out: &Path, epoch: u64) -> Result<()> {
    set_tree_mtime(stage, epoch)?;
    let list = sorted_tree(stage)?.join("\n") + "\n";
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--reproducible", "-R", "0:0", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(File::create(cpio_path)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cpio (is it installed? run scripts/setup)")?;
    child.stdin.take().expect("piped").write_all(list.as_bytes())?;
    let res = child.wait_with_output()?;
    if !res.status.success() {
        bail!("cpio failed: {}", String::from_utf8_lossy(&res.stderr).trim());
    }
    run(Command::new("zstd")
        .arg(format!("-{INITRAMFS_ZSTD_LEVEL}"))
        .args(["-T0", "-q", "-f", "--no-progress"])
        .arg(cpio_path)
        .arg("-o")
        .arg(out))?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Builds the stand-in Talos root of one architecture into `rootfs.sqsh`.
fn build_rootfs(dir: &Path, arch: &str, busybox: &Path, epoch: u64) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    fresh_dir(&root)?;
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "var",
        "usr/lib",
        "etc/cri/conf.d",
        "usr/local/etc/containers",
        "usr/local/lib/containers",
    ] {
        mkdir(&root.join(d))?;
    }
    write_file(&root.join("etc/os-release"), os_release(), 0o644)?;
    write_file(
        &root.join("usr/share/moonboot-standin/README"),
        format!(
            "moonboot stand-in of the Talos {TALOS_VERSION} root filesystem for linux/{arch}.\n\
             TEST FIXTURE built by moonboot's scripts/fixtures from Debian packages. Not Talos.\n"
        ),
        0o644,
    )?;
    let bb = fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    write_file(&root.join("usr/bin/busybox"), bb, 0o755)?;
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", root.join("usr/bin").join(applet))?;
    }
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/bin"), ("lib", "usr/lib")] {
        symlink(target, root.join(link))?;
    }
    set_tree_mtime(&root, epoch)?;
    let sqsh = dir.join("rootfs.sqsh");
    mksquashfs(&root, &sqsh, epoch)?;
    Ok(sqsh)
}

/// Builds `initramfs.xz` (zstd of a newc cpio: init, rootfs.sqsh, the modules).
pub(crate) fn build_initramfs(
    dir: &Path,
    init: &Path,
    sqsh: &Path,
    modules_dir: &Path,
    kernel_release: &str,
    modules: &[kmod::Module],
    epoch: u64,
) -> Result<PathBuf> {
    let stage = dir.join("initramfs");
    fresh_dir(&stage)?;
    write_file(&stage.join("init"), fs::read(init).with_context(|| format!("reading {}", init.display()))?, 0o755)?;
    fs::copy(sqsh, stage.join("rootfs.sqsh"))?;
    fs::set_permissions(stage.join("rootfs.sqsh"), fs::Permissions::from_mode(0o644))?;
    for d in ["dev", "proc", "sys"] {
        mkdir(&stage.join(d))?;
    }
    let mod_root = stage.join("lib/modules").join(kernel_release);
    let mut load_list = String::from(
        "# TEST FIXTURE: modules the moonboot stand-in init loads, in this order (dependencies first).\n\
         # Talos builds these into its kernel; Debian's cloud kernel has them as modules.\n",
    );
    for m in modules {
        let bytes = kmod::read_module(&modules_dir.join(&m.rel_path))?;
        let rel = m.rel_path.to_string_lossy();
        let rel = ["xz", "zst", "gz"]
            .iter()
            .fold(rel.to_string(), |r, ext| r.strip_suffix(&format!(".{ext}")).map(str::to_string).unwrap_or(r));
        write_file(&mod_root.join(&rel), bytes, 0o644)?;
        load_list.push_str(&rel);
        load_list.push('\n');
    }
    if !modules.is_empty() {
        write_file(&mod_root.join("modules.load"), load_list, 0o644)?;
    }
    let xz = dir.join("initramfs.xz");
    cpio_zstd(&stage, &dir.join("initramfs.cpio"), &xz, epoch)?;
    Ok(xz)
}

/// The raw arm64 `Image`: Debian's `vmlinuz` if it is one, else its unpacked form under `dir`
/// (boot_artifact's unpacker: gzip or zstd, bounded, magic checked).
fn arm64_raw_image(vmlinuz: &Path, dir: &Path) -> Result<PathBuf> {
    let mut head = Vec::new();
    File::open(vmlinuz)?.take(64).read_to_end(&mut head)?;
    if boot_artifact::kernel::arm64_header(&head).is_some() {
        return Ok(vmlinuz.to_path_buf());
    }
    let mut raw = Vec::new();
    boot_artifact::kernel::unpack_arm64(
        &mut File::open(vmlinuz)?,
        &mut raw,
        boot_artifact::kernel::DEFAULT_MAX_KERNEL_SIZE,
    )
    .with_context(|| format!("{}: not an arm64 kernel", vmlinuz.display()))?;
    let out = dir.join("Image");
    write_file(&out, raw, 0o644)?;
    Ok(out)
}

/// Wraps the arm64 `Image` in EFI zboot (zstd), reusing the previous result for the same Image.
fn arm64_zboot(image: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("vmlinuz");
    let key_file = dir.join("vmlinuz.key");
    let key = key_of(&[BUILD_FORMAT.into(), stamp(image)?, format!("zstd {ZBOOT_ZSTD_LEVEL}")]);
    if out.exists() && fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        return Ok(out);
    }
    log(&format!("compressing {} (zstd -{ZBOOT_ZSTD_LEVEL} --ultra) into EFI zboot", image.display()));
    let raw_len = fs::metadata(image)?.len();
    let payload = run(Command::new("zstd")
        .arg(format!("-{ZBOOT_ZSTD_LEVEL}"))
        .args(["--ultra", "-T0", "-q", "-c", "--no-progress"])
        .arg(image))?;
    let wrapped = zboot::wrap_compressed(&payload, u32::try_from(raw_len)?, "zstd");
    write_file(&out, wrapped, 0o644)?;
    fs::write(&key_file, key)?;
    Ok(out)
}

fn build_arch(input: &ArchInput, opts: &Options) -> Result<ArchBuild> {
    let arch = input.arch.as_str();
    let debs = opts.out.join("debs");
    let dir = opts.out.join("build").join(arch);
    mkdir(&dir)?;
    let kroot = extract_deb(&input.kernel_deb, &debs)?;
    let bbroot = extract_deb(&input.busybox_deb, &debs)?;
    let modules_base = kroot.join("lib/modules");
    let modules_dir = only_entry(&modules_base, "")?;
    let kernel_release = modules_dir.file_name().unwrap().to_string_lossy().into_owned();
    let vmlinuz_deb = kroot.join("boot").join(format!("vmlinuz-{kernel_release}"));
    let config_path = kroot.join("boot").join(format!("config-{kernel_release}"));
    let config = fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let mut config_values = BTreeMap::new();
    for sym in CONFIG_SYMBOLS {
        config_values.insert(sym.to_string(), kmod::config_value(&config, sym).unwrap_or_else(|| "unset".into()));
    }
    ensure!(
        config_values["CONFIG_RD_ZSTD"] == "y",
        "{kernel_release} lacks CONFIG_RD_ZSTD: it cannot unpack a zstd initramfs"
    );
    let busybox = bbroot.join("bin/busybox");
    ensure!(busybox.exists(), "no bin/busybox in {}", input.busybox_deb.display());

    let (kernel_image, vmlinuz) = match arch {
        "arm64" => {
            let image = arm64_raw_image(&vmlinuz_deb, &dir)?;
            let z = arm64_zboot(&image, &dir)?;
            (image, z)
        }
        "amd64" => {
            let mut head = [0u8; 0x206];
            File::open(&vmlinuz_deb)?.read_exact(&mut head)?;
            ensure!(&head[0x202..0x206] == b"HdrS", "{}: not a bzImage", vmlinuz_deb.display());
            (vmlinuz_deb.clone(), vmlinuz_deb.clone())
        }
        other => bail!("unsupported architecture {other}"),
    };

    let modules = kmod::resolve(&modules_dir, WANTED_MODULES)
        .with_context(|| format!("resolving kernel modules of {kernel_release}"))?;
    log(&format!(
        "{arch}: kernel {kernel_release}; initramfs modules: {}",
        modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
    ));
    let sqsh = build_rootfs(&dir, arch, &busybox, opts.epoch)?;
    let initramfs = build_initramfs(&dir, &input.init, &sqsh, &modules_dir, &kernel_release, &modules, opts.epoch)?;
    let (qemu_binary, qemu_machine_args, console) = qemu_for(arch);
    Ok(ArchBuild {
        arch: arch.to_string(),
        fixtures: ArchFixtures {
            kernel_package: deb_field(&input.kernel_deb, "Package")?,
            kernel_package_version: deb_field(&input.kernel_deb, "Version")?,
            kernel_release: kernel_release.clone(),
            kernel_image,
            kernel_config: config_path,
            vmlinuz,
            initramfs,
            rootfs_sqsh: sqsh,
            modules_dir: modules_dir.clone(),
            initramfs_modules: modules.iter().map(|m| m.rel_path.to_string_lossy().into_owned()).collect(),
            kernel_config_values: config_values,
            busybox,
            init: input.init.clone(),
            qemu_binary,
            qemu_machine_args,
            console,
        },
    })
}

pub(crate) fn labels(what: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "org.opencontainers.image.description".to_string(),
        format!("moonboot stand-in of {what}: TEST FIXTURE built from Debian packages, not the real image"),
    )])
}

/// The stand-in imager images: [`TALOS_VERSION`] under `oci/imager`, and each of
/// [`release_versions`] under `oci/imager@<version>`, all sharing one kernel-and-initramfs layer
/// (one blob in the registry, hard-linked between the layouts).
fn build_imagers(builds: &[ArchBuild], opts: &Options, images: &mut BTreeMap<String, PushedImage>) -> Result<()> {
    let inputs: Vec<(&str, &Path, &Path)> = builds
        .iter()
        .map(|b| (b.arch.as_str(), b.fixtures.vmlinuz.as_path(), b.fixtures.initramfs.as_path()))
        .collect();
    let shared = imager_boot_layer(&inputs, opts.epoch)?;
    let arches: Vec<&str> = inputs.iter().map(|i| i.0).collect();
    let first = opts.out.join("oci/imager");
    images.insert("imager".into(), imager_image_from(&first, TALOS_VERSION, &shared, &arches, opts.epoch, None)?);
    for version in release_versions() {
        let dir = opts.out.join(format!("oci/imager@{version}"));
        images.insert(
            format!("imager@{version}"),
            imager_image_from(&dir, &version, &shared, &arches, opts.epoch, Some(&first))?,
        );
    }
    Ok(())
}

/// The newest patch of every Talos minor from 1.10 on that moonboot supports
/// ([`kernel_cmdline::quirks::RELEASES`]): `v1.10.9`, `v1.11.6`, `v1.12.11`, `v1.13.9`,
/// `v1.14.0`. `scripts/fixtures` serves a stand-in release of each beside [`TALOS_VERSION`]:
/// imager image, extensions bundle, overlays bundle and the sbc-raspberrypi version it pins.
pub fn release_versions() -> Vec<String> {
    kernel_cmdline::quirks::RELEASES.iter().filter(|r| r.minor >= (1, 10)).map(|r| r.newest.to_string()).collect()
}

/// Writes, at `dir`, the OCI image layout of a stand-in `siderolabs/imager` tagged `tag`: one
/// layer shared by every architecture with `usr/install/<arch>/{vmlinuz,initramfs.xz}` from
/// `inputs` (`(arch, vmlinuz, initramfs)`), and a small platform marker layer per architecture.
pub fn imager_image(dir: &Path, tag: &str, inputs: &[(&str, &Path, &Path)], epoch: u64) -> Result<PushedImage> {
    let shared = imager_boot_layer(inputs, epoch)?;
    let arches: Vec<&str> = inputs.iter().map(|i| i.0).collect();
    imager_image_from(dir, tag, &shared, &arches, epoch, None)
}

/// The layer every architecture's stand-in imager image shares: `usr/install/<arch>/vmlinuz` and
/// `initramfs.xz` of each of `inputs` (`(arch, vmlinuz, initramfs)`).
fn imager_boot_layer(inputs: &[(&str, &Path, &Path)], epoch: u64) -> Result<Layer> {
    let mut shared = LayerBuilder::new(epoch);
    let mut names = Vec::new();
    for (arch, vmlinuz, initramfs) in inputs {
        let base = format!("usr/install/{arch}");
        shared.file(&format!("{base}/vmlinuz"), fs::read(vmlinuz)?, 0o644);
        shared.file(&format!("{base}/initramfs.xz"), fs::read(initramfs)?, 0o644);
        names.push(*arch);
    }
    names.sort_unstable();
    let both = if names.len() == 2 { " (both architectures)" } else { "" };
    shared.build(&format!("usr/install/{{{}}}/{{vmlinuz,initramfs.xz}}{both}", names.join(",")))
}

/// The stand-in `usr/install/<arch>/talos.spdx.json` of Talos `tag` (≥ 1.11: talos `Dockerfile`
/// stage `install-artifacts-<arch>`, `COPY --from=sbom-<arch> /talos-<arch>.spdx.json
/// /usr/install/<arch>/talos.spdx.json`): an SPDX 2.3 JSON document that says it is a stand-in.
pub fn standin_spdx(tag: &str, arch: &str, epoch: u64) -> String {
    format!(
        "{{\"spdxVersion\":\"SPDX-2.3\",\"dataLicense\":\"CC0-1.0\",\"SPDXID\":\"SPDXRef-DOCUMENT\",\
         \"name\":\"talos-{arch} {tag} (moonboot stand-in: TEST FIXTURE, not Talos)\",\
         \"documentNamespace\":\"https://moonboot.invalid/spdx/talos-{arch}-{tag}\",\
         \"creationInfo\":{{\"created\":\"{}\",\"creators\":[\"Tool: moonboot-tests fixtures\"]}},\
         \"packages\":[]}}\n",
        rfc3339(epoch)
    )
}

/// Writes the stand-in imager image `tag` at `dir` over the shared boot layer `shared`; a Talos
/// ≥ 1.11 tag ([`Quirk::Spdx`](kernel_cmdline::quirks::Quirk::Spdx)) also gets a layer with
/// [`standin_spdx`] for every architecture. With `link_from`, the shared blob is hard-linked from
/// that layout instead of written again.
fn imager_image_from(
    dir: &Path,
    tag: &str,
    shared: &Layer,
    arches: &[&str],
    epoch: u64,
    link_from: Option<&Path>,
) -> Result<PushedImage> {
    use kernel_cmdline::quirks::{Quirk, Quirks};
    log(&format!("writing the imager image layout {}", dir.display()));
    let upstream = format!("ghcr.io/{IMAGER_REPOSITORY}:{tag}");
    let layout = Layout::create(dir)?;
    if let Some(from) = link_from {
        layout.link_blob(from, &shared.digest)?;
    }
    let version: kernel_cmdline::preset::TalosVersion = tag.parse()?;
    let sbom = if Quirks::new(version).has(Quirk::Spdx) {
        let mut l = LayerBuilder::new(epoch);
        for arch in arches {
            l.file(&format!("usr/install/{arch}/talos.spdx.json"), standin_spdx(tag, arch, epoch), 0o644);
        }
        Some(l.build("usr/install/<arch>/talos.spdx.json")?)
    } else {
        None
    };
    let mut manifests = Vec::new();
    let mut digests = BTreeMap::new();
    for arch in arches {
        let mut l = LayerBuilder::new(epoch);
        l.file(
            "usr/share/moonboot-standin/platform",
            format!("linux/{arch}\nmoonboot stand-in of {upstream}: TEST FIXTURE, not Talos\n"),
            0o644,
        );
        let arch_layer = l.build(&format!("platform marker linux/{arch}"))?;
        let mut layers = vec![shared];
        layers.extend(sbom.as_ref());
        layers.push(&arch_layer);
        let desc = layout.put_image(&Platform::linux(arch), &layers, epoch, &labels(&upstream), &BTreeMap::new())?;
        digests.insert(arch.to_string(), desc.digest.to_string());
        manifests.push(desc);
    }
    let dir = layout.dir().to_path_buf();
    let index = layout.finish_index(manifests, &labels(&upstream), tag)?;
    Ok(PushedImage {
        repository: IMAGER_REPOSITORY.to_string(),
        tag: tag.to_string(),
        reference: String::new(),
        upstream_reference: upstream,
        index_digest: index.digest.to_string(),
        manifests: digests,
        layout: dir,
        extension: None,
    })
}

fn build_extension(ext: &Extension, opts: &Options) -> Result<PushedImage> {
    let mut layers = Vec::new();
    for arch in ARCHES {
        layers.push((arch, ext.layer(arch, opts.epoch)?));
    }
    extension_image(ext, &opts.out.join("oci").join(ext.name), ext.version, &layers, opts.epoch)
}

/// Writes, at `dir`, the OCI image layout of extension `ext` tagged `tag`: one image per
/// `(arch, layer)` under one index.
pub fn extension_image(
    ext: &Extension,
    dir: &Path,
    tag: &str,
    layers: &[(&str, Layer)],
    epoch: u64,
) -> Result<PushedImage> {
    let upstream = ext.upstream_reference();
    let layout = Layout::create(dir)?;
    let mut manifests = Vec::new();
    let mut digests = BTreeMap::new();
    for (arch, layer) in layers {
        let desc = layout.put_image(&Platform::linux(arch), &[layer], epoch, &labels(&upstream), &BTreeMap::new())?;
        digests.insert(arch.to_string(), desc.digest.to_string());
        manifests.push(desc);
    }
    let dir = layout.dir().to_path_buf();
    let index = layout.finish_index(manifests, &labels(&upstream), tag)?;
    Ok(PushedImage {
        repository: format!("siderolabs/{}", ext.name),
        tag: tag.to_string(),
        reference: String::new(),
        upstream_reference: upstream,
        index_digest: index.digest.to_string(),
        manifests: digests,
        layout: dir,
        extension: Some(ExtensionInfo { name: ext.name.to_string(), version: ext.version.to_string() }),
    })
}

/// Short names of the stand-in v1.10.5 images (keys of `fixtures.json`'s `images`, directories
/// under `oci/`). The other releases add `imager@<v>`, `extensions@<v>`, `overlays@<v>` for each
/// of [`release_versions`] and `sbc-raspberrypi@<v>` for each sbc-raspberrypi version they pin
/// besides [`bundles::SBC_RASPBERRYPI_VERSION`] ([`image_names`]).
pub const IMAGE_NAMES: [&str; 6] = ["imager", "spin", "tailscale", "sbc-raspberrypi", "extensions", "overlays"];

/// The sbc-raspberrypi version the overlays bundle of Talos `version` pins
/// ([`kernel_cmdline::quirks::Quirks::sbc_raspberrypi`]).
pub fn sbc_raspberrypi_pin(version: &str) -> Result<&'static str> {
    let v: kernel_cmdline::preset::TalosVersion = version.parse()?;
    kernel_cmdline::quirks::Quirks::new(v)
        .sbc_raspberrypi()
        .with_context(|| format!("no sbc-raspberrypi pin for {version}"))
}

/// Every key of `fixtures.json`'s `images` (and directory under `oci/`), the stand-in v1.10.5
/// release's first.
pub fn image_names() -> Result<Vec<String>> {
    let mut names: Vec<String> = IMAGE_NAMES.iter().map(|n| n.to_string()).collect();
    let mut sbc = std::collections::BTreeSet::new();
    for v in release_versions() {
        for what in ["imager", "extensions", "overlays"] {
            names.push(format!("{what}@{v}"));
        }
        let pin = sbc_raspberrypi_pin(&v)?;
        if pin != bundles::SBC_RASPBERRYPI_VERSION && sbc.insert(pin) {
            names.push(format!("sbc-raspberrypi@{pin}"));
        }
    }
    Ok(names)
}

/// The stand-in overlay images, then the extensions and overlays bundles of Talos v1.10.5 and of
/// each of [`release_versions`]: each extensions bundle pins the stand-in extensions (already in
/// `images`), each overlays bundle the sbc-raspberrypi version its release pins, by index digest.
/// Bundles with the same content are the same image under another tag.
fn build_bundles(images: &mut BTreeMap<String, PushedImage>, opts: &Options) -> Result<()> {
    let started = std::time::Instant::now();
    let oci = opts.out.join("oci");
    let (digests, descriptions) = bundles::standin_extensions_files(&[
        (&SPIN, images["spin"].index_digest.as_str()),
        (&TAILSCALE, images["tailscale"].index_digest.as_str()),
    ]);
    let mut releases = vec![(String::new(), TALOS_VERSION.to_string())];
    releases.extend(release_versions().into_iter().map(|v| (format!("@{v}"), v)));
    for (suffix, version) in releases {
        let pin = sbc_raspberrypi_pin(&version)?;
        let sbc_key = if pin == bundles::SBC_RASPBERRYPI_VERSION {
            "sbc-raspberrypi".to_string()
        } else {
            format!("sbc-raspberrypi@{pin}")
        };
        if !images.contains_key(&sbc_key) {
            let sbc = bundles::build_sbc_raspberrypi(&oci.join(&sbc_key), pin, opts.epoch)?;
            images.insert(sbc_key.clone(), sbc);
        }
        let extensions = bundles::build_extensions_bundle(
            &oci.join(format!("extensions{suffix}")),
            bundles::EXTENSIONS_REPOSITORY,
            &version,
            &digests,
            &descriptions,
            opts.epoch,
        )?;
        let overlays = bundles::build_overlays_bundle(
            &oci.join(format!("overlays{suffix}")),
            bundles::OVERLAYS_REPOSITORY,
            &version,
            &bundles::standin_overlays_yaml(pin, &images[&sbc_key].index_digest),
            opts.epoch,
        )?;
        images.insert(format!("extensions{suffix}"), extensions);
        images.insert(format!("overlays{suffix}"), overlays);
    }
    log(&format!(
        "wrote the sbc-raspberrypi, extensions and overlays image layouts ({} ms)",
        started.elapsed().as_millis()
    ));
    Ok(())
}

fn inputs_key(opts: &Options) -> Result<String> {
    let exe = std::env::current_exe().context("locating the fixtures program")?;
    let mut lines = vec![BUILD_FORMAT.to_string(), stamp(&exe)?, opts.epoch.to_string()];
    for i in &opts.inputs {
        lines.push(i.arch.clone());
        for p in [&i.kernel_deb, &i.busybox_deb, &i.init] {
            lines.push(stamp(p)?);
        }
    }
    Ok(key_of(&lines))
}

/// Where `scripts/setup` puts Debian trixie's `ipxe-<arch>.efi` (whatever version trixie serves).
pub fn netboot_peers_dir() -> PathBuf {
    crate::fixtures::fixtures_dir().parent().expect("target/fixtures has a parent").join("netboot-peers")
}

/// The iPXE binaries as the fixture registry serves them to `imager build` (which pulls them for
/// `netboot/tftp/` whenever `--ipxe-dir` lacks them): `moonboot/board-inputs` tagged with the tag
/// of the imager's `boards/ipxe.inputs` (where `imager publish --ipxe-inputs` pushes), one
/// manifest per architecture holding that architecture's file from [`netboot_peers_dir`] in the
/// artifact layout of `imager publish`. Every fixture build thus finds the tag in the mirror and
/// never asks the origin. The files are what trixie serves today: when those are not the pinned
/// ones (Debian moved on), the imager refuses them and says so. Rebuilt on every run (two small
/// files).
fn ipxe_inputs(opts: &Options) -> Result<PushedImage> {
    use boot_artifact::oci::{media_type, ImageManifest};
    use moonboot_imager::board::inputs;
    let pins = moonboot_imager::board::ipxe_pins()?;
    let tag = inputs::tag(inputs::IPXE, &pins);
    let dir = opts.out.join("oci").join("moonboot-board-inputs-ipxe");
    let layout = Layout::create(&dir)?;
    let config = layout.put_blob(media_type::OCI_EMPTY, b"{}")?;
    let mut descs = Vec::new();
    let mut manifests = BTreeMap::new();
    for arch in ARCHES {
        let file = inputs::ipxe_file(arch);
        let mut layers = Vec::new();
        if let Ok(data) = fs::read(netboot_peers_dir().join(&file)) {
            let mut layer = layout.put_blob("application/octet-stream", &data)?;
            layer.annotations.insert("org.opencontainers.image.title".into(), file);
            layers.push(layer);
        }
        let mut manifest = ImageManifest::new(config.clone(), layers, BTreeMap::new());
        manifest.artifact_type = Some(inputs::ARTIFACT_TYPE.into());
        let mut desc = layout.put_blob(media_type::OCI_MANIFEST, &manifest.to_json())?;
        manifests.insert(arch.to_string(), desc.digest.to_string());
        desc.platform = Some(Platform::linux(arch));
        descs.push(desc);
    }
    let index = layout.finish_index(descs, &BTreeMap::new(), &tag)?;
    let repository = "moonboot/board-inputs".to_string();
    Ok(PushedImage {
        upstream_reference: format!("{}:{tag}", inputs::DEFAULT_REPOSITORY),
        repository,
        tag,
        reference: String::new(),
        index_digest: index.digest.to_string(),
        manifests,
        layout: dir,
        extension: None,
    })
}

/// Fills in the registry-dependent fields.
fn with_registry(mut f: Fixtures, registry: &str) -> Fixtures {
    f.registry = registry.to_string();
    f.mirror = format!("ghcr.io={registry}");
    for img in f.images.values_mut() {
        img.reference = format!("{registry}/{}:{}", img.repository, img.tag);
    }
    f
}

/// Builds (or reuses) everything, writes `fixtures.json.pending` and `push.list`, and returns
/// the description.
pub fn build(opts: &Options) -> Result<Fixtures> {
    let mut arches: Vec<&str> = opts.inputs.iter().map(|i| i.arch.as_str()).collect();
    arches.sort_unstable();
    ensure!(arches == ["amd64", "arm64"], "inputs for exactly arm64 and amd64 are needed, got {arches:?}");
    let build_dir = opts.out.join("build");
    mkdir(&build_dir)?;
    let key = inputs_key(opts)?;
    let key_file = build_dir.join("inputs.key");
    let desc_file = build_dir.join("description.json");
    let cached = !opts.force
        && fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str())
        && image_names()?.iter().all(|n| opts.out.join("oci").join(n).join("index.json").exists());
    let fixtures = match (cached, fs::read(&desc_file)) {
        (true, Ok(bytes)) => {
            log("inputs unchanged: reusing the built images");
            serde_json::from_slice(&bytes).context("reading the cached description")?
        }
        _ => {
            let _ = fs::remove_file(&key_file);
            let mut builds = Vec::new();
            for arch in ["arm64", "amd64"] {
                let input = opts.inputs.iter().find(|i| i.arch == arch).expect("checked above");
                builds.push(build_arch(input, opts).with_context(|| format!("building the {arch} fixtures"))?);
            }
            let mut images = BTreeMap::new();
            build_imagers(&builds, opts, &mut images)?;
            images.insert("spin".to_string(), build_extension(&SPIN, opts)?);
            images.insert("tailscale".to_string(), build_extension(&TAILSCALE, opts)?);
            build_bundles(&mut images, opts)?;
            let f = Fixtures {
                schema: SCHEMA,
                note: "TEST FIXTURES built by moonboot's scripts/fixtures from Debian packages: stand-ins, not Talos"
                    .into(),
                talos_version: TALOS_VERSION.to_string(),
                registry: String::new(),
                mirror: String::new(),
                source_date_epoch: opts.epoch,
                images,
                arches: builds.into_iter().map(|b| (b.arch, b.fixtures)).collect(),
            };
            fs::write(&desc_file, serde_json::to_vec_pretty(&f)?)?;
            fs::write(&key_file, &key)?;
            f
        }
    };
    let mut fixtures = fixtures;
    fixtures.images.insert("ipxe-inputs".to_string(), ipxe_inputs(opts)?);
    let fixtures = with_registry(fixtures, &opts.registry);
    let mut push = String::new();
    for img in fixtures.images.values() {
        push.push_str(&format!("{}\t{}\t{}\n", img.layout.display(), img.tag, img.repository));
    }
    fs::write(opts.out.join("push.list"), push)?;
    let mut json = serde_json::to_vec_pretty(&fixtures)?;
    json.push(b'\n');
    fs::write(opts.out.join("fixtures.json.pending"), json)?;
    Ok(fixtures)
}

/// Appends stand-in extensions to a stand-in `initramfs.xz`, the way Talos's imager does (in
/// outline): each extension's `rootfs/` becomes `<i>.sqsh`, `/extensions.yaml` lists them with the
/// metadata of their `manifest.yaml`, and a zstd-compressed newc cpio of those files is appended
/// to the unchanged base bytes. `extensions` are `(OCI layout, tag)` pairs, in layer order.
/// Everything is written under `work` (recreated); returns the path of the combined initramfs.
pub fn initramfs_with_extensions(
    base: &Path,
    extensions: &[(&Path, &str)],
    arch: &str,
    work: &Path,
    epoch: u64,
) -> Result<PathBuf> {
    fresh_dir(work)?;
    let stage = work.join("stage");
    mkdir(&stage)?;
    let mut yaml = String::from("layers:\n");
    for (i, (layout, tag)) in extensions.iter().enumerate() {
        let tree = work.join(format!("ext{i}"));
        mkdir(&tree)?;
        for blob in crate::oci::layout_layers(layout, tag, arch)? {
            tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]))
                .unpack(&tree)
                .with_context(|| format!("unpacking a layer of {}:{tag}", layout.display()))?;
        }
        let manifest = fs::read_to_string(tree.join("manifest.yaml"))
            .with_context(|| format!("{}:{tag} has no manifest.yaml", layout.display()))?;
        let metadata: Vec<&str> = manifest
            .lines()
            .skip_while(|l| !l.starts_with("metadata:"))
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.is_empty())
            .collect();
        yaml.push_str(&format!("    - image: {i}.sqsh\n      metadata:\n"));
        for l in metadata {
            yaml.push_str(&format!("      {l}\n"));
        }
        mksquashfs(&tree.join("rootfs"), &stage.join(format!("{i}.sqsh")), epoch)?;
    }
    write_file(&stage.join("extensions.yaml"), yaml, 0o644)?;
    let ext = work.join("extensions.cpio.zst");
    cpio_zstd(&stage, &work.join("extensions.cpio"), &ext, epoch)?;
    let mut bytes = fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    bytes.extend(fs::read(&ext)?);
    let out = work.join("initramfs.xz");
    write_file(&out, bytes, 0o644)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_says_stand_in() {
        let r = os_release();
        assert!(r.contains("VERSION_ID=v1.10.5\n"));
        assert!(r.contains("TEST FIXTURE"));
    }

    #[test]
    fn registry_fields() {
        let f = Fixtures {
            schema: SCHEMA,
            note: String::new(),
            talos_version: TALOS_VERSION.into(),
            registry: String::new(),
            mirror: String::new(),
            source_date_epoch: 0,
            images: BTreeMap::from([(
                "spin".to_string(),
                PushedImage {
                    repository: "siderolabs/spin".into(),
                    tag: "v0.19.0".into(),
                    reference: String::new(),
                    upstream_reference: String::new(),
                    index_digest: String::new(),
                    manifests: BTreeMap::new(),
                    layout: PathBuf::new(),
                    extension: None,
                },
            )]),
            arches: BTreeMap::new(),
        };
        let f = with_registry(f, "127.0.0.1:5055");
        assert_eq!(f.mirror, "ghcr.io=127.0.0.1:5055");
        assert_eq!(f.images["spin"].reference, "127.0.0.1:5055/siderolabs/spin:v0.19.0");
    }

    #[test]
    fn sorted_tree_puts_parents_first() {
        let d = std::env::temp_dir().join(format!("moonboot-tree-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("lib/modules")).unwrap();
        fs::write(d.join("init"), "x").unwrap();
        fs::write(d.join("lib/modules/a.ko"), "x").unwrap();
        assert_eq!(sorted_tree(&d).unwrap(), vec!["init", "lib", "lib/modules", "lib/modules/a.ko"]);
        set_tree_mtime(&d, 1000).unwrap();
        let m = fs::metadata(d.join("lib")).unwrap().modified().unwrap();
        assert_eq!(m, UNIX_EPOCH + Duration::from_secs(1000));
        fs::remove_dir_all(&d).unwrap();
    }
}
