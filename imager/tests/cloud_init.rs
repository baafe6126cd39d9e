//! The EC2 user-data: `imager cloud-init` on a build output (checked by `cloud-init schema` when
//! cloud-init is installed), and the boot script it carries run for real with `sh`, `curl` and
//! `sha256sum` against local registries: one serving the wrong bytes (refused, not run), one asking
//! for an anonymous Bearer token, then the fake talos-agent run with the rendered arguments.
//!
//! Skipped with a reason when `cloud-init`, `curl` or `sha256sum` is absent (a failure under
//! MOONBOOT_REQUIRE_FIXTURES=1; scripts/setup installs them).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use boot_artifact::digest::Sha256Digest;
use kernel_cmdline::preset::Arch;
use moonboot_imager::cli::cloud_init::UserDataFlags;
use moonboot_imager::cloud_init::{self, Instance, Provenance, UserData};

const IMAGER: &str = env!("CARGO_BIN_EXE_imager");
const BOOT: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// Prints why `test` is skipped; panics instead under MOONBOOT_REQUIRE_FIXTURES=1.
fn skip(test: &str, reason: &str) {
    if std::env::var_os("MOONBOOT_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {reason} (MOONBOOT_REQUIRE_FIXTURES=1 turns skips into failures)");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn imager(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(IMAGER).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8(out.stderr).unwrap())
}

/// A static arm64 ELF header as `imager publish` and `imager cloud-init` check it (not runnable).
fn fake_arm64_elf() -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..6].copy_from_slice(b"\x7fELF\x02\x01");
    b[18..20].copy_from_slice(&183u16.to_le_bytes());
    b.extend_from_slice(b"talos-agent stand-in for cloud-init tests");
    b
}

/// A build output with what `imager cloud-init` reads: build.json and talos-agent-arm64.
fn fake_build_output(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let build = serde_json::json!({
        "arch": "arm64",
        "talos_version": "v1.10.5",
        "schematic_id": "c0f06d3cffeec27089a195ee6942ee0e1911b8521d21d7e4afde5e023fbff114",
        "outputs": {"boot-arm64@manifest": BOOT, "kernel-arm64": BOOT},
    });
    std::fs::write(dir.join("build.json"), serde_json::to_vec_pretty(&build).unwrap()).unwrap();
    let bin = fake_arm64_elf();
    std::fs::write(dir.join("talos-agent-arm64"), &bin).unwrap();
    bin
}

