//! One-line error rendering shared by the subcommands.

/// Renders an error with its chain of causes on one line (`a: b: c`), leaving out a cause whose
/// text the line already contains (many errors repeat their source in their own message).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
