//! The Raspberry Pi CM3 disk image (`imager build --board rpi-cm3`) read by the standard tools as
//! the BCM2837 boot ROM, U-Boot and Talos would read it, byte-reproducible, and the safety net:
//! Talos's `writePMBR` byte changes (go-blockdevice v2 `partitioning/gpt/gpt.go`) applied to the
//! image, then `talos-agent mbr --repair` restoring exactly what the imager wrote. The second
//! build, for reproducibility, is an installed imager (copied out of the tree, empty environment
//! and PATH) pulling the board inputs that `imager publish --board-inputs` pushed: its image must
//! be byte-identical to the first's, made from `--board-inputs DIR`. Its `netboot/tftp/` gets the
//! pinned iPXE binary the same way (`imager publish --ipxe-inputs`), and `imager netboot` carries
//! it over; when trixie no longer serves the pinned iPXE, the test checks that the imager refuses
//! the binaries it serves instead.
//!
//! Needs the fixture registry (scripts/fixtures) and the pinned board inputs (scripts/rpi-inputs,
//! run by scripts/test).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use boot_artifact::hybrid_mbr;
use moonboot_tests::fixtures::{with_registry, Fixtures};
use moonboot_tests::rpi::support::{inputs_dir, lba0, mtools, run, scratch, unxz, write_lba0, DISK};

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `imager build --board rpi-cm3` into `out`, with the board inputs from `inputs` or, when
/// `None`, from the published artifact (the default `--board-inputs-repository` through the
/// fixture mirror); returns the decompressed raw image's path and the imager's stderr.
fn build(imager: &mut Command, f: &Fixtures, inputs: Option<&Path>, out: &Path) -> (PathBuf, String) {
    imager
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "--arch", "arm64", "--registry-mirror", &f.mirror, "--insecure-registry", &f.registry])
        .args(["--no-talos-agent", "--board", "rpi-cm3", "--disk-size", &DISK.to_string()]);
    if let Some(dir) = inputs {
        imager.arg("--board-inputs").arg(dir);
    }
    let o = run(imager.arg("--output").arg(out));
    let raw = out.with_extension("raw");
    unxz(&out.join("rpi-cm3-arm64.raw.xz"), &raw);
    (raw, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn agent_mbr(agent: &Path, disk: &Path, repair: bool) -> (i32, serde_json::Value, String) {
    let mut c = Command::new(agent);
    c.args(["mbr", "--json", "--disk"]).arg(disk);
    if repair {
        c.arg("--repair");
    }
    let o = c.output().unwrap();
    let j = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), j, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn cm3_image_boot_rom_view_reproducibility_and_the_mbr_safety_net() {
    let test = "cm3_image_boot_rom_view_reproducibility_and_the_mbr_safety_net";
    let Some(f) = with_registry(test) else { return };
    let Some(inputs) = inputs_dir(test) else { return };
    let (imager, agent) = moonboot_tests::demo::host_binaries().expect("building imager and talos-agent");
    let dir = scratch("image");
    let (raw, _) = build(&mut Command::new(&imager), &f, Some(&inputs), &dir.join("a"));

    // The same image from an installed imager with no source tree: the board inputs published as
    // an OCI artifact (`imager publish --board-inputs`), pulled through the mirror by the imager
    // alone — a copy outside the tree, run with an empty environment and PATH.
    let publish = run(Command::new(&imager)
        .args(["publish", "--board-inputs"])
        .arg(&inputs)
        .args(["--board-inputs-repository", &format!("{}/moonboot/board-inputs", f.registry)])
        .args(["--insecure-registry", &f.registry]));
    let published = text(&publish);
    assert!(published.contains("moonboot/board-inputs:rpi-cm3-"), "{published}");
    // iPXE by the same road: the binaries scripts/setup fetched from trixie, published with
    // `imager publish --ipxe-inputs` (refused unless they are the ones boards/ipxe.inputs pins).
    let peers = moonboot_tests::build::netboot_peers_dir();
    let ipxe_pinned = moonboot_imager::board::inputs::load(&moonboot_imager::board::ipxe_pins().unwrap(), &peers);
    let ipxe_publish = Command::new(&imager)
        .args(["publish", "--ipxe-inputs"])
        .arg(&peers)
        .args(["--board-inputs-repository", &format!("{}/moonboot/board-inputs", f.registry)])
        .args(["--insecure-registry", &f.registry])
        .output()
        .unwrap();
    let ipxe_err = String::from_utf8_lossy(&ipxe_publish.stderr).into_owned();
    match &ipxe_pinned {
        Ok(_) => {
            assert!(ipxe_publish.status.success(), "imager publish --ipxe-inputs: {ipxe_err}");
            assert!(text(&ipxe_publish).contains("moonboot/board-inputs:ipxe-"), "{}", text(&ipxe_publish));
        }
        Err(why) => {
            assert!(!ipxe_publish.status.success() && ipxe_err.contains("pinned input"), "{ipxe_err}");
            eprintln!("NOTE: trixie no longer serves the iPXE binaries boards/ipxe.inputs pins ({why}): checking that they are refused; refresh the pins with scripts/ipxe-inputs");
        }
    }
    let installed = dir.join("bin/imager");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(&imager, &installed).unwrap();
    let mut alone = Command::new(&installed);
    alone.env_clear().env("PATH", "").current_dir(&dir);
    let (raw_b, b_err) = build(&mut alone, &f, None, &dir.join("b"));
    // netboot/tftp/ of the installed imager: the pinned iPXE binary pulled through the mirror,
    // and `imager netboot` (no --ipxe-dir binaries here) carrying it over from the build.
    let tftp = dir.join("b/netboot/tftp/ipxe-arm64.efi");
    match &ipxe_pinned {
        Ok(files) => {
            assert!(b_err.contains("pulling ipxe-arm64.efi from ghcr.io/moonboot/board-inputs:ipxe-"), "{b_err}");
            assert!(
                std::fs::read(&tftp).ok().as_ref() == Some(&files["ipxe-arm64.efi"]),
                "{}: not the pinned iPXE",
                tftp.display()
            );
            let mut netboot = Command::new(&installed);
            netboot.env_clear().env("PATH", "").current_dir(&dir);
            run(netboot.args(["netboot", "--from", "b", "--output", "c", "--arch", "arm64"]));
            assert!(
                std::fs::read(dir.join("c/tftp/ipxe-arm64.efi")).ok().as_ref() == Some(&files["ipxe-arm64.efi"]),
                "imager netboot did not carry the build's iPXE over"
            );
        }
        Err(_) => {
            assert!(b_err.contains("not this imager's pins") && !tftp.exists(), "{b_err}");
        }
    }
    let (xa, xb) = (
        std::fs::read(dir.join("a/rpi-cm3-arm64.raw.xz")).unwrap(),
        std::fs::read(dir.join("b/rpi-cm3-arm64.raw.xz")).unwrap(),
    );
    assert!(xa == xb, "the image from the published board inputs differs from the one from the local inputs");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), DISK);
    std::fs::remove_file(&raw_b).unwrap();

    // The boot ROM's view: MBR slot 1 bootable FAT32 (0x0C), slot 2 0xEE from LBA 1.
    let mbr: serde_json::Value =
        serde_json::from_str(&text(&run(Command::new("sfdisk").args(["--label-nested", "dos", "--json"]).arg(&raw))))
            .unwrap();
    let p = &mbr["partitiontable"]["partitions"];
    assert_eq!(p[0]["type"], "c", "{mbr}");
    assert_eq!(p[0]["bootable"], true, "{mbr}");
    assert_eq!(p[0]["start"], 2048, "{mbr}");
    assert_eq!(p[1]["type"], "ee", "{mbr}");
    assert_eq!(p[1]["start"], 1, "{mbr}");
    assert_eq!(p.as_array().unwrap().len(), 2, "{mbr}");

    // Talos's view: a valid GPT with its partitions, EPHEMERAL up to the last usable LBA.
    let v = text(&run(Command::new("sgdisk").arg("-v").arg(&raw)));
    assert!(v.contains("No problems found"), "{v}");
    let gpt: serde_json::Value =
        serde_json::from_str(&text(&run(Command::new("sfdisk").arg("--json").arg(&raw)))).unwrap();
    let t = &gpt["partitiontable"];
    let names: Vec<&str> = t["partitions"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["EFI", "META", "STATE", "EPHEMERAL"], "{gpt}");
    assert_eq!(t["partitions"][0]["start"], p[0]["start"], "MBR slot 1 and GPT partition 1 start apart");
    assert_eq!(t["partitions"][0]["size"], p[0]["size"], "MBR slot 1 and GPT partition 1 differ in size");
    assert_eq!(t["partitions"][0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    let eph = &t["partitions"][3];
    assert_eq!(
        eph["start"].as_u64().unwrap() + eph["size"].as_u64().unwrap() - 1,
        t["lastlba"].as_u64().unwrap(),
        "{gpt}"
    );

    // The FAT at MBR slot 1's offset (2048, as sfdisk read above), read with mtools: the pinned
    // files and config.txt.
    let fat = |args: &[&str]| String::from_utf8(mtools(&raw, args[0], &args[1..])).unwrap();
    let listing = fat(&["mdir", "-/", "-b", "::/"]);
    for file in [
        "::/bootcode.bin",
        "::/start.elf",
        "::/fixup.dat",
        "::/u-boot.bin",
        "::/config.txt",
        "::/bcm2837-rpi-cm3-io3.dtb",
        "::/EFI/BOOT/BOOTAA64.EFI",
        "::/EFI/debian/grub.cfg",
        "::/A/vmlinuz",
        "::/A/initramfs.xz",
    ] {
        assert!(listing.lines().any(|l| l.eq_ignore_ascii_case(file)), "{file} not on the FAT:\n{listing}");
    }
    let config = fat(&["mtype", "::/config.txt"]);
    for l in ["arm_64bit=1", "kernel=u-boot.bin", "enable_uart=1", "device_tree=bcm2837-rpi-cm3-io3.dtb"] {
        assert!(config.lines().any(|c| c == l), "config.txt lacks {l}:\n{config}");
    }
    assert!(!config.contains("dtoverlay=dwc2"), "gadget mode would take host USB away:\n{config}");
    let grub = fat(&["mtype", "::/EFI/debian/grub.cfg"]);
    assert!(grub.contains("console=ttyAMA0,115200") && grub.contains("sysctl.kernel.kexec_load_disabled=1"), "{grub}");
    let boot = dir.join("bootcode.bin");
    fat(&["mcopy", "-n", "::/bootcode.bin", boot.to_str().unwrap()]);
    assert_eq!(std::fs::read(&boot).unwrap(), std::fs::read(inputs.join("bootcode.bin")).unwrap());
    let kernel = dir.join("vmlinuz");
    fat(&["mcopy", "-n", "::/A/vmlinuz", kernel.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&kernel).unwrap(),
        std::fs::read(dir.join("a/kernel-arm64")).unwrap(),
        "the FAT's kernel is the build's"
    );
    // `imager inspect` on the .raw.xz, and on the output directory, reads what sfdisk and mtools read.
    let seen = inspect_json(&imager, &dir.join("a/rpi-cm3-arm64.raw.xz"));
    assert_inspect_agrees(&seen, &mbr, &gpt, &listing, &config);
    let mut in_dir = inspect_json(&imager, &dir.join("a"))["disk_image"].take();
    in_dir["source"] = seen["source"].clone();
    assert_eq!(in_dir, seen, "the output directory's disk image");
    let build: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("a/build.json")).unwrap()).unwrap();
    assert_eq!(build["board"]["disk_size"], DISK, "{}", build["board"]);
    assert!(build["outputs"]["rpi-cm3-arm64.raw.xz"].as_str().unwrap().starts_with("sha256:"));

    // An intact disk: nothing to do.
    let (code, j, err) = agent_mbr(&agent, &raw, false);
    assert_eq!((code, j["state"].as_str()), (0, Some("intact")), "{err}");

    // Talos writes its GPT: slot 1 becomes 0xEE over the whole disk. The boot ROM would now find
    // no FAT in slot 1.
    let written = lba0(&raw);
    let mut clobbered = written;
    hybrid_mbr::talos_write_pmbr(&mut clobbered, DISK / 512 - 1, false);
    let disk = dir.join("clobbered.raw");
    std::fs::copy(&raw, &disk).unwrap();
    write_lba0(&disk, &clobbered);
    let mbr: serde_json::Value =
        serde_json::from_str(&text(&run(Command::new("sfdisk").args(["--label-nested", "dos", "--json"]).arg(&disk))))
            .unwrap();
    assert_eq!(mbr["partitiontable"]["partitions"][0]["type"], "ee", "{mbr}");
    let seen = inspect_json(&imager, &disk);
    assert_eq!(seen["hybrid_mbr"]["state"], "clobbered_by_talos", "{seen}");
    let (code, j, err) = agent_mbr(&agent, &disk, false);
    assert_eq!((code, j["state"].as_str()), (1, Some("clobbered_by_talos")), "{err}");
    assert_eq!(lba0(&disk), clobbered, "a check without --repair wrote to the disk");
    let (code, j, err) = agent_mbr(&agent, &disk, true);
    assert_eq!((code, j["state"].as_str()), (0, Some("repaired")), "{err}");
    assert_eq!(lba0(&disk), written, "the repaired LBA 0 is not what the imager wrote");
    // The repaired slot 1 leads the boot ROM's way to the FAT again.
    let listing = String::from_utf8(mtools(&disk, "mdir", &["-b", "::/"])).unwrap();
    assert!(listing.to_lowercase().contains("bootcode.bin"), "{listing}");

    // Refusals touch nothing: a GPT whose partition 1 is not moonboot's, and a foreign MBR.
    let other = dir.join("other.raw");
    std::fs::copy(&raw, &other).unwrap();
    run(Command::new("sgdisk").args(["-c", "1:BOOT"]).arg(&other));
    let before = lba0(&other);
    let mut c2 = before;
    hybrid_mbr::talos_write_pmbr(&mut c2, DISK / 512 - 1, false);
    write_lba0(&other, &c2);
    let (code, j, err) = agent_mbr(&agent, &other, true);
    assert_eq!((code, j["state"].as_str()), (2, Some("refused")), "{err}");
    assert!(j["detail"].as_str().unwrap().contains("not an EFI System Partition named \"EFI\""), "{j}");
    assert_eq!(lba0(&other), c2, "a refused repair wrote to the disk");
    let mut foreign = written;
    foreign[440] ^= 0xFF;
    hybrid_mbr::talos_write_pmbr(&mut foreign, DISK / 512 - 1, false);
    write_lba0(&disk, &foreign);
    let (code, j, _) = agent_mbr(&agent, &disk, true);
    assert_eq!((code, j["state"].as_str()), (2, Some("refused")), "{j}");
    assert!(j["detail"].as_str().unwrap().contains("disk signature"), "{j}");
    assert_eq!(lba0(&disk), foreign);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn inspect_json(imager: &Path, target: &Path) -> serde_json::Value {
    serde_json::from_str(&text(&run(Command::new(imager).args(["inspect", "--json"]).arg(target)))).unwrap()
}

