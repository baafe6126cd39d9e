//! A typed Linux kernel command line.
//!
//! [`Cmdline`] is an ordered list of [`Param`]s, each a key with an optional value, as the kernel
//! splits them (`lib/cmdline.c` `next_arg()` in Linux): parameters are separated by white space,
//! a value or a whole parameter may be wrapped in double quotes to hold spaces
//! (`key="a b"`, `"key=a b"`), and a key may appear several times (`console=tty0 console=ttyS0`).
//!
//! What this crate guarantees:
//! - **Byte-exact round trip.** A line whose parameters are separated by single spaces renders back
//!   exactly as it was parsed (quoting included); any line satisfies
//!   `parse(render(parse(x))) == parse(x)`.
//! - **Refusal at the door** (as `linux-loader`'s `Cmdline` does): a NUL, newline or any other
//!   control character, an unbalanced quote, a quote inside a key or value where the kernel could not
//!   represent it, and a line that would not fit the kernel's buffer are errors when the parameter
//!   is added, never later.
//! - **Talos merge semantics** ([`Cmdline::merge_talos`]): how Talos's imager and installer combine
//!   platform, overlay, default and extra arguments (go-procfs `Cmdline.AppendAll` with
//!   `WithOverwriteArgs("console", "talos.platform")` and `WithDeleteNegatedArgs()`).
//! - **Presets** ([`preset`]) that give exactly the strings Talos's imager gives per Talos minor
//!   version, platform, overlay and architecture, and an [`ip`] renderer for the `ip=` argument
//!   Talos parses.
//!
//! The size limit is [`COMMAND_LINE_SIZE`] bytes *including* the terminating NUL that
//! `kexec_file_load(2)` requires ([`Cmdline::as_kexec_bytes`]).

#![deny(missing_docs)]

pub mod ip;
mod merge;
pub mod preset;
pub mod quirks;

use std::fmt;

pub use merge::MergeOptions;

/// The kernel's command-line buffer size in bytes, terminating NUL included.
///
/// Linux `arch/arm64/include/uapi/asm/setup.h` and `arch/x86/include/asm/setup.h` both define
/// `COMMAND_LINE_SIZE` as 2048; `kexec_file_load(2)` refuses a longer `cmdline_len` with `EINVAL`
/// (`kernel/kexec_file.c`), and the boot code truncates a longer line silently, which is worse.
pub const COMMAND_LINE_SIZE: usize = 2048;

/// Errors from parsing or building a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A NUL, newline, tab or other ASCII control character (0x00–0x1f, 0x7f) at this byte offset.
    /// The kernel would split or truncate the line there.
    #[error("control character 0x{byte:02x} at byte {offset} of the kernel command line")]
    ControlCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset in the input, in bytes.
        offset: usize,
    },
    /// A double quote opened at this byte offset is never closed.
    #[error("unbalanced double quote opened at byte {offset} of the kernel command line")]
    UnbalancedQuote {
        /// Offset of the opening quote, in bytes.
        offset: usize,
    },
    /// A parameter has an empty key (`=value`, `""`).
    #[error("empty parameter name in {param:?}")]
    EmptyKey {
        /// The parameter as written.
        param: String,
    },
    /// A key holds white space, `=` or a double quote; the kernel could not split it back.
    #[error("invalid parameter name {key:?}: white space, '=' and '\"' are not allowed")]
    InvalidKey {
        /// The refused key.
        key: String,
    },
    /// A value holds a double quote; the kernel has no escape for it.
    #[error("invalid value {value:?} for {key}: a double quote cannot be represented")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The refused value.
        value: String,
    },
    /// The rendered line plus its terminating NUL would exceed the limit.
    #[error("kernel command line is {len} bytes plus NUL, over the {limit}-byte limit (COMMAND_LINE_SIZE)")]
    TooLong {
        /// Rendered length in bytes, without the NUL.
        len: usize,
        /// The limit in bytes, NUL included.
        limit: usize,
    },
    /// An `ip=` configuration that cannot be rendered (see [`ip::IpConfig`]).
    #[error("invalid ip= configuration: {0}")]
    Ip(String),
}

