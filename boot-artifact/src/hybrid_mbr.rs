//! The Raspberry Pi hybrid MBR: written by `imager build --board rpi-cm3`, checked and restored by
//! `talos-agent mbr` and at the start of `talos-agent report`.
//!
//! Why it exists:
//! - The BCM2837 boot ROM (Pi 3, CM3) reads `bootcode.bin` only from a FAT partition named by
//!   **MBR slot 1** with type 0x0B or 0x0C; it does not understand GPT or type 0xEF
//!   (raspberrypi/documentation#1291, raspberrypi/firmware#1711).
//! - Talos needs a GPT. The layout that serves both is a hybrid MBR: slot 1 = the FAT boot
//!   partition (bootable, 0x0C), slot 2 = 0xEE from LBA 1 up to the sector before it, so that
//!   GPT readers see a protective entry starting at LBA 1 (raspberrypi/firmware#1457, #1465;
//!   Linux `block/partitions/efi.c` `is_pmbr_valid` accepts 0xEE in any slot when it starts at
//!   LBA 1; U-Boot `disk/part_efi.c` `is_pmbr_valid` likewise).
//! - Talos rewrites slot 1 whenever it writes the GPT: go-blockdevice v2
//!   `partitioning/gpt/gpt.go` `writePMBR()` reads LBA 0, sets bytes 510–511 to 55 AA and slot 1
//!   to status 0x00 (0x80 with `MarkPMBRBootable`), CHS start 00 02 00, type 0xEE, CHS end FF FF
//!   FF, first LBA 1, size = the disk's last LBA capped at 0xFFFFFFFF, and keeps everything else
//!   (boot code, disk signature, slots 2–4). [`talos_write_pmbr`] does exactly that, for tests.
//!
//! What moonboot writes, and what [`check`] therefore accepts as its own:
//! - GPT partition 1 is an EFI System Partition named `EFI` (the FAT the firmware reads);
//! - MBR slot 1 = status 0x80, type 0x0C, over exactly partition 1's LBAs;
//! - MBR slot 2 = status 0x00, type 0xEE, LBA 1 up to partition 1's first LBA − 1; slots 3, 4 empty;
//! - the MBR disk signature (bytes 440–443) = the first 4 bytes of the GPT disk GUID as stored
//!   on disk, which ties this MBR to this GPT (`writePMBR` leaves those bytes alone).

use std::io::{Read, Seek, SeekFrom, Write};

/// Logical sector size in bytes (eMMC and SD cards, and every image moonboot writes).
pub const SECTOR: u64 = 512;
/// MBR partition type: FAT32 with LBA addressing.
pub const MBR_FAT32_LBA: u8 = 0x0C;
/// MBR partition type: GPT protective.
pub const MBR_GPT_PROTECTIVE: u8 = 0xEE;
/// MBR status byte of a bootable ("active") entry.
pub const MBR_BOOTABLE: u8 = 0x80;
/// GPT partition name of the FAT boot partition (Talos `pkg/machinery/constants`
/// `EFIPartitionLabel`).
pub const BOOT_PARTITION_NAME: &str = "EFI";

/// Where MBR slot `n` (1-based) starts in LBA 0.
const fn slot_offset(n: usize) -> usize {
    446 + 16 * (n - 1)
}

/// One MBR partition entry, without its CHS fields (nothing here reads them; [`Slot::encode`]
/// derives them from the LBAs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Slot {
    /// Status byte: 0x80 bootable, 0x00 not.
    pub status: u8,
    /// Partition type (0x0C FAT32 LBA, 0xEE GPT protective, 0 empty).
    #[serde(rename = "type")]
    pub kind: u8,
    /// First sector (LBA).
    pub first_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
}

impl Slot {
    /// An empty entry.
    pub const EMPTY: Slot = Slot { status: 0, kind: 0, first_lba: 0, sectors: 0 };

