//! `imager cloud-init`, and the EC2 user-data flags `imager build` shares (the work:
//! [`crate::cloud_init`]).

use std::path::PathBuf;

use kernel_cmdline::preset::Arch;

/// The help heading of [`UserDataFlags`].
pub const HEADING: &str = "EC2 user-data";

/// What the EC2 instance uses to boot Talos: where it fetches the boot artifact and the
/// talos-agent binary, through which registries, and what `talos-agent boot` passes on to Talos.
/// These describe the instance's network, not the build host's (`--registry-mirror`). Shown under
/// the help heading [`HEADING`].
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UserDataFlags {
    /// Where `imager publish --to` puts the boot artifact, REGISTRY/REPO (a :TAG is ignored): the
    /// instance boots REGISTRY/REPO@<the build's manifest digest>. `imager build` writes the
    /// user-data (cloud-init/user-data-ec2-<arch>.yaml) only when this is given.
    #[arg(long, value_name = "REGISTRY/REPO", help_heading = HEADING)]
    pub boot_repository: Option<String>,
    /// Where `imager publish --agent-to` puts the talos-agent binary artifact, REGISTRY/REPO (a
    /// :TAG is ignored); the instance fetches its blob by digest. Default: <boot-repository>-agent.
    #[arg(long, value_name = "REGISTRY/REPO", requires = "boot_repository", help_heading = HEADING)]
    pub agent_repository: Option<String>,
    /// Registry mirror the INSTANCE uses, ORIGIN=HOST[:PORT] (e.g. ghcr.io=10.20.13.140:5000):
    /// tried before the origin for the talos-agent binary and (as talos-agent boot
    /// --registry-mirror) for the boot artifact; repeatable, in order.
    #[arg(long = "instance-registry-mirror", value_name = "ORIGIN=HOST[:PORT]", requires = "boot_repository", help_heading = HEADING)]
    pub instance_registry_mirrors: Vec<String>,
    /// Registry the INSTANCE reaches over plain HTTP (e.g. 10.20.13.140:5000); repeatable. Every
    /// other registry is reached over TLS.
    #[arg(long = "instance-insecure-registry", value_name = "HOST:PORT", requires = "boot_repository", help_heading = HEADING)]
    pub instance_insecure_registries: Vec<String>,
    /// Readiness collector for the Talos side (talos-agent boot --report, `talos_agent.report=`),
    /// e.g. http://10.20.13.140:8090/v1/report, where `talos-agent wait --listen` runs.
    #[arg(long, value_name = "URL", requires = "boot_repository", help_heading = HEADING)]
    pub report: Option<String>,
    /// Shared token for readiness reports (talos-agent boot --report-token). It is readable from
    /// the instance's user-data.
    #[arg(long, value_name = "TOKEN", requires = "report", help_heading = HEADING)]
    pub report_token: Option<String>,
    /// Public key (PEM `PUBLIC KEY`, ECDSA P-256: the `--sign-key` of `imager publish`) the
    /// instance's `talos-agent boot --signature-key` checks the boot artifact's cosign signature
    /// with: an unsigned or differently signed artifact is refused before any layer is fetched.
    #[arg(long, value_name = "FILE", requires = "boot_repository", help_heading = HEADING)]
    pub instance_signature_key: Option<PathBuf>,
    /// Machine config URL for Talos (talos-agent boot --talos-config, `talos.config=`).
    #[arg(long, value_name = "URL", requires = "boot_repository", help_heading = HEADING)]
    pub talos_config: Option<String>,
    /// Extra kernel argument for Talos on the instance (talos-agent boot --extra-kernel-arg, Talos
    /// merge rules: `-key` removes a key); repeatable.
    #[arg(
        long = "instance-kernel-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "boot_repository",
        help_heading = HEADING
    )]
    pub instance_kernel_args: Vec<String>,
}

/// `imager cloud-init` arguments.
#[derive(clap::Args, Debug)]
#[command(mut_arg("boot_repository", |a| a.required(true)))]
pub struct Args {
    /// The directory `imager build` wrote: its build.json (or boot-<arch>/) gives the boot
    /// artifact's manifest digest, talos-agent-<arch> the binary the instance fetches.
    #[arg(long, value_name = "DIR", default_value = "_out")]
    pub from: PathBuf,
    /// Architecture of the instance.
    #[arg(long, value_enum, default_value = "arm64")]
    pub arch: Arch,
    #[command(flatten)]
    pub user_data: UserDataFlags,
    /// Write the user-data gzip'd (cloud-init reads it; the 16384-byte limit applies to the
    /// gzip'd bytes). Give it to the AWS CLI as fileb://FILE.
    #[arg(long)]
    pub gzip: bool,
    /// Where to write: default <from>/cloud-init/user-data-ec2-<arch>.yaml (.yaml.gz with
    /// --gzip); `-` writes to standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}
