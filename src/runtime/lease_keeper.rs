//! The lease keeper: renews the leases of every partition this instance
//! holds, each heartbeat, with the database clock.
//!
//! A partition missing from the renewal (another instance took it over after
//! our lease expired, e.g. while this process was paused) is marked lost, and
//! its worker stops before writing anything more. See
//! [`lease`](crate::store::lease) for the protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::{Actor, AsyncContext, Context, WrapFuture};

use crate::error_text::Chain;
use crate::store::lease::LeaseConfig;
use crate::store::Store;

/// Partition id → (epoch held, flag raised when the lease is lost).
type HeldMap = HashMap<i64, (i64, Arc<AtomicBool>)>;

/// The partitions this instance holds, shared by the supervisors (which add
/// and remove them) and the keeper (which renews them).
#[derive(Clone, Default)]
pub(crate) struct HeldLeases {
    inner: Arc<Mutex<HeldMap>>,
}

impl HeldLeases {
    /// Starts tracking `(partition, epoch)`; the flag turns true if lost.
    pub(crate) fn hold(&self, partition_id: i64, epoch: i64) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        self.lock().insert(partition_id, (epoch, Arc::clone(&lost)));
        lost
    }

    /// Stops tracking a partition.
    pub(crate) fn drop_hold(&self, partition_id: i64) {
        self.lock().remove(&partition_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeldMap> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `(partition, epoch)` pairs held now.
    fn snapshot(&self) -> Vec<(i64, i64)> {
        self.lock().iter().map(|(id, (e, _))| (*id, *e)).collect()
    }

    /// Marks lost every pair of `before` (taken before the renewal) that the
    /// renewal did not find and that is still held with the same epoch.
    /// Claims made while the renewal ran are not in `before`, so a race with
    /// a new claim never marks it lost.
    fn reconcile(&self, before: &[(i64, i64)], still_held: &[(i64, i64)]) -> Vec<i64> {
        let mut held = self.lock();
        let mut lost = Vec::new();
        for pair in before {
            if still_held.contains(pair) {
                continue;
            }
            if held.get(&pair.0).is_some_and(|(e, _)| *e == pair.1) {
                if let Some((_, flag)) = held.remove(&pair.0) {
                    flag.store(true, Ordering::SeqCst);
                    lost.push(pair.0);
                }
            }
        }
        lost
    }
}

/// Renews leases each heartbeat.
pub(crate) struct LeaseKeeper {
    store: Store,
    owner: String,
    config: LeaseConfig,
    held: HeldLeases,
}

impl LeaseKeeper {
    pub(crate) fn new(store: Store, owner: String, config: LeaseConfig, held: HeldLeases) -> Self {
        Self {
            store,
            owner,
            config,
            held,
        }
    }
}

impl Actor for LeaseKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.heartbeat, |act, ctx| {
            let before = act.held.snapshot();
            if before.is_empty() {
                return;
            }
            let store = act.store.clone();
            let owner = act.owner.clone();
            let lease = act.config.lease;
            let held = act.held.clone();
            ctx.spawn(
                async move {
                    match store.renew_leases(&owner, &before, lease).await {
                        Ok(still) => {
                            for id in held.reconcile(&before, &still) {
                                tracing::warn!(partition = id, "lease lost; its worker stops");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %Chain(&e), "lease renewal failed; will retry")
                        }
                    }
                }
                .into_actor(act),
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_leases_held_before_the_renewal_can_be_lost() {
        let held = HeldLeases::default();
        let a = held.hold(1, 3);
        let b = held.hold(2, 1);
        let before = held.snapshot();
        let c = held.hold(3, 1); // claimed while the renewal ran
        let lost = held.reconcile(&before, &[(1, 3)]);
        assert_eq!(lost, vec![2]);
        assert!(!a.load(Ordering::SeqCst));
        assert!(b.load(Ordering::SeqCst));
        assert!(!c.load(Ordering::SeqCst));
    }
}
