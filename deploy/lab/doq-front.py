#!/usr/bin/env python3
"""deploy/lab/doq-front.py: DNS over QUIC (RFC 9250) in front of a lab server.

Listens on UDP ADDR#PORT (853), speaks QUIC with ALPN "doq" and TLS 1.3
(certificate and key of the lab CA), and forwards every query to the
authoritative server behind it over Do53 (UDP, TCP when the UDP reply is
truncated), from an address of its own (--source), so that captures tell
the two legs apart. Started by `deploy/lab/lab up` with the Python of the
lab's virtualenv (aioquic); see README.md.

RFC 9250 server side:
  - one query per client-initiated bidirectional stream, 2-octet length
    prefix, the client ends the stream (FIN); the reply goes back on the
    same stream with the length prefix, and the stream is ended;
  - DNS message ID 0 on the wire (the Do53 leg uses a random ID, the reply
    gets ID 0 back);
  - protocol errors close the connection with DOQ_PROTOCOL_ERROR (0x2):
    a non-zero message ID, FIN before the whole message, more than one
    message on a stream, a unidirectional stream, a message shorter than a
    DNS header, the edns-tcp-keepalive option;
  - when the server behind does not answer, the stream is reset with
    DOQ_INTERNAL_ERROR (0x1); the connection stays up;
  - a client's RESET_STREAM (DOQ_REQUEST_CANCELLED) cancels the forward;
  - TLS session tickets (single use) so that clients can resume; no 0-RTT.

SO_REUSEPORT steering: NSD opens a UDP socket on every ip-address line,
the DoT one (port 853) included, so NSD and this front would both need UDP
ADDR#853. The front binds first, with SO_REUSEPORT, and attaches a classic
BPF program to the reuseport group that sends every datagram to the
group's first socket, its own; NSD, configured with reuseport (which NSD
only applies when server-count > 1), joins the group afterwards and never
receives a datagram on UDP 853. Start the front before the server.

Log: one line per handshake and per query (--log, default stderr).
"""

import argparse
import asyncio
import ctypes
import errno
import functools
import logging
import random
import signal
import socket
import struct
import sys

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import stream_is_unidirectional
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
)

DOQ_NO_ERROR = 0x0
DOQ_INTERNAL_ERROR = 0x1
DOQ_PROTOCOL_ERROR = 0x2
DOQ_REQUEST_CANCELLED = 0x3

EDNS_TCP_KEEPALIVE = 11
TYPE_OPT = 41
SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
BPF_RET_K = 0x06  # BPF_RET | BPF_K

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
          50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED"}

log = logging.getLogger("doq-front")


class UpstreamError(Exception):
    pass


class ProtocolError(Exception):
    pass


# ------------------------------------------------------------------ DNS bits


def skip_name(msg, off):
    """Offset after the (possibly compressed) name at off; ValueError if bad."""
    for _ in range(128):
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        if n & 0xC0:
            raise ValueError("bad label type")
        off += 1 + n
    raise ValueError("name too long")


def read_name(msg, off):
    """Presentation form of the uncompressed question name at off."""
    labels = []
    while off < len(msg) and msg[off] != 0:
        n = msg[off]
        if n & 0xC0:
            return "?"
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return ".".join(labels) + "."


def describe_query(msg):
    """(qname, qtype, has_edns_tcp_keepalive) of a query; None values when it
    cannot be parsed (the server behind then answers FORMERR)."""
    try:
        qd, an, ns, ar = struct.unpack("!4H", msg[4:12])
        off = 12
        qname, qtype = None, None
        for i in range(qd):
            end = skip_name(msg, off)
            if i == 0:
                qname = read_name(msg, off)
                qtype = struct.unpack("!H", msg[end:end + 2])[0]
            off = end + 4
        for i in range(an + ns + ar):
            off = skip_name(msg, off)
            rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            if rtype == TYPE_OPT and i >= an + ns:
                opt, end = off, off + rdlen
                while opt + 4 <= end:
                    code, olen = struct.unpack("!HH", msg[opt:opt + 4])
                    if code == EDNS_TCP_KEEPALIVE:
                        return qname, qtype, True
                    opt += 4 + olen
            off += rdlen
        return qname, qtype, False
    except (ValueError, struct.error):
        return None, None, False


def type_name(qtype):
    if qtype is None:
        return "?"
    return QTYPES.get(qtype, "TYPE%d" % qtype)


# ------------------------------------------------------------------ upstream


