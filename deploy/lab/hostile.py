#!/usr/bin/env python3
"""deploy/lab/hostile.py: authoritative servers that misbehave, for the fault matrix.

    hostile.py MODE ZONE ADDRESS [NS=ADDR,...]

Serves ZONE (delegated from lab. to ns1.ZONE at ADDRESS) on ADDRESS port 53
(UDP and TCP), port 853 (TCP, for the TLS modes; UDP for the DoQ modes) and port
443 (TCP, for the DoH modes), misbehaving as MODE says.
The zone's NS RRset is the last argument's names (default ns1=ADDRESS), as the
delegation in lab. has them.
Run by the lab tests (deploy/adoxd/tests/lab/faults.rs) with the lab's Python
(dnspython); it runs until its standard input closes. No real server behaves like this on purpose,
but the internet has all of them:

  good        a correct server: SOA and NS at the apex, A 192.0.2.99 for
              every other name, NODATA for other types
  silent      reads every query, answers none (UDP and TCP)
  slow        answers correctly, each answer 2 s late
  wrongid     answers with another message ID (a spoofing attempt's shape)
  truncate    UDP: TC=1 and nothing else; TCP: the connection is closed
              without an answer. A resolver can never get the data.
  tlsreset    Do53 correct; TCP 853 accepts and resets at once
  tlsstall    Do53 correct; TCP 853 accepts, reads the ClientHello and
              never answers it
  giant       every name under ZONE exists, with the largest RRset of the
              asked type that fits one message (over UDP: TC=1): TXT of
              single-octet strings, NULL / OPENPGPKEY / unknown types of
              64 KB, thousands of A/AAAA/MX/NS/SRV/NAPTR records, and so on
  doqstreams  Do53 correct; UDP 853 speaks DoQ (certificate for ns1.ZONE
              from the lab CA) and floods every client with streams it may
              not open (hostile_doq.py)
  doqbloat    Do53 correct; UDP 853 speaks DoQ and answers every query
              stream with 1 MiB past the client's flow-control windows
  dohbloat    Do53 correct; TCP 443 speaks DoH over HTTP/2 (certificate for
              ns1.ZONE from the lab CA) and answers every request with 1 MiB
              of DATA past the client's flow-control windows (hostile_doh.py)
  dohheaders  Do53 correct; DoH on TCP 443 answers every request with a
              header block of 1 MiB (HEADERS and CONTINUATION frames)
  dohsilent   Do53 correct; DoH on TCP 443 completes TLS and the HTTP/2
              preface and never answers a request
  dohgoaway   Do53 and DoH correct, but each DoH connection takes 3 requests,
              then GOAWAY (NO_ERROR) leaves the later streams unanswered
  noedns      a server from before EDNS: FORMERR without an OPT record to any
              query with one; correct answers to queries without
  lag         correct answers, each 300 ms late (under the resolver's first
              retransmission timeout: slow, never lost)
  recursor    as good, for queries with RD set only (as a recursive server a
              forward zone points at); REFUSED without RD
  dropbig     correct, but a UDP answer over 512 octets is never sent (as
              when a path drops fragments); TCP answers everything. TXT at
              big.ZONE is about 800 octets.
  badcookie   a server that insists on DNS cookies (RFC 7873): a UDP query
              with a client cookie but not its server cookie (16 octets,
              fixed) gets BADCOOKIE with that server cookie; with it, the
              answer (and the cookie). TCP and cookie-less queries: answered.
  wrongcookie correct answers, but over UDP its COOKIE option echoes a client
              cookie other than the one asked with (a forged or broken reply);
              TCP answers correctly
  dropcookie  correct answers; over UDP a query with a client cookie alone
              gets a server cookie, one that returns it gets an answer with no
              COOKIE option (the shape of a forged reply, or of a server that
              stopped cookies); TCP answers carry no cookie
"""

import argparse
import os
import random
import socket
import struct
import sys
import threading
import time

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

