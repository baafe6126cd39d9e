//! Merging one command line into another the way Talos does.
//!
//! Talos combines platform, overlay, default and user arguments with go-procfs v0.1.2
//! (`github.com/siderolabs/go-procfs/procfs/cmdline.go`): `SetAll` for platform and overlay
//! arguments, `AppendAll` for the defaults, and `AppendAll` with
//! `WithOverwriteArgs("console")`, `WithOverwriteArgs("talos.platform")` and
//! `WithDeleteNegatedArgs()` for the user's extra arguments (talos `pkg/imager/imager.go`
//! `buildCmdline`).
//!
//! go-procfs keeps one entry per key, at the key's first position, holding all its values in order.
//! A merge therefore *groups* the values of a repeated key at its first occurrence, and a key whose
//! values were all deleted by value keeps its slot, so that a value added later lands there.

use crate::{Cmdline, Error, Param};

/// How [`Cmdline::merge`] treats incoming parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOptions {
    /// Keys whose incoming values *replace* all existing values, at the position of the key
    /// (go-procfs `WithOverwriteArgs`).
    pub overwrite: Vec<String>,
    /// When true, an incoming `-key` (or `-key=`) removes `key` entirely and `-key=value` removes
    /// only those values (go-procfs `WithDeleteNegatedArgs`). When false, such arguments are added
    /// literally. A lone `-` is always an ordinary key.
    pub delete_negated: bool,
}

impl MergeOptions {
    /// The options Talos applies to extra kernel arguments: overwrite `console` and
    /// `talos.platform`, honour negation (talos `pkg/imager/imager.go` `buildCmdline`; the
    /// installer's `pkg/imager/.../grub` and `cmd/installer` use the same).
    pub fn talos() -> MergeOptions {
        MergeOptions { overwrite: vec!["console".into(), "talos.platform".into()], delete_negated: true }
    }
}

/// One go-procfs entry: a key at its first position with all its values (possibly none left).
struct Slot {
    key: String,
    params: Vec<Param>,
}

/// Groups parameters by key in order of first occurrence.
fn group(params: &[Param]) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::new();
    for p in params {
        match slots.iter_mut().find(|s| s.key == p.key) {
            Some(s) => s.params.push(p.clone()),
            None => slots.push(Slot { key: p.key.clone(), params: vec![p.clone()] }),
        }
    }
    slots
}

/// go-procfs compares values as strings where a bare flag has the value "".
fn value_str(p: &Param) -> &str {
    p.value().unwrap_or("")
}

impl Cmdline {
    /// Merges `extra` into this line with go-procfs `AppendAll` semantics.
    ///
    /// Both lines are grouped by key (values of a key gathered at its first occurrence). Then,
    /// for each incoming key in order of first occurrence:
    /// - `-key` or `-key=` (with [`MergeOptions::delete_negated`]) removes `key`;
    ///   `-key=v1 -key=v2` removes those values of `key` only, leaving its slot;
    /// - a key in [`MergeOptions::overwrite`] has all its values replaced by the incoming ones,
    ///   in place (or at the end when absent);
    /// - any other key gets the incoming values after its existing ones, or at the end.
    ///
    /// Values are never de-duplicated (`slab_nomerge` merged into a line that has it gives it
    /// twice), exactly as Talos.
    ///
    /// # Errors
    /// [`Error::TooLong`] when the result would not fit; the line is then unchanged.
    pub fn merge(&mut self, extra: &Cmdline, opts: &MergeOptions) -> Result<(), Error> {
        self.merge_groups(extra, |key| {
            if opts.delete_negated && key.len() > 1 && key.starts_with('-') {
                Action::Delete
            } else if opts.overwrite.iter().any(|k| k == key) {
                Action::Set
            } else {
                Action::Append
            }
        })
    }

    /// [`Cmdline::merge`] with [`MergeOptions::talos`]: how Talos applies extra kernel arguments.
    ///
    /// # Errors
    /// [`Error::TooLong`]; the line is then unchanged.
    pub fn merge_talos(&mut self, extra: &Cmdline) -> Result<(), Error> {
        self.merge(extra, &MergeOptions::talos())
    }

    /// go-procfs `SetAll`: every key of `args` replaces all values of that key, in place, or is
    /// added at the end. Talos uses it for platform and overlay arguments.
    ///
    /// # Errors
    /// [`Error::TooLong`]; the line is then unchanged.
    pub fn set_all(&mut self, args: &Cmdline) -> Result<(), Error> {
        self.merge_groups(args, |_| Action::Set)
    }

    fn merge_groups(&mut self, extra: &Cmdline, action: impl Fn(&str) -> Action) -> Result<(), Error> {
        self.try_edit(|line| {
            let mut slots = group(&line.params);
            for incoming in group(&extra.params) {
                let key = incoming.key.as_str();
                match action(key) {
                    Action::Delete => {
                        let target = &key[1..];
                        if value_str(&incoming.params[0]).is_empty() {
                            slots.retain(|s| s.key != target);
                        } else if let Some(slot) = slots.iter_mut().find(|s| s.key == target) {
                            slot.params.retain(|p| !incoming.params.iter().any(|n| value_str(n) == value_str(p)));
                        }
                    }
                    Action::Set => match slots.iter_mut().find(|s| s.key == key) {
                        Some(slot) => slot.params = incoming.params,
                        None => slots.push(incoming),
                    },
                    Action::Append => match slots.iter_mut().find(|s| s.key == key) {
                        Some(slot) => slot.params.extend(incoming.params),
                        None => slots.push(incoming),
                    },
                }
            }
            line.params = slots.into_iter().flat_map(|s| s.params).collect();
            Ok(())
        })
    }
}

