//! What changes with the Talos version, in one table, as Talos keeps it in
//! `pkg/machinery/imager/quirks/quirks.go`: every fact moonboot needs that depends on the version
//! of the Talos release it builds or boots is a [`Quirk`] with a version bound in [`RULES`], or a
//! per-minor fact in [`RELEASES`]. Nothing else in the workspace compares Talos versions.
//!
//! Sources are read at the tag each fact belongs to; the snapshot of siderolabs/talos used here
//! ends at `v1.14.0-rc.1` (2026-08-14), so 1.14's facts are that tag's (the final v1.14.0 was not
//! in it). Like Talos's `quirks.New`, [`Quirks::new`] keeps only `MAJOR.MINOR.PATCH`: a
//! pre-release of 1.14.0 has 1.14.0's quirks.

use crate::preset::TalosVersion;

/// One version-dependent fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quirk {
    /// `selinux=1` among the default kernel arguments (`SupportsSELinux`).
    SeLinux,
    /// `ima_template=ima-ng ima_appraise=fix ima_hash=sha512` among the default kernel arguments
    /// (`SupportsIMA`).
    Ima,
    /// `module.sig_enforce=1` among the default kernel arguments: from 1.12 the kernel no longer
    /// forces module signatures itself (`SupportsDisablingModuleSignatureVerification`).
    ModuleSigEnforce,
    /// `proc_mem.force_override=never` among the default kernel arguments (`ProcMemOverrideNever`).
    ProcMemOverrideNever,
    /// `init_on_alloc=1` among the default kernel arguments (until `DropInitOnAllocInArgs`).
    InitOnAlloc,
    /// `nvme_core.io_timeout=4294967295` is an argument of the aws platform, right after
    /// `net.ifnames=0`, and no longer a default argument (`NvmeCoreIoTimeoutAWSOnly`).
    NvmeCoreIoTimeoutAwsOnly,
    /// metal amd64 gets `console=ttyS0` before `console=tty0` (`SupportsMetalPlatformConsoleTTYS0`).
    MetalConsoleTtyS0,
    /// Talos's BOOT partition is 2000 MiB, not 1000 MiB (`PartitionSizes`, `minTalosVersionBoot2G`).
    Boot2G,
    /// A machine configuration can be embedded in the image (`SupportsEmbeddedConfig`; Image
    /// Factory refuses `embeddedMachineConfiguration` below it).
    EmbeddedConfig,
    /// The embedded configuration file has mode 0400 (0000 in 1.12; talos `pkg/imager/embed.go`).
    EmbeddedConfigMode0400,
    /// The imager image holds `/usr/install/<arch>/talos.spdx.json` (talos `Dockerfile`
    /// `install-artifacts-<arch>`).
    Spdx,
    /// The imager keeps the `SCHILY.xattr.security.selinux` PAX records of extension layers as
    /// the files' `security.selinux` in the extension's squashfs (talos `pkg/archiver/untar.go`,
    /// `internal/pkg/extensions/compress.go`).
    SeLinuxLabels,
}

/// Where a quirk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// From this version on.
    Since(TalosVersion),
    /// Before this version.
    Before(TalosVersion),
}

/// A quirk, its bound and where Talos says so.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The quirk.
    pub quirk: Quirk,
    /// Where it holds.
    pub bound: Bound,
    /// The source: repository, file and the name of the bound there.
    pub source: &'static str,
}

const fn v(major: u64, minor: u64, patch: u64) -> TalosVersion {
    TalosVersion::new(major, minor, patch)
}

