//! `demo`: the main job end to end on this machine, run through `scripts/demo` (which installs what
//! it needs and builds the fixtures and the cloud guest first).
//!
//! Default, the EC2 path (`moonboot_tests::ec2`): imager build (with EC2 user-data) → imager
//! publish (boot artifact + talos-agent binary) → the bastion's registry cache and IMDSv2 at their
//! real addresses inside an isolated network namespace → a Debian arm64 cloud guest boots under
//! QEMU (UEFI, EC2 SMBIOS) → cloud-init → the user-data fetches and verifies the agent → kexec →
//! the stand-in Talos → `ext-talos-agent`'s report reaches `talos-agent wait`. Prints the readiness
//! table, `wait --json`, each phase's time from power-on and `cloud-init analyze show`.
//!
//! `--quick`: the earlier path, a busybox first stage running `talos-agent boot` directly
//! (`moonboot_tests::demo`), about a minute instead of three.
//!
//! Exit codes: 0 the node reached the phase; 1 a step failed (the error says which).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use moonboot_tests::fixtures::Fixtures;

/// Build the arm64 image, publish it, boot an emulated EC2 instance with the rendered user-data
/// and wait for the node's readiness report.
#[derive(Parser)]
#[command(name = "demo")]
struct Cli {
    /// Working directory for the build output, disks and logs.
    #[arg(long, default_value = "target/demo")]
    work: PathBuf,
    /// The quick path: a busybox first stage runs talos-agent boot (no cloud-init, no IMDS).
    #[arg(long)]
    quick: bool,
    /// With --quick: make the stand-in apid ask for a client certificate and wait for
    /// `configured` instead of `maintenance_ready`.
    #[arg(long, requires = "quick")]
    configured: bool,
    /// Instances to boot against one `talos-agent wait --nodes N` (EC2 path).
    #[arg(long, default_value_t = 1, conflicts_with = "quick")]
    nodes: usize,
    /// The Talos version to build and boot: any version moonboot supports (v1.7.0 to v1.14.x).
    /// The fixtures serve stand-ins of v1.10.5 and of the newest patch of each minor from 1.10;
    /// another version is tagged from the stand-in of its minor.
    #[arg(long, value_name = "VERSION", default_value = moonboot_tests::build::TALOS_VERSION)]
    talos_version: String,
    /// A Talos machine configuration to embed (Talos v1.12.0 or later): the node boots
    /// configured, and the demo waits for `configured`.
    #[arg(long, value_name = "FILE", conflicts_with = "configured")]
    embed_config: Option<PathBuf>,
    /// Print `imager publish`'s whole report as JSON (`imager publish --json`) instead of one
    /// line per published image and manifest.
    #[arg(long)]
    json: bool,
}

impl Cli {
    fn image(&self) -> anyhow::Result<moonboot_tests::demo::Image> {
        let embed_config = match &self.embed_config {
            Some(p) => {
                Some(std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("--embed-config {}: {e}", p.display()))?)
            }
            None => None,
        };
        Ok(moonboot_tests::demo::Image { talos_version: self.talos_version.clone(), embed_config })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let f = match Fixtures::load_default() {
        Ok(Some(f)) => f,
        Ok(None) => {
            eprintln!("demo: error: target/fixtures/fixtures.json is absent: run scripts/fixtures");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    // Cargo's progress on stderr while the tools compile (minutes on a fresh machine).
    std::env::set_var("MOONBOOT_PROGRESS", "1");
    eprintln!("demo: everything below runs under software emulation (QEMU TCG, no KVM) with TEST FIXTURES:");
    eprintln!("demo: a stand-in Talos {} built from Debian's kernel, not Talos itself.", cli.talos_version);
    let result = if cli.quick { quick(&f, &cli) } else { ec2(&f, &cli) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn ec2(f: &Fixtures, cli: &Cli) -> anyhow::Result<()> {
    use moonboot_tests::ec2;
    eprintln!("demo: the cloud guest (Debian 12 arm64, cloud-init; built once, about 6 minutes):");
    let guest = moonboot_tests::cloud_guest::ensure()?;
    let o = ec2::Options {
        work: std::fs::canonicalize(".")?.join(&cli.work),
        verbose: true,
        nodes: cli.nodes,
        boot_repository: ec2::BOOT_REPOSITORY.into(),
        agent_repository: ec2::AGENT_REPOSITORY.into(),
        image: cli.image()?,
    };
    let out = ec2::run_ec2(f, &guest, &o)?;
    print_published(&out.built.published, cli.json)?;
    println!(
        "user-data:  {} ({} bytes)",
        out.built.user_data.display(),
        std::fs::metadata(&out.built.user_data)?.len()
    );
    println!("boot:       {}:{}/{}@{}", ec2::BASTION, ec2::REGISTRY_PORT, o.boot_repository, out.built.boot_digest);
    println!("agent:      {}", out.built.agent_digest);
    print_readiness(&out.wait_log, &out.nodes, &out.built.steps);
    for (i, node) in out.instances.iter().enumerate() {
        println!("instance {i}, seconds from power-on (software emulation; a Graviton instance is many times faster):");
        for (phase, secs) in &node.phases {
            println!("  {phase:<28} {secs:7.1} s");
        }
    }
    println!();
    println!("cloud-init analyze show (instance 0, until the kexec):");
    println!("{}", out.analyze.trim_end());
    Ok(())
}

/// `imager publish`'s report: with `json`, whole; otherwise one line per published image (its tag
/// and index digest) and per manifest (architecture and `REPO@DIGEST`).
fn print_published(report: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    for what in ["boot", "extension", "agent"] {
        let image = &report[what];
        if image.is_null() {
            continue;
        }
        println!("published {what:<9}  {}  index {}", text(&image["reference"]), text(&image["index_digest"]));
        for m in image["manifests"].as_array().into_iter().flatten() {
            println!("  {:<5}  {}", text(&m["arch"]), text(&m["reference"]));
        }
    }
    Ok(())
}

/// The readiness table `wait` printed, its `--json` lines, and each step's time.
fn print_readiness(wait_log: &str, nodes: &[serde_json::Value], steps: &[(&str, f64)]) {
    println!();
    println!("{}", wait_log.trim_end());
    println!();
    for n in nodes {
        println!("{n}");
    }
    println!();
    for (step, secs) in steps {
        println!("{step:<30} {secs:7.1} s");
    }
}

fn quick(f: &Fixtures, cli: &Cli) -> anyhow::Result<()> {
    use moonboot_tests::demo::{run_demo, Options};
    let o = Options {
        work: cli.work.clone(),
        repository: "moonboot/boot".into(),
        tag: "demo".into(),
        configured: cli.configured,
        controlplane: None,
        verbose: true,
        image: cli.image()?,
    };
    let out = run_demo(f, &o)?;
    print_published(&out.published, cli.json)?;
    println!("booted:    {}", out.boot_reference);
    print_readiness(&out.wait_log, &out.nodes, &out.step_seconds);
    println!(
        "VM power-on to {}: {:.1} s (software emulation; a Graviton instance is many times faster)",
        o.until(),
        out.seconds_to_phase
    );
    Ok(())
}
