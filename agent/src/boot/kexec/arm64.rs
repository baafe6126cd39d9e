//! The arm64 `kexec_load` layout: where the `Image`, the initramfs, the device tree and a small
//! trampoline go in physical memory, the device tree's `/chosen` for the next kernel, and the
//! trampoline itself.
//!
//! Facts used (Linux Documentation/arch/arm64/booting.rst, "Call the kernel image"):
//! - the `Image` must sit at a 2 MiB-aligned base address plus `text_offset`, with `image_size`
//!   bytes (which include the BSS) free from there; with `flags` bit 3 clear it should be as close
//!   as possible to the start of RAM, so this layout always takes the lowest fitting address;
//! - the DTB must be 8-byte aligned and at most 2 MiB;
//! - the initramfs must lie within a 1 GiB-aligned window of at most 32 GiB that also covers the
//!   kernel `Image`;
//! - on entry: MMU off, x0 = physical address of the DTB, x1 = x2 = x3 = 0.
//!
//! The running kernel's relocation code (arch/arm64/kernel/relocate_kernel.S,
//! `arm64_relocate_new_kernel`) turns the MMU off and jumps to the image's entry with x0 set to
//! `kimage->arch.dtb_mem`, which only `kexec_file_load` fills in (arch/arm64/kernel/machine_kexec_file.c);
//! for `kexec_load` the entry must therefore be a trampoline that sets x0 itself — kexec-tools uses
//! its purgatory for this (purgatory/arch/arm64/entry.S). kexec-tools' arm64 loader
//! (kexec/arch/arm64/kexec-arm64.c) also places the initrd and DTB right after the kernel image;
//! this layout does the same.

use super::fdt::{Fdt, FdtError};
use boot_artifact::kernel::Arm64Header;
use std::ops::RangeInclusive;
use thiserror::Error;

/// Alignment of the `Image` base (booting.rst).
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// Largest DTB the kernel accepts (booting.rst).
pub const DTB_MAX: u64 = 2 << 20;
/// `RNG_SEED_SIZE` of drivers/of/kexec.c: bytes of `/chosen/rng-seed` handed to the next kernel.
pub const RNG_SEED_SIZE: usize = 128;
/// Size of [`trampoline`]'s code + data, in bytes.
pub const TRAMPOLINE_LEN: usize = 40;

/// Why no layout fits.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlaceError {
    /// No usable RAM range can hold the whole layout.
    #[error(
        "no usable RAM range holds {needed} bytes (kernel at a 2 MiB boundary, initramfs, device tree, trampoline); largest is {largest} bytes"
    )]
    NoRoom {
        /// Bytes the layout needs from a 2 MiB boundary.
        needed: u64,
        /// Size of the largest usable range.
        largest: u64,
    },
    /// The DTB is over 2 MiB.
    #[error("the device tree for the next kernel is {0} bytes, over the 2 MiB limit")]
    DtbTooBig(u64),
}

/// Physical addresses and sizes of the segments (all addresses page-aligned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the `Image` is loaded (2 MiB-aligned base + `text_offset`); the kernel entry point.
    pub kernel: u64,
    /// Bytes reserved for it: `max(image_size, file length)`, rounded up to the page size.
    pub kernel_memsz: u64,
    /// Where the initramfs starts.
    pub initrd: u64,
    /// Its exact length (`linux,initrd-end` = `initrd + initrd_len`).
    pub initrd_len: u64,
    /// Where the DTB starts.
    pub dtb: u64,
    /// Bytes reserved for the DTB (page-rounded).
    pub dtb_memsz: u64,
    /// Where the trampoline starts (the `kexec_load` entry).
    pub trampoline: u64,
    /// Bytes reserved for the trampoline (one page).
    pub trampoline_memsz: u64,
}

/// `v` rounded up to a multiple of `a`; `None` when that does not fit in a u64.
fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_next_multiple_of(a)
}

