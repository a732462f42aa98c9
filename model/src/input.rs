//! What every body a client sends is held to, whatever it asks for: no
//! nulls where a field may be left out, no control characters in text.

use serde::Deserialize;

/// For an optional field of a body: left out is `None`, and `null` is
/// refused like any other value of the wrong type (the API documents no
/// nulls, so a null is a mistake, not a way of leaving a field out).
pub fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Whether `text` holds a control character (none belongs in a name, a key
/// or an id; Postgres cannot even store a NUL).
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}
