//! The worker's upstream dispatcher: Do53 over UDP (a fresh connected socket per query)
//! and TCP (a fresh connection per truncated answer), and DoT, DoQ and DoH through the
//! worker's connection pools, all on this worker's reactor; and the worker's clock and random
//! numbers, which the resolver takes from here (`resolver::Environment`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use mio::Interest;

use super::doh::{DohDriver, DohKey};
use super::doq::{DoqDriver, DoqKey};
use super::dot::{DotDriver, DotKey};
use super::handoff::Router;
use super::outgoing::Outgoing;
use super::reactor::{Executor, Reactor, Registered, until};
use crate::resolver::{Environment, Upstream};
use crate::upstream::{UpstreamError, Wire};

/// UDP receive buffer for upstream replies. Our EDNS size is 1232 (at most 4096); a reply
/// that fills the buffer may have been cut and is fetched again over TCP.
const UDP_RECV_MAX: usize = 4097;

fn io_error(e: &io::Error) -> UpstreamError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => UpstreamError::Refused,
        _ => UpstreamError::Local(e.kind()),
    }
}

/// One UDP exchange on a fresh socket: a kernel-chosen random source port, connected to
/// the server so that the kernel drops datagrams from any other address or port.
async fn udp_exchange(
    reactor: &Reactor,
    outgoing: Outgoing,
    server: SocketAddr,
    query: &[u8],
) -> Result<Vec<u8>, UpstreamError> {
    let sock = outgoing.udp(server).map_err(|e| io_error(&e))?;
    let reg = Registered::new(reactor, sock, Interest::READABLE).map_err(|e| io_error(&e))?;
    reg.source.send(query).map_err(|e| io_error(&e))?;
    let mut buf = vec![0u8; UDP_RECV_MAX];
    std::future::poll_fn(|cx| {
        loop {
            match reg.source.recv(&mut buf) {
                // A datagram with another ID is not ours (late reply to an earlier query on a
                // reused port, or a spoofing attempt): ignore it and keep waiting.
                Ok(n) if n >= buf.len() && query.len() >= 2 && buf[..2] == query[..2] => {
                    return Poll::Ready(Err(UpstreamError::Oversized));
                }
                Ok(n) if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] => {
                    return Poll::Ready(Ok(buf[..n].to_vec()));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Poll::Ready(Err(io_error(&e))),
            }
        }
        reg.wait(cx);
        Poll::Pending
    })
    .await
}

/// One TCP exchange on a fresh connection (RFC 7766 framing).
async fn tcp_exchange(
    reactor: &Reactor,
    outgoing: Outgoing,
    server: SocketAddr,
    query: &[u8],
) -> Result<Vec<u8>, UpstreamError> {
    use std::io::{Read, Write};
    let stream = outgoing.tcp(server).map_err(|e| io_error(&e))?;
    let mut reg =
        Registered::new(reactor, stream, Interest::READABLE | Interest::WRITABLE).map_err(|e| io_error(&e))?;
    let len = u16::try_from(query.len()).map_err(|_| UpstreamError::Local(io::ErrorKind::InvalidInput))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    let mut written = 0;
    let mut rbuf: Vec<u8> = Vec::with_capacity(1500);
    std::future::poll_fn(|cx| {
        while written < frame.len() {
            match reg.source.write(&frame[written..]) {
                Ok(0) => return Poll::Ready(Err(UpstreamError::Closed)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::NotConnected => {
                    reg.wait(cx);
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(io_error(&e))),
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            if rbuf.len() >= 2 {
                let need = 2 + usize::from(u16::from_be_bytes([rbuf[0], rbuf[1]]));
                if rbuf.len() >= need {
                    return Poll::Ready(Ok(rbuf[2..need].to_vec()));
                }
            }
            match reg.source.read(&mut chunk) {
                Ok(0) => return Poll::Ready(Err(UpstreamError::Closed)),
                Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    reg.wait(cx);
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(io_error(&e))),
            }
        }
    })
    .await
}

/// The worker's upstream: Do53 over UDP and TCP, and DoT, DoQ and DoH through the worker's
/// pools, all on this worker's reactor.
#[derive(Debug, Clone)]
pub(crate) struct WorkerUpstream {
    pub(crate) reactor: Rc<Reactor>,
    pub(crate) dot: Rc<DotDriver>,
    pub(crate) doq: Rc<DoqDriver>,
    pub(crate) doh: Rc<DohDriver>,
    pub(crate) executor: Rc<Executor>,
    pub(crate) outgoing: Outgoing,
    /// The owners of encrypted connections (`handoff.rs`).
    pub(crate) router: std::sync::Arc<Router>,
    /// This worker's index.
    pub(crate) index: usize,
    pub(crate) stats: std::sync::Arc<crate::stats::WorkerStats>,
}

impl WorkerUpstream {
    /// One exchange from this worker's own sockets and connection pools.
    pub(crate) async fn exchange_here(
        &self,
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let at = self.reactor.now() + timeout;
        let done = match wire {
            Wire::Udp => until(&self.reactor, at, udp_exchange(&self.reactor, self.outgoing, server, query)).await,
            Wire::Tcp => until(&self.reactor, at, tcp_exchange(&self.reactor, self.outgoing, server, query)).await,
            Wire::Dot { auth } => {
                return self.dot.exchange(DotKey { server, auth }, query, timeout).await;
            }
            Wire::Doq { auth } => {
                return self.doq.exchange(DoqKey { server, auth }, query, timeout).await;
            }
            Wire::Doh { auth, path } => {
                return self.doh.exchange(DohKey { server, auth }, &path, query, timeout).await;
            }
        };
        done.unwrap_or(Err(UpstreamError::Timeout))
    }
}

impl Upstream for WorkerUpstream {
    /// Do53 from this worker; DoT, DoQ and DoH through the worker that owns the
    /// connections to the server (this one, or another one it hands the query to).
    async fn exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        wire: Wire,
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        if !matches!(wire, Wire::Udp | Wire::Tcp) {
            let owner = self.router.owner(server, self.index, self.random());
            if owner != self.index {
                let start = self.reactor.now();
                let deadline = start + timeout;
                // An owner that cannot take it (a full inbox, its hand-off tasks or its
                // connection at their bound) leaves the query to this worker.
                if let Ok(handed) = self.router.hand((self.index, owner), server, query, wire.clone(), (start, timeout))
                {
                    self.stats.upstream_handoffs.bump();
                    match self.router.wait(&self.reactor, handed).await {
                        Err(UpstreamError::Busy(_)) => {}
                        answer => return answer,
                    }
                }
                let left = deadline.saturating_duration_since(self.reactor.now());
                let answer = self.exchange_here(server, query, wire, left).await;
                return super::handoff::cut_short(answer, left, timeout);
            }
        }
        self.exchange_here(server, query, wire, timeout).await
    }

    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()>>>) {
        self.executor.spawn(task);
    }

    async fn sleep(&self, d: Duration) {
        until(&self.reactor, self.reactor.now() + d, std::future::pending::<()>()).await;
    }
}

impl Environment for WorkerUpstream {
    fn now(&self) -> Instant {
        self.reactor.now()
    }

    fn unix_now(&self) -> u64 {
        crate::clock::unix_now()
    }

    fn random(&self) -> u64 {
        rand::random()
    }
}