/// Places the kernel, initramfs, DTB and trampoline, in that order, in the lowest usable RAM that
/// holds all of them.
///
/// `ram`: usable ranges from [`super::iomem::usable_ram`]; `page`: the page size in bytes;
/// `kernel_len`, `initrd_len`, `dtb_len`: file sizes in bytes.
///
/// # Errors
/// [`PlaceError`] when the DTB is too big or nothing fits — including sizes from a hostile kernel
/// header (`text_offset`, `image_size`) whose sum would not fit in 64 bits (`needed` is then
/// `u64::MAX`): every sum here is checked, none wraps.
pub fn place(
    ram: &[RangeInclusive<u64>],
    page: u64,
    header: &Arm64Header,
    kernel_len: u64,
    initrd_len: u64,
    dtb_len: u64,
) -> Result<Layout, PlaceError> {
    if dtb_len > DTB_MAX {
        return Err(PlaceError::DtbTooBig(dtb_len));
    }
    let largest = ram.iter().map(|r| (r.end() - r.start()).saturating_add(1)).max().unwrap_or(0);
    let no_room = |needed| PlaceError::NoRoom { needed, largest };
    let sizes = (|| {
        let kernel_memsz = align_up(header.image_size.max(kernel_len), page)?;
        let dtb_memsz = align_up(dtb_len, page)?;
        let initrd_memsz = align_up(initrd_len, page)?;
        let text_offset = align_up(header.text_offset, page)?;
        let needed = text_offset
            .checked_add(kernel_memsz)?
            .checked_add(initrd_memsz)?
            .checked_add(dtb_memsz)?
            .checked_add(page)?;
        Some((kernel_memsz, dtb_memsz, initrd_memsz, needed))
    })();
    let Some((kernel_memsz, dtb_memsz, initrd_memsz, needed)) = sizes else { return Err(no_room(u64::MAX)) };
    for r in ram {
        let Some(base) = align_up(*r.start(), KERNEL_ALIGN) else { continue };
        let Some(last) = base.checked_add(needed - 1) else { continue };
        if last > *r.end() {
            continue;
        }
        // base + needed - 1 fits, and every address below is inside [base, base + needed).
        let kernel = base + header.text_offset;
        let initrd = align_up(kernel + kernel_memsz, page).ok_or(no_room(needed))?;
        let dtb = initrd + initrd_memsz;
        let trampoline = dtb + dtb_memsz;
        return Ok(Layout {
            kernel,
            kernel_memsz,
            initrd,
            initrd_len,
            dtb,
            dtb_memsz,
            trampoline,
            trampoline_memsz: page,
        });
    }
    Err(no_room(needed))
}

/// `/chosen` properties the next kernel must not inherit: the old command line and initramfs, the
/// crash-kernel ones, the IMA measurement buffer of the running kernel, and the random seeds
/// (replaced by fresh ones). The list of drivers/of/kexec.c (`of_kexec_alloc_and_setup_fdt`).
/// `linux,uefi-*` stay: the next kernel finds the EFI system table and memory map through them.
const DROPPED: &[&str] = &[
    "bootargs",
    "linux,initrd-start",
    "linux,initrd-end",
    "linux,elfcorehdr",
    "linux,usable-memory-range",
    "linux,ima-kexec-buffer",
    "kaslr-seed",
    "rng-seed",
];

/// Rewrites `/chosen` (created when absent) for the next kernel: `bootargs` = `cmdline` (with its
/// NUL), `linux,initrd-start`/`linux,initrd-end` = the initramfs range as big-endian u64, and, when
/// `random` fills its buffer (returns true), fresh `kaslr-seed` (8 bytes) and `rng-seed`
/// ([`RNG_SEED_SIZE`] bytes) as drivers/of/kexec.c does for `kexec_file_load`.
pub fn rewrite_chosen(
    fdt: &mut Fdt,
    cmdline: &[u8],
    initrd_start: u64,
    initrd_end: u64,
    random: &mut dyn FnMut(&mut [u8]) -> bool,
) {
    let chosen = fdt.root.child_or_insert("chosen");
    for name in DROPPED {
        chosen.remove_property(name);
    }
    chosen.set_property("bootargs", cmdline.to_vec());
    chosen.set_property("linux,initrd-start", initrd_start.to_be_bytes().to_vec());
    chosen.set_property("linux,initrd-end", initrd_end.to_be_bytes().to_vec());
    let mut seed = [0u8; 8];
    if random(&mut seed) {
        chosen.set_property("kaslr-seed", seed.to_vec());
    }
    let mut seed = vec![0u8; RNG_SEED_SIZE];
    if random(&mut seed) {
        chosen.set_property("rng-seed", seed);
    }
}

