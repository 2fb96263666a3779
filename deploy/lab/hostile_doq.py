"""deploy/lab/hostile_doq.py: the DNS-over-QUIC side of hostile.py's QUIC modes.

A DoQ server (aioquic, ALPN "doq", TLS 1.3) on UDP ADDRESS#853 whose
certificate for ns1.ZONE it mints itself at start from the lab CA
($ADOX_LAB_DIR/tls/ca.key), so a client trusting the lab CA authenticates it
(PKIX). It answers no query; instead it floods the client as its mode says,
ignoring the limits the client set in its transport parameters (which
aioquic would otherwise respect, so they are overridden here):

  doqstreams  after the handshake, opens 1,000 bidirectional and 1,000
              unidirectional streams toward the client with 1,200 octets
              each (a DoQ client allows the server to open none)
  doqbloat    answers every query stream with 1 MiB and no FIN, past the
              client's stream and connection flow-control windows

A correct QUIC client closes the connection at the first frame over a limit
(STREAM_LIMIT_ERROR, FLOW_CONTROL_ERROR) and holds nothing for the rest.
"""

import asyncio
import datetime
import os
import threading

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import stream_is_client_initiated, stream_is_unidirectional
from aioquic.quic.events import HandshakeCompleted, StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FLOOD_STREAMS = 1000
STREAM_OCTETS = 1200
BLOAT_OCTETS = 1 << 20
UNLIMITED = 1 << 40


def mint_certificate(lab_dir, name):
    """(certificate, key) for DNS name `name`, signed by the lab CA."""
    with open(os.path.join(lab_dir, "tls", "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    with open(os.path.join(lab_dir, "tls", "ca.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def unlimited(quic):
    """Makes aioquic ignore the client's stream-count and connection flow-control
    limits (a hostile server's first step)."""
    quic._remote_max_streams_bidi = UNLIMITED
    quic._remote_max_streams_uni = UNLIMITED
    quic._remote_max_data = UNLIMITED


class Flood(QuicConnectionProtocol):
    mode = None

    def quic_event_received(self, event):
        quic = self._quic
        if isinstance(event, HandshakeCompleted) and self.mode == "doqstreams":
            unlimited(quic)
            for _ in range(FLOOD_STREAMS):
                for uni in (False, True):
                    sid = quic.get_next_available_stream_id(is_unidirectional=uni)
                    quic.send_stream_data(sid, os.urandom(STREAM_OCTETS))
            self.transmit()
        elif isinstance(event, StreamDataReceived) and self.mode == "doqbloat":
            sid = event.stream_id
            if not stream_is_client_initiated(sid) or stream_is_unidirectional(sid) or not event.end_stream:
                return
            unlimited(quic)
            quic._streams[sid].max_stream_data_remote = UNLIMITED
            # A length prefix that promises the largest message, then far more.
            quic.send_stream_data(sid, b"\xff\xff" + os.urandom(BLOAT_OCTETS))
            self.transmit()


def start(mode, zone_origin, address, lab_dir):
    """Serves DoQ on address#853 in a thread of its own; returns once it listens."""
    name = "ns1." + zone_origin.rstrip(".")
    cert, key = mint_certificate(lab_dir, name)
    config = QuicConfiguration(is_client=False, alpn_protocols=["doq"])
    config.certificate = cert
    config.private_key = key
    Flood.mode = mode
    listening = threading.Event()

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve(address, 853, configuration=config, create_protocol=Flood))
        listening.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    if not listening.wait(10):
        raise RuntimeError("the DoQ side did not start")
