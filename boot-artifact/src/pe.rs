//! A minimal PE/COFF reader: the section table of an EFI application.
//!
//! Layout (Microsoft PE format specification, "MS-DOS Stub", "COFF File Header", "Section Table"):
//! `e_lfanew` (u32 LE at 0x3c) points at `PE\0\0`, followed by the 20-byte COFF header
//! (`Machine` u16, `NumberOfSections` u16 at +2, `SizeOfOptionalHeader` u16 at +16), the optional
//! header, then `NumberOfSections` 40-byte section headers (`Name` [8], `VirtualSize` u32 at +8,
//! `VirtualAddress` at +12, `SizeOfRawData` at +16, `PointerToRawData` at +20).
//!
//! A UKI (systemd `ukify`, Talos `pkg/imager/uki`) carries the kernel in `.linux`, the initramfs in
//! `.initrd` and the command line in `.cmdline`; a section's content is its first `VirtualSize`
//! bytes at `PointerToRawData` (`SizeOfRawData` is rounded up to the file alignment).

use std::io::{Read, Seek, SeekFrom};

/// PE machine type of arm64 images (`IMAGE_FILE_MACHINE_ARM64`).
pub const MACHINE_ARM64: u16 = 0xaa64;
/// PE machine type of x86-64 images (`IMAGE_FILE_MACHINE_AMD64`).
pub const MACHINE_AMD64: u16 = 0x8664;

/// The PE format allows at most 96 sections; more means a corrupt or hostile file.
const MAX_SECTIONS: u16 = 96;

