//! Replica addresses: `tcp://host:port/NAME`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::name::check_name;

/// Where a replica is served: a replica server's `host:port` and the
/// replica's name on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplicaAddress {
    /// `host:port` of the replica server.
    pub server: String,
    /// The replica's name on that server.
    pub name: String,
}

impl ReplicaAddress {
    /// The replica name an address text ends with (`tcp://host:port/<name>`)
    /// without parsing the rest: how a replica is matched to an engine's
    /// slot when only the text is at hand (its server may have moved).
    pub fn name_of(address: &str) -> &str {
        address.rsplit('/').next().unwrap_or(address)
    }
}

/// Why a replica address was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid replica address {text:?}: {why} (expected tcp://HOST:PORT/NAME)")]
pub struct AddressError {
    text: String,
    why: String,
}

impl FromStr for ReplicaAddress {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| AddressError {
            text: text.to_string(),
            why: why.to_string(),
        };
        let rest = text
            .strip_prefix("tcp://")
            .ok_or_else(|| err("scheme must be tcp://"))?;
        let (server, name) = rest.split_once('/').ok_or_else(|| err("missing /NAME"))?;
        let (host, port) = server
            .rsplit_once(':')
            .ok_or_else(|| err("missing :PORT"))?;
        if host.is_empty() {
            return Err(err("empty host"));
        }
        port.parse::<u16>()
            .map_err(|_| err("port is not a number"))?;
        check_name(name).map_err(|e| err(&e.to_string()))?;
        Ok(ReplicaAddress {
            server: server.to_string(),
            name: name.to_string(),
        })
    }
}

impl TryFrom<String> for ReplicaAddress {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ReplicaAddress> for String {
    fn from(a: ReplicaAddress) -> String {
        a.to_string()
    }
}

impl fmt::Display for ReplicaAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}/{}", self.server, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let a: ReplicaAddress = "tcp://127.0.0.1:7000/vol-r1".parse().unwrap();
        assert_eq!(a.server, "127.0.0.1:7000");
        assert_eq!(a.name, "vol-r1");
        assert_eq!(a.to_string(), "tcp://127.0.0.1:7000/vol-r1");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "udp://h:1/x",
            "tcp://h/x",
            "tcp://h:1",
            "tcp://h:x/y",
            "tcp://:1/x",
            "tcp://h:1/../x",
        ] {
            assert!(bad.parse::<ReplicaAddress>().is_err(), "{bad}");
        }
    }
}
