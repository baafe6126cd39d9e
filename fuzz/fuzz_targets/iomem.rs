//! The agent's `/proc/iomem` reader (`agent/src/boot/kexec/iomem.rs`, included by this crate's
//! lib with `#[path]`): `parse` and `usable_ram`, then what the arm64 `kexec_load` path does with
//! the usable ranges, `arm64::place`, for a kernel header and sizes taken from the input.
//!
//! Input: `/proc/iomem` text, optionally followed by a NUL byte and up to five little-endian u64:
//! the `Image` header's `text_offset` and `image_size` (from the downloaded kernel), then the
//! kernel, initramfs and DTB lengths in bytes. Missing values take realistic defaults.

#![no_main]

use boot_artifact::kernel::Arm64Header;
use libfuzzer_sys::fuzz_target;
use moonboot_fuzz::kexec::{arm64, iomem};

fuzz_target!(|data: &[u8]| {
    let (text, tail) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // As the agent reads it.
    let text = String::from_utf8_lossy(text);
    let Ok(resources) = iomem::parse(&text) else { return };
    for r in &resources {
        assert!(r.start <= r.end);
    }
    let Ok(ram) = iomem::usable_ram(&resources) else { return };
    for w in ram.windows(2) {
        assert!(w[0].start() <= w[1].start(), "not sorted: {ram:?}");
    }
    for r in &ram {
        assert!(r.start() <= r.end());
        assert!(
            resources
                .iter()
                .any(|x| x.depth == 0 && x.name == "System RAM" && x.start <= *r.start() && *r.end() <= x.end),
            "{r:?} is not inside a top-level System RAM range"
        );
    }

    let mut v = [0x0u64, 0x0400_0000, 0x0300_0000, 0x0600_0000, 0x2_0000];
    for (slot, chunk) in v.iter_mut().zip(tail.chunks_exact(8)) {
        *slot = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    let [text_offset, image_size, kernel_len, initrd_len, dtb_len] = v;
    let header = Arm64Header { text_offset, image_size, flags: 0xa };
    for page in [4096u64, 65536] {
        let Ok(l) = arm64::place(&ram, page, &header, kernel_len, initrd_len, dtb_len) else { continue };
        let base = l.kernel - text_offset;
        assert_eq!(base % arm64::KERNEL_ALIGN, 0);
        assert!(l.kernel_memsz >= image_size.max(kernel_len));
        assert!(l.initrd >= l.kernel + l.kernel_memsz);
        assert!(l.dtb >= l.initrd + l.initrd_len && l.dtb % 8 == 0);
        assert!(l.dtb_memsz >= dtb_len && dtb_len <= arm64::DTB_MAX);
        assert!(l.trampoline >= l.dtb + l.dtb_memsz && l.trampoline_memsz == page);
        let last = l.trampoline + l.trampoline_memsz - 1;
        assert!(
            ram.iter().any(|r| *r.start() <= base && last <= *r.end()),
            "layout {l:?} is not inside one usable range of {ram:?}"
        );
    }
});
