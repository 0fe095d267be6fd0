//! Value types of the configuration that carry a unit: durations
//! ([`Dur`], `"400ms"`, `"5s"`) and sizes ([`ByteSize`], `"256MiB"`), and
//! the list deserializer that makes a bad list element an error located in
//! the file.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written as `"400ms"`, `"5s"`, `"2m"`, `"1h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds.
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?} (examples: \"400ms\", \"5s\", \"1d\")"))?;
        let mult = match unit {
            "ms" => 0.001,
            "s" | "" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h or d)")),
        };
        if !n.is_finite() || n < 0.0 || n * mult > 1e9 {
            return Err(format!("duration {s:?} out of range"));
        }
        Ok(Dur(Duration::from_secs_f64(n * mult)))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes: an integer or `"256MiB"`, `"64KiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("bad size {s:?} (examples: \"256MiB\", \"1GiB\", 0)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            _ => return Err(format!("bad size unit in {s:?} (use B, KiB, MiB or GiB)")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} out of range"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Deserializes a list of strings through `FromStr`, so a bad address is
/// reported by toml with the span of the offending value.
pub(super) fn parse_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| T::from_str(s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(
            "400ms".parse::<Dur>().unwrap().0,
            Duration::from_millis(400)
        );
        assert_eq!(
            "1.8s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1800)
        );
        assert_eq!("1d".parse::<Dur>().unwrap().0, Duration::from_secs(86400));
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert!("12XB".parse::<ByteSize>().is_err());
    }
}
