//! `talos-agent wait`: the operator-side collector. Listens for the reports of
//! `talos-agent report` ([`server`]), shows them ([`table`]), and exits once `--nodes` distinct
//! nodes have reached the `--until` phase (phases are ordered: `maintenance_ready` <
//! `configured` < `bootstrap_ready`; a node further along counts too).
//!
//! Output: on a terminal, a live table on stdout (NODE, ADDRESS, PHASE, FINGERPRINT, MBR — the
//! boot disk's hybrid MBR, `-` when not checked —, AGE and the count of refused reports); otherwise one plain line per new node and phase change, and for
//! refused reports at most one line a second (the first, then how many more). With `--json`,
//! stdout holds only JSON lines (one per node, printed at the end) and the plain lines go to
//! stderr. `listening on ADDR` is always the first line on stderr.
//!
//! Exit codes ([`Error::exit_code`]): 0 the nodes reached the phase; 1 failure (cannot listen;
//! one line on stderr); 2 invalid usage; 3 timeout (a summary of every node seen and the refused
//! count on stderr).

pub mod server;
pub mod table;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::report::phase::Phase;
use server::{Event, TokenCheck};
use table::{Change, Nodes};

/// Exit code on failure (the collector cannot listen, or stopped).
pub const EXIT_FAILED: u8 = 1;
/// Exit code on bad usage (clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code on timeout.
pub const EXIT_TIMEOUT: u8 = 3;

/// Why `talos-agent wait` ended without the nodes; [`Error::exit_code`] gives its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--token` is empty: every report would be accepted.
    #[error("--token must not be empty")]
    EmptyToken,
    /// `--nodes 0`: there would be nothing to wait for.
    #[error("--nodes must be at least 1")]
    NoNodes,
    /// The async runtime could not be started.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// `--listen`.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server task ended (it does not, short of a panic).
    #[error("the collector stopped")]
    Stopped,
    /// `--timeout` passed before enough nodes reached the phase; the message lists every node
    /// seen, one per line.
    #[error("{summary}")]
    Timeout {
        /// The summary line and a line per node seen.
        summary: String,
    },
}

impl Error {
    /// The exit code `wait` documents for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::EmptyToken | Error::NoNodes => EXIT_USAGE,
            Error::Runtime(_) | Error::Listen { .. } | Error::Stopped => EXIT_FAILED,
            Error::Timeout { .. } => EXIT_TIMEOUT,
        }
    }
}

/// Arguments of `talos-agent wait`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on for reports (`POST /v1/report`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// The bearer token the nodes send (`talos_agent.token=`); reports without it are refused.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// How many distinct nodes must reach the phase.
    #[arg(long, value_name = "N")]
    pub nodes: usize,
    /// The phase to wait for (a node further along counts too).
    #[arg(long, value_name = "PHASE", default_value_t = Phase::MaintenanceReady)]
    pub until: Phase,
    /// Give up after this long (`90s`, `15m`, `1h`; `0` waits forever).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print one JSON object per node on stdout (address, fingerprint, …) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `500ms`, `90s`, `15m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (like 90s, 15m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs `talos-agent wait`.
///
/// # Errors
/// [`Error`], with its exit code.
pub fn run(args: Args) -> Result<(), Error> {
    if args.token.is_empty() {
        return Err(Error::EmptyToken);
    }
    if args.nodes == 0 {
        return Err(Error::NoNodes);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    rt.block_on(run_async(args))
}

/// Where human output goes.
struct Out {
    tty: bool,
    to_stderr: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

/// At most one `refused:` line a second: the first refusal of a second is shown, the others are
/// counted and told in one line when the second is over.
#[derive(Debug, Default)]
struct RefusedLines {
    /// When the last line was printed.
    last: Option<Instant>,
    /// Refusals since then that got no line.
    suppressed: u64,
}

impl RefusedLines {
    /// The interval between lines.
    const EVERY: Duration = Duration::from_secs(1);

    /// One refusal from `peer`, the `total`th; the line to print, if any.
    fn refused(&mut self, peer: SocketAddr, total: u64, now: Instant) -> Option<String> {
        if self.last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        let more = std::mem::take(&mut self.suppressed);
        self.last = Some(now);
        let more = if more > 0 { format!("; {more} more not shown") } else { String::new() };
        Some(format!("refused: report from {peer} with a wrong or missing token ({total} so far{more})"))
    }

    /// The line for the refusals not shown yet, once their second is over (or with `force`).
    fn flush(&mut self, total: u64, now: Instant, force: bool) -> Option<String> {
        let over = self.last.is_none_or(|t| now.duration_since(t) >= Self::EVERY);
        if self.suppressed == 0 || !(over || force) {
            return None;
        }
        let more = std::mem::take(&mut self.suppressed);
        self.last = Some(now);
        Some(format!("refused: {more} more report(s) with a wrong or missing token ({total} so far)"))
    }
}

async fn run_async(args: Args) -> Result<(), Error> {
    let until = args.until;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Listen { addr: args.listen, source })?;
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| args.listen.to_string());
    // Not a log line but part of the interface (scripts read the address from it): printed
    // whatever RUST_LOG says, like the result lines below.
    eprintln!(
        "talos-agent wait: listening on {local} (POST {}), waiting for {} node(s) to reach {until}",
        server::PATH,
        args.nodes
    );
    let out = Out { tty: !args.json && std::io::stdout().is_terminal(), to_stderr: args.json };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(server::serve(listener, TokenCheck::new(&args.token), tx));
    let start = Instant::now();
    let deadline = (!args.timeout.is_zero()).then(|| tokio::time::Instant::now() + args.timeout);
    let mut nodes = Nodes::default();
    let mut refused = RefusedLines::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                handle(&mut nodes, &mut refused, ev, &out);
            }
            _ = tick.tick() => {}
            _ = timeout => {
                if let Some(l) = refused.flush(nodes.refused, Instant::now(), true).filter(|_| !out.tty) {
                    out.line(&l);
                }
                return Err(timed_out(&nodes, until, args.nodes, start, args.json));
            }
        }
        if let Some(l) = refused.flush(nodes.refused, Instant::now(), false).filter(|_| !out.tty) {
            out.line(&l);
        }
        if out.tty {
            let mut so = std::io::stdout().lock();
            let _ =
                write!(so, "\x1b[H\x1b[J{}", table::table(&nodes, until, args.nodes, Instant::now(), start.elapsed()));
            let _ = so.flush();
        }
        let reached = nodes.reached(until).count();
        if reached >= args.nodes {
            let msg = format!("{reached} node(s) reached {until} after {:.1} s", start.elapsed().as_secs_f64());
            if args.json {
                for n in nodes.reached(until) {
                    println!("{}", table::json_line(n));
                }
                eprintln!("talos-agent wait: {msg}");
            } else {
                if !out.tty {
                    for n in nodes.reached(until) {
                        println!("ready: {}", table::line(n));
                    }
                }
                println!("talos-agent wait: {msg}");
            }
            return Ok(());
        }
    }
    Err(Error::Stopped)
}

