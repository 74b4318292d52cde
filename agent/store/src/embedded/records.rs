//! How the embedded store lays out what it keeps in redb: a key's record,
//! a lease's record, the lease index keys, and the checks a transaction
//! makes against a record. Decoding never panics: damage is `Corrupt`.

use super::*;

/// One stored key.
pub(super) struct Record {
    pub(super) value: Vec<u8>,
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) lease: Option<LeaseId>,
}

pub(super) const RECORD_V1: u8 = 1;
pub(super) const RECORD_HEADER: usize = 1 + 8 * 3;

impl Record {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + self.value.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.mod_revision.to_le_bytes());
        out.extend_from_slice(&self.lease.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub(super) fn decode(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
        let bad = |why: &str| StoreError::Corrupt(format!("record of {key}: {why}"));
        if bytes.first() != Some(&RECORD_V1) {
            return Err(bad("unknown record version"));
        }
        let (Some(create_revision), Some(mod_revision), Some(lease)) =
            (i64_at(bytes, 1), i64_at(bytes, 9), i64_at(bytes, 17))
        else {
            return Err(bad("truncated"));
        };
        if create_revision < 1 || mod_revision < create_revision || lease < 0 {
            return Err(bad("impossible revisions or lease"));
        }
        Ok(Record {
            value: bytes[RECORD_HEADER..].to_vec(),
            create_revision,
            mod_revision,
            lease: (lease != 0).then_some(lease),
        })
    }

    pub(super) fn into_kv(self, key: String) -> Kv {
        Kv {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

pub(super) fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

/// A lease's TTL and the unix time (ms) it expires at.
pub(super) struct LeaseRecord {
    pub(super) ttl_ms: i64,
    pub(super) expiry_ms: i64,
}

impl LeaseRecord {
    pub(super) fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.ttl_ms.to_le_bytes());
        out[8..].copy_from_slice(&self.expiry_ms.to_le_bytes());
        out
    }

    pub(super) fn decode(id: LeaseId, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
        match (bytes.len(), i64_at(bytes, 0), i64_at(bytes, 8)) {
            (16, Some(ttl_ms), Some(expiry_ms)) => Ok(LeaseRecord { ttl_ms, expiry_ms }),
            _ => Err(StoreError::Corrupt(format!(
                "record of lease {id:x} is malformed"
            ))),
        }
    }
}

pub(super) fn lease_key(id: LeaseId) -> [u8; 8] {
    // Big-endian so that a lease's `lease_keys` entries are one key range.
    id.to_be_bytes()
}

pub(super) fn lease_key_entry(id: LeaseId, key: &str) -> Vec<u8> {
    let mut out = lease_key(id).to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}

pub(super) fn decode_key(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt("a stored key is not UTF-8".into()))
}

pub(super) fn decode_i64(what: &str, bytes: &[u8]) -> Result<i64, StoreError> {
    match (bytes.len(), i64_at(bytes, 0)) {
        (8, Some(v)) => Ok(v),
        _ => Err(StoreError::Corrupt(format!("{what} is malformed"))),
    }
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (all 0xff).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(super) fn expectation_holds(expect: Expect, current: Option<&Record>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Revision(r) => current.is_some_and(|c| c.mod_revision == r),
    }
}
