// `#[path]` here is relative to fuzz/src/ (this file is not a mod.rs).
#[path = "../../agent/src/boot/kexec/arm64.rs"]
pub mod arm64;
#[path = "../../agent/src/boot/kexec/fdt.rs"]
pub mod fdt;
#[path = "../../agent/src/boot/kexec/iomem.rs"]
pub mod iomem;
