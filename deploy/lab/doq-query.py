#!/usr/bin/env python3
"""deploy/lab/doq-query.py: one DNS query over DoQ (RFC 9250), dig-like output.

  doq-query.py [options] ADDR NAME [TYPE]

Connects to UDP ADDR#853 with ALPN "doq", sends NAME TYPE (default A,
no recursion desired, EDNS with a 1232 buffer) with message ID 0 on a new
bidirectional stream, ends the stream, and prints the reply like dig
(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 0", ";; flags: ...",
the sections, ";; MSG SIZE  rcvd: N") after a first line
";; DoQ: ADDR#PORT, server name NAME, ALPN doq, session resumed: yes|no".

Authentication: --ca FILE (the lab CA, DIR/tls/ca.pem) with --server-name
NAME (checked against the certificate, also sent as SNI); --insecure skips
verification. --session FILE loads a session ticket from FILE if it exists
(to resume) and stores the newest ticket the server sends; run twice with
the same FILE to see "session resumed: yes".

Test modes (RFC 9250 error handling of the server): --message-id N sends a
non-zero ID, --truncate sends a length prefix larger than the message,
--qr sends the query with the QR bit set (NSD drops it, the front then has
no answer to forward), --keepalive adds the edns-tcp-keepalive option.

Exit status: 0 reply received; 2 the server closed the connection or reset
the stream (";; connection closed by the server: error 0x2
(DOQ_PROTOCOL_ERROR) ..." or ";; stream reset by the server: error 0x1
(DOQ_INTERNAL_ERROR)"); 1 anything else (handshake failure, timeout).
Runs with the Python of the lab's virtualenv (aioquic, dnspython).
"""

import argparse
import asyncio
import logging
import os
import pickle
import signal
import ssl
import struct
import sys

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
)

DOQ_ERRORS = {0x0: "DOQ_NO_ERROR", 0x1: "DOQ_INTERNAL_ERROR", 0x2: "DOQ_PROTOCOL_ERROR",
              0x3: "DOQ_REQUEST_CANCELLED", 0x4: "DOQ_EXCESSIVE_LOAD",
              0x5: "DOQ_UNSPECIFIED_ERROR"}


def doq_error(code):
    return "0x%x (%s)" % (code, DOQ_ERRORS.get(code, "?"))


class Failed(Exception):
    def __init__(self, text, status):
        super().__init__(text)
        self.status = status


class DoqClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resumed = None
        self.alpn = None
        self.waiters = {}
        self.buffers = {}
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.resumed = event.session_resumed
            self.alpn = event.alpn_protocol
        elif isinstance(event, StreamDataReceived):
            buf = self.buffers.setdefault(event.stream_id, bytearray())
            buf += event.data
            if event.end_stream:
                self._finish(event.stream_id, bytes(buf), None)
        elif isinstance(event, StreamReset):
            self._finish(event.stream_id, None,
                         Failed(";; stream reset by the server: error %s" % doq_error(event.error_code), 2))
        elif isinstance(event, ConnectionTerminated):
            text = ";; connection closed by the server: error %s" % doq_error(event.error_code)
            if event.frame_type is not None:
                text = ";; connection closed: QUIC transport error 0x%x" % event.error_code
            if event.reason_phrase:
                text += " (%s)" % event.reason_phrase
            self.terminated = text
            for sid in list(self.waiters):
                self._finish(sid, None, Failed(text, 2))

    def _finish(self, sid, data, exc):
        waiter = self.waiters.pop(sid, None)
        if waiter is None or waiter.done():
            return
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(data)

    async def exchange(self, payload):
        sid = self._quic.get_next_available_stream_id()
        waiter = self._loop.create_future()
        self.waiters[sid] = waiter
        self._quic.send_stream_data(sid, payload, end_stream=True)
        self.transmit()
        return await asyncio.shield(waiter)


def build_query(args):
    q = dns.message.make_query(args.name, args.type, use_edns=0, payload=1232,
                               want_dnssec=args.dnssec)
    q.id = args.message_id
    q.flags &= ~dns.flags.RD
    if args.qr:
        q.flags |= dns.flags.QR
    if args.keepalive:
        q.use_edns(0, payload=1232, options=[dns.edns.GenericOption(11, b"")])
    wire = q.to_wire()
    n = len(wire) + (10 if args.truncate else 0)
    return struct.pack("!H", n) + wire