/// Every quirk with its bound (talos `pkg/machinery/imager/quirks/quirks.go` at v1.14.0-rc.1
/// unless the source says otherwise; the bounds are the same at every tag that has them).
pub const RULES: [Rule; 12] = [
    Rule { quirk: Quirk::SeLinux, bound: Bound::Since(v(1, 10, 0)), source: "talos quirks.go minVersionSELinux" },
    Rule {
        quirk: Quirk::Ima,
        bound: Bound::Before(v(1, 11, 0)),
        source: "talos quirks.go maxTalosVersionIMASupported = 1.10.99",
    },
    Rule {
        quirk: Quirk::ModuleSigEnforce,
        bound: Bound::Since(v(1, 12, 0)),
        source: "talos quirks.go minTalosVersionDisableModSigVerify",
    },
    Rule {
        quirk: Quirk::ProcMemOverrideNever,
        bound: Bound::Since(v(1, 13, 0)),
        source: "talos quirks.go minTalosVersionProcMemOverrideNever",
    },
    Rule {
        quirk: Quirk::InitOnAlloc,
        bound: Bound::Before(v(1, 14, 0)),
        source: "talos quirks.go minTalosVersionDropInitOnAllocInArgs",
    },
    Rule {
        quirk: Quirk::NvmeCoreIoTimeoutAwsOnly,
        bound: Bound::Since(v(1, 14, 0)),
        source: "talos quirks.go minTalosVersionNvmeCoreIoTimeoutAWSOnly; platform/aws/aws.go KernelArgs",
    },
    Rule {
        quirk: Quirk::MetalConsoleTtyS0,
        bound: Bound::Before(v(1, 8, 0)),
        source: "talos quirks.go maxVersionMetalPlatformConsoleTTYS0Dropped; platform/metal/metal.go KernelArgs",
    },
    Rule { quirk: Quirk::Boot2G, bound: Bound::Since(v(1, 11, 0)), source: "talos quirks.go minTalosVersionBoot2G" },
    Rule {
        quirk: Quirk::EmbeddedConfig,
        bound: Bound::Since(v(1, 12, 0)),
        source: "talos quirks.go minTalosVersionEmbeddedConfig; image-factory internal/profile/profile.go",
    },
    Rule {
        quirk: Quirk::EmbeddedConfigMode0400,
        bound: Bound::Since(v(1, 13, 0)),
        source: "talos pkg/imager/embed.go (Mode 0o000 at v1.12.11, 0o400 from v1.13.0)",
    },
    Rule { quirk: Quirk::Spdx, bound: Bound::Since(v(1, 11, 0)), source: "talos Dockerfile install-artifacts-<arch>" },
    Rule {
        quirk: Quirk::SeLinuxLabels,
        bound: Bound::Since(v(1, 12, 0)),
        source: "talos pkg/archiver/untar.go (xattr at v1.12.x; mksquashfs -p pseudo entries from v1.13.0)",
    },
];

/// The quirks of one Talos version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    version: TalosVersion,
}

impl Quirks {
    /// The quirks of `version` (its pre-release part was already dropped by parsing).
    pub const fn new(version: TalosVersion) -> Quirks {
        Quirks { version }
    }

    /// The version.
    pub fn version(self) -> TalosVersion {
        self.version
    }

    /// Whether `quirk` holds for this version ([`RULES`]).
    pub fn has(self, quirk: Quirk) -> bool {
        let rule = RULES.iter().find(|r| r.quirk == quirk).expect("every quirk has a rule");
        match rule.bound {
            Bound::Since(at) => self.version >= at,
            Bound::Before(at) => self.version < at,
        }
    }

    /// Talos's BOOT partition size in MiB (talos `pkg/machinery/imager/quirks/partitions.go`
    /// `GrubBootSize`; v1.10's `internal/pkg/partition/constants.go` `BootSize`).
    pub fn boot_partition_mib(self) -> u64 {
        if self.has(Quirk::Boot2G) {
            2000
        } else {
            1000
        }
    }

    /// Talos's own EFI partition size for an sd-boot (UKI) disk in MiB: EFI + BIOS + BOOT
    /// (talos `pkg/machinery/imager/quirks/partitions.go` `UKIEFISize`; v1.10's
    /// `internal/pkg/partition/constants.go` `EFIUKISize`): 1101 before 1.11, 2101 from 1.11.
    /// arm64 images use sd-boot from Talos 1.10 (talos `pkg/imager/profile/output.go`
    /// `selectBootloader`).
    pub fn uki_efi_partition_mib(self) -> u64 {
        EFI_MIB + BIOS_GRUB_MIB + self.boot_partition_mib()
    }

