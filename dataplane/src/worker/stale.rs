//! Serve-stale (RFC 8767) on the worker: a resolution that fails because no authority
//! answered is answered from expired data (EDE 3, or 19 for an NXDOMAIN) when the record
//! cache still holds some; one that is still running when the client-response timer
//! (`cache.stale_client_timeout_ms`) fires answers its waiting clients stale and goes on
//! in the background, refreshing the cache. After a failure answered stale, the question
//! is answered stale without a new attempt until the failure-recheck timer
//! (`cache.stale_recheck_s`) runs out.
//!
//! What never goes out stale: bogus data (the record cache does not hand it out), AD on
//! data whose signatures have expired (`resolver::iterate`), and anything in place of a
//! resolution that met a strict transport plan: a server that must be reached encrypted
//! and could not be is reported (SERVFAIL with EDE 22), not covered with older data.
//!
//! A resolution whose clients were answered stale goes on in the background: it keeps one
//! resolution slot and its first client's share until it ends, so answering early never
//! lets a client run more resolutions than its share.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RecordType};

use super::{WorkerCtx, poll_once};
use crate::resolver::{Answer, Environment, Limit, ResolveError, Upstream};

type Key = (Name, RecordType);

/// Questions under a failure-recheck timer, per worker: a flood of failing names cannot
/// grow it past this (when full, run-out timers are swept at most once a second; past it,
/// no timer is started).
const MAX_RECHECK: usize = 16_384;

/// After the first stale answer of a resolution, clients that join it wait at least this
/// long before they are answered stale too (with a client-response timer of 0, the loop
/// would otherwise spin).
const MIN_RESTALE: Duration = Duration::from_millis(100);

/// Serve-stale's failure-recheck timers.
#[derive(Debug, Default)]
pub(super) struct Recheck {
    until: HashMap<Key, Instant>,
    /// When the map, full, was last swept of run-out timers (at most once a second).
    swept: Option<Instant>,
}

impl Recheck {
    /// Whether `key` is under its timer at `now` (an expired timer is dropped).
    pub(super) fn pending(&mut self, key: &Key, now: Instant) -> bool {
        match self.until.get(key) {
            Some(t) if now < *t => true,
            Some(_) => {
                self.until.remove(key);
                false
            }
            None => false,
        }
    }

    /// Starts `key`'s timer, to run until `until`.
    fn start(&mut self, key: Key, until: Instant, now: Instant) {
        if self.until.len() >= MAX_RECHECK && self.swept.is_none_or(|t| now >= t + Duration::from_secs(1)) {
            self.until.retain(|_, t| *t > now);
            self.swept = Some(now);
        }
        if self.until.len() < MAX_RECHECK || self.until.contains_key(&key) {
            self.until.insert(key, until);
        }
    }
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures; the first to finish wins (the other is left as it is).
async fn race<A: Future, B: Future>(mut a: Pin<&mut A>, mut b: Pin<&mut B>) -> Either<A::Output, B::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// Runs `resolution` against the client-response timer (`timer(true)`, then
/// `timer(false)` for each later round): each time the timer fires first, `answer_stale`
/// answers the clients waiting so far from stale data if it can; when it cannot, the
/// resolution is simply awaited. Returns the resolution's own result.
async fn race_with_stale<R: Future, S: Future<Output = ()>>(
    resolution: R,
    mut timer: impl FnMut(bool) -> S,
    mut answer_stale: impl FnMut() -> bool,
) -> R::Output {
    let mut resolution = pin!(resolution);
    let mut first = true;
    loop {
        let fired = pin!(timer(first));
        match race(resolution.as_mut(), fired).await {
            Either::Left(result) => return result,
            Either::Right(()) if answer_stale() => first = false,
            Either::Right(()) => return resolution.await,
        }
    }
}

/// Whether stale data may stand in for this failure: no authority answered, or the query
/// ran out of time or queries trying. Never a strict transport failure, a loop, invalid
/// data or a limit of the resolver's own.
fn stale_may_answer(e: &ResolveError) -> bool {
    matches!(
        e,
        ResolveError::NoReachableAuthority { .. }
            | ResolveError::LimitExceeded(Limit::RequestTimeout | Limit::QueriesPerRequest)
    )
}

impl WorkerCtx {
    /// The answer the cache gives with expired data counted (with serve-stale on; `None`
    /// when some link is not there even stale). `for_clients` stale answers are counted.
    pub(super) fn stale_answer(&self, name: &Name, qtype: RecordType, for_clients: usize) -> Option<Answer> {
        match poll_once(self.resolver.resolve_stale(name, qtype)) {
            Some(Ok(answer)) => {
                if answer.stale {
                    self.stats.stale_answers.add(for_clients as u64);
                }
                Some(answer)
            }
            _ => None,
        }
    }