MAX_MESSAGE = 65535


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["good", "silent", "slow", "wrongid", "truncate", "tlsreset", "tlsstall", "giant",
                                      "doqstreams", "doqbloat", "dohbloat", "dohheaders", "dohsilent", "dohgoaway",
                                      "noedns", "dropbig", "recursor", "lag", "badcookie", "wrongcookie",
                                      "dropcookie"])
    p.add_argument("zone")
    p.add_argument("address")
    p.add_argument("nameservers", nargs="?", help="NS=ADDR,... (default ns1=ADDRESS)")
    return p.parse_args()


class Zone:
    def __init__(self, origin, address, nameservers):
        self.origin = dns.name.from_text(origin)
        pairs = [x.split("=") for x in (nameservers or "ns1=" + address).split(",")]
        self.nameservers = {dns.name.from_text(n, self.origin): a for n, a in pairs}

    def soa(self):
        return dns.rrset.from_text(self.origin, 300, "IN", "SOA",
                                   "ns1.%s hostmaster.%s 1 3600 600 86400 300" % (self.origin, self.origin))

    def answer(self, query, giant):
        """The correct (or, for giant, the largest) answer to a parsed query."""
        r = dns.message.make_response(query, recursion_available=False)
        r.flags |= dns.flags.AA
        if query.edns >= 0:
            r.use_edns(0, payload=1232)
        q = query.question[0]
        name, rdtype = q.name, q.rdtype
        if not name.is_subdomain(self.origin):
            r.set_rcode(dns.rcode.REFUSED)
            r.flags &= ~dns.flags.AA
            return r
        if name == self.origin and rdtype == dns.rdatatype.SOA:
            r.answer.append(self.soa())
        elif name == self.origin and rdtype == dns.rdatatype.NS:
            r.answer.append(dns.rrset.from_text_list(self.origin, 300, "IN", "NS", [str(n) for n in self.nameservers]))
        elif name in self.nameservers and rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", self.nameservers[name]))
        elif giant and name != self.origin and name not in self.nameservers and len(rrset := giant_rrset(name, rdtype)):
            r.answer.append(rrset)
        elif rdtype == dns.rdatatype.TXT and name == dns.name.from_text("big", self.origin):
            r.answer.append(dns.rrset.from_text_list(name, 300, "IN", "TXT",
                                                     ['"%s"' % (chr(97 + i) * 250) for i in range(3)]))
        elif rdtype == dns.rdatatype.A and name != self.origin:
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.99"))
        else:
            r.authority.append(self.soa())
        return r


