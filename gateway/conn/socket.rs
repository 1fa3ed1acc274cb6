//! What the gateway asks the kernel about a connection's socket: whether the client
//! left, which socket a descriptor is now, and how to drop what is queued on it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use pingora::protocols::l4::ext::get_tcp_info;

/// Linux's TCP states (include/net/tcp_states.h), as `TCP_INFO` reports them.
pub const TCP_ESTABLISHED: u8 = 1;
/// The peer sent FIN; what it sent before may still be read.
pub const TCP_CLOSE_WAIT: u8 = 8;

/// Makes closing the socket `fd` reset the connection (SO_LINGER 0): the bytes queued
/// for an app that stopped reading are dropped at once, instead of the kernel holding
/// them (and the connection) until the app reads or the kernel gives up.
pub fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a plain setsockopt with a value of the size passed; on a descriptor that is
    // not a socket (or closed) it fails and changes nothing.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Ends both directions of the connection on `fd` at once, dropping what is queued (its
/// owner's next read and write fail; the descriptor stays its owner's to close).
pub fn cut(fd: RawFd) {
    reset_on_close(fd);
    // SAFETY: shutdown on a descriptor changes no memory; on a non-socket it fails.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Bytes queued on the socket `fd` that its peer has not acknowledged (`SIOCOUTQ`): more
/// than 0 for long means the peer is not reading. 0 when it cannot be told.
pub fn unsent(fd: RawFd) -> u64 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if rc == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Whether the client's TCP connection is no longer open both ways: closed (FIN) or
/// reset by the client. `fd` is its socket (`UniqueID` is the raw fd on Unix).
pub fn client_left(fd: Option<RawFd>) -> bool {
    fd.is_some_and(|fd| get_tcp_info(fd).is_ok_and(|i| i.tcpi_state != TCP_ESTABLISHED))
}

/// A duplicate descriptor of a socket, held by a watcher: the socket stays this one (its
/// number cannot be given to another) for as long as the watcher holds it, however its
/// owner closes its own descriptor meanwhile.
#[derive(Debug)]
pub struct Held(OwnedFd);

impl Held {
    pub fn dup(fd: RawFd) -> Option<Held> {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor for the same open socket (or
        // fails on a closed one); the new descriptor is owned by `Held` alone.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        // SAFETY: `copy` is a descriptor just made for this owner, closed on drop.
        (copy >= 0).then(|| Held(unsafe { OwnedFd::from_raw_fd(copy) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
