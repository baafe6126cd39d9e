//! The EC2 path for real, on one machine: what the operator runs (`imager build` with EC2
//! user-data → `imager publish` of the boot artifact and the talos-agent binary) and what an
//! instance does with it (cloud-init fetches our user-data from IMDSv2, the user-data fetches the
//! agent from the bastion's registry by digest, the agent kexecs into Talos, whose
//! `ext-talos-agent` reports to `talos-agent wait`).
//!
//! The instance is the Debian 12 arm64 cloud guest ([`crate::cloud_guest`]) under QEMU with UEFI
//! and EC2's SMBIOS; cloud-init is Debian's real one. The bastion (`10.20.13.140`: the registry
//! cache on `:5000`, `talos-agent wait` on `:8090`) and the instance metadata service
//! (`169.254.169.254:80`, [`crate::imds`]) are at their real addresses, which exist only inside a
//! network namespace this module creates and checks has no route out ([`crate::netns`]); QEMU,
//! the registry and `wait` run inside it. The registry there is a second `docker-registry` over
//! the fixture registry's storage, so what `imager publish` pushed to the host's loopback registry
//! is what the instance pulls.
//!
//! Everything runs under software emulation (QEMU TCG): times are an emulated CPU's. The Talos the
//! instance boots is the stand-in (a TEST PROGRAM), not Talos.

use crate::cloud_guest::{self, CloudGuest};
use crate::demo::{fixture_build, free_port, host_binaries, rand_u64, run, Killed, Waiter};
use crate::fixtures::Fixtures;
use crate::imds::{Imds, Instance};
use crate::netns::Netns;
use crate::qemu::Guest;
use crate::stage1;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bastion's address (registry cache and readiness collector), as in the operator's VPC.
pub const BASTION: Ipv4Addr = Ipv4Addr::new(10, 20, 13, 140);
/// The instance metadata service's link-local address.
pub const IMDS_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The bastion's registry cache port (plain HTTP: named insecure in the user-data).
pub const REGISTRY_PORT: u16 = 5000;
/// The bastion's `talos-agent wait` port.
pub const WAIT_PORT: u16 = 8090;
/// The demo's and the benchmark's repository of the boot artifact ([`Options::boot_repository`]).
pub const BOOT_REPOSITORY: &str = "moonboot/boot";
/// The demo's and the benchmark's repository of the talos-agent binary artifact
/// ([`Options::agent_repository`]).
pub const AGENT_REPOSITORY: &str = "moonboot/talos-agent";
/// The tag both artifacts are published under.
pub const TAG: &str = "ec2";
/// The console line cloud-init prints when the final stage starts (runcmd runs in it).
pub const CLOUD_FINAL: &str = "running 'modules:final'";
/// The console line cloud-init prints when it is done (`… finished at … Datasource …`).
pub const CLOUD_DONE: &str = "finished at";
/// What the user-data's script prints before each of its lines.
pub const USER_DATA_MARK: &str = "moonboot: ";
/// The agent's last line before the kexec reboot.
pub const KEXEC_LINE: &str = "rebooting into the loaded kernel (kexec)";

/// What to do.
pub struct Options {
    /// Working directory (build output, disks, logs); created.
    pub work: PathBuf,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// Instances to boot (each in its own QEMU; `wait --nodes` this many).
    pub nodes: usize,
    /// Repository of the boot artifact, in the fixture registry and so on the bastion's registry
    /// (which serves the same storage), as the user-data names it: [`BOOT_REPOSITORY`] for the
    /// demo, a [`crate::fixtures::unique_repository`] for tests (no other test pushes to it).
    pub boot_repository: String,
    /// Repository of the talos-agent binary artifact, likewise: [`AGENT_REPOSITORY`] or a unique
    /// one.
    pub agent_repository: String,
    /// The Talos version to build and whether to embed a machine configuration.
    pub image: crate::demo::Image,
}

fn say(o: &Options, s: &str) {
    if o.verbose {
        eprintln!("demo: {s}");
    }
}

