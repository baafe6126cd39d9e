//! `imager cmdline` as a user runs it: the binary's stdout, stderr and exit code.

use std::process::Command;

fn imager(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imager")).args(args).output().expect("run imager");
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn metal_arm64_1_11_is_talos_imager_output() {
    let (code, out, _) = imager(&["cmdline", "--arch", "arm64", "--platform", "metal", "--talos-version", "1.11.0"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1\n"
    );
}

#[test]
fn aws_with_extra_args_and_rpi_overlay() {
    let (code, out, _) = imager(&[
        "cmdline",
        "--arch",
        "arm64",
        "--platform",
        "aws",
        "--talos-version",
        "v1.10.5",
        "--extra-kernel-arg",
        "-selinux",
        "--extra-kernel-arg",
        "talos.config=http://10.20.13.140:8080/config?uuid=${uuid}",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 talos.config=http://10.20.13.140:8080/config?uuid=${uuid}\n"
    );
    let (code, out, _) =
        imager(&["cmdline", "--arch", "arm64", "--talos-version", "1.10.5", "--overlay", "rpi_generic"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("talos.platform=metal console=tty0 console=ttyAMA0,115200 sysctl.kernel.kexec_load_disabled=1 talos.dashboard.disabled=1 init_on_alloc=1"), "{out}");
}

/// Current Talos: what CozyStack pins (1.13.6) and 1.14, against talos v1.14.0-rc.1
/// `pkg/imager/imager_test.go` (`cmdline-1.13-arm64`, `cmdline-aws-1.14-arm64`).
#[test]
fn current_talos_versions() {
    let (code, out, err) = imager(&["cmdline", "--arch", "arm64", "--platform", "metal", "--talos-version", "1.13.6"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never\n"
    );
    let (code, out, err) = imager(&["cmdline", "--arch", "arm64", "--platform", "aws", "--talos-version", "v1.14.0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 nvme_core.io_timeout=4294967295 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never\n"
    );
}

#[test]
fn errors_are_one_line_with_exit_code_1() {
    for (args, needle) in [
        (&["cmdline", "--arch", "arm64", "--talos-version", "1.15.0"][..], "up to v1.14.x"),
        (&["cmdline", "--arch", "arm64", "--talos-version", "one"][..], "--talos-version"),
        (&["cmdline", "--arch", "arm64", "--talos-version", "1.10.5", "--extra-kernel-arg", "a=\"b"][..], "unbalanced"),
        (
            &["cmdline", "--arch", "amd64", "--talos-version", "1.10.5", "--overlay", "rpi_generic"][..],
            "overlay rpi_generic",
        ),
    ] {
        let (code, out, err) = imager(args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("imager: ") && err.contains(needle), "{err}");
    }
    let long = format!("x={}", "a".repeat(2000));
    let (code, _, err) =
        imager(&["cmdline", "--arch", "arm64", "--talos-version", "1.10.5", "--extra-kernel-arg", &long]);
    assert_eq!(code, 1);
    assert!(err.contains("over the 2048-byte limit"), "{err}");
    let (code, _, _) = imager(&["cmdline", "--arch", "sparc", "--talos-version", "1.10.5"]);
    assert_eq!(code, 2, "usage errors exit 2");
}

#[test]
fn schematic_id_of_the_operators_raspberry_pi_image() {
    let dir = std::env::temp_dir().join(format!("moonboot-schematic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rpi.yaml");
    std::fs::write(
        &file,
        "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\ncustomization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/spin\n      - siderolabs/tailscale\n",
    )
    .unwrap();
    let (code, out, _) = imager(&["schematic", "id", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, "c0f06d3cffeec27089a195ee6942ee0e1911b8521d21d7e4afde5e023fbff114\n"));
    // A field Image Factory added in 2025 (image-factory v0.9.0), by go-yaml v4's Marshal.
    std::fs::write(&file, "customization:\n  bootloader: grub\n").unwrap();
    let (code, out, _) = imager(&["schematic", "id", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb\n"));
    std::fs::write(&file, "customization:\n  bootloaders: grub\n").unwrap();
    let (code, _, err) = imager(&["schematic", "id", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.starts_with("imager: ") && err.contains("rpi.yaml") && err.contains("bootloaders"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
