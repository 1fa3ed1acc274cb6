//! A request's hold on a replica: counted in the replica's in-flight requests (or, for
//! a WebSocket, its open tunnels) for as long as it lives. Dropping it gives the slot
//! back, to the first waiter of the route's queue when the pool has a cap.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::queue::Queue;
use super::replica::Replica;

pub struct Lease {
    replica: Arc<Replica>,
    kind: Kind,
    armed: bool,
}

enum Kind {
    /// A request on an uncapped pool: `in_flight` only.
    Request,
    /// A request under `max_concurrent`: its slot goes back through the queue.
    Capped(Arc<Queue>),
    /// An upgraded connection (WebSocket): `tunnels`, not under the cap.
    Tunnel,
}

impl Lease {
    /// Counts a request on `replica` (the caller checked the cap, if any, under the
    /// queue's lock).
    pub(super) fn request(replica: Arc<Replica>, queue: Option<Arc<Queue>>) -> Lease {
        replica.in_flight.inc();
        Lease::counted(replica, queue)
    }

    /// A slot already counted in `in_flight` (handed over by a finishing request).
    pub(super) fn counted(replica: Arc<Replica>, queue: Option<Arc<Queue>>) -> Lease {
        let kind = match queue {
            Some(q) => Kind::Capped(q),
            None => Kind::Request,
        };
        Lease {
            replica,
            kind,
            armed: true,
        }
    }

    /// The app answered an upgrade request with `101`: the request's slot is given back
    /// and the connection counted as a tunnel of the same replica from now on.
    pub fn into_tunnel(self) -> Lease {
        let tunnel = Lease::tunnel(self.replica.clone());
        drop(self);
        tunnel
    }

    fn tunnel(replica: Arc<Replica>) -> Lease {
        replica.tunnels.fetch_add(1, Ordering::Relaxed);
        Lease {
            replica,
            kind: Kind::Tunnel,
            armed: true,
        }
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Forgets the count without giving it back (its slot was passed on as it is).
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match &self.kind {
            Kind::Request => self.replica.in_flight.dec(),
            Kind::Capped(queue) => queue.release(&self.replica),
            Kind::Tunnel => {
                self.replica.tunnels.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
