//! The `.xz` of a board disk image, written block by block so that all-zero blocks cost nothing.
//!
//! A disk image is mostly zeros (EPHEMERAL and STATE are empty), and LZMA2 runs at about
//! 120 MB/s on zeros whatever the preset: liblzma's own encoder needs about half a minute for a
//! 4 GB CM3 image (`xz -1 -T2`: 27.7 s here), this module about 5 s. Here
//! the image is cut into [`BLOCK_SIZE`] blocks, each compressed on its own as the `.xz` format
//! allows (`xz-file-format.txt` 1.2.0, §3 "Block"); an all-zero block always compresses to the
//! same bytes, so it is compressed once and written again for every such block. Blocks with data
//! are compressed side by side on every core, and a hole of a sparse file is not even read
//! ([`compress_file`]). The result is one ordinary `.xz` stream: Debian's
//! `xz`, liblzma and every tool built on it read it as they read `xz -1` output.
//!
//! Container layout written here (all from `xz-file-format.txt`): stream header (§2.1.1: magic,
//! flags with check ID 0x04 = CRC64, CRC32 of the flags); per block a header (§3.1: size byte,
//! flags 0xC0 = one filter with compressed and uncompressed sizes present, the two sizes as
//! multibyte integers, filter flags LZMA2 = 0x21 with its one property byte, padding, CRC32), the
//! raw LZMA2 data from liblzma, block padding and the CRC64 of the uncompressed block (§3.4); the
//! index (§4: records of unpadded and uncompressed sizes, padding, CRC32); the stream footer
//! (§2.1.2: CRC32, backward size, flags, `YZ`).

use std::io::{Read, Write};

use anyhow::{Context, Result};

/// Uncompressed bytes per block: 24 MiB, a multiple of every partition alignment.
pub const BLOCK_SIZE: usize = 24 << 20;
/// The LZMA2 dictionary: 1 MiB, xz's preset 1.
const DICT_SIZE: u32 = 1 << 20;
/// The LZMA2 filter's property byte for [`DICT_SIZE`] (§5.3.1: dictionary size =
/// `(2 | (p & 1)) << (p / 2 + 11)`; 2 << 19 = 1 MiB → p = 16).
const DICT_PROPERTY: u8 = 16;
/// Stream flags: check type CRC64 (§2.1.1.2).
const STREAM_FLAGS: [u8; 2] = [0x00, 0x04];
const CRC64_XZ: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// Appends `n` as an xz multibyte integer (§1.2: 7 bits per byte, low first).
fn vli(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// One compressed block: its bytes (header to check) and the index record's sizes.
#[derive(Clone)]
struct Block {
    bytes: Vec<u8>,
    unpadded: u64,
    uncompressed: u64,
}

/// Compresses `data` into one `.xz` block (LZMA2 preset 1, CRC64).
fn block(data: &[u8]) -> Result<Block> {
    let mut opts = liblzma::stream::LzmaOptions::new_preset(1).context("LZMA2 preset 1")?;
    opts.dict_size(DICT_SIZE);
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&opts);
    let raw = liblzma::stream::Stream::new_raw_encoder(&filters).context("the LZMA2 raw encoder")?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 2 + 4096), raw);
    enc.write_all(data)?;
    let compressed = enc.finish()?;

    let mut header = vec![0u8]; // size byte, set below
    header.push(0xC0); // one filter; compressed and uncompressed sizes present
    vli(&mut header, compressed.len() as u64);
    vli(&mut header, data.len() as u64);
    vli(&mut header, 0x21); // LZMA2
    vli(&mut header, 1); // one property byte
    header.push(DICT_PROPERTY);
    while (header.len() + 4) % 4 != 0 {
        header.push(0);
    }
    header[0] = ((header.len() + 4) / 4 - 1) as u8;
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());

    let unpadded = (header.len() + compressed.len() + 8) as u64;
    let mut bytes = header;
    bytes.extend_from_slice(&compressed);
    pad4(&mut bytes);
    bytes.extend_from_slice(&CRC64_XZ.checksum(data).to_le_bytes());
    Ok(Block { bytes, unpadded, uncompressed: data.len() as u64 })
}