#[test]
fn imager_cloud_init_renders_a_build_output_that_cloud_init_accepts() {
    let test = "imager_cloud_init_renders_a_build_output_that_cloud_init_accepts";
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("_out");
    let from = out.to_str().unwrap();
    let bin = fake_build_output(&out);
    let agent = Sha256Digest::of(&bin);
    let flags = [
        "--boot-repository",
        "ghcr.io/moonboot/boot:v1.10.5",
        "--instance-registry-mirror",
        "ghcr.io=10.20.13.140:5000",
        "--instance-insecure-registry",
        "10.20.13.140:5000",
        "--report",
        "http://10.20.13.140:8090/v1/report",
        "--report-token",
        "t0k3n",
        "--instance-kernel-arg",
        "-console=tty1",
    ];
    let mut args = vec!["cloud-init", "--from", from];
    args.extend(flags);
    let (code, _, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    let path = out.join("cloud-init/user-data-ec2-arm64.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(stderr.contains(&format!("{} bytes of EC2 user-data", text.len())), "{stderr}");
    assert!(text.starts_with("#cloud-config\n"));
    assert!(text.contains(&format!("boot_ref='ghcr.io/moonboot/boot@{BOOT}'")), "{text}");
    assert!(text.contains(&format!("agent_sha256='{}'", agent.hex())), "{text}");
    assert!(
        text.contains(&format!("'http://10.20.13.140:5000/v2/moonboot/boot-agent/blobs/{agent}' 'https://ghcr.io/"))
    );
    assert!(text.contains("--extra-kernel-arg='-console=tty1'"), "{text}");

    // `-` writes the same bytes to stdout; --gzip writes the gzip of them next to it.
    let mut args = vec!["cloud-init", "--from", from, "--output", "-"];
    args.extend(flags);
    let (code, stdout, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, text.as_bytes());
    let mut args = vec!["cloud-init", "--from", from, "--gzip"];
    args.extend(flags);
    let (code, _, stderr) = imager(&args);
    assert_eq!(code, 0, "{stderr}");
    let gz = std::fs::read(out.join("cloud-init/user-data-ec2-arm64.yaml.gz")).unwrap();
    let mut back = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
    assert_eq!(back, text);

    // What is missing is named, with the command that writes it, on one line.
    std::fs::remove_file(out.join("talos-agent-arm64")).unwrap();
    let (code, _, stderr) = imager(&["cloud-init", "--from", from, "--boot-repository", "ghcr.io/moonboot/boot"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("talos-agent-arm64: not found (imager build --arch arm64"), "{stderr}");
    std::fs::remove_file(out.join("build.json")).unwrap();
    let (code, _, stderr) = imager(&["cloud-init", "--from", from, "--boot-repository", "ghcr.io/moonboot/boot"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("build.json: not found (imager build --arch arm64"), "{stderr}");
    // A value the user-data cannot carry.
    fake_build_output(&out);
    let (code, _, stderr) = imager(&[
        "cloud-init",
        "--from",
        from,
        "--boot-repository",
        "ghcr.io/moonboot/boot",
        "--report",
        "http://x/",
        "--report-token",
        "it's",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("imager: --report-token \"it's\": holds a single quote"), "{stderr}");
    // Usage: --boot-repository is required; --report-token needs --report.
    assert_eq!(imager(&["cloud-init", "--from", from]).0, 2);

    if !on_path("cloud-init") {
        skip(test, "cloud-init is not installed (scripts/setup installs Debian's cloud-init): no schema check");
        return;
    }
    for file in [&path, &out.join("cloud-init/user-data-ec2-arm64.yaml.gz")] {
        if file.extension().is_some_and(|e| e == "gz") {
            // cloud-init reads gzip'd user-data at boot, but `schema -c` wants the text.
            continue;
        }
        let o = Command::new("cloud-init").arg("schema").arg("-c").arg(file).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "cloud-init schema -c {}: {said}", file.display());
        assert!(said.contains("Valid cloud-config"), "{said}");
    }
    // The check can fail: a misspelt module key is refused.
    let bad = work.path().join("bad.yaml");
    std::fs::write(&bad, text.replace("runcmd:", "runcmd: 3\nruncmd_typo:")).unwrap();
    let o = Command::new("cloud-init").arg("schema").arg("-c").arg(&bad).output().unwrap();
    assert!(!o.status.success(), "cloud-init schema accepted {}", bad.display());
}

/// A test registry's answer: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One request a test registry received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: BTreeMap<String, String>,
}

/// A plain-HTTP server on 127.0.0.1 answering each request with `answer(request, port)`:
/// (status, extra headers, body). Returns its port and the requests it saw.
fn serve(answer: impl Fn(&Request, u16) -> Answer + Send + Sync + 'static) -> (u16, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (answer, log) = (answer.clone(), log.clone());
            std::thread::spawn(move || handle(stream, port, &*answer, &log));
        }
    });
    (port, seen)
}

fn handle(stream: TcpStream, port: u16, answer: &dyn Fn(&Request, u16) -> Answer, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Request { path, headers };
    log.lock().unwrap().push(req.clone());
    let (status, extra, body) = answer(&req, port);
    let mut w = stream;
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = w.write_all(head.as_bytes());
    let _ = w.write_all(&body);
}

/// The boot script of `u`, with its directory moved from /run to `run_dir`.
fn script_of(u: &UserData, run_dir: &Path) -> String {
    #[derive(serde::Deserialize)]
    struct Config {
        write_files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        content: String,
    }
    let text = cloud_init::render_ec2(u).unwrap();
    let c: Config = moonboot_imager::yaml::from_str(&text).unwrap();
    let script = c.write_files.into_iter().next().unwrap().content;
    assert!(script.contains("\nrun_dir=/run\n"));
    script.replace("\nrun_dir=/run\n", &format!("\nrun_dir='{}'\n", run_dir.display()))
}

