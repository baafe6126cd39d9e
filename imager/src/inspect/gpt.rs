//! Reading a GUID Partition Table for `imager inspect`, strictly, so that a damaged table is named
//! rather than silently replaced by its other copy: the primary header at LBA 1 and the backup
//! header it points at are both checked (signature, CRC32 of the header, `MyLBA`), and so are both
//! partition entry arrays (CRC32), and the backup must describe the same disk.
//!
//! Format: UEFI Specification 2.10 §5.3.2 (GPT header: `EFI PART` at offset 0, `HeaderSize` at
//! 12, `HeaderCRC32` at 16 over `HeaderSize` bytes with the field zeroed, `MyLBA` 24,
//! `AlternateLBA` 32, `FirstUsableLBA` 40, `LastUsableLBA` 48, `DiskGUID` 56, `PartitionEntryLBA`
//! 72, `NumberOfPartitionEntries` 80, `SizeOfPartitionEntry` 84, `PartitionEntryArrayCRC32` 88)
//! and §5.3.3 (an entry: type GUID, unique GUID, first LBA, last LBA, attributes, then a 72-byte
//! UTF-16LE name; a zero type GUID marks an unused entry). GUIDs are stored with their first three
//! fields little-endian (Appendix A). Unlike the `gpt` crate, which asserts 128-byte entries and
//! does not check the entry array's CRC, nothing here panics on hostile bytes.

use std::io::{self, Read, Seek, SeekFrom};

use boot_artifact::hybrid_mbr::SECTOR;
use uuid::Uuid;

/// The header signature, "EFI PART".
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The only partition entry size read here (every GPT writer in practice; the spec allows
/// 128 × 2ⁿ).
pub const ENTRY_SIZE: u32 = 128;
/// The most partition entries read (128 is usual; this bounds the array to 1 MiB).
pub const MAX_ENTRIES: u32 = 8192;

/// Which of the two headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// At LBA 1.
    Primary,
    /// At the primary's `AlternateLBA`.
    Backup,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Primary => "primary",
            Which::Backup => "backup",
        })
    }
}

/// Why a GPT was refused.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// Reading the disk failed (a header or array beyond its end, too).
    #[error("{which} GPT at LBA {lba}: {source}")]
    Io {
        /// Which header (or its array).
        which: Which,
        /// The LBA being read.
        lba: u64,
        /// The cause.
        source: io::Error,
    },
    /// No "EFI PART" signature.
    #[error("{which} GPT header at LBA {lba}: no \"EFI PART\" signature")]
    NoSignature {
        /// Which header.
        which: Which,
        /// Where it was looked for.
        lba: u64,
    },
    /// A field has a value the spec does not allow, or this reader does not read.
    #[error("{which} GPT header at LBA {lba}: {reason}")]
    Field {
        /// Which header.
        which: Which,
        /// Where it is.
        lba: u64,
        /// What is wrong.
        reason: String,
    },
    /// The header's CRC32 does not match.
    #[error("{which} GPT header at LBA {lba}: header CRC32 is bad (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc {
        /// Which header.
        which: Which,
        /// Where it is.
        lba: u64,
        /// `HeaderCRC32`.
        stored: u32,
        /// The CRC32 of the header bytes.
        computed: u32,
    },
    /// The partition entry array's CRC32 does not match.
    #[error("{which} GPT partition entry array at LBA {lba}: CRC32 is bad (stored {stored:#010x}, computed {computed:#010x})")]
    EntriesCrc {
        /// Which header points at the array.
        which: Which,
        /// The array's first LBA.
        lba: u64,
        /// `PartitionEntryArrayCRC32`.
        stored: u32,
        /// The CRC32 of the array.
        computed: u32,
    },
    /// The backup header describes a different disk or table than the primary.
    #[error("the backup GPT header disagrees with the primary on {0}")]
    Mismatch(&'static str),
}

/// The fields of a GPT header that the inspection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `MyLBA`.
    pub my_lba: u64,
    /// `AlternateLBA`: the other header.
    pub alternate_lba: u64,
    /// `FirstUsableLBA`.
    pub first_usable: u64,
    /// `LastUsableLBA`.
    pub last_usable: u64,
    /// `DiskGUID`.
    pub disk_guid: Uuid,
    /// `PartitionEntryLBA`.
    pub entries_lba: u64,
    /// `NumberOfPartitionEntries`.
    pub entries: u32,
    /// `PartitionEntryArrayCRC32`.
    pub entries_crc: u32,
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its number, from 1 (its index in the array plus one).
    pub number: u32,
    /// `PartitionTypeGUID`.
    pub type_guid: Uuid,
    /// `UniquePartitionGUID`.
    pub guid: Uuid,
    /// `StartingLBA`.
    pub first_lba: u64,
    /// `EndingLBA`, inclusive.
    pub last_lba: u64,
    /// `PartitionName`, up to its first NUL.
    pub name: String,
}

/// A GPT whose both copies were checked: the primary header and the used entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    /// The primary header.
    pub header: Header,
    /// The used entries, by number.
    pub partitions: Vec<Entry>,
}