class Upstream:
    """Do53 to the server behind, from the front's own source address."""

    def __init__(self, addr, port, source, tries):
        self.addr, self.port, self.source, self.tries = addr, port, source, tries

    async def query(self, msg):
        """Reply to msg (any ID) with the same ID; UpstreamError if none."""
        qid = random.randrange(1, 0x10000)
        wire = struct.pack("!H", qid) + msg[2:]
        for timeout in self.tries:
            try:
                reply, via = await self._udp(wire, timeout)
            except (asyncio.TimeoutError, OSError) as e:
                log.debug("udp try to %s#%d: %r", self.addr, self.port, e)
                continue
            if reply[2] & 0x02:  # TC: the whole answer over TCP
                try:
                    reply, via = await self._tcp(wire, sum(self.tries))
                except (asyncio.TimeoutError, OSError, ValueError) as e:
                    raise UpstreamError("TCP after TC: %r" % (e,)) from e
            return struct.pack("!H", struct.unpack("!H", msg[:2])[0]) + reply[2:], via
        raise UpstreamError("no answer from %s#%d over UDP (%d tries, %.1fs)"
                            % (self.addr, self.port, len(self.tries), sum(self.tries)))

    def _sock(self, kind):
        sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        sock.bind((self.source, 0))
        return sock

    async def _udp(self, wire, timeout):
        loop = asyncio.get_running_loop()
        sock = self._sock(socket.SOCK_DGRAM)
        try:
            sock.connect((self.addr, self.port))
            via = "udp %s#%d" % sock.getsockname()
            await loop.sock_sendall(sock, wire)
            deadline = loop.time() + timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise asyncio.TimeoutError()
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                if len(data) >= 12 and data[:2] == wire[:2] and data[2] & 0x80:
                    return data, via
        finally:
            sock.close()

    async def _tcp(self, wire, timeout):
        loop = asyncio.get_running_loop()
        sock = self._sock(socket.SOCK_STREAM)

        async def exchange():
            await loop.sock_connect(sock, (self.addr, self.port))
            await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = await loop.sock_recv(sock, 65537)
                if not chunk:
                    raise ValueError("TCP connection closed before the reply")
                buf += chunk
            n = struct.unpack("!H", buf[:2])[0]
            return buf[2:2 + n]

        try:
            via = "tcp %s#%d" % sock.getsockname()
            data = await asyncio.wait_for(exchange(), timeout)
            if len(data) < 12 or data[:2] != wire[:2]:
                raise ValueError("bad TCP reply")
            return data, via
        finally:
            sock.close()


# ------------------------------------------------------------------ QUIC


class TicketStore:
    """Session tickets issued by this front; each one can be used once."""

    def __init__(self, limit=10000):
        self.tickets = {}
        self.limit = limit

    def add(self, ticket):
        if len(self.tickets) >= self.limit:
            self.tickets.pop(next(iter(self.tickets)))
        self.tickets[ticket.ticket] = ticket

    def pop(self, label):
        return self.tickets.pop(label, None)


