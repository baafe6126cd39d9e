//! One layer: downloaded (verified by `moonboot_registry`) and, on its own thread, read by the
//! shared layer reader, the wanted files copied into memfds as they stream past; or, for a
//! format-2 boot artifact, one raw blob streamed straight into its memfd, hashed once.

use std::io::{self, Read};
use std::time::Instant;

use boot_artifact::digest::HashingWriter;
use boot_artifact::layer::{self, LayerError, LayerFiles, Wanted};
use boot_artifact::oci::media_type;
use moonboot_registry::{Descriptor, Registry, Resolved};

use super::channel::channel;
use super::{memfd, BlobReport, Error, Memfile};

/// Read size when copying a file out of a layer into its memfd: 1 MiB (one `write(2)` per MiB
/// rather than per 8 KiB).
const COPY_BUFFER: usize = 1 << 20;

/// Copies one wanted file into a new memfd, hashing the exact bytes that will be loaded.
fn to_memfd(path: &str, content: &mut dyn Read, _limit: u64) -> Result<Memfile, LayerError> {
    let store = |source: io::Error| LayerError::Store { path: path.to_string(), source };
    let mut file = memfd(&path.replace('/', "_")).map_err(|e| store(io::Error::other(e)))?;
    let mut hashing = HashingWriter::new(&mut file);
    let mut reader = io::BufReader::with_capacity(COPY_BUFFER, content);
    let len = io::copy(&mut reader, &mut hashing).map_err(store)?;
    let sha256 = hashing.digest();
    Ok(Memfile { file, len, sha256 })
}

/// Downloads the raw blob `desc` of `resolved` (a format-2 boot artifact's file) into a new memfd
/// named `name`. The registry hashes the stream as it arrives and checks digest and size at the
/// end; that single pass is the file's digest, so the memfd's [`Memfile::sha256`] is `desc`'s.
/// On any error the memfd is dropped: its bytes are never used.
///
/// # Errors
/// The registry's (unreachable, digest or size mismatch); [`Error::Memfd`].
pub(super) async fn fetch_raw_blob(
    registry: &Registry,
    resolved: &Resolved,
    desc: &Descriptor,
    name: &str,
) -> Result<(Memfile, BlobReport), Error> {
    let file = memfd(name)?;
    let start = Instant::now();
    // Received on this task, hashed and written into the memfd on a thread of the registry's:
    // the two overlap on fast links.
    let writer = file.try_clone().map_err(Error::Memfd)?;
    registry.fetch_blob_threaded(resolved, desc, Box::new(writer)).await?;
    let report = transferred(desc, start, &format!("{name} blob"));
    Ok((Memfile { file, len: desc.size, sha256: desc.digest }, report))
}

/// The report of `desc`'s verified transfer, begun at `start`, also logged as `fetched WHAT …`.
fn transferred(desc: &Descriptor, start: Instant, what: &str) -> BlobReport {
    let report = BlobReport {
        digest: desc.digest.to_string(),
        size: desc.size,
        media_type: desc.media_type.clone(),
        seconds: start.elapsed().as_secs_f64(),
    };
    super::super::log(&format!(
        "fetched {what} {} ({:.1} MiB in {:.2} s, verified)",
        desc.digest,
        desc.size as f64 / (1 << 20) as f64,
        report.seconds
    ));
    report
}

/// Downloads the layer `desc` of `resolved` and extracts `wanted` from it concurrently. Returns
/// what the layer contributes (files and whiteouts) and the transfer's report.
///
/// # Errors
/// [`Error::Content`] for a blob that is not a tar layer; the registry's error (unreachable,
/// digest or size mismatch) first, since it explains a broken stream; else the extractor's
/// refusal as [`Error::Layer`], naming its cause.
pub(super) async fn fetch_layer(
    registry: &Registry,
    resolved: &Resolved,
    desc: &Descriptor,
    wanted: Vec<Wanted>,
) -> Result<(LayerFiles<Memfile>, BlobReport), Error> {
    if !media_type::is_tar_layer(&desc.media_type) {
        return Err(Error::Content(format!("layer {}: unsupported layer media type {}", desc.digest, desc.media_type)));
    }
    let (mut writer, reader) = channel();
    let limit = layer::expansion_limit(desc.size);
    let extractor = std::thread::spawn(move || layer::extract(reader, limit, &wanted, to_memfd));
    let start = Instant::now();
    let fetched = registry.fetch_blob(resolved, desc, &mut writer).await;
    writer.close();
    let extracted = extractor
        .join()
        .map_err(|_| Error::Content(format!("layer {}: the extractor panicked", desc.digest)))?
        .map_err(|source| Error::Layer { digest: desc.digest, source });
    match (fetched, extracted) {
        (Ok(()), Ok(files)) => Ok((files, transferred(desc, start, "layer"))),
        // The extractor refused the layer and so stopped reading: its reason is the cause.
        (Err(_), Err(refused)) if writer.extractor_stopped() => Err(refused),
        // Otherwise the download's verdict comes first: a digest or transfer failure explains
        // whatever the extractor saw of a broken stream.
        (Err(e), _) => Err(e.into()),
        (Ok(()), Err(refused)) => Err(refused),
    }
}
