//! cosign signatures against the real tool, offline: Debian trixie's `cosign` 2.5
//! (`target/peers/cosign`, fetched by `scripts/setup`) and a private `docker-registry` on
//! 127.0.0.1 holding copies of the stand-in release.
//!
//! - cosign → moonboot: `cosign sign --key --tlog-upload=false` signs the stand-in imager image,
//!   extensions bundle and extension images; `imager build --signature-key cosign.pub` verifies
//!   each before using it and records every signature in build.json. `talos-agent boot
//!   --signature-key` accepts a boot artifact cosign signed.
//! - moonboot → cosign: `imager publish --sign-key` signs the boot artifact's index and manifest;
//!   `cosign verify --key --insecure-ignore-tlog` accepts both, and so does `talos-agent boot
//!   --signature-key`.
//! - refused, each with its own error (the agent exits 4, before fetching any layer): unsigned,
//!   one flipped signature byte, the wrong key, image Y's valid signature grafted onto X's `.sig`
//!   tag, an oversize signature manifest; and `imager build` with the wrong key, and with
//!   `--lock` of the first build's build.json after the imager tag moved to another signed image.
//!
//! cosign runs with its HTTP(S) proxy set to a closed port on 127.0.0.1 (only 127.0.0.1 is
//! exempt), so any request it tried beyond the test registry would fail here instead of leaving
//! the machine; none is needed (key signing without the transparency log).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use moonboot_tests::fixtures::{self, skip, Fixtures};
use moonboot_tests::private_registry::PrivateRegistry;
use moonboot_tests::registry::Repo;
use moonboot_tests::rpi::support::run;
use serde_json::Value;

const NAME: &str = "cosign_signatures_interoperate_and_forgeries_are_refused";

fn cosign_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/cosign")
}

/// cosign with an empty key password and every non-loopback request sent to a closed port.
fn cosign(dir: &Path) -> Command {
    let mut c = Command::new(cosign_bin());
    c.current_dir(dir)
        .env("COSIGN_PASSWORD", "")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1")
        .env("TUF_ROOT", dir.join("tuf"))
        .env("HOME", dir);
    c
}

fn skopeo_copy(from: &str, to: &str) {
    moonboot_tests::demo::skopeo_copy(from, to).unwrap();
}

