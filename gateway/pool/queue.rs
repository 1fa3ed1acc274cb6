//! A route's FIFO of requests waiting for a replica under `max_concurrent`. A request
//! over the cap waits here without any upstream connection; a finishing request hands
//! its slot straight to the first waiter that can use that replica, so that a newcomer
//! never overtakes a waiter. Kept across reloads by route name, with its waiters.
//!
//! Only routes with `max_concurrent` take the lock: on every request (to take a slot)
//! and when one ends (to hand it on). Their requests are GPU jobs; the lock is held for
//! a few instructions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use prometheus::{Histogram, IntGauge};
use tokio::sync::oneshot;

use super::lease::Lease;
use super::replica::Replica;
use crate::metrics::{Metrics, QueueSeries};

/// What a waiter is told.
pub enum Handed {
    /// A slot on a replica.
    Slot(Lease),
    /// The replica it was pinned to went down: choose again.
    Replace,
}

struct Waiter {
    id: u64,
    /// The replica it must have (its cookie or address pins it); `None`: any.
    pin: Option<Arc<Replica>>,
    tx: oneshot::Sender<Handed>,
}

#[derive(Default)]
pub struct Waiters {
    queue: VecDeque<Waiter>,
    next_id: u64,
}

pub struct Queue {
    waiters: Mutex<Waiters>,
    depth: IntGauge,
    wait: Histogram,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("depth", &self.depth.get())
            .finish()
    }
}

/// A place in the queue; dropping it (the client went away) leaves the queue.
pub struct Ticket {
    id: u64,
    rx: oneshot::Receiver<Handed>,
    queue: Arc<Queue>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut waiters = self.queue.waiters.lock();
        if let Some(at) = waiters.queue.iter().position(|w| w.id == self.id) {
            waiters.queue.remove(at);
            self.queue.depth.set(waiters.queue.len() as i64);
        }
    }
}

impl Queue {
    pub fn new(route: &str, metrics: Option<&Metrics>) -> Arc<Queue> {
        let QueueSeries { depth, wait } = match metrics {
            Some(m) => m.queue(route),
            None => QueueSeries {
                depth: crate::metrics::unregistered_gauge("depth"),
                wait: Histogram::with_opts(prometheus::HistogramOpts::new("wait", "wait"))
                    .expect("a constant, valid metric name"),
            },
        };
        Arc::new(Queue {
            waiters: Mutex::new(Waiters::default()),
            depth,
            wait,
        })
    }

    /// The lock under which capped slots are taken and given back.
    pub fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock()
    }

    /// Joins the queue (the caller holds the lock and found no free slot). `None` when
    /// `size` are already waiting.
    pub fn join(
        self: &Arc<Self>,
        waiters: &mut Waiters,
        pin: Option<Arc<Replica>>,
        size: u32,
    ) -> Option<Ticket> {
        if waiters.queue.len() >= size as usize {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let id = waiters.next_id;
        waiters.next_id += 1;
        waiters.queue.push_back(Waiter { id, pin, tx });
        self.depth.set(waiters.queue.len() as i64);
        Some(Ticket {
            id,
            rx,
            queue: self.clone(),
        })
    }

    /// Waits for a slot until `timeout`; `None` on timeout. A slot handed over just as
    /// the time ran out is taken.
    pub async fn wait(ticket: &mut Ticket, timeout: Duration) -> Option<Handed> {
        match tokio::time::timeout(timeout, &mut ticket.rx).await {
            Ok(handed) => handed.ok(),
            Err(_) => {
                // Leave the queue first, so that nothing more can be handed over.
                let left = {
                    let mut waiters = ticket.queue.waiters.lock();
                    let at = waiters.queue.iter().position(|w| w.id == ticket.id);
                    let left = at.and_then(|at| waiters.queue.remove(at)).is_some();
                    ticket.queue.depth.set(waiters.queue.len() as i64);
                    left
                };
                if left {
                    return None;
                }
                ticket.rx.try_recv().ok()
            }
        }
    }

    /// Records how long a request waited (0 when it got a slot at once).
    pub fn waited(&self, since: Instant) {
        self.wait.observe(since.elapsed().as_secs_f64());
    }

    /// A slot of `replica` is free: handed to the first waiter that may use it, else
    /// given back.
    pub fn release(self: &Arc<Self>, replica: &Arc<Replica>) {
        let mut waiters = self.waiters.lock();
        if replica.serving() && self.hand_over(&mut waiters, replica) {
            return;
        }
        replica.in_flight.dec();
    }

    /// Hands free slots of `replica` (back up, or a cap raised) to waiters while it has
    /// room under `cap`.
    pub fn refill(self: &Arc<Self>, replica: &Arc<Replica>, cap: u32) {
        let mut waiters = self.waiters.lock();
        while replica.serving() && replica.in_flight.get() < i64::from(cap) {
            replica.in_flight.inc();
            if !self.hand_over(&mut waiters, replica) {
                replica.in_flight.dec();
                break;
            }
        }
    }

    /// `replica` went down: the waiters pinned to it choose again.
    pub fn unpin(&self, replica: &Arc<Replica>) {
        let mut waiters = self.waiters.lock();
        let mut kept = VecDeque::with_capacity(waiters.queue.len());
        for w in waiters.queue.drain(..) {
            match &w.pin {
                Some(p) if Arc::ptr_eq(p, replica) => {
                    let _ = w.tx.send(Handed::Replace);
                }
                _ => kept.push_back(w),
            }
        }
        waiters.queue = kept;
        self.depth.set(waiters.queue.len() as i64);
    }

    /// Gives the slot (counted in `in_flight`) to the first waiter that may use it;
    /// false when none does (or all of them left). The caller holds the lock.
    fn hand_over(self: &Arc<Self>, waiters: &mut Waiters, replica: &Arc<Replica>) -> bool {
        let fits = |w: &Waiter| w.pin.as_ref().is_none_or(|p| Arc::ptr_eq(p, replica));
        let mut handed = false;
        while let Some(at) = waiters.queue.iter().position(fits) {
            let Some(w) = waiters.queue.remove(at) else {
                break;
            };
            let lease = Lease::counted(replica.clone(), Some(self.clone()));
            match w.tx.send(Handed::Slot(lease)) {
                Ok(()) => {
                    handed = true;
                    break;
                }
                // That waiter is gone: its lease must not give the slot back (we hold
                // the lock, and the slot is still ours to hand on).
                Err(Handed::Slot(lease)) => lease.disarm(),
                Err(Handed::Replace) => {}
            }
        }
        self.depth.set(waiters.queue.len() as i64);
        handed
    }
}
