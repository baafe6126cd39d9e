//! A flattened device tree (FDT, "DTB") read into a tree, edited, and written back.
//!
//! Only what the `kexec_load` path needs: parse the blob the running kernel booted with
//! (`/sys/firmware/fdt`), rewrite `/chosen` for the next kernel, and flatten it again.
//!
//! Format facts (Devicetree Specification v0.4, chapter 5 "Flattened Devicetree (DTB) Format"):
//! - a 40-byte header of big-endian u32: `magic` 0xd00dfeed, `totalsize`, `off_dt_struct`,
//!   `off_dt_strings`, `off_mem_rsvmap`, `version` (17), `last_comp_version` (16),
//!   `boot_cpuid_phys`, `size_dt_strings`, `size_dt_struct`;
//! - the memory reservation block: 8-byte aligned pairs of big-endian u64 (address, size) ending
//!   with a (0, 0) pair;
//! - the structure block: big-endian u32 tokens `FDT_BEGIN_NODE` (1, then the NUL-terminated
//!   unit name padded to 4 bytes), `FDT_END_NODE` (2), `FDT_PROP` (3, then u32 `len`, u32
//!   `nameoff` into the strings block, `len` value bytes padded to 4), `FDT_NOP` (4), `FDT_END` (9);
//! - the strings block: NUL-terminated property names.

use thiserror::Error;

/// `magic` of an FDT header.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_LEN: usize = 40;
/// Nesting deeper than this is refused (real trees are < 10 deep).
const MAX_DEPTH: usize = 64;

/// Why a blob is not a usable FDT.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FdtError {
    /// The blob is shorter than its header or than `totalsize`.
    #[error("device tree truncated: {0}")]
    Truncated(&'static str),
    /// The first word is not 0xd00dfeed.
    #[error("not a device tree blob (magic {0:#010x}, want 0xd00dfeed)")]
    BadMagic(u32),
    /// `last_comp_version` is above 17, the version this code reads.
    #[error("device tree version {version} (last compatible {last_comp}) is not readable as version 17")]
    Version {
        /// `version`.
        version: u32,
        /// `last_comp_version`.
        last_comp: u32,
    },
    /// The structure block breaks the token grammar.
    #[error("malformed device tree structure block: {0}")]
    Malformed(String),
}

/// One property: a name and its raw value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Property name (`bootargs`, `linux,initrd-start`).
    pub name: String,
    /// Raw value (strings include their NUL; cells are big-endian).
    pub value: Vec<u8>,
}

/// One node with its properties and children, in blob order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Unit name (`chosen`, `memory@40000000`; empty for the root).
    pub name: String,
    /// Properties in order.
    pub properties: Vec<Property>,
    /// Child nodes in order.
    pub children: Vec<Node>,
}

impl Node {
    /// The value of property `name`.
    #[cfg(test)]
    pub fn property(&self, name: &str) -> Option<&[u8]> {
        self.properties.iter().find(|p| p.name == name).map(|p| p.value.as_slice())
    }

    /// Sets property `name` (replacing its value in place, or appending it).
    pub fn set_property(&mut self, name: &str, value: Vec<u8>) {
        match self.properties.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value,
            None => self.properties.push(Property { name: name.to_string(), value }),
        }
    }

    /// Removes property `name`; returns whether it was there.
    pub fn remove_property(&mut self, name: &str) -> bool {
        let before = self.properties.len();
        self.properties.retain(|p| p.name != name);
        before != self.properties.len()
    }

    /// The direct child called `name`.
    #[cfg(test)]
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The direct child called `name`, created (empty, last) when absent.
    pub fn child_or_insert(&mut self, name: &str) -> &mut Node {
        let at = match self.children.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.children.push(Node { name: name.to_string(), ..Node::default() });
                self.children.len() - 1
            }
        };
        &mut self.children[at]
    }
}

