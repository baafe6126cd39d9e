//! The text form of an inspection: one `field  value` line per fact.

use std::fmt::Write as _;

use super::model::{DiskImage, HybridState, Inspection};

fn size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{n} bytes ({:.1} MiB)", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Appends one `field  value` line: the field padded to 16 columns.
fn field(o: &mut String, k: &str, v: &str) {
    let _ = writeln!(o, "{k:<16}{v}");
}

/// The human-readable form of an inspection: one `field  value` line per fact.
pub fn render(i: &Inspection) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: &str| field(&mut o, k, v);
    line("source", &i.source);
    line("kind", &i.kind);
    line("platform", &i.platform);
    if let Some(d) = &i.index_digest {
        line("index", d);
    }
    line("manifest", &i.manifest_digest);
    line("config", &i.config_digest);
    if let Some(b) = &i.boot {
        line("talos version", b.talos_version.as_deref().unwrap_or("(not annotated)"));
        line("schematic id", b.schematic_id.as_deref().unwrap_or("(not annotated)"));
        if let Some(c) = &b.created {
            line("created", c);
        }
        if b.extensions.is_empty() {
            line("extensions", "(none)");
        }
        for (n, e) in b.extensions.iter().enumerate() {
            let v = format!(
                "{} {} {}",
                e.name,
                e.version,
                e.digest.map_or_else(|| "(built here)".to_string(), |d| d.to_string())
            );
            line(if n == 0 { "extensions" } else { "" }, &v);
        }
        line("cmdline", &b.cmdline);
        for (k, f) in [("kernel", &b.kernel), ("initramfs", &b.initramfs)] {
            line(k, &format!("{}, {}: {}", f.path, size(f.size), f.format.as_deref().unwrap_or("?")));
        }
    }
    if let Some(e) = &i.extension {
        line("extension", &format!("{} {}", e.name, e.version));
        if !e.author.is_empty() {
            line("author", &e.author);
        }
        if !e.description.is_empty() {
            line("description", &e.description);
        }
        line("talos compat.", if e.talos_compatibility.is_empty() { "(any)" } else { &e.talos_compatibility });
        line(
            "valid",
            e.problem.as_deref().map_or("yes (Talos's content rules)".to_string(), |p| format!("no: {p}")).as_str(),
        );
        line(
            "contents",
            &format!("{} files ({}), {} directories, {} symlinks", e.files, size(e.bytes), e.directories, e.symlinks),
        );
        for p in &e.paths {
            let v = match &p.target {
                Some(t) => format!("{} {} -> {t}", p.mode, p.path),
                None => format!("{} {} {}", p.mode, p.path, size(p.size)),
            };
            line("", &v);
        }
    }
    if let Some(t) = &i.talos_imager {
        for (arch, files) in &t.install {
            let label = format!("install {arch}");
            for (n, f) in files.iter().enumerate() {
                let mut v = format!("{} {}", f.path, size(f.size));
                if let Some(fmt) = &f.format {
                    v.push_str(&format!(": {fmt}"));
                }
                line(if n == 0 { &label } else { "" }, &v);
            }
        }
    }
    for (n, l) in i.layers.iter().enumerate() {
        let role = l.role.as_deref().map(|r| format!(" {r}")).unwrap_or_default();
        let v = format!("{} {} {}{role}, {} entries", l.digest, l.media_type, size(l.size), l.entries);
        line(if n == 0 { "layers" } else { "" }, &v);
    }
    if let Some(d) = &i.disk_image {
        o.push('\n');
        o.push_str(&render_disk(d));
    }
    o
}

/// The human-readable form of a disk image's inspection, in the same `field  value` lines.
pub fn render_disk(d: &DiskImage) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: &str| field(&mut o, k, v);
    line("source", &d.source);
    line("kind", &d.kind);
    line("compression", &d.compression);
    line("disk size", &size(d.size));
    line("mbr signature", &d.mbr.disk_signature);
    for s in &d.mbr.slots {
        let v = if s.kind == 0 {
            format!("{} empty", s.slot)
        } else {
            let boot = if s.bootable { "boot" } else { "    " };
            format!("{} {boot} type 0x{:02X}, LBA {} + {} sectors", s.slot, s.kind, s.first_lba, s.sectors)
        };
        line(if s.slot == 1 { "mbr slots" } else { "" }, &v);
    }
    let verdict = match d.hybrid_mbr.state {
        HybridState::Intact => "intact (slot 1: the bootable FAT32 over GPT partition 1)".to_string(),
        HybridState::ClobberedByTalos => {
            "clobbered by Talos's writePMBR (slot 1 is 0xEE): run talos-agent mbr --repair".to_string()
        }
        HybridState::NotOurs => format!("not ours: {}", d.hybrid_mbr.detail.as_deref().unwrap_or("?")),
    };
    line("hybrid mbr", &verdict);
    match &d.gpt {
        None => line("gpt", "(none)"),
        Some(g) => {
            line("gpt disk guid", &g.disk_guid);
            line(
                "gpt usable",
                &format!("LBA {}–{}, backup header at LBA {}", g.first_usable_lba, g.last_usable_lba, g.backup_lba),
            );
            for (n, p) in g.partitions.iter().enumerate() {
                let v = format!(
                    "{} {:<10} LBA {}–{}, {}\n{:16}  type {} guid {}",
                    p.number,
                    p.name,
                    p.first_lba,
                    p.last_lba,
                    size(p.size),
                    "",
                    p.type_guid,
                    p.guid
                );
                line(if n == 0 { "gpt partitions" } else { "" }, &v);
            }
        }
    }
    match &d.boot_fat {
        None => line("boot fat", "(none)"),
        Some(f) => {
            let v = format!(
                "{} at LBA {}–{}, volume ID {}, label {:?}",
                f.fat_type, f.first_lba, f.last_lba, f.volume_id, f.volume_label
            );
            line("boot fat", &v);
            for (n, file) in f.files.iter().enumerate() {
                line(if n == 0 { "files" } else { "" }, &format!("{} {}", file.path, size(file.size)));
            }
            match &f.config_txt {
                None => line("config.txt", "(none)"),
                Some(t) => {
                    for (n, l) in t.lines().enumerate() {
                        line(if n == 0 { "config.txt" } else { "" }, l);
                    }
                }
            }
        }
    }
    o
}
