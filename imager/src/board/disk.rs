//! A raw GPT disk image with moonboot's hybrid MBR: the GPT through the `gpt` crate (128 entries,
//! backup at the last LBA, GUIDs the caller derives), the FAT boot partition's bytes, then LBA 0
//! from [`boot_artifact::hybrid_mbr::write_hybrid`]. Everything else stays zero (sparse).

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use boot_artifact::hybrid_mbr::{self, LbaRange, SECTOR};

/// One GPT partition to write.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Partition {
    /// GPT partition name (Talos finds its partitions by these).
    pub name: &'static str,
    /// Partition type GUID.
    #[serde(serialize_with = "type_guid")]
    pub type_guid: gpt::partition_types::Type,
    /// Unique partition GUID.
    pub guid: uuid::Uuid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
}

fn type_guid<S: serde::Serializer>(t: &gpt::partition_types::Type, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.guid.to_string())
}

/// Writes the image to `path` (created or truncated to `size` bytes): GPT, `boot` (the FAT of
/// partition 1) at partition 1's offset, and the hybrid MBR over partition 1.
///
/// # Errors
/// A partition outside the disk, a boot file system larger than partition 1, or an I/O error.
pub fn write(path: &Path, size: u64, disk_guid: uuid::Uuid, parts: &[Partition], boot: &[u8]) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(size)?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, Some(disk_guid))
        .context("initialising the GPT")?;
    let mut table = BTreeMap::new();
    for (i, p) in parts.iter().enumerate() {
        table.insert(
            u32::try_from(i + 1).expect("a handful of partitions"),
            gpt::partition::Partition {
                part_type_guid: p.type_guid.clone(),
                part_guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.to_string(),
            },
        );
    }
    disk.update_partitions(table).context("laying out the GPT")?;
    let h = disk.header();
    for p in parts {
        anyhow::ensure!(
            p.first_lba >= h.first_usable && p.last_lba <= h.last_usable && p.first_lba <= p.last_lba,
            "partition {} (LBA {}–{}) is outside the usable LBAs {}–{}",
            p.name,
            p.first_lba,
            p.last_lba,
            h.first_usable,
            h.last_usable
        );
    }
    let mut file = disk.write().context("writing the GPT")?;
    let esp = &parts[0];
    anyhow::ensure!(
        boot.len() as u64 <= (esp.last_lba - esp.first_lba + 1) * SECTOR,
        "the boot file system ({} bytes) is larger than partition {}",
        boot.len(),
        esp.name
    );
    file.seek(SeekFrom::Start(esp.first_lba * SECTOR))?;
    file.write_all(boot)?;
    let mut mbr = [0u8; 512];
    let g = disk_guid.to_bytes_le();
    hybrid_mbr::write_hybrid(
        &mut mbr,
        [g[0], g[1], g[2], g[3]],
        LbaRange { first: esp.first_lba, last: esp.last_lba },
    )?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&mbr)?;
    file.sync_all()?;
    Ok(())
}
