//! Backend monitoring: pings every remote RW/WO replica so a dead or frozen
//! one is marked ERR even when no I/O is flowing.

use std::sync::{Arc, Weak};

use futures_util::future::join_all;
use tokio::task::JoinHandle;

use super::{Engine, FaultReason, Mode};

/// Starts the monitor; it ends when the engine is dropped.
pub(super) fn spawn(engine: &Arc<Engine>) -> JoinHandle<()> {
    let weak: Weak<Engine> = Arc::downgrade(engine);
    let interval = engine.config.ping_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = weak.upgrade() else { return };
            engine.ping_all().await;
        }
    })
}

impl Engine {
    async fn ping_all(&self) {
        let slots = self.slots();
        let timeout = self.config.ping_timeout;
        let checks = slots
            .iter()
            .filter(|s| s.mode() != Mode::Error)
            .filter_map(|s| s.backend.clone().map(|b| (Arc::clone(s), b)))
            .filter(|(_, b)| !b.is_local())
            .map(|(slot, backend)| async move {
                match tokio::time::timeout(timeout, backend.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.fail(&slot, e.reason, format!("ping: {}", e.message)),
                    Err(_) => self.fail(
                        &slot,
                        FaultReason::Timeout,
                        format!("ping not answered within {timeout:?}"),
                    ),
                }
            });
        join_all(checks).await;
    }
}