/// One kernel parameter: `key`, `key=value` or `key=` (empty value).
///
/// A parameter parsed from text remembers how it was written (its quoting) so that it renders back
/// byte for byte; one built with [`Param::new`] renders canonically: `key`, `key=value`, or
/// `key="value with spaces"`.
#[derive(Debug, Clone)]
pub struct Param {
    key: String,
    value: Option<String>,
    /// The token exactly as parsed, when it came from text.
    raw: Option<String>,
}

impl PartialEq for Param {
    /// Two parameters are equal when key and value are; how they were quoted does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.value == other.value
    }
}
impl Eq for Param {}

fn check_chars(s: &str, base: usize) -> Result<(), Error> {
    match s.bytes().enumerate().find(|(_, b)| b.is_ascii_control()) {
        Some((offset, byte)) => Err(Error::ControlCharacter { byte, offset: base + offset }),
        None => Ok(()),
    }
}

impl Param {
    /// A parameter with `key` and an optional `value` (`None` renders a bare flag such as
    /// `slab_nomerge`; `Some("")` renders `key=`).
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::InvalidKey`] (white space, `=`, `"` in the key),
    /// [`Error::InvalidValue`] (a `"` in the value), [`Error::ControlCharacter`].
    pub fn new(key: impl Into<String>, value: Option<impl Into<String>>) -> Result<Param, Error> {
        let key = key.into();
        let value = value.map(Into::into);
        check_chars(&key, 0)?;
        if key.is_empty() {
            return Err(Error::EmptyKey { param: format!("={}", value.unwrap_or_default()) });
        }
        if key.bytes().any(|b| b == b'=' || b == b'"' || b.is_ascii_whitespace()) {
            return Err(Error::InvalidKey { key });
        }
        if let Some(v) = &value {
            check_chars(v, 0)?;
            if v.contains('"') {
                return Err(Error::InvalidValue { key, value: v.clone() });
            }
        }
        Ok(Param { key, value, raw: None })
    }

    /// Parses one parameter written as on a command line (`key`, `key=value`, `key="a b"`,
    /// `"key=a b"`).
    ///
    /// # Errors
    /// As [`Cmdline::parse`]; also when `s` holds more than one parameter.
    pub fn parse(s: &str) -> Result<Param, Error> {
        let line = Cmdline::parse(s)?;
        let mut params = line.params.into_iter();
        match (params.next(), params.next()) {
            (Some(p), None) => Ok(p),
            (None, _) => Err(Error::EmptyKey { param: s.to_string() }),
            (Some(_), Some(second)) => Err(Error::InvalidKey { key: second.key }),
        }
    }

    /// The parameter name, without quotes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value without its quotes; `None` for a bare flag.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Renders the parameter: as parsed if it came from text, canonically otherwise.
    fn render(&self, out: &mut String) {
        if let Some(raw) = &self.raw {
            out.push_str(raw);
            return;
        }
        out.push_str(&self.key);
        if let Some(v) = &self.value {
            out.push('=');
            if v.bytes().any(|b| b.is_ascii_whitespace()) {
                out.push('"');
                out.push_str(v);
                out.push('"');
            } else {
                out.push_str(v);
            }
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.render(&mut s);
        f.write_str(&s)
    }
}

/// An ordered kernel command line (see the crate documentation).
///
/// Every mutating method either succeeds and leaves a line within [`Cmdline::limit`], or fails
/// and leaves the line unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<Param>,
    limit: usize,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline { params: Vec::new(), limit: COMMAND_LINE_SIZE }
    }
}

impl Cmdline {
    /// An empty command line with the default [`COMMAND_LINE_SIZE`] limit.
    pub fn new() -> Cmdline {
        Cmdline::default()
    }

