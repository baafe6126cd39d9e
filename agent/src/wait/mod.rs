//! `talos-agent wait`: the operator-side collector. Listens for the reports of
//! `talos-agent report` ([`server`]), shows them ([`table`]), and exits once `--nodes` distinct
//! nodes have reached the `--until` phase (phases are ordered: `maintenance_ready` <
//! `configured` < `bootstrap_ready`; a node further along counts too).
//!
//! Output: on a terminal, a live table on stdout (NODE, ADDRESS, PHASE, FINGERPRINT, AGE and the
//! count of refused reports); otherwise one plain line per new node, phase change and refused
//! report. With `--json`, stdout holds only JSON lines (one per node, printed at the end) and the
//! plain lines go to stderr. `listening on ADDR` is always the first line on stderr.
//!
//! Exit codes: 0 the nodes reached the phase; 1 failure (cannot listen; one line on stderr);
//! 2 invalid usage; 3 timeout (a summary of every node seen and the refused count on stderr).

pub mod server;
pub mod table;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::report::phase::Phase;
use server::{Event, TokenCheck};
use table::{Change, Nodes};

/// Exit code on timeout.
pub const EXIT_TIMEOUT: u8 = 3;

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
    /// The phase to wait for.
    #[arg(long, value_name = "PHASE", default_value = "maintenance_ready",
          value_parser = ["maintenance_ready", "configured", "bootstrap_ready"])]
    pub until: String,
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
pub fn run(args: Args) -> ExitCode {
    if args.token.is_empty() {
        eprintln!("talos-agent wait: --token must not be empty");
        return ExitCode::from(2);
    }
    if args.nodes == 0 {
        eprintln!("talos-agent wait: --nodes must be at least 1");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("talos-agent wait: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
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

async fn run_async(args: Args) -> ExitCode {
    let until: Phase = args.until.parse().expect("clap checked the value");
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("talos-agent wait: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| args.listen.to_string());
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
                handle(&mut nodes, ev, &out);
            }
            _ = tick.tick() => {}
            _ = timeout => {
                return timed_out(&nodes, until, args.nodes, start, args.json);
            }
        }
        if out.tty {
            let mut so = std::io::stdout().lock();
            let _ =
                write!(so, "\x1b[H\x1b[J{}", table::table(&nodes, until, args.nodes, Instant::now(), start.elapsed()));
            let _ = so.flush();
        }
        let reached = nodes.reached(until).count();
        if reached >= args.nodes {
            let msg = format!(
                "talos-agent wait: {reached} node(s) reached {until} after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            if args.json {
                for n in nodes.reached(until) {
                    println!("{}", table::json_line(n));
                }
                eprintln!("{msg}");
            } else {
                if !out.tty {
                    for n in nodes.reached(until) {
                        println!("ready: {}", table::line(n));
                    }
                }
                println!("{msg}");
            }
            return ExitCode::SUCCESS;
        }
    }
    eprintln!("talos-agent wait: the collector stopped");
    ExitCode::from(1)
}

fn handle(nodes: &mut Nodes, ev: Event, out: &Out) {
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
            if !out.tty {
                out.line(&format!(
                    "refused: report from {peer} with a wrong or missing token ({} so far)",
                    nodes.refused
                ));
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

fn timed_out(nodes: &Nodes, until: Phase, want: usize, start: Instant, json: bool) -> ExitCode {
    let reached = nodes.reached(until).count();
    let mut s = format!(
        "talos-agent wait: timed out after {:.1} s: {reached}/{want} node(s) reached {until}; {} node(s) seen; {} report(s) refused (wrong or missing token)",
        start.elapsed().as_secs_f64(),
        nodes.nodes.len(),
        nodes.refused
    );
    for n in nodes.nodes.values() {
        s.push_str(&format!("\n  {}", table::line(n)));
    }
    eprintln!("{s}");
    if json {
        for n in nodes.nodes.values() {
            println!("{}", table::json_line(n));
        }
    }
    ExitCode::from(EXIT_TIMEOUT)
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
}
