//! The `imager` library: everything `imager` does, callable from its binary and its tests.
//!
//! One module per concern: [`cli`] holds only the command-line definitions; the work lives in
//! [`cmdline`] (kernel command lines), [`extension`] (Talos system extensions) and
//! [`schematic`] (Image Factory schematics and their IDs).

pub mod build;
pub mod cli;
pub mod cmdline;
pub mod extension;
pub mod inspect;
pub mod lock_update;
pub mod oci_layout;
pub mod publish;
pub mod schematic;
pub mod yaml;
