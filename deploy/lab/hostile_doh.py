"""deploy/lab/hostile_doh.py: the DNS-over-HTTPS side of hostile.py's DoH modes.

A TLS 1.3 server (ALPN "h2") on TCP ADDRESS#443 whose certificate for
ns1.ZONE it mints at start from the lab CA (hostile_doq.mint_certificate), so
a client trusting the lab CA authenticates it (PKIX). It speaks just enough
HTTP/2, frame by frame, to misbehave where a library would refuse to:

  dohbloat    answers every request with status 200, a DNS media type and
              1 MiB of DATA, ignoring the client's flow-control windows
  dohheaders  answers every request with a header block of 1 MiB (HEADERS
              and CONTINUATION frames), far past any header list limit
  dohsilent   completes TLS and the HTTP/2 preface, acknowledges SETTINGS,
              and never answers a request
  dohgoaway   a correct server (POST, answers from hostile.py's zone) that
              takes 3 requests per connection, then says GOAWAY (NO_ERROR,
              last stream: the third) and leaves later streams unanswered, as
              servers that limit requests per connection do (nginx's
              keepalive_requests); a client sends those again elsewhere

A correct client refuses the flood at the first frame over its limits
(FLOW_CONTROL_ERROR, a header list over its maximum), closes the
connection, and holds nothing for the rest.
"""

import os
import socket
import ssl
import struct
import tempfile
import threading

from cryptography.hazmat.primitives import serialization

import hostile_doq

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUESTS_PER_CONNECTION = 3
DATA, HEADERS, SETTINGS, GOAWAY, CONTINUATION = 0x0, 0x1, 0x4, 0x7, 0x9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
BLOAT_OCTETS = 1 << 20
HEADER_OCTETS = 1 << 20
FRAME = 16384


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name_index, value):
    """A literal header field without indexing, indexed name (RFC 7541 6.2.2), value
    not Huffman-coded; `value` shorter than 127 octets."""
    assert name_index >= 15 and len(value) < 127
    return bytes([0x0F, name_index - 15, len(value)]) + value


# :status 200 (static index 8), content-type (31): application/dns-message
RESPONSE_HEAD = b"\x88" + hpack_literal(31, b"application/dns-message")


def read_frames(conn):
    """Yields (type, flags, stream id, payload) after the client preface."""
    buf = b""
    while len(buf) < len(PREFACE):
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
    if not buf.startswith(PREFACE):
        return
    buf = buf[len(PREFACE):]
    while True:
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            yield kind, flags, stream, buf[9:9 + length]
            buf = buf[9 + length:]
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk


def answer(mode, conn, stream):
    if mode == "dohsilent":
        return
    if mode == "dohbloat":
        conn.sendall(frame(HEADERS, END_HEADERS, stream, RESPONSE_HEAD))
        for _ in range(BLOAT_OCTETS // FRAME):
            conn.sendall(frame(DATA, 0, stream, b"\0" * FRAME))
        return
    # dohheaders: one HEADERS and CONTINUATION frames of padding headers, never ended.
    block = RESPONSE_HEAD + b"".join(hpack_literal(31, b"x" * 120) for _ in range(HEADER_OCTETS // 123))
    chunks = [block[i:i + FRAME] for i in range(0, len(block), FRAME)]
    conn.sendall(frame(HEADERS, 0, stream, chunks[0]))
    for c in chunks[1:]:
        conn.sendall(frame(CONTINUATION, 0, stream, c))


def serve_goaway(tls, reply, note):
    bodies, taken = {}, 0
    for kind, flags, stream, payload in read_frames(tls):
        if kind == SETTINGS and not flags & ACK:
            tls.sendall(frame(SETTINGS, ACK, 0, b""))
        elif kind == DATA and stream:
            bodies[stream] = bodies.get(stream, b"") + payload
            if flags & END_STREAM and taken < REQUESTS_PER_CONNECTION:
                taken += 1
                query = bodies.pop(stream)
                note(len(query))
                answer_bytes = reply(query) or b""
                tls.sendall(frame(HEADERS, END_HEADERS, stream, RESPONSE_HEAD))
                tls.sendall(frame(DATA, END_STREAM, stream, answer_bytes))
                if taken == REQUESTS_PER_CONNECTION:
                    # GOAWAY: last stream id, NO_ERROR (0).
                    tls.sendall(frame(GOAWAY, 0, 0, struct.pack(">II", stream, 0)))


def serve_conn(mode, tls, reply, note):
    try:
        tls.sendall(frame(SETTINGS, 0, 0, b""))
        if mode == "dohgoaway":
            serve_goaway(tls, reply, note)
            return
        for kind, flags, stream, _payload in read_frames(tls):
            if kind == SETTINGS and not flags & ACK:
                tls.sendall(frame(SETTINGS, ACK, 0, b""))
            elif kind in (HEADERS, DATA) and flags & END_STREAM and stream:
                answer(mode, tls, stream)
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            tls.close()
        except OSError:
            pass


def start(mode, zone_origin, address, lab_dir, reply):
    """Serves DoH in `mode`; `reply(query bytes)` gives a correct answer's bytes."""
    name = "ns1." + zone_origin.rstrip(".")
    cert, key = hostile_doq.mint_certificate(lab_dir, name)
    files = tempfile.TemporaryDirectory(prefix="hostile-doh-")
    cert_path, key_path = files.name + "/cert.pem", files.name + "/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["h2"])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 443))
    listener.listen(128)
    # The size of each query as decrypted here (DoH padding is checked against it).
    log_path = os.path.join(lab_dir, "logs", "hostile-doh-%s.log" % address)
    open(log_path, "w").close()
    log_lock = threading.Lock()

    def note(octets):
        with log_lock, open(log_path, "a") as f:
            f.write("query %d octets\n" % octets)

    def run():
        held = files  # the key files live as long as the server
        while True:
            conn, _ = listener.accept()
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
            threading.Thread(target=serve_conn, args=(mode, tls, reply, note), daemon=True).start()
        del held

    threading.Thread(target=run, daemon=True).start()