    /// Whether Talos at this version registers the machine configuration document `kind`
    /// ([`CONFIG_DOCUMENT_KINDS`]; the legacy `v1alpha1` document has no kind).
    pub fn knows_config_kind(self, kind: &str) -> bool {
        CONFIG_DOCUMENT_KINDS.iter().any(|(k, since)| *k == kind && self.version >= *since)
    }

    /// The minor release this version belongs to, when [`RELEASES`] has it.
    pub fn release(self) -> Option<&'static Release> {
        RELEASES.iter().find(|r| r.minor == (self.version.major, self.version.minor))
    }

    /// The sbc-raspberrypi (`rpi_generic` overlay) version Talos's overlays bundle of this
    /// version pins, when known ([`Release::sbc_raspberrypi`]).
    pub fn sbc_raspberrypi(self) -> Option<&'static str> {
        let release = self.release()?;
        release.sbc_raspberrypi.iter().rev().find(|(from, _)| self.version.patch >= *from).map(|(_, pin)| *pin)
    }
}

/// What moonboot knows of one Talos minor release.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// `(major, minor)`.
    pub minor: (u64, u64),
    /// The newest patch release the facts were read at (the stand-in release the tests build).
    pub newest: TalosVersion,
    /// The `rpi_generic` overlay's sbc-raspberrypi version in the overlays bundle
    /// (siderolabs/overlays `internal/overlays/overlays.yaml` at the tag of each Talos version):
    /// `(first patch, version)` pairs, in order; from that patch until the next pair.
    pub sbc_raspberrypi: &'static [(u64, &'static str)],
}

/// The Talos minor releases moonboot builds and boots, oldest first. A version of a newer minor
/// is refused ([`crate::preset::PresetError::UnsupportedVersion`]).
pub const RELEASES: [Release; 8] = [
    Release { minor: (1, 7), newest: v(1, 7, 7), sbc_raspberrypi: &[(0, "v0.1.0-beta.0")] },
    Release { minor: (1, 8), newest: v(1, 8, 4), sbc_raspberrypi: &[(0, "v0.1.0-beta.2")] },
    Release {
        minor: (1, 9),
        newest: v(1, 9, 6),
        sbc_raspberrypi: &[(0, "v0.1.0"), (1, "v0.1.1"), (3, "v0.1.2"), (4, "v0.1.3")],
    },
    Release { minor: (1, 10), newest: v(1, 10, 9), sbc_raspberrypi: &[(0, "v0.1.4"), (1, "v0.1.5")] },
    Release { minor: (1, 11), newest: v(1, 11, 6), sbc_raspberrypi: &[(0, "v0.1.5")] },
    Release { minor: (1, 12), newest: v(1, 12, 11), sbc_raspberrypi: &[(0, "v0.1.7"), (3, "v0.1.8"), (5, "v0.2.0")] },
    Release { minor: (1, 13), newest: v(1, 13, 9), sbc_raspberrypi: &[(0, "v0.2.0")] },
    Release { minor: (1, 14), newest: v(1, 14, 0), sbc_raspberrypi: &[(0, "v0.2.0")] },
];

/// Talos's `EFISize`/`GrubEFISize`, 100 MiB (talos `partitions.go`; v1.10 `constants.go`).
pub const EFI_MIB: u64 = 100;
/// Talos's `BIOSGrubSize`/`GrubBIOSSize`, 1 MiB (ibid.).
pub const BIOS_GRUB_MIB: u64 = 1;
/// Talos's `META` partition: `MetaSize` 1 MiB (ibid.); Talos finds META by its label and requires
/// exactly this size (`internal/app/machined/pkg/controllers/block/internal/volumes`).
pub const META_MIB: u64 = 1;
/// Talos's `STATE` partition: `StateSize` 100 MiB (ibid.; the STATE volume's min and max size).
pub const STATE_MIB: u64 = 100;
/// Talos's `EphemeralMinSize`, 2 GiB, the same at every version moonboot knows (talos
/// `partitions.go` v1.11.6–v1.14.0-rc.1, `internal/pkg/partition/constants.go` v1.10.9): the
/// smallest EPHEMERAL partition Talos creates (`volumeconfig/system_volumes.go`: `MinSize` of the
/// EPHEMERAL volume, `quirks.New("")`). An existing partition labelled `EPHEMERAL` is located and
/// used whatever its size (`internal/volumes/locate.go`); only a missing one is provisioned, and
/// only when the disk has this much contiguous free space (`disk.go` `CanProvision`).
pub const EPHEMERAL_MIN_MIB: u64 = 2048;

