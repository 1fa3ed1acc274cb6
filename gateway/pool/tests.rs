//! Placement, the queue's hand-over and what a reload keeps, on pools built from parsed
//! configurations (no network: nothing here connects).

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;

use super::*;

fn pools(yaml: &str) -> (Vec<Pool>, Kept) {
    rebuild(yaml, &Kept::default())
}

fn rebuild(yaml: &str, previous: &Kept) -> (Vec<Pool>, Kept) {
    let config = crate::config::parse(Path::new("t.yaml"), yaml).expect("config");
    let mut kept = Kept::default();
    let mut old = previous.handed_on();
    let pools = config
        .routes
        .iter()
        .map(|r| Pool::build(r, &mut kept, &mut old, None, &Default::default()))
        .collect();
    kept.finish(old);
    (pools, kept)
}

fn get() -> RequestHeader {
    RequestHeader::build("GET", b"/", None).expect("request")
}

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn placed(pool: &Pool) -> Placed {
    match pool.place(&get(), CLIENT) {
        Ok(p) => p,
        Err(_) => panic!("no replica at once"),
    }
}

fn port(p: &Placed) -> u16 {
    p.lease.replica().addr.port()
}

#[test]
fn least_conn_takes_the_least_loaded_and_round_robin_takes_turns() {
    let (pools, _) = pools(
        "routes:
  - { host: a.test, upstream: [1, 2, 3], sticky: off }
  - { host: b.test, upstream: [4, 5, 6], sticky: off, balance: round_robin }
",
    );
    let held = [placed(&pools[0]), placed(&pools[0])];
    let free: Vec<u16> = (0..5).map(|_| port(&placed(&pools[0]))).collect();
    let busy = [port(&held[0]), port(&held[1])];
    assert_ne!(busy[0], busy[1], "an idle replica first");
    assert!(free.iter().all(|p| !busy.contains(p)), "{free:?} {busy:?}");
    let turns: Vec<u16> = (0..6).map(|_| port(&placed(&pools[1]))).collect();
    assert_eq!(&turns[..3], &turns[3..], "{turns:?}");
    let mut first = turns[..3].to_vec();
    first.sort();
    assert_eq!(first, [4, 5, 6]);
}

#[test]
fn an_ejected_replica_is_skipped_and_the_only_one_is_still_tried() {
    let (pools, _) = pools(
        "routes:
  - { host: a.test, upstream: [1, 2], sticky: off, health: { interval: 1h, timeout: 1s } }
  - { host: b.test, upstream: 3 }
",
    );
    let first = placed(&pools[0]);
    let down = first.lease.replica().clone();
    assert!(down.connect_failed("test", pools[0].passive_retry()));
    let again = pools[0].replace(&down).expect("the other replica");
    assert_ne!(port(&again), down.addr.port());
    assert!(
        pools[0].replace(again.lease.replica()).is_none(),
        "one left, and it is down"
    );
    for _ in 0..4 {
        assert_ne!(port(&placed(&pools[0])), down.addr.port());
    }
    // Active checks bring it back: two good ones.
    assert!(!down.observe(replica::Observed::Good, 2, 2));
    assert!(down.observe(replica::Observed::Good, 2, 2));
    assert!(down.is_up());

    // A single upstream without checks: down, and tried all the same.
    let only = placed(&pools[1]);
    assert!(only
        .lease
        .replica()
        .connect_failed("test", pools[1].passive_retry()));
    assert!(!only.lease.replica().is_up());
    assert_eq!(port(&placed(&pools[1])), 3);
}

