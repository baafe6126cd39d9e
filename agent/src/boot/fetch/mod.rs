//! Getting the next kernel, initramfs and default command line into memfds, verified.
//!
//! Three kinds of source (ARCHITECTURE.md "The boot artifact"):
//! - a **boot artifact** (`boot_artifact::artifact`): three one-file tar layers found by their
//!   `dev.moonboot.boot.role` annotation;
//! - a **stock Talos image**: an imager image with `usr/install/<arch>/{vmlinuz,initramfs.xz}`
//!   (Talos `pkg/imager/profile/input.go`), or an installer image with the UKI
//!   `usr/install/<arch>/vmlinuz.efi` (Talos ≥ 1.10, `pkg/imager/out.go`), whose `.linux`,
//!   `.initrd` and `.cmdline` PE sections are used; every layer is searched;
//! - plain **URLs** with sha256 sums.
//!
//! Every blob streams from the network through sha256 (in `moonboot_registry`, or here for URLs)
//! and, on a separate thread, through decompression and tar parsing into memfds: no temporary
//! files, no whole-blob buffers. Nothing is used before every blob's digest has been checked.
//! Layers are bounded: a wanted file larger than its limit, a layer decompressing to more than
//! [`MAX_LAYER_EXPANSION`] × its size, a wanted path that is a symlink, hard link or device, and a
//! path with `..` are refused.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use boot_artifact::artifact::{self, Role};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::kernel::{self, KernelFormat};
use boot_artifact::pe::Uki;
use boot_artifact::reference::Reference;
use moonboot_registry::{Descriptor, Registry, Resolved};
use serde::Serialize;

/// Largest kernel accepted (raw or unpacked), in bytes.
pub const MAX_KERNEL_SIZE: u64 = kernel::DEFAULT_MAX_KERNEL_SIZE;
/// Largest initramfs accepted, in bytes.
pub const MAX_INITRAMFS_SIZE: u64 = 2 << 30;
/// Largest UKI accepted, in bytes.
pub const MAX_UKI_SIZE: u64 = MAX_KERNEL_SIZE + MAX_INITRAMFS_SIZE;
/// Largest default command line read from an artifact or UKI, in bytes.
pub const MAX_CMDLINE_SIZE: u64 = 4096;
/// A compressed layer may expand to at most this many times its size (plus 64 MiB) before the
/// decompression is stopped as a bomb.
pub const MAX_LAYER_EXPANSION: u64 = 64;

/// Chunks in flight between a download and its extractor thread (each ≤ a few hundred KiB).
const CHANNEL_DEPTH: usize = 32;

/// Read size when copying a file out of a layer into its memfd: 1 MiB.
const COPY_BUFFER: usize = 1 << 20;

/// Why fetching failed; [`Error::exit_code`] maps each to the documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not serve the reference or a blob.
    #[error(transparent)]
    Registry(#[from] moonboot_registry::Error),
    /// A URL could not be fetched.
    #[error("{url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why (after retries).
        reason: String,
    },
    /// Bytes fetched by URL did not match the sha256 given.
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual}")]
    UrlDigest {
        /// The URL.
        url: String,
        /// The `--*-sha256` value.
        expected: Sha256Digest,
        /// What arrived.
        actual: Sha256Digest,
    },
    /// The image is not something that can be booted (names what is missing or wrong).
    #[error("{0}")]
    Content(String),
    /// A layer or file broke a safety rule (hostile path, symlink, size bound).
    #[error("{layer}: {reason}")]
    Refused {
        /// The layer (`layer sha256:…`).
        layer: String,
        /// The rule broken.
        reason: String,
    },
    /// The kernel is not loadable (format, decompression).
    #[error("kernel: {0}")]
    Kernel(#[from] kernel::KernelError),
    /// A memfd could not be created or written.
    #[error("memfd: {0}")]
    Memfd(io::Error),
}

