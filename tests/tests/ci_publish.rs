//! The CI publishing users copy: `ci/github-actions/publish.yml` and the plain script its steps
//! run, `ci/publish.sh`.
//!
//! - The workflow is valid for GitHub Actions (check-jsonschema's bundled schema, installed by
//!   `scripts/setup` into `target/venv`) and has the triggers, permissions and container the
//!   docs promise.
//! - Its `run:` steps, in order, with its `env:` and the `${{ … }}` expressions taken from a small
//!   table (the registry replaced by a second, local `docker-registry` with htpasswd auth),
//!   build the arm64 and amd64 boot artifacts from the fixture registry and publish them with the
//!   credentials the log-in step writes. The registry then serves the published index (skopeo),
//!   `talos-agent boot …@<index digest> --dry-run` resolves it, the job summary names every digest,
//!   `imager build --talos-agent-image <published extension>` packs it, a wrong password or none
//!   fails with one line naming the registry (imager and the step alike), and publishing again
//!   pushes nothing. Steps that cannot run here (checkout, GitHub's cache and artifact actions,
//!   `scripts/setup`, which installs from the network) are named with the reason; a new `uses:`
//!   step fails the test until it is given one. The first run compiles the release imager and the
//!   static agents (minutes); afterwards it takes seconds.
//!
//! Everything touches only 127.0.0.1: the fixture registry and the one this test starts.

use moonboot_tests::demo::host_binaries;
use moonboot_tests::fixtures::{self, skip, Fixtures};
use moonboot_tests::private_registry::PrivateRegistry;
use moonboot_tests::stage1::workspace;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const WORKFLOW: &str = "ci/github-actions/publish.yml";
const USER: &str = "ci-user";
const PASSWORD: &str = "ci-pass-0123";
/// `github.repository_owner`: mixed case, as GitHub owners may be (OCI repositories are lowercase).
const OWNER: &str = "MoonbootCI";
const TAG: &str = "v0.0.0-ci.1";

fn workflow() -> Value {
    let path = workspace().join(WORKFLOW);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    moonboot_imager::yaml::from_str(&text).unwrap_or_else(|e| panic!("{WORKFLOW}: {e}"))
}

/// The one job of the workflow.
fn job(w: &Value) -> &Value {
    let jobs = w["jobs"].as_object().expect("jobs");
    assert_eq!(jobs.len(), 1, "{WORKFLOW}: one job expected");
    jobs.values().next().expect("one job")
}