/// Runs `script` with `sh`; returns (exit code, stdout + stderr lines).
fn run_script(script: &str, dir: &Path) -> (i32, Vec<String>) {
    let path = dir.join("moonboot-talos-boot");
    std::fs::write(&path, script).unwrap();
    let o = Command::new("sh").arg(&path).output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), all.lines().map(str::to_string).collect())
}

fn user_data(boot_repository: &str, mirrors: &[String], insecure: &[String], agent: Sha256Digest) -> UserData {
    let arch = Arch::native().expect("checked by the caller");
    let flags = UserDataFlags {
        boot_repository: Some(boot_repository.to_string()),
        instance_registry_mirrors: mirrors.to_vec(),
        instance_insecure_registries: insecure.to_vec(),
        report: Some("http://10.20.13.140:8090/v1/report".into()),
        report_token: Some("t0k3n".into()),
        instance_kernel_args: vec!["-console=tty1".into()],
        ..UserDataFlags::default()
    };
    UserData {
        arch,
        boot_digest: BOOT.parse().unwrap(),
        agent_digest: agent,
        instance: Instance::from_flags(&flags).unwrap().unwrap(),
        provenance: Provenance {
            talos_version: "v1.10.5".into(),
            schematic_id: "test".into(),
            imager_version: "test".into(),
        },
    }
}

