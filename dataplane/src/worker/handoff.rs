//! One encrypted connection per authoritative server, not one per worker: each server
//! (address and port) has `transport.connections_per_server` owning workers (k; hash of
//! the server, then the next workers), and a DoT, DoQ or DoH query that starts on another
//! worker is handed to one of them over a crossbeam channel, with that worker's
//! `mio::Waker`; the answer comes back the same way. With k at least the number of
//! workers every worker owns every server: the per-worker pools of before.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::upstream::error::Busy;
use crate::upstream::{UpstreamError, Wire};

/// Queries waiting in one worker's inbox at most; past it a hand-off fails as busy (a
/// local failure: the server is not blamed, and the mode decides the fallback).
pub(crate) const INBOX: usize = 65_536;

/// Time the asking worker allows beyond the query's own timeout, so that the owner's
/// typed failure (a timeout, a refused connection) arrives first.
const REPLY_MARGIN: Duration = Duration::from_millis(50);

/// One query handed to the owning worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) server: SocketAddr,
    pub(crate) query: Vec<u8>,
    pub(crate) wire: Wire,
    pub(crate) timeout: Duration,
    pub(crate) reply: Arc<Reply>,
}

/// An exchange's outcome, as it crosses threads.
type Answer = Result<Vec<u8>, UpstreamError>;

/// Where the owner puts the answer, and whom it wakes.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The answer once there, and the asking task's waker while it waits.
    state: Mutex<(Option<Answer>, Option<Waker>)>,
    /// The asking worker, whose loop is woken too (it may sleep in `poll`).
    origin: usize,
    router: Arc<Router>,
}

impl Reply {
    /// Stores the answer and wakes the asking task and its worker.
    pub(crate) fn complete(&self, result: Answer) {
        let task = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = Some(result);
            s.1.take()
        };
        if let Some(t) = task {
            t.wake();
        }
        self.router.wake(self.origin);
    }
}

/// The workers' inboxes and loop wakers, shared by all of them.
#[derive(Debug)]
pub(crate) struct Router {
    inboxes: Vec<crossbeam_channel::Sender<Job>>,
    wakers: Vec<OnceLock<Arc<mio::Waker>>>,
    /// Whether a wake-up of each worker is already on its way: while it is, other senders
    /// skip the system call (the worker clears it before it takes its inbox and answers).
    woken: Vec<AtomicBool>,
    /// Owning workers per server (k), at most the number of workers.
    per_server: usize,
}

impl Router {
    /// A router for `workers` workers and `per_server` owners per server, with each
    /// worker's inbox to hand to it.
    pub(crate) fn new(workers: usize, per_server: usize) -> (Arc<Self>, Vec<crossbeam_channel::Receiver<Job>>) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| crossbeam_channel::bounded(INBOX)).unzip();
        let wakers = (0..workers).map(|_| OnceLock::new()).collect();
        let woken = (0..workers).map(|_| AtomicBool::new(false)).collect();
        (Arc::new(Self { inboxes, wakers, woken, per_server: per_server.clamp(1, workers.max(1)) }), receivers)
    }

    /// Wakes worker `i`'s loop, unless a wake-up is on its way already.
    fn wake(&self, i: usize) {
        if !self.woken[i].swap(true, Ordering::AcqRel)
            && let Some(w) = self.wakers[i].get()
        {
            let _ = w.wake();
        }
    }

    /// Called by worker `i` when it wakes, before it looks at its inbox and its tasks:
    /// the next sender wakes it again.
    pub(crate) fn awake(&self, i: usize) {
        self.woken[i].store(false, Ordering::Release);
    }

    /// Records worker `index`'s loop waker (once, when it is built).
    pub(crate) fn register(&self, index: usize, waker: Arc<mio::Waker>) {
        let _ = self.wakers[index].set(waker);
    }

    /// The worker that sends a query to `server` when it starts on worker `here`: `here`
    /// itself when it is one of the server's owners, else one of them (chosen by `pick`,
    /// any number).
    pub(crate) fn owner(&self, server: SocketAddr, here: usize, pick: u64) -> usize {
        let n = self.inboxes.len();
        if self.per_server >= n {
            return here;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        server.hash(&mut h);
        let first = (h.finish() % n as u64) as usize;
        let mine = (here + n - first) % n < self.per_server;
        if mine { here } else { (first + (pick % self.per_server as u64) as usize) % n }
    }

    /// Hands `job` to worker `to` and wakes it.
    fn send(&self, to: usize, job: Job) -> Result<(), UpstreamError> {
        self.inboxes[to].try_send(job).map_err(|_| UpstreamError::Busy(Busy::Handoff))?;
        self.wake(to);
        Ok(())
    }

    /// Sends one query through worker `to` and waits for its answer (at most the
    /// query's timeout and a small margin).
    pub(crate) async fn exchange(
        self: &Arc<Self>,
        reactor: &super::reactor::Reactor,
        (from, to): (usize, usize),
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let reply = Arc::new(Reply { state: Mutex::default(), origin: from, router: self.clone() });
        let job = Job { server, query: query.to_vec(), wire, timeout, reply: reply.clone() };
        self.send(to, job)?;
        let answer = std::future::poll_fn(|cx| {
            let mut s = reply.state.lock().unwrap_or_else(|p| p.into_inner());
            match s.0.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        let at = reactor.now() + timeout + REPLY_MARGIN;
        super::reactor::until(reactor, at, answer).await.unwrap_or(Err(UpstreamError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, i], 853))
    }

    /// k owners per server: a query on an owner stays there, one elsewhere goes to an
    /// owner, and k at least the workers means every worker owns every server.
    #[test]
    fn each_server_has_k_owning_workers() {
        for (workers, k) in [(4, 1), (4, 2), (8, 3), (2, 1)] {
            let (r, _rx) = Router::new(workers, k);
            for i in 0..50u8 {
                let owners: std::collections::BTreeSet<usize> =
                    (0..workers).map(|here| r.owner(addr(i), here, u64::from(i) * 7 + here as u64)).collect();
                let staying = (0..workers).filter(|&here| r.owner(addr(i), here, 0) == here).count();
                assert_eq!(staying, k, "{workers} workers, k={k}, server {i}");
                assert!(owners.len() <= k, "{owners:?}");
                for here in 0..workers {
                    let o = r.owner(addr(i), here, 3);
                    assert_eq!(r.owner(addr(i), o, 99), o, "an owner keeps its queries");
                }
            }
        }
        let (r, _rx) = Router::new(2, 5);
        assert!((0..2).all(|here| r.owner(addr(1), here, 1) == here), "k >= workers: per-worker pools");
    }

    /// A full inbox refuses as busy (local, nobody blamed) instead of growing.
    #[test]
    fn a_full_inbox_is_busy() {
        let (r, rx) = Router::new(2, 1);
        let job = || Job {
            server: addr(1),
            query: vec![0; 12],
            wire: Wire::Udp,
            timeout: Duration::from_secs(1),
            reply: Arc::new(Reply { state: Mutex::default(), origin: 0, router: r.clone() }),
        };
        for _ in 0..INBOX {
            r.send(1, job()).unwrap();
        }
        assert_eq!(r.send(1, job()).unwrap_err(), UpstreamError::Busy(Busy::Handoff));
        assert_eq!(rx[1].len(), INBOX);
    }
}
