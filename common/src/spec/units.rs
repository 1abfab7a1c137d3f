//! Sizes (`"10M"`) and durations (`"30s"`) as written in `deploy.toml`.
//!
//! Sizes use nginx's binary multiples (k = 1024), so `10M` means the same number of bytes in
//! nginx, Apache, uWSGI and the embedded server.

use std::fmt;

use serde::Serialize;

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// A whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u64);

pub fn parse_size(text: &str) -> Result<Size, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. \"10M\", \"512k\" or \"1G\""))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!("{text:?} has an unknown unit {unit:?}; use k, M or G"));
        }
    };
    n.checked_mul(mult)
        .map(Size)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub fn parse_duration(text: &str) -> Result<Seconds, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. \"30s\", \"5m\", \"1h\" or \"7d\""))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!("{text:?} has an unknown unit {unit:?}; use s, m, h or d"));
        }
    };
    n.checked_mul(mult)
        .map(Seconds)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl fmt::Display for Size {
    /// The largest unit that divides exactly, in nginx syntax (`10m`, `512k`, `1g`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n % (1 << 30) == 0 {
            write!(f, "{}G", n >> 30)
        } else if n != 0 && n % (1 << 20) == 0 {
            write!(f, "{}M", n >> 20)
        } else if n != 0 && n % (1 << 10) == 0 {
            write!(f, "{}k", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n % 86_400 == 0 {
            write!(f, "{}d", n / 86_400)
        } else if n != 0 && n % 3600 == 0 {
            write!(f, "{}h", n / 3600)
        } else if n != 0 && n % 60 == 0 {
            write!(f, "{}m", n / 60)
        } else {
            write!(f, "{n}s")
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10M"), Ok(Size(10 << 20)));
        assert_eq!(parse_size("512k"), Ok(Size(512 << 10)));
        assert_eq!(parse_size("100"), Ok(Size(100)));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10X").is_err());
        assert_eq!(Size(10 << 20).to_string(), "10M");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Seconds(30)));
        assert_eq!(parse_duration("7d"), Ok(Seconds(7 * 86_400)));
        assert!(parse_duration("1w").is_err());
        assert_eq!(Seconds(90).to_string(), "90s");
        assert_eq!(Seconds(604_800).to_string(), "7d");
    }
}