/// `imager inspect --json` on the image agrees with `sfdisk` (dos and gpt labels), `mdir -/ -b`
/// and `mtype ::/config.txt`, and finds the hybrid MBR intact.
fn assert_inspect_agrees(
    i: &serde_json::Value,
    dos: &serde_json::Value,
    gpt: &serde_json::Value,
    mdir: &str,
    config: &str,
) {
    assert_eq!((&i["kind"], &i["compression"], &i["size"]), (&"disk-image".into(), &"xz".into(), &DISK.into()));
    assert_eq!(i["hybrid_mbr"]["state"], "intact", "{i}");
    assert_eq!(i["mbr"]["disk_signature"], dos["partitiontable"]["id"]);
    let slots: Vec<&serde_json::Value> =
        i["mbr"]["slots"].as_array().unwrap().iter().filter(|s| s["type"] != 0).collect();
    let parts = dos["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(slots.len(), parts.len(), "{i}");
    for (s, p) in slots.iter().zip(parts) {
        assert_eq!((&s["first_lba"], &s["sectors"]), (&p["start"], &p["size"]), "{s} {p}");
        assert_eq!(s["type"].as_u64(), u64::from_str_radix(p["type"].as_str().unwrap(), 16).ok(), "{s} {p}");
        assert_eq!(s["bootable"], p.get("bootable").cloned().unwrap_or(false.into()), "{s} {p}");
    }
    let (g, t) = (&i["gpt"], &gpt["partitiontable"]);
    let same =
        |a: &serde_json::Value, b: &serde_json::Value| a.as_str().unwrap().eq_ignore_ascii_case(b.as_str().unwrap());
    assert!(same(&g["disk_guid"], &t["id"]), "{g} {t}");
    assert_eq!((&g["first_usable_lba"], &g["last_usable_lba"]), (&t["firstlba"], &t["lastlba"]));
    let (ours, theirs) = (g["partitions"].as_array().unwrap(), t["partitions"].as_array().unwrap());
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!((&a["name"], &a["first_lba"]), (&b["name"], &b["start"]), "{a} {b}");
        assert_eq!(a["size"].as_u64().unwrap(), b["size"].as_u64().unwrap() * 512, "{a} {b}");
        assert!(same(&a["type_guid"], &b["type"]) && same(&a["guid"], &b["uuid"]), "{a} {b}");
    }
    let fat = &i["boot_fat"];
    let mut files: Vec<String> = fat["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("::/{}", f["path"].as_str().unwrap()).to_lowercase())
        .collect();
    let mut listed: Vec<String> = mdir.lines().filter(|l| !l.ends_with('/')).map(str::to_lowercase).collect();
    files.sort();
    listed.sort();
    assert_eq!(files, listed);
    assert_eq!(fat["config_txt"], config, "config.txt");
}
