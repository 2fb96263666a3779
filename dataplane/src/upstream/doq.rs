//! DNS over QUIC (RFC 9250) as a sans-IO session: quinn-proto's endpoint and connection
//! for one server, one client-initiated bidirectional stream per query with a 2-octet
//! length prefix and message ID 0 on the wire. The caller feeds it datagrams and `now`,
//! sends what [`DoqSession::poll_transmit`] gives, wakes it at
//! [`DoqSession::poll_timeout`], and reads [`DoqEvent`]s; it owns no socket and reads no
//! clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, Dir, Endpoint, EndpointConfig, Event, StreamEvent, StreamId,
};

use super::UpstreamError;
use super::error::TransportFailure;

/// RFC 9250 section 4.3 error codes.
pub(crate) mod code {
    /// No error: used when closing an idle connection.
    pub(crate) const DOQ_NO_ERROR: u32 = 0x0;
    /// The peer violated the DoQ protocol.
    pub(crate) const DOQ_PROTOCOL_ERROR: u32 = 0x2;
    /// The peer hit an internal error (a stream reset with it).
    pub(crate) const DOQ_INTERNAL_ERROR: u32 = 0x1;
    /// A query was given up: its stream is stopped with this (RFC 9250 section 4.3).
    pub(crate) const DOQ_REQUEST_CANCELLED: u32 = 0x3;
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DoqState {
    /// The QUIC handshake is under way: queries wait to open their stream.
    Handshaking,
    /// Streams may be opened.
    Open,
    /// Closing after [`DoqSession::close`].
    Closing,
    /// Lost, and why.
    Failed(TransportFailure),
}

/// What happened during [`DoqSession::poll_events`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DoqEvent {
    /// The handshake completed; `resumed` when it resumed a TLS session.
    Connected {
        /// Whether the handshake resumed a session (it verified no certificate).
        resumed: bool,
    },
    /// Streams may be opened (after the handshake, or when the peer raised the limit).
    StreamsAvailable,
    /// The stream of a query finished: its DNS message (ID still 0), or why not.
    Answer(StreamId, Result<Vec<u8>, UpstreamError>),
    /// The connection is lost, and why.
    Lost(TransportFailure),
}

/// The two QUIC client configurations of each authentication (ALPN doq, TLS 1.3, the DoQ
/// session store).
#[derive(Clone)]
pub(crate) struct DoqConfigs {
    /// No certificate checks: opportunistic.
    pub unauthenticated: ClientConfig,
    /// PKIX for the nameserver name.
    pub pkix: ClientConfig,
    /// DANE for the TLSA base name.
    pub dane: ClientConfig,
}

impl std::fmt::Debug for DoqConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DoqConfigs")
    }
}

/// The most a query's stream may carry: a 2-octet length and the largest DNS message.
pub(crate) const MAX_STREAM_BYTES: u32 = 2 + 65_535;

impl DoqConfigs {
    /// QUIC configurations over the rustls ones of `tls`, closing after `idle` without
    /// traffic, with at most `streams` queries in flight per connection; `None` if quinn
    /// refuses them.
    pub(crate) fn new(tls: &super::tls::TlsConfigs, idle: Duration, streams: u32) -> Option<Self> {
        let make = |cfg: &Arc<rustls::ClientConfig>| -> Option<ClientConfig> {
            let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(cfg.clone()).ok()?;
            let mut c = ClientConfig::new(Arc::new(quic));
            c.transport_config(Arc::new(transport_config(idle, streams)));
            Some(c)
        };
        Some(Self { unauthenticated: make(&tls.unauthenticated)?, pkix: make(&tls.pkix)?, dane: make(&tls.dane)? })
    }
}

