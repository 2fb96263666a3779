//! `[cookies]`: DNS cookies (RFC 7873) for clients, with RFC 9018's interoperable server
//! cookies.

use std::path::PathBuf;

use serde::Deserialize;

use super::{bounds, d};

/// `[cookies]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CookiesConfig {
    /// Answer a client's cookie with a server cookie, and exempt clients that return a
    /// valid one from the UDP rate limits. Default true.
    pub enabled: bool,
    /// The server secret, shared by every node of an anycast set: a file with one line of
    /// 32 hexadecimal digits (16 octets), optionally a second line with the previous
    /// secret (still accepted, RFC 9018 section 5). Re-read on reload. Absent: a random
    /// secret made at start and replaced every `rotate_s`.
    pub secret_file: Option<PathBuf>,
    /// See [`bounds::COOKIE_ROTATE_S`].
    pub rotate_s: u64,
    /// Send DNS cookies to authoritative servers over Do53 (a client cookie per server
    /// address, and the server cookie it gave back), discard replies that do not echo
    /// ours, and answer BADCOOKIE by asking once more with the new server cookie, then
    /// over TCP. Default true.
    pub upstream: bool,
}

impl Default for CookiesConfig {
    fn default() -> Self {
        Self { enabled: true, secret_file: None, rotate_s: d(bounds::COOKIE_ROTATE_S), upstream: true }
    }
}
