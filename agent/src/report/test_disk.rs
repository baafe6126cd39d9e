//! TEST SUPPORT — disk images like `imager build --board rpi-cm3` writes, for the tests of
//! `report::boot_mbr` and `agent/tests/report_wait.rs` (which includes this file by path): a GPT
//! (`gpt` crate, as the imager's `board/disk.rs`) with an `EFI` ESP at LBA 2048 and `META`
//! after it, and moonboot's hybrid MBR from [`boot_artifact::hybrid_mbr::write_hybrid`].

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use boot_artifact::hybrid_mbr::{self, LbaRange};

/// The disk's size in sectors (64 MiB).
pub const SECTORS: u64 = 131_072;

/// Writes the disk image at `path` and returns its LBA 0. With `boot_name` other than `EFI`,
/// GPT partition 1 is not moonboot's boot partition.
pub fn disk_image(path: &Path, boot_name: &str) -> [u8; 512] {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    file.set_len(SECTORS * 512).unwrap();
    let guid = uuid::Uuid::from_bytes([0x11, 0x22, 0x33, 0x44, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16]);
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, Some(guid))
        .unwrap();
    let part = |name: &str, t: gpt::partition_types::Type, first, last, n: u8| gpt::partition::Partition {
        part_type_guid: t,
        part_guid: uuid::Uuid::from_bytes([n; 16]),
        first_lba: first,
        last_lba: last,
        flags: 0,
        name: name.into(),
    };
    disk.update_partitions(
        [
            (1, part(boot_name, gpt::partition_types::EFI, 2048, 34_815, 1)),
            (2, part("META", gpt::partition_types::LINUX_FS, 34_816, 36_863, 2)),
        ]
        .into(),
    )
    .unwrap();
    let mut file = disk.write().unwrap();
    let mut mbr = [0u8; 512];
    let g = guid.to_bytes_le();
    hybrid_mbr::write_hybrid(&mut mbr, [g[0], g[1], g[2], g[3]], LbaRange { first: 2048, last: 34_815 }).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&mbr).unwrap();
    mbr
}

/// LBA 0 of `path`.
pub fn lba0(path: &Path) -> [u8; 512] {
    let mut b = [0u8; 512];
    std::fs::File::open(path).unwrap().read_exact(&mut b).unwrap();
    b
}

/// Overwrites LBA 0 of `path`.
pub fn write_lba0(path: &Path, b: &[u8; 512]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(b).unwrap();
}

/// Does to LBA 0 what Talos's `writePMBR` does ([`hybrid_mbr::talos_write_pmbr`]); returns it.
pub fn clobber(path: &Path) -> [u8; 512] {
    let mut b = lba0(path);
    hybrid_mbr::talos_write_pmbr(&mut b, SECTORS - 1, false);
    write_lba0(path, &b);
    b
}
