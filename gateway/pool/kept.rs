//! What one configuration hands on to the next: each route's replicas (by route name
//! and address) with their health and counts, each route's queue with its waiters, and
//! removed replicas that still serve requests (they drain, and come back with their
//! state if configured again meanwhile).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use super::queue::Queue;
use super::replica::Replica;

/// The state the previous configuration hands on: replicas by route name and address,
/// queues by route name, and removed replicas that still have requests.
#[derive(Debug, Default)]
pub struct Kept {
    pub(super) replicas: HashMap<(Arc<str>, SocketAddr), Arc<Replica>>,
    pub(super) queues: HashMap<Arc<str>, Arc<Queue>>,
    pub(super) retired: Vec<Weak<Replica>>,
}

impl Kept {
    /// What this configuration hands on to the next one.
    pub fn handed_on(&self) -> Kept {
        Kept {
            replicas: self.replicas.clone(),
            queues: self.queues.clone(),
            retired: self.retired.clone(),
        }
    }

    /// Every replica the previous configuration had (`old`: what `build` left of it) that
    /// this one does not is retired: it gets no new requests, those it has finish. It is
    /// remembered while a request still holds it, so that adding it back keeps its state.
    pub fn finish(&mut self, old: Kept) {
        for ((route, addr), replica) in old.replicas {
            if !self.replicas.contains_key(&(route.clone(), addr)) {
                replica.retire();
                if let Some(queue) = old.queues.get(&route) {
                    queue.unpin(&replica);
                }
                self.retired.push(Arc::downgrade(&replica));
            }
        }
        self.retired
            .extend(old.retired.into_iter().filter(|w| w.strong_count() > 0));
        let live = &self.replicas;
        self.retired.retain(|w| {
            w.upgrade()
                .is_some_and(|r| !live.contains_key(&(r.route.clone(), r.addr)))
        });
    }
}

/// A replica removed by an earlier reload and still held by a request: configured again,
/// it keeps its state.
pub(super) fn revive(
    retired: &[Weak<Replica>],
    key: &(Arc<str>, SocketAddr),
) -> Option<Arc<Replica>> {
    let replica = retired
        .iter()
        .filter_map(Weak::upgrade)
        .find(|r| r.route == key.0 && r.addr == key.1)?;
    replica.unretire();
    Some(replica)
}