impl Error {
    /// The exit code `talos-agent boot` documents for this error: 3 unreachable source,
    /// 4 verification failure, 5 invalid content.
    pub fn exit_code(&self) -> u8 {
        use super::exit;
        use moonboot_registry::Error as R;
        match self {
            Error::Registry(R::DigestMismatch { .. } | R::SizeMismatch { .. }) | Error::UrlDigest { .. } => exit::VERIFY,
            Error::Registry(R::Unavailable { .. } | R::AuthFile(_) | R::CaFile { .. } | R::Tls { .. } | R::Push { .. }) => {
                exit::UNAVAILABLE
            }
            Error::Url { .. } => exit::UNAVAILABLE,
            Error::Memfd(_) => exit::INTERNAL,
            _ => exit::CONTENT,
        }
    }
}

/// Where the boot files come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An OCI reference: a boot artifact, or a stock Talos imager/installer image.
    Image(Reference),
    /// Plain URLs with their sha256 sums.
    Urls {
        /// Kernel URL.
        kernel: String,
        /// Its sha256.
        kernel_sha256: Sha256Digest,
        /// Initramfs URL.
        initrd: String,
        /// Its sha256.
        initrd_sha256: Sha256Digest,
    },
}

/// What kind of image the reference named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A moonboot boot artifact.
    BootArtifact,
    /// A Talos imager image (`vmlinuz` + `initramfs.xz`).
    TalosImager,
    /// A Talos installer image with a UKI.
    TalosUki,
    /// `--kernel`/`--initrd` URLs.
    Urls,
}

/// One verified blob, for the plan.
#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    /// `sha256:…`.
    pub digest: String,
    /// Bytes transferred and hashed.
    pub size: u64,
    /// Media type (or `url`).
    pub media_type: String,
    /// Seconds the transfer took.
    pub seconds: f64,
}

/// A file in a memfd, with the sha256 of its bytes.
#[derive(Debug)]
pub struct Memfile {
    /// The memfd, positioned anywhere.
    pub file: File,
    /// Length in bytes.
    pub len: u64,
    /// sha256 of the content.
    pub sha256: Sha256Digest,
}

/// Everything fetched and verified, ready for the command line and kexec.
#[derive(Debug)]
pub struct Fetched {
    /// The source's kind.
    pub kind: Kind,
    /// The resolution (for image sources).
    pub resolved: Option<ResolvedReport>,
    /// The loadable kernel (raw arm64 `Image` or bzImage).
    pub kernel: Memfile,
    /// How the kernel arrived (`EfiZboot(zstd)`, `Arm64Image`, `BzImage`…).
    pub kernel_container: String,
    /// The initramfs.
    pub initramfs: Memfile,
    /// The default command line of an artifact or UKI.
    pub cmdline: Option<String>,
    /// The blobs transferred.
    pub blobs: Vec<BlobReport>,
}

/// Where an image reference resolved to.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedReport {
    /// The reference as given.
    pub reference: String,
    /// The registry that served it (mirror or origin).
    pub endpoint: String,
    /// The index digest, if the reference named an index.
    pub index_digest: Option<String>,
    /// The platform manifest's digest.
    pub manifest_digest: String,
    /// The manifest's annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
}

fn memfd(name: &str) -> Result<File, Error> {
    let fd: OwnedFd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::Memfd(io::Error::from(e)))?;
    Ok(File::from(fd))
}

/// A `Write` that hands chunks to an extractor thread; reports the thread's failure as an I/O error.
struct ChannelWriter {
    tx: Option<SyncSender<Vec<u8>>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tx = self.tx.as_ref().ok_or_else(|| io::Error::other("extractor closed"))?;
        tx.send(buf.to_vec()).map_err(|_| io::Error::other("the extractor stopped (its error follows)"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The extractor side: a `Read` over the chunks.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Counts bytes read and fails past a bound (decompression bombs).
struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(format!("decompresses to more than {} bytes", self.limit)));
        }
        Ok(n)
    }
}

