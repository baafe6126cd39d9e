// `#[path]` here is relative to fuzz/src/ (this file is not a mod.rs).
#[path = "../../agent/src/wait/table.rs"]
pub mod table;
