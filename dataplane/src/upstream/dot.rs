//! DNS over TLS (RFC 7858) as a sans-IO session: TLS 1.3 through rustls, RFC 7766 framing
//! (2-octet length prefix), any number of queries in flight with answers in any order. The
//! worker moves bytes between this and a TCP socket; the session never touches a socket
//! or a clock, so it is tested with in-memory pipes.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use super::error::TransportFailure;

/// One TLS connection's protocol state.
#[derive(Debug)]
pub(crate) struct DotSession {
    tls: ClientConnection,
    plain: Vec<u8>,
    handshake_seen: bool,
}

impl DotSession {
    /// Starts a session; `name` is the SNI and authentication name (an IP address for
    /// opportunistic connections: no SNI is sent for it).
    pub(crate) fn new(config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Self, TransportFailure> {
        let tls = ClientConnection::new(config, name).map_err(|e| super::tls::failure_reason(&e))?;
        Ok(Self { tls, plain: Vec::new(), handshake_seen: false })
    }

    /// Queues one DNS message, framed. Written before the handshake completes, it is held
    /// by rustls and sent as soon as the keys allow.
    pub(crate) fn send(&mut self, msg: &[u8]) -> Result<(), TransportFailure> {
        let len = u16::try_from(msg.len()).map_err(|_| TransportFailure::Framing)?;
        let mut w = self.tls.writer();
        w.write_all(&len.to_be_bytes()).and_then(|_| w.write_all(msg)).map_err(|_| TransportFailure::Framing)
    }

    /// Writes pending TLS records to `wr` until it would block.
    pub(crate) fn write_to(&mut self, wr: &mut dyn Write) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(wr)?;
        }
        Ok(())
    }

    /// Reads TLS records from `rd` until it would block, and decrypts them into the
    /// framing buffer. `Ok(false)`: the peer closed the connection.
    pub(crate) fn read_from(&mut self, rd: &mut dyn Read) -> Result<bool, io::Error> {
        loop {
            match self.tls.read_tls(rd) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // Whatever alert rustls queued goes out with the next write.
                        return Err(io::Error::other(TlsError(super::tls::failure_reason(&e))));
                    }
                    // Taken out at once: rustls refuses to read more records while 16 KiB
                    // of decrypted data wait, and a busy server's pipelined answers exceed
                    // that in one burst.
                    self.drain_plaintext();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the handshake has completed (once true, stays true).
    pub(crate) fn handshake_done(&mut self) -> bool {
        if !self.handshake_seen && !self.tls.is_handshaking() {
            self.handshake_seen = true;
        }
        self.handshake_seen
    }

    /// Whether the completed handshake resumed a session.
    pub(crate) fn resumed(&self) -> bool {
        matches!(self.tls.handshake_kind(), Some(HandshakeKind::Resumed))
    }

    /// Moves decrypted data into the framing buffer.
    fn drain_plaintext(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // UnexpectedEof: the peer closed without close_notify; what came is usable.
                Err(_) => break,
            }
        }
    }

    /// The next complete DNS message received, if any.
    pub(crate) fn next_message(&mut self) -> Result<Option<Vec<u8>>, TransportFailure> {
        self.drain_plaintext();
        take_frame(&mut self.plain)
    }

    /// Sends close_notify (written by the next `write_to`).
    pub(crate) fn close(&mut self) {
        self.tls.send_close_notify();
    }
}

/// Takes the next complete length-prefixed DNS message (RFC 7858 section 3.3, RFC 1035
/// section 4.2.2) from the front of `stream`; `None` until one is complete. A length
/// shorter than a DNS header breaks the framing: the connection cannot be trusted after it.
pub(crate) fn take_frame(stream: &mut Vec<u8>) -> Result<Option<Vec<u8>>, TransportFailure> {
    if stream.len() < 2 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([stream[0], stream[1]]));
    if len < 12 {
        return Err(TransportFailure::Framing);
    }
    if stream.len() < 2 + len {
        return Ok(None);
    }
    let msg = stream[2..2 + len].to_vec();
    stream.drain(..2 + len);
    Ok(Some(msg))
}

/// A TLS failure carried through `io::Error` from `read_from`.
#[derive(Debug)]
pub(crate) struct TlsError(pub TransportFailure);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::error::Error for TlsError {}