    /// Parses `s` the way the kernel's `next_arg()` splits it.
    ///
    /// Parameters are separated by runs of spaces; a double quote toggles "inside quotes", where a
    /// space does not separate. A leading quote on the whole parameter or on its value is not part
    /// of the key or value, and neither is the matching closing quote at the end of the parameter.
    ///
    /// # Errors
    /// [`Error::ControlCharacter`] (NUL, newline, tab, …), [`Error::UnbalancedQuote`],
    /// [`Error::EmptyKey`], [`Error::TooLong`] when `s` plus NUL exceeds [`COMMAND_LINE_SIZE`].
    pub fn parse(s: &str) -> Result<Cmdline, Error> {
        check_chars(s, 0)?;
        let mut params = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b' ' {
                i += 1;
                continue;
            }
            let start = i;
            let mut quote_at = None;
            while i < bytes.len() && (quote_at.is_some() || bytes[i] != b' ') {
                if bytes[i] == b'"' {
                    quote_at = if quote_at.is_some() { None } else { Some(i) };
                }
                i += 1;
            }
            if let Some(offset) = quote_at {
                return Err(Error::UnbalancedQuote { offset });
            }
            params.push(split_token(&s[start..i])?);
        }
        let line = Cmdline { params, limit: COMMAND_LINE_SIZE };
        line.check_len()?;
        Ok(line)
    }

    /// The maximum size in bytes, terminating NUL included, that this line may reach.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Sets a different size limit (NUL included), e.g. for a platform whose `COMMAND_LINE_SIZE`
    /// differs from 2048.
    ///
    /// # Errors
    /// [`Error::TooLong`] if the current line already exceeds `limit`; the limit is then unchanged.
    pub fn set_limit(&mut self, limit: usize) -> Result<(), Error> {
        let old = std::mem::replace(&mut self.limit, limit);
        self.check_len().inspect_err(|_| self.limit = old)
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// True when the line holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The value of the first parameter named `key`: `None` if absent, `Some(None)` for a bare flag.
    pub fn get(&self, key: &str) -> Option<Option<&str>> {
        self.params.iter().find(|p| p.key == key).map(Param::value)
    }

    /// All values of `key` in order (`None` entries for bare flags).
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        self.params.iter().filter(move |p| p.key == key).map(Param::value)
    }

    /// True when a parameter named `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.params.iter().any(|p| p.key == key)
    }

    /// Appends `param` at the end, even if its key is present already (no grouping).
    ///
    /// # Errors
    /// [`Error::TooLong`]; the line is then unchanged.
    pub fn push(&mut self, param: Param) -> Result<(), Error> {
        self.try_edit(|l| {
            l.params.push(param);
            Ok(())
        })
    }

    /// Adds `param` the way go-procfs `Cmdline.Append` does: right after the last parameter with
    /// the same key if there is one (so values of a key stay together), else at the end.
    ///
    /// # Errors
    /// [`Error::TooLong`]; the line is then unchanged.
    pub fn append(&mut self, param: Param) -> Result<(), Error> {
        self.try_edit(|l| {
            l.insert_grouped(param);
            Ok(())
        })
    }

    /// Removes every parameter named `key`; returns how many were removed.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.params.len();
        self.params.retain(|p| p.key != key);
        before - self.params.len()
    }

    /// Removes every parameter named `key` whose value is `value` (`None` matches a bare flag);
    /// returns how many were removed.
    pub fn remove_value(&mut self, key: &str, value: Option<&str>) -> usize {
        let before = self.params.len();
        self.params.retain(|p| !(p.key == key && p.value.as_deref() == value));
        before - self.params.len()
    }

    /// Replaces all values of `key` with `values`, at the position of its first occurrence (or at
    /// the end when absent); `values` empty removes the key.
    ///
    /// # Errors
    /// Those of [`Param::new`] for each value, and [`Error::TooLong`]; the line is then unchanged.
    pub fn set(&mut self, key: &str, values: &[Option<&str>]) -> Result<(), Error> {
        let new: Vec<Param> = values.iter().map(|v| Param::new(key, *v)).collect::<Result<_, _>>()?;
        self.try_edit(|l| {
            l.replace_key(key, new);
            Ok(())
        })
    }

    /// The rendered length in bytes, without the terminating NUL.
    pub fn len(&self) -> usize {
        self.to_string().len()
    }

    /// The NUL-terminated buffer `kexec_file_load(2)` takes (its `cmdline_len` is this length).
    ///
    /// # Errors
    /// [`Error::TooLong`] (only possible if the limit was lowered with [`Cmdline::set_limit`]… it is
    /// checked again here so that no caller can pass an over-long buffer to the kernel).
    pub fn as_kexec_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut bytes = self.to_string().into_bytes();
        if bytes.len() + 1 > self.limit {
            return Err(Error::TooLong { len: bytes.len(), limit: self.limit });
        }
        bytes.push(0);
        Ok(bytes)
    }

    /// Runs `edit` on a copy and keeps it only if it succeeds and fits the limit.
    pub(crate) fn try_edit(&mut self, edit: impl FnOnce(&mut Cmdline) -> Result<(), Error>) -> Result<(), Error> {
        let mut copy = self.clone();
        edit(&mut copy)?;
        copy.check_len()?;
        *self = copy;
        Ok(())
    }

    fn insert_grouped(&mut self, param: Param) {
        match self.params.iter().rposition(|p| p.key == param.key) {
            Some(last) => self.params.insert(last + 1, param),
            None => self.params.push(param),
        }
    }

    fn replace_key(&mut self, key: &str, new: Vec<Param>) {
        match self.params.iter().position(|p| p.key == key) {
            Some(first) => {
                self.params.retain(|p| p.key != key);
                // Positions before `first` are unaffected by the removal.
                self.params.splice(first..first, new);
            }
            None => self.params.extend(new),
        }
    }

    fn check_len(&self) -> Result<(), Error> {
        let len = self.len();
        if len + 1 > self.limit {
            return Err(Error::TooLong { len, limit: self.limit });
        }
        Ok(())
    }
}

