//! `imager schematic …` (the work: [`crate::schematic`]).

use std::path::PathBuf;

/// `imager schematic …`.
#[derive(clap::Subcommand, Debug)]
pub enum SchematicCommand {
    /// Print the schematic ID of a schematic file, computed exactly as the Image Factory does
    /// (sha256 of its canonical YAML).
    Id {
        /// Schematic file (YAML or JSON); `-` reads standard input.
        file: PathBuf,
        /// Also print the canonical YAML that was hashed, as JSON: {"id": …, "yaml": …}.
        #[arg(long)]
        json: bool,
    },
}
