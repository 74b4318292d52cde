//! ENGINE_SUSPENDED: an engine of the observing node is suspended because
//! the node could not renew its liveness lease (`controller/lease_fence.rs`).
//!
//! Read from the observer's own engines (`View::suspended_engines`), not
//! from the store: a node that lost its lease usually cannot reach the
//! store, so no store-recorded status could say so. Its item is caused by
//! the observer's STORE_UNREACHABLE when that is present (the usual root);
//! once the store answers again and the engine has not resumed yet (its
//! epoch is being checked), it stands alone.

use super::codes::{ENGINE_SUSPENDED, STORE_UNREACHABLE};
use super::evaluate::Eval;

impl Eval<'_> {
    pub(super) fn suspensions(&mut self) {
        let observer = &self.view.observer;
        let caused_by: Vec<_> = self
            .present(STORE_UNREACHABLE, &format!("node/{observer}"))
            .into_iter()
            .collect();
        for e in &self.view.suspended_engines {
            let s = &e.suspended;
            let clients = match s.on_suspend {
                vigil_engine::engine::OnSuspend::Suspend => {
                    "its clients' requests are held until it resumes"
                }
                vigil_engine::engine::OnSuspend::IoError => "its clients' requests fail with EIO",
            };
            self.add(
                ENGINE_SUSPENDED,
                format!("volume/{}", e.volume),
                format!(
                    "volume {}: the engine on {observer} (epoch {}) is suspended since {} ({} s): {}; {clients} (engine-on-lease-loss={})",
                    e.volume,
                    e.epoch,
                    vigil_model::time::rfc3339(s.since_unix, 0),
                    self.view.now_unix.saturating_sub(s.since_unix),
                    s.reason,
                    s.on_suspend.as_str()
                ),
                caused_by.clone(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use vigil_engine::engine::{OnSuspend, Suspended};

    use super::super::codes::{ENGINE_SUSPENDED, STORE_UNREACHABLE};
    use super::super::report::{ItemRef, Status};
    use super::super::view::SuspendedEngine;
    use super::super::{View, evaluate};

    fn suspended(view: &mut View, volume: &str, since_unix: u64) {
        view.suspended_engines.push(SuspendedEngine {
            volume: volume.into(),
            epoch: 7,
            suspended: Suspended {
                on_suspend: OnSuspend::Suspend,
                reason: "node n1 could not renew its liveness lease for 7.2 s".into(),
                since_unix,
            },
        });
    }

    #[test]
    fn a_suspended_engine_is_reported_under_the_unreachable_store() {
        let mut view = View::unreachable("n1".into(), "read the cluster store: timed out".into());
        let since = view.now_unix - 12;
        suspended(&mut view, "v1", since);
        let report = evaluate(&view);
        assert_eq!(report.status, Status::Error);
        let check = report.check(ENGINE_SUSPENDED).expect("ENGINE_SUSPENDED");
        assert_eq!(check.items.len(), 1, "{report:#?}");
        let item = &check.items[0];
        assert_eq!(item.object, "volume/v1");
        assert_eq!(item.caused_by, [ItemRef::new(STORE_UNREACHABLE, "node/n1")]);
        for want in [
            "epoch 7",
            "(12 s)",
            "held until it resumes",
            "renew its liveness lease",
        ] {
            assert!(item.message.contains(want), "{want:?} in {}", item.message);
        }
        // the store is the root; the suspension is its consequence
        assert!(report.check(STORE_UNREACHABLE).is_some_and(|c| c.root));
        assert!(!check.root, "{report:#?}");
        assert!(report.firing().any(|(c, _)| c == ENGINE_SUSPENDED));
    }

    #[test]
    fn a_suspension_outliving_the_store_outage_is_a_root() {
        let mut view = View {
            observer: "n1".into(),
            now_unix: 1_000,
            ..View::default()
        };
        assert!(evaluate(&view).check(ENGINE_SUSPENDED).is_none());
        suspended(&mut view, "v1", 990);
        let report = evaluate(&view);
        let check = report.check(ENGINE_SUSPENDED).expect("ENGINE_SUSPENDED");
        assert!(
            check.root && check.items[0].caused_by.is_empty(),
            "{report:#?}"
        );
    }
}
