//! The Raspberry Pi CM3 disk image booted under QEMU's `raspi3b` (BCM2837, the CM3's SoC), from
//! its SD card, through every stage the image carries after the VideoCore firmware, *after*
//! Talos's first boot has clobbered the hybrid MBR:
//!
//! 1. the image is built by default from an arm64 build given the board inputs
//!    (`MOONBOOT_BOARD_INPUTS`), on the board stand-in release ([`moonboot_tests::rpi`]: Debian's
//!    generic arm64 kernel, an EFI-stub application), with readiness kernel arguments;
//! 2. MBR slot 1 is overwritten with go-blockdevice's `writePMBR` bytes, as Talos leaves it;
//! 3. QEMU starts the image's own `u-boot.bin` with the image's own mainline CM3 device tree (the
//!    files `config.txt` names) → U-Boot's UEFI reads the GPT → GRUB 2.12 (`EFI/BOOT/BOOTAA64.EFI`,
//!    `EFI/debian/grub.cfg`) → the kernel with the Raspberry Pi arguments → the stand-in init;
//! 4. a USB Ethernet adapter (QEMU's `usb-net`, CDC Ethernet) is plugged in over QMP once Linux's
//!    DWC2 root hub is up — Linux drives the DWC2 because the mainline device tree says
//!    `brcm,bcm2835-usb` — and the stand-in configures `eth0`;
//! 5. `ext-talos-agent` (`talos_agent.mbr=repair` from `grub.cfg`, the spec's `/dev` bind) finds
//!    `/dev/mmcblk0` clobbered and restores it, and its report reaches `talos-agent wait` on the
//!    host's loopback (QEMU's user network maps 10.0.2.2 to it) saying `boot_mbr: repaired`;
//! 6. after QEMU is gone, LBA 0 of the SD card is byte-equal to what the imager wrote.
//!
//! What the emulator cannot do: QEMU starts U-Boot itself (`-kernel`, `-dtb`), so the VideoCore
//! stage (boot ROM → MBR slot 1 → `bootcode.bin` → `start.elf` → `config.txt`) does not run; the
//! MBR and `config.txt` are checked by reading the image in `tests/tests/rpi_cm3.rs`. QEMU's DWC2
//! raises a port's connect interrupt only when a device is attached, and U-Boot consumes it for a
//! device present at power-on, so the adapter is attached after U-Boot is gone.
//!
//! Needs the fixture registry (scripts/fixtures), the pinned board inputs (scripts/rpi-inputs) and
//! `qemu-system-aarch64` with the `raspi3b` machine (scripts/setup). About 90 s of emulation once
//! the binaries are built.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use boot_artifact::hybrid_mbr;
use moonboot_tests::demo::{host_binaries, rand_u64, Waiter};
use moonboot_tests::fixtures::{fixtures_dir, skip, with_registry};
use moonboot_tests::qemu::{self, Guest, Qmp};
use moonboot_tests::rpi::support::{inputs_dir, lba0, mtools, run, scratch, unxz, write_lba0, DISK};

/// From QEMU start to the readiness report. Emulated: U-Boot reads the SD card at about
/// 0.4 MB/s, so GRUB, the kernel and the initramfs take about a minute; 86 s were seen on an
/// idle machine, and a loaded CI machine may be several times slower.
const DEADLINE: Duration = Duration::from_secs(20 * 60);
/// The stand-in init's marker (tests/standin-init).
const MARK: &str = "MOONBOOT-STANDIN-INIT:";
/// QEMU's user network: the guest's address, and the host's loopback as the gateway 10.0.2.2.
const IP_ARG: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0:cm3-0:eth0:off";

/// Copies `name` out of the FAT at MBR slot 1 of `raw` into `to`, as the firmware would read it.
fn from_fat(raw: &Path, name: &str, to: &Path) -> PathBuf {
    let dest = to.join(name.rsplit('/').next().unwrap());
    mtools(raw, "mcopy", &[OsStr::new("-o"), OsStr::new(&format!("::/{name}")), dest.as_os_str()]);
    dest
}

