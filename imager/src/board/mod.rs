//! Board disk images: `imager build --board rpi-cm3` writes `rpi-cm3-arm64.raw.xz`, a disk image
//! the BCM2837 boot ROM boots (Raspberry Pi 3, Compute Module 3/3+) and that Talos accepts.
//!
//! The boot chain, each step a real upstream binary pinned in `boards/rpi-cm3.inputs`:
//! boot ROM → MBR slot 1 (FAT) → `bootcode.bin` → `start.elf` reads `config.txt` → loads the
//! mainline CM3 device tree (`device_tree=`) and `u-boot.bin` (rpi_arm64) → U-Boot's UEFI →
//! `EFI/BOOT/BOOTAA64.EFI` (GRUB 2.12) reads `EFI/debian/grub.cfg` → Talos's kernel (an EFI
//! zboot application) with its initramfs and the Raspberry Pi kernel arguments.
//!
//! The layout ([`layout`]; Talos `pkg/machinery/constants` names and sizes): GPT partition 1
//! `EFI` (FAT32, the boot partition MBR slot 1 points at, holding everything above), `META`
//! (1 MiB), `STATE` (100 MiB) and `EPHEMERAL` up to the last usable LBA. Talos creates STATE and
//! EPHEMERAL itself on first boot and grows EPHEMERAL into free space, and every time it writes
//! the GPT it rewrites MBR slot 1 as 0xEE (go-blockdevice v2 `writePMBR`), after which the board
//! never boots again. Here they already exist, sized for the target disk, so Talos has nothing to
//! create and nothing to grow: the image must be built for the exact size of the eMMC or SD card
//! (`--disk-size`; a larger card leaves free space that Talos would grow into). Should Talos
//! write the table anyway, `talos-agent report` restores slot 1: the image's kernel command line
//! asks it to ([`rpi_cm3_kernel_args`]; see [`boot_artifact::hybrid_mbr`]).
//!
//! Where this differs from Talos's `rpi_generic` image, and why:
//! - Kernel, initramfs and `grub.cfg` live on the FAT partition (`A/vmlinuz`, `A/initramfs.xz`)
//!   instead of an XFS `BOOT` partition: the image stays byte-reproducible (no mkfs.xfs with the
//!   current time in its inodes) and a 4 GB CM3 keeps 1 GB more for EPHEMERAL. There is no
//!   `BIOS` partition (x86 only). `talosctl upgrade` would recreate Talos's own layout; re-flash
//!   or netboot instead.
//! - `config.txt` points at the mainline device tree, so Linux sees USB (and the eMMC); the
//!   `dtoverlay=disable-bt`/`disable-wifi` lines are dropped: the CM3 has neither radio, and
//!   they are overlays for the firmware's downstream tree.

pub(crate) mod disk;
pub(crate) mod fat;
pub mod inputs;
pub mod xz;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::hybrid_mbr::SECTOR;

pub use disk::Partition;

/// `boards/rpi-cm3.inputs`: the pinned firmware, U-Boot, device tree and GRUB.
pub const RPI_CM3_INPUTS: &str = include_str!("../../../boards/rpi-cm3.inputs");

/// The kernel arguments a CM3 image adds for moonboot itself, merged before the user's extra
/// arguments (so `-talos_agent.mbr` among them removes it):
/// [`kernel_args::MBR`]`=`[`kernel_args::MBR_REPAIR`], which makes `talos-agent report` check
/// the eMMC's hybrid MBR at start and on every report cycle and restore slot 1 after Talos's
/// `writePMBR` (agent `report/boot_mbr.rs`). Only board images carry it: on any other image
/// there is no hybrid MBR to keep, and the agent then never touches a disk.
///
/// [`kernel_args::MBR`]: boot_artifact::artifact::kernel_args::MBR
/// [`kernel_args::MBR_REPAIR`]: boot_artifact::artifact::kernel_args::MBR_REPAIR
pub fn rpi_cm3_kernel_args(extra: &kernel_cmdline::Cmdline) -> Result<kernel_cmdline::Cmdline> {
    use boot_artifact::artifact::kernel_args;
    let mut line = kernel_cmdline::Cmdline::new();
    line.push(kernel_cmdline::Param::new(kernel_args::MBR, Some(kernel_args::MBR_REPAIR))?)?;
    for p in extra.params() {
        line.push(p.clone())?;
    }
    Ok(line)
}

/// The image's file name for a board and architecture.
pub fn image_name(board: &str, arch: &str) -> String {
    format!("{board}-{arch}.raw.xz")
}