#[test]
fn the_boot_script_runs_only_a_verified_talos_agent_with_the_rendered_arguments() {
    let test = "the_boot_script_runs_only_a_verified_talos_agent_with_the_rendered_arguments";
    for tool in ["curl", "sha256sum", "sh"] {
        if !on_path(tool) {
            return skip(test, &format!("{tool} is not installed"));
        }
    }
    if Arch::native().is_none() {
        return skip(test, "this machine is neither arm64 nor amd64");
    }
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("talos-agent-ran");
    // The stand-in talos-agent: prints its arguments, leaves a marker, exits 3 (source unreachable).
    let agent_bytes = format!(
        "#!/bin/sh\nprintf 'fake talos-agent:'\nprintf ' [%s]' \"$@\"\necho\ntouch '{}'\nexit 3\n",
        marker.display()
    )
    .into_bytes();
    let agent = Sha256Digest::of(&agent_bytes);
    let blob = format!("/v2/moonboot/boot-agent/blobs/{agent}");

    // Mirror 1 serves other bytes for every blob; mirror 2 wants an anonymous Bearer token from
    // its /token.
    let (bad, bad_seen) = serve(move |r, _| match r.path.contains("/blobs/sha256:") {
        true => (200, vec![], b"#!/bin/sh\necho pwned\n".to_vec()),
        false => (404, vec![], vec![]),
    });
    let (good, good_seen) = {
        let (blob, agent_bytes) = (blob.clone(), agent_bytes.clone());
        serve(move |r, port| {
            if r.path.starts_with("/token?") {
                return (200, vec![], br#"{"access_token":"wrong","token":"anon-123","expires_in":300}"#.to_vec());
            }
            if r.path != blob {
                return (404, vec![], vec![]);
            }
            match r.headers.get("authorization").map(String::as_str) {
                Some("Bearer anon-123") => (200, vec![], agent_bytes.clone()),
                _ => {
                    let challenge = format!(
                        "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:moonboot/boot-agent:pull\""
                    );
                    (401, vec![("WWW-Authenticate".into(), challenge)], b"{}".to_vec())
                }
            }
        })
    };
    let mirrors = [format!("registry.invalid=127.0.0.1:{bad}"), format!("registry.invalid=127.0.0.1:{good}")];
    let insecure = [format!("127.0.0.1:{bad}"), format!("127.0.0.1:{good}")];
    let u = user_data("registry.invalid/moonboot/boot", &mirrors, &insecure, agent);
    let run_dir = work.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let (code, lines) = run_script(&script_of(&u, &run_dir), work.path());
    let text = lines.join("\n");
    assert_eq!(code, 3, "the agent's exit code is the script's:\n{text}");
    let bad_url = format!("http://127.0.0.1:{bad}{blob}");
    let good_url = format!("http://127.0.0.1:{good}{blob}");
    let source = format!("registry.invalid/moonboot/boot@{BOOT}");
    let hex = agent.hex();
    let bad_hex = Sha256Digest::of(b"#!/bin/sh\necho pwned\n").hex();
    let want = [
        format!("moonboot: fetching talos-agent {agent} from {bad_url}"),
        format!(
            "moonboot: error: talos-agent sha256 mismatch: expected {hex}, got {bad_hex} (from {bad_url}); not running it"
        ),
        format!("moonboot: fetching talos-agent {agent} from {good_url}"),
        format!("moonboot: talos-agent {agent} verified, starting talos-agent boot {source}"),
        format!(
            "fake talos-agent: [boot] [{source}] [--registry-mirror={}] [--registry-mirror={}] \
             [--insecure-registry={}] [--insecure-registry={}] [--report=http://10.20.13.140:8090/v1/report] \
             [--report-token=t0k3n] [--extra-kernel-arg=-console=tty1]",
            mirrors[0], mirrors[1], insecure[0], insecure[1]
        ),
        "moonboot: error: talos-agent boot exited with 3; this instance keeps running Ubuntu (see above)".to_string(),
    ];
    let got: Vec<&String> =
        lines.iter().filter(|l| l.starts_with("moonboot: ") || l.starts_with("fake talos-agent:")).collect();
    let got: Vec<&String> = got.into_iter().filter(|l| !l.starts_with("moonboot: note:")).collect();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "\n{text}");
    assert!(!text.contains("pwned"), "the unverified bytes ran:\n{text}");
    assert!(marker.exists());
    // The token was asked for with the scope of the agent repository, and then sent.
    let seen = good_seen.lock().unwrap().clone();
    let token_req = seen.iter().find(|r| r.path.starts_with("/token?")).expect("a token request");
    assert_eq!(token_req.path, "/token?service=test-registry&scope=repository:moonboot/boot-agent:pull");
    assert!(seen
        .iter()
        .any(|r| r.path == blob && r.headers.get("authorization").is_some_and(|a| a == "Bearer anon-123")));
    assert_eq!(bad_seen.lock().unwrap().len(), 1);
    // Nothing is left behind: the directory (and the tmpfs mounted on it, as root) is gone.
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 0, "left in {}", run_dir.display());

    // No URL has the right bytes: exit 1, the agent never runs. The origin answers 404 (the agent
    // repository is on it), the mirror serves other bytes.
    std::fs::remove_file(&marker).unwrap();
    let origin = format!("127.0.0.1:{good}");
    let u = user_data(
        &format!("{origin}/moonboot/boot"),
        &[format!("{origin}=127.0.0.1:{bad}")],
        &[format!("127.0.0.1:{bad}"), origin.clone()],
        Sha256Digest::of(b"nothing serves this"),
    );
    let (code, lines) = run_script(&script_of(&u, &run_dir), work.path());
    let text = lines.join("\n");
    assert_eq!(code, 1, "{text}");
    assert!(!marker.exists(), "talos-agent ran:\n{text}");
    assert!(text.contains("moonboot: error: talos-agent sha256 mismatch"), "{text}");
    assert!(
        text.contains(&format!("moonboot: error: fetching http://{origin}/v2/moonboot/boot-agent/blobs/")),
        "{text}"
    );
    assert!(text.contains("(HTTP status 404)"), "{text}");
    let last = lines.iter().rfind(|l| l.starts_with("moonboot: ")).unwrap();
    assert!(last.starts_with("moonboot: error: no verified talos-agent sha256:"), "{last}");
    assert!(last.ends_with("; this instance keeps running Ubuntu"), "{last}");
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 0);

    // An instance of another architecture refuses before fetching anything.
    let mut u = u;
    u.arch = if u.arch == Arch::Arm64 { Arch::Amd64 } else { Arch::Arm64 };
    let before = bad_seen.lock().unwrap().len();
    let (code, lines) = run_script(&script_of(&u, &run_dir), work.path());
    assert_eq!(code, 1);
    assert!(lines.iter().any(|l| l.starts_with("moonboot: error: this user-data is for linux/")), "{lines:?}");
    assert_eq!(bad_seen.lock().unwrap().len(), before);
}
