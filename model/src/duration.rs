//! Durations as an operator writes them, in flags and scenario files alike:
//! `250ms`, `2s`, `1.5s`, `3m`, `1h`, `1m30s`, or a bare number of seconds.
//! One parser for the storm, the drills and the CLI's flags.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The units a part may have, longest first (so `ms` is not read as `m`).
const UNITS: [(&str, f64); 4] = [("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)];

/// Parses a duration: one or more parts, each a number and a unit (`1m30s`,
/// `1.5s`), or a bare number of seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let not_one = || format!("{text:?} is not a duration (like 500ms, 2s, 1m30s, 1h)");
    if text.is_empty() {
        return Err(not_one());
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let seconds = text.parse::<f64>().map_err(|_| not_one())?;
        return from_seconds(seconds).ok_or_else(not_one);
    }
    let mut seconds = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: {rest:?} has no unit (ms, s, m or h)"))?;
        let (number, after) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| not_one())?;
        let (unit, scale) = UNITS
            .iter()
            .find(|(unit, _)| after.starts_with(unit))
            .ok_or_else(|| format!("{text:?}: the unit must be ms, s, m or h"))?;
        seconds += number * scale;
        rest = &after[unit.len()..];
    }
    from_seconds(seconds).ok_or_else(not_one)
}

/// A duration of `seconds`, if that is one (not negative, not past what a
/// `Duration` holds).
fn from_seconds(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds).ok()
}

/// For serde: a duration written as text (`"2s"`) or a number of seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Seconds(f64),
    }
    let seconds = match Written::deserialize(deserializer)? {
        Written::Text(text) => return parse(&text).map_err(serde::de::Error::custom),
        Written::Seconds(seconds) => seconds,
    };
    from_seconds(seconds)
        .ok_or_else(|| serde::de::Error::custom(format!("{seconds} is not a duration")))
}

/// For serde: an optional duration, as [`deserialize`] reads one.
pub fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_people_write() {
        let ms = Duration::from_millis;
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("2s"), Ok(ms(2_000)));
        assert_eq!(parse("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse("3m"), Ok(ms(180_000)));
        assert_eq!(parse("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse(" 3 "), Ok(ms(3_000)), "a bare number is seconds");
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn says_what_is_wrong() {
        for (text, says) in [
            ("", "not a duration"),
            ("-1s", "not a duration"),
            ("5d", "the unit must be"),
            ("1m30", "has no unit"),
            ("fast", "not a duration"),
            ("1..5s", "not a duration"),
            ("1e30", "the unit must be"),
            ("9999999999999999999999h", "not a duration"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn reads_text_or_seconds_from_a_file() {
        #[derive(Deserialize)]
        struct File {
            #[serde(default, deserialize_with = "deserialize_option")]
            wait: Option<Duration>,
        }
        let read = |text: &str| serde_json::from_str::<File>(text).map(|f| f.wait);
        assert_eq!(
            read(r#"{"wait": "1m30s"}"#).unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            read(r#"{"wait": 2.5}"#).unwrap(),
            Some(Duration::from_millis(2_500))
        );
        assert_eq!(read("{}").unwrap(), None);
        let huge = read(r#"{"wait": 1e30}"#).unwrap_err().to_string();
        assert!(huge.contains("not a duration"), "{huge}");
        let error = read(r#"{"wait": "soon"}"#).unwrap_err().to_string();
        assert!(error.contains("not a duration"), "{error}");
    }
}