/// Alignment of every partition: 1 MiB, in sectors (what sgdisk and Talos use).
const ALIGN: u64 = 2048;
/// MiB in sectors.
const MIB: u64 = (1 << 20) / SECTOR;
use kernel_cmdline::quirks::{EPHEMERAL_MIN_MIB, META_MIB, STATE_MIB};
/// The smallest boot partition: 256 MiB (Talos's EFI partition is 100 MiB, but here it also
/// holds the kernel and the initramfs).
const MIN_BOOT_MIB: u64 = 256;

/// The default `--disk-size`: a CM3's eMMC, in bytes. The Compute Module 1/3 datasheet (v1.0,
/// §8 "Booting") gives "4GB eMMC"; the user data area of such a part is smaller than 4 × 10⁹
/// bytes: this assumes 7,634,944 sectors of 512 bytes (3,728 MiB, 3.64 GiB), the size Linux
/// reports (`/sys/block/mmcblk0/size`) for common 4 GB eMMC parts. An image for this size
/// leaves EPHEMERAL at least [`EPHEMERAL_MIN_MIB`] for every Talos version ([`layout`]); a larger
/// card takes `--disk-size`.
pub const CM3_EMMC_BYTES: u64 = 7_634_944 * SECTOR;

/// What goes into a board image from the Talos build.
#[derive(Debug, Clone, Copy)]
pub struct Talos<'a> {
    /// Talos's kernel as the release ships it (arm64: an EFI zboot application).
    pub vmlinuz: &'a [u8],
    /// The initramfs with the extensions.
    pub initramfs: &'a [u8],
    /// The kernel command line (the metal preset with the Raspberry Pi overlay's arguments).
    pub cmdline: &'a str,
    /// The Talos version, for the boot menu.
    pub talos_version: &'a str,
}

/// What [`write_rpi_cm3`] wrote, for `build.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// The file name in the output directory.
    pub file: String,
    /// The disk size in bytes (the raw image's size).
    pub disk_size: u64,
    /// GPT disk GUID (derived from the inputs).
    pub disk_guid: uuid::Uuid,
    /// The GPT partitions.
    pub partitions: Vec<Partition>,
    /// The pinned inputs used.
    pub inputs: Vec<inputs::Pin>,
}

/// `config.txt` for a CM3 (Talos sbc-raspberrypi v0.1.5's, adapted as the module docs say).
pub fn config_txt(dtb: &str) -> String {
    format!(
        "# moonboot rpi-cm3: the firmware's settings (sbc-raspberrypi v0.1.5 config.txt for the CM3).\n\
         arm_64bit=1\n\
         kernel=u-boot.bin\n\
         device_tree={dtb}\n\
         enable_uart=1\n\
         gpu_mem=32\n\
         arm_boost=1\n\
         hdmi_safe:0=1\n\
         hdmi_safe:1=1\n"
    )
}

/// `grub.cfg`: one entry booting `A/vmlinuz` with `A/initramfs.xz` and the command line, as
/// Talos's GRUB configuration does (Talos `internal/pkg/bootloader/grub`), from the FAT partition.
pub fn grub_cfg(talos_version: &str, cmdline: &str) -> String {
    format!(
        "# moonboot rpi-cm3: GRUB 2.12 reads this from its built-in prefix, /EFI/debian.\n\
         set default=0\n\
         set timeout=3\n\
         terminal_input console\n\
         terminal_output console\n\
         menuentry \"A - Talos {talos_version}\" {{\n\
         \x20 set gfxpayload=text\n\
         \x20 linux /A/vmlinuz {cmdline}\n\
         \x20 initrd /A/initramfs.xz\n\
         }}\n"
    )
}

/// The GPT layout for a disk of `disk_sectors` whose boot partition needs `boot_sectors`: EFI,
/// META, STATE, then EPHEMERAL to the last usable LBA (`disk_sectors` − 34).
///
/// The layout is the same for every Talos version: Talos's own arm64 layout puts the kernel and
/// initramfs in an EFI partition of [`Quirks::uki_efi_partition_mib`] (2101 MiB from Talos 1.11),
/// which on a [`CM3_EMMC_BYTES`] eMMC would leave EPHEMERAL below Talos's 2 GiB minimum; here the
/// boot partition is sized to its content instead.
///
/// [`Quirks::uki_efi_partition_mib`]: kernel_cmdline::quirks::Quirks::uki_efi_partition_mib
///
/// # Errors
/// A disk too small for the fixed partitions and [`EPHEMERAL_MIN_MIB`] of EPHEMERAL.
pub fn layout(disk_sectors: u64, boot_sectors: u64, guid: &dyn Fn(&str) -> uuid::Uuid) -> Result<Vec<Partition>> {
    let linux = gpt::partition_types::LINUX_FS;
    let mut parts = Vec::new();
    let mut next = ALIGN;
    for (name, t, len) in [
        ("EFI", gpt::partition_types::EFI, boot_sectors),
        ("META", linux.clone(), META_MIB * MIB),
        ("STATE", linux.clone(), STATE_MIB * MIB),
    ] {
        parts.push(Partition { name, type_guid: t, guid: guid(name), first_lba: next, last_lba: next + len - 1 });
        next += len.div_ceil(ALIGN) * ALIGN;
    }
    let last_usable = disk_sectors.saturating_sub(34);
    let min_ephemeral = EPHEMERAL_MIN_MIB * MIB;
    anyhow::ensure!(
        last_usable + 1 >= next + min_ephemeral,
        "a disk of {} MiB is too small: EFI, META and STATE take {} MiB and EPHEMERAL needs at least {} MiB \
         (Talos's EphemeralMinSize)",
        disk_sectors / MIB,
        next / MIB,
        min_ephemeral / MIB
    );
    parts.push(Partition {
        name: "EPHEMERAL",
        type_guid: linux,
        guid: guid("EPHEMERAL"),
        first_lba: next,
        last_lba: last_usable,
    });
    Ok(parts)
}

