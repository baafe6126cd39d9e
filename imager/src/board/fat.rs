//! The FAT32 boot partition of a board image, built in memory with `fatfs`, reproducibly: files
//! and directories created in path order, every timestamp the DOS epoch (1980-01-01, fatfs
//! without its `chrono` feature), a volume ID and label the caller derives from the build inputs.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};

/// Bytes per cluster. 1 KiB keeps a FAT32 of 72 MiB or more above the 65,525 clusters FAT32
/// needs (Microsoft's FAT specification, "FAT type determination").
const CLUSTER: u32 = 1024;

/// A FAT32 file system of `size` bytes (a multiple of 512) holding `files` (path with `/`
/// separators → content); the parent directories are created as needed.
///
/// # Errors
/// A size fatfs cannot format as FAT32, or files that do not fit.
pub fn fat32(size: u64, volume_id: u32, label: &str, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; usize::try_from(size).map_err(std::io::Error::other)?]);
    let mut vol_label = [b' '; 11];
    for (d, s) in vol_label.iter_mut().zip(label.bytes()) {
        *d = s.to_ascii_uppercase();
    }
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(CLUSTER)
            .volume_id(volume_id)
            .volume_label(vol_label),
    )?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new().update_accessed_date(false))?;
        {
            let root = fs.root_dir();
            let mut made = std::collections::BTreeSet::new();
            for (path, data) in files {
                let parts: Vec<&str> = path.split('/').collect();
                for i in 1..parts.len() {
                    let dir = parts[..i].join("/");
                    if made.insert(dir.clone()) {
                        root.create_dir(&dir)?;
                    }
                }
                let mut f = root.create_file(path)?;
                f.truncate()?;
                f.write_all(data)?;
                f.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_same_bytes_and_they_read_back() {
        let mut files = BTreeMap::new();
        files.insert("config.txt".to_string(), b"arm_64bit=1\n".to_vec());
        files.insert("EFI/BOOT/BOOTAA64.EFI".to_string(), vec![7u8; 5000]);
        let a = fat32(128 << 20, 0x1234_5678, "EFI", &files).unwrap();
        let b = fat32(128 << 20, 0x1234_5678, "EFI", &files).unwrap();
        assert!(a == b, "two builds differ");
        let fs = fatfs::FileSystem::new(Cursor::new(a), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_id(), 0x1234_5678);
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut fs.root_dir().open_file("EFI/BOOT/BOOTAA64.EFI").unwrap(), &mut s).unwrap();
        assert_eq!(s, vec![7u8; 5000]);
    }
}