/// A scalar YAML value as the string GitHub Actions would put in the environment.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[test]
fn workflow_is_valid_and_shaped_as_documented() {
    let root = workspace();
    let w = workflow();
    // Triggers: version tags and manual runs.
    assert_eq!(w["on"]["push"]["tags"], serde_json::json!(["v*"]), "{WORKFLOW}: on.push.tags");
    assert!(w["on"].get("workflow_dispatch").is_some(), "{WORKFLOW}: on.workflow_dispatch");
    assert_eq!(w["permissions"], serde_json::json!({"contents": "read", "packages": "write", "id-token": "write"}));
    for key in ["REGISTRY", "IMAGE_PREFIX", "TAG", "ARCHES", "OUTPUT", "IMAGER_BUILD_FLAGS", "IMAGER_PUBLISH_FLAGS"] {
        assert!(w["env"].get(key).is_some(), "{WORKFLOW}: env.{key} (the knobs docs/ci.md names)");
    }
    assert_eq!(w["env"]["REGISTRY"], "ghcr.io");
    let j = job(&w);
    assert_eq!(j["container"], "debian:12", "scripts/setup targets Debian 12");
    assert_eq!(j["defaults"]["run"]["shell"], "bash");
    // Every build/publish step is a ci/publish.sh subcommand (the same steps in any CI).
    let runs: Vec<String> =
        j["steps"].as_array().expect("steps").iter().filter_map(|s| s["run"].as_str()).map(String::from).collect();
    for sub in ["build", "publish", "digests"] {
        assert!(runs.iter().any(|r| r.trim() == format!("ci/publish.sh {sub}")), "no `ci/publish.sh {sub}` step");
    }
    assert!(runs.iter().any(|r| r.trim() == "scripts/setup --build-only"), "no `scripts/setup --build-only` step");

    let check = root.join("target/venv/bin/check-jsonschema");
    if !check.exists() {
        skip(
            "workflow_is_valid_and_shaped_as_documented",
            "target/venv/bin/check-jsonschema is absent (run scripts/setup)",
        );
        return;
    }
    // The schema is bundled: a proxy that refuses everything keeps it off the network.
    let out = Command::new(&check)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(root.join(WORKFLOW))
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "")
        .stdin(Stdio::null())
        .output()
        .expect("running check-jsonschema");
    assert!(
        out.status.success(),
        "check-jsonschema --builtin-schema vendor.github-workflows {WORKFLOW} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's own `docker-registry` ([`PrivateRegistry`]: its storage under `dir`, a port the
/// kernel chose) requiring htpasswd (basic) credentials, once it answers an anonymous `/v2/` with
/// 401.
fn auth_registry(dir: &Path) -> PrivateRegistry {
    std::fs::create_dir_all(dir).unwrap();
    let htpasswd = run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]), "htpasswd -Bbn");
    let file = dir.join("htpasswd");
    std::fs::write(&file, &htpasswd.stdout).unwrap();
    let r = PrivateRegistry::start(dir, Some(&file)).unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_status(&r.addr, "/v2/") {
            Some(401) => return r,
            Some(other) => panic!("{}/v2/ answered {other} without credentials, want 401", r.addr),
            None => {}
        }
        assert!(Instant::now() < deadline, "docker-registry did not answer on {} within 10 s", r.addr);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status code of `GET path` on `addr` (plain HTTP/1.1), `None` when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]).into_owned();
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Docker config (`config.json`) giving `user:password` for `registry`.
fn docker_config(path: &Path, registry: &str, user: &str, password: &str) {
    let auth = base64(format!("{user}:{password}").as_bytes());
    std::fs::write(path, serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string()).unwrap();
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Replaces every `${{ expr }}` of `text` by `table[expr]`; an expression missing from the table
/// fails the test (the table must follow the workflow).
fn substitute(text: &str, table: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let j = after.find("}}").unwrap_or_else(|| panic!("{WORKFLOW}: unterminated ${{{{ in {text:?}"));
        let expr = after[..j].trim();
        let value = table
            .iter()
            .find(|(k, _)| *k == expr)
            .unwrap_or_else(|| panic!("{WORKFLOW}: expression `{expr}` is not in this test's table"));
        out.push_str(&value.1);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// `NAME=value` lines and `NAME<<DELIMITER` blocks, as steps append them to `$GITHUB_ENV` and
/// `$GITHUB_OUTPUT`.
fn parse_command_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        match line.find("<<") {
            Some(h) if eq.is_none_or(|e| h < e) => {
                let delimiter = &line[h + 2..];
                let mut value = Vec::new();
                for l in lines.by_ref() {
                    if l == delimiter {
                        break;
                    }
                    value.push(l);
                }
                out.push((line[..h].to_string(), value.join("\n")));
            }
            _ => {
                let e = eq.unwrap_or_else(|| panic!("not NAME=value: {line:?}"));
                out.push((line[..e].to_string(), line[e + 1..].to_string()));
            }
        }
    }
    out
}

/// What a workflow step printed.
struct StepRun {
    name: String,
    stdout: String,
    stderr: String,
    status: std::process::ExitStatus,
}

