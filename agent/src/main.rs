//! `talos-agent`: boots Talos from a running Linux (`boot`), reports readiness from inside Talos
//! (`report`) and waits for nodes on the operator side (`wait`). See ARCHITECTURE.md.
//!
//! Each subcommand lives in its own module, owns its `--help` text, its error type and its
//! documented exit codes (`Error::exit_code`). The error a subcommand ends with is printed once,
//! here, as one line on stderr: `talos-agent <command>: error: <cause: cause: …>`.
//!
//! Logging has one path, `tracing`, for the agent's own lines and for the libraries' (the registry
//! client logs its retries): [`logging`] installs a subscriber that writes plain lines on stderr,
//! `talos-agent <command>: …`, as cloud-init's output log and the extension service's log keep
//! them.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod boot;
mod error_chain;
mod mbr;
mod report;
mod wait;

/// Boot Talos by kexec from a running Linux, and report Talos readiness for bootstrap.
#[derive(Parser, Debug)]
#[command(name = "talos-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch a Talos kernel + initramfs by digest, verify every byte, and kexec into it
    /// (Ubuntu/EC2 side; run as root from cloud-init).
    Boot(Box<boot::Args>),
    /// Report this node's readiness phase to `talos-agent wait` (Talos side; runs as the extension
    /// service `ext-talos-agent`).
    Report(report::Args),
    /// Collect readiness reports and exit when N nodes reach a phase (operator side).
    Wait(wait::Args),
    /// Check the hybrid MBR of a moonboot Raspberry Pi disk, and with --repair restore the slot
    /// Talos rewrites (exit 0 intact/repaired, 1 needs --repair, 2 not a moonboot disk, 3 I/O or
    /// locked). `report` does the same on every cycle when the kernel command line says
    /// talos_agent.mbr=repair.
    Mbr(mbr::Args),
}

