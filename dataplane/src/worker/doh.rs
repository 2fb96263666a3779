//! The DoH driver of one worker: long-lived HTTP/2 connections over TLS 1.3 (ALPN `h2`) in
//! the upstream pool, one per (server address and port, authentication), each driven by
//! its own task on the worker's executor. Queries are concurrent streams on a connection
//! (RFC 8484 over RFC 9113); the `h2` crate does the framing, HPACK and flow control, and
//! speaks through [`TlsStream`], an adapter of tokio's `AsyncRead`/`AsyncWrite` traits over
//! rustls and the worker's non-blocking socket: no tokio runtime is involved, the task is
//! woken by the worker's reactor like the DoT and DoQ drivers.
//!
//! Only the driver task touches h2: a query puts its request in the connection's queue and
//! waits in its slot; the driver opens the stream, reads the answer and completes the
//! slot. Limits a hostile server cannot move: one DNS message per stream (a 65,535-octet
//! stream window, answers larger are refused), a connection window of the queries in
//! flight, a 16 KiB header list, no server push.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use adox_api::policy::Transport;
use bytes::Bytes;
use h2::client::{Connection as H2Connection, ResponseFuture, SendRequest};
use mio::Interest;
use rustls::{ClientConnection, HandshakeKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dot::{io_failure, tcp_connect, tls_client};
use super::reactor::{ConnectionLimits, DrivenConnection, Executor, Reactor, Wiring, spawn_pooled};
use crate::stats::WorkerStats;
use crate::upstream::doh::{self, DohMethod};
use crate::upstream::dot::{TlsError, pad_query};
use crate::upstream::error::{Busy, TransportFailure};
use crate::upstream::pool::{OpenCount, Pool, PooledConnection, Slot, SlotGuard, Slots, fail_all};
use crate::upstream::tls::TlsConfigs;
use crate::upstream::{PeerAuth, UpstreamError};

/// What identifies a pooled connection (the URI template is per query: one connection
/// serves every path of its origin).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DohKey {
    /// Server address and port.
    pub(crate) server: SocketAddr,
    /// How the server is authenticated (connections are never shared across these).
    pub(crate) auth: PeerAuth,
}

/// The largest header list accepted from a server (an answer's head is a few dozen octets).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// The receive window of one stream: one DNS message.
const STREAM_WINDOW: u32 = doh::MAX_BODY as u32;
/// The connection's receive window at most, whatever the queries in flight.
const MAX_CONNECTION_WINDOW: u32 = 1 << 20;
/// Streams opened before the server's SETTINGS say how many it takes (RFC 9113 suggests
/// servers allow at least 100; BIND allows 100).
const INITIAL_STREAMS: usize = 100;
/// Octets read from the socket in one turn of the driver: a server that sends without
/// pause cannot hold the worker (the driver wakes itself and goes on next turn).
const READ_BUDGET: usize = 256 * 1024;

/// A TCP socket shared by the reactor registration (through [`Wiring`]) and the TLS stream
/// h2 owns.
#[derive(Debug, Clone)]
pub(crate) struct SharedTcp(Rc<RefCell<mio::net::TcpStream>>);

impl mio::event::Source for SharedTcp {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token, interests: Interest) -> io::Result<()> {
        self.0.borrow_mut().register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &mio::Registry, token: mio::Token, interests: Interest) -> io::Result<()> {
        self.0.borrow_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.0.borrow_mut().deregister(registry)
    }
}

/// TLS over the shared socket, as the byte stream h2 reads and writes. Pending means the
/// socket would block: the driver task is woken by the reactor when it is ready again.
#[derive(Debug)]
pub(crate) struct TlsStream {
    sock: SharedTcp,
    tls: Rc<RefCell<ClientConnection>>,
    /// The TLS failure, kept here because h2 turns the I/O error carrying it into text.
    tls_failure: Rc<Cell<Option<TransportFailure>>>,
    /// Octets this turn may still read (reset by the driver each turn).
    budget: Rc<Cell<usize>>,
}

