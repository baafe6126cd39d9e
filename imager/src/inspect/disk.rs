//! `imager inspect` on a disk image (`imager build --board` writes `<board>-<arch>.raw.xz`; a
//! `.raw` works too): both partition tables, the hybrid MBR verdict, the FAT boot partition's
//! files and its `config.txt`.
//!
//! What is read, and where the format is written down:
//! - LBA 0: the MBR (boot code, disk signature at 440–443, four 16-byte entries at 446, `55 AA`
//!   at 510; UEFI Specification 2.10 §5.2.1), its entries read by
//!   [`boot_artifact::hybrid_mbr::Slot::read`];
//! - the GPT: [`super::gpt`] (UEFI Specification §5.3), both copies checked;
//! - the hybrid MBR verdict: [`boot_artifact::hybrid_mbr::check`], the same check `talos-agent mbr`
//!   makes on the board;
//! - the FAT: the `fatfs` crate over a read-only view of the partition's bytes.
//!
//! The image is never changed: every reader here is a [`View`] whose writes fail. An `.xz` image is
//! decompressed as a stream (liblzma's multi-threaded decoder, memory bounded) into an anonymous
//! temporary file in the system temporary directory, writing only the non-zero 64 KiB blocks, so
//! the file is sparse: a 4 GB image that is mostly zeros takes the space of its FAT content. The
//! stream may not hold more than the disk size its primary GPT header gives (or 2 TiB, an MBR's
//! reach, when there is none).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use boot_artifact::hybrid_mbr::{self, Slot, State, SECTOR};

use super::gpt::{self, GptError};
use super::model::{DiskImage, FatFile, FatInfo, GptInfo, GptPartition, HybridInfo, HybridState, MbrInfo, MbrSlot};
use super::MAX_SMALL_FILE;

/// The xz stream header magic (xz file format 1.1.0 §2.1.1.1).
pub const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// The largest disk read when no GPT header says otherwise: 2³² sectors, what an MBR entry can
/// address.
pub const MAX_DISK: u64 = (1 << 32) * SECTOR;
/// Memory the xz decoder may use (its threads and the dictionary); xz -9 needs 65 MiB.
const XZ_MEMLIMIT: u64 = 512 << 20;
/// Deepest directory nesting walked on the FAT (moonboot's is 2: `EFI/BOOT/`).
const MAX_DEPTH: usize = 16;
/// Most files listed from the FAT.
const MAX_FILES: usize = 100_000;
/// The MBR types of a FAT32 partition the BCM2837 boot ROM reads (CHS 0x0B, LBA 0x0C).
const MBR_FAT32: [u8; 2] = [0x0B, hybrid_mbr::MBR_FAT32_LBA];
/// The EFI System Partition type GUID (UEFI Specification 2.10 §5.3.3, table 5.7).
const ESP_TYPE: uuid::Uuid = uuid::uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");

/// Why a disk image could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Opening, reading or spooling the image failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The file is neither xz nor a disk image.
    #[error("{0}: not a disk image (neither xz nor an MBR signature 55 AA at byte 510)")]
    NotADiskImage(String),
    /// LBA 0 does not end in 55 AA.
    #[error("no MBR signature (55 AA at byte 510 of the disk)")]
    NoMbrSignature,
    /// The image is not whole sectors.
    #[error("the disk is {0} bytes, not a whole number of 512-byte sectors")]
    NotSectors(u64),
    /// The xz stream holds more than the disk can be.
    #[error("the xz stream holds more than {limit} bytes, the disk size {why}")]
    TooLarge {
        /// The bound.
        limit: u64,
        /// Where the bound comes from.
        why: &'static str,
    },
    /// The GPT is damaged.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// The FAT boot partition could not be read.
    #[error("the FAT at LBA {first_lba}: {source}")]
    Fat {
        /// The partition's first LBA.
        first_lba: u64,
        /// What `fatfs` or the walk said.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DiskError {
    let what = what.into();
    move |source| DiskError::Io { what, source }
}

/// A read-only window of `len` bytes at `start` in a file: `Read` and `Seek` within the window,
/// every `Write` refused. `fatfs` and `hybrid_mbr::check` want a writable device; this one is not.
#[derive(Debug)]
pub struct View<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> View<'a> {
    /// The bytes `start..start + len` of `file`.
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
        View { file, start, len, pos: 0 }
    }
}

