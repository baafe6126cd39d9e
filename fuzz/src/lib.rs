//! The agent's parsers, for the fuzz targets.
//!
//! `talos-agent` is a binary crate, so its modules cannot be imported. Rather than move them into
//! a library crate (which would change the agent's layout for the fuzzer's sake), this crate
//! compiles the agent's own source files with `#[path]`, in the same module tree as in the agent
//! (`crate::report::{facts, phase, schema}`, `crate::wait::table`, `crate::kexec::{fdt, iomem,
//! arm64}`), so that their `super::`/`crate::` paths resolve unchanged. Nothing is copied: a change
//! to those files is fuzzed as it is. The files must keep depending only on crates listed in
//! fuzz/Cargo.toml; a build of the fuzz targets fails loudly if one starts to need more.

#![allow(dead_code, unused_imports, clippy::all)]

/// `agent/src/boot/kexec/`: the device tree reader, `/proc/iomem`, the arm64 layout.
pub mod kexec;
/// `agent/src/report/`: the report `wait` receives, and the apid certificate reader.
pub mod report;
/// `agent/src/wait/table.rs`: what `wait` does with a report.
pub mod wait;