#[test]
fn cm3_image_boots_under_raspi3b_through_uboot_grub_into_the_standin_and_reports() {
    let test = "cm3_image_boots_under_raspi3b_through_uboot_grub_into_the_standin_and_reports";
    let Some(f) = with_registry(test) else { return };
    let Some(inputs) = inputs_dir(test) else { return };
    if !qemu::have("qemu-system-aarch64") {
        skip(test, "qemu-system-aarch64 is not installed (scripts/setup)");
        return;
    }
    let release = moonboot_tests::rpi::build_and_push(&f).expect("building the board stand-in release");
    let (imager, agent) = host_binaries().expect("building imager and talos-agent");
    let agent_arm64 = moonboot_tests::stage1::build_static_agent("arm64").expect("building the arm64 talos-agent");

    let work = scratch("boot");

    // The collector first: the image's kernel arguments name its port.
    let token = format!("cm3-{:016x}", rand_u64());
    let mut wait = Waiter::start(&agent, &token, 1, "maintenance_ready", "1200s", &work.join("wait.log"))
        .expect("starting talos-agent wait");
    let report = format!("http://10.0.2.2:{}/v1/report", wait.addr.port());

    let out = work.join("out");
    let t = Instant::now();
    let mut build = moonboot_tests::demo::fixture_build(&imager, &f, &agent_arm64);
    // No --board: an arm64 build writes the CM3 image whenever its inputs are given, here through
    // the environment as a CI job would set it.
    build
        .env("MOONBOOT_BOARD_INPUTS", &inputs)
        .arg("--base")
        .arg(&release.reference)
        .args(["--disk-size", &DISK.to_string()])
        .arg("--output")
        .arg(&out);
    for arg in [
        IP_ARG,
        "standin.hold",
        &format!("talos_agent.report={report}"),
        &format!("talos_agent.token={token}"),
        "talos_agent.node=cm3-0",
    ] {
        build.arg(format!("--extra-kernel-arg={arg}"));
    }
    run(&mut build);
    eprintln!("imager build --board rpi-cm3: {:.1} s", t.elapsed().as_secs_f64());
    let raw = work.join("cm3.raw");
    unxz(&out.join("rpi-cm3-arm64.raw.xz"), &raw);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), DISK);

    // What config.txt hands over after the VideoCore stage: kernel=u-boot.bin, device_tree=….
    let config = String::from_utf8(mtools(&raw, "mtype", &["::/config.txt"])).unwrap();
    let value = |key: &str| {
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("config.txt has no {key}=:\n{config}"))
            .trim()
            .to_string()
    };
    let uboot = from_fat(&raw, &value("kernel"), &work);
    let dtb = from_fat(&raw, &value("device_tree"), &work);

    // Talos's first boot as the board would see it: go-blockdevice's writePMBR has turned MBR slot
    // 1 into 0xEE (the BCM2837 boot ROM would now find no FAT). U-Boot, started by QEMU, still
    // reads the GPT; the image's kernel arguments carry talos_agent.mbr=repair, so the report must
    // find /dev/mmcblk0 clobbered, restore it, and say so.
    let original = lba0(&raw);
    let mut clobbered = original;
    hybrid_mbr::talos_write_pmbr(&mut clobbered, DISK / 512 - 1, false);
    assert_ne!(clobbered, original);
    write_lba0(&raw, &clobbered);

    let qmp_path = work.join("qmp.sock");
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(["-M", "raspi3b", "-m", "1G", "-kernel"])
        .arg(&uboot)
        .arg("-dtb")
        .arg(&dtb)
        .arg("-drive")
        .arg(format!("if=sd,format=raw,file={}", raw.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
        .args(["-netdev", "user,id=n0"])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"]);
    let log = fixtures_dir().join("logs/rpi-cm3-raspi3b.log");
    let start = Instant::now();
    let mut guest = Guest::spawn(cmd, &log).expect("starting qemu-system-aarch64 -M raspi3b");
    let deadline = start + DEADLINE;
    let mut qmp = Qmp::connect(&qmp_path, start + Duration::from_secs(60)).expect("QEMU's QMP socket");

    // The stages in the order they print; a stand-in error or a kernel panic fails at once.
    let fatal = |l: &str| {
        l.contains(&format!("{MARK} error:")) || l.contains("Kernel panic") || l.contains("Application failed")
    };
    let mut times = Vec::new();
    let mut stage = |guest: &mut Guest, name: &'static str, pred: &dyn Fn(&str) -> bool| {
        let line = guest.wait_for(name, deadline, |l| pred(l) || fatal(l)).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!fatal(&line), "{name}: the boot failed: {line}\nconsole log: {}", log.display());
        times.push((name, start.elapsed()));
    };
    stage(&mut guest, "U-Boot", &|l| l.starts_with("U-Boot 20"));
    stage(&mut guest, "U-Boot starts GRUB", &|l| l.contains("efi/boot/bootaa64.efi"));
    stage(&mut guest, "EFI stub", &|l| l.contains("EFI stub: Booting Linux Kernel"));
    stage(&mut guest, "CM3 machine model", &|l| l.contains("Machine model: Raspberry Pi Compute Module 3"));
    stage(&mut guest, "stand-in init", &|l| l.contains(&format!("{MARK} cmdline=")));
    stage(&mut guest, "DWC2 root hub", &|l| l.contains("hub 1-0:1.0: 1 port detected"));
    // The USB Ethernet adapter is plugged in now, not at power-on. QEMU's DWC2 model raises the
    // port's connect interrupt only on attach; U-Boot (`usb start` in rpi_arm64's preboot) takes
    // that interrupt for a device present at power-on and Linux then sees "Not connected" on every
    // transfer. A real port signals the device again after U-Boot's controller reset.
    qmp.execute("device_add", serde_json::json!({"driver": "usb-net", "netdev": "n0", "id": "usbnet0"}))
        .expect("plugging in QEMU's usb-net");
    stage(&mut guest, "USB Ethernet", &|l| l.contains("cdc_ether") && l.contains("register 'cdc_ether'"));
    stage(&mut guest, "network", &|l| l.contains(&format!("{MARK} network: eth0 10.0.2.15/24")));
    // The board image's initramfs, unlike the boot artifact's, gives ext-talos-agent the host's
    // /dev (read-only): without it the service sees only a private /dev with no disk.
    stage(&mut guest, "the boot disk's /dev bound", &|l| l.contains("ext-talos-agent: mounted /dev on /dev (ro)"));
    stage(&mut guest, "MBR repaired in the guest", &|l| {
        l.contains("ext-talos-agent:") && l.contains("/dev/mmcblk0: hybrid MBR repaired")
    });
    stage(&mut guest, "report delivered", &|l| l.contains("ext-talos-agent: talos-agent report: report delivered"));

    // What the booted kernel saw: its command line is the image's grub.cfg line.
    let cmdline =
        guest.lines().iter().find_map(|l| l.split_once(&format!("{MARK} cmdline=")).map(|(_, c)| c.to_string()));
    let cmdline = cmdline.expect("the stand-in printed its command line");
    for want in ["talos.platform=metal", "console=ttyAMA0,115200", "sysctl.kernel.kexec_load_disabled=1", IP_ARG] {
        assert!(cmdline.split_whitespace().any(|a| a == want), "{want} not on the kernel command line: {cmdline}");
    }

    // The collector's verdict.
    let node = loop {
        wait.poll().unwrap();
        if let Some(n) = wait.nodes.iter().find(|n| n["node"] == "cm3-0" && n["phase"] == "maintenance_ready") {
            break n.clone();
        }
        assert!(Instant::now() < deadline, "wait never saw cm3-0 maintenance_ready; {:?}", wait.nodes);
        std::thread::sleep(Duration::from_millis(200));
    };
    times.push(("wait: maintenance_ready", start.elapsed()));
    assert_eq!(node["talos_version"], "v1.10.5", "{node}");
    assert_eq!(node["address"], "10.0.2.15", "{node}");
    let extensions: Vec<&str> =
        node["extensions"].as_array().expect("extensions").iter().filter_map(|e| e.as_str()).collect();
    assert!(extensions.iter().any(|e| e.starts_with("talos-agent@")), "{node}");
    assert_eq!(node["boot_mbr"]["state"], "repaired", "{node}");
    assert_eq!(node["boot_mbr"]["disk"], "/dev/mmcblk0", "{node}");

    eprintln!("raspi3b boot of rpi-cm3-arm64.raw (QEMU start → stage, software emulation):");
    for (name, at) in &times {
        eprintln!("  {name:<28} {:>7.1} s", at.as_secs_f64());
    }
    drop(guest);
    // What the agent wrote inside the guest reached the SD card: LBA 0 is again, byte for byte,
    // what the imager wrote.
    assert!(lba0(&raw) == original, "LBA 0 of the SD card after the boot is not the imager's hybrid MBR");
    let _ = std::fs::remove_dir_all(&work);
    let _ = release;
}
