//! The data path. Writes (and trims, zeroes) go to every RW and WO replica
//! at once and are acknowledged when all have answered; a replica that fails
//! or times out is marked ERR and the request still succeeds if at least one
//! RW replica took it. Reads go to one RW replica, local first, failing over
//! to the next. FLUSH and FUA are durable on every RW replica before the
//! reply. Unaligned requests are widened to 4 KiB blocks (read-modify-write
//! under the exclusive gate, so two unaligned writes to one block never race).
//!
//! Metrics: each [`ExportDevice`] method times and counts its request
//! around the inner `serve_*` call; `fan_out` times each replica's leg of a
//! write, trim or write-zeroes (see [`super::metrics`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;

use super::{Backend, BackendError, Engine, FaultReason, IoOp, MAX_REPLICA_IO, Mode, Slot};
use crate::device::{DeviceError, ExportDevice};
use crate::size::BLOCK_SIZE;

fn aligned(offset: u64, len: u64) -> bool {
    offset.is_multiple_of(BLOCK_SIZE) && len.is_multiple_of(BLOCK_SIZE)
}

/// `[offset, offset+len)` widened to whole blocks.
fn widen(offset: u64, len: u64) -> (u64, u64) {
    let start = offset - offset % BLOCK_SIZE;
    let end = (offset + len).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    (start, end - start)
}

impl Engine {
    /// Every replica access runs under the gate and passes here first, so
    /// once [`Engine::fence`] returned nothing more reaches a replica.
    pub(super) fn check_fence(&self) -> Result<(), DeviceError> {
        if self.is_fenced() {
            let why = match self.fenced_by_newer() {
                Some(f) => format!("volume {}: {f}", self.name),
                None => format!(
                    "engine of volume {} is fenced: another engine took the volume over",
                    self.name
                ),
            };
            return Err(DeviceError::Io(why));
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(DeviceError::InvalidArgument(format!(
                "range {offset}+{len} is past the end of volume {} ({} bytes)",
                self.name, self.size
            ))),
        }
    }

    /// Runs `op` on every RW and WO replica concurrently. Succeeds when at
    /// least one RW replica succeeded; every failure marks its replica ERR.
    /// Each replica's leg of a write, trim or write-zeroes (not a flush) is
    /// recorded in its write-latency histogram, failed and timed-out legs
    /// included: that is the time the engine waited for it.
    async fn fan_out<F, Fut>(&self, kind: IoOp, op: F) -> Result<(), DeviceError>
    where
        F: Fn(Backend) -> Fut,
        Fut: Future<Output = Result<(), BackendError>>,
    {
        self.check_fence()?;
        let slots = self.slots();
        let mut targets: Vec<(&Arc<Slot>, Backend)> = slots
            .iter()
            .filter(|s| matches!(s.mode(), Mode::ReadWrite | Mode::WriteOnly))
            .filter_map(|s| s.backend.clone().map(|b| (s, b)))
            .collect();
        // Remote replicas first: `join_all` polls in order, so their requests
        // are on the wire before the in-process call is handed to the
        // blocking pool; all then proceed in parallel.
        targets.sort_by_key(|(s, _)| s.is_local());
        let what = kind.as_str();
        let timeout = self.config.io_timeout;
        // One start for all legs; each leg reads the clock when it answers.
        let started = Instant::now();
        // A leg whose replica goes ERR meanwhile (the monitor's ping found
        // it frozen, another request failed on it) stops waiting at once:
        // its answer no longer counts.
        let results = join_all(targets.iter().map(|(slot, b)| {
            let leg = tokio::time::timeout(timeout, op(b.clone()));
            async move {
                let result = tokio::select! {
                    r = leg => Some(r),
                    _ = slot.gone() => None,
                };
                (result, started.elapsed())
            }
        }))
        .await;
        let mut rw_ok = 0usize;
        for ((slot, _), (result, took)) in targets.iter().zip(results) {
            if kind != IoOp::Flush {
                slot.record_write_latency(&self.name, took.as_secs_f64());
            }
            match result {
                None => {}
                Some(Ok(Ok(()))) if slot.mode() == Mode::ReadWrite => rw_ok += 1,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => self.fail(slot, e.reason, format!("{what}: {}", e.message)),
                Some(Err(_)) => self.fail(
                    slot,
                    FaultReason::Timeout,
                    format!("{what}: no answer within {timeout:?}"),
                ),
            }
        }
        // A replica refused us for a newer engine's epoch: whatever the
        // others did, this engine no longer owns the volume.
        self.check_fence()?;
        if rw_ok == 0 {
            return Err(DeviceError::Io(self.why_unavailable()));
        }
        self.check_min_rw(rw_ok)?;
        // A replica that left RW no longer holds what we acknowledge: the
        // control plane must know before the client does.
        self.wait_membership_recorded().await
    }

