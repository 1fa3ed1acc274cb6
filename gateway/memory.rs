//! How the process holds memory: mimalloc for Rust's allocations and OpenSSL's, no
//! transparent huge pages. `main` calls [`setup`] first thing, before OpenSSL or any
//! sizeable allocation.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

/// Both steps; warnings go to stderr (logging is not set up yet).
pub fn setup() {
    no_huge_pages();
    openssl_in_mimalloc();
}

/// Turns transparent huge pages off for the rest of the process's life. mimalloc asks
/// the kernel for huge pages on its arenas, and a 2 MiB page is resident as soon as one
/// byte of it is touched; what a WebSocket holds is mostly buffers of 64 KiB of which a
/// few bytes are ever touched. Measured (1,000 held, docs/performance.md): 154 KiB per
/// WebSocket with huge pages, 80 KiB without, the idle process 28 MiB against 19; CPU
/// per keep-alive request and per handshake unchanged (A/B 1.006× and 0.986×). The few
/// MiB touched before `main` keep their huge pages.
fn no_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("warning: could not turn transparent huge pages off: {e}");
    }
}

extern "C" {
    // libcrypto's; openssl-sys does not declare it. Refused (returns 0) once OpenSSL has
    // allocated through `CRYPTO_malloc`, so a pointer from one allocator never reaches
    // the other. (The openssl crate frees what OpenSSL gives it with `OPENSSL_free`.)
    fn CRYPTO_set_mem_functions(
        m: unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
        r: unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
        f: unsafe extern "C" fn(*mut c_void, *const c_char, c_int),
    ) -> c_int;
}

unsafe extern "C" fn crypto_malloc(n: usize, _: *const c_char, _: c_int) -> *mut c_void {
    libmimalloc_sys::mi_malloc(n)
}

unsafe extern "C" fn crypto_realloc(
    p: *mut c_void,
    n: usize,
    _: *const c_char,
    _: c_int,
) -> *mut c_void {
    libmimalloc_sys::mi_realloc(p, n)
}

unsafe extern "C" fn crypto_free(p: *mut c_void, _: *const c_char, _: c_int) {
    libmimalloc_sys::mi_free(p)
}

/// OpenSSL allocates with glibc's `malloc` unless told otherwise: every TLS connection's
/// state and buffers, from whichever thread handshakes. glibc keeps what is freed in
/// per-thread arenas and gives little of it back, so after a spike of connections the
/// process stayed tens of MiB above where it started (docs/reliability.md). In mimalloc
/// those pages are returned like the rest.
fn openssl_in_mimalloc() {
    // SAFETY: the three functions have the signatures libcrypto declares; OpenSSL refuses
    // the change if it has allocated before, and nothing else calls it concurrently
    // (main's first statement, one thread).
    let ok = unsafe { CRYPTO_set_mem_functions(crypto_malloc, crypto_realloc, crypto_free) };
    if ok != 1 {
        eprintln!("warning: OpenSSL had allocated already; it keeps glibc's allocator");
    }
}

/// How often [`give_back`] runs.
pub const GIVE_BACK_EVERY: Duration = Duration::from_secs(10);

/// mimalloc returns a page to the kernel a second after the page is given back to its
/// arena, but only when some thread next allocates a page; after a spike of connections
/// the worker threads go quiet and the pages stay resident. This runs that step from a
/// background thread (pages still held by a quiet thread's heap stay: mimalloc frees a
/// heap's pages only from its own thread).
pub fn give_back() {
    // SAFETY: no arguments to get wrong; mimalloc's collection is thread-safe.
    unsafe { libmimalloc_sys::mi_collect(false) }
}
