//! One encrypted connection per authoritative server, not one per worker: each server
//! (address and port) has `transport.connections_per_server` owning workers (k; a keyed
//! hash of the server, then the next workers), and a DoT, DoQ or DoH query that starts on
//! another worker is handed to one of them over a crossbeam channel, with that worker's
//! `mio::Waker`; the answer comes back the same way. With k at least the number of
//! workers every worker owns every server: the per-worker pools of before.
//!
//! An owner that cannot take a query (its inbox or its hand-off tasks at their bound, its
//! connection to the server full) answers "busy", and the asking worker then sends the
//! query itself: the cap gives way to availability under pressure, never the reverse. A
//! query's deadline travels with it: the owner drops what its asker no longer waits for,
//! and a wait that ran out on the asking side blames nobody (only the owner's exchange
//! speaks of the server).

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::upstream::error::Busy;
use crate::upstream::{UpstreamError, Wire};

/// Queries waiting in one worker's inbox at most; past it a hand-off is refused (busy).
pub(crate) const INBOX: usize = 65_536;
/// Inbox entries a worker takes per loop turn (the rest wait for the next turn, which
/// comes at once): its own clients are read between batches.
pub(crate) const TAKE_PER_TURN: usize = 1024;
/// Hand-off tasks one worker runs at once; past it a taken query is answered busy.
pub(crate) const MAX_TASKS: u32 = 8192;

/// Time the asking worker allows beyond the query's own timeout, so that the owner's
/// typed failure (a timeout, a refused connection) arrives first.
const REPLY_MARGIN: Duration = Duration::from_millis(50);

/// One query handed to the owning worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) server: SocketAddr,
    pub(crate) query: Vec<u8>,
    pub(crate) wire: Wire,
    /// When the asking worker stops waiting (its exchange's timeout, from the moment it
    /// handed the query over).
    pub(crate) deadline: Instant,
    /// That timeout: a server given less (the query waited in the inbox) is not blamed
    /// for running out of it ([`cut_short`]).
    pub(crate) timeout: Duration,
    pub(crate) reply: Arc<Reply>,
}

impl Job {
    /// Whether the asking worker has stopped waiting: the query is not worth sending.
    pub(crate) fn abandoned(&self, now: Instant) -> bool {
        now >= self.deadline || Arc::strong_count(&self.reply) == 1
    }
}

/// An exchange's outcome, as it crosses threads.
type Answer = Result<Vec<u8>, UpstreamError>;

/// A server's timeout within clearly less than the query's `full` time (`given`: it
/// waited for its turn in an inbox, or on an owner that refused it) says nothing about
/// the server: a local failure. (A wait of up to [`CUT_SHORT_SLACK`] still blames it: the
/// usual hand-off takes microseconds.)
pub(crate) fn cut_short(answer: Answer, given: Duration, full: Duration) -> Answer {
    match answer {
        Err(UpstreamError::Timeout) if given + CUT_SHORT_SLACK < full => {
            Err(UpstreamError::Local(std::io::ErrorKind::TimedOut))
        }
        other => other,
    }
}

/// See [`cut_short`].
const CUT_SHORT_SLACK: Duration = Duration::from_millis(100);

/// Where the owner puts the answer, and whom it wakes.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The answer once there, and the asking task's waker while it waits.
    state: Mutex<(Option<Answer>, Option<Waker>)>,
    /// The asking worker, whose loop is woken too (it may sleep in `poll`).
    origin: usize,
    /// Weak: a reply left in an inbox at shutdown must not keep the router alive.
    router: Weak<Router>,
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
        if let Some(r) = self.router.upgrade() {
            r.wake(self.origin);
        }
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
    /// Keys of the owner hash, random per process: which worker owns which server is
    /// not for a zone (which can name any address and port) to steer.
    keys: std::collections::hash_map::RandomState,
}