/// A file wanted from a layer: its path inside the tar and its size limit.
#[derive(Clone, Debug)]
struct Wanted {
    path: String,
    limit: u64,
}

/// Normalises a tar path (`./usr/x`, `/usr/x` → `usr/x`) and refuses `..`.
fn clean_path(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| format!("non-UTF-8 path {raw:?}"))?;
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("path {s:?} escapes the layer with `..`")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Reads a (decompressed) tar stream, copying wanted regular files into memfds.
fn extract_tar<R: Read>(r: R, wanted: &[Wanted], layer: &str) -> Result<Vec<(String, Memfile)>, Error> {
    let refused = |reason: String| Error::Refused { layer: layer.to_string(), reason };
    let mut archive = tar::Archive::new(r);
    let mut found = Vec::new();
    let entries = archive.entries().map_err(|e| refused(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refused(format!("reading tar: {e}")))?;
        let path = clean_path(&entry.path_bytes()).map_err(refused)?;
        let Some(w) = wanted.iter().find(|w| w.path == path) else { continue };
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(refused(format!("{path} is a {kind:?}, not a regular file (links are not followed)")));
        }
        let size = entry.header().size().map_err(|e| refused(format!("{path}: bad size: {e}")))?;
        if size > w.limit {
            return Err(refused(format!("{path} is {size} bytes, over the {}-byte limit", w.limit)));
        }
        if found.iter().any(|(p, _): &(String, Memfile)| *p == path) {
            return Err(refused(format!("{path} appears twice")));
        }
        let mut file = memfd(&path.replace('/', "_"))?;
        let mut hashing = boot_artifact::digest::HashingWriter::new(&mut file);
        // 1 MiB reads: io::copy's own 8 KiB buffer would mean one write(2) into the memfd per 8 KiB.
        let mut reader = io::BufReader::with_capacity(COPY_BUFFER, (&mut entry).take(w.limit));
        let copied = io::copy(&mut reader, &mut hashing).map_err(|e| refused(format!("{path}: {e}")))?;
        let sha256 = hashing.digest();
        found.push((path, Memfile { file, len: copied, sha256 }));
    }
    // Drain the end-of-archive padding so the sender never blocks.
    io::copy(archive.into_inner().by_ref(), &mut io::sink()).map_err(|e| refused(format!("reading tar: {e}")))?;
    Ok(found)
}

/// Downloads one layer blob and extracts `wanted` from it, concurrently.
async fn fetch_layer(
    registry: &Registry,
    resolved: &Resolved,
    layer: &Descriptor,
    wanted: Vec<Wanted>,
) -> Result<(Vec<(String, Memfile)>, BlobReport), Error> {
    let name = format!("layer {}", layer.digest);
    let media = layer.media_type.clone();
    let compression = if media.ends_with("+gzip") || media.ends_with(".tar.gzip") || media.ends_with("tar.gzip") {
        "gzip"
    } else if media.ends_with("+zstd") {
        "zstd"
    } else if media.ends_with(".tar") || media.ends_with("rootfs.diff.tar") {
        "none"
    } else {
        return Err(Error::Content(format!("{name}: unsupported layer media type {media}")));
    };
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let limit = layer.size.saturating_mul(MAX_LAYER_EXPANSION).saturating_add(64 << 20);
    let thread_name = name.clone();
    let extractor = std::thread::spawn(move || -> Result<Vec<(String, Memfile)>, Error> {
        let reader = ChannelReader { rx, chunk: Vec::new(), pos: 0 };
        let bomb = |e: io::Error| Error::Refused { layer: thread_name.clone(), reason: e.to_string() };
        match compression {
            "gzip" => {
                let r = Bounded { inner: flate2::read::MultiGzDecoder::new(reader), read: 0, limit };
                extract_tar(r, &wanted, &thread_name)
            }
            "zstd" => {
                let d = zstd::stream::read::Decoder::new(reader).map_err(bomb)?;
                extract_tar(Bounded { inner: d, read: 0, limit }, &wanted, &thread_name)
            }
            _ => extract_tar(reader, &wanted, &thread_name),
        }
    });
    let start = Instant::now();
    let mut writer = ChannelWriter { tx: Some(tx) };
    let fetched = registry.fetch_blob(resolved, layer, &mut writer).await;
    writer.tx = None; // EOF for the extractor
    let extracted = extractor.join().map_err(|_| Error::Content(format!("{name}: extractor panicked")))?;
    // The download's verdict comes first: a digest failure explains a broken stream.
    fetched?;
    let files = extracted?;
    let report = BlobReport {
        digest: layer.digest.to_string(),
        size: layer.size,
        media_type: media,
        seconds: start.elapsed().as_secs_f64(),
    };
    tracing_line(&format!(
        "fetched {name} ({:.1} MiB in {:.2} s, verified)",
        layer.size as f64 / (1 << 20) as f64,
        report.seconds
    ));
    Ok((files, report))
}