/// PUTs `manifest` (an OCI image manifest) to `host`'s `repo` under `tag`.
fn put_manifest(host: &str, repo: &str, tag: &str, manifest: &[u8], dir: &Path) {
    let file = dir.join("put.json");
    std::fs::write(&file, manifest).unwrap();
    run(Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{host}/v2/{repo}/manifests/{tag}")));
}

/// `talos-agent boot --dry-run --json --signature-key KEY REFERENCE`: exit code and JSON.
fn agent_boot(agent: &Path, reg: &str, key: &Path, reference: &str) -> (i32, Value) {
    let o = Command::new(agent)
        .args(["boot", reference, "--insecure-registry", reg, "--signature-key"])
        .arg(key)
        .args(["--dry-run", "--json", "--platform", "metal", "--no-network-carry-over"])
        .output()
        .unwrap();
    let j = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "talos-agent boot printed no JSON: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), j)
}

fn refused(agent: &Path, reg: &str, key: &Path, reference: &str, why: &str) {
    let (code, j) = agent_boot(agent, reg, key, reference);
    let err = j["error"].as_str().unwrap_or_default();
    assert_eq!(code, 4, "{reference}: {j}");
    assert!(err.contains(why), "{reference}: expected {why:?} in {err:?}");
    eprintln!("cosign: refused {reference}: {err}");
}

#[test]
fn cosign_signatures_interoperate_and_forgeries_are_refused() {
    let Some(f) = fixtures::with_registry(NAME) else { return };
    if !cosign_bin().exists() {
        skip(NAME, "target/peers/cosign is absent (scripts/setup fetches Debian trixie's cosign)");
        return;
    }
    let peers = moonboot_tests::build::netboot_peers_dir();
    if !peers.join("ipxe-amd64.efi").exists() {
        skip(NAME, "target/netboot-peers has no iPXE (scripts/setup)");
        return;
    }
    let (imager, agent) = moonboot_tests::demo::host_binaries().expect("building imager and talos-agent");
    let dir = fixtures::fixtures_dir().join("tmp").join(format!("cosign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let registry = PrivateRegistry::start(&dir.join("registry"), None).unwrap();
    let reg = registry.addr.clone();
    interop(&f, &imager, &agent, &dir, &reg);
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

fn interop(f: &Fixtures, imager: &Path, agent: &Path, dir: &Path, reg: &str) {
    // The stand-in release in a registry nothing else writes to.
    let upstream = ["imager", "extensions", "spin", "tailscale"];
    for name in upstream {
        let img = &f.images[name];
        skopeo_copy(&img.reference, &format!("{reg}/{}:{}", img.repository, img.tag));
    }
    // Keys: cosign's own pair (encrypted cosign.key), and a PEM P-256 pair for moonboot.
    run(cosign(dir).args(["generate-key-pair", "--output-key-prefix", "cosign"]));
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(dir.join("moonboot.key")));
    let pubkey = run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(dir.join("moonboot.key"))).stdout;
    std::fs::write(dir.join("moonboot.pub"), pubkey).unwrap();
    let (cosign_pub, moonboot_pub) = (dir.join("cosign.pub"), dir.join("moonboot.pub"));

    // cosign → moonboot: cosign signs the upstream inputs by index digest …
    for name in upstream {
        let img = &f.images[name];
        run(cosign(dir)
            .args(["sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry"])
            .arg(format!("{reg}/{}@{}", img.repository, img.index_digest)));
    }
    // … and imager build verifies each before using it.
    let build = |key: &Path, out: &str| {
        Command::new(imager)
            .args(["build", "--arch", "amd64", "--no-talos-agent", "--registry-mirror", &format!("ghcr.io={reg}")])
            .args(["--insecure-registry", reg, "--signature-key"])
            .arg(key)
            .arg("--ipxe-dir")
            .arg(moonboot_tests::build::netboot_peers_dir())
            .arg("--output")
            .arg(dir.join(out))
            .output()
            .unwrap()
    };
    let o = build(&cosign_pub, "out");
    assert!(o.status.success(), "imager build --signature-key: {}", String::from_utf8_lossy(&o.stderr));
    let bj: Value = serde_json::from_slice(&std::fs::read(dir.join("out/build.json")).unwrap()).unwrap();
    let sigs = &bj["signatures"];
    assert_eq!(sigs["policy"], "key", "{sigs}");
    let verified: Vec<String> =
        sigs["verified"].as_array().unwrap().iter().map(|v| v["image"].as_str().unwrap().to_string()).collect();
    for name in upstream {
        let img = &f.images[name];
        let want = format!("ghcr.io/{}@{}", img.repository, img.index_digest);
        assert!(verified.contains(&want), "build.json lacks the signature of {want}: {sigs}");
    }
    assert!(sigs["verified"].as_array().unwrap().iter().all(|v| v["key"] == sigs["key"]), "{sigs}");
    // The wrong key stops the build, naming the image.
    let o = build(&moonboot_pub, "wrong-key");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cosign signature: no signature verifies with the key"), "{err}");

    // A tag moved to another image that is validly signed too: signatures cannot tell, the lock
    // of the first build's build.json can.
    let moved = &f.images["imager@v1.10.9"];
    let base = &f.images["imager"];
    skopeo_copy(&moved.reference, &format!("{reg}/{}:{}", base.repository, base.tag));
    run(cosign(dir)
        .args(["sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry"])
        .arg(format!("{reg}/{}@{}", moved.repository, moved.index_digest)));
    let o = Command::new(imager)
        .args(["build", "--arch", "amd64", "--no-talos-agent", "--registry-mirror", &format!("ghcr.io={reg}")])
        .args(["--insecure-registry", reg, "--signature-key"])
        .arg(&cosign_pub)
        .arg("--lock")
        .arg(dir.join("out/build.json"))
        .arg("--ipxe-dir")
        .arg(moonboot_tests::build::netboot_peers_dir())
        .arg("--output")
        .arg(dir.join("moved"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!("ghcr.io/{}:{} moved: --lock", base.repository, base.tag);
    assert!(!o.status.success() && err.contains(&want), "{err}");
    assert!(
        err.contains(&format!("pins {}, the registry now answers {}", base.index_digest, moved.index_digest)),
        "{err}"
    );

    // moonboot → cosign: imager publish --sign-key signs the index and each manifest.
    let publish = |to: &str, sign: bool| {
        let mut c = Command::new(imager);
        c.args(["publish", "--to", to, "--output"]).arg(dir.join("out")).args(["--insecure-registry", reg, "--json"]);
        if sign {
            c.arg("--sign-key").arg(dir.join("moonboot.key"));
        }
        let report: Value = serde_json::from_slice(&run(&mut c).stdout).unwrap();
        report
    };
    let report = publish(&format!("{reg}/moonboot/boot:v1"), true);
    let index = report["boot"]["index_digest"].as_str().unwrap().to_string();
    let manifest = report["boot"]["manifests"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(report["signatures"].as_array().map(Vec::len), Some(2), "{report}");
    for d in [&index, &manifest] {
        run(cosign(dir)
            .args(["verify", "--key", "moonboot.pub", "--insecure-ignore-tlog=true", "--allow-http-registry"])
            .arg(format!("{reg}/moonboot/boot@{d}")));
    }
    let boot = format!("{reg}/moonboot/boot:v1");
    let (code, j) = agent_boot(agent, reg, &moonboot_pub, &boot);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["resolved"]["signature"]["image"], format!("{reg}/moonboot/boot@{index}"), "{j}");
    // By manifest digest, as the EC2 user-data names it.
    let (code, j) = agent_boot(agent, reg, &moonboot_pub, &format!("{reg}/moonboot/boot@{manifest}"));
    assert_eq!(code, 0, "{j}");

    // A boot artifact cosign signed: the agent accepts it with cosign.pub.
    skopeo_copy(&boot, &format!("{reg}/moonboot/cosigned:v1"));
    run(cosign(dir)
        .args(["sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--allow-http-registry"])
        .arg(format!("{reg}/moonboot/cosigned@{index}")));
    let (code, j) = agent_boot(agent, reg, &cosign_pub, &format!("{reg}/moonboot/cosigned:v1"));
    assert_eq!(code, 0, "{j}");

    // Refused, each with its own error.
    // Unsigned.
    publish(&format!("{reg}/moonboot/unsigned:v1"), false);
    refused(agent, reg, &moonboot_pub, &format!("{reg}/moonboot/unsigned:v1"), "unsigned: no sha256-");
    // The wrong key.
    refused(agent, reg, &cosign_pub, &boot, "no signature verifies with the key");
    // One flipped byte of the signature.
    let sig_tag = format!("sha256-{}.sig", index.trim_start_matches("sha256:"));
    skopeo_copy(&boot, &format!("{reg}/moonboot/flipped:v1"));
    skopeo_copy(&format!("{reg}/moonboot/boot:{sig_tag}"), &format!("{reg}/moonboot/flipped:{sig_tag}"));
    let (_, bytes) = Repo { host: reg, name: "moonboot/flipped" }.manifest(&sig_tag).unwrap();
    let mut m: Value = serde_json::from_slice(&bytes).unwrap();
    let ann = &mut m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
    let mut der = base64::engine::general_purpose::STANDARD.decode(ann.as_str().unwrap()).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    *ann = Value::String(base64::engine::general_purpose::STANDARD.encode(&der));
    put_manifest(reg, "moonboot/flipped", &sig_tag, &serde_json::to_vec(&m).unwrap(), dir);
    refused(agent, reg, &moonboot_pub, &format!("{reg}/moonboot/flipped:v1"), "the signature does not match");
    // The graft: spin's valid cosign signature copied onto X's .sig tag.
    let spin = &f.images["spin"];
    skopeo_copy(&boot, &format!("{reg}/moonboot/graft:v1"));
    skopeo_copy(
        &format!("{reg}/{}:sha256-{}.sig", spin.repository, spin.index_digest.trim_start_matches("sha256:")),
        &format!("{reg}/moonboot/graft:{sig_tag}"),
    );
    refused(
        agent,
        reg,
        &cosign_pub,
        &format!("{reg}/moonboot/graft:v1"),
        &format!("is for {}, not {index}", spin.index_digest),
    );
    // An oversize signature manifest (over Talos's 128 KiB).
    skopeo_copy(&boot, &format!("{reg}/moonboot/oversize:v1"));
    skopeo_copy(&format!("{reg}/moonboot/boot:{sig_tag}"), &format!("{reg}/moonboot/oversize:{sig_tag}"));
    let (_, bytes) = Repo { host: reg, name: "moonboot/oversize" }.manifest(&sig_tag).unwrap();
    let mut m: Value = serde_json::from_slice(&bytes).unwrap();
    m["annotations"] = serde_json::json!({ "padding": "x".repeat(140 << 10) });
    put_manifest(reg, "moonboot/oversize", &sig_tag, &serde_json::to_vec(&m).unwrap(), dir);
    refused(agent, reg, &moonboot_pub, &format!("{reg}/moonboot/oversize:v1"), "over the 131072-byte cap");
}