impl Router {
    /// A router for `workers` workers and `per_server` owners per server, with each
    /// worker's inbox to hand to it.
    pub(crate) fn new(workers: usize, per_server: usize) -> (Arc<Self>, Vec<crossbeam_channel::Receiver<Job>>) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| crossbeam_channel::bounded(INBOX)).unzip();
        let wakers = (0..workers).map(|_| OnceLock::new()).collect();
        let woken = (0..workers).map(|_| AtomicBool::new(false)).collect();
        let router = Self {
            inboxes,
            wakers,
            woken,
            per_server: per_server.clamp(1, workers.max(1)),
            keys: std::collections::hash_map::RandomState::new(),
        };
        (Arc::new(router), receivers)
    }

    /// Records worker `index`'s loop waker (once, when it is built).
    pub(crate) fn register(&self, index: usize, waker: Arc<mio::Waker>) {
        let _ = self.wakers[index].set(waker);
    }

    /// Wakes worker `i`'s loop, unless a wake-up is on its way already (a worker not
    /// built yet has no waker, and its first turn reads its inbox anyway).
    pub(crate) fn wake(&self, i: usize) {
        if let Some(w) = self.wakers[i].get()
            && !self.woken[i].swap(true, Ordering::SeqCst)
        {
            let _ = w.wake();
        }
    }

    /// Called by worker `i` when it wakes, before it looks at its inbox and its tasks:
    /// the next sender wakes it again. (SeqCst: the store must not pass the reads of the
    /// inbox and the ready tasks that follow it.)
    pub(crate) fn awake(&self, i: usize) {
        self.woken[i].swap(false, Ordering::SeqCst);
    }

    /// The worker that sends a query to `server` when it starts on worker `here`: `here`
    /// itself when it is one of the server's owners, else one of them (chosen by `pick`,
    /// any number).
    pub(crate) fn owner(&self, server: SocketAddr, here: usize, pick: u64) -> usize {
        let n = self.inboxes.len();
        if self.per_server >= n {
            return here;
        }
        let first = (self.keys.hash_one(server) % n as u64) as usize;
        let mine = (here + n - first) % n < self.per_server;
        if mine { here } else { (first + (pick % self.per_server as u64) as usize) % n }
    }

    /// Hands `job` to worker `to` and wakes it.
    fn send(&self, to: usize, job: Job) -> Result<(), UpstreamError> {
        self.inboxes[to].try_send(job).map_err(|_| UpstreamError::Busy(Busy::Handoff))?;
        self.wake(to);
        Ok(())
    }

    /// Sends one query through worker `to` and waits for its answer, at most the query's
    /// timeout and a small margin; a wait that runs out is a local failure (the owner's
    /// own exchange reports what the server did). `Busy` when the owner refused it: the
    /// caller sends it itself. (The worker's dispatcher calls the two halves itself.)
    #[cfg(test)]
    pub(crate) async fn exchange(
        self: &Arc<Self>,
        reactor: &super::reactor::Reactor,
        (from, to): (usize, usize),
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let handed = self.hand((from, to), server, query, wire, (reactor.now(), timeout))?;
        self.wait(reactor, handed).await
    }

    /// Hands one query to worker `to`, to be answered within `timeout` from `now`.
    pub(crate) fn hand(
        self: &Arc<Self>,
        (from, to): (usize, usize),
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        (now, timeout): (Instant, Duration),
    ) -> Result<(Arc<Reply>, Instant), UpstreamError> {
        let reply = Arc::new(Reply { state: Mutex::default(), origin: from, router: Arc::downgrade(self) });
        let deadline = now + timeout;
        let job = Job { server, query: query.to_vec(), wire, deadline, timeout, reply: reply.clone() };
        self.send(to, job)?;
        Ok((reply, deadline))
    }

    /// Waits for the answer to a query handed over (see [`Self::exchange`]).
    pub(crate) async fn wait(
        &self,
        reactor: &super::reactor::Reactor,
        (reply, deadline): (Arc<Reply>, Instant),
    ) -> Result<Vec<u8>, UpstreamError> {
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
        super::reactor::until(reactor, deadline + REPLY_MARGIN, answer)
            .await
            .unwrap_or(Err(UpstreamError::Local(std::io::ErrorKind::TimedOut)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

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

    fn job(r: &Arc<Router>, deadline: Instant) -> Job {
        Job {
            server: addr(1),
            query: vec![0; 12],
            wire: Wire::Udp,
            deadline,
            timeout: Duration::from_secs(1),
            reply: Arc::new(Reply { state: Mutex::default(), origin: 0, router: Arc::downgrade(r) }),
        }
    }

    /// A full inbox refuses as busy (local, nobody blamed) instead of growing; a job whose
    /// asker has gone, or whose deadline passed, is not worth sending.
    #[test]
    fn a_full_inbox_is_busy_and_abandoned_jobs_are_seen() {
        let (r, rx) = Router::new(2, 1);
        let later = Instant::now() + Duration::from_secs(60);
        for _ in 0..INBOX {
            r.send(1, job(&r, later)).unwrap();
        }
        assert_eq!(r.send(1, job(&r, later)).unwrap_err(), UpstreamError::Busy(Busy::Handoff));
        assert_eq!(rx[1].len(), INBOX);
        let j = rx[1].recv().unwrap();
        assert!(j.abandoned(Instant::now()), "nobody holds its reply any more");
        let kept = j.reply.clone();
        assert!(!j.abandoned(Instant::now()));
        assert!(j.abandoned(later), "past its deadline");
        drop(kept);
    }

    /// Drives `fut` on this thread's reactor until it completes: timers fire, and the
    /// loop sleeps in `poll` until a waker (the router's) wakes it. A lost wake-up hangs
    /// the loop until its 10 s guard, and fails the test.
    fn drive<F: Future>(poll: &mut mio::Poll, reactor: &super::super::reactor::Reactor, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let woke = Arc::new(AtomicBool::new(true));
        struct Flag(Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Flag(woke.clone())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut events = mio::Events::with_capacity(8);
        let guard = Instant::now() + Duration::from_secs(10);
        loop {
            reactor.set_now(Instant::now());
            reactor.fire_timers();
            if woke.swap(false, Ordering::SeqCst)
                && let Poll::Ready(v) = fut.as_mut().poll(&mut cx)
            {
                return v;
            }
            assert!(Instant::now() < guard, "no wake-up came");
            let wait = reactor.next_timeout().unwrap_or(Duration::from_secs(10)).min(Duration::from_secs(10));
            poll.poll(&mut events, Some(wait)).unwrap();
            reactor.set_now(Instant::now());
            let timer_due = reactor.next_timeout().is_some_and(|d| d.is_zero());
            assert!(!events.is_empty() || timer_due, "the loop slept through its wake-up");
        }
    }

    /// A timeout after a long wait for the owner is nobody's fault; after the usual
    /// microseconds it is the server's.
    #[test]
    fn a_timeout_cut_short_by_a_wait_blames_nobody() {
        let full = Duration::from_secs(4);
        let timeout = || Err(UpstreamError::Timeout);
        let local = Err(UpstreamError::Local(std::io::ErrorKind::TimedOut));
        assert_eq!(cut_short(timeout(), Duration::from_secs(1), full), local);
        assert_eq!(cut_short(timeout(), full - Duration::from_micros(30), full), timeout());
        assert_eq!(cut_short(Ok(vec![1]), Duration::ZERO, full), Ok(vec![1]));
        assert_eq!(cut_short(Err(UpstreamError::Refused), Duration::ZERO, full), Err(UpstreamError::Refused));
    }

    /// A query handed to another thread comes back with the owner's answer, woken by the
    /// router (not by a timer); an owner that never answers costs the asker its timeout,
    /// as a local failure that blames nobody.
    #[test]
    fn an_answer_crosses_threads_and_a_silent_owner_blames_nobody() {
        let (r, rx) = Router::new(2, 1);
        let mut poll = mio::Poll::new().unwrap();
        let reactor = super::super::reactor::Reactor::new(poll.registry().try_clone().unwrap());
        r.register(0, Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap()));
        let inbox = rx[1].clone();
        let owner = std::thread::spawn(move || {
            let j = inbox.recv().unwrap();
            assert_eq!(j.query, b"query-bytes!");
            j.reply.complete(Ok(b"answer".to_vec()));
        });
        let long = Duration::from_secs(60);
        let got = drive(&mut poll, &reactor, r.exchange(&reactor, (0, 1), addr(1), b"query-bytes!", Wire::Udp, long));
        assert_eq!(got.unwrap(), b"answer");
        owner.join().unwrap();
        // Nobody takes the next one.
        let short = Duration::from_millis(20);
        let got = drive(&mut poll, &reactor, r.exchange(&reactor, (0, 1), addr(1), b"query-bytes!", Wire::Udp, short));
        assert_eq!(got.unwrap_err(), UpstreamError::Local(std::io::ErrorKind::TimedOut));
    }
}
