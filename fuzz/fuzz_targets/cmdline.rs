//! `kernel_cmdline::Cmdline::parse` and Talos's merge of two parsed lines.
//!
//! Input: UTF-8 text `BASE\nEXTRA` (a newline is refused inside a command line, so it is free as
//! the separator; without one, EXTRA is empty). Both are parsed; every line that parses must
//! render back to a line that parses to the same parameters and fits the kernel's buffer, and
//! `merge_talos`, `set_all` and a plain `merge` of EXTRA into BASE must leave a valid line (or fail
//! leaving BASE unchanged).

#![no_main]

use kernel_cmdline::{Cmdline, MergeOptions, Param, COMMAND_LINE_SIZE};
use libfuzzer_sys::fuzz_target;

/// The crate's documented invariants for one parsed line.
fn check(line: &Cmdline) {
    let rendered = line.to_string();
    assert!(rendered.len() < line.limit(), "{rendered:?} does not fit {}", line.limit());
    let back = Cmdline::parse(&rendered).unwrap_or_else(|e| panic!("{rendered:?} does not parse back: {e}"));
    assert_eq!(&back, line, "parse(render(parse(x))) != parse(x) for {rendered:?}");
    let kexec = line.as_kexec_bytes().expect("a parsed line fits");
    assert_eq!(kexec.len(), rendered.len() + 1);
    assert_eq!(kexec.last(), Some(&0));
    for p in line.params() {
        assert!(!p.key().is_empty());
        let one = Param::parse(&p.to_string()).unwrap_or_else(|e| panic!("{p} does not parse alone: {e}"));
        assert_eq!(&one, p);
        // A parameter rebuilt from its key and value renders canonically and parses back.
        if let Ok(canonical) = Param::new(p.key(), p.value()) {
            let text = canonical.to_string();
            assert_eq!(Param::parse(&text).as_ref(), Ok(&canonical), "canonical {text:?}");
        }
        assert_eq!(line.get(p.key()).is_some(), line.contains(p.key()));
    }
}

/// Runs one merge on a copy of `base`: a valid line on success, `base` unchanged on failure.
fn merged(base: &Cmdline, how: &str, f: impl FnOnce(&mut Cmdline) -> Result<(), kernel_cmdline::Error>) {
    let mut line = base.clone();
    match f(&mut line) {
        Ok(()) => check(&line),
        Err(e) => assert_eq!(&line, base, "{how} failed ({e}) but changed the line"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let base = Cmdline::parse(a);
    let extra = Cmdline::parse(b);
    if let Ok(l) = &base {
        check(l);
        assert!(l.len() < COMMAND_LINE_SIZE);
    }
    if let Ok(l) = &extra {
        check(l);
    }
    let (Ok(base), Ok(extra)) = (base, extra) else { return };

    merged(&base, "merge_talos", |l| l.merge_talos(&extra));
    merged(&base, "set_all", |l| l.set_all(&extra));
    merged(&base, "merge", |l| l.merge(&extra, &MergeOptions::default()));

    // Talos's overwrite rule: extra's `console` values replace the base's, when extra does not
    // also delete them.
    let mut l = base.clone();
    if l.merge_talos(&extra).is_ok()
        && extra.contains("console")
        && !extra.params().iter().any(|p| p.key() == "-console")
    {
        let want: Vec<_> = extra.values("console").collect();
        let got: Vec<_> = l.values("console").collect();
        assert_eq!(got, want, "merge_talos did not overwrite console");
    }
});