impl Command {
    /// The subcommand's name, the prefix of its lines.
    fn name(&self) -> &'static str {
        match self {
            Command::Boot(_) => "boot",
            Command::Report(_) => "report",
            Command::Wait(_) => "wait",
            Command::Mbr(_) => "mbr",
        }
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Time since the process started (since `main` began, precisely): the clock of `boot`'s log
/// lines and of its `--json` timings.
pub(crate) fn elapsed() -> Duration {
    START.get_or_init(Instant::now).elapsed()
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let cli = Cli::parse();
    let name = cli.command.name();
    // `boot` runs once, from cloud-init: its lines carry the time since start, as they always did.
    logging::init(name, matches!(cli.command, Command::Boot(_)));
    match cli.command {
        Command::Boot(args) => finish(name, boot::run(*args), boot::Error::exit_code),
        Command::Report(args) => finish(name, report::run(args), report::Error::exit_code),
        Command::Wait(args) => finish(name, wait::run(args), wait::Error::exit_code),
        Command::Mbr(args) => finish(name, mbr::run(args), mbr::Error::exit_code),
    }
}

/// Prints the error a subcommand ended with (once, with its causes, on stderr, whatever the log
/// filter) and turns it into the subcommand's documented exit code.
fn finish<E: std::error::Error>(command: &str, result: Result<(), E>, exit_code: fn(&E) -> u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("talos-agent {command}: error: {}", error_chain::chain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The `tracing` subscriber: one plain line per event on stderr.
///
/// Format: `talos-agent <command>: [<seconds since start>s] <level: ><message> <field=value …>`,
/// where the time is shown for `boot` only and the level only for warnings (`warning: `), errors
/// (`error: `) and the debug levels (`debug: <target>: `, `trace: <target>: `). No colours.
///
/// Filter: `RUST_LOG` as comma-separated `target=level` / `level` directives (`info`,
/// `moonboot_registry=debug`, `warn,talos_agent=info`), read with [`Targets`]; default `info`. A
/// `RUST_LOG` that names only targets keeps `info` for everything else, so the agent's own lines
/// do not vanish when a library's are turned up.
pub(crate) mod logging {
    use std::fmt;
    use std::time::Instant;

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer as _;

    /// Installs the process-wide subscriber for `command`; with `elapsed`, lines carry the time
    /// since start. An unusable `RUST_LOG` is reported (one warning) and the default used.
    pub fn init(command: &'static str, elapsed: bool) {
        let (filter, bad) = match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => match parse_filter(&v) {
                Ok(f) => (f, None),
                Err(e) => (default_filter(), Some(format!("ignoring RUST_LOG={v:?} ({e}); using info"))),
            },
            _ => (default_filter(), None),
        };
        let start = elapsed.then(|| crate::START.get().copied().unwrap_or_else(Instant::now));
        // Fails only if a subscriber is already installed, which nothing else does.
        let _ = tracing::subscriber::set_global_default(subscriber(command, start, filter, std::io::stderr));
        if let Some(msg) = bad {
            tracing::warn!("{msg}");
        }
    }

    /// The default filter: `info` for every target.
    pub fn default_filter() -> Targets {
        Targets::new().with_default(LevelFilter::INFO)
    }

    /// Parses RUST_LOG-style directives; without a bare level, everything else stays at `info`.
    ///
    /// # Errors
    /// A directive that is not `target=level`, `target` or `level`.
    pub fn parse_filter(s: &str) -> Result<Targets, tracing_subscriber::filter::ParseError> {
        let t: Targets = s.parse()?;
        Ok(if t.default_level().is_none() { t.with_default(LevelFilter::INFO) } else { t })
    }

    /// The subscriber: [`Line`]s for `command` written to `writer`, filtered by `filter`.
    pub fn subscriber<W>(command: &'static str, start: Option<Instant>, filter: Targets, writer: W) -> impl Subscriber
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(Line { command, start })
                .with_writer(writer)
                .with_filter(filter),
        )
    }

    /// Formats one event as one line (see the module documentation).
    pub struct Line {
        /// The subcommand (`boot`, `report`, `wait`).
        pub command: &'static str,
        /// Show the time since this instant.
        pub start: Option<Instant>,
    }

    impl<S, N> FormatEvent<S, N> for Line
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
            write!(w, "talos-agent {}: ", self.command)?;
            if let Some(start) = self.start {
                write!(w, "[{:7.3}s] ", start.elapsed().as_secs_f64())?;
            }
            let meta = event.metadata();
            match *meta.level() {
                Level::ERROR => w.write_str("error: ")?,
                Level::WARN => w.write_str("warning: ")?,
                Level::INFO => {}
                Level::DEBUG => write!(w, "debug: {}: ", meta.target())?,
                Level::TRACE => write!(w, "trace: {}: ", meta.target())?,
            }
            let mut fields = Fields { w: &mut w, result: Ok(()), first: true };
            event.record(&mut fields);
            fields.result?;
            writeln!(w)
        }
    }

    /// Writes the message, then ` name=value` for every other field (strings unquoted).
    struct Fields<'a, 'w> {
        w: &'a mut Writer<'w>,
        result: fmt::Result,
        first: bool,
    }

    impl Fields<'_, '_> {
        fn put(&mut self, field: &Field, value: fmt::Arguments<'_>) {
            if self.result.is_err() {
                return;
            }
            let sep = if self.first { "" } else { " " };
            self.first = false;
            self.result = if field.name() == "message" {
                write!(self.w, "{sep}{value}")
            } else {
                write!(self.w, "{sep}{}={value}", field.name())
            };
        }
    }

    impl Visit for Fields<'_, '_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.put(field, format_args!("{value}"));
        }

        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.put(field, format_args!("{value:?}"));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::{Arc, Mutex};

        /// Collects what the subscriber writes.
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);

        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl<'w> MakeWriter<'w> for Buf {
            type Writer = Buf;
            fn make_writer(&'w self) -> Buf {
                self.clone()
            }
        }

        fn capture(command: &'static str, start: Option<Instant>, filter: &str, f: impl FnOnce()) -> String {
            let buf = Buf::default();
            let sub = subscriber(command, start, parse_filter(filter).unwrap(), buf.clone());
            tracing::subscriber::with_default(sub, f);
            let out = buf.0.lock().unwrap().clone();
            String::from_utf8(out).unwrap()
        }

        #[test]
        fn plain_lines_with_the_command_prefix() {
            let out = capture("boot", None, "info", || {
                tracing::info!("message");
                tracing::warn!(host = "ghcr.io", attempt = 2, "manifest fetch failed, retrying");
                tracing::error!("no luck");
                tracing::debug!("not shown at info");
            });
            assert_eq!(
                out,
                "talos-agent boot: message\n\
                 talos-agent boot: warning: manifest fetch failed, retrying host=ghcr.io attempt=2\n\
                 talos-agent boot: error: no luck\n"
            );
        }

        #[test]
        fn boot_lines_carry_the_time_since_start() {
            let out = capture("boot", Some(Instant::now()), "info", || tracing::info!("verified"));
            let (time, rest) = out.split_once("] ").unwrap();
            assert!(time.starts_with("talos-agent boot: [") && time.ends_with('s'), "{out:?}");
            assert_eq!(time.len(), "talos-agent boot: [  0.000s".len(), "{out:?}");
            assert_eq!(rest, "verified\n");
        }

        #[test]
        fn rust_log_directives() {
            let out = capture("report", None, "warn", || {
                tracing::info!("hidden");
                tracing::warn!("shown");
            });
            assert_eq!(out, "talos-agent report: warning: shown\n");
            // Naming a target only turns that target up; the rest stays at info.
            let out = capture("wait", None, "some_library=debug", || {
                tracing::debug!(target: "some_library", "detail");
                tracing::debug!("hidden");
                tracing::info!("kept");
            });
            assert_eq!(out, "talos-agent wait: debug: some_library: detail\ntalos-agent wait: kept\n");
            assert!(parse_filter("foo=loud").is_err());
        }
    }
}