/// Every machine configuration document kind Talos registers besides the legacy `v1alpha1`
/// `Config` (`registry.Register` under talos `pkg/machinery/config/types/`, read at v1.12.11,
/// v1.13.9 and v1.14.0-rc.1: 36, 44 and 89 kinds), with the first minor release that has it. Every
/// kind's `apiVersion` is `v1alpha1`; none was removed. Only versions that take an embedded
/// machine configuration (≥ 1.12, [`Quirk::EmbeddedConfig`]) need this list.
pub const CONFIG_DOCUMENT_KINDS: [(&str, TalosVersion); 89] = [
    ("BGPInstanceConfig", v(1, 14, 0)),
    ("BlackholeRouteConfig", v(1, 13, 0)),
    ("BondConfig", v(1, 12, 0)),
    ("BridgeConfig", v(1, 12, 0)),
    ("CRIBaseRuntimeSpecConfig", v(1, 14, 0)),
    ("CRICustomizationConfig", v(1, 14, 0)),
    ("ContainerConfig", v(1, 14, 0)),
    ("DHCPv4Config", v(1, 12, 0)),
    ("DHCPv6Config", v(1, 12, 0)),
    ("DiscoveryIdentityConfig", v(1, 14, 0)),
    ("DiscoveryServiceConfig", v(1, 14, 0)),
    ("DummyLinkConfig", v(1, 12, 0)),
    ("EnvironmentConfig", v(1, 13, 0)),
    ("EtcFileConfig", v(1, 14, 0)),
    ("EthernetConfig", v(1, 12, 0)),
    ("EventSinkConfig", v(1, 12, 0)),
    ("ExistingVolumeConfig", v(1, 12, 0)),
    ("ExtensionServiceConfig", v(1, 12, 0)),
    ("ExternalVolumeConfig", v(1, 13, 0)),
    ("FilesystemScrubConfig", v(1, 14, 0)),
    ("FilesystemTrimConfig", v(1, 14, 0)),
    ("HCloudVIPConfig", v(1, 12, 0)),
    ("HTTPProbeConfig", v(1, 14, 0)),
    ("HostnameConfig", v(1, 12, 0)),
    ("ImageCacheConfig", v(1, 14, 0)),
    ("ImageVerificationConfig", v(1, 13, 0)),
    ("KernelModuleConfig", v(1, 14, 0)),
    ("KmsgLogConfig", v(1, 12, 0)),
    ("KubeAPIServerCAConfig", v(1, 14, 0)),
    ("KubeAPIServerConfig", v(1, 14, 0)),
    ("KubeAdmissionControlConfig", v(1, 14, 0)),
    ("KubeAggregatorCAConfig", v(1, 14, 0)),
    ("KubeAuditPolicyConfig", v(1, 14, 0)),
    ("KubeAuthenticationConfig", v(1, 14, 0)),
    ("KubeAuthorizerConfig", v(1, 14, 0)),
    ("KubeClusterConfig", v(1, 14, 0)),
    ("KubeControllerManagerConfig", v(1, 14, 0)),
    ("KubeCoreDNSConfig", v(1, 14, 0)),
    ("KubeCredentialProviderConfig", v(1, 14, 0)),
    ("KubeEtcdEncryptionConfig", v(1, 14, 0)),
    ("KubeExternalManifestConfig", v(1, 14, 0)),
    ("KubeFlannelCNIConfig", v(1, 14, 0)),
    ("KubeInlineManifestConfig", v(1, 14, 0)),
    ("KubeNetworkConfig", v(1, 14, 0)),
    ("KubeNodeConfig", v(1, 14, 0)),
    ("KubePrismConfig", v(1, 14, 0)),
    ("KubeProxyConfig", v(1, 14, 0)),
    ("KubeSchedulerConfig", v(1, 14, 0)),
    ("KubeServiceAccountConfig", v(1, 14, 0)),
    ("KubeSpanConfig", v(1, 13, 0)),
    ("KubeSpanEndpointsConfig", v(1, 12, 0)),
    ("KubeStaticPodConfig", v(1, 14, 0)),
    ("KubeTalosAPIAccessConfig", v(1, 14, 0)),
    ("KubeletConfig", v(1, 14, 0)),
    ("LVMLogicalVolumeConfig", v(1, 14, 0)),
    ("LVMVolumeGroupConfig", v(1, 14, 0)),
    ("Layer2VIPConfig", v(1, 12, 0)),
    ("LinkAliasConfig", v(1, 12, 0)),
    ("LinkConfig", v(1, 12, 0)),
    ("NetworkDefaultActionConfig", v(1, 12, 0)),
    ("NetworkRuleConfig", v(1, 12, 0)),
    ("OOMConfig", v(1, 12, 0)),
    ("PCIDriverRebindConfig", v(1, 12, 0)),
    ("RAIDArrayConfig", v(1, 14, 0)),
    ("RawVolumeConfig", v(1, 12, 0)),
    ("RegistryAuthConfig", v(1, 12, 0)),
    ("RegistryMirrorConfig", v(1, 12, 0)),
    ("RegistryTLSConfig", v(1, 12, 0)),
    ("ResolverConfig", v(1, 12, 0)),
    ("RoutingRuleConfig", v(1, 13, 0)),
    ("SecurityProfileConfig", v(1, 14, 0)),
    ("SideroLinkConfig", v(1, 12, 0)),
    ("StaticHostConfig", v(1, 12, 0)),
    ("SwapVolumeConfig", v(1, 12, 0)),
    ("SysctlConfig", v(1, 14, 0)),
    ("SysfsConfig", v(1, 14, 0)),
    ("TCPProbeConfig", v(1, 13, 0)),
    ("TimeSyncConfig", v(1, 12, 0)),
    ("TrustedRootsConfig", v(1, 12, 0)),
    ("UdevRulesConfig", v(1, 14, 0)),
    ("UnattendedInstallConfig", v(1, 14, 0)),
    ("UserVolumeConfig", v(1, 12, 0)),
    ("VLANConfig", v(1, 12, 0)),
    ("VRFConfig", v(1, 13, 0)),
    ("VethConfig", v(1, 14, 0)),
    ("VolumeConfig", v(1, 12, 0)),
    ("WatchdogTimerConfig", v(1, 12, 0)),
    ("WireguardConfig", v(1, 12, 0)),
    ("ZswapConfig", v(1, 12, 0)),
];