impl Read for View<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for View<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Write for View<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "imager inspect never writes to a disk image"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the file at `path` looks like a disk image: it starts with [`XZ_MAGIC`], or has
/// `55 AA` at byte 510.
///
/// # Errors
/// The file cannot be read.
pub fn is_disk_image(path: &Path) -> io::Result<bool> {
    let mut head = Vec::with_capacity(512);
    File::open(path)?.take(512).read_to_end(&mut head)?;
    Ok(head.starts_with(&XZ_MAGIC) || head.get(510..512) == Some(&[0x55, 0xAA]))
}

/// Inspects the disk image at `path` (raw, or xz-compressed), reporting it as `source`.
///
/// # Errors
/// [`DiskError`]: one line naming what is wrong (no MBR signature, a bad GPT header CRC, a FAT
/// that does not mount, …).
pub fn inspect_disk(path: &Path, source: &str) -> Result<DiskImage, DiskError> {
    let mut file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut magic = [0u8; 6];
    let xz = file.read_exact(&mut magic).is_ok() && magic == XZ_MAGIC;
    let (disk, size) = if xz {
        file.rewind().map_err(io_err(format!("reading {}", path.display())))?;
        let tmp = tempfile::tempfile().map_err(io_err("creating a temporary file"))?;
        let size = unpack_xz(file, &tmp, path)?;
        (tmp, size)
    } else {
        let size = file.metadata().map_err(io_err(format!("reading {}", path.display())))?.len();
        (file, size)
    };
    if size % SECTOR != 0 {
        return Err(DiskError::NotSectors(size));
    }
    let mut lba0 = [0u8; SECTOR as usize];
    View::new(&disk, 0, size).read_exact(&mut lba0).map_err(|_| DiskError::NoMbrSignature)?;
    if lba0[510..512] != [0x55, 0xAA] {
        return Err(DiskError::NoMbrSignature);
    }
    let slots: Vec<Slot> = (1..=4).map(|n| Slot::read(&lba0, n)).collect();
    let mbr = MbrInfo {
        disk_signature: format!("0x{:08x}", u32::from_le_bytes([lba0[440], lba0[441], lba0[442], lba0[443]])),
        slots: slots
            .iter()
            .zip(1u8..)
            .map(|(s, slot)| MbrSlot {
                slot,
                bootable: s.status == hybrid_mbr::MBR_BOOTABLE,
                status: s.status,
                kind: s.kind,
                first_lba: s.first_lba,
                sectors: s.sectors,
            })
            .collect(),
    };
    let mut whole = View::new(&disk, 0, size);
    let has_gpt = gpt::has_signature(&mut whole).map_err(io_err("reading LBA 1"))?;
    let table = if has_gpt { Some(gpt::read(&mut whole)?) } else { None };
    // The check reads the GPT through the `gpt` crate, which asserts 128-byte entries: only a
    // table `gpt::read` accepted (it refuses any other size) reaches it.
    let hybrid = match table.as_ref().map(|_| hybrid_mbr::check(&mut View::new(&disk, 0, size))) {
        Some(Ok(r)) if r.state == State::Intact => HybridInfo { state: HybridState::Intact, detail: None },
        Some(Ok(_)) => HybridInfo { state: HybridState::ClobberedByTalos, detail: None },
        Some(Err(e)) => HybridInfo { state: HybridState::NotOurs, detail: Some(e.to_string()) },
        None => HybridInfo { state: HybridState::NotOurs, detail: Some("no GPT header at LBA 1".into()) },
    };
    let esp = table.as_ref().and_then(|t| t.partitions.iter().find(|p| p.type_guid == ESP_TYPE));
    let boot = match (esp, slots[0]) {
        (Some(p), _) => Some((p.first_lba, p.last_lba)),
        (None, s) if MBR_FAT32.contains(&s.kind) && s.sectors > 0 => {
            Some((u64::from(s.first_lba), u64::from(s.first_lba) + u64::from(s.sectors) - 1))
        }
        _ => None,
    };
    let boot_fat = match boot {
        Some((first, last)) => Some(read_fat(&disk, size, first, last)?),
        None => None,
    };
    let gpt = table.map(|t| GptInfo {
        disk_guid: t.header.disk_guid.to_string(),
        first_usable_lba: t.header.first_usable,
        last_usable_lba: t.header.last_usable,
        backup_lba: t.header.alternate_lba,
        partitions: t
            .partitions
            .into_iter()
            .map(|p| GptPartition {
                number: p.number,
                name: p.name,
                type_guid: p.type_guid.to_string(),
                guid: p.guid.to_string(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                size: (p.last_lba.saturating_sub(p.first_lba) + 1).saturating_mul(SECTOR),
            })
            .collect(),
    });
    Ok(DiskImage {
        source: source.to_string(),
        kind: "disk-image".to_string(),
        compression: if xz { "xz" } else { "none" }.to_string(),
        size,
        mbr,
        hybrid_mbr: hybrid,
        gpt,
        boot_fat,
    })
}

/// Decompresses the xz stream in `src` into `dst`, writing only non-zero blocks (so `dst` is
/// sparse), and returns the disk size. Refuses a stream without an MBR signature in its first
/// sector, and one longer than the disk its primary GPT header describes.
fn unpack_xz(src: File, dst: &File, path: &Path) -> Result<u64, DiskError> {
    const CHUNK: usize = 1 << 20;
    const BLOCK: usize = 64 << 10;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .memlimit_threading(XZ_MEMLIMIT)
        .memlimit_stop(XZ_MEMLIMIT)
        .decoder()
        .map_err(|e| io_err(format!("starting the xz decoder for {}", path.display()))(e.into()))?;
    let mut xz = liblzma::read::XzDecoder::new_stream(src, stream);
    let what = format!("decompressing {}", path.display());
    let mut buf = vec![0u8; CHUNK];
    let zeros = [0u8; BLOCK];
    let (mut at, mut limit, mut why) = (0u64, MAX_DISK, "an MBR can address");
    loop {
        let mut n = 0;
        while n < CHUNK {
            match xz.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(what)(e)),
            }
        }
        if at == 0 {
            if n < SECTOR as usize || buf[510..512] != [0x55, 0xAA] {
                return Err(DiskError::NoMbrSignature);
            }
            if n >= 2 * SECTOR as usize && &buf[512..520] == gpt::SIGNATURE {
                let alternate = u64::from_le_bytes(buf[544..552].try_into().expect("8 bytes"));
                if let Some(bytes) = alternate.checked_add(1).and_then(|s| s.checked_mul(SECTOR)) {
                    (limit, why) = (bytes.min(MAX_DISK), "its primary GPT header gives");
                }
            }
        }
        if at + n as u64 > limit {
            return Err(DiskError::TooLarge { limit, why });
        }
        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
            if block != &zeros[..block.len()] {
                dst.write_all_at(block, at + (i * BLOCK) as u64).map_err(io_err("writing the temporary file"))?;
            }
        }
        at += n as u64;
        if n < CHUNK {
            break;
        }
    }
    dst.set_len(at).map_err(io_err("writing the temporary file"))?;
    Ok(at)
}

