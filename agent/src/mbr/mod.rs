//! `talos-agent mbr`: check, and with `--repair` restore, the hybrid MBR of a moonboot Raspberry
//! Pi disk (`imager build --board rpi-cm3`) after Talos rewrote its slot 1.
//!
//! Talos rewrites MBR slot 1 as a GPT protective entry whenever it writes the partition table
//! (go-blockdevice v2 `partitioning/gpt/gpt.go` `writePMBR`); the BCM2837 boot ROM then finds no
//! FAT partition and the board no longer boots. The rules of what moonboot wrote, and therefore
//! what is restored or refused, are [`boot_artifact::hybrid_mbr`]'s.
//!
//! This module is the one implementation of finding and checking the boot disk: `talos-agent
//! mbr` runs it once, `talos-agent report` on every report cycle when the kernel command line
//! says `talos_agent.mbr=repair` (`report::boot_mbr`).
//!
//! How the disk is touched, so that it never races Talos and never wakes udev for nothing:
//! - It is opened **read-only** for the check, under a shared `flock`, and re-opened read-write
//!   under an exclusive `flock` only when slot 1 must be restored; [`hybrid_mbr::repair`] checks
//!   again under that lock before it writes. Talos holds an exclusive `flock` on the whole disk
//!   while it writes the GPT (go-blockdevice v2 `block/device_linux.go` `Device.lock`; Talos
//!   v1.10.5 `internal/app/machined/pkg/controllers/block/internal/volumes/partition.go`
//!   `CreatePartition` and `grow.go` take it with `RetryLockWithTimeout(ctx, true, 10s)`) and a
//!   shared one to read it (`volumes/disk.go` `TryLock(false)`), so a check never reads a
//!   half-written table and a repair never lands between Talos's read and write of LBA 0.
//! - A read-only open and close makes no `IN_CLOSE_WRITE` event, so the periodic check does not
//!   make udev (which watches whole disks, systemd `rules.d/60-block.rules` `OPTIONS+="watch"`)
//!   re-probe the disk every cycle; only an actual repair does.
//!
//! Exit codes: 0 intact, or repaired with `--repair`; 1 slot 1 clobbered by Talos and not
//! repaired (no `--repair`); 2 not a moonboot Raspberry Pi disk, or none found (nothing written);
//! 3 the disk could not be read or written, or stayed locked for [`LOCK_WAIT`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// No disk given and none of the candidates is a moonboot Raspberry Pi disk.
    #[error("no moonboot Raspberry Pi disk among {} (give --disk)", Skipped::list(.0))]
    NotFound(Vec<Skipped>),
    /// Another process held the disk's `flock` (Talos writing its partition table) for
    /// [`LOCK_WAIT`].
    #[error("{disk}: locked by another writer of its partition table for {} s", LOCK_WAIT.as_secs())]
    Busy {
        /// The disk.
        disk: String,
    },
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
            Error::Refused { source: MbrError::Io { .. }, .. } | Error::Io { .. } | Error::Busy { .. } => 3,
            Error::Refused { .. } | Error::NotFound(_) => 2,
        }
    }
}

/// A candidate disk [`find_and_check`] passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The disk.
    pub disk: String,
    /// Why it is not the boot disk, or could not be examined.
    pub reason: String,
    /// Whether it could not be examined (opened, read, locked), rather than examined and found
    /// not to be moonboot's.
    pub unreadable: bool,
}

impl Skipped {
    /// `disk (reason), disk (reason)`, or `no block devices`.
    pub fn list(all: &[Skipped]) -> String {
        if all.is_empty() {
            return "no block devices".into();
        }
        all.iter().map(|s| format!("{} ({})", s.disk, s.reason)).collect::<Vec<_>>().join(", ")
    }
}

/// How long a check waits for a `flock` another process holds on the disk. Talos gives up on
/// its own partition table locks after 10 s (module docs).
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Opens `disk` read-only with a shared `flock`, or read-write with an exclusive one, waiting up
/// to [`LOCK_WAIT`] for another holder (module docs). The lock goes with the file.
fn open_locked(disk: &Path, write: bool) -> Result<File, Error> {
    let name = || disk.display().to_string();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(disk)
        .map_err(|source| Error::Io { disk: name(), source })?;
    let op = if write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(f);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Some(libc::EWOULDBLOCK) => return Err(Error::Busy { disk: name() }),
            _ => return Err(Error::Io { disk: name(), source: err }),
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

/// Checks (and with `repair` restores) one disk: read-only under a shared lock, and read-write
/// under an exclusive lock only when slot 1 must be restored (module docs).
///
/// # Errors
/// [`Error::Clobbered`] when not repairing, [`Error::Refused`], [`Error::Io`], [`Error::Busy`].
pub fn check_disk(disk: &Path, repair: bool) -> Result<Outcome, Error> {
    let name = disk.display().to_string();
    let refused = |source| Error::Refused { disk: name.clone(), source };
    let intact = || Outcome { disk: name.clone(), state: "intact".into(), detail: None };
    let report = hybrid_mbr::check(&mut open_locked(disk, false)?).map_err(refused)?;
    match (report.state, repair) {
        (State::Intact, _) => Ok(intact()),
        (State::ClobberedByTalos, false) => Err(Error::Clobbered { disk: name, slot: report.slots[0] }),
        (State::ClobberedByTalos, true) => {
            let mut f = open_locked(disk, true)?;
            // Checks again under the exclusive lock, then writes slot 1 only.
            let before = hybrid_mbr::repair(&mut f).map_err(refused)?;
            if before.state == State::Intact {
                return Ok(intact());
            }
            f.sync_all().map_err(|source| Error::Io { disk: name.clone(), source })?;
            Ok(Outcome {
                disk: name,
                state: "repaired".into(),
                detail: Some(format!("slot 1 was {}", before.slots[0])),
            })
        }
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

/// Finds the boot disk among [`candidates`] and checks (or repairs) it. A candidate that cannot
/// be opened, read or locked, or that holds no GPT, another GPT or no MBR, is passed over; the
/// first that is moonboot's decides (a moonboot GPT under an MBR moonboot did not write is
/// [`Error::Refused`], not passed over).
///
/// # Errors
/// As [`check_disk`]; [`Error::NotFound`] with every candidate and why it was passed over.
pub fn find_and_check(sys_block: &Path, repair: bool) -> Result<Outcome, Error> {
    let mut skipped = Vec::new();
    for d in candidates(sys_block) {
        let (reason, unreadable) = match check_disk(&d, repair) {
            Err(Error::Refused {
                source: e @ (MbrError::Gpt(_) | MbrError::NotOurGpt { .. } | MbrError::NoSignature),
                ..
            }) => (e.to_string(), false),
            Err(Error::Refused { source: e @ MbrError::Io { .. }, .. }) => (e.to_string(), true),
            Err(Error::Io { source, .. }) => (source.to_string(), true),
            Err(Error::Busy { .. }) => (format!("locked by another writer for {} s", LOCK_WAIT.as_secs()), true),
            other => return other,
        };
        skipped.push(Skipped { disk: d.display().to_string(), reason, unreadable });
    }
    Err(Error::NotFound(skipped))
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
