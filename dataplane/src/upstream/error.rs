//! Why one exchange with one authoritative server failed, whatever the transport.

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
    /// A local or network I/O error.
    #[error("i/o error: {0}")]
    Io(String),
    /// The reply did not parse or did not match the question.
    #[error("bad response: {0}")]
    BadResponse(&'static str),
    /// The server answered with an error RCODE.
    #[error("rcode {0}")]
    Rcode(u8),
    /// The server is not authoritative for the zone (lame or upward referral).
    #[error("lame delegation")]
    Lame,
    /// An encrypted transport failed: connection, TLS handshake or authentication; the
    /// reason is a stable short name (`cert-name-mismatch`, `handshake-closed`, ...).
    #[error("{0}")]
    Tls(&'static str),
    /// Strict mode allowed no transport that worked; the text follows the fixed grammar
    /// `strict NS@ADDR TRANSPORT: REASON`.
    #[error("{0}")]
    Strict(String),
}