fn handle(nodes: &mut Nodes, refused: &mut RefusedLines, ev: Event, out: &Out) {
    match ev {
        Event::Report { peer, report } => {
            let name = report.node.clone();
            let change = nodes.record(peer, *report, Instant::now());
            if change != Change::Same && !out.tty {
                let n = &nodes.nodes[&name];
                let what = if change == Change::New { "new" } else { "changed" };
                out.line(&format!("{what}: {} (from {peer})", table::line(n)));
            }
        }
        Event::Refused { peer } => {
            nodes.refused += 1;
            if let Some(l) = refused.refused(peer, nodes.refused, Instant::now()).filter(|_| !out.tty) {
                out.line(&l);
            }
        }
        Event::Invalid { peer, reason } => {
            nodes.invalid += 1;
            if !out.tty {
                out.line(&format!("invalid: request from {peer}: {reason}"));
            }
        }
    }
}

/// The timeout error, with its summary; with `--json`, prints every node seen on stdout first.
fn timed_out(nodes: &Nodes, until: Phase, want: usize, start: Instant, json: bool) -> Error {
    let reached = nodes.reached(until).count();
    let mut summary = format!(
        "timed out after {:.1} s: {reached}/{want} node(s) reached {until}; {} node(s) seen; {} report(s) refused (wrong or missing token)",
        start.elapsed().as_secs_f64(),
        nodes.nodes.len(),
        nodes.refused
    );
    for n in nodes.nodes.values() {
        summary.push_str(&format!("\n  {}", table::line(n)));
    }
    if json {
        for n in nodes.nodes.values() {
            println!("{}", table::json_line(n));
        }
    }
    Error::Timeout { summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn refused_lines_are_rate_bounded() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = RefusedLines::default();
        assert_eq!(r.flush(0, t0, true), None, "nothing to tell");
        let first = r.refused(peer, 1, t0).unwrap();
        assert_eq!(first, "refused: report from 127.0.0.1:4000 with a wrong or missing token (1 so far)");
        assert_eq!(r.refused(peer, 2, ms(10)), None);
        assert_eq!(r.refused(peer, 3, ms(20)), None);
        assert_eq!(r.flush(3, ms(500), false), None, "the second is not over");
        assert_eq!(
            r.flush(3, ms(1000), false).unwrap(),
            "refused: 2 more report(s) with a wrong or missing token (3 so far)"
        );
        assert_eq!(r.refused(peer, 4, ms(1500)), None, "within a second of the last line");
        assert_eq!(r.flush(4, ms(1800), false), None);
        assert!(r.refused(peer, 5, ms(2100)).unwrap().ends_with("(5 so far; 1 more not shown)"));
        assert_eq!(r.flush(5, ms(3500), false), None, "nothing suppressed since");
        assert!(r.refused(peer, 6, ms(3600)).is_some());
        assert_eq!(r.refused(peer, 7, ms(3700)), None);
        assert_eq!(
            r.flush(7, ms(3800), true).unwrap(),
            "refused: 1 more report(s) with a wrong or missing token (7 so far)",
            "forced at the end"
        );
    }

    #[test]
    fn errors_and_exit_codes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse = |extra: &[&str]| Cli::try_parse_from([&["wait", "--token", "t", "--nodes", "1"], extra].concat());
        assert_eq!(parse(&[]).unwrap().args.until, Phase::MaintenanceReady);
        assert_eq!(parse(&["--until", "bootstrap_ready"]).unwrap().args.until, Phase::BootstrapReady);
        for bad in ["unreachable", "ready", "bootstrap-ready"] {
            let e = parse(&["--until", bad]).err().unwrap();
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{bad}");
        }
        let mut a = parse(&[]).unwrap().args;
        a.nodes = 0;
        assert_eq!(run(a).unwrap_err().exit_code(), EXIT_USAGE);
        let e = timed_out(&Nodes::default(), Phase::Configured, 2, Instant::now(), false);
        assert_eq!(e.exit_code(), EXIT_TIMEOUT);
        assert!(e.to_string().contains("0/2 node(s) reached configured"), "{e}");
        let listen = Error::Listen { addr: "127.0.0.1:1".parse().unwrap(), source: std::io::Error::other("in use") };
        assert_eq!(listen.exit_code(), EXIT_FAILED);
        assert_eq!(listen.to_string(), "cannot listen on 127.0.0.1:1: in use");
    }
}