/// A UUID (RFC 9562 version 4 and variant bits set) from a seed and a name: reproducible, and
/// different for every name and every set of inputs.
fn derived_uuid(seed: &Sha256Digest, name: &str) -> uuid::Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&Sha256Digest::of(format!("{}\n{name}", seed.hex()).as_bytes()).as_bytes()[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// The pins of `boards/rpi-cm3.inputs`.
///
/// # Errors
/// The compiled-in file does not parse (a build of the imager from a broken tree).
pub fn rpi_cm3_pins() -> Result<Vec<inputs::Pin>> {
    inputs::parse(RPI_CM3_INPUTS).map_err(|e| anyhow::anyhow!("boards/rpi-cm3.inputs: {e}"))
}

/// `boards/ipxe.inputs`: the pinned iPXE EFI binaries of `netboot/tftp/` (`ipxe-<arch>.efi`).
pub const IPXE_INPUTS: &str = include_str!("../../../boards/ipxe.inputs");

/// The pins of `boards/ipxe.inputs`.
///
/// # Errors
/// The compiled-in file does not parse.
pub fn ipxe_pins() -> Result<Vec<inputs::Pin>> {
    inputs::parse(IPXE_INPUTS).map_err(|e| anyhow::anyhow!("boards/ipxe.inputs: {e}"))
}

/// Writes `<out>/rpi-cm3-arm64.raw.xz`: the disk image for a CM3 whose eMMC (or SD card) is
/// `disk_size` bytes, from the pinned inputs `loaded` (file name → bytes, each already checked
/// against its pin: [`inputs::load`] or the registry pull of `imager build`) and the Talos build.
///
/// # Errors
/// A disk too small or not a multiple of 512 bytes, an I/O error.
pub fn write_rpi_cm3(out: &Path, talos: &Talos, loaded: BTreeMap<String, Vec<u8>>, disk_size: u64) -> Result<Written> {
    anyhow::ensure!(disk_size % SECTOR == 0, "--disk-size {disk_size} is not a multiple of 512 bytes");
    let pins = rpi_cm3_pins()?;
    let dtb = "bcm2837-rpi-cm3-io3.dtb";

    // The FAT boot partition's files.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, data) in loaded {
        let at = if name == "BOOTAA64.EFI" { format!("EFI/BOOT/{name}") } else { name };
        files.insert(at, data);
    }
    files.insert("config.txt".into(), config_txt(dtb).into_bytes());
    files.insert("EFI/debian/grub.cfg".into(), grub_cfg(talos.talos_version, talos.cmdline).into_bytes());
    files.insert("A/vmlinuz".into(), talos.vmlinuz.to_vec());
    files.insert("A/initramfs.xz".into(), talos.initramfs.to_vec());

    // Everything that decides the bytes, hashed: the GUIDs and the volume ID derive from it.
    let mut seed_text = format!("moonboot rpi-cm3 disk image v1\ndisk_size {disk_size}\n");
    for (path, data) in &files {
        seed_text.push_str(&format!("{path} {}\n", Sha256Digest::of(data).hex()));
    }
    let seed = Sha256Digest::of(seed_text.as_bytes());

    let content: u64 = files.values().map(|d| d.len() as u64).sum();
    // Room for the FATs and directory clusters, then whole 64 MiB steps.
    let boot_mib = ((content + content / 8) / (1 << 20) + 32).div_ceil(64) * 64;
    let boot_sectors = boot_mib.max(MIN_BOOT_MIB) * MIB;
    let guid = |name: &str| derived_uuid(&seed, name);
    let parts = layout(disk_size / SECTOR, boot_sectors, &guid)?;
    let volume_id = u32::from_le_bytes(seed.as_bytes()[16..20].try_into().expect("4 bytes"));
    let boot =
        fat::fat32(boot_sectors * SECTOR, volume_id, "EFI", &files).context("building the FAT boot partition")?;

    let name = image_name("rpi-cm3", "arm64");
    let raw = out.join(format!(".{name}.raw.tmp"));
    let disk_guid = derived_uuid(&seed, "disk");
    disk::write(&raw, disk_size, disk_guid, &parts, &boot)?;
    let xz = out.join(&name);
    compress_xz(&raw, &xz).with_context(|| format!("compressing {}", xz.display()))?;
    std::fs::remove_file(&raw)?;
    Ok(Written { file: name, disk_size, disk_guid, partitions: parts, inputs: pins })
}

