//! `/proc/iomem`: which physical memory the next kernel's segments may be placed in.
//!
//! Each line is `START-END : NAME` with START and END inclusive hexadecimal physical addresses,
//! indented by two spaces per nesting level (kernel/resource.c, `r_show`). Addresses read as 0
//! unless the reader has CAP_SYS_ADMIN (`iomem_is_exclusive`/`r_show` hides them).
//!
//! Usable memory follows kexec-tools' arm64 rule (kexec/arch/arm64/kexec-arm64.c,
//! `get_memory_ranges` and `to_be_excluded`): every top-level `System RAM` range, minus every range
//! nested in it that is not `Kernel code`, `Kernel data` or `System RAM` (so `reserved` — firmware
//! tables, the EFI memory map, the running kernel's memblock reservations — and `Crash kernel`
//! are never overwritten). The running kernel's own code and data may be overwritten: kexec
//! copies the segments into place only after it has stopped (kernel/kexec_core.c).

use std::ops::RangeInclusive;
use thiserror::Error;

/// Why `/proc/iomem` text could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IomemError {
    /// A line is not `START-END : NAME`.
    #[error("/proc/iomem line {line}: cannot parse {text:?}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// Every address reads as 0: the reader lacks CAP_SYS_ADMIN.
    #[error("/proc/iomem shows no addresses (all zero): reading it needs root")]
    Hidden,
    /// No `System RAM` range at all.
    #[error("/proc/iomem lists no System RAM")]
    NoRam,
}

/// One `/proc/iomem` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Nesting level (0 = top level).
    pub depth: usize,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
    /// Name (`System RAM`, `Kernel code`, `reserved`, a device).
    pub name: String,
}

/// Parses `/proc/iomem` text.
///
/// # Errors
/// [`IomemError::Parse`] for a malformed line.
pub fn parse(text: &str) -> Result<Vec<Resource>, IomemError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let err = || IomemError::Parse { line: i + 1, text: raw.to_string() };
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let (range, name) = raw.trim_start().split_once(" : ").ok_or_else(err)?;
        let (s, e) = range.split_once('-').ok_or_else(err)?;
        let start = u64::from_str_radix(s, 16).map_err(|_| err())?;
        let end = u64::from_str_radix(e, 16).map_err(|_| err())?;
        if end < start {
            return Err(err());
        }
        out.push(Resource { depth: indent / 2, start, end, name: name.trim_end().to_string() });
    }
    Ok(out)
}

/// Names nested in System RAM that may be overwritten.
fn overwritable(name: &str) -> bool {
    matches!(name, "System RAM" | "Kernel code" | "Kernel data")
}

/// Subtracts `cut` from every range in `ranges`.
fn subtract(ranges: Vec<RangeInclusive<u64>>, cut: &RangeInclusive<u64>) -> Vec<RangeInclusive<u64>> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges {
        if cut.end() < r.start() || cut.start() > r.end() {
            out.push(r);
            continue;
        }
        if cut.start() > r.start() {
            out.push(*r.start()..=cut.start() - 1);
        }
        if cut.end() < r.end() {
            out.push(cut.end() + 1..=*r.end());
        }
    }
    out
}

/// The usable RAM ranges (inclusive, sorted, disjoint) described in the module documentation.
///
/// # Errors
/// [`IomemError::Hidden`] when all addresses are 0, [`IomemError::NoRam`] when there is no
/// top-level `System RAM`.
pub fn usable_ram(resources: &[Resource]) -> Result<Vec<RangeInclusive<u64>>, IomemError> {
    if !resources.is_empty() && resources.iter().all(|r| r.start == 0 && r.end == 0) {
        return Err(IomemError::Hidden);
    }
    let mut ram: Vec<RangeInclusive<u64>> =
        resources.iter().filter(|r| r.depth == 0 && r.name == "System RAM").map(|r| r.start..=r.end).collect();
    if ram.is_empty() {
        return Err(IomemError::NoRam);
    }
    // Everything nested below a top-level System RAM entry that is not overwritable is cut out.
    let mut in_ram = false;
    for r in resources {
        if r.depth == 0 {
            in_ram = r.name == "System RAM";
            continue;
        }
        if in_ram && !overwritable(&r.name) {
            ram = subtract(ram, &(r.start..=r.end));
        }
    }
    ram.sort_by_key(|r| *r.start());
    Ok(ram)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Modelled on `/proc/iomem` of an arm64 kernel under `qemu-system-aarch64 -M virt -m 1536`
    /// (direct kernel boot, no UEFI): devices, one System RAM range with the kernel's code and
    /// data and memblock `reserved` regions nested in it (addresses illustrative).
    const QEMU_VIRT: &str = "\
00000000-03ffffff : LNRO0015:00
04000000-07ffffff : LNRO0015:01
09000000-09000fff : pl011@9000000
  09000000-09000fff : 9000000.pl011 pl011@9000000
09010000-09010fff : pl031@9010000
  09010000-09010fff : rtc-pl031
0a003e00-0a003fff : a003e00.virtio_mmio
10000000-3efeffff : pcie@10000000
40000000-9fffffff : System RAM
  40210000-4163ffff : Kernel code
  41640000-41ccffff : reserved
  41cd0000-4201ffff : Kernel data
  48000000-480fffff : reserved
  9d600000-9fffffff : reserved
4010000000-401fffffff : PCI ECAM
8000000000-ffffffffff : pcie@10000000
";

    #[test]
    fn parses_levels_and_names() {
        let r = parse(QEMU_VIRT).unwrap();
        assert_eq!(r[0], Resource { depth: 0, start: 0, end: 0x3ff_ffff, name: "LNRO0015:00".into() });
        assert_eq!(
            r[3],
            Resource { depth: 1, start: 0x900_0000, end: 0x900_0fff, name: "9000000.pl011 pl011@9000000".into() }
        );
        assert!(parse("zz-1 : x").is_err());
        assert!(parse("10-1 : x").is_err());
    }

    #[test]
    fn cuts_reserved_out_of_system_ram() {
        let ram = usable_ram(&parse(QEMU_VIRT).unwrap()).unwrap();
        assert_eq!(ram, vec![0x4000_0000..=0x4163_ffff, 0x41cd_0000..=0x47ff_ffff, 0x4810_0000..=0x9d5f_ffff,]);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let text = "00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n";
        assert_eq!(usable_ram(&parse(text).unwrap()), Err(IomemError::Hidden));
        assert_eq!(usable_ram(&parse("00001000-00001fff : pcie\n").unwrap()), Err(IomemError::NoRam));
    }

    #[test]
    fn several_ram_ranges_and_crash_kernel() {
        // Shape of an EC2 Graviton (UEFI + ACPI) machine: RAM split by firmware, a crash kernel.
        let text = "\
40000000-4fffffff : System RAM
  40000000-4000ffff : reserved
  48000000-4bffffff : Crash kernel
50000000-7fffffff : System RAM
  7ff00000-7fffffff : reserved
";
        let ram = usable_ram(&parse(text).unwrap()).unwrap();
        assert_eq!(ram, vec![0x4001_0000..=0x47ff_ffff, 0x4c00_0000..=0x4fff_ffff, 0x5000_0000..=0x7fef_ffff]);
    }
}