/// Splits one token (already known to hold balanced quotes and no unquoted space) into a
/// parameter, following `next_arg()`: a leading quote on the token or on the value is dropped
/// together with the token's final quote.
fn split_token(token: &str) -> Result<Param, Error> {
    let (body, whole_quoted) = match token.strip_prefix('"') {
        Some(rest) => (rest.strip_suffix('"').unwrap_or(rest), true),
        None => (token, false),
    };
    let (key, value) = match body.split_once('=') {
        Some((k, v)) => {
            let v = match (whole_quoted, v.strip_prefix('"')) {
                (false, Some(inner)) => inner.strip_suffix('"').unwrap_or(inner),
                _ => v,
            };
            (k, Some(v))
        }
        None => (body, None),
    };
    if key.is_empty() {
        return Err(Error::EmptyKey { param: token.to_string() });
    }
    if key.contains('"') {
        return Err(Error::InvalidKey { key: key.to_string() });
    }
    Ok(Param { key: key.to_string(), value: value.map(str::to_string), raw: Some(token.to_string()) })
}

impl fmt::Display for Cmdline {
    /// Renders the parameters separated by single spaces (no trailing NUL).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            p.render(&mut s);
        }
        f.write_str(&s)
    }
}

impl std::str::FromStr for Cmdline {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Cmdline::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_quoting_flags_and_repeats() {
        for line in [
            "",
            "console=tty0 console=ttyS0,115200 slab_nomerge",
            "foo=\"a b c\" bar",
            "\"foo=a b\" baz=",
            "a=b\"c d\"e",
            "init=/sbin/init -- single",
            "key==v",
        ] {
            let parsed = Cmdline::parse(line).unwrap();
            assert_eq!(parsed.to_string(), line, "round trip of {line:?}");
        }
    }