impl TlsStream {
    /// Writes the TLS records rustls holds until the socket would block.
    fn flush_records(&self) -> io::Result<()> {
        let mut tls = self.tls.borrow_mut();
        let mut sock = self.sock.0.borrow_mut();
        while tls.wants_write() {
            match tls.write_tls(&mut *sock) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            {
                let mut tls = this.tls.borrow_mut();
                match tls.reader().read(buf.initialize_unfilled()) {
                    // 0: the peer's close_notify, which h2 reads as the end of the stream.
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                if this.budget.get() == 0 {
                    // This turn read its share: the next one goes on.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let mut sock = this.sock.0.borrow_mut();
                match tls.read_tls(&mut *sock) {
                    // End of the TCP stream: the reader above now says how it ended.
                    Ok(0) => continue,
                    Ok(n) => {
                        this.budget.set(this.budget.get().saturating_sub(n));
                        // Acknowledge at once (see the DoT driver: a server writing under
                        // Nagle would hold each answer for our delayed ACK).
                        let _ = socket2::SockRef::from(&*sock).set_tcp_quickack(true);
                        if let Err(e) = tls.process_new_packets() {
                            drop((tls, sock));
                            // Whatever alert rustls queued goes out before the error.
                            let _ = this.flush_records();
                            let failure = crate::upstream::tls::failure_reason(&e);
                            this.tls_failure.set(Some(failure));
                            return Poll::Ready(Err(io::Error::other(TlsError(failure))));
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => {
                        return Poll::Pending;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            // The handshake may have produced records to send.
            if let Err(e) = this.flush_records() {
                return Poll::Ready(Err(e));
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Held by rustls until the handshake is over and the socket takes it.
        let n = this.tls.borrow_mut().writer().write(data)?;
        this.flush_records()?;
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        match this.tls.borrow_mut().writer().write(data)? {
            0 => Poll::Pending,
            n => Poll::Ready(Ok(n)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.flush_records()?;
        if this.tls.borrow().wants_write() { Poll::Pending } else { Poll::Ready(Ok(())) }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tls.borrow_mut().send_close_notify();
        self.poll_flush(cx)
    }
}

type Handshake = Pin<Box<dyn Future<Output = Result<(SendRequest<Bytes>, H2Connection<TlsStream, Bytes>), h2::Error>>>>;

/// The HTTP/2 layer of a connection.
enum H2 {
    /// The client preface and SETTINGS are being queued.
    Starting(Handshake),
    /// Streams can be opened; the connection future moves the frames.
    Running { send: SendRequest<Bytes>, conn: Box<H2Connection<TlsStream, Bytes>> },
    /// Given up or closed.
    Over,
}

impl std::fmt::Debug for H2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting(_) => "Starting",
            Self::Running { .. } => "Running",
            Self::Over => "Over",
        })
    }
}

/// One query's stream: waiting for the head, then reading the body.
#[derive(Debug)]
enum Stream {
    Head(ResponseFuture),
    Body(h2::RecvStream, Vec<u8>),
}

impl Stream {
    /// Moves the stream on; Ready with the answer or why there is none (`failure` says what
    /// an h2 error means).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        failure: &dyn Fn(&h2::Error) -> TransportFailure,
    ) -> Poll<Result<Vec<u8>, UpstreamError>> {
        loop {
            match self {
                Self::Head(head) => match Pin::new(head).poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        doh::check_head(&response)?;
                        *self = Self::Body(response.into_body(), Vec::new());
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(failure(&e).into())),
                    Poll::Pending => return Poll::Pending,
                },
                Self::Body(body, answer) => match body.poll_data(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        doh::take_chunk(answer, &chunk)?;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(failure(&e).into())),
                    Poll::Ready(None) => return Poll::Ready(Ok(std::mem::take(answer))),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

/// What a failed h2 call means for one stream.
fn h2_failure(e: &h2::Error) -> TransportFailure {
    match e.get_io() {
        Some(io) => io_failure(io, true),
        None => doh::h2_failure(e),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Handshaking,
    Open,
    /// The server said GOAWAY: the streams it took finish, no new one opens here.
    Draining,
    Closing,
    Failed(TransportFailure),
}

/// A request waiting for its stream.
#[derive(Debug)]
struct Queued {
    id: u32,
    request: http::Request<()>,
    body: Option<Bytes>,
}

#[derive(Debug)]
struct Conn {
    wiring: Wiring<SharedTcp>,
    tls: Rc<RefCell<ClientConnection>>,
    tls_failure: Rc<Cell<Option<TransportFailure>>>,
    read_budget: Rc<Cell<usize>>,
    h2: RefCell<H2>,
    slots: Slots<u32>,
    queued: RefCell<VecDeque<Queued>>,
    streams: RefCell<HashMap<u32, Stream>>,
    next_id: Cell<u32>,
    state: RefCell<State>,
    last_active: Cell<Instant>,
}

impl Conn {
    fn wake_driver(&self) {
        self.wiring.wake_driver();
    }

    fn fail(&self, f: TransportFailure) {
        *self.state.borrow_mut() = State::Failed(f);
        *self.h2.borrow_mut() = H2::Over;
        self.streams.borrow_mut().clear();
        self.queued.borrow_mut().clear();
        fail_all(&self.slots, f);
    }

    /// What the failure of the connection (not of one stream) means: a TLS failure first
    /// (h2 reports it as text), then a server that negotiated something else than h2, then
    /// h2's own reason; before the handshake is over a closed connection is a refused
    /// handshake.
    fn connection_failure(&self, e: Option<&h2::Error>) -> TransportFailure {
        if let Some(f) = self.tls_failure.get() {
            return f;
        }
        let tls = self.tls.borrow();
        if !tls.is_handshaking() && tls.alpn_protocol() != Some(b"h2") {
            return TransportFailure::Alpn;
        }
        let f = e.map_or(TransportFailure::Closed, h2_failure);
        if tls.is_handshaking() && f == TransportFailure::Closed { TransportFailure::HandshakeClosed } else { f }
    }

    /// The server said GOAWAY: queries not yet on a stream go elsewhere (they were not
    /// sent: safe to send again), the streams it took finish.
    fn drain(&self) {
        *self.state.borrow_mut() = State::Draining;
        let mut slots = self.slots.borrow_mut();
        for q in self.queued.borrow_mut().drain(..) {
            if let Some(slot) = slots.get_mut(&q.id) {
                slot.complete(Err(TransportFailure::Http2Retry.into()));
            }
        }
    }

    /// Moves the connection on: opens queued streams, lets h2 move frames both ways and
    /// hands out answers. Ready when the connection is over.
    fn drive(&self, now: Instant, stats: &WorkerStats, cx: &mut Context<'_>) -> Poll<()> {
        if matches!(*self.state.borrow(), State::Failed(_)) {
            return Poll::Ready(());
        }
        if *self.state.borrow() == State::Closing {
            return self.drive_close();
        }
        if *self.state.borrow() == State::Handshaking && now >= self.wiring.handshake_deadline {
            self.fail(TransportFailure::HandshakeTimeout);
            return Poll::Ready(());
        }
        self.read_budget.set(READ_BUDGET);
        let mut h2 = self.h2.borrow_mut();
        if let H2::Starting(start) = &mut *h2 {
            match start.as_mut().poll(cx) {
                Poll::Ready(Ok((send, conn))) => *h2 = H2::Running { send, conn: Box::new(conn) },
                Poll::Ready(Err(e)) => {
                    drop(h2);
                    self.fail(self.connection_failure(Some(&e)));
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let H2::Running { send, conn } = &mut *h2 else { return Poll::Ready(()) };
        // Open the streams of queued queries (h2 holds those past the server's
        // concurrency limit until a stream ends).
        loop {
            let mut queued = self.queued.borrow_mut();
            let Some(front) = queued.front() else { break };
            if !self.slots.borrow().contains_key(&front.id) {
                queued.pop_front(); // the query gave up before its stream opened
                continue;
            }
            match send.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if h2_failure(&e) == TransportFailure::Http2Retry => {
                    drop(queued);
                    self.drain();
                    break;
                }
                Poll::Ready(Err(e)) => {
                    drop((queued, h2));
                    self.fail(self.connection_failure(Some(&e)));
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
            let Some(q) = queued.pop_front() else { break };
            drop(queued);
            let opened = send.send_request(q.request, q.body.is_none()).and_then(|(response, mut stream)| {
                if let Some(body) = q.body {
                    stream.send_data(body, true)?;
                }
                Ok(response)
            });
            match opened {
                Ok(response) => {
                    self.streams.borrow_mut().insert(q.id, Stream::Head(response));
                }
                Err(e) => {
                    if let Some(slot) = self.slots.borrow_mut().get_mut(&q.id) {
                        slot.complete(Err(h2_failure(&e).into()));
                    }
                }
            }
        }
        // Frames both ways.
        match Pin::new(&mut **conn).poll(cx) {
            Poll::Pending => {}
            Poll::Ready(result) => {
                drop(h2);
                // Over. Streams first: those the server answered, or left untaken past a
                // GOAWAY (to send again elsewhere), say so themselves; after a graceful end
                // the queries never sent go elsewhere too; the rest fail with the reason.
                self.poll_streams(cx, now);
                if result.is_ok() {
                    self.drain();
                }
                self.fail(self.connection_failure(result.err().as_ref()));
                return Poll::Ready(());
            }
        }
        drop(h2);
        if *self.state.borrow() == State::Handshaking && !self.tls.borrow().is_handshaking() {
            let tls = self.tls.borrow();
            if tls.alpn_protocol() != Some(b"h2") {
                drop(tls);
                self.fail(TransportFailure::Alpn);
                return Poll::Ready(());
            }
            *self.state.borrow_mut() = State::Open;
            if tls.handshake_kind() == Some(HandshakeKind::Resumed) {
                stats.tls_resumed.bump();
            } else {
                stats.tls_full.bump();
            }
        }
        self.poll_streams(cx, now);
        Poll::Pending
    }

    /// Hands out the answers (or the failures) of the streams that have them.
    fn poll_streams(&self, cx: &mut Context<'_>, now: Instant) {
        let mut streams = self.streams.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        streams.retain(|id, stream| {
            let Some(slot) = slots.get_mut(id) else {
                return false; // the query gave up: dropping the stream cancels it
            };
            match stream.poll(cx, &|e| self.tls_failure.get().unwrap_or_else(|| h2_failure(e))) {
                Poll::Pending => true,
                Poll::Ready(answer) => {
                    if answer.is_ok() {
                        self.wiring.last_answer.set(now);
                    }
                    slot.complete(answer);
                    false
                }
            }
        });
    }

    /// Closes an idle connection: close_notify, written as far as the socket takes it, and
    /// the task ends (never waiting on a server that stopped reading).
    fn drive_close(&self) -> Poll<()> {
        *self.h2.borrow_mut() = H2::Over;
        let mut tls = self.tls.borrow_mut();
        tls.send_close_notify();
        let sock = self.wiring.sock.borrow_mut();
        let mut sock = sock.0.borrow_mut();
        while tls.wants_write() {
            if tls.write_tls(&mut *sock).is_err() {
                break;
            }
        }
        Poll::Ready(())
    }
}

impl DrivenConnection for Conn {
    type Socket = SharedTcp;

    fn wiring(&self) -> &Wiring<Self::Socket> {
        &self.wiring
    }
}

impl PooledConnection for Conn {
    fn accepts_queries(&self, now: Instant) -> bool {
        match *self.state.borrow() {
            State::Failed(_) | State::Closing | State::Draining => false,
            State::Handshaking => now < self.wiring.handshake_deadline,
            State::Open => true,
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.borrow();
        (matches!(*state, State::Open | State::Draining) && self.slots.borrow().is_empty())
            .then(|| self.last_active.get())
    }

    fn close_idle(&self, _: Instant) {
        *self.state.borrow_mut() = State::Closing;
        self.wake_driver();
    }

    fn handshaking_since(&self) -> Option<Instant> {
        (*self.state.borrow() == State::Handshaking).then_some(self.wiring.opened)
    }

    fn evict(&self) {
        self.fail(TransportFailure::Evicted);
        self.wake_driver();
    }
}

/// The worker's DoH connections: the pool, and how to open and drive one.
#[derive(Debug)]
pub(crate) struct DohDriver {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    configs: TlsConfigs,
    method: DohMethod,
    stats: Arc<WorkerStats>,
    /// Per-server connection counts live in the shared probe table.
    probes: Arc<crate::upstream::probe::ProbeTable>,
    outgoing: super::Outgoing,
    settings: ConnectionLimits,
    pool: Rc<Pool<DohKey, Conn>>,
}

impl DohDriver {
    #[allow(clippy::too_many_arguments, reason = "the driver's whole wiring, given once per worker")]
    pub(crate) fn new(
        reactor: Rc<Reactor>,
        executor: Rc<Executor>,
        configs: TlsConfigs,
        method: DohMethod,
        stats: Arc<WorkerStats>,
        probes: Arc<crate::upstream::probe::ProbeTable>,
        outgoing: super::Outgoing,
        settings: ConnectionLimits,
    ) -> Rc<Self> {
        Rc::new(Self {
            reactor,
            executor,
            configs,
            method,
            stats,
            probes,
            outgoing,
            settings,
            pool: Rc::new(Pool::new(settings.max_connections)),
        })
    }

    fn connect(self: &Rc<Self>, key: &DohKey) -> Result<Rc<Conn>, UpstreamError> {
        let (config, server_name) = tls_client(&self.configs, &key.auth, key.server)?;
        let tls = ClientConnection::new(config, server_name).map_err(|e| crate::upstream::tls::failure_reason(&e))?;
        let tls = Rc::new(RefCell::new(tls));
        let tls_failure = Rc::new(Cell::new(None));
        let read_budget = Rc::new(Cell::new(READ_BUDGET));
        let mut sock = tcp_connect(self.outgoing, key.server)?;
        let token = self
            .reactor
            .register_source(&mut sock, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| UpstreamError::Local(e.kind()))?;
        let _ = socket2::SockRef::from(&sock).set_tcp_quickack(true);
        let shared = SharedTcp(Rc::new(RefCell::new(sock)));
        let window = u32::try_from(self.settings.max_outstanding)
            .unwrap_or(u32::MAX)
            .saturating_mul(STREAM_WINDOW)
            .clamp(STREAM_WINDOW, MAX_CONNECTION_WINDOW);
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(window)
            .max_header_list_size(MAX_HEADER_LIST)
            .initial_max_send_streams(INITIAL_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(TlsStream {
                sock: shared.clone(),
                tls: tls.clone(),
                tls_failure: tls_failure.clone(),
                budget: read_budget.clone(),
            });
        let conn = Rc::new(Conn {
            wiring: Wiring::new(shared, token, self.reactor.now(), self.settings.handshake_timeout),
            tls,
            tls_failure,
            read_budget,
            h2: RefCell::new(H2::Starting(Box::pin(handshake))),
            slots: RefCell::new(HashMap::new()),
            queued: RefCell::new(VecDeque::new()),
            streams: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            state: RefCell::new(State::Handshaking),
            last_active: Cell::new(self.reactor.now()),
        });
        let stats = self.stats.clone();
        let count = OpenCount::new(self.probes.clone(), key.server.ip(), Transport::Doh);
        let reactor = self.reactor.clone();
        spawn_pooled(
            &self.executor,
            self.reactor.clone(),
            self.pool.clone(),
            key.clone(),
            conn.clone(),
            move |c, waker: &Waker| {
                c.wiring.arm_handshake_deadline(&reactor, waker);
                let poll = c.drive(reactor.now(), &stats, &mut Context::from_waker(waker));
                let open = matches!(*c.state.borrow(), State::Open | State::Closing);
                count.observe(open, || c.tls.borrow().handshake_kind() == Some(HandshakeKind::Resumed));
                poll
            },
        );
        Ok(conn)
    }

    /// One query over DoH: the pooled connection to `key` (opened if needed), the message
    /// padded and with ID 0 (RFC 8484 section 4.1) sent to the URI template `path`, with
    /// the answer or an error within `timeout`.
    pub(crate) async fn exchange(
        self: &Rc<Self>,
        key: DohKey,
        path: &str,
        query: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        if query.len() < 12 {
            return Err(UpstreamError::BadResponse("short query"));
        }
        let end = self.reactor.now() + timeout;
        let mut answer = self.exchange_once(&key, path, query, timeout).await;
        // A query the server did not take (GOAWAY, REFUSED_STREAM) goes again on a fresh
        // connection (the draining one accepts no more), twice at most, within its time.
        for _ in 0..2 {
            if answer != Err(TransportFailure::Http2Retry.into()) || self.reactor.now() >= end {
                break;
            }
            let left = end.saturating_duration_since(self.reactor.now());
            answer = self.exchange_once(&key, path, query, left).await;
        }
        answer
    }

    async fn exchange_once(
        self: &Rc<Self>,
        key: &DohKey,
        path: &str,
        query: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, UpstreamError> {
        let conn = self.pool.get_or_open(key, self.reactor.now(), || self.connect(key))?;
        if conn.slots.borrow().len() >= self.settings.max_outstanding {
            return Err(UpstreamError::Busy(Busy::ConnectionFull));
        }
        let id = conn.next_id.get();
        conn.next_id.set(id.wrapping_add(1));
        let mut msg = query.to_vec();
        msg[0..2].copy_from_slice(&[0, 0]);
        pad_query(&mut msg);
        let authority = doh::authority(key.auth.name().map(|n| n.to_ascii()).as_deref(), key.server);
        let (request, body) = doh::request(&authority, path, self.method, &msg)?;
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        conn.slots.borrow_mut().insert(id, Slot::new(client_id));
        let _guard =
            SlotGuard { slots: &conn.slots, key: id, last_active: &conn.last_active, now: || self.reactor.now() };
        conn.queued.borrow_mut().push_back(Queued { id, request, body });
        self.stats.upstream_doh.bump();
        conn.wake_driver();
        let fair_test = *conn.state.borrow() == State::Open && timeout >= self.settings.handshake_timeout;
        let sent = (self.reactor.now(), timeout);
        conn.wiring
            .wait_answer(&self.reactor, &conn.slots, &id, sent, fair_test, || {
                conn.fail(TransportFailure::Stalled);
                conn.wake_driver();
            })
            .await
    }

    /// Closes connections idle longer than the idle timeout.
    pub(crate) fn sweep_idle(&self, now: Instant) {
        self.pool.sweep_idle(now, self.settings.idle_timeout);
    }
}
