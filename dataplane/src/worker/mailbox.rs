//! How other threads reach a worker: its mailbox (packet-cache flushes and explain
//! requests, numbered so a caller can wait until its request was applied) and the handle
//! that posts to it and wakes the worker, or stops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::respond;

/// A packet-cache flush: everything (`None`), or a wire-form name and whether the names
/// below it go too.
pub(super) type PacketFlush = Option<(Vec<u8>, bool)>;

/// An explain request: resolve with the path recorded, send the result back.
#[derive(Debug)]
pub(crate) struct ExplainJob {
    /// The name.
    pub name: hickory_proto::rr::Name,
    /// The type.
    pub qtype: hickory_proto::rr::RecordType,
    /// Where the result goes.
    pub reply: std::sync::mpsc::Sender<respond::Explained>,
}

/// Worker knobs a reload changes: the packet cache's budget and the client shares.
#[derive(Debug, Clone)]
pub(crate) struct LiveSettings {
    /// `cache.packet_cache_bytes`.
    pub packet_cache_bytes: usize,
    /// `[limits]`.
    pub limits: crate::config::LimitsConfig,
}

/// A listen address a reload added (this worker's sockets for it, already bound) or
/// removed (the bound address).
#[derive(Debug)]
pub(crate) enum ListenerChange {
    /// Read these from now on.
    Add(std::net::UdpSocket, std::net::TcpListener),
    /// Stop reading this address.
    Remove(std::net::SocketAddr),
}

/// Requests other threads leave for a worker, read after its next wake-up.
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    /// Packet-cache flushes asked for, numbered: `None` empties the cache, a wire-form
    /// lowercase name drops that name (and with `true`, everything below it).
    pub(super) flushes: std::sync::Mutex<Vec<(u64, PacketFlush)>>,
    /// Explain requests.
    pub(super) explains: std::sync::Mutex<Vec<ExplainJob>>,
    /// Listen addresses added or removed by a reload, in order.
    pub(super) listeners: std::sync::Mutex<Vec<ListenerChange>>,
    /// New knobs from a reload (the last one wins).
    pub(super) live: std::sync::Mutex<Option<LiveSettings>>,
    /// Number of the last request posted (read on every loop turn: one relaxed load).
    pub(super) requested: std::sync::atomic::AtomicU64,
    /// Number of the last request this worker took.
    pub(super) applied: std::sync::atomic::AtomicU64,
}

/// The handle another thread uses to reach a worker: stop it, or have it flush its packet
/// cache.
#[derive(Debug, Clone)]
pub(crate) struct WorkerHandle {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) drain: Arc<AtomicBool>,
    pub(super) waker: Arc<mio::Waker>,
    pub(super) mailbox: Arc<Mailbox>,
}

impl WorkerHandle {
    /// Asks the worker to finish its loop.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// Asks the worker to stop taking queries (another process reads the same sockets
    /// now) and to finish its loop once every client waiting on it has its answer.
    pub(crate) fn drain(&self) {
        self.drain.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// Asks the worker to drop packet-cache entries at `name` (wire form, lowercase; with
    /// `true`, below it too), or all of them; returns the request's number for
    /// [`Self::flushed`].
    pub(crate) fn flush_packet_cache(&self, name: PacketFlush) -> u64 {
        let mut list = self.mailbox.flushes.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.mailbox.requested.load(Ordering::Relaxed) + 1;
        list.push((n, name));
        self.mailbox.requested.store(n, Ordering::Release);
        drop(list);
        let _ = self.waker.wake();
        n
    }

    /// Asks the worker to resolve `job.name` with its path recorded (the API's explain).
    pub(crate) fn explain(&self, job: ExplainJob) {
        let mut list = self.mailbox.explains.lock().unwrap_or_else(|p| p.into_inner());
        list.push(job);
        drop(list);
        // Numbered under the flush lock, so numbers stay in order with flushes.
        let flushes = self.mailbox.flushes.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.mailbox.requested.load(Ordering::Relaxed) + 1;
        self.mailbox.requested.store(n, Ordering::Release);
        drop(flushes);
        let _ = self.waker.wake();
    }

    /// Gives the worker new knobs (a reload); returns the request's number for
    /// [`Self::flushed`].
    pub(crate) fn set_live(&self, live: LiveSettings) -> u64 {
        *self.mailbox.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
        // Numbered under the flush lock, so numbers stay in order with flushes.
        let flushes = self.mailbox.flushes.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.mailbox.requested.load(Ordering::Relaxed) + 1;
        self.mailbox.requested.store(n, Ordering::Release);
        drop(flushes);
        let _ = self.waker.wake();
        n
    }

    /// Gives the worker listen-address changes (a reload); returns the request's number
    /// for [`Self::flushed`].
    pub(crate) fn change_listeners(&self, changes: Vec<ListenerChange>) -> u64 {
        self.mailbox.listeners.lock().unwrap_or_else(|p| p.into_inner()).extend(changes);
        let flushes = self.mailbox.flushes.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.mailbox.requested.load(Ordering::Relaxed) + 1;
        self.mailbox.requested.store(n, Ordering::Release);
        drop(flushes);
        let _ = self.waker.wake();
        n
    }

    /// Whether the worker has applied flush request `n`.
    pub(crate) fn flushed(&self, n: u64) -> bool {
        self.mailbox.applied.load(Ordering::Acquire) >= n
    }
}