/// What the operator's side produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// `imager build --output`.
    pub out: PathBuf,
    /// The host `talos-agent` (runs `wait`).
    pub agent_host: PathBuf,
    /// The host `imager` (release build).
    pub imager: PathBuf,
    /// The rendered user-data (`<out>/cloud-init/user-data-ec2-arm64.yaml`).
    pub user_data: PathBuf,
    /// Readiness token in the user-data.
    pub token: String,
    /// `imager publish --json` output.
    pub published: Value,
    /// Manifest digest of the arm64 boot artifact (`build.json` `outputs["boot-arm64@manifest"]`).
    pub boot_digest: String,
    /// sha256 of the static arm64 talos-agent (`<out>/talos-agent-arm64`).
    pub agent_digest: String,
    /// Seconds of each step.
    pub steps: Vec<(&'static str, f64)>,
}

/// The operator's side: builds the host tools and the static aarch64 agent, runs `imager build
/// --arch arm64` against the fixture registry with the EC2 user-data flags (the bastion's
/// registry as the instance sees it, the readiness URL and token), and `imager publish`es the
/// boot artifact and the agent binary to the fixture registry, in [`Options::boot_repository`] and
/// [`Options::agent_repository`] under the tag [`TAG`].
///
/// # Errors
/// Any step failing, with its output.
pub fn build_and_publish(f: &Fixtures, o: &Options) -> Result<Built> {
    std::fs::create_dir_all(&o.work)?;
    let mut steps = Vec::new();
    say(o, "building the host tools (imager, talos-agent) and the static aarch64 talos-agent (cargo)");
    let t = Instant::now();
    let (imager, agent_host) = host_binaries()?;
    let agent_arm64 = stage1::build_static_agent("arm64")?;
    steps.push(("cargo build", t.elapsed().as_secs_f64()));

    let out = o.work.join("_out");
    let token = format!("ec2-{:016x}", rand_u64());
    let bastion_registry = format!("{BASTION}:{REGISTRY_PORT}");
    // The signing key pair: `imager publish --sign-key` signs, the user-data carries the public key.
    let (sign_key, signature_key) = (o.work.join("moonboot.key"), o.work.join("moonboot.pub"));
    run(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
            .arg(&sign_key),
        "openssl genpkey",
    )?;
    std::fs::write(
        &signature_key,
        run(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&sign_key), "openssl pkey -pubout")?,
    )?;
    say(o, &format!("imager build --arch arm64 (user-data for {bastion_registry}) → {}", out.display()));
    let t = Instant::now();
    if let Some(from) = crate::demo::serve_release(f, &o.image.talos_version)? {
        say(
            o,
            &format!(
                "the fixtures serve no stand-in Talos {}: tagged the stand-in {from} as it",
                o.image.talos_version
            ),
        );
    }
    run(
        fixture_build(&imager, f, &agent_arm64)
            .args(o.image.build_args())
            .args(["--boot-repository", &format!("{bastion_registry}/{}", o.boot_repository)])
            .args(["--agent-repository", &format!("{bastion_registry}/{}", o.agent_repository)])
            .args(["--instance-insecure-registry", &bastion_registry])
            .arg("--instance-signature-key")
            .arg(&signature_key)
            .args(["--report", &format!("http://{BASTION}:{WAIT_PORT}/v1/report"), "--report-token", &token])
            // The stand-in keeps running (and serving apid) instead of powering off.
            .args(["--instance-kernel-arg", "standin.hold"])
            .arg("--output")
            .arg(&out),
        "imager build",
    )?;
    steps.push(("imager build", t.elapsed().as_secs_f64()));

    let boot_to = format!("{}/{}:{TAG}", f.registry, o.boot_repository);
    let agent_to = format!("{}/{}:{TAG}", f.registry, o.agent_repository);
    say(o, &format!("imager publish --to {boot_to} --agent-to {agent_to}"));
    let t = Instant::now();
    let published = run(
        Command::new(&imager)
            .args(["publish", "--to", &boot_to, "--arch", "arm64"])
            .args(["--agent-to", &agent_to])
            .arg("--sign-key")
            .arg(&sign_key)
            .args(["--insecure-registry", &f.registry, "--json"])
            .arg("--output")
            .arg(&out),
        "imager publish",
    )?;
    steps.push(("imager publish", t.elapsed().as_secs_f64()));
    let published: Value = serde_json::from_slice(&published).context("imager publish --json output")?;

    let build: Value = serde_json::from_slice(&std::fs::read(out.join("build.json"))?)?;
    let boot_digest = build["outputs"]["boot-arm64@manifest"]
        .as_str()
        .with_context(|| "build.json has no outputs[\"boot-arm64@manifest\"]")?
        .to_string();
    let agent_digest =
        boot_artifact::digest::Sha256Digest::of(&std::fs::read(out.join("talos-agent-arm64"))?).to_string();
    Ok(Built {
        user_data: out.join("cloud-init/user-data-ec2-arm64.yaml"),
        out,
        agent_host,
        imager,
        token,
        published,
        boot_digest,
        agent_digest,
        steps,
    })
}

