//! The `imager` library: everything `imager` does, callable from its binary and its tests.
//!
//! One module per concern: [`cli`] holds only the command-line definitions; the work lives in
//! [`cmdline`] (kernel command lines) and [`extension`] (Talos system extensions).

pub mod cli;
pub mod cmdline;
pub mod extension;
