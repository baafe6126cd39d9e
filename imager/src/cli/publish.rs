//! `imager publish` (the work: [`crate::publish`]).

use std::path::PathBuf;

use kernel_cmdline::preset::Arch;

/// `imager publish` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to push: REGISTRY/REPO:TAG. The multi-arch index of the boot artifacts gets TAG.
    /// Without it, only the talos-agent extension image is published (to --extension-to).
    #[arg(long, value_name = "REGISTRY/REPO:TAG", required_unless_present_any = ["extension_to", "agent_to", "board_inputs", "ipxe_inputs"])]
    pub to: Option<String>,
    /// Architectures to publish, comma-separated; default: every `boot-<arch>/` in the output
    /// directory (for --agent-to without --agent-binary: every `talos-agent-<arch>`).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub arch: Vec<Arch>,
    /// The directory `imager build` wrote.
    #[arg(long, value_name = "DIR", default_value = "_out")]
    pub output: PathBuf,
    /// Where to push the talos-agent extension image; default: REGISTRY/REPO-extension:TAG.
    /// `imager build` pulls it from ghcr.io/moonboot/talos-agent:v<version> by default.
    #[arg(long, value_name = "REGISTRY/REPO:TAG")]
    pub extension_to: Option<String>,
    /// A static talos-agent binary to publish as an OCI artifact, ARCH=PATH (arm64=…, amd64=…);
    /// repeatable, with --agent-to. Default: the talos-agent-<arch> files `imager build` wrote
    /// into --output (those the EC2 user-data of the build fetches by digest).
    #[arg(long = "agent-binary", value_name = "ARCH=PATH", requires = "agent_to")]
    pub agent_binaries: Vec<String>,
    /// Where to push the talos-agent binaries artifact index: REGISTRY/REPO:TAG (the EC2
    /// user-data's --agent-repository, by default <boot repository>-agent). Without
    /// --agent-binary, publishes <output>/talos-agent-<arch> for each --arch, or each present.
    #[arg(long, value_name = "REGISTRY/REPO:TAG")]
    pub agent_to: Option<String>,
    /// Publish the Raspberry Pi CM3 board inputs in DIR (`scripts/rpi-inputs DIR` fetches them;
    /// each is checked against its pin in boards/rpi-cm3.inputs) as the OCI artifact that
    /// `imager build --board rpi-cm3` pulls when it is given no --board-inputs.
    #[arg(long, value_name = "DIR")]
    pub board_inputs: Option<PathBuf>,
    /// Publish the iPXE binaries in DIR (ipxe-arm64.efi, ipxe-amd64.efi; `scripts/ipxe-inputs DIR`
    /// fetches them; each is checked against its pin in boards/ipxe.inputs) as the OCI artifact
    /// that `imager build` pulls for netboot/tftp/ when --ipxe-dir lacks them.
    #[arg(long, value_name = "DIR")]
    pub ipxe_inputs: Option<PathBuf>,
    /// Where --board-inputs and --ipxe-inputs go: REGISTRY/REPO, tagged `rpi-cm3-<digest of the
    /// pins>` and `ipxe-<digest of the pins>`.
    #[arg(long, value_name = "REGISTRY/REPO", default_value = crate::board::inputs::DEFAULT_REPOSITORY)]
    pub board_inputs_repository: String,
    /// Sign what is published with this key, as `cosign sign --key` does (the legacy
    /// `sha256-<hex>.sig` tag next to each image; `cosign verify --key PUB --insecure-ignore-tlog`
    /// accepts it): every index and per-architecture manifest of the boot artifact, the
    /// talos-agent extension image and the talos-agent binaries. An unencrypted PEM P-256 private
    /// key (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`), e.g. `openssl genpkey -algorithm EC
    /// -pkeyopt ec_paramgen_curve:P-256 -out moonboot.key`; `openssl pkey -in moonboot.key -pubout`
    /// gives the public key for `talos-agent boot --signature-key` and `cosign verify --key`.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Registry credentials file (Docker config.json format). Default: $REGISTRY_AUTH_FILE, else
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json; anonymous when absent.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Registry reached over plain HTTP instead of TLS. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