    #[test]
    fn splits_like_next_arg() {
        let l = Cmdline::parse("  foo=\"a b\"   \"bar=c d\" flag e= a=b\"c d\"e  ").unwrap();
        let got: Vec<(&str, Option<&str>)> = l.params().iter().map(|p| (p.key(), p.value())).collect();
        assert_eq!(
            got,
            vec![("foo", Some("a b")), ("bar", Some("c d")), ("flag", None), ("e", Some("")), ("a", Some("b\"c d\"e")),]
        );
        assert_eq!(l.to_string(), "foo=\"a b\" \"bar=c d\" flag e= a=b\"c d\"e");
    }

    #[test]
    fn refuses_control_characters_and_bad_quotes() {
        assert_eq!(Cmdline::parse("a=b\0c"), Err(Error::ControlCharacter { byte: 0, offset: 3 }));
        assert_eq!(Cmdline::parse("a=b\nc=d"), Err(Error::ControlCharacter { byte: b'\n', offset: 3 }));
        assert!(matches!(Cmdline::parse("a\tb"), Err(Error::ControlCharacter { byte: b'\t', .. })));
        assert!(matches!(Cmdline::parse("a\x7f"), Err(Error::ControlCharacter { byte: 0x7f, .. })));
        assert_eq!(Cmdline::parse("a=\"b c"), Err(Error::UnbalancedQuote { offset: 2 }));
        assert!(matches!(Cmdline::parse("=x"), Err(Error::EmptyKey { .. })));
        assert!(matches!(Param::new("a b", None::<&str>), Err(Error::InvalidKey { .. })));
        assert!(matches!(Param::new("a", Some("x\"y")), Err(Error::InvalidValue { .. })));
        assert!(matches!(Param::new("a", Some("x\ny")), Err(Error::ControlCharacter { .. })));
    }

    #[test]
    fn length_limit_counts_the_nul() {
        let exact = "a".repeat(COMMAND_LINE_SIZE - 1);
        let l = Cmdline::parse(&exact).unwrap();
        let bytes = l.as_kexec_bytes().unwrap();
        assert_eq!(bytes.len(), COMMAND_LINE_SIZE);
        assert_eq!(*bytes.last().unwrap(), 0);
        let over = "a".repeat(COMMAND_LINE_SIZE);
        assert_eq!(Cmdline::parse(&over), Err(Error::TooLong { len: COMMAND_LINE_SIZE, limit: COMMAND_LINE_SIZE }));
    }

    #[test]
    fn failed_edit_leaves_line_unchanged() {
        let mut l = Cmdline::parse(&"a".repeat(COMMAND_LINE_SIZE - 10)).unwrap();
        let before = l.to_string();
        let err = l.push(Param::new("console", Some("ttyS0,115200")).unwrap()).unwrap_err();
        assert!(matches!(err, Error::TooLong { .. }));
        assert_eq!(l.to_string(), before);
        assert!(l.set_limit(100).is_err());
        assert_eq!(l.limit(), COMMAND_LINE_SIZE);
    }

    #[test]
    fn constructed_values_with_spaces_are_quoted() {
        let mut l = Cmdline::new();
        l.push(Param::new("talos.config", Some("http://x/a b")).unwrap()).unwrap();
        l.push(Param::new("slab_nomerge", None::<&str>).unwrap()).unwrap();
        assert_eq!(l.to_string(), "talos.config=\"http://x/a b\" slab_nomerge");
        assert_eq!(Cmdline::parse(&l.to_string()).unwrap(), l);
    }

    #[test]
    fn append_groups_next_to_existing_key() {
        let mut l = Cmdline::parse("console=tty0 quiet").unwrap();
        l.append(Param::parse("console=ttyS0").unwrap()).unwrap();
        l.append(Param::parse("foo=1").unwrap()).unwrap();
        assert_eq!(l.to_string(), "console=tty0 console=ttyS0 quiet foo=1");
        assert_eq!(l.values("console").collect::<Vec<_>>(), vec![Some("tty0"), Some("ttyS0")]);
    }
}