/// The oldest version moonboot knows (the first patch of the oldest [`RELEASES`] entry).
pub const OLDEST: TalosVersion = v(1, 7, 0);

/// Whether `version` belongs to a minor release of [`RELEASES`].
pub fn supported(version: TalosVersion) -> bool {
    Quirks::new(version).release().is_some()
}

/// The newest minor release moonboot knows, for messages: `1.14`.
pub fn newest_minor() -> String {
    let (major, minor) = RELEASES[RELEASES.len() - 1].minor;
    format!("{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quirks {
        Quirks::new(s.parse().unwrap())
    }

    #[test]
    fn every_quirk_has_exactly_one_rule() {
        for rule in RULES {
            assert_eq!(RULES.iter().filter(|r| r.quirk == rule.quirk).count(), 1, "{:?}", rule.quirk);
        }
    }

    /// talos v1.14.0-rc.1 `pkg/machinery/imager/quirks/quirks_test.go` and `partitions_test.go`
    /// cases for the quirks moonboot uses.
    #[test]
    fn bounds_match_talos_quirks_tests() {
        assert!(!q("1.9.0").has(Quirk::SeLinux) && q("1.10.0").has(Quirk::SeLinux));
        assert!(q("1.10.9").has(Quirk::Ima) && !q("1.11.0").has(Quirk::Ima));
        assert!(!q("1.11.6").has(Quirk::ModuleSigEnforce) && q("1.12.0").has(Quirk::ModuleSigEnforce));
        assert!(!q("1.12.11").has(Quirk::ProcMemOverrideNever) && q("1.13.0").has(Quirk::ProcMemOverrideNever));
        assert!(q("1.13.9").has(Quirk::InitOnAlloc) && !q("1.14.0-alpha.1").has(Quirk::InitOnAlloc));
        assert!(q("1.7.7").has(Quirk::MetalConsoleTtyS0) && !q("1.8.0").has(Quirk::MetalConsoleTtyS0));
        assert_eq!((q("1.9.0").boot_partition_mib(), q("1.10.0").boot_partition_mib()), (1000, 1000));
        assert_eq!(q("1.11.0").boot_partition_mib(), 2000);
        assert!(!q("1.11.6").has(Quirk::EmbeddedConfig) && q("1.12.0").has(Quirk::EmbeddedConfig));
        // TestPartitionSizes: UKI EFI = boot + 100 MiB + 1 MiB.
        assert_eq!((q("1.10.0").uki_efi_partition_mib(), q("1.11.0").uki_efi_partition_mib()), (1101, 2101));
    }

    #[test]
    fn config_kinds_per_release_match_the_registry_counts() {
        let count = |s: &str| CONFIG_DOCUMENT_KINDS.iter().filter(|(k, _)| q(s).knows_config_kind(k)).count();
        assert_eq!((count("1.12.11"), count("1.13.9"), count("1.14.0")), (36, 44, 89));
        assert!(q("1.12.0").knows_config_kind("HostnameConfig") && q("1.12.0").knows_config_kind("VolumeConfig"));
        assert!(!q("1.12.11").knows_config_kind("KubeSpanConfig") && q("1.13.0").knows_config_kind("KubeSpanConfig"));
        assert!(!q("1.13.9").knows_config_kind("KubeletConfig") && q("1.14.0").knows_config_kind("KubeletConfig"));
        assert!(!q("1.14.0").knows_config_kind("v1alpha1") && !q("1.14.0").knows_config_kind("FooConfig"));
        let mut names: Vec<&str> = CONFIG_DOCUMENT_KINDS.iter().map(|(k, _)| *k).collect();
        names.dedup();
        assert_eq!(names.len(), CONFIG_DOCUMENT_KINDS.len(), "sorted, no duplicates");
    }

    #[test]
    fn overlay_pins_follow_the_overlays_bundle() {
        assert_eq!(q("1.10.0").sbc_raspberrypi(), Some("v0.1.4"));
        assert_eq!(q("1.10.5").sbc_raspberrypi(), Some("v0.1.5"));
        assert_eq!(q("1.11.6").sbc_raspberrypi(), Some("v0.1.5"));
        assert_eq!(q("1.12.2").sbc_raspberrypi(), Some("v0.1.7"));
        assert_eq!(q("1.12.4").sbc_raspberrypi(), Some("v0.1.8"));
        assert_eq!(q("1.12.11").sbc_raspberrypi(), Some("v0.2.0"));
        assert_eq!(q("1.13.6").sbc_raspberrypi(), Some("v0.2.0"));
        assert_eq!(q("1.14.0").sbc_raspberrypi(), Some("v0.2.0"));
        assert_eq!(q("1.15.0").sbc_raspberrypi(), None);
    }

    #[test]
    fn supported_range() {
        assert!(!supported("1.6.7".parse().unwrap()));
        for s in ["1.7.0", "1.10.5", "1.13.6", "1.14.0", "1.14.3"] {
            assert!(supported(s.parse().unwrap()), "{s}");
        }
        assert!(!supported("1.15.0".parse().unwrap()));
        assert_eq!(newest_minor(), "1.14");
        assert_eq!(Quirks::new(OLDEST).release().unwrap().minor, (1, 7));
        for pair in RELEASES.windows(2) {
            assert!(pair[0].minor < pair[1].minor && pair[0].newest < pair[1].newest);
        }
    }
}