/// What the bastion's registry cache does in a run.
pub enum Cache {
    /// A real `docker-registry` over the fixture registry's storage.
    Registry,
    /// The fault-injecting proxy ([`crate::faulty`]) in front of the fixture registry, flipping a
    /// byte in every blob: a cache that serves other bytes than the digest asked for.
    CorruptBlobs,
}

/// The bastion and the metadata service in a fresh isolated namespace.
pub struct Bastion {
    /// The namespace (dropped last: deleting it ends what still runs in it).
    pub ns: Netns,
    /// The metadata server (its request log and counters).
    pub imds: Arc<Imds>,
    /// The proxy, for [`Cache::CorruptBlobs`].
    pub proxy: Option<crate::faulty::Proxy>,
    registry: Option<Killed>,
}

/// Creates instance `index`'s namespace (checked isolated before anything starts), the bastion's
/// registry cache at `10.20.13.140:5000`, its readiness port `10.20.13.140:8080` forwarded to
/// `wait` (`talos-agent wait` on the host's loopback, shared by every instance), and the metadata
/// service at `169.254.169.254:80` describing `instance`.
///
/// Every instance has a namespace of its own because the metadata service cannot tell QEMU
/// processes apart: their connections all come from the namespace's own stack.
///
/// # Errors
/// Not root, the namespace not isolated, a server not starting.
pub fn bastion(
    f: &Fixtures,
    work: &Path,
    index: usize,
    cache: Cache,
    instance: Instance,
    wait: SocketAddr,
) -> Result<Bastion> {
    let ns = Netns::create(&format!("ec2-{index}"), &[BASTION, IMDS_ADDRESS])?;
    let registry_addr = SocketAddr::from((BASTION, REGISTRY_PORT));
    let (registry, proxy) = match cache {
        Cache::Registry => {
            let config = crate::fixtures::fixtures_dir().join("registry/config.yml");
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {} (run scripts/fixtures)", config.display()))?;
            let text = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("addr:") {
                        format!("  addr: {registry_addr}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let mine = work.join(format!("bastion-{index}-registry.yml"));
            std::fs::write(&mine, text + "\n")?;
            let child = ns
                .command("docker-registry")
                .arg("serve")
                .arg(&mine)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(work.join(format!("bastion-{index}-registry.log")))?)
                .spawn()
                .context("starting docker-registry in the namespace")?;
            let child = Killed(child);
            ns.wait_listening(registry_addr, Duration::from_secs(30))?;
            (Some(child), None)
        }
        Cache::CorruptBlobs => {
            let proxy = crate::faulty::start_on(ns.bind(registry_addr)?, &f.registry);
            proxy.faults.corrupt_blobs.store(true, std::sync::atomic::Ordering::SeqCst);
            (None, Some(proxy))
        }
    };
    crate::netns::forward(ns.bind(SocketAddr::from((BASTION, WAIT_PORT)))?, wait);
    let imds = Imds::serve(ns.bind(SocketAddr::from((IMDS_ADDRESS, 80)))?, instance);
    Ok(Bastion { ns, imds, proxy, registry })
}

impl Drop for Bastion {
    fn drop(&mut self) {
        self.registry.take();
    }
}

/// What one instance did.
#[derive(Debug)]
pub struct Node {
    /// Its console.
    pub console: Vec<String>,
    /// Seconds from power-on to each phase that happened: `cloud-init final stage`, `agent
    /// verified and started`, `kexec`, `stand-in Talos init`.
    pub phases: Vec<(&'static str, f64)>,
    /// Its disk (for reading logs afterwards).
    pub disk: PathBuf,
}

/// What the run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The operator's side.
    pub built: Built,
    /// One JSON object per node, as `wait --json` printed them.
    pub nodes: Vec<Value>,
    /// The table `wait` printed (stderr).
    pub wait_log: String,
    /// Each instance.
    pub instances: Vec<Node>,
    /// Seconds from the first power-on to `wait` exiting successfully.
    pub seconds_to_ready: f64,
    /// The metadata service's request log (`PUT /latest/api/token 200`, …).
    pub imds_requests: Vec<String>,
    /// GETs the metadata service refused for lack of a token.
    pub imds_unauthorized: usize,
    /// `cloud-init analyze show` of the first instance's `/var/log/cloud-init.log`, read from
    /// its disk after the run.
    pub analyze: String,
    /// The first instance's `/var/log/cloud-init.log`.
    pub cloud_init_log: String,
}

/// A phase's name and the console line that shows it.
type Marker<'a> = (&'static str, &'a dyn Fn(&str) -> bool);

/// The MAC of instance `i` (QEMU's prefix).
pub fn mac(i: usize) -> String {
    format!("52:54:00:12:34:{:02x}", 0x56 + i)
}

/// Instance `i`'s files under `work` and its identity: its disk (a sparse copy of the cached guest,
/// fresh or kept from an earlier boot), UEFI variables and EC2 SMBIOS.
fn machine(work: &Path, guest: &CloudGuest, i: usize, fresh_disk: bool) -> Result<cloud_guest::Instance> {
    let disk = work.join(format!("instance-{i}.img"));
    if fresh_disk || !disk.exists() {
        cloud_guest::copy_sparse(&guest.root_image(), &disk)?;
    }
    let vars = work.join(format!("instance-{i}-vars.fd"));
    if !vars.exists() {
        std::fs::copy(cloud_guest::AAVMF_VARS, &vars).context("copying AAVMF_VARS.fd (run scripts/setup)")?;
    }
    // The same instance keeps its UUID across boots, as on EC2.
    let uuid = format!("ec2{i:05x}-1b2c-4d3e-8f40-0123456789ab");
    Ok(cloud_guest::Instance {
        disk,
        vars,
        smbios: cloud_guest::ec2_smbios("m7g.medium", &uuid),
        mac: mac(i),
        log: work.join(format!("console-instance-{i}.log")),
        monitor: work.join(format!("instance-{i}.monitor")),
    })
}

fn boot(ns: &Netns, f: &Fixtures, m: &cloud_guest::Instance) -> Result<Guest> {
    cloud_guest::boot(ns, &f.arches.get("arm64").context("fixtures have no arm64")?.kernel_image, m)
}

/// The EC2 path end to end: [`build_and_publish`], `talos-agent wait --nodes N --until
/// maintenance_ready` (`configured` with an embedded machine configuration), then N instances, each with its bastion and metadata service in a namespace
/// of its own ([`bastion`]), booted from the cached cloud guest with the same user-data, as an
/// Auto Scaling group would start them.
///
/// # Errors
/// Any step failing; a stage that does not come within its deadline names the console log.
pub fn run_ec2(f: &Fixtures, guest: &CloudGuest, o: &Options) -> Result<Outcome> {
    anyhow::ensure!(o.nodes >= 1, "--nodes must be at least 1");
    run_built(f, guest, o, build_and_publish(f, o)?)
}

/// [`run_ec2`] from what [`build_and_publish`] already produced (so that another run, such as
/// [`run_refused`], can use the same build at the same time).
///
/// # Errors
/// As [`run_ec2`].
pub fn run_built(f: &Fixtures, guest: &CloudGuest, o: &Options, built: Built) -> Result<Outcome> {
    anyhow::ensure!(o.nodes >= 1, "--nodes must be at least 1");
    let user_data = std::fs::read(&built.user_data).with_context(|| {
        format!("reading {} (imager build writes it with --boot-repository)", built.user_data.display())
    })?;
    let mut waiter =
        Waiter::start(&built.agent_host, &built.token, o.nodes, o.image.phase(), "30m", &o.work.join("wait.log"))?;
    say(
        o,
        &format!("talos-agent wait --listen {} --nodes {} (reached as {BASTION}:{WAIT_PORT})", waiter.addr, o.nodes),
    );

    struct Running {
        bastion: Bastion,
        machine: cloud_guest::Instance,
        vm: Guest,
        power_on: Instant,
        phase: usize,
    }
    let mut running = Vec::new();
    for i in 0..o.nodes {
        let mut instance = Instance::example(&mac(i), "10.0.2.15");
        if i > 0 {
            instance.instance_id = format!("i-0123456789abcd{i:03x}");
            instance.local_hostname = format!("ip-10-0-2-15-{i}.{}.compute.internal", instance.region);
        }
        instance.user_data = Some(user_data.clone());
        let bastion = bastion(f, &o.work, i, Cache::Registry, instance, waiter.addr)?;
        say(o, &format!("network namespace {} (only lo: {BASTION}, {IMDS_ADDRESS}); no route out", bastion.ns.name()));
        let machine = machine(&o.work, guest, i, true)?;
        say(o, &format!("instance {i}: power on (UEFI, EC2 SMBIOS, NVMe root); console in {}", machine.log.display()));
        let power_on = Instant::now();
        let vm = boot(&bastion.ns, f, &machine)?;
        running.push(Running { bastion, machine, vm, power_on, phase: 0 });
    }
    let first_power_on = running[0].power_on;
    let deadline = first_power_on + Duration::from_secs(20 * 60 * o.nodes as u64);
    let markers: [Marker; 4] = [
        ("cloud-init final stage", &|l: &str| l.contains(CLOUD_FINAL)),
        ("agent verified and started", &|l: &str| l.contains(USER_DATA_MARK) && l.contains("verified")),
        ("kexec", &|l: &str| l.contains(KEXEC_LINE)),
        ("stand-in Talos init", &|l: &str| l.contains(crate::demo::STANDIN_MARK)),
    ];
    let status = loop {
        if let Some(status) = waiter.poll()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("not every instance reached {} in time; consoles in {}", o.image.phase(), o.work.display());
        }
        for (i, r) in running.iter_mut().enumerate() {
            let phase = r.phase;
            let slice = Instant::now() + Duration::from_millis(200 / o.nodes as u64);
            match r.vm.wait_for("a console line", slice, |l| {
                l.contains("moonboot: error") || (phase < markers.len() && (markers[phase].1)(l))
            }) {
                Ok(line) if line.contains("moonboot: error") => {
                    bail!("instance {i}: the user-data failed: {line}; console in {}", r.machine.log.display())
                }
                Ok(_) => {
                    let at = r.power_on.elapsed().as_secs_f64();
                    say(o, &format!("instance {i}: {} after {at:.1} s", markers[phase].0));
                    r.phase += 1;
                }
                Err(e) if e.to_string().starts_with("QEMU exited") => bail!("instance {i}: {e:#}"),
                Err(_) => {}
            }
        }
    };
    let seconds_to_ready = first_power_on.elapsed().as_secs_f64();
    let wait_log = std::fs::read_to_string(&waiter.log).unwrap_or_default();
    if !status.success() {
        bail!("talos-agent wait exited with {status}: {}", wait_log.trim());
    }
    let mut instances = Vec::new();
    let (mut imds_requests, mut imds_unauthorized) = (Vec::new(), 0);
    for (i, r) in running.into_iter().enumerate() {
        let mut phases: Vec<(&'static str, f64)> = markers
            .iter()
            .filter_map(|(name, pred)| r.vm.first_at(pred).map(|t| (*name, t.duration_since(r.power_on).as_secs_f64())))
            .collect();
        phases.push((
            if o.image.embed_config.is_some() { "configured (all)" } else { "maintenance_ready (all)" },
            first_power_on.elapsed().as_secs_f64(),
        ));
        if i == 0 {
            imds_requests = r.bastion.imds.requests();
            imds_unauthorized = r.bastion.imds.unauthorized();
        }
        let console = r.vm.lines().to_vec();
        drop(r.vm);
        instances.push(Node { console, phases, disk: r.machine.disk.clone() });
    }

    // Instance 0's cloud-init log, as the agent's sync() left it on the disk before the kexec.
    let cloud_init_log =
        String::from_utf8_lossy(&cloud_guest::read_file(&instances[0].disk, "/var/log/cloud-init.log")?).into_owned();
    let log_file = o.work.join("instance-0-cloud-init.log");
    std::fs::write(&log_file, &cloud_init_log)?;
    let analyze = analyze(&log_file)?;
    Ok(Outcome {
        built,
        nodes: waiter.nodes.clone(),
        wait_log,
        instances,
        seconds_to_ready,
        imds_requests,
        imds_unauthorized,
        analyze,
        cloud_init_log,
    })
}

/// `cloud-init analyze show -i LOG` (Debian's cloud-init on the host).
///
/// # Errors
/// When cloud-init is missing or fails.
pub fn analyze(log: &Path) -> Result<String> {
    let out = run(Command::new("cloud-init").args(["analyze", "show", "-i"]).arg(log), "cloud-init analyze show")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What the corrupted-cache scenario saw.
#[derive(Debug)]
pub struct Refused {
    /// The first boot's console (the mismatch, cloud-init finishing, the login prompt).
    pub first: Vec<String>,
    /// The second boot's console (same instance, the cache fixed).
    pub second: Vec<String>,
    /// Blob GETs the proxy saw during the first and the second boot.
    pub blob_gets: (usize, usize),
    /// `cloud-init analyze show` of the first boot.
    pub analyze: String,
}

/// The bastion's cache serves corrupted blobs: the user-data must refuse the agent (sha256
/// mismatch), run nothing, and leave a working Ubuntu (cloud-init finishes, a login prompt comes);
/// the instance is then powered off with the ACPI button, the cache fixed, and booted again:
/// cloud-init must not run the user-data a second time (once per instance).
///
/// # Errors
/// Any step failing or a marker not coming within its deadline.
pub fn run_refused(f: &Fixtures, guest: &CloudGuest, built: &Built, work: &Path) -> Result<Refused> {
    std::fs::create_dir_all(work)?;
    let mut instance = Instance::example(&mac(0), "10.0.2.15");
    instance.user_data = Some(std::fs::read(&built.user_data)?);
    // Nothing reports here: the readiness port forwards to a closed loopback port (the one place
    // a bound-and-released port is what is wanted).
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let b = bastion(f, work, 0, Cache::CorruptBlobs, instance, closed)?;
    let proxy = b.proxy.as_ref().expect("a proxy for CorruptBlobs");
    let m = machine(work, guest, 0, true)?;
    let mut vm = boot(&b.ns, f, &m)?;
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    vm.wait_for("the user-data's sha256 mismatch", deadline, |l| l.contains("mismatch") && l.contains(USER_DATA_MARK))?;
    vm.wait_for("cloud-init finishing", deadline, |l| l.contains(CLOUD_DONE) && l.contains("Datasource"))?;
    vm.wait_for("a login prompt", deadline, |l| l.contains("login:"))?;
    cloud_guest::power_button(&m.monitor)?;
    vm.wait_exit(Instant::now() + Duration::from_secs(180))?;
    let first = vm.lines().to_vec();
    drop(vm);
    let gets_first = proxy.faults.blob_gets.load(std::sync::atomic::Ordering::SeqCst);
    let log_file = work.join("instance-0-cloud-init.log");
    std::fs::write(&log_file, cloud_guest::read_file(&m.disk, "/var/log/cloud-init.log")?)?;
    let analyze = analyze(&log_file)?;

    // Second boot of the same instance, the cache now serving the right bytes.
    proxy.faults.corrupt_blobs.store(false, std::sync::atomic::Ordering::SeqCst);
    let m2 = cloud_guest::Instance {
        log: work.join("console-instance-0-second-boot.log"),
        ..machine(work, guest, 0, false)?
    };
    let mut vm = boot(&b.ns, f, &m2)?;
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    vm.wait_for("cloud-init finishing (second boot)", deadline, |l| {
        l.contains(CLOUD_DONE) && l.contains("Datasource")
    })?;
    vm.wait_for("a login prompt (second boot)", deadline, |l| l.contains("login:"))?;
    cloud_guest::power_button(&m2.monitor)?;
    vm.wait_exit(Instant::now() + Duration::from_secs(180))?;
    let second = vm.lines().to_vec();
    let gets_second = proxy.faults.blob_gets.load(std::sync::atomic::Ordering::SeqCst) - gets_first;
    Ok(Refused { first, second, blob_gets: (gets_first, gets_second), analyze })
}