def giant_rrset(name, rdtype):
    """The largest RRset of rdtype at name that fits a 64 KB message, every
    record different (so nothing is deduplicated) and as heap-hungry as the
    type allows for a parser."""
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    rrset.ttl = 3600
    budget = MAX_MESSAGE - 600  # header, question, the owner name's first copy

    def add_many(make, size):
        for i in range(budget // size):
            rrset.add(make(i))

    t = rdtype
    text = lambda s: dns.rdata.from_text("IN", t, s)
    if t == dns.rdatatype.A:
        add_many(lambda i: text("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)), 16)
    elif t == dns.rdatatype.AAAA:
        add_many(lambda i: text("2001:db8::%x" % i), 28)
    elif t == dns.rdatatype.TXT:
        # One record of 255-octet strings would be one allocation per string:
        # single-octet strings are the costliest per wire octet.
        for i in range(budget // 300):
            rrset.add(text(" ".join('"%s"' % chr(97 + (i + j) % 26) for j in range(120)) + ' "%d"' % i))
    elif t in (dns.rdatatype.MX, dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.PTR):
        if t == dns.rdatatype.CNAME:
            rrset.add(text("x" * 60 + "." + "y" * 60 + ".example."))
        elif t == dns.rdatatype.MX:
            add_many(lambda i: text("%d %s.a.b.c.d.e.f.g.h.example." % (i, "m%d" % i)), 60)
        else:
            add_many(lambda i: text("%s.a.b.c.d.e.f.g.h.example." % ("n%d" % i)), 60)
    elif t == dns.rdatatype.SRV:
        add_many(lambda i: text("1 %d 443 s%d.a.b.c.d.example." % (i, i)), 60)
    elif t == dns.rdatatype.NAPTR:
        add_many(lambda i: text('%d 10 "u" "E2U+sip" "!^.*$!sip:%d@x!" .' % (i, i)), 60)
    elif t == dns.rdatatype.HINFO:
        add_many(lambda i: text('"%d" ""' % i), 40)
    elif t == dns.rdatatype.CAA:
        add_many(lambda i: text('0 issue "ca%d.example"' % i), 50)
    elif t == dns.rdatatype.SSHFP:
        for i in range(2):
            blob = bytes([1, i + 1]) + os.urandom(budget // 2 - 100)
            rrset.add(dns.rdata.from_text("IN", t, "\\# %d %s" % (len(blob), blob.hex())))
    elif t in (dns.rdatatype.NULL, dns.rdatatype.OPENPGPKEY) or is_unknown(t):
        # Opaque data as big as a message allows (RFC 3597 form).
        rrset.add(dns.rdata.from_text("IN", t, "\\# %d %s" % (budget - 100, os.urandom(budget - 100).hex())))
    # Other types (SVCB, TLSA, DNSKEY ...): no data, the answer is NODATA.
    return rrset


def is_unknown(rdtype):
    return dns.rdata.get_rdata_class(dns.rdataclass.IN, rdtype) is dns.rdata.GenericRdata


def to_wire(msg, limit):
    try:
        return msg.to_wire(max_size=limit)
    except dns.exception.TooBig:
        msg.answer = []
        msg.authority = []
        msg.flags |= dns.flags.TC
        return msg.to_wire()


# The server cookie of the cookie modes.
SERVER_COOKIE = b"adox-lab-cookie!"


def reply_for(mode, zone, data, over_tcp):
    """The bytes to send back for one query, or None for none."""
    try:
        query = dns.message.from_wire(data)
    except Exception:
        return None
    if mode in ("silent",) or not query.question:
        return None
    q = query.question[0]
    giant_name = q.name.is_subdomain(zone.origin) and q.name != zone.origin and q.name not in zone.nameservers
    if mode == "truncate" or (mode == "giant" and giant_name and not over_tcp):
        # (giant: nothing it holds fits a datagram, so none is built just to be cut.)
        if over_tcp:
            return None
        r = dns.message.make_response(query)
        r.flags |= dns.flags.TC
        return r.to_wire()
    if mode == "recursor" and not query.flags & dns.flags.RD:
        r = dns.message.make_response(query)
        r.set_rcode(dns.rcode.REFUSED)
        return r.to_wire()
    if mode == "dropcookie":
        cookie = next((o for o in query.options if o.otype == dns.edns.OptionType.COOKIE), None)
        r = zone.answer(query, giant=False)
        if cookie is not None and not cookie.server and not over_tcp:
            r.use_edns(0, options=[dns.edns.CookieOption(cookie.client, SERVER_COOKIE)])
        return r.to_wire()
    if mode in ("badcookie", "wrongcookie") and not over_tcp:
        cookie = next((o for o in query.options if o.otype == dns.edns.OptionType.COOKIE), None)
        if cookie is not None:
            bad = mode == "badcookie" and cookie.server != SERVER_COOKIE
            r = dns.message.make_response(query) if bad else zone.answer(query, giant=False)
            client = bytes(b ^ 0xFF for b in cookie.client) if mode == "wrongcookie" else cookie.client
            r.use_edns(0, options=[dns.edns.CookieOption(client, SERVER_COOKIE)])
            if bad:
                # After use_edns, which would clear the extended RCODE bits.
                r.set_rcode(dns.rcode.BADCOOKIE)
            return r.to_wire()
    if mode == "noedns" and query.edns >= 0:
        r = dns.message.make_response(query)
        r.use_edns(-1)
        r.set_rcode(dns.rcode.FORMERR)
        return r.to_wire()
    r = zone.answer(query, giant=(mode == "giant"))
    if mode == "dropbig" and not over_tcp:
        out = to_wire(r, MAX_MESSAGE)
        return out if len(out) <= 512 else None
    if mode == "slow":
        time.sleep(2)
    if mode == "lag":
        time.sleep(0.3)
    if mode == "wrongid":
        r.id = (query.id + 1 + random.randrange(0xFFFE)) % 0x10000
    limit = MAX_MESSAGE if over_tcp else max(512, query.payload if query.edns >= 0 else 512)
    return to_wire(r, limit)


def serve_udp(mode, zone, sock):
    while True:
        data, peer = sock.recvfrom(65535)
        if mode in ("slow", "lag"):
            threading.Thread(target=lambda d=data, p=peer: send_udp(sock, mode, zone, d, p), daemon=True).start()
        else:
            send_udp(sock, mode, zone, data, peer)


def send_udp(sock, mode, zone, data, peer):
    try:
        out = reply_for(mode, zone, data, over_tcp=False)
        if out is not None:
            sock.sendto(out, peer)
    except Exception as e:  # one bad query never stops the server
        print("hostile: %r" % e, file=sys.stderr)


def serve_tcp_conn(mode, zone, conn):
    with conn:
        conn.settimeout(60)
        try:
            while True:
                head = read_exact(conn, 2)
                if head is None:
                    return
                data = read_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                out = reply_for(mode, zone, data, over_tcp=True)
                if out is None:
                    if mode == "silent":
                        continue
                    return  # truncate: close without an answer
                conn.sendall(struct.pack("!H", len(out)) + out)
        except Exception as e:
            print("hostile: %r" % e, file=sys.stderr)
            return


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_tcp(mode, zone, listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_tcp_conn, args=(mode, zone, conn), daemon=True).start()


def serve_tls_port(mode, listener):
    held = []
    while True:
        conn, _ = listener.accept()
        if mode == "tlsreset":
            # SO_LINGER 0: close() sends RST.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            conn.recv(4096)  # the ClientHello, never answered
            held.append(conn)
            del held[:-256]


def listener(address, port, kind):
    s = socket.socket(socket.AF_INET, kind)
    if kind == socket.SOCK_STREAM:
        # TCP only: on UDP it would let a leftover instance share the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    return s


def main():
    args = parse_args()
    zone = Zone(args.zone, args.address, args.nameservers)
    udp = listener(args.address, 53, socket.SOCK_DGRAM)
    tcp = listener(args.address, 53, socket.SOCK_STREAM)
    threads = [
        threading.Thread(target=serve_udp, args=(args.mode, zone, udp), daemon=True),
        threading.Thread(target=serve_tcp, args=(args.mode, zone, tcp), daemon=True),
    ]
    if args.mode in ("tlsreset", "tlsstall"):
        tls = listener(args.address, 853, socket.SOCK_STREAM)
        threads.append(threading.Thread(target=serve_tls_port, args=(args.mode, tls), daemon=True))
    for t in threads:
        t.start()
    if args.mode.startswith("doq"):
        import hostile_doq  # aioquic: only the QUIC modes need it

        hostile_doq.start(args.mode, args.zone, args.address, os.environ.get("ADOX_LAB_DIR", "/tmp/adox-lab"))
    if args.mode.startswith("doh"):
        import hostile_doh  # needs cryptography (for the certificate), from the lab's venv

        hostile_doh.start(
            args.mode,
            args.zone,
            args.address,
            os.environ.get("ADOX_LAB_DIR", "/tmp/adox-lab"),
            lambda data: reply_for("good", zone, data, True),
        )
    print("ready", flush=True)
    # Runs until its standard input closes: a test that dies takes its server with it.
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