enum Action {
    Delete,
    Set,
    Append,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(base: &str, args: &[&str], opts: &MergeOptions) -> String {
        let mut l = Cmdline::parse(base).unwrap();
        l.merge(&Cmdline::parse(&args.join(" ")).unwrap(), opts).unwrap();
        l.to_string()
    }

    fn opts(overwrite: &[&str], delete_negated: bool) -> MergeOptions {
        MergeOptions { overwrite: overwrite.iter().map(|s| s.to_string()).collect(), delete_negated }
    }

    /// go-procfs v0.1.2 `procfs/cmdline_test.go` `TestCmdlineAppendAll`, every case verbatim.
    #[test]
    fn go_procfs_append_all_vectors() {
        let none = opts(&[], false);
        let over = opts(&["console"], false);
        let del = opts(&[], true);
        let over_del = opts(&["console"], true);
        let cases: &[(&str, &[&str], &MergeOptions, &str)] = &[
            (
                "ip=dhcp console=x root=/dev/sdc",
                &["root=/dev/sda", "root=/dev/sdb"],
                &none,
                "ip=dhcp console=x root=/dev/sdc root=/dev/sda root=/dev/sdb",
            ),
            ("root=/dev/sdb", &["this=that=those"], &none, "root=/dev/sdb this=that=those"),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["console=tty0", "console=ttyS1,115200", "nogui"],
                &none,
                "console=tty0 console=ttyS0 console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["console=tty0", "console=ttyS1,115200", "nogui"],
                &over,
                "console=tty0 console=ttyS1,115200 root=/dev/sdb nogui",
            ),
            ("console=tty0 console=ttyS0 root=/dev/sdb", &["-console", "nogui"], &over_del, "root=/dev/sdb nogui"),
            ("console=tty0 console=ttyS0,9600 root=/dev/sdb", &["-console", "nogui"], &del, "root=/dev/sdb nogui"),
            (
                "console=tty0 console=ttyS0,9600 root=/dev/sdb",
                &["-console=ttyS0,9600", "nogui"],
                &del,
                "console=tty0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console=tty0", "nogui"],
                &over_del,
                "console=ttyS0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console", "nogui", "console=ttyAMA0"],
                &over_del,
                "root=/dev/sdb nogui console=ttyAMA0",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console=tty0", "nogui", "console=ttyAMA0"],
                &del,
                "console=ttyS0 console=ttyAMA0 root=/dev/sdb nogui",
            ),
            (
                "console=tty0 console=ttyS0 root=/dev/sdb",
                &["-console=tty0", "nogui", "console=ttyAMA0"],
                &over_del,
                "console=ttyAMA0 root=/dev/sdb nogui",
            ),
        ];
        for (base, args, o, want) in cases {
            assert_eq!(run(base, args, o), *want, "{base:?} + {args:?} with {o:?}");
        }
    }

    /// go-procfs `TestCmdlineSetAll`, verbatim.
    #[test]
    fn go_procfs_set_all_vectors() {
        for (base, args, want) in [
            ("", "root=/dev/sda root=/dev/sdb", "root=/dev/sda root=/dev/sdb"),
            ("root=/dev/sdb root=/dev/sdc aye=sir", "root=/dev/mmcblk0", "root=/dev/mmcblk0 aye=sir"),
        ] {
            let mut l = Cmdline::parse(base).unwrap();
            l.set_all(&Cmdline::parse(args).unwrap()).unwrap();
            assert_eq!(l.to_string(), want);
        }
    }

    #[test]
    fn talos_console_and_platform_replace_in_place() {
        let t = MergeOptions::talos();
        assert_eq!(
            run(
                "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1",
                &["console=ttyS0,115200", "talos.platform=aws"],
                &t
            ),
            "talos.platform=aws console=ttyS0,115200 init_on_alloc=1"
        );
    }

    #[test]
    fn a_key_emptied_by_value_keeps_its_slot() {
        // go-procfs Delete leaves the entry with no values; a later Append fills it in place.
        assert_eq!(
            run("console=tty0 root=x", &["-console=tty0", "console=ttyS0"], &opts(&[], true)),
            "console=ttyS0 root=x"
        );
        // `-key=` is `-key`: the whole key goes, and a re-added key goes to the end.
        assert_eq!(run("a=1 b a=2", &["-a=", "a=3"], &opts(&[], true)), "b a=3");
    }

    #[test]
    fn merging_groups_repeated_keys_and_keeps_duplicates() {
        assert_eq!(
            run("console=tty0 quiet console=ttyS0", &["x"], &MergeOptions::talos()),
            "console=tty0 console=ttyS0 quiet x"
        );
        assert_eq!(
            run("slab_nomerge pti=on", &["slab_nomerge"], &MergeOptions::talos()),
            "slab_nomerge slab_nomerge pti=on"
        );
        // A lone "-" is an ordinary key.
        assert_eq!(run("a", &["-"], &MergeOptions::talos()), "a -");
    }

    #[test]
    fn merge_that_overflows_changes_nothing() {
        let mut l = Cmdline::parse(&"x".repeat(2000)).unwrap();
        let extra = Cmdline::parse(&format!("y={}", "z".repeat(60))).unwrap();
        assert!(matches!(l.merge_talos(&extra), Err(Error::TooLong { .. })));
        assert_eq!(l.len(), 2000);
    }
}
