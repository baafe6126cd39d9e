//! YAML parsing with one-line errors that name the field and position.

/// Deserialises `text` with serde-saphyr; the error is one line such as
/// "missing field `name` at line 3, column 3" (no source snippet).
///
/// # Errors
/// The parser's message, on one line.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text)
        .map_err(|e| e.without_snippet().to_string().split_whitespace().collect::<Vec<_>>().join(" "))
}
