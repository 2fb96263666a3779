//! Client TCP connections of one worker (RFC 7766): length-prefixed messages, pipelining
//! with answers sent in completion order, a cap on queries in flight per connection (read
//! back-pressure), a cap on connections, and an idle timeout.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Unparsed input kept per connection at most: two maximal messages.
const MAX_RBUF: usize = 2 * (2 + 65_535);

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    pending: usize,
    last_active: Instant,
    read_closed: bool,
    paused: bool,
}

/// All client connections of a worker.
#[derive(Debug)]
pub(super) struct TcpClients {
    registry: Registry,
    token_base: usize,
    max_conns: usize,
    max_pipelined: usize,
    idle: Duration,
    conns: HashMap<usize, Conn>,
    next_id: usize,
    /// Connections paused by the pipelining cap that may read again.
    pub(super) resume: Vec<usize>,
}

impl TcpClients {
    pub(super) fn new(
        registry: Registry,
        token_base: usize,
        max_conns: usize,
        max_pipelined: usize,
        idle: Duration,
    ) -> Self {
        Self {
            registry,
            token_base,
            max_conns,
            max_pipelined,
            idle,
            conns: HashMap::new(),
            next_id: 0,
            resume: Vec::new(),
        }
    }

    /// Takes a new connection; false (and closed) when the cap is reached.
    pub(super) fn add(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) -> bool {
        if self.conns.len() >= self.max_conns {
            return false;
        }
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % (1 << 30);
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
            paused: false,
        };
        self.conns.insert(id, conn);
        true
    }

    fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.registry.deregister(&mut c.stream);
        }
    }

    /// Reads what is available and returns the complete messages that may start now
    /// (pending + returned never exceeds the pipelining cap).
    pub(super) fn read(&mut self, id: usize, now: Instant) -> Option<(SocketAddr, Vec<Vec<u8>>)> {
        let max_pipelined = self.max_pipelined;
        let c = self.conns.get_mut(&id)?;
        let mut chunk = [0u8; 4096];
        let mut failed = false;
        while !c.read_closed && c.rbuf.len() < MAX_RBUF {
            match c.stream.read(&mut chunk) {
                Ok(0) => c.read_closed = true,
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    c.last_active = now;
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
            return None;
        }
        let mut out = Vec::new();
        let mut at = 0;
        while c.pending + out.len() < max_pipelined && c.rbuf.len() >= at + 2 {
            let len = usize::from(u16::from_be_bytes([c.rbuf[at], c.rbuf[at + 1]]));
            if c.rbuf.len() < at + 2 + len {
                break;
            }
            out.push(c.rbuf[at + 2..at + 2 + len].to_vec());
            at += 2 + len;
        }
        c.rbuf.drain(..at);
        // Paused: either the cap is reached with a whole message waiting, or the buffer is
        // full; more is read once answers leave.
        c.paused = c.pending + out.len() >= max_pipelined || c.rbuf.len() >= MAX_RBUF;
        Some((c.peer, out))
    }

    /// A message of this connection went to the resolver.
    pub(super) fn note_pending(&mut self, id: usize) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.pending += 1;
        }
    }

    /// Closes a connection whose peer finished sending once everything is answered.
    pub(super) fn after_read(&mut self, id: usize) {
        if let Some(c) = self.conns.get(&id)
            && c.read_closed
            && c.pending == 0
            && c.wpos >= c.wbuf.len()
            && c.rbuf.len() < 2
        {
            self.close(id);
        }
    }

    /// Queues a response (`from_task`: it answers a pending query) and writes what it can.
    pub(super) fn deliver(&mut self, id: usize, msg: &[u8], from_task: bool) {
        let max_pipelined = self.max_pipelined;
        let Some(c) = self.conns.get_mut(&id) else { return };
        if from_task {
            c.pending = c.pending.saturating_sub(1);
        }
        let Ok(len) = u16::try_from(msg.len()) else { return };
        c.wbuf.extend_from_slice(&len.to_be_bytes());
        c.wbuf.extend_from_slice(msg);
        if c.paused && c.pending < max_pipelined {
            c.paused = false;
            self.resume.push(id);
        }
        self.flush(id);
        self.after_read(id);
    }

    /// Writes queued output until the socket would block.
    pub(super) fn flush(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let mut failed = false;
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => c.wpos += n,
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
    }

    /// Closes connections idle longer than the timeout with nothing in flight.
    pub(super) fn sweep_idle(&mut self, now: Instant) {
        let idle = self.idle;
        let doomed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.pending == 0 && now.saturating_duration_since(c.last_active) > idle)
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.close(id);
        }
    }
}
