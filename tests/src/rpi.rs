//! The stand-in Talos release the Raspberry Pi CM3 boot test boots (TEST FIXTURE, never shipped).
//!
//! The main stand-in release (`scripts/fixtures`, [`crate::build`]) carries Debian's *cloud* arm64
//! kernel, which has no BCM2835 support, wrapped in an EFI zboot container whose entry point only
//! returns `EFI_UNSUPPORTED` (it is for unpacking, not for UEFI). A Raspberry Pi boots Talos's
//! kernel through U-Boot's UEFI and GRUB, so the board test needs a kernel that really starts as a
//! UEFI application and knows the SoC. This module builds that variant from the *generic* arm64
//! kernel package that `boards/rpi-cm3.inputs` already pins for the CM3 device tree (so no extra
//! download):
//! - `usr/install/arm64/vmlinuz`: Debian's `Image` (a PE/COFF EFI application with the EFI stub,
//!   `CONFIG_EFI_STUB`), gzip-compressed. GRUB opens kernels through its decompression filters
//!   (`gzio`), then starts the PE image through the firmware's `LoadImage`/`StartImage` like
//!   Talos's zboot kernel. Compressing it cuts what U-Boot reads from the emulated SD card by
//!   two thirds, which dominates the emulated boot.
//! - `usr/install/arm64/initramfs.xz`: the stand-in init and root of the main release, with the
//!   modules [`WANTED_MODULES`] of this kernel (dependencies first, from their `.modinfo`).
//!
//! It is pushed to the fixture registry as `moonboot-standin/imager-rpi-<pid>-<n>:v1.10.5` (the
//! prefix [`REPOSITORY`] made a repository of this process alone by
//! [`crate::fixtures::unique_repository`]; the tag [`crate::build::TALOS_VERSION`]) and used
//! through `imager build --base`. The result is cached under `target/fixtures/build/rpi/` and
//! `target/fixtures/oci/imager-rpi/`, keyed by the kernel package, the stand-in init, the stand-in
//! root and the epoch; [`build_and_push`] holds the fixture lock [`LOCK`] while it uses them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use boot_artifact::oci::Platform;

use crate::build::{
    build_initramfs, extract_deb, fresh_dir, key_of, labels, log, mkdir, only_entry, run, stamp, write_file,
    TALOS_VERSION,
};
use crate::fixtures::{fixtures_dir, Fixtures, PushedImage};
use crate::kmod;
use crate::oci::{LayerBuilder, Layout};

/// Prefix of the repositories the board stand-in release is pushed to in the fixture registry.
pub const REPOSITORY: &str = "moonboot-standin/imager-rpi";

/// The [`crate::fixtures::lock`] that guards the board release's fixed paths (the build and layout
/// directories, the unpacked kernel package).
pub const LOCK: &str = "rpi-release";

/// Modules the stand-in init loads on the CM3 (Talos's kernel builds these in; Debian's generic
/// kernel has them as modules): the stand-in root (`loop`, `squashfs`, `overlay`), the eMMC/SD
/// controller the mainline CM3 device tree enables (`bcm2835`: `brcm,bcm2835-sdhost`), the USB
/// host (`dwc2`: `brcm,bcm2835-usb`) and a USB Ethernet adapter (`cdc_ether`, which QEMU's
/// `usb-net` and many real adapters speak).
pub const WANTED_MODULES: &[&str] = &["loop", "squashfs", "overlay", "bcm2835", "dwc2", "cdc_ether"];

/// Bump to invalidate the cached board release.
const FORMAT: &str = "moonboot-rpi-standin-1";

/// What [`build_and_push`] produced.
#[derive(Debug, Clone)]
pub struct RpiRelease {
    /// `REGISTRY/moonboot-standin/imager-rpi-<pid>-<n>:v1.10.5`, for `imager build --base`.
    pub reference: String,
    /// The kernel release (`uname -r`) of the generic kernel.
    pub kernel_release: String,
    /// The raw arm64 `Image` (before gzip), for tests that compare bytes.
    pub kernel_image: PathBuf,
}

/// The pinned generic kernel package: the `linux-image-*-arm64` line of `boards/rpi-cm3.inputs`
/// (the one that provides the CM3 DTB), as `scripts/rpi-inputs` caches it under
/// `target/rpi-inputs/debs/`.
///
/// # Errors
/// No such line in the pins, or the package was not downloaded (run `scripts/rpi-inputs`).
pub fn kernel_deb(workspace: &Path) -> Result<PathBuf> {
    let pins = fs::read_to_string(workspace.join("boards/rpi-cm3.inputs")).context("reading boards/rpi-cm3.inputs")?;
    for line in pins.lines().map(|l| l.split('#').next().unwrap_or("")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 5 && f[1].starts_with("linux-image-") && f[1].ends_with(":arm64") {
            let name = f[1].trim_end_matches(":arm64");
            let version = f[2].split_once(':').map_or(f[2], |(_, v)| v);
            let deb = workspace.join("target/rpi-inputs/debs").join(format!("{name}_{version}_arm64.deb"));
            ensure!(deb.is_file(), "{} is missing: run scripts/rpi-inputs", deb.display());
            return Ok(deb);
        }
    }
    bail!("boards/rpi-cm3.inputs pins no linux-image-*:arm64 package")
}