/// The client's flow control, explicit (quinn's defaults let a server open 200 streams of
/// 1.25 MB toward a client that never reads them): a server may open no stream at all,
/// each query's stream may carry one DNS message, the connection as much as `streams`
/// such answers, and no unreliable datagrams are taken.
fn transport_config(idle: Duration, streams: u32) -> quinn_proto::TransportConfig {
    let mut t = quinn_proto::TransportConfig::default();
    t.max_idle_timeout(quinn_proto::IdleTimeout::try_from(idle.max(Duration::from_secs(1))).ok());
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(MAX_STREAM_BYTES.into());
    t.receive_window(
        quinn_proto::VarInt::from_u64(u64::from(MAX_STREAM_BYTES) * u64::from(streams.max(1)))
            .unwrap_or(quinn_proto::VarInt::MAX),
    );
    t.datagram_receive_buffer_size(None);
    t
}

/// One DoQ connection to one server.
pub(crate) struct DoqSession {
    endpoint: Endpoint,
    conn: Connection,
    handle: ConnectionHandle,
    remote: SocketAddr,
    state: DoqState,
    /// What each query's stream has received so far.
    streams: HashMap<StreamId, Vec<u8>>,
    /// The name the handshake authenticates (or the address), lowercase: how a full
    /// handshake is recognised (see `verifier::take_verified`).
    sni: String,
    resumed: bool,
}

impl std::fmt::Debug for DoqSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoqSession").field("remote", &self.remote).field("state", &self.state).finish()
    }
}

impl DoqSession {
    /// Starts the handshake with `remote`, authenticating `server_name` as `config` says.
    pub(crate) fn connect(
        config: ClientConfig,
        remote: SocketAddr,
        server_name: &str,
        now: Instant,
    ) -> Result<Self, UpstreamError> {
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        let (handle, conn) =
            endpoint.connect(now, config, remote, server_name).map_err(|_| TransportFailure::QuicConnect)?;
        Ok(Self {
            endpoint,
            conn,
            handle,
            remote,
            state: DoqState::Handshaking,
            streams: HashMap::new(),
            sni: server_name.to_ascii_lowercase(),
            resumed: false,
        })
    }

    /// Where the session stands.
    pub(crate) fn state(&self) -> DoqState {
        self.state
    }

    /// Whether the handshake resumed a TLS session.
    pub(crate) fn resumed(&self) -> bool {
        self.resumed
    }