/// Runs the steps of a GitHub Actions job here, as the runner would on Linux with `shell: bash`:
/// each `run:` as `bash --noprofile --norc -eo pipefail FILE` in the checkout, with the workflow,
/// job and step `env:` (expressions substituted), the runner's variables and what earlier steps
/// appended to `$GITHUB_ENV`.
struct Runner {
    root: PathBuf,
    work: PathBuf,
    table: Vec<(&'static str, String)>,
    env: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    count: usize,
}

impl Runner {
    fn run_step(&mut self, step: &Value, extra_env: &[(&str, &str)]) -> StepRun {
        self.count += 1;
        let name = step["name"].as_str().unwrap_or("(unnamed)").to_string();
        let script = substitute(step["run"].as_str().expect("a run: step"), &self.table);
        let file = self.work.join(format!("step-{}.sh", self.count));
        std::fs::write(&file, &script).unwrap();
        let env_file = self.work.join(format!("github-env-{}", self.count));
        let output_file = self.work.join(format!("github-output-{}", self.count));
        std::fs::write(&env_file, "").unwrap();
        std::fs::write(&output_file, "").unwrap();
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"]).arg(&file).current_dir(&self.root);
        // What the outer cargo (this test run) set must not leak into the builds, nor this
        // machine's registry credentials into the workflow.
        moonboot_imager::build::agent_extension::clear_outer_cargo_env(&mut cmd);
        for var in ["REGISTRY_AUTH_FILE", "DOCKER_CONFIG"] {
            cmd.env_remove(var);
        }
        let mut env = self.env.clone();
        if let Some(m) = step["env"].as_object() {
            for (k, v) in m {
                env.insert(k.clone(), substitute(&scalar(v), &self.table));
            }
        }
        for (k, v) in extra_env {
            env.insert(k.to_string(), v.to_string());
        }
        cmd.envs(&env).env("GITHUB_ENV", &env_file).env("GITHUB_OUTPUT", &output_file);
        let t = Instant::now();
        let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("step {name}: {e}"));
        eprintln!("ci_publish: step {} `{name}`: {} in {:.1} s", self.count, out.status, t.elapsed().as_secs_f64());
        if out.status.success() {
            for (k, v) in parse_command_file(&std::fs::read_to_string(&env_file).unwrap()) {
                self.env.insert(k, v);
            }
            for (k, v) in parse_command_file(&std::fs::read_to_string(&output_file).unwrap()) {
                self.outputs.insert(k, v);
            }
        }
        StepRun {
            name,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status,
        }
    }
}

fn expect_success(s: &StepRun) {
    assert!(s.status.success(), "step `{}` failed ({}):\n{}\n{}", s.name, s.status, s.stdout, s.stderr);
}

/// Why a step cannot run here; `None` for the steps this test runs.
fn skip_reason(step: &Value) -> Option<&'static str> {
    if let Some(uses) = step["uses"].as_str() {
        let action = uses.split('@').next().unwrap_or(uses);
        return Some(match action {
            "actions/checkout" => "the test runs in the checkout already",
            "actions/cache" => "GitHub's cache service; cargo's target/ is the cache here",
            "actions/upload-artifact" => "GitHub's artifact storage; this test reads the build's files itself",
            "sigstore/cosign-installer" => "downloads cosign from GitHub; target/peers/cosign is Debian's",
            _ => panic!("{WORKFLOW}: step uses {uses}: tell this test why it cannot run here"),
        });
    }
    match step["run"].as_str().map(str::trim) {
        Some("scripts/setup --build-only") => {
            Some("installs packages from the network (apt, PyPI); scripts/test ran it before the tests")
        }
        Some("ci/publish.sh sign") => Some(
            "keyless signing needs the job's OIDC token, Fulcio and Rekor; the publish step signs with SIGN_KEY \
             here, and tests/tests/cosign.rs checks those signatures with cosign",
        ),
        Some(_) => None,
        None => panic!("{WORKFLOW}: a step with neither run: nor uses: {step}"),
    }
}

