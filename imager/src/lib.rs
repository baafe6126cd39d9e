//! The `imager` library: everything `imager` does, callable from its binary and its tests.
//!
//! One module per concern: [`cli`] holds only the command-line definitions (and imports nothing
//! from the rest); the work lives in [`kernel_args`] (the Talos kernel command line for given
//! arguments), [`build`], [`bundle`] (Talos's extensions and overlays bundles), [`publish`], [`inspect`], [`netboot`] (matchbox, iPXE and dnsmasq assets), [`cloud_init`] (EC2 user-data), [`extension`] (Talos system
//! extensions) and [`schematic`] (Image Factory schematics and their IDs), which take their
//! arguments from [`cli`].

pub mod board;
pub mod build;
pub mod bundle;
pub mod cli;
pub mod cloud_init;
pub mod extension;
pub mod inspect;
pub mod kernel_args;
pub mod machine_config;
pub mod netboot;
pub mod oci_layout;
pub mod publish;
pub mod schematic;
pub mod warm;
pub mod yaml;