fn tracing_line(s: &str) {
    super::log(s);
}

/// Turns whatever kernel arrived into a loadable one for `arch` (`arm64`: raw `Image`, unpacking
/// EFI zboot or gzip; `amd64`: bzImage).
fn loadable_kernel(mut k: Memfile, arch: &str) -> Result<(Memfile, String), Error> {
    k.file.seek(SeekFrom::Start(0)).map_err(Error::Memfd)?;
    let format = kernel::detect_file(&mut k.file)?;
    match (arch, &format) {
        ("amd64", KernelFormat::BzImage { .. }) => Ok((k, "BzImage".into())),
        ("arm64", KernelFormat::Arm64Image(_)) => Ok((k, "Arm64Image".into())),
        ("arm64", KernelFormat::EfiZboot(_) | KernelFormat::Gzip | KernelFormat::Zstd) => {
            let container = match &format {
                KernelFormat::EfiZboot(z) => format!("EfiZboot({})", z.compression),
                other => format!("{other:?}"),
            };
            let mut out = memfd("kernel")?;
            let mut hashing = boot_artifact::digest::HashingWriter::new(&mut out);
            let unpacked = kernel::unpack_arm64(&mut k.file, &mut hashing, MAX_KERNEL_SIZE)?;
            let sha256 = hashing.digest();
            Ok((Memfile { file: out, len: unpacked.len, sha256 }, container))
        }
        (arch, other) => Err(Error::Content(format!("the kernel is {other:?}, which cannot be loaded on {arch}"))),
    }
}

fn read_cmdline(mut f: Memfile) -> Result<String, Error> {
    let mut s = String::new();
    f.file.seek(SeekFrom::Start(0)).map_err(Error::Memfd)?;
    (&mut f.file)
        .take(MAX_CMDLINE_SIZE)
        .read_to_string(&mut s)
        .map_err(|_| Error::Content("the default command line is not UTF-8".into()))?;
    Ok(s)
}

/// Copies `range` of `src` into a new memfd.
fn section(src: &mut File, range: std::ops::Range<u64>, name: &str) -> Result<Memfile, Error> {
    src.seek(SeekFrom::Start(range.start)).map_err(Error::Memfd)?;
    let mut out = memfd(name)?;
    let mut hashing = boot_artifact::digest::HashingWriter::new(&mut out);
    let len = io::copy(&mut src.take(range.end - range.start), &mut hashing).map_err(Error::Memfd)?;
    let sha256 = hashing.digest();
    Ok(Memfile { file: out, len, sha256 })
}

