//! Client TCP connections of one worker (RFC 7766): length-prefixed messages, pipelining
//! with answers sent in completion order, a connection cap (overall and per client
//! address), an idle timeout counted from the last whole message or answer, and a
//! deadline for a message once started (a trickle of bytes keeps nothing open).
//!
//! Back-pressure: a connection is read only while it has fewer than `max_pipelined`
//! queries in flight, less than [`MAX_WBUF`] of unsent output, and room in its input
//! buffer. When reading stops for one of those reasons rather than because the socket ran
//! dry, no new readiness edge will come, so the connection is queued on `resume` as soon as
//! the reason clears (an answer leaves, output drains) and the worker reads it again.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Unparsed input kept per connection at most: two maximal messages.
pub(crate) const MAX_RBUF: usize = 2 * (2 + 65_535);
/// Unsent output per connection above which no more queries are read from it.
const MAX_WBUF: usize = 256 * 1024;
/// Unsent output per connection past which the client is taken for one that does not
/// read: the connection is closed (answers of queries already taken in still arrive after
/// reading stopped at [`MAX_WBUF`], up to `max_pipelined` of 64 KiB each).
const MAX_WBUF_HARD: usize = 4 * MAX_WBUF;
/// Connection ids cycle below this (tokens are `token_base + id`).
const MAX_ID: usize = 1 << 30;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    pending: usize,
    last_active: Instant,
    /// The peer closed its sending side.
    read_closed: bool,
    /// The last read ran until the socket would block: only a new edge brings more.
    drained: bool,
    /// Already on the resume list.
    resume_queued: bool,
    /// Since when a started message has been waiting for its last bytes.
    partial_since: Option<Instant>,
}

impl Conn {
    fn backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    fn has_frame(&self) -> bool {
        self.rbuf.len() >= 2 && self.rbuf.len() >= 2 + usize::from(u16::from_be_bytes([self.rbuf[0], self.rbuf[1]]))
    }

    fn may_take_more(&self, max_pipelined: usize) -> bool {
        self.pending < max_pipelined && self.backlog() < MAX_WBUF
    }

    fn finished(&self) -> bool {
        self.read_closed && self.pending == 0 && self.backlog() == 0 && !self.has_frame()
    }
}

/// Takes the complete length-prefixed messages (RFC 7766) at the front of a client's
/// input, at most `room` of them; a message still arriving stays buffered.
pub(crate) fn take_messages(rbuf: &mut Vec<u8>, room: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < room && rbuf.len() >= at + 2 {
        let len = usize::from(u16::from_be_bytes([rbuf[at], rbuf[at + 1]]));
        if rbuf.len() < at + 2 + len {
            break;
        }
        out.push(rbuf[at + 2..at + 2 + len].to_vec());
        at += 2 + len;
    }
    rbuf.drain(..at);
    out
}

/// The limits of a worker's client connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpLimits {
    /// Connections at most.
    pub(super) max_conns: usize,
    /// Connections from one address at most.
    pub(super) max_per_client: usize,
    /// Queries in flight per connection.
    pub(super) max_pipelined: usize,
    /// Closed after this without a whole message or an answer written.
    pub(super) idle: Duration,
    /// A message started must be complete within this.
    pub(super) message: Duration,
}

/// All client connections of a worker.
#[derive(Debug)]
pub(super) struct TcpClients {
    registry: Registry,
    token_base: usize,
    max_conns: usize,
    max_per_client: usize,
    max_pipelined: usize,
    idle: Duration,
    message: Duration,
    conns: HashMap<usize, Conn>,
    /// Connections per client address.
    per_client: HashMap<IpAddr, usize>,
    next_id: usize,
    /// Connections to read again without waiting for an event.
    pub(super) resume: Vec<usize>,
}

impl TcpClients {
    pub(super) fn new(registry: Registry, token_base: usize, limits: TcpLimits) -> Self {
        Self {
            registry,
            token_base,
            max_conns: limits.max_conns,
            max_per_client: limits.max_per_client,
            max_pipelined: limits.max_pipelined,
            idle: limits.idle,
            message: limits.message,
            conns: HashMap::new(),
            per_client: HashMap::new(),
            next_id: 0,
            resume: Vec::new(),
        }
    }

    /// Takes a new connection; false (and closed) when a cap is reached.
    pub(super) fn add(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) -> bool {
        if self.conns.len() >= self.max_conns
            || self.per_client.get(&peer.ip()).is_some_and(|n| *n >= self.max_per_client)
        {
            return false;
        }
        // Never reuse the id of a live connection (its pending answers would go astray).
        let mut id = self.next_id;
        while self.conns.contains_key(&id) {
            id = (id + 1) % MAX_ID;
        }
        self.next_id = (id + 1) % MAX_ID;
        let _ = stream.set_nodelay(true);
        if self
            .registry
            .register(&mut stream, Token(self.token_base + id), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return false;
        }
        let conn = Conn {
            stream,
            peer,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            pending: 0,
            last_active: now,
            read_closed: false,
            drained: true,
            resume_queued: false,
            partial_since: None,
        };
        self.conns.insert(id, conn);
        *self.per_client.entry(peer.ip()).or_insert(0) += 1;
        true
    }

    fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.registry.deregister(&mut c.stream);
            if let Some(n) = self.per_client.get_mut(&c.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&c.peer.ip());
                }
            }
        }
    }

    /// Reads what the back-pressure rules allow and returns the complete messages that may
    /// start now (pending + returned never exceeds the pipelining cap).
    pub(super) fn read(&mut self, id: usize, now: Instant) -> Option<(SocketAddr, Vec<Vec<u8>>)> {
        let max_pipelined = self.max_pipelined;
        let c = self.conns.get_mut(&id)?;
        c.resume_queued = false;
        let mut chunk = [0u8; 4096];
        let mut failed = false;
        c.drained = c.read_closed;
        while !c.read_closed && c.rbuf.len() < MAX_RBUF && c.may_take_more(max_pipelined) {
            match c.stream.read(&mut chunk) {
                Ok(0) => c.read_closed = true,
                Ok(n) => c.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.close(id);
            return None;
        }
        let room = if c.backlog() < MAX_WBUF { max_pipelined.saturating_sub(c.pending) } else { 0 };
        let out = take_messages(&mut c.rbuf, room);
        if !out.is_empty() {
            c.last_active = now;
        }
        // A started message's clock runs from its first octet to its last, while the
        // client is free to send it (not while back-pressure keeps its octets unread).
        let paused = c.pending + out.len() >= max_pipelined || c.backlog() >= MAX_WBUF;
        if c.rbuf.is_empty() || c.has_frame() || paused {
            c.partial_since = None;
        } else if c.partial_since.is_none() {
            c.partial_since = Some(now);
        }
        Some((c.peer, out))
    }

    /// A message of this connection went to the resolver.
    pub(super) fn note_pending(&mut self, id: usize) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.pending += 1;
        }
    }

    /// After a read's messages were handled: close a finished connection, or queue it for
    /// another read if input may be waiting and it can take more.
    pub(super) fn after_read(&mut self, id: usize) {
        let max_pipelined = self.max_pipelined;
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.finished() {
            self.close(id);
            return;
        }
        let input_waiting = c.has_frame() || (!c.drained && !c.read_closed);
        if input_waiting && c.may_take_more(max_pipelined) && !c.resume_queued {
            c.resume_queued = true;
            self.resume.push(id);
        }
    }

    /// A pending query of this connection that gets no answer (an RPZ DROP): it holds the
    /// connection no more (closed if finished, read again if it can take more).
    pub(super) fn abandon(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.pending = c.pending.saturating_sub(1);
        self.after_read(id);
    }

    /// Queues a response (`from_task`: it answers a pending query) and writes what it can.
    pub(super) fn deliver(&mut self, id: usize, msg: &[u8], from_task: bool) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if from_task {
            c.pending = c.pending.saturating_sub(1);
        }
        // A response never exceeds 65535 octets (respond.rs caps it); guard anyway.
        let Ok(len) = u16::try_from(msg.len()) else { return };
        if c.backlog() + 2 + msg.len() > MAX_WBUF_HARD {
            // A client that does not read its answers holds no more memory.
            self.close(id);
            return;
        }
        c.wbuf.extend_from_slice(&len.to_be_bytes());
        c.wbuf.extend_from_slice(msg);
        self.flush(id);
    }

    /// Writes queued output until the socket would block, then re-checks back-pressure.
    pub(super) fn flush(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let mut failed = false;
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    c.wpos += n;
                    c.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.close(id);
            return;
        }
        if c.wpos >= c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        }
        self.after_read(id);
    }

    /// Handing over to a new process: connections with nothing in flight, nothing left to
    /// write and no whole message unread are closed (the write side first: their clients
    /// reconnect, to the new process). True once none is left.
    pub(super) fn wind_down(&mut self) -> bool {
        let done: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.pending == 0 && c.backlog() == 0 && !c.has_frame())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(c) = self.conns.get(&id) {
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
            self.close(id);
        }
        self.conns.is_empty()
    }

    /// Closes connections with nothing in flight that had no whole message nor answer for
    /// longer than the idle timeout (also those whose client stopped reading its answers),
    /// and those whose started message did not complete within the message timeout.
    pub(super) fn sweep_idle(&mut self, now: Instant) {
        let (idle, message) = (self.idle, self.message);
        let doomed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                (c.pending == 0 && now.saturating_duration_since(c.last_active) > idle)
                    || c.partial_since.is_some_and(|t| now.saturating_duration_since(t) > message)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.close(id);
        }
    }
}
