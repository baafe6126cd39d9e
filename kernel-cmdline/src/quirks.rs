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