    /// Reads an aligned range from one RW replica, local first, failing over.
    async fn read_aligned(&self, offset: u64, len: u64) -> Result<Bytes, DeviceError> {
        self.check_fence()?;
        let slots = self.slots();
        let mut order: Vec<&Arc<Slot>> = slots
            .iter()
            .filter(|s| s.mode() == Mode::ReadWrite && s.backend.is_some())
            .collect();
        order.sort_by_key(|s| !s.is_local());
        let timeout = self.config.io_timeout;
        'replicas: for slot in order {
            let Some(backend) = slot.backend.as_ref() else {
                continue;
            };
            if slot.mode() != Mode::ReadWrite {
                continue;
            }
            // One replica request for the whole range: its buffer is the
            // answer, not copied. Longer ranges are assembled from chunks.
            let mut out = if len > MAX_REPLICA_IO {
                BytesMut::with_capacity(len as usize)
            } else {
                BytesMut::new()
            };
            let mut pos = offset;
            while pos < offset + len {
                let n = (offset + len - pos).min(MAX_REPLICA_IO);
                let read = tokio::select! {
                    r = tokio::time::timeout(timeout, backend.read(pos, n as u32)) => r,
                    // ERR meanwhile: try the next replica at once
                    _ = slot.gone() => continue 'replicas,
                };
                match read {
                    Ok(Ok(data)) if data.len() as u64 == n && n == len => return Ok(data),
                    Ok(Ok(data)) if data.len() as u64 == n => out.extend_from_slice(&data),
                    Ok(Ok(data)) => {
                        self.fail(
                            slot,
                            FaultReason::Invalid,
                            format!("read returned {} bytes, asked {n}", data.len()),
                        );
                        continue 'replicas;
                    }
                    Ok(Err(e)) => {
                        self.fail(slot, e.reason, format!("read: {}", e.message));
                        self.check_fence()?;
                        continue 'replicas;
                    }
                    Err(_) => {
                        self.fail(
                            slot,
                            FaultReason::Timeout,
                            format!("read: no answer within {timeout:?}"),
                        );
                        continue 'replicas;
                    }
                }
                pos += n;
            }
            return Ok(out.freeze());
        }
        Err(DeviceError::Io(self.why_unavailable()))
    }

    /// Writes an aligned range to every RW/WO replica, in chunks.
    async fn write_aligned(&self, offset: u64, data: Bytes) -> Result<(), DeviceError> {
        let mut pos = 0u64;
        let len = data.len() as u64;
        while pos < len {
            let n = (len - pos).min(MAX_REPLICA_IO);
            let chunk = data.slice(pos as usize..(pos + n) as usize);
            let at = offset + pos;
            self.fan_out(IoOp::Write, |b| {
                let chunk = chunk.clone();
                async move { b.write(at, chunk).await }
            })
            .await?;
            pos += n;
        }
        Ok(())
    }

    pub(super) async fn flush_all(&self) -> Result<(), DeviceError> {
        self.fan_out(IoOp::Flush, |b| async move { b.flush().await })
            .await
    }

    /// Zeroes or trims a range: whole blocks go to the replicas as the
    /// operation itself, partial edge blocks are written as zeros.
    async fn zero_range(&self, offset: u64, len: u64, trim: bool) -> Result<(), DeviceError> {
        let end = offset + len;
        let first_full = offset.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let last_full = end - end % BLOCK_SIZE;
        if last_full > first_full {
            let _gate = self.io_gate().await?;
            let kind = if trim { IoOp::Trim } else { IoOp::WriteZeroes };
            let n = last_full - first_full;
            self.fan_out(kind, |b| async move {
                if trim {
                    b.trim(first_full, n).await
                } else {
                    b.write_zeroes(first_full, n).await
                }
            })
            .await?;
        }
        if offset < first_full {
            let hi = first_full.min(end);
            self.write_unaligned(offset, Bytes::from(vec![0u8; (hi - offset) as usize]))
                .await?;
        }
        if end > last_full && last_full >= first_full {
            self.write_unaligned(
                last_full,
                Bytes::from(vec![0u8; (end - last_full) as usize]),
            )
            .await?;
        }
        Ok(())
    }

    /// Read-modify-write of an unaligned write, exclusive so that two
    /// unaligned writes sharing a block cannot lose each other's bytes.
    async fn write_unaligned(&self, offset: u64, data: Bytes) -> Result<(), DeviceError> {
        let (start, wlen) = widen(offset, data.len() as u64);
        let _gate = self.io_gate_exclusive().await?;
        let old = self.read_aligned(start, wlen).await?;
        let mut buf = BytesMut::from(&old[..]);
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(&data);
        self.write_aligned(start, buf.freeze()).await
    }
}