/// Errors reading a PE file.
#[derive(Debug, thiserror::Error)]
pub enum PeError {
    /// Reading the file failed.
    #[error("reading PE headers: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with `MZ` or has no `PE\0\0` at `e_lfanew`.
    #[error("not a PE file ({0})")]
    NotPe(&'static str),
    /// The section table is larger than the format allows.
    #[error("PE file declares {0} sections, more than the 96 the format allows")]
    TooManySections(u16),
    /// A section's content lies beyond the end of the file or beyond its raw data.
    #[error("PE section {name} (offset {offset}, size {size}) lies outside the file of {file_len} bytes")]
    SectionOutOfBounds {
        /// Section name.
        name: String,
        /// File offset of its content, in bytes.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// A required section is missing.
    #[error("PE file has no {0} section")]
    MissingSection(&'static str),
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name, NUL padding removed (e.g. `.linux`).
    pub name: String,
    /// `VirtualSize`: the section's true content length in bytes.
    pub virtual_size: u32,
    /// `SizeOfRawData`: bytes stored in the file (rounded up to the file alignment).
    pub raw_size: u32,
    /// `PointerToRawData`: file offset of the content.
    pub raw_offset: u32,
}

impl Section {
    /// The byte range of the content in the file: `VirtualSize` bytes at `PointerToRawData`.
    ///
    /// # Errors
    /// [`PeError::SectionOutOfBounds`] when `VirtualSize` exceeds `SizeOfRawData` (the tail would
    /// be zero-fill that the file does not hold) or the range passes the end of the file.
    pub fn content(&self, file_len: u64) -> Result<std::ops::Range<u64>, PeError> {
        let start = u64::from(self.raw_offset);
        let end = start + u64::from(self.virtual_size);
        if self.virtual_size > self.raw_size || end > file_len {
            return Err(PeError::SectionOutOfBounds {
                name: self.name.clone(),
                offset: start,
                size: u64::from(self.virtual_size),
                file_len,
            });
        }
        Ok(start..end)
    }
}

/// The headers of a PE file that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeFile {
    /// `Machine` from the COFF header ([`MACHINE_ARM64`], [`MACHINE_AMD64`], …).
    pub machine: u16,
    /// The section table, in file order.
    pub sections: Vec<Section>,
    /// Length of the whole file in bytes.
    pub file_len: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl PeFile {
    /// Reads the DOS, COFF and section headers of `file`.
    ///
    /// # Errors
    /// [`PeError::NotPe`], [`PeError::TooManySections`], [`PeError::Io`] (including a file that
    /// ends inside its headers).
    pub fn read<R: Read + Seek>(file: &mut R) -> Result<PeFile, PeError> {
        let file_len = file.seek(SeekFrom::End(0))?;
        let mut dos = [0u8; 64];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut dos).map_err(|_| PeError::NotPe("shorter than a DOS header"))?;
        if &dos[..2] != b"MZ" {
            return Err(PeError::NotPe("no MZ signature"));
        }
        let pe_at = u64::from(u32_at(&dos, 0x3c));
        let mut coff = [0u8; 24];
        file.seek(SeekFrom::Start(pe_at))?;
        file.read_exact(&mut coff).map_err(|_| PeError::NotPe("e_lfanew points past the end"))?;
        if &coff[..4] != b"PE\0\0" {
            return Err(PeError::NotPe("no PE signature at e_lfanew"));
        }
        let machine = u16_at(&coff, 4);
        let count = u16_at(&coff, 6);
        if count > MAX_SECTIONS {
            return Err(PeError::TooManySections(count));
        }
        let optional_len = u64::from(u16_at(&coff, 20));
        file.seek(SeekFrom::Start(pe_at + 24 + optional_len))?;
        let mut table = vec![0u8; usize::from(count) * 40];
        file.read_exact(&mut table)?;
        let sections = table
            .chunks_exact(40)
            .map(|h| Section {
                name: String::from_utf8_lossy(&h[..8]).trim_end_matches('\0').to_string(),
                virtual_size: u32_at(h, 8),
                raw_size: u32_at(h, 16),
                raw_offset: u32_at(h, 20),
            })
            .collect();
        Ok(PeFile { machine, sections, file_len })
    }

    /// The section called `name`, if any.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The content range of the section called `name`.
    ///
    /// # Errors
    /// [`PeError::MissingSection`] or [`PeError::SectionOutOfBounds`].
    pub fn content(&self, name: &'static str) -> Result<std::ops::Range<u64>, PeError> {
        self.section(name).ok_or(PeError::MissingSection(name))?.content(self.file_len)
    }
}

/// Where a UKI keeps the pieces a kexec needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uki {
    /// `.linux`: the kernel (an arm64 `Image` or x86 bzImage; on arm64 possibly itself EFI zboot).
    pub linux: std::ops::Range<u64>,
    /// `.initrd`: the initramfs.
    pub initrd: std::ops::Range<u64>,
    /// `.cmdline`: the command line (may end in NUL or newline).
    pub cmdline: std::ops::Range<u64>,
    /// PE machine type.
    pub machine: u16,
}

impl Uki {
    /// Locates `.linux`, `.initrd` and `.cmdline` in a UKI.
    ///
    /// # Errors
    /// Those of [`PeFile::read`] and [`PeFile::content`].
    pub fn read<R: Read + Seek>(file: &mut R) -> Result<Uki, PeError> {
        let pe = PeFile::read(file)?;
        Ok(Uki {
            linux: pe.content(".linux")?,
            initrd: pe.content(".initrd")?,
            cmdline: pe.content(".cmdline")?,
            machine: pe.machine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A PE file with the given sections: (name, content, raw size padding).
    fn pe(machine: u16, sections: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut v = vec![0u8; 0x40];
        v[0..2].copy_from_slice(b"MZ");
        v[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        v.extend_from_slice(b"PE\0\0");
        let mut coff = [0u8; 20];
        coff[0..2].copy_from_slice(&machine.to_le_bytes());
        coff[2..4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        coff[16..18].copy_from_slice(&16u16.to_le_bytes()); // optional header length
        v.extend_from_slice(&coff);
        v.extend_from_slice(&[0xcc; 16]);
        let mut data_at = 0x1000u32;
        let mut table = Vec::new();
        let mut data = Vec::new();
        for (name, content, pad) in sections {
            let mut h = [0u8; 40];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[8..12].copy_from_slice(&(content.len() as u32).to_le_bytes());
            let raw = content.len() as u32 + pad;
            h[16..20].copy_from_slice(&raw.to_le_bytes());
            h[20..24].copy_from_slice(&data_at.to_le_bytes());
            table.extend_from_slice(&h);
            data.push((data_at, content.to_vec(), raw));
            data_at += raw;
        }
        v.extend_from_slice(&table);
        for (at, content, raw) in data {
            v.resize(at as usize, 0);
            v.extend_from_slice(&content);
            v.resize((at + raw) as usize, 0);
        }
        v
    }

    #[test]
    fn uki_sections_use_virtual_size() {
        let file = pe(
            MACHINE_ARM64,
            &[
                (".osrel", b"ID=talos\n", 7),
                (".cmdline", b"talos.platform=metal\0", 11),
                (".initrd", b"INITRD", 506),
                (".linux", b"KERNEL", 506),
            ],
        );
        let uki = Uki::read(&mut Cursor::new(&file)).unwrap();
        assert_eq!(uki.machine, MACHINE_ARM64);
        let slice = |r: std::ops::Range<u64>| &file[r.start as usize..r.end as usize];
        assert_eq!(slice(uki.linux), b"KERNEL");
        assert_eq!(slice(uki.initrd), b"INITRD");
        assert_eq!(slice(uki.cmdline), b"talos.platform=metal\0");
    }

    #[test]
    fn refuses_missing_hostile_and_truncated() {
        let file = pe(MACHINE_AMD64, &[(".linux", b"K", 0), (".initrd", b"I", 0)]);
        assert!(matches!(Uki::read(&mut Cursor::new(&file)), Err(PeError::MissingSection(".cmdline"))));

        let mut file = pe(MACHINE_ARM64, &[(".linux", b"KERNEL", 0), (".initrd", b"I", 0), (".cmdline", b"c", 0)]);
        file.truncate(file.len() - 3);
        assert!(matches!(Uki::read(&mut Cursor::new(&file)), Err(PeError::SectionOutOfBounds { .. })));

        let mut file = pe(MACHINE_ARM64, &[]);
        file[0x46..0x48].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(PeFile::read(&mut Cursor::new(&file)), Err(PeError::TooManySections(1000))));

        assert!(matches!(PeFile::read(&mut Cursor::new(b"MZ")), Err(PeError::NotPe(_))));
        let mut file = pe(MACHINE_ARM64, &[]);
        file[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(matches!(PeFile::read(&mut Cursor::new(&file)), Err(PeError::NotPe(_))));
    }
}
