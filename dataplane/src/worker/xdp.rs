//! A worker's AF_XDP queue (the `xdp` feature): queries read from the socket's RX ring go
//! through the same [`WorkerCtx::handle`] as a UDP socket's; an answer given at once (a
//! packet-cache hit, a refusal) is written into the query's frame and put on the TX ring;
//! anything answered later (a miss) leaves through the worker's UDP socket for the address
//! the query was sent to, like any other answer.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::{Handled, ReplyTo, Worker, WorkerCtx};
use crate::xdp::{Port, frame};

/// RX descriptors taken at a time.
const BATCH: u32 = 64;
/// The largest DNS answer sent in its frame; larger ones go through the socket.
const SAFE_PAYLOAD: usize = 1232;

/// The worker's AF_XDP socket and what it needs to answer through the UDP sockets.
#[derive(Debug)]
pub(super) struct XdpQueue {
    port: Port,
    /// The interface's MAC address: a frame for another is not ours (the kernel would drop
    /// it as PACKET_OTHERHOST).
    mac: [u8; 6],
    /// The interface's MTU: a larger answer leaves through the socket (the kernel may
    /// fragment it there).
    mtu: usize,
    /// The UDP listeners' addresses by slot, for the answers that leave through them.
    slots: Vec<Option<SocketAddr>>,
    /// The read budget ran out before the RX ring was empty: read again next turn.
    pub more: bool,
}

impl XdpQueue {
    pub(super) fn new(port: Port, registry: &Registry) -> io::Result<Self> {
        registry.register(&mut SourceFd(&port.fd()), Token(super::XDP_TOKEN), Interest::READABLE)?;
        let (mac, mtu) = (port.link.mac, port.link.mtu);
        Ok(Self { port, mac, mtu, slots: Vec::new(), more: false })
    }

    /// Sends what the TX ring holds and takes back finished frames (the periodic sweep's
    /// safety net: nothing is left waiting for the next query to arrive).
    /// True when the kernel took frames from the TX ring (so more may follow at once).
    pub(super) fn flush(&mut self) -> bool {
        let progress = match self.port.flush() {
            Ok(progress) => progress,
            Err(e) => {
                crate::rate_limited!(warn, error = %e, queue = self.port.queue, "AF_XDP socket cannot send");
                false
            }
        };
        self.port.wake_fill();
        progress
    }

    /// The kernel's count of datagrams it redirected here but dropped.
    pub(super) fn dropped(&self) -> u64 {
        self.port.dropped()
    }

    /// Learns the UDP listeners' addresses again (at start, and after a reload changed them).
    pub(super) fn learn_slots(&mut self, ctx: &WorkerCtx) {
        self.slots = ctx.udp.borrow().iter().map(|s| s.as_ref().and_then(|s| s.local_addr().ok())).collect();
    }
}

/// The listener for a datagram sent to `local`: the one bound to it, or a wildcard listener
/// of its family on its port.
fn slot_for(slots: &[Option<SocketAddr>], local: SocketAddr) -> Option<usize> {
    let addrs = || slots.iter().enumerate().filter_map(|(i, a)| a.map(|a| (i, a)));
    // Address and port, not an IPv6 socket address's scope id (a frame has none).
    addrs()
        .find(|(_, a)| a.ip() == local.ip() && a.port() == local.port())
        .or_else(|| {
            addrs().find(|(_, a)| a.ip().is_unspecified() && a.port() == local.port() && a.is_ipv4() == local.is_ipv4())
        })
        .map(|(i, _)| i)
}

impl Worker {
    /// Reads the AF_XDP socket's RX ring, up to `server.udp_batch` frames per turn, and
    /// answers what it can in place.
    pub(super) fn read_xdp(&mut self, out: &mut Vec<u8>) {
        let ctx = self.ctx.clone();
        let Some(q) = self.xdp.as_mut() else { return };
        q.port.complete();
        ctx.overloaded.set(self.load.overloaded(ctx.reactor.now(), ctx.settings.overload_after));
        ctx.shedding.set(ctx.overloaded.get());
        q.more = true;
        let mut handled = 0;
        while handled < ctx.settings.udp_batch {
            let want = BATCH.min(u32::try_from(ctx.settings.udp_batch - handled).unwrap_or(BATCH));
            let (first, n) = q.port.peek_rx(want);
            for i in 0..n {
                let (addr, len) = q.port.received(first.wrapping_add(i));
                answer_frame(&ctx, q, addr, len, out);
            }
            q.port.release_rx(n);
            handled += n as usize;
            // Only an empty peek means an empty ring: a short one may have been the entries
            // seen at the last look, with more arrived since (their wake-up already taken).
            if n == 0 {
                q.more = false;
                break;
            }
        }
        ctx.shedding.set(false);
        // Answers the kernel has not taken yet, while it is taking them: the next turn
        // sends more without waiting. A TX ring that does not move (a link down, a stopped
        // queue) is left to the sweep, not spun on.
        if q.flush() && q.port.tx_pending() {
            q.more = true;
        }
    }
}

/// Handles the frame at `addr` (`len` octets) and gives it back: to the TX ring with the
/// answer in it, or to the fill ring.
fn answer_frame(ctx: &Rc<WorkerCtx>, q: &mut XdpQueue, addr: u64, len: u32, out: &mut Vec<u8>) {
    let Some(buf) = q.port.frame(addr) else { return };
    let len = (len as usize).min(buf.len());
    // For our MAC address (the program checks it too), from a unicast one: an answer to a
    // broadcast or multicast source address would go to every host of the segment.
    if len < 12 || buf[..6] != q.mac || buf[6] & 1 != 0 || buf[6..12] == [0; 6] {
        ctx.stats.dropped.bump();
        q.port.refill(addr);
        return;
    }
    let Some(d) = frame::parse(&buf[..len]) else {
        ctx.stats.dropped.bump();
        q.port.refill(addr);
        return;
    };
    ctx.stats.queries_udp.bump();
    let Some(listener) = slot_for(&q.slots, d.local) else {
        // Redirected for an address no listener has any more (a reload removed it).
        ctx.stats.dropped.bump();
        q.port.refill(addr);
        return;
    };
    let reply_to = ReplyTo::Udp { listener, peer: d.peer };
    if ctx.handle(d.payload(buf), d.peer, reply_to, out) == Handled::Reply {
        // Within the link's MTU; and not past 1,232 octets of DNS (RFC 9715's safe size):
        // the frame goes out with DF and no path MTU is learnt here, where the socket
        // path would fragment a larger answer.
        let room = buf.len().min(q.mtu + 14).min(d.payload_at + SAFE_PAYLOAD);
        if let Some(n) = frame::answer_in_place(&mut buf[..room], &d, out)
            && q.port.send(addr, n as u32)
        {
            ctx.stats.count_rcode(out);
            ctx.stats.xdp_answered.bump();
            return;
        }
        // Larger than a frame, or the TX ring is full: the socket sends it.
        ctx.send(reply_to, out);
    }
    q.port.refill(addr);
}