    /// Reads slot `n` (1–4) of an MBR sector.
    pub fn read(mbr: &[u8; 512], n: usize) -> Slot {
        let b = &mbr[slot_offset(n)..slot_offset(n) + 16];
        Slot {
            status: b[0],
            kind: b[4],
            first_lba: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// The 16 bytes of this entry, CHS fields computed from the LBAs with the conventional
    /// 255 heads × 63 sectors geometry (1023/254/63 where the cylinder does not fit), as
    /// `sfdisk` writes them. An empty entry is 16 zero bytes.
    pub fn encode(&self) -> [u8; 16] {
        if *self == Slot::EMPTY {
            return [0; 16];
        }
        let mut b = [0u8; 16];
        b[0] = self.status;
        b[1..4].copy_from_slice(&chs(u64::from(self.first_lba)));
        b[4] = self.kind;
        let last = u64::from(self.first_lba) + u64::from(self.sectors).saturating_sub(1);
        b[5..8].copy_from_slice(&chs(last));
        b[8..12].copy_from_slice(&self.first_lba.to_le_bytes());
        b[12..16].copy_from_slice(&self.sectors.to_le_bytes());
        b
    }

    /// Writes this entry into slot `n` (1–4) of an MBR sector.
    pub fn write(&self, mbr: &mut [u8; 512], n: usize) {
        mbr[slot_offset(n)..slot_offset(n) + 16].copy_from_slice(&self.encode());
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Slot::EMPTY {
            return f.write_str("empty");
        }
        write!(f, "type 0x{:02X} status 0x{:02X} LBA {} +{}", self.kind, self.status, self.first_lba, self.sectors)
    }
}

/// CHS bytes (head, sector | cylinder high bits, cylinder low) of an LBA.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let c = lba / (HEADS * SPT);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / SPT) % HEADS;
    let s = lba % SPT + 1;
    [h as u8, (s as u8) | (((c >> 2) & 0xC0) as u8), (c & 0xFF) as u8]
}

/// The boot partition's sectors, inclusive, as the GPT gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LbaRange {
    /// First LBA.
    pub first: u64,
    /// Last LBA (inclusive).
    pub last: u64,
}

/// Slots 1 and 2 of the hybrid MBR for a FAT boot partition at `boot`.
///
/// # Errors
/// [`MbrError::OutOfReach`] when the partition does not fit the 32-bit fields of an MBR entry or
/// starts at LBA 0 or 1.
pub fn hybrid_slots(boot: LbaRange) -> Result<[Slot; 2], MbrError> {
    let first = u32::try_from(boot.first).ok().filter(|&f| f >= 2);
    let sectors = boot.last.checked_sub(boot.first).and_then(|n| u32::try_from(n + 1).ok());
    let (Some(first), Some(sectors)) = (first, sectors) else {
        return Err(MbrError::OutOfReach { first: boot.first, last: boot.last });
    };
    Ok([
        Slot { status: MBR_BOOTABLE, kind: MBR_FAT32_LBA, first_lba: first, sectors },
        Slot { status: 0, kind: MBR_GPT_PROTECTIVE, first_lba: 1, sectors: first - 1 },
    ])
}

/// Writes moonboot's hybrid MBR into an LBA 0 sector: slots 1–2 from [`hybrid_slots`], slots 3–4
/// empty, the disk signature, and 55 AA. The boot code area (bytes 0–439) is left as it is.
///
/// # Errors
/// As [`hybrid_slots`].
pub fn write_hybrid(mbr: &mut [u8; 512], disk_signature: [u8; 4], boot: LbaRange) -> Result<(), MbrError> {
    let [s1, s2] = hybrid_slots(boot)?;
    mbr[440..444].copy_from_slice(&disk_signature);
    mbr[444..446].copy_from_slice(&[0, 0]);
    s1.write(mbr, 1);
    s2.write(mbr, 2);
    Slot::EMPTY.write(mbr, 3);
    Slot::EMPTY.write(mbr, 4);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    Ok(())
}

