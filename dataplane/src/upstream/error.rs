//! Why one exchange with one authoritative server failed, whatever the transport; whose
//! fault it was and what to do next are methods, so the resolver never compares strings.

use std::net::IpAddr;

use adox_api::policy::Transport;
use hickory_proto::rr::Name;

/// Why an encrypted transport failed. Each has a stable short name (EXTRA-TEXT, server
/// state, explain, the lab tests): [`TransportFailure::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportFailure {
    /// The server's port is closed (TCP reset, ICMP port unreachable).
    Refused,
    /// The connection failed at the socket level.
    IoError,
    /// The name to authenticate is not a valid TLS server name.
    BadName,
    /// The server closed the connection before the handshake completed (it speaks no TLS
    /// 1.3, or not to us).
    HandshakeClosed,
    /// The server closed an established connection.
    Closed,
    /// The handshake did not complete within `transport.dot_timeout_ms`.
    HandshakeTimeout,
    /// Queries timed out on an established connection that delivered nothing meanwhile.
    Stalled,
    /// The worker dropped the connection to make room for another (not the server's
    /// fault).
    Evicted,
    /// A malformed frame (length prefix).
    Framing,
    /// The certificate is not valid for the name.
    CertNameMismatch,
    /// The certificate does not chain to a trusted root.
    CertUntrusted,
    /// The certificate expired.
    CertExpired,
    /// The certificate is invalid otherwise.
    CertInvalid,
    /// No common TLS version (adox speaks TLS 1.3 only).
    TlsVersion,
    /// No common ALPN (`dot`, `doq`, `h2`).
    Alpn,
    /// The server sent a TLS alert.
    TlsAlert,
    /// Another TLS error.
    TlsError,
    /// DANE: no secure TLSA RRset is known for the name.
    DaneNoTlsa,
    /// DANE: the secure TLSA RRset has no record adox can use (RFC 7671 section 4.1).
    DaneNoUsableTlsa,
    /// DANE: no TLSA record matches the certificate chain.
    DaneMismatch,
    /// DoQ is not available (the QUIC configuration could not be built).
    DoqUnavailable,
    /// QUIC refused to start a connection.
    QuicConnect,
    /// The QUIC connection timed out (idle or handshake).
    QuicTimeout,
    /// A QUIC transport error.
    QuicTransportError,
    /// Another QUIC error.
    QuicError,
    /// The server reset the query's stream.
    DoqStreamReset,
    /// The server reset the query's stream with DOQ_INTERNAL_ERROR.
    DoqInternalError,
    /// The query could not be written to its stream.
    DoqWrite,
    /// The query did not fit the stream's flow-control window.
    DoqFlowControl,
    /// The server sent a malformed answer (RFC 9250 section 4.3: the connection is closed).
    DoqProtocolError,
    /// DoH: the server answered 404 (the `dohpath` names no endpoint it serves).
    HttpNotFound,
    /// DoH: the server answered with another status than 200.
    HttpStatus,
    /// DoH: the answer is not `application/dns-message` (RFC 8484 section 6).
    HttpContentType,
    /// DoH: the HTTP/2 connection failed (a protocol error, GOAWAY with an error code).
    Http2Error,
    /// DoH: the server reset the query's stream.
    Http2StreamReset,
    /// DoH: the server is closing the connection (GOAWAY) or refused the stream unprocessed
    /// (REFUSED_STREAM) before the query was read: safe to send again on a fresh
    /// connection, and no fault of the server's.
    Http2Retry,
}

impl TransportFailure {
    /// The stable short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::IoError => "io-error",
            Self::BadName => "bad-name",
            Self::HandshakeClosed => "handshake-closed",
            Self::Closed => "closed",
            Self::HandshakeTimeout => "handshake-timeout",
            Self::Stalled => "stalled",
            Self::Evicted => "evicted",
            Self::Framing => "framing",
            Self::CertNameMismatch => "cert-name-mismatch",
            Self::CertUntrusted => "cert-untrusted",
            Self::CertExpired => "cert-expired",
            Self::CertInvalid => "cert-invalid",
            Self::TlsVersion => "tls-version",
            Self::Alpn => "alpn",
            Self::TlsAlert => "tls-alert",
            Self::TlsError => "tls-error",
            Self::DaneNoTlsa => "dane-no-tlsa",
            Self::DaneNoUsableTlsa => "dane-no-usable-tlsa",
            Self::DaneMismatch => "dane-mismatch",
            Self::DoqUnavailable => "doq-unavailable",
            Self::QuicConnect => "quic-connect",
            Self::QuicTimeout => "timeout",
            Self::QuicTransportError => "quic-transport-error",
            Self::QuicError => "quic-error",
            Self::DoqStreamReset => "doq-stream-reset",
            Self::DoqInternalError => "doq-internal-error",
            Self::DoqWrite => "doq-write",
            Self::DoqFlowControl => "doq-flow-control",
            Self::DoqProtocolError => "doq-protocol-error",
            Self::HttpNotFound => "http-404",
            Self::HttpStatus => "http-status",
            Self::HttpContentType => "http-content-type",
            Self::Http2Error => "http2-error",
            Self::Http2StreamReset => "http2-stream-reset",
            Self::Http2Retry => "http2-goaway",
        }
    }
}