/// Adds EDNS(0) padding (RFC 7830) to a query whose last record is an option-less OPT, so
/// the message length is a multiple of 128 octets (RFC 8467 section 4.1).
pub(crate) fn pad_query(msg: &mut Vec<u8>) {
    const BLOCK: usize = 128;
    let n = msg.len();
    // An OPT with no options ends in RDLEN = 0; anything else is left alone.
    if n < 13 || msg[n - 2..] != [0, 0] || msg[n - 11] != 0 || msg[n - 10..n - 8] != [0, 41] {
        return;
    }
    let pad = (BLOCK - (n + 4) % BLOCK) % BLOCK;
    msg.extend_from_slice(&crate::wire::OPT_PADDING.to_be_bytes());
    msg.extend_from_slice(&(pad as u16).to_be_bytes());
    msg.resize(msg.len() + pad, 0);
    let rdlen = (4 + pad) as u16;
    msg[n - 2..n].copy_from_slice(&rdlen.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads what it holds, then "would block" (a socket with nothing more to read).
    struct Pending<'a>(&'a [u8]);

    impl Read for Pending<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// A busy server's pipelined answers arrive as one burst larger than the 16 KiB of
    /// decrypted data rustls holds before it refuses to read more: all of it is read and
    /// framed, and the connection survives (it once failed here with an I/O error, and
    /// every query in flight with it).
    #[test]
    fn a_burst_of_answers_beyond_rustls_plaintext_limit_is_read_whole() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from(include_bytes!("testdata/leaf.der").to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(include_bytes!("testdata/leaf.key.der").to_vec()));
        let mut scfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        scfg.alpn_protocols = vec![b"dot".to_vec()];
        let mut server = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        let configs = super::super::tls::TlsConfigs::new(
            b"dot",
            Arc::new(super::super::tls::builtin_roots()),
            Arc::new(super::super::sessions::SessionStore::new(16)),
            Arc::new(super::super::sessions::SessionStore::new(16)),
            Arc::new(super::super::dane::TlsaTable::default()),
            "tcp",
        )
        .unwrap();
        let name = ServerName::IpAddress(std::net::IpAddr::from([192, 0, 2, 1]).into());
        let mut client = DotSession::new(configs.unauthenticated, name).unwrap();
        let pump = |client: &mut DotSession, server: &mut rustls::ServerConnection| {
            let mut up = Vec::new();
            client.write_to(&mut up).unwrap();
            server.read_tls(&mut &up[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut down = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut down).unwrap();
            }
            assert!(client.read_from(&mut Pending(&down)).unwrap());
        };
        for _ in 0..4 {
            pump(&mut client, &mut server);
        }
        assert!(client.handshake_done());
        // 200 answers of 300 octets: about 60 KiB in one read.
        let mut answer = vec![0u8; 300];
        answer[2] = 0x81;
        let mut down = Vec::new();
        for id in 0..200u16 {
            answer[0..2].copy_from_slice(&id.to_be_bytes());
            server.writer().write_all(&300u16.to_be_bytes()).unwrap();
            server.writer().write_all(&answer).unwrap();
            while server.wants_write() {
                server.write_tls(&mut down).unwrap();
            }
        }
        assert!(down.len() > 60_000);
        assert!(client.read_from(&mut Pending(&down)).unwrap(), "the burst is read without error");
        let mut ids = Vec::new();
        while let Some(msg) = client.next_message().unwrap() {
            ids.push(u16::from_be_bytes([msg[0], msg[1]]));
        }
        assert_eq!(ids, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn padding_makes_a_multiple_of_128() {
        let name = hickory_proto::rr::Name::from_ascii("www.example.").unwrap();
        for t in [hickory_proto::rr::RecordType::A, hickory_proto::rr::RecordType::TXT] {
            let mut m = hickory_proto::op::Message::query();
            m.add_query(hickory_proto::op::Query::query(name.clone(), t));
            m.set_edns(hickory_proto::op::Edns::new());
            let mut q = m.to_vec().unwrap();
            let before = q.len();
            pad_query(&mut q);
            assert_eq!(q.len() % 128, 0, "{before} -> {}", q.len());
            let m = hickory_proto::op::Message::from_vec(&q).unwrap();
            assert!(m.edns.is_some());
        }
        let mut not_opt = vec![0u8; 20];
        pad_query(&mut not_opt);
        assert_eq!(not_opt.len(), 20);
    }
}
