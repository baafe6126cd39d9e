//! The text form of an inspection: one `field  value` line per fact.

use super::model::Inspection;

fn size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{n} bytes ({:.1} MiB)", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The human-readable form of an inspection: one `field  value` line per fact.
pub fn render(i: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(o, "{k:<16}{v}");
    };
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
    o
}
