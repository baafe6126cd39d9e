//! `imager extensions update`: re-resolve the tag of every entry of the extensions lock file
//! (`extensions/lock.yaml`, format in [`crate::build::profile`]) to the digest of the image index
//! it names today, and write the digests back.
//!
//! The file is edited line by line, not re-serialised, so its comments and layout survive: in each
//! list item the `digest:` line gets the new value, or one is added after `image:` with the same
//! indentation. The result is parsed again and must name exactly the resolved digests before it
//! replaces the file (written next to it, then renamed).
//!
//! The digest pinned is the index's (what `ghcr.io/siderolabs/<name>:<tag>` names, and what the
//! Image Factory pins); for a tag that names a single image manifest, that manifest's digest.

use std::path::Path;

use anyhow::{bail, Context};
use boot_artifact::digest::Sha256Digest;
use boot_artifact::reference::Reference;
use moonboot_registry::Registry;
use serde::Serialize;

use crate::build::profile::Lock;
use crate::cli::extensions::UpdateArgs;

/// One lock entry after the update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Updated {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: String,
    /// The digest before, if any.
    pub old: Option<String>,
    /// The digest now.
    pub new: String,
}

/// Sets the `digest:` of the list item whose `name:` is each key of `digests` in the lock file
/// `text`, keeping every other line as it is.
///
/// # Errors
/// An entry of `digests` whose item is not found, or an item without `image:` to add the
/// digest after.
pub fn rewrite(text: &str, digests: &[(String, Sha256Digest)]) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    // List items: (first line, end line exclusive, indentation of the item's keys).
    let mut items: Vec<(usize, usize, usize)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("- ") {
            let indent = line.len() - trimmed.len();
            let key_indent = indent + 2 + (rest.len() - rest.trim_start().len());
            if let Some(last) = items.last_mut() {
                last.1 = i;
            }
            items.push((i, lines.len(), key_indent));
        } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            if let Some(last) = items.last_mut() {
                if indent < last.2 && last.1 == lines.len() {
                    last.1 = i;
                }
            }
        }
    }
    let key_value = |line: &str, key: &str| -> Option<String> {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        let v = t.strip_prefix(key)?.strip_prefix(':')?;
        let v = v.split(" #").next().unwrap_or(v).trim();
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for (name, digest) in digests {
        let Some(&(start, end, indent)) =
            items.iter().find(|(s, e, _)| (*s..*e).any(|i| key_value(lines[i], "name").as_deref() == Some(name)))
        else {
            bail!("no list item with name: {name}");
        };
        let newline = if lines[start].ends_with("\r\n") { "\r\n" } else { "\n" };
        let new_line = format!("{}digest: {digest}{newline}", " ".repeat(indent));
        if let Some(i) = (start..end).find(|&i| key_value(lines[i], "digest").is_some()) {
            if i == start {
                bail!("{name}: digest as the first key of its item is not supported; put name first");
            }
            out[i] = new_line;
        } else if let Some(i) = (start..end).find(|&i| key_value(lines[i], "image").is_some()) {
            let new_line = if lines[i].ends_with('\n') { new_line } else { format!("\n{}", new_line.trim_end()) };
            inserts.push((i + 1, new_line));
        } else {
            bail!("{name}: the item has no image: line");
        }
    }
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, line) in inserts {
        out.insert(at, line);
    }
    Ok(out.concat())
}

