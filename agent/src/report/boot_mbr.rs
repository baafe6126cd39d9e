//! The boot disk's hybrid MBR, watched by `report` from inside Talos on board images.
//!
//! A moonboot Raspberry Pi CM3 image boots only while MBR slot 1 is the FAT partition
//! ([`boot_artifact::hybrid_mbr`]); Talos rewrites that slot whenever it writes the GPT
//! (go-blockdevice v2 `partitioning/gpt/gpt.go` `writePMBR`). `imager build --board rpi-cm3`
//! puts [`kernel_args::MBR`]`=`[`kernel_args::MBR_REPAIR`] on the image's kernel command line;
//! only then does `report` touch the disk ([`Request`]). It finds the boot disk and checks,
//! repairs or refuses it with [`crate::mbr`] (the code `talos-agent mbr` runs: one
//! implementation), and puts the outcome in every report ([`BootMbr`]).
//!
//! When: at start and then on every report cycle (`--interval`, 2 s by default). Talos may write
//! the GPT at any time while it runs (creating or growing a volume:
//! `internal/app/machined/pkg/controllers/block/internal/volumes/partition.go`, `grow.go`), and
//! the board only fails at its next power-up, so the repair must follow the write before power
//! is lost. A check is cheap enough to run every cycle: a read-only open under a shared `flock`,
//! LBA 0 and the GPT headers and entries (about 17 KiB at each end of the disk, from the page
//! cache), no write and no udev event unless slot 1 has to be restored ([`crate::mbr`] module
//! docs). A less frequent check would leave the board unbootable for longer and save nothing
//! measurable.
//!
//! How the extension service reaches the disk: see `extensions/talos-agent/talos-agent.yaml`.

use std::path::PathBuf;

use boot_artifact::artifact::kernel_args;
use boot_artifact::hybrid_mbr::MbrError;

use super::schema::{BootMbr, BootMbrState};
use crate::mbr;

/// What the kernel command line asks `report` to do with the boot disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No [`kernel_args::MBR`]: never touch the disk.
    Off,
    /// [`kernel_args::MBR`]`=`[`kernel_args::MBR_REPAIR`]: check, repair what Talos clobbered,
    /// refuse anything else.
    Repair,
    /// Another value (kept to report it): the disk is not touched.
    Unknown(String),
}

impl Request {
    /// Reads [`kernel_args::MBR`] from a kernel command line (its last value wins, as for the
    /// other `talos_agent.` arguments). Only the kernel command line can ask for this: it is a
    /// property of the board image, not of a node's configuration.
    pub fn from_cmdline(cmdline: &str) -> Request {
        let Ok(line) = kernel_cmdline::Cmdline::parse(cmdline.trim()) else { return Request::Off };
        match line.values(kernel_args::MBR).last() {
            None => Request::Off,
            Some(Some(v)) if v == kernel_args::MBR_REPAIR => Request::Repair,
            Some(v) => Request::Unknown(v.unwrap_or_default().to_string()),
        }
    }
}

/// Which disk to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// `report --boot-disk PATH`.
    Given(PathBuf),
    /// Found among the whole disks listed under this directory (`/sys/block`), as
    /// [`mbr::find_and_check`] finds it.
    Find(PathBuf),
}

/// The watch: the request, the disk, and what earlier checks found.
#[derive(Debug)]
pub struct Watch {
    request: Request,
    disk: Disk,
    repairs: u64,
    last_repair: Option<String>,
    last: Option<BootMbr>,
}

impl Watch {
    /// A watch that has checked nothing yet.
    pub fn new(request: Request, disk: Disk) -> Watch {
        Watch { request, disk, repairs: 0, last_repair: None, last: None }
    }