/// xz of `from` into `to` ([`xz::compress_file`]: its holes are never read; preset 1, CRC64, 24 MiB blocks, every all-zero block
/// compressed once; the bytes do not depend on the number of threads). Preset 1: the image is
/// zeros, an already compressed kernel and initramfs and a few MB of firmware, which preset 6
/// makes no smaller, at a third of the speed.
fn compress_xz(from: &Path, to: &Path) -> Result<()> {
    let input = std::fs::File::open(from)?;
    let mut output = std::io::BufWriter::new(std::fs::File::create(to)?);
    xz::compress_file(&input, &mut output)?;
    std::io::Write::flush(&mut output)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_cmdline::preset::{self, Arch, Overlay, Platform, TalosVersion};
    use kernel_cmdline::Cmdline;

    fn cm3_line(extra: &str) -> Cmdline {
        let extra = Cmdline::parse(extra).unwrap();
        let args = rpi_cm3_kernel_args(&extra).unwrap();
        preset::talos(TalosVersion::new(1, 10, 5), Platform::Metal, Arch::Arm64, Some(Overlay::RpiGeneric), &args)
            .unwrap()
    }

    /// Every Talos release moonboot builds fits a 4 GB CM3 ([`CM3_EMMC_BYTES`]) with a boot
    /// partition of 512 MiB (kernel, an initramfs with extensions and the firmware take about
    /// 200 MiB): EPHEMERAL keeps Talos's minimum, so Talos locates it and never provisions. Talos's
    /// own layout would not fit from 1.11 on, which is why the boot partition is sized here.
    #[test]
    fn the_cm3_layout_of_every_release_fits_a_4gb_emmc() {
        use kernel_cmdline::quirks::{Quirks, RELEASES};
        let disk_mib = CM3_EMMC_BYTES / (1 << 20);
        assert_eq!(disk_mib, 3728);
        for release in RELEASES {
            let q = Quirks::new(release.newest);
            let parts = layout(CM3_EMMC_BYTES / SECTOR, 512 * MIB, &|_| uuid::Uuid::nil()).unwrap();
            let names: Vec<&str> = parts.iter().map(|p| p.name).collect();
            assert_eq!(names, ["EFI", "META", "STATE", "EPHEMERAL"]);
            let mib = |p: &Partition| (p.last_lba + 1 - p.first_lba) / MIB;
            assert_eq!((mib(&parts[1]), mib(&parts[2])), (META_MIB, STATE_MIB));
            let ephemeral = mib(&parts[3]);
            assert!(ephemeral >= EPHEMERAL_MIN_MIB, "{}: EPHEMERAL {ephemeral} MiB", release.newest);
            assert_eq!(parts[3].last_lba, CM3_EMMC_BYTES / SECTOR - 34, "nothing left for Talos to grow into");
            let talos_own = q.uki_efi_partition_mib() + META_MIB + STATE_MIB + EPHEMERAL_MIN_MIB + 2;
            assert_eq!(talos_own <= disk_mib, release.minor <= (1, 10), "{}: {talos_own} MiB", release.newest);
        }
        // Too small for Talos's minimum: refused with the reason.
        let err = layout(2600 * MIB, 512 * MIB, &|_| uuid::Uuid::nil()).unwrap_err().to_string();
        assert!(err.contains("EPHEMERAL needs at least 2048 MiB"), "{err}");
    }

    #[test]
    fn the_cm3_line_asks_report_to_keep_the_hybrid_mbr() {
        let line = cm3_line("talos_agent.report=http://10.0.0.1:8090/v1/report");
        assert_eq!(line.get("talos_agent.mbr"), Some(Some("repair")), "{line}");
        assert!(line.contains("talos_agent.report") && line.contains("sysctl.kernel.kexec_load_disabled"), "{line}");
        // The user's extra arguments come after, so they can remove it.
        assert!(!cm3_line("-talos_agent.mbr").contains("talos_agent.mbr"));
        // Images without a board never carry it.
        let metal =
            preset::talos(TalosVersion::new(1, 10, 5), Platform::Metal, Arch::Arm64, None, &Cmdline::new()).unwrap();
        assert!(!metal.contains("talos_agent.mbr"), "{metal}");
    }
}
