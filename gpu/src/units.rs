//! Sizes and switches as people write them in flags, `WEFT_*` variables and
//! config files: one parser for each, used by every crate.

/// Parses a size in bytes: a number (fractions allowed) and an optional
/// unit. Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024;
/// decimal ones (`KB`, `MB`, `GB`, `TB`) and the bare suffixes `K`, `M`,
/// `G`, `T` are powers of 1000, as in Dask. Case does not matter.
///
/// ```
/// use weft_gpu::units::parse_size;
/// assert_eq!(parse_size("8GiB"), Ok(8 << 30));
/// assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 8GiB, 500MB or 4096"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let bytes = number * scale;
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is more bytes than fit in 64 bits"));
    }
    Ok(bytes as u64)
}

/// Parses a switch: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`
/// (any case); anything else is an error that lists them.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{text:?} is not a switch; use 1/true/yes/on or 0/false/no/off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8 gib"), Ok(8 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert!(parse_size("12XB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1e30TB").is_err());
    }

    #[test]
    fn switches() {
        for on in ["1", "true", "YES", " on "] {
            assert_eq!(parse_bool(on), Ok(true), "{on}");
        }
        for off in ["0", "False", "no", "OFF"] {
            assert_eq!(parse_bool(off), Ok(false), "{off}");
        }
        assert!(parse_bool("maybe").unwrap_err().contains("1/true/yes/on"));
        assert!(parse_bool("").is_err());
    }
}
