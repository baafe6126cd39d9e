//! An image reference: a moonboot boot artifact, a stock Talos imager image, or a Talos
//! installer image with a UKI; every layer fetched in parallel, then stacked as an unpacked image
//! would be (a later layer's file or whiteout wins).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use boot_artifact::artifact::{self, BootBlob, Role};
use boot_artifact::digest::HashingWriter;
use boot_artifact::kernel::{self, KernelFormat};
use boot_artifact::layer::{self as layers, Wanted};
use boot_artifact::pe::Uki;
use boot_artifact::reference::Reference;
use moonboot_registry::Registry;

use super::layer::{fetch_layer, fetch_raw_blob};
use super::{
    memfd, BlobReport, Error, Fetched, Kind, Memfile, ResolvedReport, MAX_CMDLINE_SIZE, MAX_INITRAMFS_SIZE,
    MAX_KERNEL_SIZE, MAX_UKI_SIZE,
};

/// Turns whatever kernel arrived into a loadable one for `arch` (`arm64`: raw `Image`, unpacking
/// EFI zboot or gzip; `amd64`: bzImage).
pub(super) fn loadable_kernel(mut k: Memfile, arch: &str) -> Result<(Memfile, String), Error> {
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
            let mut hashing = HashingWriter::new(&mut out);
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

/// What an image gave, as a [`Fetched`]: the kernel made loadable for `arch` (a UKI's
/// container named as its `.linux` section), the command line read from its memfd.
fn finish(
    kind: Kind,
    report: ResolvedReport,
    kernel: Memfile,
    initramfs: Memfile,
    cmdline: Option<Memfile>,
    blobs: Vec<BlobReport>,
    arch: &str,
) -> Result<Fetched, Error> {
    let (kernel, container) = loadable_kernel(kernel, arch)?;
    let kernel_container = if kind == Kind::TalosUki { format!("UKI .linux: {container}") } else { container };
    let cmdline = cmdline.map(read_cmdline).transpose()?;
    Ok(Fetched { kind, resolved: Some(report), kernel, kernel_container, initramfs, cmdline, blobs })
}

/// Copies `range` of `src` into a new memfd.
fn section(src: &mut File, range: std::ops::Range<u64>, name: &str) -> Result<Memfile, Error> {
    src.seek(SeekFrom::Start(range.start)).map_err(Error::Memfd)?;
    let mut out = memfd(name)?;
    let mut hashing = HashingWriter::new(&mut out);
    let len = io::copy(&mut src.take(range.end - range.start), &mut hashing).map_err(Error::Memfd)?;
    let sha256 = hashing.digest();
    Ok(Memfile { file: out, len, sha256 })
}

/// Resolves `reference` for `arch` and fetches what boots it. With `signature_key`, the
/// image's cosign signature must verify before any layer is fetched: the signature of the digest
/// the reference pins, or of the one its tag resolved to (the index's, for an index); everything
/// below that digest is bound to it by content address.
pub async fn fetch_image(
    registry: &Registry,
    reference: &Reference,
    arch: &str,
    signature_key: Option<&boot_artifact::cosign::PublicKey>,
) -> Result<Fetched, Error> {
    let resolved = registry.resolve(reference, arch).await?;
    crate::boot::log(&format!(
        "resolved {reference} for linux/{arch} at {} to {}",
        resolved.endpoint.host, resolved.manifest_digest
    ));
    let signature = match signature_key {
        None => None,
        Some(key) => {
            let signed = resolved.top_digest();
            let v = registry.verify_cosign(reference, &signed, key).await?;
            crate::boot::log(&format!(
                "cosign signature of {signed} verified with key {} (signature manifest {})",
                v.key, v.signature_manifest
            ));
            Some(v)
        }
    };
    let boot = artifact::boot_layers(&resolved.manifest).map_err(|e| Error::Content(format!("{reference}: {e}")))?;
    let report = ResolvedReport {
        reference: reference.to_string(),
        endpoint: resolved.endpoint.host.clone(),
        index_digest: resolved.index_digest.map(|d| d.to_string()),
        manifest_digest: resolved.manifest_digest.to_string(),
        annotations: resolved.manifest.annotations.clone(),
        boot_artifact_format: boot.as_ref().map(|b| b.format),
        signature,
    };
    let is_artifact = boot.is_some();
    let limit = |role: Role| match role {
        Role::Kernel => MAX_KERNEL_SIZE,
        Role::Initramfs => MAX_INITRAMFS_SIZE,
        Role::Cmdline => MAX_CMDLINE_SIZE,
    };

    // Format 2: each file is its own blob, streamed into its memfd and hashed once.
    if let Some(boot) = boot.as_ref().filter(|b| b.format == 2) {
        let mut raw = Vec::new();
        for role in Role::ALL {
            let desc = boot.get(role).descriptor();
            if desc.size > limit(role) {
                return Err(Error::Content(format!(
                    "{reference}: the {} blob is {} bytes, over the {}-byte limit",
                    role.as_str(),
                    desc.size,
                    limit(role)
                )));
            }
            raw.push((role, desc.clone()));
        }
        let fetched = futures_util::future::try_join_all(raw.iter().map(|(role, desc)| {
            let resolved = &resolved;
            async move { fetch_raw_blob(registry, resolved, desc, role.as_str()).await }
        }))
        .await?;
        let (mut files, blobs): (Vec<_>, Vec<_>) = fetched.into_iter().unzip();
        let c = files.pop().expect("cmdline");
        let i = files.pop().expect("initramfs");
        let k = files.pop().expect("kernel");
        return finish(Kind::BootArtifact, report, k, i, Some(c), blobs, arch);
    }

    // Which layers to fetch and what to take from each.
    let mut jobs = Vec::new();
    if let Some(boot) = &boot {
        for role in Role::ALL {
            if let BootBlob::InTar { layer, path } = boot.get(role) {
                jobs.push((layer.clone(), vec![Wanted::new(path, limit(role))]));
            }
        }
    } else {
        let (vmlinuz, initramfs) = artifact::imager_paths(arch);
        let wanted = vec![
            Wanted::new(vmlinuz, MAX_KERNEL_SIZE),
            Wanted::new(initramfs, MAX_INITRAMFS_SIZE),
            Wanted::new(artifact::installer_uki_path(arch), MAX_UKI_SIZE),
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
    let (found, blobs): (Vec<_>, Vec<_>) = results.into_iter().unzip();
    // Base layer first: whiteouts and later files replace what lower layers gave.
    let mut files = layers::stack(found);
    let mut take = |path: &str| files.remove(path);

    if is_artifact {
        let k = take(Role::Kernel.path()).ok_or_else(|| Error::Content("kernel layer holds no boot/kernel".into()))?;
        let i = take(Role::Initramfs.path())
            .ok_or_else(|| Error::Content("initramfs layer holds no boot/initramfs".into()))?;
        let c =
            take(Role::Cmdline.path()).ok_or_else(|| Error::Content("cmdline layer holds no boot/cmdline".into()))?;
        return finish(Kind::BootArtifact, report, k, i, Some(c), blobs, arch);
    }
    let (vmlinuz, initramfs) = artifact::imager_paths(arch);
    if let (Some(k), Some(i)) = (take(&vmlinuz), take(&initramfs)) {
        return finish(Kind::TalosImager, report, k, i, None, blobs, arch);
    }
    if let Some(mut u) = take(&artifact::installer_uki_path(arch)) {
        u.file.seek(SeekFrom::Start(0)).map_err(Error::Memfd)?;
        let uki = Uki::read(&mut u.file)
            .map_err(|e| Error::Content(format!("{}: {e}", artifact::installer_uki_path(arch))))?;
        let k = section(&mut u.file, uki.linux, "kernel")?;
        let i = section(&mut u.file, uki.initrd, "initramfs")?;
        let c = section(&mut u.file, uki.cmdline, "cmdline")?;
        drop(u);
        return finish(Kind::TalosUki, report, k, i, Some(c), blobs, arch);
    }
    Err(Error::Content(format!(
        "{reference}: neither a boot artifact (no artifactType {} nor {} annotation) nor a Talos image (no /{vmlinuz} + \
         /{initramfs}, no /{})",
        artifact::ARTIFACT_TYPE,
        artifact::ANNOTATION_FORMAT,
        artifact::installer_uki_path(arch)
    )))
}
