//! The kernel command lines Talos's imager gives, per Talos version, platform, overlay and
//! architecture.
//!
//! [`talos`] reproduces talos `pkg/imager/imager.go` `buildCmdline` (the same order from v1.10.0
//! to v1.14.0-rc.1) for the output kind `cmdline`:
//!
//! 1. `talos.platform=<platform>`, then the platform's arguments with go-procfs `SetAll`
//!    (`internal/app/machined/pkg/runtime/v1alpha1/platform/{metal,aws}/*.go` `KernelArgs`);
//! 2. the overlay installer's arguments with `SetAll` (siderolabs/sbc-raspberrypi
//!    `installers/rpi_generic/src/main.go` `GetOptions`), so they replace the platform's `console=`;
//! 3. `kernel.DefaultArgs(quirks)` with `AppendAll` (`pkg/machinery/kernel/kernel.go`);
//! 4. the extra arguments with `AppendAll` overwriting `console`/`talos.platform` and deleting
//!    negated arguments ([`crate::MergeOptions::talos`]).
//!
//! What changes with the version is decided by [`crate::quirks`], moonboot's copy of Talos's
//! `pkg/machinery/imager/quirks/quirks.go`. Versions of the minor releases in
//! [`crate::quirks::RELEASES`] (1.7 to 1.14) are supported; a newer one is refused rather than
//! guessed.

use std::fmt;
use std::str::FromStr;

use crate::quirks::{Quirk, Quirks};
use crate::{Cmdline, Error, Param};

/// CPU architecture, as Talos (and Go's `GOARCH`, and OCI platforms) name it.
///
/// With the `clap` feature it is a `clap::ValueEnum` whose values are `amd64` and `arm64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Arch {
    /// `arm64` (AArch64: Graviton, Raspberry Pi 3/CM3 and later).
    Arm64,
    /// `amd64` (x86-64).
    Amd64,
}

impl Arch {
    /// Talos's spelling: `amd64` or `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture this program was compiled for, if it is one of the two.
    pub fn native() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = String;

    /// `amd64` or `arm64`; Rust's and the kernel's names (`x86_64`, `aarch64`) are accepted too.
    fn from_str(s: &str) -> Result<Arch, String> {
        match s {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(format!("unknown architecture {other:?} (expected arm64 or amd64)")),
        }
    }
}

/// A Talos platform (`talos.platform=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Platform {
    /// `metal`: bare metal, netboot, single-board computers.
    Metal,
    /// `aws`: Amazon EC2.
    Aws,
}

impl Platform {
    /// Talos's spelling: `metal` or `aws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Metal => "metal",
            Platform::Aws => "aws",
        }
    }

    /// The platform's own arguments (`KernelArgs(arch, quirks)`), before `SetAll`.
    fn kernel_args(self, arch: Arch, q: Quirks) -> &'static str {
        match (self, arch) {
            // platform/aws/aws.go: arch-independent.
            (Platform::Aws, _) if q.has(Quirk::NvmeCoreIoTimeoutAwsOnly) => {
                "console=tty1 console=ttyS0 net.ifnames=0 nvme_core.io_timeout=4294967295"
            }
            (Platform::Aws, _) => "console=tty1 console=ttyS0 net.ifnames=0",
            // platform/metal/metal.go.
            (Platform::Metal, Arch::Arm64) => "console=ttyAMA0 console=tty0",
            (Platform::Metal, Arch::Amd64) if q.has(Quirk::MetalConsoleTtyS0) => "console=ttyS0 console=tty0",
            (Platform::Metal, Arch::Amd64) => "console=tty0",
        }
    }
}

/// A board overlay whose installer contributes kernel arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Overlay {
    /// siderolabs/sbc-raspberrypi `rpi_generic` (Raspberry Pi 3/CM3/4/CM4), arm64 only.
    #[cfg_attr(feature = "clap", value(name = "rpi_generic"))]
    RpiGeneric,
}

impl Overlay {
    /// Every overlay whose kernel arguments this crate knows.
    pub const ALL: [Overlay; 1] = [Overlay::RpiGeneric];