/// What Talos's `writePMBR()` does to LBA 0 (go-blockdevice v2 `partitioning/gpt/gpt.go`), byte
/// for byte: for tests of [`check`] and [`repair`]. `last_lba` is the disk's last LBA.
pub fn talos_write_pmbr(mbr: &mut [u8; 512], last_lba: u64, mark_bootable: bool) {
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let b = &mut mbr[slot_offset(1)..slot_offset(1) + 16];
    b[0] = if mark_bootable { 0x80 } else { 0x00 };
    b[4] = 0xEE;
    b[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    b[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&u32::try_from(last_lba).unwrap_or(u32::MAX).to_le_bytes());
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The hybrid MBR is as moonboot wrote it: the boot ROM finds the FAT.
    Intact,
    /// Slot 1 is the 0xEE entry Talos's `writePMBR` writes, everything else is moonboot's: the
    /// board will not boot again until [`repair`] restores slot 1.
    ClobberedByTalos,
}

/// The result of [`check`]: the state, the boot partition per the GPT and all four slots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// What was found.
    pub state: State,
    /// GPT partition 1 (the FAT boot partition).
    pub boot_partition: LbaRange,
    /// The MBR slots 1–4 as read.
    pub slots: [Slot; 4],
}

/// Why a disk's LBA 0 and GPT are not moonboot's hybrid layout, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    /// Reading or writing the disk failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// LBA 0 does not end in 55 AA.
    #[error("LBA 0 has no MBR signature (55 AA)")]
    NoSignature,
    /// The GPT could not be read.
    #[error("no valid GPT: {0}")]
    Gpt(String),
    /// GPT partition 1 is not the FAT boot partition moonboot writes.
    #[error("GPT partition 1 is {found}, not an EFI System Partition named {BOOT_PARTITION_NAME:?}: not a moonboot Raspberry Pi disk")]
    NotOurGpt {
        /// What partition 1 is.
        found: String,
    },
    /// The MBR disk signature does not match the GPT disk GUID.
    #[error("MBR disk signature {mbr:02x?} is not the GPT disk GUID's first bytes {gpt:02x?}: this MBR was not written for this GPT")]
    SignatureMismatch {
        /// Bytes 440–443 of LBA 0.
        mbr: [u8; 4],
        /// The first 4 bytes of the GPT disk GUID.
        gpt: [u8; 4],
    },
    /// An MBR slot other than slot 1 is not what moonboot wrote, or slot 1 is neither moonboot's
    /// entry nor Talos's protective one.
    #[error(
        "MBR slot {slot} is {found}, expected {expected}: refusing to touch a partition table moonboot did not write"
    )]
    UnexpectedSlot {
        /// The slot, 1–4.
        slot: usize,
        /// What it holds.
        found: Slot,
        /// What moonboot writes there.
        expected: Slot,
    },
    /// The boot partition lies beyond what an MBR entry can address.
    #[error("boot partition LBA {first}–{last} cannot be described by an MBR entry")]
    OutOfReach {
        /// First LBA.
        first: u64,
        /// Last LBA.
        last: u64,
    },
    /// After writing slot 1 the disk still does not read back as intact.
    #[error("slot 1 was written but reads back as {0}")]
    NotPersisted(Slot),
}

/// Reads LBA 0 and the GPT of `disk` and says whether the hybrid MBR is intact or was clobbered
/// by Talos; anything else is refused with the reason.
///
/// # Errors
/// [`MbrError`]: unreadable disk, no GPT, a GPT or MBR that moonboot did not write.
pub fn check<D: Read + Write + Seek + std::fmt::Debug>(disk: &mut D) -> Result<Report, MbrError> {
    let mut mbr = [0u8; 512];
    disk.seek(SeekFrom::Start(0))
        .and_then(|_| disk.read_exact(&mut mbr))
        .map_err(|source| MbrError::Io { what: "reading LBA 0", source })?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Err(MbrError::NoSignature);
    }
    let (guid, boot) = gpt_boot_partition(disk)?;
    let gpt_sig = [guid[0], guid[1], guid[2], guid[3]];
    let mbr_sig = [mbr[440], mbr[441], mbr[442], mbr[443]];
    if mbr_sig != gpt_sig {
        return Err(MbrError::SignatureMismatch { mbr: mbr_sig, gpt: gpt_sig });
    }
    let [want1, want2] = hybrid_slots(boot)?;
    let slots = [1, 2, 3, 4].map(|n| Slot::read(&mbr, n));
    for (n, expected) in [(2, want2), (3, Slot::EMPTY), (4, Slot::EMPTY)] {
        if slots[n - 1] != expected {
            return Err(MbrError::UnexpectedSlot { slot: n, found: slots[n - 1], expected });
        }
    }
    let state = if slots[0] == want1 {
        State::Intact
    } else if slots[0].kind == MBR_GPT_PROTECTIVE && slots[0].first_lba == 1 {
        State::ClobberedByTalos
    } else {
        return Err(MbrError::UnexpectedSlot { slot: 1, found: slots[0], expected: want1 });
    };
    Ok(Report { state, boot_partition: boot, slots })
}

