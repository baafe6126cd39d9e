//! `imager build --talos-version V` for the newest patch of every Talos minor from 1.10 on,
//! against the stand-in release of V that `scripts/fixtures` serves (imager image, extensions
//! bundle, overlays bundle and the sbc-raspberrypi version it pins; see
//! `moonboot_tests::build::release_versions`).
//!
//! The kernel command lines are checked against literal strings: Talos's `DefaultArgs` at each
//! tag (talos `pkg/machinery/kernel/kernel.go`, golden strings in `pkg/imager/imager_test.go` at
//! v1.12–v1.14) after the `rpi_generic` overlay's arguments (sbc-raspberrypi
//! `installers/rpi_generic/src/main.go`), so a wrong table fails here too, not only its own
//! unit tests.
//!
//! Skipped with a reason when the fixtures are absent (a failure under
//! MOONBOOT_REQUIRE_FIXTURES=1).

use std::path::PathBuf;
use std::process::Command;

use moonboot_tests::build::{release_versions, sbc_raspberrypi_pin, standin_spdx};
use moonboot_tests::fixtures::{fixtures_dir, with_registry};

const IMAGER: &str = env!("CARGO_BIN_EXE_imager");

/// The `rpi_generic` overlay's arguments, which replace the metal platform's consoles.
const RPI: &str = "talos.platform=metal console=tty0 console=ttyAMA0,115200 \
                   sysctl.kernel.kexec_load_disabled=1 talos.dashboard.disabled=1";

/// `DefaultArgs` of each version (with `slab_nomerge=` written as Talos's cmdline library
/// writes a flag with an empty value).
fn default_args(version: &str) -> &'static str {
    match version {
        "v1.10.9" => {
            "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
             printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1"
        }
        "v1.11.6" => {
            "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
             printk.devkmsg=on selinux=1"
        }
        "v1.12.11" => {
            "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
             printk.devkmsg=on selinux=1 module.sig_enforce=1"
        }
        "v1.13.9" => {
            "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
             printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        }
        "v1.14.0" => {
            "slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 \
             proc_mem.force_override=never"
        }
        other => panic!("no expected arguments for {other}: add them here"),
    }
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_newest_patch_of_every_minor_builds_from_its_own_release() {
    let test = "the_newest_patch_of_every_minor_builds_from_its_own_release";
    let Some(f) = with_registry(test) else { return };
    let versions = release_versions();
    assert_eq!(versions, ["v1.10.9", "v1.11.6", "v1.12.11", "v1.13.9", "v1.14.0"]);
    let work = fixtures_dir().join("tmp").join(format!("imager-releases-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    for v in &versions {
        let out: PathBuf = work.join(v);
        let mut c = Command::new(IMAGER);
        c.env_remove("SOURCE_DATE_EPOCH")
            .env_remove("MOONBOOT_BOARD_INPUTS")
            .args(["build", "--arch", "arm64", "--talos-version", v, "--overlay", "rpi_generic"])
            .args(["--registry-mirror", &f.mirror, "--insecure-registry", &f.registry, "--output"])
            .arg(&out);
        match std::env::var_os("MOONBOOT_AGENT_BINARY") {
            Some(bin) => c.arg("--agent-binary").arg(bin),
            None => c.arg("--agent-from-source"),
        };
        let o = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{v}: {stderr}");
        assert!(!stderr.contains("warning:"), "{v}: {stderr}");

        // Kernel arguments: the overlay's, then Talos's defaults of this version.
        let metal = std::fs::read_to_string(out.join("cmdline-metal-arm64")).unwrap();
        assert_eq!(metal, format!("{RPI} {}", default_args(v)), "{v}");
        let aws = std::fs::read_to_string(out.join("cmdline-aws-arm64")).unwrap();
        assert!(aws.starts_with("talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0"), "{v}: {aws}");
        assert!(aws.contains(" nvme_core.io_timeout=4294967295"), "{v}: aws keeps nvme_core: {aws}");

        // The inputs are this release's: imager image, bundles, and the overlay it pins.
        let b = json(&out.join("build.json"));
        assert_eq!(b["talos_version"], v.as_str());
        let base = &b["inputs"]["base"];
        assert_eq!(base["reference"], format!("ghcr.io/siderolabs/imager:{v}"));
        assert_eq!(base["index_digest"], f.images[&format!("imager@{v}")].index_digest.as_str(), "{v}");
        assert_eq!(b["inputs"]["extensions_bundle"]["reference"], format!("ghcr.io/siderolabs/extensions:{v}"));
        assert_eq!(b["inputs"]["overlays_bundle"]["reference"], format!("ghcr.io/siderolabs/overlays:{v}"));
        let pin = sbc_raspberrypi_pin(v).unwrap();
        let sbc = if pin == "v0.1.5" { "sbc-raspberrypi".to_string() } else { format!("sbc-raspberrypi@{pin}") };
        let overlay = &b["inputs"]["overlay"]["image"];
        assert!(
            overlay["reference"].as_str().unwrap().starts_with(&format!("ghcr.io/siderolabs/sbc-raspberrypi:{pin}@")),
            "{v}: {overlay}"
        );
        assert_eq!(overlay["index_digest"], f.images[&sbc].index_digest.as_str(), "{v}");
        assert_eq!(pin, if v.as_str() < "v1.12" { "v0.1.5" } else { "v0.2.0" }, "{v}");

        // Talos ≥ 1.11 ships an SPDX SBOM; the build passes it on, byte for byte.
        let sbom = out.join("talos-arm64.spdx.json");
        let has_sbom = v.as_str() >= "v1.11";
        assert_eq!(sbom.exists(), has_sbom, "{v}");
        assert_eq!(base["files"].get("usr/install/arm64/talos.spdx.json").is_some(), has_sbom, "{v}");
        if has_sbom {
            assert_eq!(std::fs::read_to_string(&sbom).unwrap(), standin_spdx(v, "arm64", f.source_date_epoch));
            let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
            assert!(sums.contains("  talos-arm64.spdx.json\n"), "{v}: {sums}");
        }
    }
    std::fs::remove_dir_all(&work).unwrap();
}