    /// Feeds one datagram from the server; returns the size of a datagram to send back at
    /// once (written to `response`), if any.
    pub(crate) fn receive(&mut self, now: Instant, datagram: &[u8], response: &mut Vec<u8>) -> Option<usize> {
        response.clear();
        let data = BytesMut::from(datagram);
        match self.endpoint.handle(now, self.remote, None, None, data, response) {
            Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) => {
                self.conn.handle_event(ev);
                None
            }
            Some(quinn_proto::DatagramEvent::Response(t)) => Some(t.size),
            _ => None,
        }
    }

    /// Gives the connection up (the port is closed, the handshake took too long, the
    /// connection stalled); nothing more is sent on it.
    pub(crate) fn abandon(&mut self, why: TransportFailure) {
        self.state = DoqState::Failed(why);
    }

    /// Runs timers, hands endpoint events around, and reads every query stream: what
    /// happened since the last call.
    pub(crate) fn poll_events(&mut self, now: Instant) -> Vec<DoqEvent> {
        let mut out = Vec::new();
        if matches!(self.state, DoqState::Failed(_)) {
            return out;
        }
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        while let Some(ev) = self.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(self.handle, ev) {
                self.conn.handle_event(back);
            }
        }
        while let Some(ev) = self.conn.poll() {
            match ev {
                Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => out.push(DoqEvent::StreamsAvailable),
                Event::Connected if self.state == DoqState::Handshaking => {
                    self.state = DoqState::Open;
                    // quinn reports no handshake kind: a resumed TLS 1.3 handshake is one
                    // that verified no certificate.
                    self.resumed = !super::verifier::take_verified(&self.sni);
                    out.push(DoqEvent::Connected { resumed: self.resumed });
                    out.push(DoqEvent::StreamsAvailable);
                }
                Event::ConnectionLost { reason } => {
                    let reason = match reason {
                        quinn_proto::ConnectionError::TimedOut => TransportFailure::QuicTimeout,
                        quinn_proto::ConnectionError::TransportError(_) => TransportFailure::QuicTransportError,
                        quinn_proto::ConnectionError::ConnectionClosed(_)
                        | quinn_proto::ConnectionError::ApplicationClosed(_) => TransportFailure::Closed,
                        _ => TransportFailure::QuicError,
                    };
                    self.state = DoqState::Failed(reason);
                    out.push(DoqEvent::Lost(reason));
                }
                // Every query stream is read below, Readable or not.
                _ => {}
            }
        }
        // Streams whose answer may have arrived without a Readable event of their own.
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(answer) = self.read_stream(now, id) {
                self.streams.remove(&id);
                out.push(DoqEvent::Answer(id, answer));
            }
        }
        // A malformed answer closed the connection (a protocol error of the peer): its
        // other queries and the ones waiting to open a stream learn it now, not at their
        // timeouts.
        if let DoqState::Failed(reason) = self.state
            && !out.iter().any(|e| matches!(e, DoqEvent::Lost(_)))
        {
            out.push(DoqEvent::Lost(reason));
        }
        out
    }

    /// Reads what stream `id` has; the answer once it is complete (FIN seen) or reset.
    fn read_stream(&mut self, now: Instant, id: StreamId) -> Option<Result<Vec<u8>, UpstreamError>> {
        let buf = self.streams.get_mut(&id)?;
        let mut recv = self.conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else { return None };
        let mut finished = false;
        let mut reset = None;
        let mut oversized = false;
        loop {
            match chunks.next(usize::MAX) {
                // Flow control keeps an honest peer within one message; anything past it
                // is not buffered.
                Ok(Some(chunk)) if buf.len() + chunk.bytes.len() > MAX_STREAM_BYTES as usize => {
                    oversized = true;
                    break;
                }
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    finished = true;
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(code)) => {
                    reset = Some(code);
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if oversized {
            let _ = self.conn.recv_stream(id).stop(quinn_proto::VarInt::from_u32(code::DOQ_PROTOCOL_ERROR));
            return Some(Err(UpstreamError::BadResponse("DoQ answer larger than a DNS message")));
        }
        if let Some(code) = reset {
            let reason = if u64::from(code) == u64::from(code::DOQ_INTERNAL_ERROR) {
                TransportFailure::DoqInternalError
            } else {
                TransportFailure::DoqStreamReset
            };
            return Some(Err(reason.into()));
        }
        if !finished {
            return None;
        }
        let answer = answer_of(buf);
        if answer.is_err() {
            // RFC 9250 section 4.3: a malformed answer is a protocol error of the peer; the
            // connection is closed and takes no more queries.
            self.conn.close(now, quinn_proto::VarInt::from_u32(code::DOQ_PROTOCOL_ERROR), bytes::Bytes::new());
            self.state = DoqState::Failed(TransportFailure::DoqProtocolError);
        }
        Some(answer)
    }

    /// Opens a stream for `query` and sends it (ID 0, length prefix, FIN); `None` when no
    /// stream can be opened yet (handshake under way, or at the peer's limit).
    pub(crate) fn open_query(&mut self, query: &[u8]) -> Result<Option<StreamId>, UpstreamError> {
        if let DoqState::Failed(reason) = self.state {
            return Err(reason.into());
        }
        let frame = frame_query(query)?;
        let Some(id) = self.conn.streams().open(Dir::Bi) else { return Ok(None) };
        let mut send = self.conn.send_stream(id);
        let written = send.write(&frame).map_err(|_| TransportFailure::DoqWrite)?;
        if written != frame.len() {
            return Err(TransportFailure::DoqFlowControl.into());
        }
        send.finish().map_err(|_| TransportFailure::DoqWrite)?;
        self.streams.insert(id, Vec::new());
        Ok(Some(id))
    }

    /// Stops tracking the streams for which `keep` is false (their queries are gone).
    /// Their streams are stopped (DOQ_REQUEST_CANCELLED): a late answer is then neither
    /// read nor left holding the connection's flow-control credit.
    pub(crate) fn retain_streams(&mut self, keep: impl Fn(&StreamId) -> bool) {
        let gone: Vec<StreamId> = self.streams.keys().filter(|id| !keep(id)).copied().collect();
        for id in gone {
            self.streams.remove(&id);
            let _ = self.conn.recv_stream(id).stop(quinn_proto::VarInt::from_u32(code::DOQ_REQUEST_CANCELLED));
        }
    }

    /// The next datagram to send, written to `buf`: its size.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<usize> {
        buf.clear();
        self.conn.poll_transmit(now, 1, buf).map(|t| t.size)
    }

    /// When the session wants [`Self::poll_events`] called next at the latest.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Closes an idle connection with DOQ_NO_ERROR.
    pub(crate) fn close(&mut self, now: Instant) {
        self.state = DoqState::Closing;
        self.conn.close(now, quinn_proto::VarInt::from_u32(code::DOQ_NO_ERROR), bytes::Bytes::new());
    }

    /// Whether the connection is over (drained, or closed after [`Self::close`]).
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, DoqState::Failed(_))
            || self.conn.is_drained()
            || (self.state == DoqState::Closing && self.conn.is_closed())
    }
}