impl std::fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of adox's own limits that kept a query from a server: the server is skipped for
/// this query and not blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Busy {
    /// `resolver.max_outstanding_per_server` queries are in flight to this address.
    OutstandingPerServer,
    /// The connection has `transport.dot_max_outstanding` queries in flight.
    ConnectionFull,
    /// The worker has `transport.max_connections` connections of this transport open.
    Connections,
    /// The worker owning the connection to this server has a full inbox of queries
    /// handed to it by other workers.
    Handoff,
}

/// Strict mode allowed no transport that worked for one server: nothing was sent in
/// cleartext. Shown in the fixed grammar `strict NS@ADDR TRANSPORT: REASON` that
/// operators parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictFailure {
    /// The nameserver name.
    pub nameserver: Name,
    /// Its address.
    pub addr: IpAddr,
    /// The transport whose failure is reported (the first one tried).
    pub transport: Transport,
    /// Why it failed (`no-supported-transport` when the plan had none adox speaks).
    pub reason: String,
}

impl std::fmt::Display for StrictFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = format!("{:?}", self.transport).to_ascii_lowercase();
        write!(f, "strict {}@{} {t}: {}", self.nameserver.to_ascii(), self.addr, self.reason)
    }
}

/// Whose fault a failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server (or the path to it): it counts against the server's health.
    Upstream,
    /// This machine or one of adox's own limits: it says nothing about the server.
    Local,
}

/// Why one exchange with one upstream server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No answer within the timeout.
    #[error("timeout")]
    Timeout,
    /// A UDP reply larger than the receive buffer: it may be cut, so TCP is used instead.
    #[error("oversized datagram")]
    Oversized,
    /// The server's port is closed (ICMP port unreachable / TCP reset).
    #[error("connection refused")]
    Refused,
    /// The server closed a Do53 TCP connection before it answered.
    #[error("connection closed before the reply")]
    Closed,
    /// Local I/O trouble (no descriptor, no route).
    #[error("i/o error: {0}")]
    Local(std::io::ErrorKind),
    /// One of adox's own limits.
    #[error("{}", match .0 { Busy::OutstandingPerServer => "outstanding limit for this server reached", Busy::ConnectionFull => "connection at its outstanding limit", Busy::Connections => "connection limit of the worker reached", Busy::Handoff => "the owning worker's inbox is full" })]
    Busy(Busy),
    /// The reply did not parse or did not match the question.
    #[error("bad response: {0}")]
    BadResponse(&'static str),
    /// The server answered with an error RCODE.
    #[error("rcode {0}")]
    Rcode(u8),
    /// The server is not authoritative for the zone (lame or upward referral).
    #[error("lame delegation")]
    Lame,
    /// An encrypted transport failed: connection, TLS handshake or authentication.
    #[error("{0}")]
    Transport(TransportFailure),
    /// Strict mode allowed no transport that worked.
    #[error("{0}")]
    Strict(Box<StrictFailure>),
}