/// Builds (or reuses) the board stand-in release and pushes it to a repository of its own in the
/// fixture registry, under the fixture lock [`LOCK`] (other processes may build it at the same
/// time, into the same directories).
///
/// # Errors
/// A missing input (the kernel package, the main fixtures), a module that cannot be resolved,
/// `gzip`, `cpio`, `zstd` or `skopeo` failing, the registry serving other bytes, or the lock.
pub fn build_and_push(f: &Fixtures) -> Result<RpiRelease> {
    let _lock = crate::fixtures::lock(LOCK)?;
    let workspace = crate::stage1::workspace();
    let deb = kernel_deb(&workspace)?;
    let arm64 = f.arches.get("arm64").context("the fixtures have no arm64 build")?;
    let out = fixtures_dir();
    let dir = out.join("build/rpi");
    mkdir(&dir)?;
    let kroot = extract_deb(&deb, &out.join("debs"))?;
    let modules_dir = only_entry(&kroot.join("lib/modules"), "")?;
    let kernel_release = modules_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let image = kroot.join("boot").join(format!("vmlinuz-{kernel_release}"));
    let mut header = [0u8; 64];
    std::io::Read::read_exact(&mut fs::File::open(&image)?, &mut header)
        .with_context(|| format!("{}: reading the arm64 Image header", image.display()))?;
    ensure!(
        boot_artifact::kernel::arm64_header(&header).is_some(),
        "{}: not an uncompressed arm64 Image",
        image.display()
    );

    let layout_dir = out.join("oci/imager-rpi");
    let key = key_of(&[
        FORMAT.to_string(),
        stamp(&deb)?,
        stamp(&arm64.init)?,
        stamp(&arm64.rootfs_sqsh)?,
        f.source_date_epoch.to_string(),
        WANTED_MODULES.join(" "),
    ]);
    let key_file = dir.join("inputs.key");
    let index_digest_file = dir.join("index.digest");
    let cached = fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str())
        && layout_dir.join("index.json").is_file()
        && index_digest_file.is_file();
    let index_digest = if cached {
        log("board stand-in release: inputs unchanged, reusing it");
        fs::read_to_string(&index_digest_file)?.trim().to_string()
    } else {
        let _ = fs::remove_file(&key_file);
        let digest = build(f, &dir, &layout_dir, &image, &modules_dir, &kernel_release)?;
        fs::write(&index_digest_file, &digest)?;
        fs::write(&key_file, &key)?;
        digest
    };
    let img = PushedImage {
        repository: crate::fixtures::unique_repository(REPOSITORY),
        tag: TALOS_VERSION.to_string(),
        reference: String::new(),
        upstream_reference: format!("ghcr.io/siderolabs/imager:{TALOS_VERSION}"),
        index_digest,
        manifests: Default::default(),
        layout: layout_dir,
        extension: None,
    };
    let reference = crate::bundles::push(&f.registry, &img)?;
    Ok(RpiRelease { reference, kernel_release, kernel_image: image })
}

fn build(
    f: &Fixtures,
    dir: &Path,
    layout_dir: &Path,
    image: &Path,
    modules_dir: &Path,
    kernel_release: &str,
) -> Result<String> {
    let arm64 = &f.arches["arm64"];
    let epoch = f.source_date_epoch;
    let modules = kmod::resolve(modules_dir, WANTED_MODULES)
        .with_context(|| format!("resolving the board modules of {kernel_release}"))?;
    log(&format!(
        "board stand-in release: kernel {kernel_release}; initramfs modules: {}",
        modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
    ));
    let initramfs =
        build_initramfs(dir, &arm64.init, &arm64.rootfs_sqsh, modules_dir, kernel_release, &modules, epoch)?;
    // `gzip -n`: no name or timestamp in the header, so the bytes depend on the Image alone.
    let vmlinuz = run(Command::new("gzip").args(["-9", "-n", "-c"]).arg(image))?;
    write_file(&dir.join("vmlinuz"), &vmlinuz, 0o644)?;

    fresh_dir(layout_dir)?;
    let upstream = format!("ghcr.io/siderolabs/imager:{TALOS_VERSION}");
    let mut l = LayerBuilder::new(epoch);
    l.file("usr/install/arm64/vmlinuz", vmlinuz, 0o644);
    l.file("usr/install/arm64/initramfs.xz", fs::read(&initramfs)?, 0o644);
    l.file(
        "usr/share/moonboot-standin/platform",
        format!("linux/arm64 (Raspberry Pi)\nmoonboot stand-in of {upstream}: TEST FIXTURE, not Talos\n"),
        0o644,
    );
    let layer = l.build("usr/install/arm64/{vmlinuz,initramfs.xz}: Debian's generic arm64 kernel")?;
    let layout = Layout::create(layout_dir)?;
    let what = format!("{upstream} for the Raspberry Pi boot test");
    let desc = layout.put_image(&Platform::linux("arm64"), &[&layer], epoch, &labels(&what), &Default::default())?;
    let index = layout.finish_index(vec![desc], &labels(&what), TALOS_VERSION)?;
    Ok(index.digest.to_string())
}

