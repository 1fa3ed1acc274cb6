//! The parts that start no process. The supervision itself is tested in
//! tests/app_process.rs, in a test binary of its own: a process forked here would hold
//! copies of other tests' descriptors (a flock'ed file) until it execs.

use super::*;

#[test]
fn the_start_time_is_read_after_the_last_parenthesis() {
    let mut line = b"4242 (a) b (c)) S".to_vec();
    for field in 4..=21 {
        line.extend_from_slice(format!(" {field}").as_bytes());
    }
    line.extend_from_slice(b" 987654 23 24\n");
    assert_eq!(parse_stat(&line), Some((b'S', 5, 987654)));
    assert_eq!(parse_stat(b"4242 (x) S 1 2"), None);
    let me = Identity::of(std::process::id()).expect("this process");
    assert!(me.alive());
    let recycled = Identity {
        start_ticks: me.start_ticks + 1,
        ..me
    };
    assert!(!recycled.alive(), "another start time is another process");
}