impl UpstreamError {
    /// Whose fault it was: local trouble and adox's own limits say nothing about the
    /// server.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Local(_)
            | Self::Busy(_)
            | Self::Transport(TransportFailure::Evicted | TransportFailure::Http2Retry) => Fault::Local,
            _ => Fault::Upstream,
        }
    }

    /// Whether it comes of this resolver's own load or host, so that the resolution's
    /// failure may say nothing about the name: an outstanding or connection limit, a
    /// connection our pool evicted, a wait on another worker or cut short by the query's
    /// own deadline (`Local(TimedOut)`), no descriptor or buffer. Not an unreachable
    /// network or host (an IPv6 address on an IPv4-only host is the name's address, and
    /// a zone can list one on purpose), and not a DoH server refusing streams
    /// (`Http2Retry`: the server's doing).
    pub fn is_local_load(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            Self::Busy(_) | Self::Transport(TransportFailure::Evicted) => true,
            Self::Local(kind) => !matches!(kind, ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable),
            _ => false,
        }
    }

    /// Whether the same server deserves one more try in this step, after the others: a
    /// timeout may be one lost datagram.
    pub fn retry_same_server(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether it tells something about the server's encrypted transport (RFC 9539
    /// failure state): a failed connection or handshake, a timeout, a refusal; not an
    /// answer that was merely unusable.
    pub fn is_transport_failure(&self) -> bool {
        matches!(self, Self::Transport(_) | Self::Timeout | Self::Refused) && self.fault() == Fault::Upstream
    }

    /// Whether the connection itself failed (it could not be opened, or its TLS handshake
    /// failed), as opposed to one query on it: what speaks of a server's port whatever the
    /// URI path a query used.
    pub fn is_connection_failure(&self) -> bool {
        use TransportFailure as F;
        matches!(
            self,
            Self::Refused
                | Self::Transport(
                    F::Refused
                        | F::IoError
                        | F::HandshakeClosed
                        | F::HandshakeTimeout
                        | F::TlsVersion
                        | F::Alpn
                        | F::TlsAlert
                        | F::TlsError
                        | F::CertNameMismatch
                        | F::CertUntrusted
                        | F::CertExpired
                        | F::CertInvalid
                        | F::DaneNoTlsa
                        | F::DaneNoUsableTlsa
                        | F::DaneMismatch
                )
        )
    }

    /// Whether the server was reached and spoke TLS, but could not be authenticated as the
    /// plan asked (certificate or DANE): it says nothing about unauthenticated use.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            Self::Transport(
                TransportFailure::CertNameMismatch
                    | TransportFailure::CertUntrusted
                    | TransportFailure::CertExpired
                    | TransportFailure::CertInvalid
                    | TransportFailure::DaneNoTlsa
                    | TransportFailure::DaneNoUsableTlsa
                    | TransportFailure::DaneMismatch
            )
        )
    }

    /// The short reason shown in EXTRA-TEXT, server state and explain.
    pub fn reason(&self) -> String {
        match self {
            Self::Transport(t) => t.as_str().into(),
            Self::Refused => "refused".into(),
            other => other.to_string(),
        }
    }
}

impl From<TransportFailure> for UpstreamError {
    fn from(f: TransportFailure) -> Self {
        Self::Transport(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_retries_and_reasons() {
        assert_eq!(UpstreamError::Local(std::io::ErrorKind::OutOfMemory).fault(), Fault::Local);
        assert_eq!(UpstreamError::Busy(Busy::ConnectionFull).fault(), Fault::Local);
        assert_eq!(UpstreamError::Closed.fault(), Fault::Upstream);
        assert!(UpstreamError::Timeout.retry_same_server() && !UpstreamError::Refused.retry_same_server());
        assert!(UpstreamError::from(TransportFailure::DaneMismatch).is_transport_failure());
        assert!(!UpstreamError::Rcode(2).is_transport_failure());
        assert_eq!(UpstreamError::from(TransportFailure::HandshakeClosed).reason(), "handshake-closed");
        assert_eq!(UpstreamError::Refused.reason(), "refused");
        assert_eq!(UpstreamError::Timeout.reason(), "timeout");
        let strict = StrictFailure {
            nameserver: "ns1.example.".parse().unwrap(),
            addr: "192.0.2.1".parse().unwrap(),
            transport: Transport::Doq,
            reason: "dane-mismatch".into(),
        };
        assert_eq!(
            UpstreamError::Strict(Box::new(strict)).to_string(),
            "strict ns1.example.@192.0.2.1 doq: dane-mismatch"
        );
    }

    #[test]
    fn our_load_is_limits_pools_and_waits_not_routes_or_servers() {
        use std::io::ErrorKind;
        assert!(UpstreamError::Busy(Busy::Handoff).is_local_load());
        assert!(UpstreamError::from(TransportFailure::Evicted).is_local_load());
        assert!(UpstreamError::Local(ErrorKind::TimedOut).is_local_load(), "a wait on another worker");
        assert!(UpstreamError::Local(ErrorKind::OutOfMemory).is_local_load());
        assert!(!UpstreamError::Local(ErrorKind::NetworkUnreachable).is_local_load(), "the name's address");
        assert!(!UpstreamError::Local(ErrorKind::HostUnreachable).is_local_load());
        assert!(!UpstreamError::from(TransportFailure::Http2Retry).is_local_load(), "the server refuses streams");
        assert!(!UpstreamError::Timeout.is_local_load() && !UpstreamError::Refused.is_local_load());
    }
}