/// Resolves `image` (its tag; a digest in it is ignored) to the digest of the index it names, or
/// of its image manifest when it names no index.
///
/// # Errors
/// Registry failures.
pub async fn current_digest(registry: &Registry, image: &str) -> anyhow::Result<Sha256Digest> {
    let mut r: Reference = image.parse()?;
    r.digest = None;
    if r.tag.is_none() {
        r.tag = Some("latest".into());
    }
    let mut last = None;
    for arch in ["arm64", "amd64"] {
        match registry.resolve(&r, arch).await {
            Ok(resolved) => return Ok(resolved.index_digest.unwrap_or(resolved.manifest_digest)),
            Err(e @ moonboot_registry::Error::NoPlatform { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.expect("two attempts").into())
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(parent).with_context(|| format!("writing next to {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.persist(path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Runs `imager extensions update`.
///
/// # Errors
/// Reading, resolving, rewriting; the lock file is left as it was on any error.
pub fn run(args: &UpdateArgs) -> anyhow::Result<()> {
    let source = args.lock.display().to_string();
    let text = std::fs::read_to_string(&args.lock).with_context(|| format!("reading {source}"))?;
    let lock = Lock::parse(&text).with_context(|| source.clone())?;
    let registry = Registry::new(args.registry.options()?)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let mut digests = Vec::new();
    let mut report = Vec::new();
    for e in &lock.extensions {
        let d =
            runtime.block_on(current_digest(&registry, &e.image)).with_context(|| format!("{source}: {}", e.name))?;
        digests.push((e.name.clone(), d));
        report.push(Updated {
            name: e.name.clone(),
            image: e.image.clone(),
            old: e.digest.clone(),
            new: d.to_string(),
        });
    }
    let new_text = rewrite(&text, &digests).with_context(|| source.clone())?;
    let check = Lock::parse(&new_text).with_context(|| format!("{source} after the update"))?;
    for (e, (name, d)) in check.extensions.iter().zip(&digests) {
        if &e.name != name || e.digest.as_deref() != Some(d.to_string().as_str()) {
            bail!("{source}: the rewritten file does not pin {name} to {d}; left unchanged");
        }
    }
    if new_text != text {
        write_atomically(&args.lock, &new_text)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for u in &report {
            match &u.old {
                Some(old) if *old == u.new => println!("{}  {}  unchanged {}", u.name, u.image, u.new),
                Some(old) => println!("{}  {}  {old} -> {}", u.name, u.image, u.new),
                None => println!("{}  {}  pinned {}", u.name, u.image, u.new),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = "# header comment\nextensions:\n  - name: spin   # the spin one\n    image: ghcr.io/siderolabs/spin:v0.19.0\n    talos: \">= v1.0.0\"\n  # between\n  - name: tailscale\n    image: ghcr.io/siderolabs/tailscale:1.84.0\n    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n    talos: \">= v1.5.0\"\n";

    #[test]
    fn sets_and_adds_digests_keeping_comments() {
        let a = Sha256Digest::of(b"a");
        let b = Sha256Digest::of(b"b");
        let out = rewrite(LOCK, &[("spin".into(), a), ("tailscale".into(), b)]).unwrap();
        let want = LOCK
            .replace("spin:v0.19.0\n", &format!("spin:v0.19.0\n    digest: {a}\n"))
            .replace("sha256:0000000000000000000000000000000000000000000000000000000000000000", &b.to_string());
        assert_eq!(out, want);
        let lock = Lock::parse(&out).unwrap();
        assert_eq!(lock.extensions[0].digest.as_deref(), Some(a.to_string().as_str()));
        assert_eq!(lock.extensions[1].digest.as_deref(), Some(b.to_string().as_str()));
        // Idempotent.
        assert_eq!(rewrite(&out, &[("spin".into(), a), ("tailscale".into(), b)]).unwrap(), out);
        assert!(rewrite(LOCK, &[("nginx".into(), a)]).is_err());
    }

    #[test]
    fn last_item_without_trailing_newline() {
        let text = "extensions:\n  - name: spin\n    image: ghcr.io/siderolabs/spin:v0.19.0";
        let a = Sha256Digest::of(b"a");
        let out = rewrite(text, &[("spin".into(), a)]).unwrap();
        assert_eq!(out, format!("{text}\n    digest: {a}"));
        assert_eq!(Lock::parse(&out).unwrap().extensions[0].digest, Some(a.to_string()));
    }
}