/// Whether LBA 1 of `disk` starts with the GPT header signature.
///
/// # Errors
/// The disk cannot be read there.
pub fn has_signature<D: Read + Seek>(disk: &mut D) -> io::Result<bool> {
    let mut sig = [0u8; 8];
    disk.seek(SeekFrom::Start(SECTOR))?;
    match disk.read_exact(&mut sig) {
        Ok(()) => Ok(&sig == SIGNATURE),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads and checks the GPT of `disk` (512-byte sectors): both headers and both entry arrays.
///
/// # Errors
/// [`GptError`], naming the header or array and what is wrong with it.
pub fn read<D: Read + Seek>(disk: &mut D) -> Result<Gpt, GptError> {
    let (header, array) = read_copy(disk, Which::Primary, 1)?;
    let (backup, backup_array) = read_copy(disk, Which::Backup, header.alternate_lba)?;
    if backup.alternate_lba != header.my_lba {
        return Err(GptError::Mismatch("AlternateLBA (it should point back at LBA 1)"));
    }
    if backup.disk_guid != header.disk_guid {
        return Err(GptError::Mismatch("DiskGUID"));
    }
    if (backup.first_usable, backup.last_usable) != (header.first_usable, header.last_usable) {
        return Err(GptError::Mismatch("the usable LBAs"));
    }
    if backup_array != array {
        return Err(GptError::Mismatch("the partition entries"));
    }
    let mut partitions = Vec::new();
    for (i, e) in array.chunks_exact(ENTRY_SIZE as usize).enumerate() {
        let type_guid = guid(&e[0..16]);
        if type_guid.is_nil() {
            continue;
        }
        let units: Vec<u16> = e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        partitions.push(Entry {
            number: u32::try_from(i + 1).expect("at most MAX_ENTRIES"),
            type_guid,
            guid: guid(&e[16..32]),
            first_lba: le64(&e[32..40]),
            last_lba: le64(&e[40..48]),
            name: String::from_utf16_lossy(&units[..end]),
        });
    }
    Ok(Gpt { header, partitions })
}

/// One header at `lba` and the entry array it points at, both checked.
fn read_copy<D: Read + Seek>(disk: &mut D, which: Which, lba: u64) -> Result<(Header, Vec<u8>), GptError> {
    let at = |lba: u64| move |source| GptError::Io { which, lba, source };
    let field = |reason: String| GptError::Field { which, lba, reason };
    let mut s = [0u8; SECTOR as usize];
    let offset = lba.checked_mul(SECTOR).ok_or_else(|| field("LBA out of range".into()))?;
    disk.seek(SeekFrom::Start(offset)).and_then(|_| disk.read_exact(&mut s)).map_err(at(lba))?;
    if &s[0..8] != SIGNATURE {
        return Err(GptError::NoSignature { which, lba });
    }
    let size = le32(&s[12..16]);
    if !(92..=SECTOR as u32).contains(&size) {
        return Err(field(format!("HeaderSize {size} is not between 92 and 512")));
    }
    let stored = le32(&s[16..20]);
    let mut zeroed = s;
    zeroed[16..20].fill(0);
    let computed = crc32fast::hash(&zeroed[..size as usize]);
    if stored != computed {
        return Err(GptError::HeaderCrc { which, lba, stored, computed });
    }
    let h = Header {
        my_lba: le64(&s[24..32]),
        alternate_lba: le64(&s[32..40]),
        first_usable: le64(&s[40..48]),
        last_usable: le64(&s[48..56]),
        disk_guid: guid(&s[56..72]),
        entries_lba: le64(&s[72..80]),
        entries: le32(&s[80..84]),
        entries_crc: le32(&s[88..92]),
    };
    let entry_size = le32(&s[84..88]);
    if h.my_lba != lba {
        return Err(field(format!("MyLBA is {}", h.my_lba)));
    }
    if entry_size != ENTRY_SIZE {
        return Err(field(format!("SizeOfPartitionEntry {entry_size} is not {ENTRY_SIZE}")));
    }
    if h.entries > MAX_ENTRIES {
        return Err(field(format!("NumberOfPartitionEntries {} is more than {MAX_ENTRIES}", h.entries)));
    }
    if h.first_usable > h.last_usable {
        return Err(field(format!("FirstUsableLBA {} is after LastUsableLBA {}", h.first_usable, h.last_usable)));
    }
    let mut array = vec![0u8; (h.entries * ENTRY_SIZE) as usize];
    let offset = h.entries_lba.checked_mul(SECTOR).ok_or_else(|| field("PartitionEntryLBA out of range".into()))?;
    disk.seek(SeekFrom::Start(offset)).and_then(|_| disk.read_exact(&mut array)).map_err(at(h.entries_lba))?;
    let computed = crc32fast::hash(&array);
    if computed != h.entries_crc {
        return Err(GptError::EntriesCrc { which, lba: h.entries_lba, stored: h.entries_crc, computed });
    }
    Ok((h, array))
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// A GUID as stored on disk (UEFI Specification Appendix A: the first three fields little-endian).
fn guid(b: &[u8]) -> Uuid {
    Uuid::from_bytes_le(b.try_into().expect("16 bytes"))
}
