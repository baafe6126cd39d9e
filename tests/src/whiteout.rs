//! Stand-in Talos imager images whose top layer deletes or replaces `usr/install/arm64/vmlinuz`,
//! for proving that `talos-agent boot` and the imager read the same file out of an image (OCI
//! image-spec `layer.md` whiteouts: a file a later layer deletes is not in the image).
//!
//! Both images are the fixture `siderolabs/imager` arm64 image's layers plus one layer:
//! - **deleted**: `usr/install/arm64/.wh.vmlinuz` — the image holds no kernel any more;
//! - **replaced**: `usr/install/arm64/vmlinuz` is the raw arm64 `Image` (the zboot payload,
//!   unpacked, with a marker appended so its digest differs from what unpacking the original gives).
//!
//! They are pushed with `skopeo copy` to the fixture registry as
//! `moonboot-test/whiteout-{deleted,replaced}-<pid>-<n>:v1`, repositories of the calling test alone
//! ([`crate::fixtures::unique_repository`]): the imager's and the agent's tests push them at the
//! same time.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::Platform;

use crate::fixtures::Fixtures;
use crate::oci::{layout_layers, Layer, LayerBuilder, Layout};

/// The two pushed images and what the replaced one holds.
#[derive(Debug, Clone)]
pub struct WhiteoutImages {
    /// `REGISTRY/moonboot-test/whiteout-deleted-<pid>-<n>:v1`: the kernel deleted by a whiteout.
    pub deleted: String,
    /// `REGISTRY/moonboot-test/whiteout-replaced-<pid>-<n>:v1`: the kernel replaced by a raw `Image`.
    pub replaced: String,
    /// The replacement kernel's bytes.
    pub replacement: Vec<u8>,
    /// `sha256:` of the replacement.
    pub replacement_sha256: String,
}

/// The path both sides must agree on.
pub const KERNEL_PATH: &str = "usr/install/arm64/vmlinuz";

fn base_layers(f: &Fixtures) -> Result<Vec<Layer>> {
    let img = f.images.get("imager").context("no imager image in the fixtures")?;
    layout_layers(&img.layout, &img.tag, "arm64")?
        .into_iter()
        .map(|blob| {
            let mut tar = Vec::new();
            flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar)?;
            Ok(Layer {
                digest: Sha256Digest::of(&blob),
                diff_id: Sha256Digest::of(&tar),
                blob,
                comment: "stand-in Talos imager layer (TEST FIXTURE)".into(),
            })
        })
        .collect()
}

fn push(f: &Fixtures, work: &Path, name: &str, layers: &[&Layer]) -> Result<String> {
    let dir = work.join(format!("layout-{name}"));
    let layout = Layout::create(&dir)?;
    let desc = layout.put_image(&Platform::linux("arm64"), layers, 0, &BTreeMap::new(), &BTreeMap::new())?;
    layout.finish_index(vec![desc], &BTreeMap::new(), "v1")?;
    let repository = crate::fixtures::unique_repository(&format!("moonboot-test/{name}"));
    let reference = format!("{}/{repository}:v1", f.registry);
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", dir.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .context("running skopeo")?;
    ensure!(out.status.success(), "skopeo copy to {reference}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(reference)
}

/// Builds both images under `work` and pushes them to repositories of their own in the fixture
/// registry.
///
/// # Errors
/// Reading the fixtures, unpacking the kernel, `skopeo`.
pub fn push_whiteout_images(f: &Fixtures, work: &Path) -> Result<WhiteoutImages> {
    let base = base_layers(f)?;
    let mut base_refs: Vec<&Layer> = base.iter().collect();

    let mut deleting = LayerBuilder::new(f.source_date_epoch);
    deleting.file("usr/install/arm64/.wh.vmlinuz", Vec::new(), 0o644);
    let deleting = deleting.build("deletes usr/install/arm64/vmlinuz (TEST)")?;

    let mut replacement = std::fs::read(&f.arches["arm64"].kernel_image).context("reading the raw arm64 Image")?;
    ensure!(
        boot_artifact::kernel::arm64_header(&replacement).is_some(),
        "{} is not an arm64 Image",
        f.arches["arm64"].kernel_image.display()
    );
    replacement.extend_from_slice(&[0u8; 4096]);
    replacement.extend_from_slice(b"moonboot whiteout test: the replacement kernel\n");
    let mut replacing = LayerBuilder::new(f.source_date_epoch);
    replacing.file(KERNEL_PATH, replacement.clone(), 0o644);
    let replacing = replacing.build("replaces usr/install/arm64/vmlinuz (TEST)")?;

    base_refs.push(&deleting);
    let deleted = push(f, work, "whiteout-deleted", &base_refs)?;
    base_refs.pop();
    base_refs.push(&replacing);
    let replaced = push(f, work, "whiteout-replaced", &base_refs)?;
    Ok(WhiteoutImages {
        deleted,
        replaced,
        replacement_sha256: Sha256Digest::of(&replacement).to_string(),
        replacement,
    })
}