def print_reply(wire):
    r = dns.message.from_wire(wire)
    flags = dns.flags.to_text(r.flags).lower()
    print(";; ->>HEADER<<- opcode: %s, status: %s, id: %d"
          % (dns.opcode.to_text(r.opcode()), dns.rcode.to_text(r.rcode()), r.id))
    print(";; flags: %s; QUERY: %d, ANSWER: %d, AUTHORITY: %d, ADDITIONAL: %d"
          % (flags, len(r.question), sum(len(s) for s in r.answer),
             sum(len(s) for s in r.authority),
             sum(len(s) for s in r.additional) + (1 if r.edns >= 0 else 0)))
    for title, section in (("QUESTION", r.question), ("ANSWER", r.answer),
                           ("AUTHORITY", r.authority), ("ADDITIONAL", r.additional)):
        if not section:
            continue
        print()
        print(";; %s SECTION:" % title)
        for rrset in section:
            if title == "QUESTION":
                print(";%s %s %s" % (rrset.name, dns.rdataclass.to_text(rrset.rdclass),
                                     dns.rdatatype.to_text(rrset.rdtype)))
            else:
                print(rrset.to_text())
    print()
    print(";; MSG SIZE  rcvd: %d" % len(wire))


async def run(args):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["doq"],
                            idle_timeout=args.timeout + 5)
    if args.insecure:
        cfg.verify_mode = ssl.CERT_NONE
    else:
        if not args.ca or not args.server_name:
            raise Failed(";; --ca and --server-name are needed (or --insecure)", 1)
        cfg.load_verify_locations(cafile=args.ca)
    cfg.server_name = args.server_name.rstrip(".") if args.server_name else None
    if args.session and os.path.exists(args.session):
        with open(args.session, "rb") as f:
            cfg.session_ticket = pickle.load(f)

    def save_ticket(ticket):
        if args.session:
            with open(args.session, "wb") as f:
                pickle.dump(ticket, f)

    payload = build_query(args)
    created = []

    def create_protocol(*a, **kw):
        created.append(DoqClientProtocol(*a, **kw))
        return created[-1]

    try:
        async with connect(args.addr, args.port, configuration=cfg,
                           create_protocol=create_protocol,
                           session_ticket_handler=save_ticket,
                           wait_connected=True) as proto:
            await query(args, cfg, proto, payload)
    except ConnectionError as e:
        why = created[0].terminated if created and created[0].terminated else None
        raise Failed(why or ";; DoQ connection to %s#%d failed: %s"
                     % (args.addr, args.port, str(e) or type(e).__name__), 1) from e


async def query(args, cfg, proto, payload):
    print(";; DoQ: %s#%d, server name %s, ALPN %s, session resumed: %s"
          % (args.addr, args.port, cfg.server_name or "-", proto.alpn,
             "yes" if proto.resumed else "no"), flush=True)
    reply = await proto.exchange(payload)
    if len(reply) < 2 or len(reply) != 2 + struct.unpack("!H", reply[:2])[0]:
        raise Failed(";; malformed reply stream (%d octets)" % len(reply), 1)
    print_reply(reply[2:])
    # Give a NewSessionTicket still in flight a moment to arrive.
    if args.session:
        await asyncio.sleep(0.05)
    proto.close(error_code=0)


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    # Errors are reported on stdout below; no library warnings on stderr
    # (aioquic logs TLS failures, asyncio an orphaned connect waiter).
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("addr")
    p.add_argument("name")
    p.add_argument("type", nargs="?", default="A")
    p.add_argument("--port", type=int, default=853)
    p.add_argument("--ca", help="CA file to verify the server certificate")
    p.add_argument("--server-name", help="name to verify and send as SNI")
    p.add_argument("--insecure", action="store_true", help="no certificate verification")
    p.add_argument("--session", help="session ticket file (load, then store)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--dnssec", action="store_true", help="set the DO bit")
    p.add_argument("--message-id", type=int, default=0)
    p.add_argument("--truncate", action="store_true")
    p.add_argument("--qr", action="store_true")
    p.add_argument("--keepalive", action="store_true")
    args = p.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except Failed as e:
        print(str(e))
        sys.exit(e.status)
    except (asyncio.TimeoutError, TimeoutError):
        print(";; no DoQ reply from %s#%d within %.1fs" % (args.addr, args.port, args.timeout))
        sys.exit(1)
    except ssl.SSLError as e:
        print(";; TLS failure: %s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