/// One block of input: a full block of zeros, known without reading it, or bytes.
enum Chunk {
    Zeros,
    Data(Vec<u8>),
}

impl Chunk {
    fn of(data: Vec<u8>) -> Chunk {
        if data.len() == BLOCK_SIZE && data.iter().all(|&b| b == 0) {
            Chunk::Zeros
        } else {
            Chunk::Data(data)
        }
    }
}

/// Writes the `.xz` of everything `input` yields into `out`; returns the bytes written.
///
/// # Errors
/// Reading, writing, liblzma.
pub fn compress(input: &mut dyn Read, out: &mut dyn Write) -> Result<u64> {
    let mut done = false;
    compress_chunks(
        &mut || {
            if done {
                return Ok(None);
            }
            let data = read_block(input)?;
            done = data.len() < BLOCK_SIZE;
            Ok(if data.is_empty() { None } else { Some(Chunk::of(data)) })
        },
        out,
    )
}

/// [`compress`] of a file whose holes (`lseek(SEEK_DATA)`, as a sparse disk image has them) are
/// known to be zeros without reading them: a block with no data in it is never read.
///
/// # Errors
/// Reading, writing, liblzma.
pub fn compress_file(file: &std::fs::File, out: &mut dyn Write) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let mut offset = 0u64;
    compress_chunks(
        &mut || {
            if offset >= size {
                return Ok(None);
            }
            let len = (size - offset).min(BLOCK_SIZE as u64);
            let start = offset;
            offset += len;
            if len == BLOCK_SIZE as u64 {
                match nix::unistd::lseek(file, start as i64, nix::unistd::Whence::SeekData) {
                    Ok(data) if (data as u64) >= start + len => return Ok(Some(Chunk::Zeros)),
                    Err(nix::errno::Errno::ENXIO) => return Ok(Some(Chunk::Zeros)),
                    _ => {}
                }
            }
            let mut data = vec![0u8; len as usize];
            file.read_exact_at(&mut data, start)?;
            Ok(Some(Chunk::of(data)))
        },
        out,
    )
}

type NextChunk<'a> = dyn FnMut() -> Result<Option<Chunk>> + 'a;

fn compress_chunks(next: &mut NextChunk<'_>, out: &mut dyn Write) -> Result<u64> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut zero_block: Option<Block> = None;
    let mut records: Vec<(u64, u64)> = Vec::new();
    let mut written = 0u64;
    let mut put = |out: &mut dyn Write, bytes: &[u8]| -> Result<()> {
        out.write_all(bytes)?;
        written += bytes.len() as u64;
        Ok(())
    };

    let mut header = b"\xFD7zXZ\x00".to_vec();
    header.extend_from_slice(&STREAM_FLAGS);
    header.extend_from_slice(&crc32fast::hash(&STREAM_FLAGS).to_le_bytes());
    put(out, &header)?;

    let mut done = false;
    while !done {
        // Up to `threads` blocks ahead; the ones with data are compressed side by side.
        let mut chunks = Vec::with_capacity(threads);
        while chunks.len() < threads {
            match next()? {
                Some(c) => chunks.push(c),
                None => {
                    done = true;
                    break;
                }
            }
        }
        if chunks.iter().any(|c| matches!(c, Chunk::Zeros)) && zero_block.is_none() {
            zero_block = Some(block(&vec![0u8; BLOCK_SIZE])?);
        }
        let blocks: Vec<Result<Block>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|c| match c {
                    Chunk::Zeros => None,
                    Chunk::Data(d) => Some(s.spawn(move || block(d))),
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Some(h) => h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("an xz block thread panicked"))),
                    None => Ok(zero_block.clone().expect("compressed above")),
                })
                .collect()
        });
        for b in blocks {
            let b = b?;
            put(out, &b.bytes)?;
            records.push((b.unpadded, b.uncompressed));
        }
    }

    let mut index = vec![0u8];
    vli(&mut index, records.len() as u64);
    for (unpadded, uncompressed) in &records {
        vli(&mut index, *unpadded);
        vli(&mut index, *uncompressed);
    }
    pad4(&mut index);
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    put(out, &index)?;

    let mut tail = ((index.len() / 4 - 1) as u32).to_le_bytes().to_vec();
    tail.extend_from_slice(&STREAM_FLAGS);
    let mut footer = crc32fast::hash(&tail).to_le_bytes().to_vec();
    footer.extend_from_slice(&tail);
    footer.extend_from_slice(b"YZ");
    put(out, &footer)?;
    Ok(written)
}

