//! Volume sizes as users write them: `4096`, `64MiB`, `10GiB`.

use thiserror::Error;

/// Every volume size and every replica I/O is a multiple of this.
pub const BLOCK_SIZE: u64 = 4096;

/// Largest volume we accept (64 TiB): well inside what sparse files on
/// ext4/xfs hold, and far from u64 overflow in offset arithmetic.
pub const MAX_VOLUME_SIZE: u64 = 64 << 40;

/// Why a size string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    /// The text is not a number with an optional unit.
    #[error("invalid size {0:?}: expected a number with an optional unit (4096, 64MiB, 10GiB)")]
    Syntax(String),
    /// The unit is not one we know.
    #[error("invalid size {text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB)")]
    Unit { text: String, unit: String },
    /// Zero bytes.
    #[error("invalid size: must be greater than zero")]
    Zero,
    /// Not a multiple of the block size.
    #[error("invalid size {0} bytes: must be a multiple of 4096")]
    Unaligned(u64),
    /// Over [`MAX_VOLUME_SIZE`] or overflowing.
    #[error("invalid size {0:?}: larger than the maximum of 64 TiB")]
    TooLarge(String),
}

/// Parses a size with an optional binary unit and checks it is a usable
/// volume size: non-zero, a multiple of [`BLOCK_SIZE`], at most [`MAX_VOLUME_SIZE`].
pub fn parse_volume_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(SizeError::Syntax(text.to_string()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::TooLarge(text.to_string()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(SizeError::Unit {
                text: text.to_string(),
                unit: other.to_string(),
            });
        }
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))?;
    check_volume_size(bytes).map_err(|e| match e {
        SizeError::TooLarge(_) => SizeError::TooLarge(text.to_string()),
        other => other,
    })
}

/// Checks a size in bytes: non-zero, aligned, not too large.
pub fn check_volume_size(bytes: u64) -> Result<u64, SizeError> {
    if bytes == 0 {
        return Err(SizeError::Zero);
    }
    if !bytes.is_multiple_of(BLOCK_SIZE) {
        return Err(SizeError::Unaligned(bytes));
    }
    if bytes > MAX_VOLUME_SIZE {
        return Err(SizeError::TooLarge(bytes.to_string()));
    }
    Ok(bytes)
}

/// Formats bytes for humans: `64 MiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{} {}", v as u64, UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_volume_size("4096"), Ok(4096));
        assert_eq!(parse_volume_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_volume_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_volume_size("1TiB"), Ok(1 << 40));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(parse_volume_size("0"), Err(SizeError::Zero));
        assert_eq!(parse_volume_size("4097"), Err(SizeError::Unaligned(4097)));
        assert!(matches!(
            parse_volume_size("MiB"),
            Err(SizeError::Syntax(_))
        ));
        assert!(matches!(
            parse_volume_size("5XB"),
            Err(SizeError::Unit { .. })
        ));
        assert!(matches!(
            parse_volume_size("65TiB"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_volume_size("99999999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
    }
}
