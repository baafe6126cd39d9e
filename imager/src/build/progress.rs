//! Progress on stderr: indicatif bars when stderr is a terminal, plain lines otherwise (CI logs).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One step's progress: a byte bar on a terminal, nothing (after one line) otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
}

/// Whether stderr is a terminal (bars) or not (plain lines).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// Prints one plain progress line (`imager: …`) on stderr, above any bar.
pub fn line(msg: &str) {
    eprintln!("imager: {msg}");
}

impl Progress {
    /// Starts a byte-count step named `msg` (`pulling ghcr.io/…`).
    pub fn bytes(msg: &str) -> Progress {
        line(msg);
        if !interactive() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {bytes} {binary_bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// A step without a bar.
    pub fn none() -> Progress {
        Progress { bar: None }
    }

    /// Advances by `n` bytes.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Ends the step, clearing the bar.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
