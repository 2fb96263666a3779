#!/usr/bin/env python3
"""deploy/lab/deleg-parent.py: a DELEG-aware parent zone for the lab (experimental DELEG,
draft-ietf-deleg; adox issue 12).

    deleg-parent.py --listen ADDR --zone ZONE --zone-file SIGNED --key KEYBASE
                    --deleg FILE [--validity SECONDS]

Serves SIGNED (ZONE signed by ldns-signzone, NSEC) on ADDR port 53, UDP and TCP,
as an authoritative server: answers with their RRSIGs, NODATA and NXDOMAIN with
their NSEC proofs, referrals with the NS RRset, the DS RRset or the NSEC proving
there is none, and glue. For a query with the DE bit (EDNS flag 0x2000), a
referral also carries the child's DELEG RRset from FILE, signed at start with
the zone's key KEYBASE (ldns' .key and .private), as a DS is signed: NSD and
BIND 9.18 treat a DELEG record at a cut as below it (neither signed nor sent).

FILE lines: OWNER TTL key=value ..., keys mandatory, server-ipv4, server-ipv6,
server-name (comma-separated lists), alpn (key65280, SVCB alpn format) and
dohpath (key65281), written in increasing key order as the wire wants.

Runs until killed (the lab's spawn/stop_pidfiles). Prints one line when it
listens.
"""

import argparse
import base64
import ipaddress
import socket
import struct
import sys
import threading
import time

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

DELEG = 61440
DE_FLAG = 0x2000
KEYS = {"mandatory": 0, "server-ipv4": 1, "server-ipv6": 2, "server-name": 3, "alpn": 65280, "dohpath": 65281}
IN = dns.rdataclass.IN


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--zone", required=True)
    p.add_argument("--zone-file", required=True)
    p.add_argument("--key", required=True, help="ldns key base path (without .key/.private)")
    p.add_argument("--deleg", required=True)
    p.add_argument("--validity", type=int, default=30 * 86400)
    return p.parse_args()


def load_key(base, origin):
    """The ZSK's DNSKEY rdata and private key (ECDSA P-256, as the lab signs)."""
    with open(base + ".key") as f:
        line = next(l for l in f if "DNSKEY" in l and not l.lstrip().startswith(";"))
    text = line.split(";")[0].split("DNSKEY", 1)[1]
    dnskey = dns.rdata.from_text(IN, dns.rdatatype.DNSKEY, text, origin=origin)
    fields = {}
    with open(base + ".private") as f:
        for l in f:
            if ":" in l:
                k, v = l.split(":", 1)
                fields[k.strip()] = v.strip()
    if not fields.get("Algorithm", "").startswith("13"):
        sys.exit("deleg-parent: only ECDSAP256SHA256 keys (algorithm 13) are supported")
    scalar = int.from_bytes(base64.b64decode(fields["PrivateKey"]), "big")
    return dnskey, ec.derive_private_key(scalar, ec.SECP256R1())


def deleg_rdata(pairs):
    """The wire RDATA of one DelegInfo from key=value pairs."""
    fields = []
    for pair in pairs:
        k, v = pair.split("=", 1)
        if k not in KEYS:
            sys.exit("deleg-parent: unknown DELEG key %r" % k)
        items = v.split(",")
        if k == "mandatory":
            value = b"".join(struct.pack("!H", KEYS[i]) for i in items)
        elif k == "server-ipv4":
            value = b"".join(ipaddress.IPv4Address(i).packed for i in items)
        elif k == "server-ipv6":
            value = b"".join(ipaddress.IPv6Address(i).packed for i in items)
        elif k == "server-name":
            value = b"".join(dns.name.from_text(i).to_wire() for i in items)
        elif k == "alpn":
            value = b"".join(bytes([len(i)]) + i.encode() for i in items)
        else:
            value = v.encode()
        fields.append((KEYS[k], value))
    fields.sort()
    return b"".join(struct.pack("!HH", k, len(v)) + v for k, v in fields)


def load_deleg(path, origin, dnskey, private, validity):
    """DELEG RRsets by owner, each with its RRSIG RRset."""
    out = {}
    now = int(time.time())
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            owner, ttl, *pairs = line.split()
            name = dns.name.from_text(owner)
            rd = dns.rdata.GenericRdata(IN, DELEG, deleg_rdata(pairs))
            rrset = out.get(name, (None, None))[0] or dns.rrset.RRset(name, IN, DELEG)
            rrset.add(rd, int(ttl))
            out[name] = (rrset, None)
    for name, (rrset, _) in out.items():
        sig = dns.dnssec.sign(rrset, private, origin, dnskey, inception=now - 3600, expiration=now + validity)
        sigs = dns.rrset.RRset(name, IN, dns.rdatatype.RRSIG, DELEG)
        sigs.add(sig, rrset.ttl)
        out[name] = (rrset, sigs)
    return out