/// A whole device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fdt {
    /// The memory reservation block, as (address, size) pairs in bytes, without the terminator.
    pub reservations: Vec<(u64, u64)>,
    /// `boot_cpuid_phys` of the header.
    pub boot_cpuid_phys: u32,
    /// The root node.
    pub root: Node,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Fdt {
    /// Parses a blob.
    ///
    /// # Errors
    /// [`FdtError`] when the header, reservation block or structure block is not well formed.
    pub fn parse(blob: &[u8]) -> Result<Fdt, FdtError> {
        let h = |i: usize| be32(blob, i * 4).ok_or(FdtError::Truncated("header"));
        let magic = h(0)?;
        if magic != FDT_MAGIC {
            return Err(FdtError::BadMagic(magic));
        }
        let (totalsize, off_struct, off_strings, off_rsv) = (h(1)? as usize, h(2)? as usize, h(3)? as usize, h(4)?);
        let (version, last_comp, boot_cpuid_phys) = (h(5)?, h(6)?, h(7)?);
        if last_comp > 17 || version < 16 {
            return Err(FdtError::Version { version, last_comp });
        }
        if blob.len() < totalsize || totalsize < HEADER_LEN {
            return Err(FdtError::Truncated("blob shorter than totalsize"));
        }
        let blob = &blob[..totalsize];
        let size_strings = h(8)? as usize;
        let strings = blob.get(off_strings..off_strings + size_strings).ok_or(FdtError::Truncated("strings block"))?;

        let mut reservations = Vec::new();
        let mut at = off_rsv as usize;
        loop {
            let addr = be64(blob, at).ok_or(FdtError::Truncated("memory reservation block"))?;
            let size = be64(blob, at + 8).ok_or(FdtError::Truncated("memory reservation block"))?;
            at += 16;
            if addr == 0 && size == 0 {
                break;
            }
            reservations.push((addr, size));
        }

        let bad = |m: &str| FdtError::Malformed(m.to_string());
        let mut at = off_struct;
        let mut stack: Vec<Node> = Vec::new();
        let mut root = None;
        loop {
            let token = be32(blob, at).ok_or(FdtError::Truncated("structure block"))?;
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    if root.is_some() {
                        return Err(bad("a second root node"));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(bad("nodes nested too deep"));
                    }
                    let rest = blob.get(at..).ok_or(FdtError::Truncated("node name"))?;
                    let len = rest.iter().position(|&c| c == 0).ok_or(bad("unterminated node name"))?;
                    let name = String::from_utf8(rest[..len].to_vec()).map_err(|_| bad("node name is not UTF-8"))?;
                    at = align4(at + len + 1);
                    stack.push(Node { name, ..Node::default() });
                }
                FDT_END_NODE => {
                    let node = stack.pop().ok_or(bad("FDT_END_NODE without a node"))?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                FDT_PROP => {
                    let len = be32(blob, at).ok_or(FdtError::Truncated("property"))? as usize;
                    let nameoff = be32(blob, at + 4).ok_or(FdtError::Truncated("property"))? as usize;
                    at += 8;
                    let value = blob.get(at..at + len).ok_or(FdtError::Truncated("property value"))?.to_vec();
                    at = align4(at + len);
                    let rest = strings.get(nameoff..).ok_or(bad("property name offset outside the strings block"))?;
                    let nlen = rest.iter().position(|&c| c == 0).ok_or(bad("unterminated property name"))?;
                    let name =
                        String::from_utf8(rest[..nlen].to_vec()).map_err(|_| bad("property name is not UTF-8"))?;
                    stack.last_mut().ok_or(bad("property outside any node"))?.properties.push(Property { name, value });
                }
                FDT_NOP => {}
                FDT_END => break,
                other => return Err(FdtError::Malformed(format!("unknown token {other:#x}"))),
            }
        }
        if !stack.is_empty() {
            return Err(bad("FDT_END inside a node"));
        }
        let root = root.ok_or(bad("no root node"))?;
        Ok(Fdt { reservations, boot_cpuid_phys, root })
    }

    /// Flattens the tree into a version 17 blob (property names deduplicated in the strings
    /// block; no free space at the end).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut strings: Vec<u8> = Vec::new();
        let mut offsets: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        let mut structure: Vec<u8> = Vec::new();
        fn put(out: &mut Vec<u8>, v: u32) {
            out.extend_from_slice(&v.to_be_bytes());
        }
        fn pad(out: &mut Vec<u8>) {
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        fn node<'a>(
            n: &'a Node,
            out: &mut Vec<u8>,
            strings: &mut Vec<u8>,
            offsets: &mut std::collections::HashMap<&'a str, u32>,
        ) {
            put(out, FDT_BEGIN_NODE);
            out.extend_from_slice(n.name.as_bytes());
            out.push(0);
            pad(out);
            for p in &n.properties {
                let off = *offsets.entry(p.name.as_str()).or_insert_with(|| {
                    let o = strings.len() as u32;
                    strings.extend_from_slice(p.name.as_bytes());
                    strings.push(0);
                    o
                });
                put(out, FDT_PROP);
                put(out, p.value.len() as u32);
                put(out, off);
                out.extend_from_slice(&p.value);
                pad(out);
            }
            for c in &n.children {
                node(c, out, strings, offsets);
            }
            put(out, FDT_END_NODE);
        }
        node(&self.root, &mut structure, &mut strings, &mut offsets);
        put(&mut structure, FDT_END);

        let off_rsv = HEADER_LEN; // 40 is 8-byte aligned
        let rsv_len = (self.reservations.len() + 1) * 16;
        let off_struct = off_rsv + rsv_len;
        let off_strings = off_struct + structure.len();
        let total = off_strings + strings.len();
        let mut out = Vec::with_capacity(total);
        for v in [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            self.boot_cpuid_phys,
            strings.len() as u32,
            structure.len() as u32,
        ] {
            put(&mut out, v);
        }
        for &(a, s) in self.reservations.iter().chain(std::iter::once(&(0, 0))) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&structure);
        out.extend_from_slice(&strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fdt {
        Fdt {
            reservations: vec![(0x4800_0000, 0x1000)],
            boot_cpuid_phys: 0,
            root: Node {
                name: String::new(),
                properties: vec![
                    Property { name: "#address-cells".into(), value: 2u32.to_be_bytes().to_vec() },
                    Property { name: "compatible".into(), value: b"linux,dummy-virt\0".to_vec() },
                ],
                children: vec![
                    Node {
                        name: "chosen".into(),
                        properties: vec![Property { name: "bootargs".into(), value: b"console=ttyAMA0\0".to_vec() }],
                        children: vec![],
                    },
                    Node { name: "memory@40000000".into(), properties: vec![], children: vec![] },
                ],
            },
        }
    }

    #[test]
    fn round_trips() {
        let f = sample();
        let blob = f.to_bytes();
        assert_eq!(be32(&blob, 0), Some(FDT_MAGIC));
        assert_eq!(be32(&blob, 4), Some(blob.len() as u32));
        let back = Fdt::parse(&blob).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.to_bytes(), blob);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(Fdt::parse(b"\0\0\0\0"), Err(FdtError::BadMagic(0)));
        let blob = sample().to_bytes();
        assert!(matches!(Fdt::parse(&blob[..blob.len() - 8]), Err(FdtError::Truncated(_))));
        let mut bad = blob.clone();
        let off_struct = be32(&bad, 8).unwrap() as usize;
        bad[off_struct..off_struct + 4].copy_from_slice(&7u32.to_be_bytes());
        assert!(matches!(Fdt::parse(&bad), Err(FdtError::Malformed(_))));
    }

    #[test]
    fn edits_properties() {
        let mut f = sample();
        let chosen = f.root.child_or_insert("chosen");
        chosen.set_property("bootargs", b"x\0".to_vec());
        assert!(chosen.remove_property("bootargs"));
        assert!(!chosen.remove_property("bootargs"));
        f.root.child_or_insert("new").set_property("a", vec![1]);
        let back = Fdt::parse(&f.to_bytes()).unwrap();
        assert_eq!(back.root.child("new").unwrap().property("a"), Some(&[1u8][..]));
        assert_eq!(back.root.child("chosen").unwrap().property("bootargs"), None);
    }
}
