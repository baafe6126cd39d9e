// `#[path]` here is relative to fuzz/src/ (this file is not a mod.rs).
#[path = "../../agent/src/report/facts.rs"]
pub mod facts;
#[path = "../../agent/src/report/phase.rs"]
pub mod phase;
#[path = "../../agent/src/report/schema.rs"]
pub mod schema;
