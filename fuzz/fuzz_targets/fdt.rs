//! The flattened device tree reader of the agent's arm64 `kexec_load` path
//! (`agent/src/boot/kexec/fdt.rs`, included by this crate's lib with `#[path]`): `Fdt::parse`,
//! `Fdt::to_bytes`, and `arm64::next_dtb`, which rewrites `/chosen` for the next kernel.
//!
//! Input: a DTB (`/sys/firmware/fdt`). A tree that parses must flatten to a blob that parses to
//! the same tree and flattens to the same bytes; the next kernel's DTB must parse, carry the new
//! `/chosen`, and have a size that does not depend on the initramfs addresses (the agent sizes
//! the layout with addresses 0 before it knows them).

#![no_main]

use libfuzzer_sys::fuzz_target;
use moonboot_fuzz::kexec::arm64;
use moonboot_fuzz::kexec::fdt::Fdt;

const CMDLINE: &[u8] = b"console=ttyAMA0 talos.platform=metal\0";

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Fdt::parse(data) else { return };
    let blob = tree.to_bytes();
    let back = Fdt::parse(&blob).unwrap_or_else(|e| panic!("a flattened tree does not parse: {e}"));
    assert_eq!(back, tree);
    assert_eq!(back.to_bytes(), blob);

    let mut seeded = |b: &mut [u8]| {
        b.fill(0xa5);
        true
    };
    let sizing = arm64::next_dtb(data, CMDLINE, 0, 0, &mut seeded).expect("parsed above");
    let (start, end) = (0x4800_0000u64, 0x4a00_0000u64);
    let next = arm64::next_dtb(data, CMDLINE, start, end, &mut seeded).expect("parsed above");
    assert_eq!(next.len(), sizing.len(), "the next DTB's size depends on the initramfs addresses");
    let unseeded = arm64::next_dtb(data, CMDLINE, start, end, &mut |_: &mut [u8]| false).expect("parsed above");
    assert!(unseeded.len() <= sizing.len(), "a DTB without seeds is larger than the sized one");

    let next = Fdt::parse(&next).unwrap_or_else(|e| panic!("the next kernel's DTB does not parse: {e}"));
    let chosen = next.root.children.iter().find(|c| c.name == "chosen").expect("/chosen");
    let prop = |name: &str| chosen.properties.iter().find(|p| p.name == name).map(|p| p.value.as_slice());
    assert_eq!(prop("bootargs"), Some(CMDLINE));
    assert_eq!(prop("linux,initrd-start"), Some(&start.to_be_bytes()[..]));
    assert_eq!(prop("linux,initrd-end"), Some(&end.to_be_bytes()[..]));
    assert_eq!(prop("rng-seed").map(<[u8]>::len), Some(arm64::RNG_SEED_SIZE));
    assert_eq!(chosen.properties.iter().filter(|p| p.name == "bootargs").count(), 1);
});