/// A query as a DoQ stream carries it: 2-octet length, then the message with ID 0 (RFC
/// 9250 section 4.2.1), padded to a multiple of 128 octets like DoT's (RFC 9250 section
/// 5.4, RFC 8467).
pub(crate) fn frame_query(query: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    if query.len() < 12 {
        return Err(UpstreamError::BadResponse("short query"));
    }
    let mut msg = Vec::with_capacity(query.len() + 128);
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&query[2..]);
    super::dot::pad_query(&mut msg);
    let len = u16::try_from(msg.len()).map_err(|_| UpstreamError::BadResponse("query too long"))?;
    let mut frame = Vec::with_capacity(2 + msg.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&msg);
    Ok(frame)
}

/// The DNS answer in a finished stream (2-octet length, then the message, whose ID must
/// be 0).
pub(crate) fn answer_of(buf: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    if buf.len() < 2 {
        return Err(UpstreamError::BadResponse("empty DoQ stream"));
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() != 2 + len || len < 12 {
        return Err(UpstreamError::BadResponse("DoQ stream length mismatch"));
    }
    if buf[2..4] != [0, 0] {
        return Err(UpstreamError::BadResponse("DoQ answer with a nonzero message ID"));
    }
    Ok(buf[2..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DoQ query carries EDNS padding to a multiple of 128 octets (RFC 9250 section 5.4),
    /// its ID 0 and its length prefix.
    #[test]
    fn queries_are_padded_with_id_zero() {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = 0x1234;
        let name = hickory_proto::rr::Name::from_ascii("www.doq.lab.").unwrap();
        m.add_query(hickory_proto::op::Query::query(name, hickory_proto::rr::RecordType::A));
        m.set_edns(hickory_proto::op::Edns::new());
        let frame = frame_query(&m.to_vec().unwrap()).unwrap();
        let len = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
        assert_eq!((len, frame.len() - 2, len % 128), (128, 128, 0));
        assert_eq!(frame[2..4], [0, 0]);
        let parsed = hickory_proto::op::Message::from_vec(&frame[2..]).unwrap();
        assert!(parsed.edns.is_some());
    }

    #[test]
    fn answers_need_id_zero_and_exact_length() {
        let mut buf = vec![0, 12];
        buf.extend_from_slice(&[0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(answer_of(&buf).unwrap(), buf[2..].to_vec());
        let mut nonzero = buf.clone();
        nonzero[2] = 1;
        assert!(answer_of(&nonzero).is_err());
        assert!(answer_of(&buf[..10]).is_err());
        let mut long = buf.clone();
        long.push(0);
        assert!(answer_of(&long).is_err());
        assert_eq!(code::DOQ_PROTOCOL_ERROR, 2);
    }

    #[test]
    fn queries_go_out_with_id_zero_and_their_length() {
        let query = [0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7];
        let frame = frame_query(&query).unwrap();
        assert_eq!(&frame[..4], &[0, 13, 0, 0]);
        assert_eq!(&frame[4..], &query[2..]);
        assert!(frame_query(&query[..11]).is_err());
    }

    /// A QUIC server in memory (quinn-proto's own, with the test certificate) that a
    /// session talks to datagram by datagram: what a hostile DoQ server can make the
    /// client hold.
    struct Server {
        endpoint: Endpoint,
        conn: Option<(ConnectionHandle, Connection)>,
    }

    const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)), 4444);
    const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 853);

    impl Server {
        fn new() -> Self {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cert = CertificateDer::from(include_bytes!("testdata/leaf.der").to_vec());
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(include_bytes!("testdata/leaf.key.der").to_vec()));
            let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
            tls.alpn_protocols = vec![b"doq".to_vec()];
            tls.max_early_data_size = u32::MAX;
            let quic = quinn_proto::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).unwrap();
            let server = quinn_proto::ServerConfig::with_crypto(Arc::new(quic));
            let endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), Some(Arc::new(server)), true, None);
            Self { endpoint, conn: None }
        }

        /// Moves datagrams both ways until neither side has anything to send.
        fn exchange(&mut self, client: &mut DoqSession, now: Instant) -> Vec<DoqEvent> {
            let mut events = Vec::new();
            let mut buf = Vec::new();
            for _ in 0..200 {
                let mut moved = false;
                while let Some(n) = client.poll_transmit(now, &mut buf) {
                    moved = true;
                    let mut resp = Vec::new();
                    match self.endpoint.handle(now, CLIENT, None, None, BytesMut::from(&buf[..n]), &mut resp) {
                        Some(quinn_proto::DatagramEvent::NewConnection(incoming)) => {
                            self.conn = Some(self.endpoint.accept(incoming, now, &mut resp, None).unwrap());
                        }
                        Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) => {
                            if let Some((_, c)) = self.conn.as_mut() {
                                c.handle_event(ev);
                            }
                        }
                        _ => {}
                    }
                }
                if let Some((h, c)) = self.conn.as_mut() {
                    while let Some(ev) = c.poll_endpoint_events() {
                        if let Some(back) = self.endpoint.handle_event(*h, ev) {
                            c.handle_event(back);
                        }
                    }
                    while c.poll().is_some() {}
                    // Take the client's query streams and read the queries, as a server would.
                    while let Some(id) = c.streams().accept(Dir::Bi) {
                        let mut recv = c.recv_stream(id);
                        if let Ok(mut chunks) = recv.read(true) {
                            while let Ok(Some(_)) = chunks.next(usize::MAX) {}
                            let _ = chunks.finalize();
                        }
                    }
                    let mut out = Vec::new();
                    while let Some(t) = c.poll_transmit(now, 1, &mut out) {
                        moved = true;
                        let mut resp = Vec::new();
                        client.receive(now, &out[..t.size], &mut resp);
                        out.clear();
                    }
                }
                events.extend(client.poll_events(now));
                if !moved {
                    break;
                }
            }
            events
        }

        fn conn(&mut self) -> &mut Connection {
            &mut self.conn.as_mut().unwrap().1
        }
    }

    fn session(now: Instant) -> DoqSession {
        let store = Arc::new(super::super::sessions::SessionStore::new(16));
        let tls = super::super::tls::TlsConfigs::new(
            b"doq",
            Arc::new(super::super::tls::builtin_roots()),
            store.clone(),
            store,
            Arc::new(super::super::dane::TlsaTable::default()),
            "quic",
        )
        .unwrap();
        let configs = DoqConfigs::new(&tls, Duration::from_secs(30), 4).unwrap();
        DoqSession::connect(configs.unauthenticated, SERVER, "192.0.2.1", now).unwrap()
    }

    /// RFC 9250 section 4.2 with the client's own limits: a server can open no stream
    /// toward the client, and can push no more than one DNS message down a query's stream
    /// (quinn's defaults would let it open 200 streams and send 1.25 MB on each).
    #[test]
    fn a_server_can_neither_open_streams_nor_send_more_than_a_message_per_query() {
        let now = Instant::now();
        let mut server = Server::new();
        let mut client = session(now);
        let events = server.exchange(&mut client, now);
        assert!(events.contains(&DoqEvent::Connected { resumed: false }), "{events:?}");
        assert_eq!(server.conn().streams().open(Dir::Uni), None, "no unidirectional stream toward the client");
        assert_eq!(server.conn().streams().open(Dir::Bi), None, "no bidirectional stream toward the client");
        let query = [0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let id = client.open_query(&query).unwrap().unwrap();
        server.exchange(&mut client, now);
        // The server answers with far more than a DNS message on the query's stream.
        let flood = vec![0u8; 1 << 20];
        let written = server.conn().send_stream(id).write(&flood).unwrap_or(0);
        assert!(written <= MAX_STREAM_BYTES as usize, "flow control let {written} bytes through");
        server.exchange(&mut client, now);
        assert!(client.streams.get(&id).is_none_or(|b| b.len() <= MAX_STREAM_BYTES as usize));
    }

    /// RFC 9250 section 4.3: a malformed answer closes the connection, and every query on
    /// it learns so at once (they once waited for their timeouts on a closed connection).
    #[test]
    fn a_malformed_answer_fails_the_connection_for_every_query() {
        let now = Instant::now();
        let mut server = Server::new();
        let mut client = session(now);
        server.exchange(&mut client, now);
        let query = [0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let bad = client.open_query(&query).unwrap().unwrap();
        let other = client.open_query(&query).unwrap().unwrap();
        server.exchange(&mut client, now);
        // A length prefix that does not match what follows.
        let mut send = server.conn().send_stream(bad);
        send.write(&[0, 40, 0, 0, 0x81]).unwrap();
        send.finish().unwrap();
        let events = server.exchange(&mut client, now);
        assert!(events.iter().any(|e| matches!(e, DoqEvent::Answer(id, Err(_)) if *id == bad)), "{events:?}");
        assert!(events.contains(&DoqEvent::Lost(TransportFailure::DoqProtocolError)), "{events:?}");
        assert_eq!(client.state(), DoqState::Failed(TransportFailure::DoqProtocolError));
        assert!(client.open_query(&query).is_err(), "no more queries on it");
        let _ = other;
    }

    /// A query given up (its slot is gone) has its stream stopped with
    /// DOQ_REQUEST_CANCELLED, so a late answer holds neither memory nor flow-control credit.
    #[test]
    fn an_abandoned_query_stops_its_stream() {
        let now = Instant::now();
        let mut server = Server::new();
        let mut client = session(now);
        server.exchange(&mut client, now);
        let query = [0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let id = client.open_query(&query).unwrap().unwrap();
        server.exchange(&mut client, now);
        client.retain_streams(|_| false);
        server.exchange(&mut client, now);
        let stopped = server.conn().send_stream(id).stopped().ok().flatten();
        assert_eq!(stopped, Some(quinn_proto::VarInt::from_u32(code::DOQ_REQUEST_CANCELLED)));
    }
}