/// The FAT at LBAs `first..=last` of `disk`: its files and `config.txt`.
fn read_fat(disk: &File, size: u64, first: u64, last: u64) -> Result<FatInfo, DiskError> {
    let fat_err = |source| DiskError::Fat { first_lba: first, source };
    let start = first * SECTOR;
    let len = (last + 1 - first) * SECTOR;
    if first > last || start.checked_add(len).is_none_or(|end| end > size) {
        return Err(fat_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("LBA {first}–{last} is outside the disk"),
        )));
    }
    let options = fatfs::FsOptions::new().update_accessed_date(false);
    let fs = fatfs::FileSystem::new(View::new(disk, start, len), options).map_err(fat_err)?;
    let mut files = Vec::new();
    walk(&fs.root_dir(), "", 0, &mut files).map_err(fat_err)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let config_txt = match fs.root_dir().open_file("config.txt") {
        Ok(f) => {
            let mut text = Vec::new();
            f.take(MAX_SMALL_FILE + 1).read_to_end(&mut text).map_err(fat_err)?;
            if text.len() as u64 > MAX_SMALL_FILE {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("config.txt is larger than {MAX_SMALL_FILE} bytes"),
                );
                return Err(fat_err(e));
            }
            Some(String::from_utf8_lossy(&text).into_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fat_err(e)),
    };
    let id = fs.volume_id();
    Ok(FatInfo {
        first_lba: first,
        last_lba: last,
        fat_type: match fs.fat_type() {
            fatfs::FatType::Fat12 => "FAT12",
            fatfs::FatType::Fat16 => "FAT16",
            fatfs::FatType::Fat32 => "FAT32",
        }
        .to_string(),
        volume_id: format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF),
        volume_label: fs.volume_label().trim_end().to_string(),
        files,
        config_txt,
    })
}