/// Resolves `reference` for `arch` and fetches what boots it.
pub async fn fetch_image(registry: &Registry, reference: &Reference, arch: &str) -> Result<Fetched, Error> {
    let resolved = registry.resolve(reference, arch).await?;
    super::log(&format!(
        "resolved {reference} for linux/{arch} at {} to {}",
        resolved.endpoint.host, resolved.manifest_digest
    ));
    let report = ResolvedReport {
        reference: reference.to_string(),
        endpoint: resolved.endpoint.host.clone(),
        index_digest: resolved.index_digest.map(|d| d.to_string()),
        manifest_digest: resolved.manifest_digest.to_string(),
        annotations: resolved.manifest.annotations.clone(),
    };
    let is_artifact = resolved.manifest.annotations.get(artifact::ANNOTATION_FORMAT).map(String::as_str)
        == Some(artifact::FORMAT_VERSION);

    // Which layers to fetch and what to take from each.
    let mut jobs: Vec<(Descriptor, Vec<Wanted>)> = Vec::new();
    if is_artifact {
        for role in Role::ALL {
            let layer = resolved
                .manifest
                .layers
                .iter()
                .find(|l| l.annotations.get(artifact::ANNOTATION_ROLE).map(String::as_str) == Some(role.as_str()))
                .ok_or_else(|| Error::Content(format!("{reference}: boot artifact has no {} layer", role.as_str())))?;
            let limit = match role {
                Role::Kernel => MAX_KERNEL_SIZE,
                Role::Initramfs => MAX_INITRAMFS_SIZE,
                Role::Cmdline => MAX_CMDLINE_SIZE,
            };
            jobs.push((layer.clone(), vec![Wanted { path: role.path().into(), limit }]));
        }
    } else {
        let (vmlinuz, initramfs) = artifact::imager_paths(arch);
        let uki = artifact::installer_uki_path(arch);
        let wanted = vec![
            Wanted { path: vmlinuz, limit: MAX_KERNEL_SIZE },
            Wanted { path: initramfs, limit: MAX_INITRAMFS_SIZE },
            Wanted { path: uki, limit: MAX_UKI_SIZE },
        ];
        for l in &resolved.manifest.layers {
            jobs.push((l.clone(), wanted.clone()));
        }
    }
    let results = futures_util::future::try_join_all(jobs.into_iter().map(|(layer, wanted)| {
        let resolved = &resolved;
        async move { fetch_layer(registry, resolved, &layer, wanted).await }
    }))
    .await?;
    let mut files: Vec<(String, Memfile)> = Vec::new();
    let mut blobs = Vec::new();
    for (found, blob) in results {
        for (path, f) in found {
            // A later layer's file replaces an earlier one's, as in an unpacked image.
            files.retain(|(p, _)| *p != path);
            files.push((path, f));
        }
        blobs.push(blob);
    }
    let mut take = |path: &str| files.iter().position(|(p, _)| p == path).map(|i| files.remove(i).1);

    if is_artifact {
        let k = take(Role::Kernel.path()).ok_or_else(|| Error::Content("kernel layer holds no boot/kernel".into()))?;
        let i = take(Role::Initramfs.path())
            .ok_or_else(|| Error::Content("initramfs layer holds no boot/initramfs".into()))?;
        let c =
            take(Role::Cmdline.path()).ok_or_else(|| Error::Content("cmdline layer holds no boot/cmdline".into()))?;
        let (kernel, container) = loadable_kernel(k, arch)?;
        return Ok(Fetched {
            kind: Kind::BootArtifact,
            resolved: Some(report),
            kernel,
            kernel_container: container,
            initramfs: i,
            cmdline: Some(read_cmdline(c)?),
            blobs,
        });
    }
    let (vmlinuz, initramfs) = artifact::imager_paths(arch);
    if let (Some(k), Some(i)) = (take(&vmlinuz), take(&initramfs)) {
        let (kernel, container) = loadable_kernel(k, arch)?;
        return Ok(Fetched {
            kind: Kind::TalosImager,
            resolved: Some(report),
            kernel,
            kernel_container: container,
            initramfs: i,
            cmdline: None,
            blobs,
        });
    }
    if let Some(mut u) = take(&artifact::installer_uki_path(arch)) {
        u.file.seek(SeekFrom::Start(0)).map_err(Error::Memfd)?;
        let uki = Uki::read(&mut u.file)
            .map_err(|e| Error::Content(format!("{}: {e}", artifact::installer_uki_path(arch))))?;
        let k = section(&mut u.file, uki.linux, "kernel")?;
        let i = section(&mut u.file, uki.initrd, "initramfs")?;
        let c = section(&mut u.file, uki.cmdline, "cmdline")?;
        drop(u);
        let (kernel, container) = loadable_kernel(k, arch)?;
        return Ok(Fetched {
            kind: Kind::TalosUki,
            resolved: Some(report),
            kernel,
            kernel_container: format!("UKI .linux: {container}"),
            initramfs: i,
            cmdline: Some(read_cmdline(c)?),
            blobs,
        });
    }
    Err(Error::Content(format!(
        "{reference}: neither a boot artifact (no {} annotation) nor a Talos image (no /{vmlinuz} + /{initramfs}, no /{})",
        artifact::ANNOTATION_FORMAT,
        artifact::installer_uki_path(arch)
    )))
}

