//! Leases of the embedded store: the live-lease check, dropping a lease
//! with its keys, and the reaper task that drops expired ones.

use std::ops::Bound;

use redb::ReadableTable;

use super::*;

impl Inner {
    pub(super) fn lease(
        &self,
        leases: &Bytes<'_>,
        id: LeaseId,
    ) -> Result<Option<LeaseRecord>, StoreError> {
        match leases
            .get(lease_key(id).as_slice())
            .map_err(|e| self.err(e))?
        {
            None => Ok(None),
            Some(v) => LeaseRecord::decode(id, v.value()).map(Some),
        }
    }

    /// A lease that exists and has not expired, or `LeaseExpired`.
    pub(super) fn live_lease(
        &self,
        t: &Tables<'_>,
        id: LeaseId,
        now: i64,
    ) -> Result<LeaseRecord, StoreError> {
        match self.lease(&t.leases, id)? {
            Some(l) if l.expiry_ms > now => Ok(l),
            _ => Err(StoreError::LeaseExpired(id)),
        }
    }

    /// Deletes leases `ids` and their keys at the next revision (if any key
    /// goes).
    pub(super) fn drop_leases(
        &self,
        t: &mut Tables<'_>,
        ids: &[LeaseId],
    ) -> Result<Changed, StoreError> {
        let revision = self.meta_i64(&t.meta, META_REVISION)? + 1;
        let mut events = Vec::new();
        for &id in ids {
            let start = lease_key(id);
            let end = lease_key(id.saturating_add(1));
            let mut keys = Vec::new();
            for entry in t
                .lease_keys
                .range::<&[u8]>((
                    Bound::Included(start.as_slice()),
                    Bound::Excluded(end.as_slice()),
                ))
                .map_err(|e| self.err(e))?
            {
                let (k, _) = entry.map_err(|e| self.err(e))?;
                let key = k.value().get(8..).ok_or_else(|| {
                    StoreError::Corrupt(format!("an index entry of lease {id:x} is truncated"))
                })?;
                keys.push(decode_key(key)?);
            }
            for key in keys {
                t.lease_keys
                    .remove(lease_key_entry(id, &key).as_slice())
                    .map_err(|e| self.err(e))?;
                // The index may lag a key rebound to another lease; only
                // delete keys still bound to this one.
                if let Some(record) = self.record(&t.keys, &key)?
                    && record.lease == Some(id)
                {
                    t.keys.remove(key.as_bytes()).map_err(|e| self.err(e))?;
                    events.push(WatchEvent::Delete { key, revision });
                }
            }
            t.leases.remove(start.as_slice()).map_err(|e| self.err(e))?;
        }
        if events.is_empty() {
            return Ok(None);
        }
        self.set_meta_i64(&mut t.meta, META_REVISION, revision)?;
        Ok(Some((revision, events)))
    }

    /// Deletes every lease expired at `now` with its keys.
    pub(super) fn reap_expired(&self, now: i64) -> Result<Changed, StoreError> {
        self.commit_and_publish(|t| {
            let mut expired = Vec::new();
            for entry in t.leases.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let id = decode_i64_be(k.value())?;
                if LeaseRecord::decode(id, v.value())?.expiry_ms <= now {
                    expired.push(id);
                }
            }
            if expired.is_empty() {
                return Ok((false, (None, None)));
            }
            let changed = self.drop_leases(t, &expired)?;
            Ok((true, (changed.clone(), changed)))
        })
    }
}

pub(super) fn decode_i64_be(bytes: &[u8]) -> Result<i64, StoreError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a lease id is malformed".into()))?;
    Ok(i64::from_be_bytes(b))
}

pub(super) async fn reap_loop(inner: Weak<Inner>, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        // A weak reference, so that a forgotten store still closes.
        let Some(inner) = inner.upgrade() else { return };
        let path = inner.path.clone();
        match tokio::task::spawn_blocking(move || inner.reap_expired(now_ms())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(store = %path.display(), "reap expired leases: {e}"),
            Err(e) => tracing::warn!(store = %path.display(), "lease reaper task failed: {e}"),
        }
    }
}
