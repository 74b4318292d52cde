//! Names of volumes, replicas and snapshots. They become file names and URL
//! path segments, so the alphabet is small and fixed.

use thiserror::Error;

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 63;

/// Why a name was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid name {name:?}: {why} (use 1-63 characters: lowercase letters, digits, '-', '.', '_'; start with a letter or digit)"
)]
pub struct NameError {
    /// The refused name.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Checks a volume, replica or snapshot name.
pub fn check_name(name: &str) -> Result<&str, NameError> {
    let err = |why| NameError {
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(err("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err("too long"));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(err("must start with a lowercase letter or digit"));
    }
    if !name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
    }) {
        return Err(err("contains a character outside [a-z0-9._-]"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(check_name("vol-1").is_ok());
        assert!(check_name("a.b_c").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("Vol").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name(&"a".repeat(64)).is_err());
    }
}