/// Helpers the two CM3 tests (`tests/tests/rpi_cm3.rs`, `rpi_cm3_boot.rs`) share. They panic on
/// failure, naming the command or file: they are for tests only.
pub mod support {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use boot_artifact::hybrid_mbr;

    use crate::fixtures::{fixtures_dir, skip};

    /// A test disk: 4 GiB, the smallest power of two (QEMU's raspi3b wants an SD card of such a
    /// size) that leaves EPHEMERAL Talos's 2 GiB minimum; the CM3 default is its 4 GB eMMC
    /// (`imager::board::CM3_EMMC_BYTES`, 3728 MiB). Sparse on disk.
    pub const DISK: u64 = 4 << 30;

    /// `target/rpi-inputs/files` when `scripts/rpi-inputs` has filled it; otherwise `None`, after
    /// reporting `test` as skipped (a failure under `MOONBOOT_REQUIRE_FIXTURES=1`).
    pub fn inputs_dir(test: &str) -> Option<PathBuf> {
        let d = crate::stage1::workspace().join("target/rpi-inputs/files");
        if d.join("bootcode.bin").is_file() {
            Some(d)
        } else {
            skip(test, &format!("{} is empty: run scripts/rpi-inputs", d.display()));
            None
        }
    }

    /// A fresh `target/fixtures/tmp/rpi-<name>-<pid>/`.
    pub fn scratch(name: &str) -> PathBuf {
        let d = fixtures_dir().join("tmp").join(format!("rpi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Runs `cmd`; panics with its output unless it succeeded.
    pub fn run(cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `xz -dc XZ > RAW` with Debian's xz, the reader a user has, written sparse.
    pub fn unxz(xz: &Path, raw: &Path) {
        let input = std::fs::File::open(xz).unwrap_or_else(|e| panic!("{}: {e}", xz.display()));
        // Sparse: the image is mostly zeros, and dd seeks over them instead of writing 4 GiB.
        run(Command::new("sh")
            .arg("-c")
            .arg("xz -dc | dd of=\"$0\" bs=1M iflag=fullblock conv=sparse status=none")
            .arg(raw)
            .stdin(input));
    }

    /// mtools' image argument for the FAT the VideoCore boot ROM reads: `RAW@@OFFSET`, the offset
    /// being MBR slot 1's first LBA × 512 ([`hybrid_mbr::Slot::read`]). Panics unless slot 1 is a
    /// FAT32 LBA partition (type 0x0C), as the CM3 image writes it.
    pub fn fat_image(raw: &Path) -> String {
        let slot1 = hybrid_mbr::Slot::read(&lba0(raw), 1);
        assert_eq!(
            slot1.kind,
            hybrid_mbr::MBR_FAT32_LBA,
            "{}: MBR slot 1 is type {:#04x}, not FAT32 LBA",
            raw.display(),
            slot1.kind
        );
        format!("{}@@{}", raw.display(), u64::from(slot1.first_lba) * hybrid_mbr::SECTOR)
    }

    /// Runs the mtools command `tool` (`mdir`, `mtype`, `mcopy`) with `args` on the FAT of
    /// [`fat_image`]; returns its stdout, panicking with its output when it fails.
    pub fn mtools<S: AsRef<std::ffi::OsStr>>(raw: &Path, tool: &str, args: &[S]) -> Vec<u8> {
        run(Command::new(tool).env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(fat_image(raw)).args(args)).stdout
    }

    /// The first 512 bytes (the MBR) of a disk image.
    pub fn lba0(raw: &Path) -> [u8; 512] {
        let mut b = [0u8; 512];
        std::fs::File::open(raw).and_then(|mut f| f.read_exact(&mut b)).unwrap();
        b
    }

    /// Overwrites LBA 0 of a disk image and syncs it.
    pub fn write_lba0(raw: &Path, mbr: &[u8; 512]) {
        let mut f = std::fs::OpenOptions::new().write(true).open(raw).unwrap();
        f.seek(SeekFrom::Start(0)).and_then(|_| f.write_all(mbr)).and_then(|()| f.sync_all()).unwrap();
    }
}
