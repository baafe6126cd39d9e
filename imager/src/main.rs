//! `imager`: builds Talos boot artifacts with system extensions (see ARCHITECTURE.md).
//!
//! Exit codes: 0 success; 1 the command failed (one line on stderr names the cause);
//! 2 the command line was invalid (clap's usage error).

use anyhow::Context;
use clap::Parser;
use moonboot_imager::cli::{extensions::ExtensionsCommand, schematic::SchematicCommand, Cli, Command};
use moonboot_imager::{build, bundle, cloud_init, inspect, kernel_args, netboot, publish, schematic::Schematic};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cmdline(args) => kernel_args::run(&args),
        Command::Schematic(SchematicCommand::Id { file, json }) => schematic_id(&file, json),
        Command::Publish(args) => publish::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::CloudInit(args) => cloud_init::run(&args),
        Command::Netboot(args) => netboot::run(&args),
        Command::Extensions(ExtensionsCommand::List(args)) => bundle::run_list(&args),
        Command::Build(args) => build::run(&args),
        Command::Extension(cmd) => build::run_extension(&cmd),
        Command::Warm(args) => moonboot_imager::warm::run(&args),
    };
    if let Err(err) = result {
        eprintln!("imager: {}", boot_artifact::error_chain(err.as_ref()));
        std::process::exit(1);
    }
}

fn schematic_id(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let schematic = Schematic::parse(&text).with_context(|| file.display().to_string())?;
    let id = schematic.id().with_context(|| file.display().to_string())?;
    if json {
        println!("{}", serde_json::json!({ "id": id, "yaml": schematic.marshal()? }));
    } else {
        println!("{id}");
    }
    Ok(())
}
