//! The Debian 12 arm64 cloud guest that stands in for the stock Ubuntu 22.04 ARM64 AMI: built once
//! by `scripts/cloud-guest` (mmdebstrap, cached under `target/cloud-guest/<key>/`), booted here
//! under QEMU the way EC2 Nitro presents a Graviton instance to it:
//!
//! - UEFI firmware (edk2's `AAVMF_CODE.fd`, package `qemu-efi-aarch64`): on arm64, DMI/SMBIOS
//!   reaches the guest only through firmware; QEMU's `-kernel` still works (the firmware starts
//!   the kernel as an EFI application).
//! - SMBIOS type 1 as EC2 sets it: manufacturer `Amazon EC2`, product the instance type, and
//!   `serial` = `uuid` starting with `ec2` — what cloud-init's `ds-identify` (`dscheck_Ec2`,
//!   `ec2_identify`) checks before it enables the Ec2 datasource.
//! - The root file system on `-device nvme` (EBS volumes are NVMe on Nitro); no initramfs, since
//!   Debian's cloud kernel has NVMe and ext4 built in.
//! - `-netdev user` with the virtio NIC: the guest's connections become QEMU's own, so QEMU runs
//!   inside the test's network namespace ([`crate::netns`]) where 169.254.169.254 and the
//!   bastion's address exist.
//!
//! TEST TOOLING: the guest is a fixture, never shipped.

use crate::netns::Netns;
use crate::qemu::Guest;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `scripts/cloud-guest` built (its `guest.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct CloudGuest {
    /// `target/cloud-guest/<key>/` (set after reading).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Kernel release whose modules are in the root (`uname -r` of the fixtures' arm64 kernel).
    pub kernel_release: String,
    /// The guest's cloud-init package version (`22.4.2-1+deb12u…`).
    pub cloud_init_version: String,
}

impl CloudGuest {
    /// The cached root file system image (raw ext4).
    pub fn root_image(&self) -> PathBuf {
        self.dir.join("root.img")
    }
}

/// Runs `scripts/cloud-guest` (a no-op that returns at once when the image for the current inputs
/// is cached; about 8–10 minutes otherwise, with its progress on stderr) and reads what it built.
///
/// # Errors
/// When the script fails (its stderr is passed through) or its output cannot be read.
pub fn ensure() -> Result<CloudGuest> {
    let script = crate::stage1::workspace().join("scripts/cloud-guest");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CLOUD_GUEST="))
        .with_context(|| format!("{} printed no CLOUD_GUEST= line", script.display()))?;
    let dir = PathBuf::from(dir);
    let text = std::fs::read_to_string(dir.join("guest.json"))?;
    let mut guest: CloudGuest = serde_json::from_str(&text).context("parsing guest.json")?;
    guest.dir = dir;
    Ok(guest)
}

/// `-smbios type=1` as EC2 presents an instance: `ec2`-prefixed UUID, the same string as serial.
pub fn ec2_smbios(instance_type: &str, uuid: &str) -> String {
    format!("type=1,manufacturer=Amazon EC2,product={instance_type},serial={uuid},uuid={uuid}")
}

/// One instance: its own files and identity.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The instance's own disk (a copy of [`CloudGuest::root_image`]).
    pub disk: PathBuf,
    /// A writable copy of `AAVMF_VARS.fd`.
    pub vars: PathBuf,
    /// `-smbios` value ([`ec2_smbios`]).
    pub smbios: String,
    /// The NIC's MAC address (IMDS serves it under `network/interfaces/macs/`).
    pub mac: String,
    /// Where the console goes.
    pub log: PathBuf,
    /// QEMU monitor socket (for `system_powerdown`).
    pub monitor: PathBuf,
}

/// edk2's read-only firmware image for arm64 (package `qemu-efi-aarch64`).
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
/// Its variable store template.
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// Copies `src` to `dst` keeping holes (the 1.5 GiB image holds about 300 MB).
///
/// # Errors
/// When `cp` fails.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let st = Command::new("cp").arg("--sparse=always").arg(src).arg(dst).status().context("running cp")?;
    if !st.success() {
        bail!("cp --sparse=always {} {} failed", src.display(), dst.display());
    }
    Ok(())
}

/// Boots `i` with `kernel` (the raw arm64 `Image` of the fixtures' Debian cloud kernel) under QEMU
/// inside `ns` (UEFI, EC2 SMBIOS, NVMe root, user-mode network), console on the returned guest's
/// lines.
///
/// # Errors
/// When QEMU cannot be started.
pub fn boot(ns: &Netns, kernel: &Path, i: &Instance) -> Result<Guest> {
    let mut cmd = ns.command("qemu-system-aarch64");
    cmd.args(["-M", "virt", "-cpu", "max,pauth-impdef=on", "-smp", "2", "-m", "2048", "-nographic", "-no-reboot"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={AAVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", i.vars.display()))
        .arg("-smbios")
        .arg(&i.smbios)
        .arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg("root=/dev/nvme0n1 rw console=ttyAMA0")
        .arg("-drive")
        .arg(format!("if=none,id=root,format=raw,file={}", i.disk.display()))
        .args(["-device", "nvme,drive=root,serial=vol0moonboot"])
        .args(["-netdev", "user,id=n0"])
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,romfile=,mac={}", i.mac))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", i.monitor.display()));
    Guest::spawn(cmd, &i.log)
}

/// Asks the guest to power off (ACPI power button through the QEMU monitor's `system_powerdown`),
/// as `aws ec2 stop-instances` does; the caller waits for QEMU to exit.
///
/// # Errors
/// When the monitor socket cannot be reached.
pub fn power_button(monitor: &Path) -> Result<()> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(monitor)
        .with_context(|| format!("connecting to the QEMU monitor {}", monitor.display()))?;
    s.write_all(b"system_powerdown\n")?;
    Ok(())
}

/// Reads `path` from the ext4 image `disk` after the guest stopped: replays the journal first
/// (`e2fsck -fy`; a guest that kexec'd never unmounted it), then `debugfs -R 'cat PATH'`.
///
/// # Errors
/// When e2fsck finds what it cannot fix, or debugfs fails.
pub fn read_file(disk: &Path, path: &str) -> Result<Vec<u8>> {
    let st = Command::new("e2fsck").args(["-fy"]).arg(disk).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    // 0: clean, 1: errors corrected (a replayed journal counts), anything else is a failure.
    if st.code().is_none_or(|c| c > 1) {
        bail!("e2fsck -fy {} exited {st}", disk.display());
    }
    let out = Command::new("debugfs").arg("-R").arg(format!("cat {path}")).arg(disk).stderr(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("debugfs cat {path} from {} failed", disk.display());
    }
    Ok(out.stdout)
}