    /// Resolves `name`/`qtype` (from the authorities although cached, with `refresh`: a
    /// prefetch), answering the clients waiting for it (`inflight[key]`) stale when the
    /// client-response timer fires first, and returns the result for those still waiting at
    /// the end (the resolution's, or stale data in place of its failure) and whether a
    /// failure is the name's own: no exchange on its way failed for a reason of ours
    /// (`Watch::local_fault`).
    pub(super) async fn resolve_or_stale(
        &self,
        key: &Key,
        name: &Name,
        qtype: RecordType,
        refresh: bool,
    ) -> (Result<Answer, ResolveError>, bool) {
        let watch = std::rc::Rc::new(crate::resolver::Watch::default());
        let Some(stale) = self.resolver.shared().settings.stale else {
            let result = self.resolver.resolve_watching(name, qtype, watch.clone(), refresh).await;
            return (result, !watch.local_fault.get());
        };
        // The client whose slot and share the resolution keeps once its waiters have been
        // answered stale (released when it ends).
        let held: std::cell::Cell<Option<std::net::IpAddr>> = std::cell::Cell::new(None);
        let timer = |first: bool| {
            let wait = if first { stale.client_timeout } else { stale.client_timeout.max(MIN_RESTALE) };
            self.resolver.upstream().sleep(wait)
        };
        let answer_stale = || {
            if watch.met_strict.get() {
                return false;
            }
            let waiting = self.inflight.borrow().get(key).map_or(0, Vec::len);
            if waiting == 0 {
                return true;
            }
            let Some(answer) = self.stale_answer(name, qtype, waiting) else { return false };
            let mut waiters = self.inflight.borrow_mut().get_mut(key).map(std::mem::take).unwrap_or_default();
            if held.get().is_none()
                && let Some(first) = waiters.first()
            {
                // Its slot and share stay taken: answered, it no longer waits, but its
                // resolution still runs.
                held.set(Some(first.peer.ip()));
                let first = waiters.remove(0);
                self.reply(first, &Ok(answer.clone()), false);
            }
            self.answer(waiters, &Ok(answer), false);
            true
        };
        let resolution = self.resolver.resolve_watching(name, qtype, watch.clone(), refresh);
        let result = race_with_stale(resolution, timer, answer_stale).await;
        if let Some(client) = held.get() {
            self.resolutions.set(self.resolutions.get() - 1);
            self.client_load.borrow_mut().release(client);
        }
        let the_names = !watch.local_fault.get();
        if watch.met_strict.get() {
            return (result, the_names);
        }
        (self.stale_on_failure(key, name, qtype, result, stale.recheck), the_names)
    }

    fn stale_on_failure(
        &self,
        key: &Key,
        name: &Name,
        qtype: RecordType,
        result: Result<Answer, ResolveError>,
        recheck: Duration,
    ) -> Result<Answer, ResolveError> {
        match result {
            Err(e) if stale_may_answer(&e) => {
                let waiting = self.inflight.borrow().get(key).map_or(0, Vec::len);
                match self.stale_answer(name, qtype, waiting) {
                    Some(answer) => {
                        tracing::debug!(%name, ?qtype, error = %e, "answered stale");
                        let now = self.resolver.upstream().now();
                        self.stale_recheck.borrow_mut().start(key.clone(), now + recheck, now);
                        Ok(answer)
                    }
                    None => Err(e),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A future that is pending `n` times, then ready with `v`.
    struct After<T> {
        n: Cell<u32>,
        v: Option<T>,
    }

    impl<T: Unpin> Future for After<T> {
        type Output = T;
        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
            if self.n.get() == 0 {
                return Poll::Ready(self.v.take().unwrap());
            }
            self.n.set(self.n.get() - 1);
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn after<T>(n: u32, v: T) -> After<T> {
        After { n: Cell::new(n), v: Some(v) }
    }

    fn run<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    /// The client-response timer: each time it fires before the resolution ends, the
    /// clients waiting so far are answered stale, and the resolution goes on to its end
    /// (its result still comes back, to refresh the cache and answer later clients).
    #[test]
    fn a_slow_resolution_answers_stale_each_time_the_timer_fires_and_still_completes() {
        let timers = Cell::new(Vec::new());
        let stale_answers = Cell::new(0);
        let timer = |first: bool| {
            let mut t = timers.take();
            t.push(first);
            timers.set(t);
            after(1, ())
        };
        let answer = || {
            stale_answers.set(stale_answers.get() + 1);
            true
        };
        assert_eq!(run(race_with_stale(after(5, "fresh"), timer, answer)), "fresh");
        assert_eq!(stale_answers.get(), 2, "the timer fired twice before the resolution ended");
        assert_eq!(timers.take(), [true, false, false], "the first timer is the client-response timer");
    }

    /// With nothing stale to answer with, the clients simply wait for the resolution; a
    /// fast resolution never fires the timer.
    #[test]
    fn without_stale_data_or_with_a_fast_resolution_the_resolution_answers() {
        let tried = Cell::new(0);
        let none = || {
            tried.set(tried.get() + 1);
            false
        };
        assert_eq!(run(race_with_stale(after(9, 7), |_| after(1, ()), none)), 7);
        assert_eq!(tried.get(), 1, "tried once, then waited");
        let never = || -> bool { panic!("the timer fired before a resolution that was ready") };
        assert_eq!(run(race_with_stale(after(0, 8), |_| after(5, ()), never)), 8);
    }

    #[test]
    fn recheck_timers_expire_and_stay_bounded() {
        let mut r = Recheck::default();
        let now = Instant::now();
        let key = |i: usize| (format!("n{i}.lab.").parse::<Name>().unwrap(), RecordType::A);
        r.start(key(0), now + Duration::from_secs(30), now);
        assert!(r.pending(&key(0), now + Duration::from_secs(29)));
        assert!(!r.pending(&key(0), now + Duration::from_secs(30)), "the timer ran out");
        assert!(!r.pending(&key(0), now), "and was dropped");
        for i in 0..MAX_RECHECK + 10 {
            r.start(key(i), now + Duration::from_secs(30), now);
        }
        assert_eq!(r.until.len(), MAX_RECHECK, "a flood of failing names is bounded");
        // Once the old timers have run out, new ones fit again.
        let later = now + Duration::from_secs(31);
        r.start(key(MAX_RECHECK + 20), later + Duration::from_secs(30), later);
        assert_eq!(r.until.len(), 1);
    }
}
