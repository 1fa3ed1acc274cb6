//! The JSON access log: one object per request per line, to stdout or a file.
//!
//! Request tasks never write or lock: they hand the finished line to a bounded channel
//! and a dedicated thread writes it (buffered, flushed whenever the channel is empty).
//! After each batch the writer pauses `BATCH_PAUSE` before it waits again, so that under
//! load it wakes about a hundred times a second, not once per request: a sender only
//! wakes a writer that is blocked waiting. If the writer falls behind by `QUEUE` lines,
//! further lines are dropped (and counted in `gateway_access_log_dropped_total`) rather
//! than slowing requests down. Lines the file refuses (a full disk, an I/O error) are
//! counted in `gateway_access_log_unwritten_total`, and the failure is logged when it
//! starts and when writing works again, not once per line. `reopen` (SIGUSR1) makes the
//! writer reopen its file, for logrotate: the request is a flag the writer reads before
//! each line, so it is never lost to a full queue, and every line goes to the old file or
//! to the new one.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use prometheus::IntCounter;

mod line;

pub use line::{clip, Entry};

/// Lines that may wait for the writer.
const QUEUE: usize = 65_536;

/// Room made for a line up front: a typical line is 350–450 bytes, so it is written
/// without the buffer growing (and being copied) on the way.
const LINE: usize = 512;

/// The writer's pause after writing a batch. Waking the writer thread for every line
/// cost a context switch per request (measured with the log on: 1.6–1.9 context switches
/// per request, 0.6–0.8 with the pause); with it the lines of 10 ms go out in one write.
/// A line reaches the file at most this much later.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Longest wait at exit for the writer to write out what is queued.
const CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Where lines go.
#[derive(Debug, Clone)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

enum Msg {
    Line(Vec<u8>),
    /// Wakes an idle writer to reopen its file (see `AccessLog::reopen_asked`).
    Reopen,
    /// The process is about to exit: write out (or count) every line, then say so.
    Close(SyncSender<()>),
}

pub struct AccessLog {
    tx: SyncSender<Msg>,
    /// A reopen was asked for and not yet done.
    reopen_asked: Arc<AtomicBool>,
    /// Lines dropped because the writer was behind (`None`: metrics are off).
    dropped: Option<IntCounter>,
}

/// The counters of lines that never reached the log.
pub struct Lost {
    /// Dropped because the writer was `QUEUE` lines behind.
    pub dropped: IntCounter,
    /// Refused by the file (a full disk, an I/O error).
    pub unwritten: IntCounter,
}

impl AccessLog {
    /// Opens the target (a file is created or appended to) and starts the writer thread.
    pub fn start(target: Target, lost: Option<Lost>) -> io::Result<Arc<AccessLog>> {
        let out = open(&target)?;
        let (tx, rx) = sync_channel(QUEUE);
        let reopen_asked = Arc::new(AtomicBool::new(false));
        let asked = reopen_asked.clone();
        let (dropped, unwritten) = match lost {
            Some(Lost { dropped, unwritten }) => (Some(dropped), Some(unwritten)),
            None => (None, None),
        };
        let sink = Sink {
            out: BufWriter::with_capacity(64 << 10, out),
            unwritten,
            failing: None,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, target, sink, &asked))?;
        Ok(Arc::new(AccessLog {
            tx,
            reopen_asked,
            dropped,
        }))
    }

    /// Queues one entry; never blocks.
    pub fn write(&self, entry: &Entry) {
        let mut line = Vec::with_capacity(LINE);
        entry.write_json(&mut line);
        if let (Err(TrySendError::Full(_)), Some(dropped)) =
            (self.tx.try_send(Msg::Line(line)), &self.dropped)
        {
            dropped.inc();
        }
    }

    /// Asks the writer to reopen its file (after logrotate moved it). A full queue only
    /// means the writer is busy: it sees the flag before its next line.
    pub fn reopen(&self) {
        self.reopen_asked.store(true, Ordering::Release);
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Before the process exits (every request logged): the lines queued are written,
    /// or counted as unwritten, within `CLOSE_WITHIN`.
    pub fn close(&self) {
        let (done, closed) = sync_channel(1);
        let deadline = std::time::Instant::now() + CLOSE_WITHIN;
        let mut msg = Msg::Close(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(BATCH_PAUSE);
                }
                Err(_) => return,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = closed.recv_timeout(left);
    }
}

fn open(target: &Target) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(io::stdout()),
        Target::File(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
    })
}

/// The writer's file and what it could not write.
struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    unwritten: Option<IntCounter>,
    /// Lines refused since writing started failing; `None` while it works.
    failing: Option<u64>,
}

impl Sink {
    /// Buffers one line. A line the buffer has no room for, with the file refusing what
    /// the buffer holds, is lost and counted; the buffer keeps its lines for later.
    fn line(&mut self, line: &[u8]) {
        if let Err(e) = self.out.write_all(line) {
            self.failed(&e);
            self.lost(1);
        }
    }

    /// Writes out what the buffer holds (kept on failure). Writing works again only once
    /// lines reached the file: an empty buffer's flush proves nothing.
    fn flush(&mut self) {
        let had_lines = !self.out.buffer().is_empty();
        match self.out.flush() {
            Ok(()) if had_lines => {
                if let Some(lost) = self.failing.take() {
                    log::warn!("event=access_log_write_recovered unwritten={lost}");
                }
            }
            Ok(()) => {}
            Err(e) => self.failed(&e),
        }
    }

    /// Goes on in `file` (SIGUSR1) once the old file has what the buffer holds.
    fn reopened(&mut self, file: Box<dyn Write + Send>) {
        self.flush();
        let old = std::mem::replace(&mut self.out, BufWriter::with_capacity(64 << 10, file));
        self.drop_buffer(old);
    }

    /// The writer's end (shutdown, upgrade): what the file still refuses is counted.
    fn close(mut self) {
        self.flush();
        let out = std::mem::replace(&mut self.out, BufWriter::new(Box::new(io::sink())));
        self.drop_buffer(out);
    }

    /// Drops `out` without writing again; the lines its buffer held are counted.
    fn drop_buffer(&mut self, out: BufWriter<Box<dyn Write + Send>>) {
        if let (_, Ok(left)) = out.into_parts() {
            self.lost(left.iter().filter(|&&b| b == b'\n').count() as u64);
        }
    }

    fn failed(&mut self, e: &io::Error) {
        if self.failing.is_none() {
            log::warn!("event=access_log_write_failed error=\"{e}\" note=\"lines are lost, counted in gateway_access_log_unwritten_total, until writing works again\"");
            self.failing = Some(0);
        }
    }

    fn lost(&mut self, lines: u64) {
        if lines == 0 {
            return;
        }
        if let Some(c) = &self.unwritten {
            c.inc_by(lines);
        }
        self.failing = Some(self.failing.unwrap_or(0) + lines);
    }
}

fn write_loop(rx: Receiver<Msg>, target: Target, mut sink: Sink, reopen_asked: &AtomicBool) {
    while let Ok(mut msg) = rx.recv() {
        loop {
            if let Msg::Close(done) = msg {
                sink.close();
                let _ = done.send(());
                return;
            }
            if reopen_asked.swap(false, Ordering::AcqRel) {
                match open(&target) {
                    Ok(file) => sink.reopened(file),
                    Err(e) => log::warn!("event=access_log_reopen_failed error={e}"),
                }
            }
            if let Msg::Line(line) = msg {
                sink.line(&line);
            }
            msg = match rx.try_recv() {
                Ok(next) => next,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
        }
        sink.flush();
        std::thread::sleep(BATCH_PAUSE);
    }
    sink.close();
}