/// [`check`], then, when Talos clobbered slot 1, writes moonboot's slot 1 back (16 bytes at
/// offset 446, nothing else), flushes, and checks again. Returns the report from before the repair.
///
/// # Errors
/// As [`check`]; [`MbrError::NotPersisted`] when the write does not read back.
pub fn repair<D: Read + Write + Seek + std::fmt::Debug>(disk: &mut D) -> Result<Report, MbrError> {
    let before = check(disk)?;
    if before.state == State::Intact {
        return Ok(before);
    }
    let [want1, _] = hybrid_slots(before.boot_partition)?;
    let io = |what| move |source| MbrError::Io { what, source };
    disk.seek(SeekFrom::Start(slot_offset(1) as u64)).map_err(io("seeking to MBR slot 1"))?;
    disk.write_all(&want1.encode()).map_err(io("writing MBR slot 1"))?;
    disk.flush().map_err(io("flushing the disk"))?;
    let after = check(disk)?;
    if after.state != State::Intact {
        return Err(MbrError::NotPersisted(after.slots[0]));
    }
    Ok(before)
}

/// The GPT disk GUID as stored on disk, and partition 1 when it is moonboot's boot partition.
fn gpt_boot_partition<D: Read + Write + Seek + std::fmt::Debug>(
    disk: &mut D,
) -> Result<([u8; 16], LbaRange), MbrError> {
    let g = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(&mut *disk)
        .map_err(|e| MbrError::Gpt(e.to_string()))?;
    let guid = g.guid().to_bytes_le();
    let p = g.partitions().get(&1).filter(|p| p.is_used());
    match p {
        Some(p) if p.part_type_guid == gpt::partition_types::EFI && p.name == BOOT_PARTITION_NAME => {
            Ok((guid, LbaRange { first: p.first_lba, last: p.last_lba }))
        }
        Some(p) => Err(MbrError::NotOurGpt { found: format!("{:?} of type {}", p.name, p.part_type_guid.guid) }),
        None => Err(MbrError::NotOurGpt { found: "empty".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_of_small_and_large_lbas() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(16_450_560), [0xFE, 0xFF, 0xFF]);
    }

    #[test]
    fn slots_cover_the_boot_partition_and_protect_the_gpt() {
        let [a, b] = hybrid_slots(LbaRange { first: 2048, last: 2048 + 524_287 }).unwrap();
        assert_eq!(a, Slot { status: 0x80, kind: 0x0C, first_lba: 2048, sectors: 524_288 });
        assert_eq!(b, Slot { status: 0, kind: 0xEE, first_lba: 1, sectors: 2047 });
        assert!(hybrid_slots(LbaRange { first: 1, last: 100 }).is_err());
        assert!(hybrid_slots(LbaRange { first: 2048, last: 1 << 33 }).is_err());
    }

    #[test]
    fn write_pmbr_changes_only_slot_1_and_the_signature() {
        let mut m = [0u8; 512];
        m[..440].fill(0xAB);
        write_hybrid(&mut m, [1, 2, 3, 4], LbaRange { first: 2048, last: 4095 }).unwrap();
        let before = m;
        talos_write_pmbr(&mut m, 7_000_000, false);
        let changed: Vec<usize> = (0..512).filter(|&i| m[i] != before[i]).collect();
        assert!(changed.iter().all(|&i| (446..462).contains(&i)), "{changed:?}");
        assert_eq!(Slot::read(&m, 1), Slot { status: 0, kind: 0xEE, first_lba: 1, sectors: 7_000_000 });
        assert_eq!(Slot::read(&m, 2), Slot::read(&before, 2));
    }
}