#[test]
fn workflow_steps_build_and_publish_with_credentials() {
    const NAME: &str = "workflow_steps_build_and_publish_with_credentials";
    let Some(f) = fixtures::with_registry(NAME) else { return };
    for tool in ["docker-registry", "htpasswd", "skopeo", "jq", "/usr/bin/cargo", "aarch64-linux-gnu-gcc"] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        };
        if !found {
            skip(NAME, &format!("{tool} is not installed (run scripts/setup)"));
            return;
        }
    }
    // The build step fetches the CM3 board inputs with scripts/rpi-inputs: from its cache here
    // (BOARD_INPUTS below), never from Debian.
    let Some(board_inputs) = moonboot_tests::rpi::support::inputs_dir(NAME) else { return };
    let started = Instant::now();
    let root = workspace().canonicalize().unwrap();
    let work = fixtures::fixtures_dir().join("tmp").join(format!("ci-publish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("runner-temp")).unwrap();
    let registry = auth_registry(&work.join("registry"));
    let reg = registry.addr.clone();
    let outcome = run_workflow(&f, &root, &work, &reg, &board_inputs);
    drop(registry);
    // Kept on failure (a panic above) for a look; removed after success.
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("ci_publish: {NAME} passed in {:.1} s ({outcome})", started.elapsed().as_secs_f64());
}

/// A PEM P-256 private key under `work` (`openssl genpkey`).
fn signing_key(work: &Path) -> PathBuf {
    let key = work.join("sign.key");
    let o = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&o.stderr));
    key
}

/// An APT configuration with no sources and empty lists under `work`: `apt-get download` fails at
/// once instead of reaching Debian.
fn offline_apt(work: &Path) -> PathBuf {
    let dir = work.join("apt-offline");
    std::fs::create_dir_all(dir.join("lists/partial")).unwrap();
    std::fs::create_dir_all(dir.join("parts")).unwrap();
    let conf = dir.join("apt.conf");
    std::fs::write(
        &conf,
        format!(
            "Dir::Etc::sourcelist \"/dev/null\";\nDir::Etc::sourceparts \"{0}/parts\";\nDir::State::lists \"{0}/lists\";\n\
             Dir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n",
            dir.display()
        ),
    )
    .unwrap();
    conf
}