class Parent:
    def __init__(self, args):
        self.origin = dns.name.from_text(args.zone)
        self.zone = dns.zone.from_file(args.zone_file, origin=self.origin, relativize=False)
        dnskey, private = load_key(args.key, self.origin)
        self.deleg = load_deleg(args.deleg, self.origin, dnskey, private, args.validity)
        self.nsecs = sorted(
            (name, node.get_rdataset(IN, dns.rdatatype.NSEC))
            for name, node in self.zone.nodes.items()
            if node.get_rdataset(IN, dns.rdatatype.NSEC) is not None
        )

    def rrset(self, name, rdtype, covers=dns.rdatatype.NONE):
        node = self.zone.get_node(name)
        rds = node.get_rdataset(IN, rdtype, covers) if node else None
        if rds is None:
            return None
        rrset = dns.rrset.RRset(name, IN, rdtype, covers)
        rrset.update(rds)
        return rrset

    def add(self, section, name, rdtype, dnssec):
        """Adds (name, rdtype) and, for DO queries, its RRSIGs; False if absent."""
        rrset = self.rrset(name, rdtype)
        if rrset is None:
            return False
        section.append(rrset)
        if dnssec and (sigs := self.rrset(name, dns.rdatatype.RRSIG, rdtype)) is not None:
            section.append(sigs)
        return True

    def covering_nsec(self, name):
        """The owner of the NSEC that covers (or matches) name."""
        best = self.nsecs[-1][0]
        for owner, _ in self.nsecs:
            if owner <= name:
                best = owner
        return best

    def cut_above(self, name):
        """The topmost delegation point at or above name (below the apex), if any."""
        rel = name.relativize(self.origin).labels
        for i in range(len(rel) - 1, -1, -1):
            candidate = dns.name.Name(rel[i:] + self.origin.labels)
            if self.rrset(candidate, dns.rdatatype.NS) is not None:
                return candidate
        return None

    def answer(self, query):
        r = dns.message.make_response(query, recursion_available=False)
        dnssec = query.edns >= 0 and bool(query.ednsflags & dns.flags.DO)
        de = query.edns >= 0 and bool(query.ednsflags & DE_FLAG)
        if query.edns >= 0:
            r.use_edns(0, ednsflags=query.ednsflags & dns.flags.DO, payload=1232)
        if len(query.question) != 1:
            r.set_rcode(dns.rcode.FORMERR)
            return r
        q = query.question[0]
        name, rdtype = q.name, q.rdtype
        if not name.is_subdomain(self.origin):
            r.set_rcode(dns.rcode.REFUSED)
            return r
        cut = self.cut_above(name)
        if cut is not None and not (rdtype == dns.rdatatype.DS and name == cut):
            self.add(r.authority, cut, dns.rdatatype.NS, False)
            if not self.add(r.authority, cut, dns.rdatatype.DS, dnssec) and dnssec:
                self.add(r.authority, cut, dns.rdatatype.NSEC, True)
            if de and cut in self.deleg:
                rrset, sigs = self.deleg[cut]
                r.authority.append(rrset)
                if dnssec:
                    r.authority.append(sigs)
            for ns in self.rrset(cut, dns.rdatatype.NS):
                if ns.target.is_subdomain(self.origin):
                    for t in (dns.rdatatype.A, dns.rdatatype.AAAA):
                        self.add(r.additional, ns.target, t, False)
            return r
        r.flags |= dns.flags.AA
        if self.zone.get_node(name) is not None:
            if self.add(r.answer, name, rdtype, dnssec):
                return r
            self.add(r.authority, self.origin, dns.rdatatype.SOA, dnssec)
            if dnssec:
                self.add(r.authority, name, dns.rdatatype.NSEC, True)
            return r
        r.set_rcode(dns.rcode.NXDOMAIN)
        self.add(r.authority, self.origin, dns.rdatatype.SOA, dnssec)
        if dnssec:
            # The NSEC covering the name and the one covering the wildcard at its closest
            # encloser (the apex or an existing ancestor).
            encloser = name.parent()
            while self.zone.get_node(encloser) is None and encloser != self.origin:
                encloser = encloser.parent()
            owners = {self.covering_nsec(name), self.covering_nsec(dns.name.Name((b"*",) + encloser.labels))}
            for owner in sorted(owners):
                self.add(r.authority, owner, dns.rdatatype.NSEC, True)
        return r

    def reply(self, data, limit):
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
        try:
            response = self.answer(query)
        except Exception as e:  # noqa: BLE001 - a lab server must keep serving
            print("deleg-parent: error answering: %r" % e, file=sys.stderr, flush=True)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire(max_size=limit)


def serve_udp(parent, sock):
    while True:
        data, peer = sock.recvfrom(65535)
        out = parent.reply(data, 1232)
        if out is not None:
            sock.sendto(out, peer)


def serve_tcp_conn(parent, conn):
    with conn:
        conn.settimeout(10)
        try:
            while True:
                head = conn.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                data = conn.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                out = parent.reply(data, 65535)
                if out is None:
                    return
                conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            return


def serve_tcp(parent, listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_tcp_conn, args=(parent, conn), daemon=True).start()


def main():
    args = parse_args()
    parent = Parent(args)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.listen, 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((args.listen, 53))
    tcp.listen(64)
    threading.Thread(target=serve_tcp, args=(parent, tcp), daemon=True).start()
    print("deleg-parent: listening on %s#53 for %s (%d DELEG RRsets)" % (args.listen, parent.origin, len(parent.deleg)),
          flush=True)
    serve_udp(parent, udp)


if __name__ == "__main__":
    main()
