//! `scripts/rpi-inputs` survives the archive moving on: a pinned package version Debian no longer
//! serves is replaced by what the archive serves in its place when the pinned file in it has the
//! pinned sha256, and refused with both digests when it has not.
//!
//! The archive here is a local flat apt repository (`file:`, no network) that apt reads through
//! `APT_CONFIG`: the generic arm64 kernel package `scripts/rpi-inputs` cached (the one that carries
//! the CM3 device tree) and a `linux-image-arm64` metapackage stanza depending on it, as Debian's
//! archive has them. The pins name a kernel ABI package that repository does not serve
//! (`linux-image-6.1.0-1-arm64`), as happens each time Debian ships a new kernel ABI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moonboot_tests::fixtures::{fixtures_dir, skip};

/// The local repository and an apt configuration that reads only it; returns the configuration.
fn local_archive(dir: &Path, kernel_deb: &Path) -> PathBuf {
    let repo = dir.join("repo");
    for d in ["repo", "lists/partial", "cache/archives/partial", "parts", "prefs.d"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(kernel_deb, repo.join("kernel.deb")).unwrap();
    let field = |f: &str| {
        let out = Command::new("dpkg-deb").args(["-f"]).arg(kernel_deb).arg(f).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (name, version) = (field("Package"), field("Version"));
    let bytes = std::fs::read(kernel_deb).unwrap();
    let sha = boot_artifact::digest::Sha256Digest::of(&bytes).hex();
    let packages = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: arm64\nFilename: ./kernel.deb\nSize: {}\nSHA256: {sha}\n\n\
         Package: linux-image-arm64\nVersion: {version}\nArchitecture: arm64\nDepends: {name} (= {version})\n\
         Filename: ./absent.deb\nSize: 1\nSHA256: {}\n\n",
        bytes.len(),
        "0".repeat(64)
    );
    std::fs::write(repo.join("Packages"), packages).unwrap();
    std::fs::write(dir.join("sources.list"), format!("deb [trusted=yes] file:{} ./\n", repo.display())).unwrap();
    let conf = dir.join("apt.conf");
    let p = |d: &str| dir.join(d).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{}\";\nDir::Etc::SourceParts \"{}\";\nDir::Etc::PreferencesParts \"{}\";\n\
             Dir::State::Lists \"{}\";\nDir::Cache \"{}\";\nAPT::Architectures {{ \"amd64\"; \"arm64\"; }};\n",
            p("sources.list"),
            p("parts"),
            p("prefs.d"),
            p("lists"),
            p("cache")
        ),
    )
    .unwrap();
    let st = Command::new("apt-get").args(["update", "-q"]).env("APT_CONFIG", &conf).output().unwrap();
    assert!(st.status.success(), "apt-get update: {}", String::from_utf8_lossy(&st.stderr));
    conf
}

fn rpi_inputs(conf: &Path, pins: &Path, debs: &Path, out: &Path) -> Output {
    let script = moonboot_tests::stage1::workspace().join("scripts/rpi-inputs");
    Command::new(script)
        .arg(out)
        .env("APT_CONFIG", conf)
        .env("RPI_INPUTS_PINS", pins)
        .env("RPI_INPUTS_DEBS", debs)
        .output()
        .unwrap()
}

#[test]
fn a_kernel_abi_package_gone_from_the_archive_is_replaced_only_by_the_same_file() {
    let test = "rpi_inputs_archive_moved_on";
    let workspace = moonboot_tests::stage1::workspace();
    let kernel_deb = match moonboot_tests::rpi::kernel_deb(&workspace) {
        Ok(d) => d,
        Err(e) => return skip(test, &format!("{e:#}")),
    };
    let dir = fixtures_dir().join("tmp").join(format!("rpi-inputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = local_archive(&dir, &kernel_deb);

    // The pinned DTB line, moved to an ABI the repository does not serve.
    let pins_text = std::fs::read_to_string(workspace.join("boards/rpi-cm3.inputs")).unwrap();
    let line: Vec<&str> = pins_text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 5 && f[1].starts_with("linux-image-"))
        .expect("a linux-image pin");
    let current = line[1].trim_end_matches(":arm64");
    let gone = "linux-image-6.1.0-1-arm64";
    let path = line[3].replace(current, gone);
    let pins = dir.join("pins");
    let debs = dir.join("debs");
    let out = dir.join("files");
    std::fs::write(&pins, format!("{} {gone}:arm64 6.1.4-1 {path} {}\n", line[0], line[4])).unwrap();

    let o = rpi_inputs(&conf, &pins, &debs, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{gone} 6.1.4-1 is no longer in the archive; trying {current}")), "{stderr}");
    let note = stderr.lines().find(|l| l.contains("update the pin in ")).unwrap_or_default();
    assert!(
        note.ends_with(&format!("{}/pins", dir.file_name().unwrap().to_string_lossy())),
        "names the pins file: {stderr}"
    );
    let dtb = std::fs::read(out.join(line[0])).unwrap();
    assert_eq!(boot_artifact::digest::Sha256Digest::of(&dtb).hex(), line[4], "the pinned bytes");
    let link = std::fs::read_link(debs.join(format!("{gone}_6.1.4-1_arm64.deb"))).unwrap();
    assert!(link.to_string_lossy().starts_with(&format!("{current}_")), "{}", link.display());
    // A second run takes the fast path through the link, with no apt at all.
    let again = rpi_inputs(Path::new("/nonexistent"), &pins, &debs, &out);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));

    // The same, pinned to other bytes: refused, naming both digests.
    let other = "1".repeat(64);
    std::fs::write(&pins, format!("{} {gone}:arm64 6.1.4-1 {path} {other}\n", line[0])).unwrap();
    let _ = std::fs::remove_dir_all(&debs);
    let o = rpi_inputs(&conf, &pins, &debs, &dir.join("files2"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("is sha256 {}, pinned {other}", line[4])), "{stderr}");
    assert!(!dir.join("files2").join(line[0]).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
