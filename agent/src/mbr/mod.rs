//! `talos-agent mbr`: check, and with `--repair` restore, the hybrid MBR of a moonboot Raspberry
//! Pi disk (`imager build --board rpi-cm3`) after Talos rewrote its slot 1.
//!
//! Talos rewrites MBR slot 1 as a GPT protective entry whenever it writes the partition table
//! (go-blockdevice v2 `partitioning/gpt/gpt.go` `writePMBR`); the BCM2837 boot ROM then finds no
//! FAT partition and the board no longer boots. The rules of what moonboot wrote, and therefore
//! what is restored or refused, are [`boot_artifact::hybrid_mbr`]'s.
//!
//! Exit codes: 0 intact, or repaired with `--repair`; 1 slot 1 clobbered by Talos and not
//! repaired (no `--repair`); 2 not a moonboot Raspberry Pi disk, or none found (nothing written);
//! 3 the disk could not be read or written.

use std::path::{Path, PathBuf};

use boot_artifact::hybrid_mbr::{self, MbrError, State};

/// `talos-agent mbr` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The boot disk. Default: the first of /dev/mmcblk*, /dev/sd*, /dev/nvme*n*, /dev/vd* (from
    /// /sys/block) that holds a moonboot Raspberry Pi layout.
    #[arg(long, value_name = "PATH")]
    pub disk: Option<PathBuf>,
    /// Restore MBR slot 1 (FAT32 0x0C, bootable, over GPT partition 1) when Talos rewrote it;
    /// writes those 16 bytes only, and only when every other MBR and GPT field is moonboot's.
    #[arg(long)]
    pub repair: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where block devices are listed, for tests.
    #[arg(long, value_name = "DIR", default_value = "/sys/block", hide = true)]
    pub sys_block: PathBuf,
}

/// Why `mbr` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Slot 1 was clobbered and `--repair` was not given.
    #[error(
        "{disk}: MBR slot 1 was rewritten by Talos ({slot}): the boot ROM will not find the FAT; run with --repair"
    )]
    Clobbered {
        /// The disk.
        disk: String,
        /// What slot 1 holds.
        slot: hybrid_mbr::Slot,
    },
    /// The disk is not a moonboot Raspberry Pi disk.
    #[error("{disk}: {source}")]
    Refused {
        /// The disk.
        disk: String,
        /// The rule it breaks.
        source: MbrError,
    },
    /// No disk given and none found.
    #[error("no moonboot Raspberry Pi disk among {0} (give --disk)")]
    NotFound(String),
    /// The disk could not be opened, read or written.
    #[error("{disk}: {source}")]
    Io {
        /// The disk.
        disk: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// The documented exit code (module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Clobbered { .. } => 1,
            Error::Refused { source: MbrError::Io { .. }, .. } | Error::Io { .. } => 3,
            Error::Refused { .. } | Error::NotFound(_) => 2,
        }
    }
}

/// What a check or repair found, as `--json` prints it and `report` sends it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The disk.
    pub disk: String,
    /// `intact`, `repaired`, `clobbered_by_talos` (not repaired) or `refused`.
    pub state: String,
    /// Why, for `refused`; what slot 1 held, for `repaired`/`clobbered_by_talos`.
    pub detail: Option<String>,
}

/// Checks (and with `repair` restores) one disk.
///
/// # Errors
/// [`Error::Clobbered`] when not repairing, [`Error::Refused`], [`Error::Io`].
pub fn check_disk(disk: &Path, repair: bool) -> Result<Outcome, Error> {
    let name = disk.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(repair)
        .open(disk)
        .map_err(|source| Error::Io { disk: name.clone(), source })?;
    let refused = |source| Error::Refused { disk: name.clone(), source };
    let report = if repair { hybrid_mbr::repair(&mut f) } else { hybrid_mbr::check(&mut f) }.map_err(refused)?;
    match (report.state, repair) {
        (State::Intact, _) => Ok(Outcome { disk: name, state: "intact".into(), detail: None }),
        (State::ClobberedByTalos, true) => {
            f.sync_all().map_err(|source| Error::Io { disk: name.clone(), source })?;
            Ok(Outcome {
                disk: name,
                state: "repaired".into(),
                detail: Some(format!("slot 1 was {}", report.slots[0])),
            })
        }
        (State::ClobberedByTalos, false) => Err(Error::Clobbered { disk: name, slot: report.slots[0] }),
    }
}

/// The whole disks under `sys_block` whose names a Raspberry Pi's boot disk may have, sorted.
pub fn candidates(sys_block: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(sys_block) else { return Vec::new() };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let nvme = n.starts_with("nvme") && n.contains('n') && !n.contains('p');
            let mmc = n.starts_with("mmcblk") && !n.contains('p') && !n.contains("boot") && !n.contains("rpmb");
            mmc || nvme || (n.starts_with("sd") || n.starts_with("vd")) && n.len() == 3
        })
        .collect();
    v.sort();
    v.into_iter().map(|n| PathBuf::from("/dev").join(n)).collect()
}

/// Finds the boot disk among [`candidates`] and checks (or repairs) it.
///
/// # Errors
/// As [`check_disk`]; [`Error::NotFound`] when no candidate is a moonboot disk.
pub fn find_and_check(sys_block: &Path, repair: bool) -> Result<Outcome, Error> {
    let all = candidates(sys_block);
    for d in &all {
        match check_disk(d, repair) {
            Err(Error::Refused {
                source: MbrError::Gpt(_) | MbrError::NotOurGpt { .. } | MbrError::NoSignature,
                ..
            })
            | Err(Error::Io { .. }) => continue,
            other => return other,
        }
    }
    let names: Vec<String> = all.iter().map(|p| p.display().to_string()).collect();
    Err(Error::NotFound(if names.is_empty() { "no block devices".into() } else { names.join(", ") }))
}

/// Runs `talos-agent mbr`.
///
/// # Errors
/// [`Error`], with its exit code.
pub fn run(args: Args) -> Result<(), Error> {
    let result = match &args.disk {
        Some(d) => check_disk(d, args.repair),
        None => find_and_check(&args.sys_block, args.repair),
    };
    let outcome = match &result {
        Ok(o) => o.clone(),
        Err(e @ Error::Clobbered { disk, .. }) => {
            Outcome { disk: disk.clone(), state: "clobbered_by_talos".into(), detail: Some(e.to_string()) }
        }
        Err(e @ Error::Refused { disk, .. }) => {
            Outcome { disk: disk.clone(), state: "refused".into(), detail: Some(e.to_string()) }
        }
        Err(_) => return result.map(|_| ()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&outcome).expect("plain strings"));
    } else if result.is_ok() {
        tracing::info!(
            "{}: hybrid MBR {}{}",
            outcome.disk,
            outcome.state,
            outcome.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    result.map(|_| ())
}