/// Builds the DTB for the next kernel from the running one's (`/sys/firmware/fdt`).
///
/// # Errors
/// [`FdtError`] when `current` is not a readable FDT.
pub fn next_dtb(
    current: &[u8],
    cmdline: &[u8],
    initrd_start: u64,
    initrd_end: u64,
    random: &mut dyn FnMut(&mut [u8]) -> bool,
) -> Result<Vec<u8>, FdtError> {
    let mut fdt = Fdt::parse(current)?;
    rewrite_chosen(&mut fdt, cmdline, initrd_start, initrd_end, random);
    Ok(fdt.to_bytes())
}

/// The trampoline the `kexec_load` entry points at: ten 32-bit little-endian words (A64
/// encodings from the Arm Architecture Reference Manual, section C6) then two literals.
///
/// ```text
/// 0x00  580000c0  ldr x0, 0x18      // x0 = DTB address (literal at +0x18)
/// 0x04  580000e4  ldr x4, 0x20      // x4 = kernel entry (literal at +0x20)
/// 0x08  aa1f03e1  mov x1, xzr       // (orr x1, xzr, xzr)
/// 0x0c  aa1f03e2  mov x2, xzr
/// 0x10  aa1f03e3  mov x3, xzr
/// 0x14  d61f0080  br  x4
/// 0x18  .quad dtb
/// 0x20  .quad kernel entry
/// ```
/// `LDR (literal)`, 64-bit: `0x58000000 | imm19 << 5 | Rt`, imm19 = byte offset / 4 from the
/// instruction. `BR`: `0xd61f0000 | Rn << 5`. The literals are 8-byte aligned when the trampoline
/// is (it runs with the MMU off, where unaligned loads fault).
pub fn trampoline(dtb: u64, kernel_entry: u64) -> [u8; TRAMPOLINE_LEN] {
    const CODE: [u32; 6] = [0x5800_00c0, 0x5800_00e4, 0xaa1f_03e1, 0xaa1f_03e2, 0xaa1f_03e3, 0xd61f_0080];
    let mut out = [0u8; TRAMPOLINE_LEN];
    for (i, word) in CODE.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    out[24..32].copy_from_slice(&dtb.to_le_bytes());
    out[32..40].copy_from_slice(&kernel_entry.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    const MIB: u64 = 1 << 20;

    fn header(image_size: u64) -> Arm64Header {
        Arm64Header { text_offset: 0, image_size, flags: 0xa }
    }

    #[test]
    fn places_after_reserved_holes_at_2mib() {
        // Usable RAM of the QEMU virt example in iomem.rs.
        let ram = [0x4000_0000..=0x4163_ffff, 0x41cd_0000..=0x47ff_ffff, 0x4810_0000..=0x9d5f_ffff];
        let l = place(&ram, 4096, &header(30 * MIB), 25 * MIB, 70 * MIB + 5, 0x1_2345).unwrap();
        // The first range (about 22 MiB) is too small for 30 MiB of kernel; the second starts at
        // 0x41cd0000, whose next 2 MiB boundary 0x41e00000 + 30 MiB + 70 MiB passes its end
        // 0x47ffffff; the third starts at 0x48100000, so the kernel goes to 0x48200000.
        assert_eq!(l.kernel, 0x4820_0000);
        assert_eq!(l.kernel_memsz, 30 * MIB);
        assert_eq!(l.initrd, 0x4820_0000 + 30 * MIB);
        assert_eq!(l.initrd_len, 70 * MIB + 5);
        assert_eq!(l.dtb, l.initrd + 70 * MIB + 4096);
        assert_eq!(l.dtb_memsz, 0x13000);
        assert_eq!(l.trampoline, l.dtb + 0x13000);
        assert_eq!(l.trampoline_memsz, 4096);

        let small = place(&ram, 4096, &header(4 * MIB), 3 * MIB, MIB, 4096).unwrap();
        assert_eq!(small.kernel, 0x4000_0000, "the lowest fitting 2 MiB boundary");
        // A text_offset is added to the 2 MiB base; file longer than image_size wins.
        let old = Arm64Header { text_offset: 0x8_0000, image_size: 0, flags: 0 };
        let l = place(&ram, 4096, &old, 3 * MIB + 1, MIB, 4096).unwrap();
        assert_eq!((l.kernel, l.kernel_memsz), (0x4008_0000, 3 * MIB + 4096));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let ram = [0x4000_0000..=0x40ff_ffff];
        assert_eq!(
            place(&ram, 4096, &header(8 * MIB), 8 * MIB, 8 * MIB, 4096),
            Err(PlaceError::NoRoom { needed: 16 * MIB + 8192, largest: 16 * MIB })
        );
        assert_eq!(place(&ram, 4096, &header(MIB), MIB, MIB, 3 * MIB), Err(PlaceError::DtbTooBig(3 * MIB)));
    }

    /// Found by `fuzz/fuzz_targets/iomem.rs`: a kernel header's `text_offset` or `image_size`
    /// near 2^64, or a RAM range covering the whole address space, wrapped the sums (a panic in
    /// debug builds, a wrong layout for kexec_load in release ones). Now each is a refusal.
    #[test]
    fn hostile_sizes_are_refused_not_wrapped() {
        let ram = [0x0..=0xf];
        let text = Arm64Header { text_offset: 0xffff_ffff_ffff_0a0a, image_size: 0, flags: 0 };
        assert_eq!(place(&ram, 4096, &text, 1, MIB, 0), Err(PlaceError::NoRoom { needed: u64::MAX, largest: 16 }));
        let big = Arm64Header { text_offset: 0, image_size: u64::MAX - 5, flags: 0 };
        assert!(matches!(place(&ram, 4096, &big, 1, 0, 0), Err(PlaceError::NoRoom { needed: u64::MAX, .. })));
        let everything = [0..=u64::MAX];
        let l = place(&everything, 4096, &header(MIB), MIB, MIB, 4096).unwrap();
        assert_eq!(l.kernel, 0);
        let top = [u64::MAX - 4095..=u64::MAX];
        assert!(matches!(
            place(&top, 4096, &header(MIB), MIB, MIB, 4096),
            Err(PlaceError::NoRoom { largest: 4096, .. })
        ));
    }

    #[test]
    fn trampoline_words() {
        let t = trampoline(0x4890_0000, 0x4820_0000);
        let w = |i: usize| u32::from_le_bytes(t[i * 4..i * 4 + 4].try_into().unwrap());
        // ldr x0, [pc + 24]; ldr x4, [pc + 28]: imm19 6 and 7.
        assert_eq!((w(0) >> 5) & 0x7ffff, 6);
        assert_eq!(w(0) & 0x1f, 0);
        assert_eq!((w(1) >> 5) & 0x7ffff, 7);
        assert_eq!(w(1) & 0x1f, 4);
        assert_eq!(w(5), 0xd61f_0000 | (4 << 5));
        assert_eq!(u64::from_le_bytes(t[24..32].try_into().unwrap()), 0x4890_0000);
        assert_eq!(u64::from_le_bytes(t[32..40].try_into().unwrap()), 0x4820_0000);
    }

    #[test]
    fn trampoline_disassembles() {
        // Check the encodings with a real disassembler when the cross binutils are installed.
        let objdump = "aarch64-linux-gnu-objdump";
        if Command::new(objdump).arg("--version").output().is_err() {
            eprintln!("SKIPPED trampoline_disassembles: {objdump} is not installed");
            return;
        }
        let file = std::env::temp_dir().join(format!("moonboot-trampoline-{}.bin", std::process::id()));
        std::fs::write(&file, trampoline(0, 0)).unwrap();
        let out = Command::new(objdump).args(["-D", "-b", "binary", "-m", "aarch64"]).arg(&file).output().unwrap();
        std::fs::remove_file(&file).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for want in ["ldr\tx0, 0x18", "ldr\tx4, 0x20", "mov\tx1, xzr", "mov\tx2, xzr", "mov\tx3, xzr", "br\tx4"] {
            assert!(text.contains(want), "objdump lacks {want:?}:\n{text}");
        }
    }

    /// The DTB QEMU gives a `-M virt -cpu cortex-a57 -m 1536` guest (`dumpdtb=`), or None (and a
    /// printed skip) when QEMU is missing and fixtures are not required.
    fn qemu_virt_dtb() -> Option<Vec<u8>> {
        let qemu = "qemu-system-aarch64";
        if Command::new(qemu).arg("--version").output().is_err() {
            if std::env::var_os("MOONBOOT_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
                panic!("{qemu} is not installed (MOONBOOT_REQUIRE_FIXTURES=1)");
            }
            eprintln!("SKIPPED DTB test: {qemu} is not installed (run scripts/setup)");
            return None;
        }
        let file: PathBuf = std::env::temp_dir().join(format!("moonboot-virt-{}.dtb", std::process::id()));
        let out = Command::new(qemu)
            .args(["-M", &format!("virt,dumpdtb={}", file.display()), "-cpu", "cortex-a57", "-m", "1536"])
            .args(["-display", "none"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{qemu} dumpdtb failed: {}", String::from_utf8_lossy(&out.stderr));
        let dtb = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        Some(dtb)
    }

    #[test]
    fn rewrites_chosen_of_a_real_qemu_virt_dtb() {
        let Some(dtb) = qemu_virt_dtb() else { return };
        let original = Fdt::parse(&dtb).unwrap();
        // Unchanged round trip keeps every node and property.
        assert_eq!(Fdt::parse(&original.to_bytes()).unwrap(), original);
        assert!(original.root.child("memory@40000000").is_some());

        let cmdline = b"console=ttyAMA0 talos.platform=metal moonboot.test=1\0";
        let mut n = 0u8;
        let mut random = |buf: &mut [u8]| {
            n += 1;
            buf.fill(n);
            true
        };
        let next = next_dtb(&dtb, cmdline, 0x4a00_0000, 0x4b23_4567, &mut random).unwrap();
        let parsed = Fdt::parse(&next).unwrap();
        let chosen = parsed.root.child("chosen").unwrap();
        assert_eq!(chosen.property("bootargs"), Some(&cmdline[..]));
        assert_eq!(chosen.property("linux,initrd-start"), Some(&0x4a00_0000u64.to_be_bytes()[..]));
        assert_eq!(chosen.property("linux,initrd-end"), Some(&0x4b23_4567u64.to_be_bytes()[..]));
        assert_eq!(chosen.property("kaslr-seed"), Some(&[1u8; 8][..]));
        assert_eq!(chosen.property("rng-seed"), Some(&[2u8; RNG_SEED_SIZE][..]));
        // Everything outside /chosen is as QEMU made it.
        let strip = |mut f: Fdt| {
            f.root.children.retain(|c| c.name != "chosen");
            f
        };
        assert_eq!(strip(parsed.clone()), strip(original.clone()));
        let old_chosen = original.root.child("chosen").unwrap();
        for p in &old_chosen.properties {
            if !DROPPED.contains(&p.name.as_str()) {
                assert_eq!(chosen.property(&p.name), Some(p.value.as_slice()), "{} kept", p.name);
            }
        }

        // dtc, a real peer, reads it the same way.
        if Command::new("dtc").arg("--version").output().is_err() {
            if std::env::var_os("MOONBOOT_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
                panic!("dtc is not installed (MOONBOOT_REQUIRE_FIXTURES=1; run scripts/setup)");
            }
            eprintln!("SKIPPED dtc check: dtc is not installed (run scripts/setup)");
            return;
        }
        let file = std::env::temp_dir().join(format!("moonboot-next-{}.dtb", std::process::id()));
        std::fs::write(&file, &next).unwrap();
        let out = Command::new("dtc").args(["-I", "dtb", "-O", "dts"]).arg(&file).output().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(out.status.success(), "dtc failed: {}", String::from_utf8_lossy(&out.stderr));
        let dts = String::from_utf8_lossy(&out.stdout);
        assert!(dts.contains("bootargs = \"console=ttyAMA0 talos.platform=metal moonboot.test=1\";"), "{dts}");
        assert!(dts.contains("linux,initrd-start = <0x00 0x4a000000>;"), "{dts}");
        assert!(dts.contains("linux,initrd-end = <0x00 0x4b234567>;"), "{dts}");
        assert!(dts.contains("memory@40000000"), "{dts}");
    }
}
