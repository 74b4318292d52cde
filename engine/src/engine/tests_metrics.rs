//! Data-path metrics: an engine over two in-process replicas, driven through
//! its frontend, with a local debugging recorder standing in for the
//! agent's Prometheus one.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

use super::metrics::*;
use super::{Backend, Engine, EngineConfig, FaultReason, Mode, ReplicaSpec};
use crate::device::ExportDevice;
use crate::replica::{Replica, ReplicaOptions};
use crate::size::BLOCK_SIZE;

const VOLUME: &str = "vol-a";
const R1: &str = "tcp://10.0.0.1:9500/vol-a-r1";
const R2: &str = "tcp://10.0.0.2:9500/vol-a-r2";
const BS: usize = BLOCK_SIZE as usize;

/// Metric values by (name, sorted labels).
struct Seen(HashMap<(String, Vec<(String, String)>), DebugValue>);

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Seen {
        let map = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            // The I/O engine's gauge is process-wide, not the engine's.
            .filter(|(key, _, _, _)| key.key().name() != crate::ring::IO_URING_ACTIVE)
            .map(|(key, _, _, value)| (flatten(&key), value))
            .collect();
        Seen(map)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.0.get(&(name.to_string(), l))
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?}: not a counter: {other:?}"),
        }
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        match self.get(name, labels) {
            Some(DebugValue::Histogram(v)) => v.len(),
            other => panic!("{name} {labels:?}: not a histogram: {other:?}"),
        }
    }
}

fn flatten(key: &CompositeKey) -> (String, Vec<(String, String)>) {
    assert!(matches!(
        key.kind(),
        MetricKind::Counter | MetricKind::Histogram
    ));
    let mut labels: Vec<(String, String)> = key
        .key()
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    labels.sort();
    (key.key().name().to_string(), labels)
}

fn replica(tmp: &tempfile::TempDir, name: &str) -> Backend {
    let r = Replica::create(
        &tmp.path().join(name),
        64 * BLOCK_SIZE,
        &ReplicaOptions { direct_io: false },
    )
    .expect("create replica");
    Backend::local(Arc::new(r), 1)
}

async fn start(tmp: &tempfile::TempDir) -> Arc<Engine> {
    let specs = vec![
        ReplicaSpec {
            address: R1.into(),
            backend: Ok(replica(tmp, "r1")),
        },
        ReplicaSpec {
            address: R2.into(),
            backend: Ok(replica(tmp, "r2")),
        },
    ];
    Engine::start(VOLUME, 64 * BLOCK_SIZE, 1, specs, EngineConfig::default())
        .await
        .expect("start engine")
}

/// Runs `f` on a current-thread runtime with a local debugging recorder, so
/// the engine's handles (obtained inside) point at it; returns what it saw.
fn with_recorder(f: impl AsyncFnOnce(&tempfile::TempDir)) -> Seen {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let tmp = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&recorder, || rt.block_on(f(&tmp)));
    Seen::take(&snapshotter)
}

fn vol_op(op: &'static str) -> [(&'static str, &'static str); 2] {
    [(LABEL_VOLUME, VOLUME), (LABEL_OP, op)]
}

#[test]
fn series_appear_with_the_first_request_of_their_op() {
    let seen = with_recorder(async |tmp| {
        let engine = start(tmp).await;
        engine.read(0, BS as u32).await.expect("read");
        engine.shutdown();
    });
    // An idle engine costs a scrape nothing: only the read series exist.
    let l = vol_op("read");
    assert_eq!(seen.counter(VOLUME_IO_OPS_TOTAL, &l), 1);
    assert_eq!(seen.counter(VOLUME_IO_ERRORS_TOTAL, &l), 0);
    assert_eq!(seen.samples(VOLUME_IO_LATENCY_SECONDS, &l), 1);
    for op in IoOp::ALL.into_iter().filter(|o| *o != IoOp::Read) {
        let l = vol_op(op.as_str());
        assert!(seen.get(VOLUME_IO_OPS_TOTAL, &l).is_none(), "{op:?}");
        assert!(seen.get(VOLUME_IO_LATENCY_SECONDS, &l).is_none(), "{op:?}");
    }
    for r in ["vol-a-r1", "vol-a-r2"] {
        let l = [(LABEL_VOLUME, VOLUME), (LABEL_REPLICA, r)];
        assert!(seen.get(REPLICA_WRITE_LATENCY_SECONDS, &l).is_none(), "{r}");
    }
}