/// Downloads `url` into a memfd, verifying sha256 and bounding the size; retries transient failures
/// (connection errors, 5xx) from the start with backoff.
async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
    expected: Sha256Digest,
    limit: u64,
    retries: u32,
) -> Result<(Memfile, BlobReport), Error> {
    use futures_util::StreamExt;
    let err = |reason: String| Error::Url { url: url.to_string(), reason };
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        let mut file = memfd("url")?;
        let outcome: Result<(u64, Sha256Digest), (bool, String)> = async {
            let resp = client.get(url).send().await.map_err(|e| (true, e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                return Err((status.is_server_error() || status.as_u16() == 429, format!("HTTP {status}")));
            }
            let mut hashing = boot_artifact::digest::HashingWriter::new(&mut file);
            let mut n = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| (true, format!("transfer interrupted after {n} bytes: {e}")))?;
                n += chunk.len() as u64;
                if n > limit {
                    return Err((false, format!("larger than the {limit}-byte limit")));
                }
                hashing.write_all(&chunk).map_err(|e| (false, format!("memfd: {e}")))?;
            }
            Ok((n, hashing.digest()))
        }
        .await;
        match outcome {
            Ok((len, actual)) => {
                if actual != expected {
                    return Err(Error::UrlDigest { url: url.to_string(), expected, actual });
                }
                let report = BlobReport {
                    digest: actual.to_string(),
                    size: len,
                    media_type: "url".into(),
                    seconds: start.elapsed().as_secs_f64(),
                };
                super::log(&format!("fetched {url} ({:.1} MiB, verified)", len as f64 / (1 << 20) as f64));
                return Ok((Memfile { file, len, sha256: actual }, report));
            }
            Err((true, reason)) if attempt < retries => {
                super::log(&format!("{url}: {reason}; retrying"));
                tokio::time::sleep(Duration::from_millis(200) * (1 << attempt.min(4))).await;
                attempt += 1;
            }
            Err((_, reason)) => return Err(err(reason)),
        }
    }
}

/// Fetches kernel and initramfs by URL, in parallel.
pub async fn fetch_urls(
    kernel_url: &str,
    kernel_sha256: Sha256Digest,
    initrd_url: &str,
    initrd_sha256: Sha256Digest,
    arch: &str,
    retries: u32,
) -> Result<Fetched, Error> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Url { url: kernel_url.into(), reason: e.to_string() })?;
    let (k, i) = futures_util::future::try_join(
        fetch_url(&client, kernel_url, kernel_sha256, MAX_KERNEL_SIZE, retries),
        fetch_url(&client, initrd_url, initrd_sha256, MAX_INITRAMFS_SIZE, retries),
    )
    .await?;
    let (kernel, container) = loadable_kernel(k.0, arch)?;
    Ok(Fetched {
        kind: Kind::Urls,
        resolved: None,
        kernel,
        kernel_container: container,
        initramfs: i.0,
        cmdline: None,
        blobs: vec![k.1, i.1],
    })
}