#[tokio::test]
async fn over_the_cap_requests_wait_in_order_then_the_queue_refuses() {
    let (pools, _) = pools(
        "routes:
  - { host: a.test, upstream: 1, max_concurrent: 1, queue: { size: 2, timeout: 200ms } }
",
    );
    let pool = &pools[0];
    let first = placed(pool);
    let waiting: Vec<Waiting> = (0..2)
        .map(|_| match pool.place(&get(), CLIENT) {
            Err(Pending::Wait(w)) => w,
            _ => panic!("expected to wait"),
        })
        .collect();
    assert!(matches!(
        pool.place(&get(), CLIENT),
        Err(Pending::Unavailable(Unavailable::Full))
    ));
    let mut waiting = waiting.into_iter();
    let (second, third) = (waiting.next().expect("2nd"), waiting.next().expect("3rd"));
    drop(first);
    let second = pool.wait(second).await.expect("the freed slot, in order");
    assert_eq!(
        second.lease.replica().in_flight.get(),
        1,
        "the slot was handed over"
    );
    // The third is not served before its timeout: the second holds the slot.
    let started = Instant::now();
    assert_eq!(pool.wait(third).await.err(), Some(Unavailable::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(150));
    drop(second);
    assert_eq!(
        pool.members[0].replica.in_flight.get(),
        0,
        "every slot given back"
    );
    assert!(pool.place(&get(), CLIENT).is_ok());
}

#[tokio::test]
async fn an_upgrade_holds_a_slot_until_its_101() {
    let (pools, _) = pools(
        "routes:
  - { host: a.test, upstream: 1, max_concurrent: 1, queue: { size: 1, timeout: 1s } }
",
    );
    let pool = &pools[0];
    let upgrade = placed(pool);
    let Err(Pending::Wait(waiting)) = pool.place(&get(), CLIENT) else {
        panic!("the upgrade request holds the only slot");
    };
    let replica = upgrade.lease.replica().clone();
    let tunnel = upgrade.lease.into_tunnel();
    assert_eq!(
        replica.tunnels.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let next = pool
        .wait(waiting)
        .await
        .expect("the 101 gave the slot back");
    assert_eq!(replica.in_flight.get(), 1);
    drop((tunnel, next));
    assert_eq!(
        replica.tunnels.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(replica.in_flight.get(), 0);
}

#[tokio::test]
async fn a_waiter_pinned_to_a_replica_that_goes_down_is_placed_again() {
    let (pools, _) = pools(
        "routes:
  - { host: a.test, upstream: [1, 2], max_concurrent: 1, health: { interval: 1h, timeout: 1s } }
",
    );
    let pool = &pools[0];
    // Both replicas busy; the next request (an API client, pinned by address) waits for
    // its own replica.
    let a = placed(pool);
    let b = pool.replace(a.lease.replica()).expect("the other");
    let Err(Pending::Wait(waiting)) = pool.place(&get(), CLIENT) else {
        panic!("expected to wait");
    };
    let sticky = pool.sticky.as_ref().expect("sticky by default");
    let first = sticky.by_address(CLIENT).next().expect("a replica");
    let pinned = pool.members[first].replica.clone();
    let (mine, other) = if Arc::ptr_eq(a.lease.replica(), &pinned) {
        (a, b)
    } else {
        (b, a)
    };
    // Its replica goes down; the other frees a slot: the waiter gets that one.
    assert!(pinned.connect_failed("test", None));
    pool.health_changed(&pinned);
    let other_port = port(&other);
    drop(other);
    let got = pool.wait(waiting).await.expect("placed again");
    assert_eq!(port(&got), other_port);
    assert!(
        got.set_cookie.is_some(),
        "the client is told its new replica"
    );
    drop(mine);
}

#[test]
fn a_reload_keeps_replicas_retires_the_removed_and_revives_them() {
    let (first, kept) = pools("routes:\n  - { host: a.test, upstream: [1, 2] }\n");
    let one = first[0].members[0].replica.clone();
    let two = first[0].members[1].replica.clone();
    assert!(one.connect_failed("test", None));
    let (second, kept) = rebuild("routes:\n  - { host: a.test, upstream: [1, 3] }\n", &kept);
    assert!(
        Arc::ptr_eq(&second[0].members[0].replica, &one),
        "kept, with its health"
    );
    assert!(!one.is_up());
    assert!(two.retired(), "removed: no new requests");
    let (third, _) = rebuild(
        "routes:\n  - { host: a.test, upstream: [1, 2, 3] }\n",
        &kept,
    );
    assert!(
        Arc::ptr_eq(&third[0].members[1].replica, &two),
        "held, so revived"
    );
    assert!(!two.retired());
}