    /// Checks (and repairs) once when asked to, and returns the report's [`BootMbr`]. Blocking
    /// I/O. Logs a line when the outcome changes.
    pub fn check(&mut self) -> BootMbr {
        let now = match &self.request {
            Request::Off => not_checked(format!(
                "{}={} is not on the kernel command line",
                kernel_args::MBR,
                kernel_args::MBR_REPAIR
            )),
            Request::Unknown(v) => not_checked(format!(
                "{}={v:?} is not {:?}: the disk was not touched",
                kernel_args::MBR,
                kernel_args::MBR_REPAIR
            )),
            Request::Repair => {
                let result = match &self.disk {
                    Disk::Given(p) => mbr::check_disk(p, true),
                    Disk::Find(sys_block) => mbr::find_and_check(sys_block, true),
                };
                self.record(result)
            }
        };
        if self.last.as_ref() != Some(&now) {
            let disk = now.disk.as_deref().unwrap_or("boot disk");
            let detail = now.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            match now.state {
                BootMbrState::NotChecked => tracing::info!("{disk}: hybrid MBR not checked{detail}"),
                BootMbrState::Intact | BootMbrState::Repaired => {
                    tracing::info!("{disk}: hybrid MBR {}{detail} (repairs: {})", now.state, now.repairs)
                }
                BootMbrState::Refused | BootMbrState::Error => {
                    tracing::warn!("{disk}: hybrid MBR {}{detail}", now.state)
                }
            }
            self.last = Some(now.clone());
        }
        now
    }

    /// The decision: one result of [`mbr::check_disk`] or [`mbr::find_and_check`] (with
    /// repair) and what earlier checks found → what the report says.
    ///
    /// - restored now: `repaired`, counted;
    /// - intact: `intact`, or `repaired` (with the last repair's detail) when this agent repaired
    ///   it before, so the report keeps saying that Talos rewrote it;
    /// - a disk moonboot did not write, or no candidate that is moonboot's: `refused` (nothing
    ///   was written);
    /// - a disk that could not be opened, read, locked or written (or no candidate that could be
    ///   examined): `error`.
    pub fn record(&mut self, result: Result<mbr::Outcome, mbr::Error>) -> BootMbr {
        let at = |state, disk: String, detail| BootMbr { state, disk: Some(disk), detail, repairs: self.repairs };
        match result {
            Ok(o) if o.state == "repaired" => {
                self.repairs += 1;
                self.last_repair = o.detail.clone();
                BootMbr { state: BootMbrState::Repaired, disk: Some(o.disk), detail: o.detail, repairs: self.repairs }
            }
            Ok(o) if self.repairs > 0 => at(BootMbrState::Repaired, o.disk, self.last_repair.clone()),
            Ok(o) => at(BootMbrState::Intact, o.disk, None),
            Err(mbr::Error::Refused { disk, source: e @ (MbrError::Io { .. } | MbrError::NotPersisted(_)) }) => {
                at(BootMbrState::Error, disk, Some(e.to_string()))
            }
            Err(mbr::Error::Refused { disk, source }) => at(BootMbrState::Refused, disk, Some(source.to_string())),
            Err(mbr::Error::NotFound(skipped)) => {
                let state = if !skipped.is_empty() && skipped.iter().all(|s| !s.unreadable) {
                    BootMbrState::Refused
                } else {
                    BootMbrState::Error
                };
                let detail = format!("no moonboot Raspberry Pi disk among {}", mbr::Skipped::list(&skipped));
                BootMbr { state, disk: None, detail: Some(detail), repairs: self.repairs }
            }
            Err(e @ (mbr::Error::Io { .. } | mbr::Error::Busy { .. } | mbr::Error::Clobbered { .. })) => {
                BootMbr { state: BootMbrState::Error, disk: None, detail: Some(e.to_string()), repairs: self.repairs }
            }
        }
    }
}

fn not_checked(why: String) -> BootMbr {
    BootMbr { state: BootMbrState::NotChecked, disk: None, detail: Some(why), repairs: 0 }
}

