//! `imager netboot` (the work: [`crate::netboot`]); `imager build` takes the same network flags.

use std::path::PathBuf;

use kernel_cmdline::preset::Arch;

/// How the boot network looks, for the generated matchbox profiles and dnsmasq configurations.
#[derive(clap::Args, Debug, Clone)]
pub struct NetworkFlags {
    /// Base URL of matchbox, where iPXE is chained to (`…/boot.ipxe`).
    #[arg(long, value_name = "URL", default_value = "http://10.20.13.140:8080")]
    pub matchbox_url: String,
    /// `dhcp-range` of dnsmasq.conf: START,END,LEASE.
    #[arg(long, value_name = "RANGE", default_value = "10.20.13.100,10.20.13.200,12h")]
    pub dhcp_range: String,
    /// The subnet dnsmasq-proxy.conf answers proxy DHCP on.
    #[arg(long, value_name = "ADDRESS", default_value = "10.20.13.0")]
    pub proxy_subnet: String,
    /// Where Debian's ipxe package keeps ipxe-arm64.efi / ipxe-amd64.efi (trixie or later has
    /// arm64). When it lacks an architecture's, `imager build` pulls the one pinned in
    /// boards/ipxe.inputs from --board-inputs-repository (`imager publish --ipxe-inputs`), and
    /// `imager netboot` takes the one the build wrote into <from>/netboot/tftp/.
    #[arg(long, value_name = "DIR", default_value = "/usr/lib/ipxe")]
    pub ipxe_dir: PathBuf,
    /// One machine by its MAC address and role (`controlplane` or `worker`), repeatable:
    /// `--node 52:54:00:00:00:11=controlplane`. Writes the per-MAC matchbox group
    /// `node-<mac>-<arch>` for every architecture, pointing at the profile
    /// `talos-<arch>-<role>` (the architecture's profile plus `talos_agent.role=<role>`).
    /// Machines not named keep the architecture's group.
    #[arg(long = "node", value_name = "MAC=ROLE", value_parser = crate::netboot::parse_node)]
    pub nodes: Vec<crate::netboot::Node>,
}

/// `imager netboot` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory `imager build` wrote (its boot-<arch>/ artifacts are read).
    #[arg(long, value_name = "DIR", default_value = "_out")]
    pub from: PathBuf,
    /// Where to write the netboot directory (matchbox/, tftp/, dnsmasq*.conf).
    #[arg(long, value_name = "DIR", default_value = "_out/netboot")]
    pub output: PathBuf,
    /// Architectures, comma-separated; default: every boot-<arch>/ present.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub arch: Vec<Arch>,
    /// `talos.config=` URL for the profiles (Talos substitutes ${uuid}, ${serial}, ${mac},
    /// ${hostname}; iPXE expands its own ${…} first).
    #[arg(long, value_name = "URL")]
    pub talos_config: Option<String>,
    /// Readiness collector (`talos_agent.report=`), the URL of `talos-agent wait`.
    #[arg(long, value_name = "URL")]
    pub report: Option<String>,
    /// Shared token for readiness reports (`talos_agent.token=`).
    #[arg(long, value_name = "TOKEN", requires = "report")]
    pub report_token: Option<String>,
    /// Extra kernel argument for the profiles (Talos merge rules), repeatable.
    #[arg(long = "extra-kernel-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub extra_kernel_args: Vec<String>,
    #[command(flatten)]
    pub network: NetworkFlags,
}