/// The requests themselves; [`ExportDevice`] wraps each with its metrics.
impl Engine {
    async fn serve_read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        let len = u64::from(len);
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let _gate = self.read_gate().await?;
        if aligned(offset, len) {
            return self.read_aligned(offset, len).await;
        }
        let (start, wlen) = widen(offset, len);
        let data = self.read_aligned(start, wlen).await?;
        let at = (offset - start) as usize;
        Ok(data.slice(at..at + len as usize))
    }

    async fn serve_write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        let len = data.len() as u64;
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if aligned(offset, len) {
            let _gate = self.io_gate().await?;
            self.write_aligned(offset, data).await?;
        } else {
            self.write_unaligned(offset, data).await?;
        }
        if fua {
            let _gate = self.io_gate().await?;
            self.flush_all().await?;
        }
        Ok(())
    }

    async fn serve_flush(&self) -> Result<(), DeviceError> {
        let _gate = self.io_gate().await?;
        self.flush_all().await
    }

    async fn serve_trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        let len = u64::from(len);
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.zero_range(offset, len, true).await
    }

    async fn serve_write_zeroes(
        &self,
        offset: u64,
        len: u32,
        fua: bool,
    ) -> Result<(), DeviceError> {
        let len = u64::from(len);
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.zero_range(offset, len, false).await?;
        if fua {
            let _gate = self.io_gate().await?;
            self.flush_all().await?;
        }
        Ok(())
    }
}

impl ExportDevice for Engine {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        let started = Instant::now();
        let result = self.serve_read(offset, len).await;
        self.metrics.read.record(started, u64::from(len), &result);
        result
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        let started = Instant::now();
        let len = data.len() as u64;
        let result = self.serve_write(offset, data, fua).await;
        self.metrics.write.record(started, len, &result);
        result
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        let started = Instant::now();
        let result = self.serve_flush().await;
        self.metrics.flush.record(started, 0, &result);
        result
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        let started = Instant::now();
        let result = self.serve_trim(offset, len).await;
        self.metrics.trim.record(started, u64::from(len), &result);
        result
    }

    async fn write_zeroes(&self, offset: u64, len: u32, fua: bool) -> Result<(), DeviceError> {
        let started = Instant::now();
        let result = self.serve_write_zeroes(offset, len, fua).await;
        self.metrics
            .write_zeroes
            .record(started, u64::from(len), &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_to_blocks() {
        assert_eq!(widen(0, 4096), (0, 4096));
        assert_eq!(widen(1, 1), (0, 4096));
        assert_eq!(widen(4095, 2), (0, 8192));
        assert_eq!(widen(513, 1000), (0, 4096));
    }
}
