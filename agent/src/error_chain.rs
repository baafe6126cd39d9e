//! One-line error rendering shared by the subcommands: [`boot_artifact::error_chain`].

pub use boot_artifact::error_chain as chain;