#[test]
fn requests_are_counted_timed_and_sized_per_op() {
    let seen = with_recorder(async |tmp| {
        let engine = start(tmp).await;
        let block = Bytes::from(vec![7u8; 2 * BS]);
        // 3 writes of 8 KiB, one of them FUA.
        for i in 0..3u64 {
            engine
                .write(i * 2 * BLOCK_SIZE, block.clone(), i == 2)
                .await
                .expect("write");
        }
        // 2 reads of 4 KiB, one unaligned read of 100 bytes.
        engine.read(0, BS as u32).await.expect("read");
        engine.read(BLOCK_SIZE, BS as u32).await.expect("read");
        engine.read(10, 100).await.expect("read");
        // A read past the end: an error, no bytes.
        assert!(engine.read(64 * BLOCK_SIZE, BS as u32).await.is_err());
        engine.flush().await.expect("flush");
        engine.flush().await.expect("flush");
        engine
            .trim(8 * BLOCK_SIZE, 4 * BS as u32)
            .await
            .expect("trim");
        engine
            .write_zeroes(16 * BLOCK_SIZE, BS as u32, false)
            .await
            .expect("write_zeroes");
        engine.shutdown();
    });
    let expect = [
        // op, ops, bytes, errors
        ("read", 4, (2 * BS + 100) as u64, 1),
        ("write", 3, (6 * BS) as u64, 0),
        ("flush", 2, 0, 0),
        ("trim", 1, (4 * BS) as u64, 0),
        ("write_zeroes", 1, BS as u64, 0),
    ];
    for (op, ops, bytes, errors) in expect {
        let l = vol_op(op);
        assert_eq!(seen.counter(VOLUME_IO_OPS_TOTAL, &l), ops, "{op} ops");
        assert_eq!(seen.counter(VOLUME_IO_ERRORS_TOTAL, &l), errors, "{op}");
        assert_eq!(seen.samples(VOLUME_IO_LATENCY_SECONDS, &l), ops as usize);
        if op != "flush" {
            assert_eq!(seen.counter(VOLUME_IO_BYTES_TOTAL, &l), bytes, "{op}");
        }
    }
    // Each replica saw every write, trim and write-zeroes leg: 3 + 1 + 1.
    for r in ["vol-a-r1", "vol-a-r2"] {
        let l = [(LABEL_VOLUME, VOLUME), (LABEL_REPLICA, r)];
        assert_eq!(seen.samples(REPLICA_WRITE_LATENCY_SECONDS, &l), 5, "{r}");
    }
}

#[test]
fn fail_replica_marks_err_once_and_counts_the_fault() {
    let seen = with_recorder(async |tmp| {
        let engine = start(tmp).await;
        let reason = FaultReason::ChecksumMismatch;
        assert!(engine.fail_replica(R2, reason, "chain check: layer missing"));
        // Already ERR, and an unknown address: nothing changes.
        assert!(!engine.fail_replica(R2, FaultReason::IoError, "again"));
        assert!(!engine.fail_replica("tcp://10.0.0.9:9500/nope", reason, "x"));
        let status = engine.status();
        let r2 = status
            .replicas
            .iter()
            .find(|r| r.address == R2)
            .expect("r2 in status");
        assert_eq!(r2.mode, Mode::Error);
        let fault = r2.fault.as_ref().expect("fault recorded");
        assert_eq!(fault.reason, reason);
        assert_eq!(fault.last_error, "chain check: layer missing");
        // The volume still serves from r1; r2 gets no more writes.
        engine
            .write(0, Bytes::from(vec![1u8; BS]), false)
            .await
            .expect("write");
        engine.shutdown();
    });
    let faults = |r: &str, reason: &str| {
        let l = [
            (LABEL_VOLUME, VOLUME),
            (LABEL_REPLICA, r),
            (LABEL_REASON, reason),
        ];
        seen.get(REPLICA_FAULTS_TOTAL, &l).map(|v| match v {
            DebugValue::Counter(n) => *n,
            other => panic!("not a counter: {other:?}"),
        })
    };
    assert_eq!(faults("vol-a-r2", "checksum_mismatch"), Some(1));
    assert_eq!(faults("vol-a-r2", "io_error"), None);
    assert_eq!(faults("vol-a-r1", "checksum_mismatch"), None);
    let latency = |r: &str| {
        seen.samples(
            REPLICA_WRITE_LATENCY_SECONDS,
            &[(LABEL_VOLUME, VOLUME), (LABEL_REPLICA, r)],
        )
    };
    assert_eq!(latency("vol-a-r1"), 1);
    // r2 was failed before any write: it never got a series.
    assert!(
        seen.get(
            REPLICA_WRITE_LATENCY_SECONDS,
            &[(LABEL_VOLUME, VOLUME), (LABEL_REPLICA, "vol-a-r2")]
        )
        .is_none()
    );
}

#[test]
fn a_replica_err_at_start_is_counted_once_the_engine_runs() {
    let seen = with_recorder(async |tmp| {
        let specs = vec![
            ReplicaSpec {
                address: R1.into(),
                backend: Ok(replica(tmp, "r1")),
            },
            ReplicaSpec {
                address: R2.into(),
                backend: Err(super::Fault::now(FaultReason::Unreachable, "refused")),
            },
        ];
        let engine = Engine::start(VOLUME, 64 * BLOCK_SIZE, 1, specs, EngineConfig::default())
            .await
            .expect("start engine");
        engine.shutdown();
    });
    let l = [
        (LABEL_VOLUME, VOLUME),
        (LABEL_REPLICA, "vol-a-r2"),
        (LABEL_REASON, "unreachable"),
    ];
    assert_eq!(seen.counter(REPLICA_FAULTS_TOTAL, &l), 1);
}