class DoqServerProtocol(QuicConnectionProtocol):
    counter = 0

    def __init__(self, *args, upstream, **kwargs):
        super().__init__(*args, **kwargs)
        DoqServerProtocol.counter += 1
        self.conn = DoqServerProtocol.counter
        self.upstream = upstream
        self.peer = None
        self.buffers = {}
        self.tasks = {}
        self.failed = False

    def who(self):
        peer = "%s#%d" % self.peer[:2] if self.peer else "?"
        return "conn=%d client=%s" % (self.conn, peer)

    def datagram_received(self, data, addr):
        if self.peer is None:
            self.peer = addr
        super().datagram_received(data, addr)

    def quic_event_received(self, event):
        if self.failed:
            return
        try:
            if isinstance(event, StreamDataReceived):
                self.stream_data(event)
            elif isinstance(event, StreamReset):
                self.buffers.pop(event.stream_id, None)
                task = self.tasks.pop(event.stream_id, None)
                if task is not None:
                    task.cancel()
                log.info("%s stream=%d reset by the client (error 0x%x)",
                         self.who(), event.stream_id, event.error_code)
            elif isinstance(event, HandshakeCompleted):
                log.info("%s handshake alpn=%s resumed=%s", self.who(),
                         event.alpn_protocol, "yes" if event.session_resumed else "no")
            elif isinstance(event, ConnectionTerminated):
                for task in self.tasks.values():
                    task.cancel()
                self.tasks.clear()
                log.info("%s closed (error 0x%x%s)", self.who(), event.error_code,
                         ", %s" % event.reason_phrase if event.reason_phrase else "")
        except ProtocolError as e:
            self.protocol_error(str(e))

    def protocol_error(self, reason):
        log.info("%s protocol error: %s; closing with DOQ_PROTOCOL_ERROR", self.who(), reason)
        self.failed = True
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self._quic.close(error_code=DOQ_PROTOCOL_ERROR, reason_phrase=reason)
        self.transmit()

    def stream_data(self, event):
        sid = event.stream_id
        if stream_is_unidirectional(sid):
            raise ProtocolError("query on unidirectional stream %d" % sid)
        buf = self.buffers.setdefault(sid, bytearray())
        buf += event.data
        need = 2 + struct.unpack("!H", buf[:2])[0] if len(buf) >= 2 else None
        if need is not None and len(buf) > need:
            raise ProtocolError("more than one message on stream %d" % sid)
        if not event.end_stream:
            return
        del self.buffers[sid]
        if need is None or len(buf) < need:
            raise ProtocolError("STREAM FIN before the whole message on stream %d" % sid)
        msg = bytes(buf[2:])
        if len(msg) < 12:
            raise ProtocolError("message of %d octets on stream %d" % (len(msg), sid))
        if msg[:2] != b"\x00\x00":
            raise ProtocolError("DNS message ID %d, not 0, on stream %d"
                                % (struct.unpack("!H", msg[:2])[0], sid))
        qname, qtype, keepalive = describe_query(msg)
        if keepalive:
            raise ProtocolError("edns-tcp-keepalive option on stream %d" % sid)
        self.tasks[sid] = asyncio.ensure_future(self.answer(sid, msg, qname, qtype))

    async def answer(self, sid, msg, qname, qtype):
        what = "%s stream=%d query %s %s (%d octets)" % (self.who(), sid, qname or "?", type_name(qtype), len(msg))
        try:
            reply, via = await self.upstream.query(msg)
        except UpstreamError as e:
            log.info("%s -> %s; resetting the stream with DOQ_INTERNAL_ERROR", what, e)
            self._quic.reset_stream(sid, DOQ_INTERNAL_ERROR)
            self.transmit()
            return
        finally:
            self.tasks.pop(sid, None)
        if self.failed:
            return
        self._quic.send_stream_data(sid, struct.pack("!H", len(reply)) + reply, end_stream=True)
        self.transmit()
        log.info("%s -> %s, %d octets (via %s)", what, RCODES.get(reply[3] & 0x0F, reply[3] & 0x0F),
                 len(reply), via)


def steered_socket(addr, port):
    """UDP socket on addr#port that receives every datagram of its
    SO_REUSEPORT group (see the module docstring)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((addr, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            sys.exit("doq-front: UDP %s#%d is already in use (start the front before the server)"
                     % (addr, port))
        raise
    finally:
        probe.close()

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((addr, port))
    insns = (SockFilter * 1)(SockFilter(BPF_RET_K, 0, 0, 0))  # "return 0": first socket
    prog = SockFprog(1, insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                    ctypes.string_at(ctypes.addressof(prog), ctypes.sizeof(prog)))
    sock.setblocking(False)
    return sock


async def main(args):
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["doq"],
                            idle_timeout=args.idle_timeout)
    cfg.load_cert_chain(args.cert, args.key)
    if args.steer:
        sock = steered_socket(args.listen, args.port)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((args.listen, args.port))
        sock.setblocking(False)
    host, port = args.upstream.rsplit("#", 1) if "#" in args.upstream else (args.upstream, "53")
    upstream = Upstream(host, int(port), args.source, (0.5, 1.0))
    tickets = TicketStore()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: QuicServer(
            configuration=cfg,
            create_protocol=functools.partial(DoqServerProtocol, upstream=upstream),
            session_ticket_fetcher=tickets.pop,
            session_ticket_handler=tickets.add,
        ),
        sock=sock,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s#%d (udp), ALPN doq, forwarding to %s#%s from %s",
             args.listen, args.port, host, port, args.source)
    print("doq-front: listening on %s#%d" % (args.listen, args.port), flush=True)
    await stop.wait()
    log.info("stopping")
    transport.close()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="address to listen on (UDP)")
    p.add_argument("--port", type=int, default=853)
    p.add_argument("--cert", required=True, help="PEM certificate (chain)")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--upstream", required=True, help="server behind: ADDR or ADDR#PORT (53)")
    p.add_argument("--source", required=True, help="source address of the Do53 leg")
    p.add_argument("--idle-timeout", type=float, default=30.0)
    p.add_argument("--no-steer", dest="steer", action="store_false",
                   help="plain bind, no SO_REUSEPORT steering")
    p.add_argument("--log", help="log file (default: stderr)")
    p.add_argument("--debug", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    logging.basicConfig(
        filename=ARGS.log,
        level=logging.DEBUG if ARGS.debug else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    logging.getLogger("quic").setLevel(logging.WARNING)
    asyncio.run(main(ARGS))