#[cfg(test)]
mod tests {
    use super::super::test_disk::{clobber, disk_image, lba0, write_lba0, SECTORS};
    use super::*;
    use boot_artifact::hybrid_mbr;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("talos-agent-boot-mbr-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_the_kernel_command_line_asks() {
        assert_eq!(Request::from_cmdline("console=ttyAMA0 talos_agent.report=http://x/v1/report\n"), Request::Off);
        assert_eq!(Request::from_cmdline("talos_agent.mbr=repair quiet"), Request::Repair);
        assert_eq!(Request::from_cmdline("talos_agent.mbr=check talos_agent.mbr=repair"), Request::Repair);
        assert_eq!(Request::from_cmdline("talos_agent.mbr=Repair"), Request::Unknown("Repair".into()));
        assert_eq!(Request::from_cmdline("talos_agent.mbr"), Request::Unknown(String::new()));
        let dir = tmp("off");
        let disk = dir.join("disk.raw");
        disk_image(&disk, "EFI");
        let clobbered = clobber(&disk);
        for r in [Request::Off, Request::Unknown("check".into())] {
            let m = Watch::new(r, Disk::Given(disk.clone())).check();
            assert_eq!((m.state, m.disk.as_deref()), (BootMbrState::NotChecked, None), "{m:?}");
            assert_eq!(lba0(&disk), clobbered, "the disk was touched without talos_agent.mbr=repair");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn repairs_what_talos_clobbered_and_keeps_saying_so() {
        let dir = tmp("repair");
        let disk = dir.join("disk.raw");
        let written = disk_image(&disk, "EFI");
        let mut w = Watch::new(Request::Repair, Disk::Given(disk.clone()));
        let m = w.check();
        assert_eq!((m.state, m.repairs, m.detail.as_deref()), (BootMbrState::Intact, 0, None), "{m:?}");
        assert_eq!(m.disk.as_deref(), Some(disk.to_str().unwrap()));

        let clobbered = clobber(&disk);
        assert_ne!(clobbered, written);
        let m = w.check();
        assert_eq!((m.state, m.repairs), (BootMbrState::Repaired, 1), "{m:?}");
        assert!(m.detail.as_deref().unwrap().contains("type 0xEE"), "{m:?}");
        assert_eq!(lba0(&disk), written, "LBA 0 is not what the imager wrote");

        // Intact again: still `repaired`, and the same report (no new content to send).
        assert_eq!(w.check(), m);
        // Talos writes the table again: a second repair.
        clobber(&disk);
        assert_eq!(w.check().repairs, 2);
        assert_eq!(lba0(&disk), written);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_moonboot_did_not_write_and_never_writes() {
        let dir = tmp("refuse");
        // A GPT whose partition 1 is not moonboot's `EFI`.
        let other = dir.join("other.raw");
        disk_image(&other, "BOOT");
        let before = clobber(&other);
        let m = Watch::new(Request::Repair, Disk::Given(other.clone())).check();
        assert_eq!(m.state, BootMbrState::Refused, "{m:?}");
        assert!(m.detail.as_deref().unwrap().contains("not an EFI System Partition named \"EFI\""), "{m:?}");
        assert_eq!(lba0(&other), before, "a refused disk was written");

        // moonboot's GPT under an MBR written for another disk (signature mismatch).
        let foreign = dir.join("foreign.raw");
        let mut b = disk_image(&foreign, "EFI");
        b[440] ^= 0xFF;
        hybrid_mbr::talos_write_pmbr(&mut b, SECTORS - 1, false);
        write_lba0(&foreign, &b);
        let m = Watch::new(Request::Repair, Disk::Given(foreign.clone())).check();
        assert_eq!(m.state, BootMbrState::Refused, "{m:?}");
        assert!(m.detail.as_deref().unwrap().contains("disk signature"), "{m:?}");
        assert_eq!(lba0(&foreign), b);

        // No disk at all, and a disk that cannot be opened: errors, not refusals.
        let m = Watch::new(Request::Repair, Disk::Given(dir.join("missing.raw"))).check();
        assert_eq!(m.state, BootMbrState::Error, "{m:?}");
        let m = Watch::new(Request::Repair, Disk::Find(dir.join("no-sys-block"))).check();
        assert_eq!(
            (m.state, m.detail.as_deref()),
            (BootMbrState::Error, Some("no moonboot Raspberry Pi disk among no block devices"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waits_for_talos_lock_and_checks_after_it() {
        use std::os::fd::AsRawFd;
        let dir = tmp("lock");
        let disk = dir.join("disk.raw");
        let written = disk_image(&disk, "EFI");
        clobber(&disk);
        // Talos holds an exclusive flock while it writes the table; the repair waits for it.
        let holder = std::fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
        // SAFETY: flock on an owned descriptor.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            drop(holder);
        });
        let started = std::time::Instant::now();
        let m = Watch::new(Request::Repair, Disk::Given(disk.clone())).check();
        release.join().unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(300), "did not wait for the lock");
        assert_eq!(m.state, BootMbrState::Repaired, "{m:?}");
        assert_eq!(lba0(&disk), written);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
