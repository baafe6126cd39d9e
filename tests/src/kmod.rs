//! Picking kernel modules out of an extracted Debian kernel package for the stand-in initramfs.
//!
//! Debian's package has no `modules.dep` (`depmod` runs at install time), so dependencies are read
//! from each module's `.modinfo` ELF section (`depends=a,b`, NUL-separated `key=value` strings, as
//! `modinfo -F depends` shows them).

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module found in a module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Name with `-` normalised to `_` (`virtio_net`).
    pub name: String,
    /// Path relative to the tree root (`kernel/drivers/net/virtio_net.ko`), as found (may end in
    /// `.ko.xz`, `.ko.zst` or `.ko.gz`).
    pub rel_path: PathBuf,
}

/// Normalises a module name the way the kernel does (`-` and `_` are the same).
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn strip_module_ext(file: &str) -> Option<&str> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().find_map(|ext| file.strip_suffix(ext))
}

/// Indexes every module file under `root` (`lib/modules/<kver>`) by normalised name.
pub fn index_tree(root: &Path) -> Result<BTreeMap<String, Module>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Module>) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else if let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(strip_module_ext) {
                let name = normalise(stem);
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(name.clone(), Module { name, rel_path: rel });
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// The NUL-separated strings of the `.modinfo` section of an ELF64 little-endian module.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>> {
    let u16_at =
        |o: usize| -> Result<u16> { Ok(u16::from_le_bytes(elf.get(o..o + 2).context("ELF truncated")?.try_into()?)) };
    let u32_at =
        |o: usize| -> Result<u32> { Ok(u32::from_le_bytes(elf.get(o..o + 4).context("ELF truncated")?.try_into()?)) };
    let u64_at =
        |o: usize| -> Result<u64> { Ok(u64::from_le_bytes(elf.get(o..o + 8).context("ELF truncated")?.try_into()?)) };
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not an ELF64 little-endian file");
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab_off = u64_at(sh(shstrndx) + 0x18)? as usize;
    for i in 0..shnum {
        let name_off = u32_at(sh(i))? as usize;
        let name_start = strtab_off + name_off;
        let name_end = elf[name_start..].iter().position(|&c| c == 0).context("section name")? + name_start;
        if &elf[name_start..name_end] == b".modinfo" {
            let off = u64_at(sh(i) + 0x18)? as usize;
            let size = u64_at(sh(i) + 0x20)? as usize;
            let data = elf.get(off..off + size).context(".modinfo outside the file")?;
            return Ok(data
                .split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    bail!("no .modinfo section")
}

/// The `depends=` list of a module's `.modinfo`.
pub fn depends(elf: &[u8]) -> Result<Vec<String>> {
    Ok(modinfo(elf)?
        .iter()
        .filter_map(|s| s.strip_prefix("depends="))
        .flat_map(|d| d.split(','))
        .filter(|d| !d.is_empty())
        .map(normalise)
        .collect())
}

/// Reads a module file, decompressing `.ko.xz` / `.ko.zst` / `.ko.gz` (with the `xz`/`zstd` tools
/// or flate2), so the result can be loaded by a kernel without `CONFIG_MODULE_DECOMPRESS`.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let raw = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if name.ends_with(".ko") {
        return Ok(raw);
    }
    if name.ends_with(".ko.gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)?;
        return Ok(out);
    }
    let tool = if name.ends_with(".ko.xz") { "xz" } else { "zstd" };
    let out = std::process::Command::new(tool)
        .args(["-dc", "--"])
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// Resolves `wanted` module names (and, transitively, their dependencies) in the tree at `root`.
///
/// Names listed in `root/modules.builtin` (built into the kernel) are skipped; a name that is
/// neither a module nor built in is an error. Returns modules in load order (dependencies first,
/// otherwise in the order asked).
pub fn resolve(root: &Path, wanted: &[&str]) -> Result<Vec<Module>> {
    let index = index_tree(root)?;
    let builtin: BTreeSet<String> = fs::read_to_string(root.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(strip_module_ext)
        .map(normalise)
        .collect();
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        name: &str,
        root: &Path,
        index: &BTreeMap<String, Module>,
        builtin: &BTreeSet<String>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<Module>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            bail!("module dependency cycle: {} -> {name}", stack.join(" -> "));
        }
        let Some(m) = index.get(name) else {
            if builtin.contains(name) {
                done.insert(name.to_string());
                return Ok(());
            }
            bail!("kernel module {name} is neither in {} nor built in", root.display());
        };
        stack.push(name.to_string());
        let bytes = read_module(&root.join(&m.rel_path))?;
        for dep in depends(&bytes).with_context(|| format!("reading .modinfo of {name}"))? {
            visit(&dep, root, index, builtin, done, stack, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(m.clone());
        Ok(())
    }
    for w in wanted {
        visit(&normalise(w), root, &index, &builtin, &mut done, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Whether a kernel config (`/boot/config-*` text) sets `symbol` (`CONFIG_…`) to `y`, `m` or not.
pub fn config_value(config: &str, symbol: &str) -> Option<String> {
    let prefix = format!("{symbol}=");
    config.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE file with a `.shstrtab` and a `.modinfo` section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut f = vec![0u8; 64];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        let strtab_off = f.len();
        f.extend_from_slice(shstrtab);
        let modinfo_off = f.len();
        f.extend_from_slice(modinfo);
        while f.len() % 8 != 0 {
            f.push(0);
        }
        let shoff = f.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, strtab_off, shstrtab.len());
        sh(11, modinfo_off, modinfo.len());
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_depends() {
        let m = fake_module(b"license=GPL\0depends=net_failover,virtio-ring\0name=virtio_net\0");
        assert_eq!(depends(&m).unwrap(), vec!["net_failover", "virtio_ring"]);
        let m = fake_module(b"depends=\0name=loop\0");
        assert!(depends(&m).unwrap().is_empty());
        assert!(depends(b"not elf").is_err());
    }

    #[test]
    fn resolves_in_dependency_order() {
        let dir = std::env::temp_dir().join(format!("moonboot-kmod-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("kernel/a")).unwrap();
        fs::write(dir.join("kernel/a/top.ko"), fake_module(b"depends=mid,builtin_one\0")).unwrap();
        fs::write(dir.join("kernel/a/mid.ko"), fake_module(b"depends=base\0")).unwrap();
        fs::write(dir.join("kernel/a/base.ko"), fake_module(b"depends=\0")).unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/x/builtin_one.ko\n").unwrap();
        let order: Vec<String> = resolve(&dir, &["top", "base"]).unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(order, vec!["base", "mid", "top"]);
        assert!(resolve(&dir, &["nowhere"]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_values() {
        let c = "# c\nCONFIG_SQUASHFS=m\nCONFIG_RD_ZSTD=y\n# CONFIG_X is not set\n";
        assert_eq!(config_value(c, "CONFIG_SQUASHFS").as_deref(), Some("m"));
        assert_eq!(config_value(c, "CONFIG_RD_ZSTD").as_deref(), Some("y"));
        assert_eq!(config_value(c, "CONFIG_X"), None);
    }
}