    /// The overlay named `name` in a schematic or the overlays bundle (`rpi_generic`).
    pub fn from_name(name: &str) -> Option<Overlay> {
        Overlay::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The overlay's name as in Image Factory schematics: `rpi_generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlay::RpiGeneric => "rpi_generic",
        }
    }

    /// `GetOptions().KernelArgs` (sbc-raspberrypi `installers/rpi_generic/src/main.go`), identical
    /// in every tag Talos pins, v0.1.0-beta.0 … v0.2.0.
    fn kernel_args(self) -> &'static str {
        match self {
            Overlay::RpiGeneric => {
                "console=tty0 console=ttyAMA0,115200 sysctl.kernel.kexec_load_disabled=1 talos.dashboard.disabled=1"
            }
        }
    }
}

/// A Talos version `MAJOR.MINOR.PATCH`; parsed tolerantly like Talos's quirks (`semver.ParseTolerant`):
/// a leading `v` is accepted and a pre-release or build suffix is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TalosVersion {
    /// Major version (1).
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

impl TalosVersion {
    /// A version from its parts.
    pub const fn new(major: u64, minor: u64, patch: u64) -> TalosVersion {
        TalosVersion { major, minor, patch }
    }

    /// Whether moonboot knows this version's minor release ([`crate::quirks::RELEASES`]).
    pub fn is_supported(self) -> bool {
        crate::quirks::supported(self)
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version string that is not `[v]MAJOR.MINOR[.PATCH][-pre][+build]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Talos version {0:?}: expected MAJOR.MINOR.PATCH such as 1.10.5 or v1.11.0")]
pub struct VersionError(pub String);

impl FromStr for TalosVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, VersionError> {
        let err = || VersionError(s.to_string());
        let core = s.strip_prefix('v').unwrap_or(s);
        let core = core.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut next = |required: bool| -> Result<u64, VersionError> {
            match parts.next() {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().map_err(|_| err()),
                None if !required => Ok(0),
                _ => Err(err()),
            }
        };
        let v = TalosVersion::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(v)
    }
}

/// Why no preset could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    /// The Talos version's minor release is not in [`crate::quirks::RELEASES`].
    #[error(
        "Talos {0} is not supported: kernel arguments are known for {oldest} up to v{newest}.x",
        oldest = crate::quirks::OLDEST,
        newest = crate::quirks::newest_minor()
    )]
    UnsupportedVersion(TalosVersion),
    /// The overlay does not exist for this architecture or platform.
    #[error("overlay {overlay} needs arm64 and platform metal, not {arch}/{platform}")]
    OverlayMismatch {
        /// The overlay's name.
        overlay: &'static str,
        /// The requested architecture.
        arch: &'static str,
        /// The requested platform.
        platform: &'static str,
    },
    /// Building the line failed (an extra argument made it too long).
    #[error(transparent)]
    Cmdline(#[from] Error),
}

/// `kernel.DefaultArgs(quirks)` for `v` (talos `pkg/machinery/kernel/kernel.go`; a plain list
/// before v1.10, a function of the quirks since).
///
/// Talos writes `slab_nomerge=`; go-procfs renders an empty value as the bare key, so it is a bare
/// flag here.
pub fn default_args(v: TalosVersion) -> Cmdline {
    let q = Quirks::new(v);
    let mut args = Vec::new();
    if q.has(Quirk::InitOnAlloc) {
        args.push("init_on_alloc=1");
    }
    args.extend(["slab_nomerge", "pti=on", "consoleblank=0"]);
    if !q.has(Quirk::NvmeCoreIoTimeoutAwsOnly) {
        args.push("nvme_core.io_timeout=4294967295");
    }
    args.push("printk.devkmsg=on");
    if q.has(Quirk::Ima) {
        args.extend(["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]);
    }
    if q.has(Quirk::SeLinux) {
        args.push("selinux=1");
    }
    if q.has(Quirk::ModuleSigEnforce) {
        args.push("module.sig_enforce=1");
    }
    if q.has(Quirk::ProcMemOverrideNever) {
        args.push("proc_mem.force_override=never");
    }
    Cmdline::parse(&args.join(" ")).expect("default arguments are valid")
}

/// The command line Talos's imager writes for output kind `cmdline` (see the module docs).
///
/// `extra` holds the profile's/schematic's extra kernel arguments (may be empty).
///
/// # Errors
/// [`PresetError::UnsupportedVersion`], [`PresetError::OverlayMismatch`] (the Raspberry Pi overlay
/// is arm64 + metal only), [`PresetError::Cmdline`] when the result exceeds the size limit.
pub fn talos(
    version: TalosVersion,
    platform: Platform,
    arch: Arch,
    overlay: Option<Overlay>,
    extra: &Cmdline,
) -> Result<Cmdline, PresetError> {
    if !version.is_supported() {
        return Err(PresetError::UnsupportedVersion(version));
    }
    let mut line = Cmdline::new();
    line.push(Param::new("talos.platform", Some(platform.as_str()))?)?;
    line.set_all(&Cmdline::parse(platform.kernel_args(arch, Quirks::new(version)))?)?;
    if let Some(o) = overlay {
        if arch != Arch::Arm64 || platform != Platform::Metal {
            return Err(PresetError::OverlayMismatch {
                overlay: o.as_str(),
                arch: arch.as_str(),
                platform: platform.as_str(),
            });
        }
        line.set_all(&Cmdline::parse(o.kernel_args())?)?;
    }
    line.merge(&default_args(version), &crate::MergeOptions::default())?;
    line.merge_talos(extra)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        s.parse().unwrap()
    }

    fn metal(version: &str, arch: Arch) -> String {
        talos(v(version), Platform::Metal, arch, None, &Cmdline::new()).unwrap().to_string()
    }

    /// Every expected string of talos v1.14.0-rc.1 `pkg/imager/imager_test.go` (`cmdline-*`
    /// cases), verbatim: metal for 1.7 to 1.14 and aws for 1.13 and 1.14 (v1.11.6 to v1.13.9 have
    /// the first eight).
    #[test]
    fn imager_test_vectors() {
        let aws_113 = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never";
        let aws_114 = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 nvme_core.io_timeout=4294967295 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never";
        let cases = [
            ("1.7.0", Platform::Metal, Arch::Amd64, "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"),
            ("1.7.0", Platform::Metal, Arch::Arm64, "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"),
            ("1.8.0", Platform::Metal, Arch::Amd64, "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"),
            ("1.8.0", Platform::Metal, Arch::Arm64, "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"),
            ("1.10.1", Platform::Metal, Arch::Amd64, "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1"),
            ("1.10.1", Platform::Metal, Arch::Arm64, "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1"),
            ("1.11.0", Platform::Metal, Arch::Amd64, "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"),
            ("1.11.0", Platform::Metal, Arch::Arm64, "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"),
            ("1.13.0", Platform::Metal, Arch::Amd64, "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"),
            ("1.13.0", Platform::Metal, Arch::Arm64, "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"),
            ("1.13.0", Platform::Aws, Arch::Amd64, aws_113),
            ("1.13.0", Platform::Aws, Arch::Arm64, aws_113),
            ("1.14.0", Platform::Metal, Arch::Amd64, "talos.platform=metal console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"),
            ("1.14.0", Platform::Metal, Arch::Arm64, "talos.platform=metal console=ttyAMA0 console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"),
            ("1.14.0", Platform::Aws, Arch::Amd64, aws_114),
            ("1.14.0", Platform::Aws, Arch::Arm64, aws_114),
        ];
        for (version, platform, arch, want) in cases {
            let got = talos(v(version), platform, arch, None, &Cmdline::new()).unwrap().to_string();
            assert_eq!(got, want, "{platform:?} {version} {arch:?}");
        }
    }

    /// talos v1.14.0-rc.1 `pkg/machinery/kernel/kernel_test.go` `TestDefaultKernelArgs`: the
    /// defaults alone, for 1.9.0, 1.12.0, 1.13.0 and 1.14.0 (its "latest").
    #[test]
    fn default_args_match_talos_kernel_test() {
        let cases = [
            ("1.9.0", "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"),
            ("1.12.0", "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1"),
            ("1.13.0", "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"),
            ("1.14.0", "slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"),
        ];
        for (version, want) in cases {
            assert_eq!(default_args(v(version)).to_string(), want, "{version}");
        }
    }

    /// siderolabs/image-factory `internal/integration/download_test.go`: the aws base string with
    /// the 1.10 quirks applied (`selinux=1` added), and `expectedAWSCmdline` of its installer case.
    #[test]
    fn aws_matches_image_factory() {
        let want = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1";
        for arch in [Arch::Arm64, Arch::Amd64] {
            let got = talos(v("v1.10.5"), Platform::Aws, arch, None, &Cmdline::new()).unwrap();
            assert_eq!(got.to_string(), want);
        }
        let got = talos(v("1.11.3"), Platform::Aws, Arch::Arm64, None, &Cmdline::new()).unwrap();
        assert_eq!(
            got.to_string(),
            "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
        );
    }

    /// The Raspberry Pi overlay's arguments replace the platform consoles before the defaults
    /// (TALOS-FORMATS.md "Kernel command line").
    #[test]
    fn rpi_generic_overlay() {
        let got = talos(v("1.10.5"), Platform::Metal, Arch::Arm64, Some(Overlay::RpiGeneric), &Cmdline::new()).unwrap();
        assert_eq!(
            got.to_string(),
            "talos.platform=metal console=tty0 console=ttyAMA0,115200 sysctl.kernel.kexec_load_disabled=1 talos.dashboard.disabled=1 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512 selinux=1"
        );
        assert!(matches!(
            talos(v("1.10.5"), Platform::Aws, Arch::Arm64, Some(Overlay::RpiGeneric), &Cmdline::new()),
            Err(PresetError::OverlayMismatch { .. })
        ));
        // No golden string upstream for the overlay past 1.10: the same merge over each
        // version's defaults, the overlay's console replacing the platform's in place.
        let head = "talos.platform=metal console=tty0 console=ttyAMA0,115200 sysctl.kernel.kexec_load_disabled=1 talos.dashboard.disabled=1";
        for version in ["1.11.6", "1.12.11", "1.13.9", "1.14.0"] {
            let got =
                talos(v(version), Platform::Metal, Arch::Arm64, Some(Overlay::RpiGeneric), &Cmdline::new()).unwrap();
            assert_eq!(got.to_string(), format!("{head} {}", default_args(v(version))), "{version}");
        }
    }

    /// image-factory "extra metal" (`nolapic nomodeset` appended) and Talos's overwrite/negation.
    #[test]
    fn extra_kernel_args() {
        let extra = Cmdline::parse("nolapic nomodeset").unwrap();
        let got = talos(v("1.10.5"), Platform::Metal, Arch::Amd64, None, &extra).unwrap();
        assert!(got.to_string().ends_with(" ima_hash=sha512 selinux=1 nolapic nomodeset"), "{got}");

        let extra = Cmdline::parse("console=ttyS0,115200 -selinux -ima_hash=sha512 talos.platform=aws").unwrap();
        let got = talos(v("1.10.5"), Platform::Metal, Arch::Arm64, None, &extra).unwrap();
        assert_eq!(
            got.to_string(),
            "talos.platform=aws console=ttyS0,115200 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(v("v1.10.5"), TalosVersion::new(1, 10, 5));
        assert_eq!(v("1.11.0-alpha.1"), TalosVersion::new(1, 11, 0));
        assert_eq!(v("1.11"), TalosVersion::new(1, 11, 0));
        for bad in ["", "1", "x.y.z", "1.10.5.1", "1..5", "v"] {
            assert!(bad.parse::<TalosVersion>().is_err(), "{bad:?}");
        }
        for unsupported in ["1.6.7", "1.15.0", "2.0.0"] {
            let err = talos(v(unsupported), Platform::Metal, Arch::Arm64, None, &Cmdline::new()).unwrap_err();
            assert!(matches!(err, PresetError::UnsupportedVersion(_)));
            assert!(err.to_string().ends_with("kernel arguments are known for v1.7.0 up to v1.14.x"), "{err}");
        }
        // 1.12 (no golden string upstream): the 1.11 line with module.sig_enforce=1.
        assert!(metal("1.12.11", Arch::Arm64).ends_with(" selinux=1 module.sig_enforce=1"));
        // The 1.11 pre-releases lost IMA with the final release: quirks ignore pre-release tags.
        assert!(!metal("1.11.0-beta.0", Arch::Arm64).contains("ima_"));
    }
}