fn run_workflow(f: &Fixtures, root: &Path, work: &Path, reg: &str, board_inputs: &Path) -> String {
    let w = workflow();
    let j = job(&w);
    let out_dir = work.join("_out");
    let good = work.join("good.json");
    let bad = work.join("wrong-password.json");
    let anonymous = work.join("anonymous.json");
    docker_config(&good, reg, USER, PASSWORD);
    docker_config(&bad, reg, USER, "not-the-password");
    std::fs::write(&anonymous, "{}").unwrap();

    // The expressions of the workflow, as GitHub would evaluate them for a tag push by USER.
    let table: Vec<(&str, String)> = vec![
        ("github.repository_owner", OWNER.into()),
        ("inputs.tag || github.ref_name", TAG.into()),
        ("github.ref_name", TAG.into()),
        ("secrets.GITHUB_TOKEN", PASSWORD.into()),
    ];
    // Workflow env values this test sets as a user would edit them: the registry, and the
    // imager flags that reach the fixture registry (as a ghcr.io mirror) and the test registry.
    let overrides: Vec<(&str, String)> = vec![
        ("REGISTRY", reg.to_string()),
        ("OUTPUT", out_dir.display().to_string()),
        ("IMAGER_BUILD_FLAGS", format!("--registry-mirror {} --insecure-registry {}", f.mirror, f.registry)),
        ("IMAGER_PUBLISH_FLAGS", format!("--insecure-registry {reg}")),
    ];
    let summary = work.join("step-summary.md");
    let mut env = BTreeMap::new();
    // The runner's own variables (docs: "Default environment variables").
    for (k, v) in [
        ("CI", "true".to_string()),
        ("GITHUB_ACTOR", USER.to_string()),
        ("GITHUB_REF_NAME", TAG.to_string()),
        ("GITHUB_REPOSITORY_OWNER", OWNER.to_string()),
        ("GITHUB_WORKSPACE", root.display().to_string()),
        ("RUNNER_TEMP", work.join("runner-temp").display().to_string()),
        ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
        ("BOARD_INPUTS", board_inputs.display().to_string()),
        // A CI without an OIDC identity signs with a key (ci/publish.sh publish --sign-key).
        ("SIGN_KEY", signing_key(work).display().to_string()),
        // The iPXE binaries: scripts/setup's trixie download (its .deb is the cache
        // scripts/ipxe-inputs checks first); apt without sources, so nothing comes from Debian.
        ("IPXE_INPUTS", moonboot_tests::build::netboot_peers_dir().display().to_string()),
        ("IPXE_INPUTS_DEBS", moonboot_tests::build::netboot_peers_dir().join("deb").display().to_string()),
        ("APT_CONFIG", offline_apt(work).display().to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    for scope in [&w["env"], &j["env"]] {
        if let Some(m) = scope.as_object() {
            for (k, v) in m {
                env.insert(k.clone(), substitute(&scalar(v), &table));
            }
        }
    }
    for (k, v) in &overrides {
        assert!(env.contains_key(*k), "{WORKFLOW}: env.{k} is not set (this test overrides it)");
        env.insert(k.to_string(), v.clone());
    }
    let arches: Vec<String> = env["ARCHES"].split_whitespace().map(String::from).collect();
    assert_eq!(arches, ["arm64", "amd64"], "{WORKFLOW}: ARCHES");
    let mut runner =
        Runner { root: root.to_path_buf(), work: work.to_path_buf(), table, env, outputs: BTreeMap::new(), count: 0 };

    // 1. The steps, in order.
    let steps = j["steps"].as_array().expect("steps");
    let mut ran: BTreeMap<String, StepRun> = BTreeMap::new();
    let mut publish_step = None;
    for step in steps {
        let name = step["name"].as_str().unwrap_or("(unnamed)");
        if let Some(why) = skip_reason(step) {
            eprintln!("ci_publish: not running step `{name}`: {why}");
            continue;
        }
        let run = step["run"].as_str().unwrap().trim().to_string();
        let r = runner.run_step(step, &[]);
        expect_success(&r);
        if run == "ci/publish.sh publish" {
            publish_step = Some(step.clone());
        }
        ran.insert(run, r);
    }
    let publish_step = publish_step.expect("a `ci/publish.sh publish` step");
    let prefix = format!("{reg}/{}/moonboot", OWNER.to_lowercase());

    // 2. The log-in step wrote credentials (owner-only) and pointed REGISTRY_AUTH_FILE at them.
    let auth_file =
        PathBuf::from(runner.env.get("REGISTRY_AUTH_FILE").expect("the log-in step sets REGISTRY_AUTH_FILE"));
    assert!(
        auth_file.starts_with(work.join("runner-temp")),
        "REGISTRY_AUTH_FILE={} not under RUNNER_TEMP",
        auth_file.display()
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&auth_file).unwrap()).unwrap();
    assert_eq!(written["auths"][reg]["auth"], base64(format!("{USER}:{PASSWORD}").as_bytes()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is readable by others", auth_file.display());

    // 3. What publish reported, and the digests printed to stdout, the summary and the outputs.
    let report: Value = serde_json::from_slice(&std::fs::read(out_dir.join("publish.json")).unwrap()).unwrap();
    let boot = &report["boot"];
    let ext = &report["extension"];
    let index = boot["index_digest"].as_str().expect("boot.index_digest").to_string();
    assert_eq!(boot["reference"], format!("{prefix}/boot:{TAG}"));
    assert_eq!(boot["pinned"], format!("{prefix}/boot@{index}"));
    assert_eq!(ext["reference"], format!("{prefix}/talos-agent:{TAG}"));
    let manifest_arches = |v: &Value| -> Vec<String> {
        v["manifests"].as_array().expect("manifests").iter().map(|m| m["arch"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(manifest_arches(boot), arches);
    assert_eq!(manifest_arches(ext), arches);
    let bin = &report["agent"];
    assert_eq!(bin["reference"], format!("{prefix}/talos-agent-binary:{TAG}"));
    assert_eq!(manifest_arches(bin), arches, "the static agents are published too");
    // The CM3 board inputs, fetched by the build step, go to the tag of this imager's pins.
    let board = &report["board_inputs"];
    assert!(
        board["reference"].as_str().unwrap_or_default().starts_with(&format!("{prefix}/board-inputs:rpi-cm3-")),
        "board inputs: {board}"
    );
    assert_eq!(manifest_arches(board), ["arm64"]);
    // The iPXE binaries likewise, one architecture each — when trixie's are still the pinned ones;
    // otherwise the build step warns and publish leaves them out.
    let ipxe = &report["ipxe_inputs"];
    let peers = moonboot_tests::build::netboot_peers_dir();
    match moonboot_imager::board::inputs::load(&moonboot_imager::board::ipxe_pins().unwrap(), &peers) {
        Ok(_) => {
            assert!(
                ipxe["reference"].as_str().unwrap_or_default().starts_with(&format!("{prefix}/board-inputs:ipxe-")),
                "iPXE binaries: {ipxe}"
            );
            assert_eq!(manifest_arches(ipxe), ["amd64", "arm64"]);
        }
        Err(why) => {
            assert!(ipxe.is_null(), "published iPXE binaries that are not the pinned ones ({why}): {ipxe}");
            eprintln!("NOTE: {why}: the iPXE binaries were not published (refresh boards/ipxe.inputs)");
        }
    }
    assert!(report["blobs"]["pushed"].as_u64().unwrap() > 0, "a first publish pushes blobs: {report}");
    // SIGN_KEY: a cosign signature for each index and per-architecture manifest of the boot
    // artifact, the extension image and the agent binaries.
    let signed: Vec<&str> =
        report["signatures"].as_array().expect("signatures").iter().map(|s| s["image"].as_str().unwrap()).collect();
    assert_eq!(signed.len(), 3 * (1 + arches.len()), "{report}");
    assert!(signed.contains(&boot["pinned"].as_str().unwrap()), "{signed:?}");
    let summary_text = std::fs::read_to_string(&summary).expect("the digests step wrote $GITHUB_STEP_SUMMARY");
    let printed_publish = &ran["ci/publish.sh publish"].stdout;
    let printed_digests = &ran["ci/publish.sh digests"].stdout;
    let mut pinned = vec![
        boot["pinned"].as_str().unwrap().to_string(),
        ext["pinned"].as_str().unwrap().to_string(),
        bin["pinned"].as_str().unwrap().to_string(),
    ];
    for m in boot["manifests"].as_array().unwrap().iter().chain(ext["manifests"].as_array().unwrap()) {
        pinned.push(m["reference"].as_str().unwrap().to_string());
    }
    for p in &pinned {
        assert!(printed_publish.contains(p.as_str()), "publish did not print {p}:\n{printed_publish}");
        assert!(printed_digests.contains(p.as_str()), "digests did not print {p}:\n{printed_digests}");
        assert!(summary_text.contains(p.as_str()), "the step summary lacks {p}:\n{summary_text}");
    }
    assert_eq!(runner.outputs.get("boot"), Some(&pinned[0]), "$GITHUB_OUTPUT boot=");
    assert_eq!(runner.outputs.get("talos_agent"), Some(&pinned[1]), "$GITHUB_OUTPUT talos_agent=");
    assert_eq!(runner.outputs.get("talos_agent_binary"), Some(&pinned[2]), "$GITHUB_OUTPUT talos_agent_binary=");

    // 4. The registry serves that index under the tag, to the user only.
    let boot_ref = format!("docker://{prefix}/boot:{TAG}");
    let creds = format!("{USER}:{PASSWORD}");
    let raw = run_ok(
        Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds, &boot_ref]),
        "skopeo inspect --raw",
    )
    .stdout;
    assert_eq!(format!("sha256:{}", hex::encode(Sha256::digest(&raw))), index, "the tag serves another index");
    let served: Value = serde_json::from_slice(&raw).unwrap();
    let served_manifests: Vec<&Value> = served["manifests"].as_array().unwrap().iter().map(|m| &m["digest"]).collect();
    let reported: Vec<&Value> = boot["manifests"].as_array().unwrap().iter().map(|m| &m["digest"]).collect();
    assert_eq!(served_manifests, reported);
    // Each architecture's manifest, by digest: the boot artifact (format 2). `skopeo inspect`
    // without --raw refuses artifacts ("unsupported image-specific operation on artifact").
    for m in boot["manifests"].as_array().unwrap() {
        let at = format!("docker://{prefix}/boot@{}", m["digest"].as_str().unwrap());
        let raw = run_ok(
            Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds, &at]),
            "skopeo inspect --raw (manifest)",
        )
        .stdout;
        assert_eq!(format!("sha256:{}", hex::encode(Sha256::digest(&raw))), m["digest"].as_str().unwrap());
        let manifest: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["artifactType"], "application/vnd.moonboot.boot.v2", "{manifest}");
    }
    let anon = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--no-creds", &boot_ref])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!anon.status.success(), "{reg} served {boot_ref} without credentials");

    // 4b. `oras pull` (Debian trixie's oras 1.2) of each published boot artifact writes the three
    //     files under their titles, and they are the build's output files byte for byte, under the
    //     sha256 build.json names for its architecture: the blob digests are the file digests
    //     (boot artifact format 2).
    let oras = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/oras");
    assert!(oras.exists(), "{} is absent: scripts/setup fetches Debian trixie's oras", oras.display());
    let built: Value = serde_json::from_slice(&std::fs::read(out_dir.join("build.json")).unwrap()).unwrap();
    let sha = |path: &Path| format!("sha256:{}", hex::encode(Sha256::digest(std::fs::read(path).unwrap())));
    for m in boot["manifests"].as_array().unwrap() {
        let arch = m["arch"].as_str().unwrap();
        let pulled = work.join(format!("oras-pull-{arch}"));
        run_ok(
            Command::new(&oras)
                .args(["pull", "--plain-http", "--username", USER, "--password", PASSWORD, "--output"])
                .arg(&pulled)
                .arg(m["reference"].as_str().unwrap()),
            &format!("oras pull {arch}"),
        );
        let mut names: Vec<String> = std::fs::read_dir(&pulled)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cmdline", "initramfs", "kernel"], "{arch}: oras pull wrote");
        let files = [
            ("initramfs", format!("initramfs-metal-{arch}.xz")),
            ("cmdline", format!("cmdline-metal-{arch}")),
            (
                "kernel",
                format!("boot-{arch}/blobs/sha256/{}", sha(&pulled.join("kernel")).trim_start_matches("sha256:")),
            ),
        ];
        for (title, output) in &files {
            assert_eq!(sha(&pulled.join(title)), sha(&out_dir.join(output)), "{arch}: {title} is {output}");
            if built["arch"] == arch {
                assert_eq!(built["outputs"][output], sha(&pulled.join(title)).as_str(), "{arch}: build.json {output}");
            }
        }
    }

    // 5. talos-agent boot resolves the pinned reference (dry run, metal: no metadata service).
    let (imager, agent) = host_binaries().expect("building the release imager and talos-agent");
    for m in boot["manifests"].as_array().unwrap() {
        let arch = m["arch"].as_str().unwrap();
        let out = run_ok(
            Command::new(&agent)
                .args(["boot", &format!("{prefix}/boot@{index}"), "--dry-run", "--json", "--arch", arch])
                .args(["--platform", "metal", "--no-network-carry-over", "--insecure-registry", reg, "--auth-file"])
                .arg(&good)
                .env_remove("REGISTRY_AUTH_FILE")
                .env_remove("DOCKER_CONFIG"),
            &format!("talos-agent boot --dry-run --arch {arch}"),
        );
        let plan: Value = serde_json::from_slice(&out.stdout).expect("talos-agent boot --json prints JSON");
        assert_eq!(plan["resolved"]["index_digest"], index, "{arch} plan: {plan}");
        assert_eq!(plan["resolved"]["manifest_digest"], m["digest"], "{arch} plan");
    }

    // 6. The published extension is what a later `imager build --talos-agent-image` packs.
    let ext_pinned = ext["pinned"].as_str().unwrap();
    let rebuilt = work.join("_out-pulled-agent");
    run_ok(
        Command::new(&imager)
            .args(["build", "--arch", "arm64", "--talos-agent-image", ext_pinned, "--registry-mirror", &f.mirror])
            .args(["--insecure-registry", &f.registry, "--insecure-registry", reg, "--output"])
            .arg(&rebuilt)
            .env("REGISTRY_AUTH_FILE", &good)
            .env_remove("DOCKER_CONFIG"),
        "imager build --talos-agent-image <published extension>",
    );
    let build_json = std::fs::read_to_string(rebuilt.join("build.json")).unwrap();
    let ext_arm64 = ext["manifests"][0]["digest"].as_str().unwrap();
    assert!(
        build_json.contains(ext["index_digest"].as_str().unwrap()) || build_json.contains(ext_arm64),
        "build.json does not pin the published talos-agent extension:\n{build_json}"
    );

    // 7. Wrong password, or none: imager publish fails with exit code 1 and one line naming the
    //    registry; so does the workflow's publish step, leaving the last report alone.
    let arch_list = arches.join(",");
    for (what, config) in [("a wrong password", &bad), ("no credentials", &anonymous)] {
        let out = Command::new(&imager)
            .args(["publish", "--to", &format!("{prefix}/boot:{TAG}"), "--extension-to"])
            .arg(format!("{prefix}/talos-agent:{TAG}"))
            .args(["--arch", &arch_list, "--insecure-registry", reg, "--json", "--output"])
            .arg(&out_dir)
            .env("REGISTRY_AUTH_FILE", config)
            .env_remove("DOCKER_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "imager publish with {what}: {}\n{stderr}", out.status);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "imager publish with {what}: want one line, got:\n{stderr}");
        assert!(lines[0].starts_with("imager: ") && lines[0].contains(reg), "with {what}: {}", lines[0]);
        assert!(out.stdout.is_empty(), "imager publish with {what} printed: {}", String::from_utf8_lossy(&out.stdout));

        let config = config.display().to_string();
        let r = runner.run_step(&publish_step, &[("REGISTRY_AUTH_FILE", &config)]);
        assert_eq!(r.status.code(), Some(1), "the publish step with {what}: {}\n{}", r.status, r.stderr);
        assert!(r.stderr.lines().any(|l| l.starts_with("imager: ") && l.contains(reg)), "{}", r.stderr);
        let kept: Value = serde_json::from_slice(&std::fs::read(out_dir.join("publish.json")).unwrap()).unwrap();
        assert_eq!(kept, report, "a failed publish replaced publish.json");
    }

    // 8. Publishing again (the credentials of the log-in step) pushes nothing and names the same
    //    index.
    let again = runner.run_step(&publish_step, &[]);
    expect_success(&again);
    let second: Value = serde_json::from_slice(&std::fs::read(out_dir.join("publish.json")).unwrap()).unwrap();
    assert_eq!(second["blobs"]["pushed"], 0, "a second publish pushed blobs: {second}");
    assert!(second["blobs"]["skipped"].as_u64().unwrap() > 0);
    assert_eq!(second["boot"]["index_digest"], index.as_str());
    assert_eq!(second["extension"]["index_digest"], ext["index_digest"]);
    format!("published {} and {}", pinned[0], pinned[1])
}

#[test]
fn command_files_and_expressions() {
    let parsed = parse_command_file("A=1\nB<<EOF\nx\ny=z\nEOF\nC=a<<b\n");
    assert_eq!(
        parsed,
        [("A".into(), "1".into()), ("B".into(), "x\ny=z".into()), ("C".into(), "a<<b".into())] as [(String, String); 3]
    );
    let t = [("github.ref_name", "v1".to_string())];
    assert_eq!(substitute("tag ${{ github.ref_name }}/${{github.ref_name}}", &t), "tag v1/v1");
    assert_eq!(base64(b"ci-user:ci-pass-0123"), "Y2ktdXNlcjpjaS1wYXNzLTAxMjM=");
    assert_eq!(base64(b"ab"), "YWI=");
}