/// Reads up to [`BLOCK_SIZE`] bytes (fewer only at the end of `input`).
fn read_block(input: &mut dyn Read) -> Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(BLOCK_SIZE);
    input.take(BLOCK_SIZE as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut xz = Vec::new();
        let n = compress(&mut &data[..], &mut xz).unwrap();
        assert_eq!(n as usize, xz.len());
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new(&xz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the decoded bytes differ");
        xz
    }

    /// Zero blocks, data blocks, a short last block and nothing at all decode to what went in
    /// through liblzma's own stream decoder (which checks every CRC and the index), the output
    /// is the same every time, and zeros cost almost nothing.
    #[test]
    fn blocks_of_zeros_and_data_decode_to_the_input() {
        assert!(roundtrip(&[]).len() < 64);
        let mut data = vec![0u8; 3 * BLOCK_SIZE + 12_345];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in &mut data[BLOCK_SIZE + 100..BLOCK_SIZE + 300_000] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        data[3 * BLOCK_SIZE + 5] = 7;
        let a = roundtrip(&data);
        let mut again = Vec::new();
        compress(&mut &data[..], &mut again).unwrap();
        assert!(a == again, "not reproducible");
        assert!(a.len() < 400_000, "{} bytes", a.len());
    }

    /// A sparse file compresses to the same bytes as its contents read in full, holes unread.
    #[test]
    fn a_sparse_file_gives_the_same_stream() {
        let dir = std::env::temp_dir().join(format!("moonboot-xz-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.raw");
        let size = 5 * BLOCK_SIZE as u64 + 4096;
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(size).unwrap();
            f.write_all_at(b"boot", 512).unwrap();
            f.write_all_at(&[9u8; 70_000], 3 * BLOCK_SIZE as u64 - 100).unwrap();
            f.write_all_at(b"GPT", size - 512).unwrap();
        }
        let data = std::fs::read(&path).unwrap();
        let mut a = Vec::new();
        compress(&mut &data[..], &mut a).unwrap();
        let mut b = Vec::new();
        compress_file(&std::fs::File::open(&path).unwrap(), &mut b).unwrap();
        assert!(a == b, "different streams");
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new(&b[..]).read_to_end(&mut back).unwrap();
        assert!(back == data);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Debian's `xz` (the reader a user has) tests the stream and lists its blocks.
    #[test]
    fn xz_utils_reads_it() {
        if std::process::Command::new("xz").arg("--version").output().is_err() {
            return;
        }
        let data: Vec<u8> = (0..BLOCK_SIZE + 1000).map(|i| if i % 4096 < 8 { i as u8 } else { 0 }).collect();
        let mut xz = Vec::new();
        compress(&mut &data[..], &mut xz).unwrap();
        let dir = std::env::temp_dir().join(format!("moonboot-xz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.xz");
        std::fs::write(&file, &xz).unwrap();
        let out = std::process::Command::new("xz").args(["--robot", "--list"]).arg(&file).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        // `totals` line: streams, blocks, compressed, uncompressed, ratio, check.
        let totals = text.lines().find(|l| l.starts_with("totals")).unwrap();
        let f: Vec<&str> = totals.split('\t').collect();
        assert_eq!((f[1], f[2], f[4], f[6]), ("1", "2", &*data.len().to_string(), "CRC64"), "{totals}");
        let t = std::process::Command::new("xz").args(["-t"]).arg(&file).status().unwrap();
        assert!(t.success());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