/// Every regular file under `dir`, paths prefixed with `prefix`; bounded in depth and count, so a
/// FAT whose directories loop ends.
fn walk<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<FatFile>,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("directories nested deeper than {MAX_DEPTH} at {prefix}"),
        ));
    }
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}{name}");
        if entry.is_dir() {
            walk(&entry.to_dir(), &format!("{path}/"), depth + 1, out)?;
        } else {
            if out.len() >= MAX_FILES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("more than {MAX_FILES} files")));
            }
            out.push(FatFile { path, size: entry.len() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::board::disk::{write, Partition};
    use crate::board::fat::fat32;

    const MIB: u64 = 1 << 20;
    const DISK: u64 = 96 * MIB;

    /// A 96 MiB disk as `imager build --board` writes one: the board's GPT and hybrid MBR writer,
    /// an 80 MiB FAT32 `EFI` (the smallest FAT32 the board's FAT writer makes) and a `META`.
    fn image(dir: &Path) -> PathBuf {
        let mut files = BTreeMap::new();
        files.insert("config.txt".to_string(), b"arm_64bit=1\nkernel=u-boot.bin\n".to_vec());
        files.insert("EFI/BOOT/BOOTAA64.EFI".to_string(), vec![7u8; 5000]);
        files.insert("bootcode.bin".to_string(), vec![1u8; 123]);
        let boot = fat32(80 * MIB, 0x1234_ABCD, "EFI", &files).unwrap();
        let guid = |n: u128| uuid::Uuid::from_u128(n);
        let parts = vec![
            Partition {
                name: "EFI",
                type_guid: ::gpt::partition_types::EFI,
                guid: guid(1),
                first_lba: 2048,
                last_lba: 2048 + 80 * 2048 - 1,
            },
            Partition {
                name: "META",
                type_guid: ::gpt::partition_types::LINUX_FS,
                guid: guid(2),
                first_lba: 83 * 2048,
                last_lba: 84 * 2048 - 1,
            },
        ];
        let path = dir.join("disk.raw");
        write(&path, DISK, guid(0xD15C), &parts, &boot).unwrap();
        path
    }

    fn patch(path: &Path, at: u64, bytes: &[u8]) {
        std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
    }

    fn xz(from: &Path, to: &Path) {
        let mut out = liblzma::write::XzEncoder::new(File::create(to).unwrap(), 0);
        io::copy(&mut File::open(from).unwrap(), &mut out).unwrap();
        out.finish().unwrap();
    }

    #[test]
    fn both_tables_the_verdict_and_the_fat_of_a_board_image_raw_and_xz() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let d = inspect_disk(&raw, "disk.raw").unwrap();
        assert_eq!((d.kind.as_str(), d.compression.as_str(), d.size), ("disk-image", "none", DISK));
        let s = &d.mbr.slots;
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].bootable, s[0].kind, s[0].first_lba, s[0].sectors), (true, 0x0C, 2048, 80 * 2048));
        assert_eq!((s[1].bootable, s[1].kind, s[1].first_lba, s[1].sectors), (false, 0xEE, 1, 2047));
        assert_eq!((s[2].kind, s[3].kind), (0, 0));
        let g = uuid::Uuid::from_u128(0xD15C).to_bytes_le();
        assert_eq!(d.mbr.disk_signature, format!("0x{:08x}", u32::from_le_bytes([g[0], g[1], g[2], g[3]])));
        assert_eq!(d.hybrid_mbr, HybridInfo { state: HybridState::Intact, detail: None });
        let t = d.gpt.as_ref().unwrap();
        assert_eq!(t.disk_guid, uuid::Uuid::from_u128(0xD15C).to_string());
        assert_eq!((t.first_usable_lba, t.last_usable_lba, t.backup_lba), (34, DISK / 512 - 34, DISK / 512 - 1));
        let names: Vec<&str> = t.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["EFI", "META"]);
        let efi = &t.partitions[0];
        assert_eq!(efi.type_guid, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(efi.guid, uuid::Uuid::from_u128(1).to_string());
        assert_eq!((efi.number, efi.first_lba, efi.last_lba, efi.size), (1, 2048, 165_887, 80 * MIB));
        let f = d.boot_fat.as_ref().unwrap();
        assert_eq!((f.fat_type.as_str(), f.volume_id.as_str(), f.volume_label.as_str()), ("FAT32", "1234-ABCD", "EFI"));
        let files: Vec<(&str, u64)> = f.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(files, [("EFI/BOOT/BOOTAA64.EFI", 5000), ("bootcode.bin", 123), ("config.txt", 30)]);
        assert_eq!(f.config_txt.as_deref(), Some("arm_64bit=1\nkernel=u-boot.bin\n"));
        let text = super::super::render_disk(&d);
        assert!(text.contains("hybrid mbr      intact"), "{text}");

        let packed = dir.path().join("disk.raw.xz");
        xz(&raw, &packed);
        assert!(is_disk_image(&packed).unwrap() && is_disk_image(&raw).unwrap());
        let x = inspect_disk(&packed, "disk.raw.xz").unwrap();
        assert_eq!((x.compression.as_str(), x.size), ("xz", DISK));
        assert_eq!((x.mbr, x.gpt, x.hybrid_mbr, x.boot_fat), (d.mbr, d.gpt, d.hybrid_mbr, d.boot_fat));
    }

    #[test]
    fn write_pmbr_is_clobbered_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let raw = image(dir.path());
        let mut lba0 = [0u8; 512];
        File::open(&raw).unwrap().read_exact(&mut lba0).unwrap();
        let mut clobbered = lba0;
        hybrid_mbr::talos_write_pmbr(&mut clobbered, DISK / 512 - 1, false);
        patch(&raw, 0, &clobbered);
        let d = inspect_disk(&raw, "x").unwrap();
        assert_eq!(d.hybrid_mbr.state, HybridState::ClobberedByTalos);
        assert_eq!(d.boot_fat.unwrap().first_lba, 2048, "the FAT is found through the GPT");

        let mut foreign = lba0;
        foreign[440] ^= 0xFF;
        patch(&raw, 0, &foreign);
        let d = inspect_disk(&raw, "x").unwrap();
        assert_eq!(d.hybrid_mbr.state, HybridState::NotOurs);
        assert!(d.hybrid_mbr.detail.unwrap().contains("disk signature"));

        let err = |raw: &Path| inspect_disk(raw, "x").unwrap_err().to_string();
        patch(&raw, 512 + 60, &[0xFF]);
        assert!(err(&raw).starts_with("primary GPT header at LBA 1: header CRC32 is bad"), "{}", err(&raw));
        let raw = image(dir.path());
        patch(&raw, 1024 + 200, &[0xFF]);
        assert!(err(&raw).starts_with("primary GPT partition entry array at LBA 2: CRC32 is bad"), "{}", err(&raw));
        let raw = image(dir.path());
        patch(&raw, DISK - 512, &[0u8; 8]);
        assert_eq!(err(&raw), format!("backup GPT header at LBA {}: no \"EFI PART\" signature", DISK / 512 - 1));
        let raw = image(dir.path());
        patch(&raw, 510, &[0, 0]);
        assert_eq!(err(&raw), "no MBR signature (55 AA at byte 510 of the disk)");
        let packed = dir.path().join("bad.raw.xz");
        xz(&raw, &packed);
        assert_eq!(err(&packed), "no MBR signature (55 AA at byte 510 of the disk)");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        assert!(!is_disk_image(&text).unwrap());
    }

    #[test]
    fn a_view_reads_its_window_and_refuses_writes() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let mut v = View::new(&f, 2, 5);
        let mut s = String::new();
        v.read_to_string(&mut s).unwrap();
        assert_eq!(s, "23456");
        assert_eq!(v.seek(SeekFrom::End(-1)).unwrap(), 4);
        assert_eq!(v.write(b"x").unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}
