//! What `imager build` writes as OCI image layouts: the boot artifact (`boot-<arch>/`, format 2:
//! an OCI 1.1 artifact of raw blobs, its contract in [`boot_artifact::artifact`]) and the talos-agent extension image, both
//! through [`LayoutWriter`] (compact JSON with a fixed key order: equal inputs, equal digests;
//! `index.json` lists the one image with its platform and tag).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use boot_artifact::artifact::{self, ExtensionAnnotation, Role};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::oci::{media_type, Descriptor, ANNOTATION_CREATED, ANNOTATION_TITLE};

use crate::oci_layout::LayoutWriter;

/// A tar holding one regular file `path` (mode 0644, uid/gid 0, `mtime`), as a format-1 boot
/// artifact's layers are.
pub fn one_file_tar(path: &str, data: &[u8], mtime: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() + 2048);
    {
        let mut b = tar::Builder::new(&mut out);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)?;
        b.finish()?;
    }
    Ok(out)
}

/// What goes into a boot artifact.
pub struct BootArtifact<'a> {
    /// `arm64` / `amd64`.
    pub arch: &'a str,
    /// The loadable kernel (arm64 `Image`, x86 bzImage).
    pub kernel: &'a [u8],
    /// The initramfs with extensions.
    pub initramfs: &'a [u8],
    /// The default command line.
    pub cmdline: &'a str,
    /// `vX.Y.Z`.
    pub talos_version: &'a str,
    /// Schematic ID.
    pub schematic_id: &'a str,
    /// Extensions in layer order.
    pub extensions: &'a [ExtensionAnnotation],
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
}

/// Writes the boot artifact (format 2) as an OCI layout in `dir` (tag = the Talos version):
/// the empty config, one raw blob per file with its role's media type and title, the manifest
/// annotations. Returns the manifest descriptor.
///
/// # Errors
/// I/O.
pub fn write_boot_artifact(dir: &Path, a: &BootArtifact<'_>) -> Result<Descriptor> {
    let layout = LayoutWriter::create(dir)?;
    let mut layers = Vec::new();
    for role in Role::ALL {
        let data: &[u8] = match role {
            Role::Kernel => a.kernel,
            Role::Initramfs => a.initramfs,
            Role::Cmdline => a.cmdline.as_bytes(),
        };
        let mut d = layout.blob(role.media_type(), data)?;
        d.annotations.insert(ANNOTATION_TITLE.into(), role.title().into());
        layers.push(d);
    }
    let created = rfc3339(a.epoch);
    let annotations = artifact::manifest_annotations(a.talos_version, a.schematic_id, a.extensions, &created);
    layout.finish_artifact(a.arch, artifact::ARTIFACT_TYPE, layers, annotations, a.talos_version)
}

/// Writes an extension image (one gzip'd tar layer) as an OCI layout in `dir` with tag `tag`.
///
/// # Errors
/// I/O.
pub fn write_extension_image(dir: &Path, arch: &str, layer_tar: &[u8], epoch: u64, tag: &str) -> Result<Descriptor> {
    let layout = LayoutWriter::create(dir)?;
    let mut gz =
        flate2::GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), flate2::Compression::default());
    gz.write_all(layer_tar)?;
    let blob = gz.finish()?;
    let layer = layout.blob(media_type::OCI_LAYER_TAR_GZIP, &blob)?;
    let created = rfc3339(epoch);
    let annotations = BTreeMap::from([(ANNOTATION_CREATED.to_string(), created.clone())]);
    layout.finish_image(arch, &created, vec![layer], vec![Sha256Digest::of(layer_tar)], annotations, tag)
}

/// Seconds since the epoch as RFC 3339 UTC (`2025-07-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// (year, month 1–12, day 1–31) of a count of days since 1970-01-01 in the proleptic Gregorian
/// calendar (era-based, Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_751_328_000), "2025-07-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn one_file_tar_holds_exactly_one_regular_file() {
        let t = one_file_tar("boot/cmdline", b"console=ttyAMA0", 5).unwrap();
        let mut a = tar::Archive::new(&t[..]);
        let entries: Vec<_> = a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(entries, ["boot/cmdline"]);
    }
}
