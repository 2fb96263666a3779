//! Operator transport policy: the overrides an operator sets per zone, nameserver name and
//! nameserver address (requirements R7, R9), with the field names the REST API and the
//! configuration's `[[policy]]` tables share: `zone`, `nameserver`, `address`, `mode`,
//! `transports`, `auth`, `comment`.
//!
//! [`PolicySpec`] is what an operator writes; [`PolicySpec::normalize`] validates it and
//! fills the documented defaults, giving a [`Policy`] whose names are lowercase with a
//! trailing dot and whose prefix is in CIDR form. Errors name the offending field.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How strictly a plan demands encryption (requirements.md, "The modes, precisely").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Encrypted and authenticated, or nothing: never a cleartext query.
    Strict,
    /// Encrypted when it works, unauthenticated allowed, Do53 fallback counted.
    Opportunistic,
    /// Do53 only.
    Cleartext,
}

/// A transport to an authoritative server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// DNS over QUIC (RFC 9250), UDP 853.
    Doq,
    /// DNS over TLS (RFC 7858), TCP 853.
    Dot,
    /// DNS over HTTPS (RFC 8484) over HTTP/2, TCP 443.
    Doh,
    /// Classic DNS over UDP, TCP on truncation.
    Do53,
}

impl Transport {
    /// Whether this transport encrypts.
    pub fn encrypted(self) -> bool {
        !matches!(self, Self::Do53)
    }
}

/// The DoH URI template used when a policy lists `doh` without `doh_path` (the path of
/// RFC 8484's examples, which servers commonly serve).
pub const DEFAULT_DOH_PATH: &str = "/dns-query{?dns}";

/// A `dohpath` longer than any real URI template (RFC 9461 section 5).
pub const MAX_DOH_PATH: usize = 512;

/// Checks a DoH URI template as adox expands it (RFC 9461 section 5, RFC 6570): a path
/// relative to the server's origin that starts with `/`, holds the `{?dns}` variable
/// exactly once and no other expression, and otherwise only characters allowed in a URI
/// path and query (no space, no control character, nothing outside ASCII).
pub fn check_doh_path(template: &str) -> Result<(), &'static str> {
    if template.len() > MAX_DOH_PATH {
        return Err("longer than 512 characters");
    }
    if !template.starts_with('/') {
        return Err("must start with `/`");
    }
    let rest = template.replacen("{?dns}", "", 1);
    if rest.len() == template.len() {
        return Err("must contain the `{?dns}` variable");
    }
    let uri_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    if !rest.bytes().all(uri_char) {
        return Err("holds a character not allowed in a URI path (or a second template expression)");
    }
    // The variable expands to a query (`?dns=...`): a literal query before it would
    // make a malformed URI.
    if template.split("{?dns}").next().is_some_and(|p| p.contains('?')) {
        return Err("has a `?` before `{?dns}`");
    }
    Ok(())
}

/// How the server is authenticated on an encrypted transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// DANE from a DNSSEC-secure TLSA RRset (SVCB-DANE).
    Dane,
    /// PKIX: a certificate for the nameserver name from the configured CA set.
    Pkix,
    /// No authentication (opportunistic encryption).
    None,
}

/// A policy as an operator writes it. Omitted fields get the defaults documented on
/// [`PolicySpec::normalize`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Zone suffix the policy applies to (`example.com`); absent: every zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Nameserver name suffix (`ns1.example.net`); absent: every nameserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
    /// Nameserver address or prefix (`192.0.2.0/24`, `2001:db8::1`); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The mode; required.
    pub mode: Option<Mode>,
    /// Transports to try, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<Transport>>,
    /// Authentication for encrypted transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// The DoH URI template (RFC 9461 `dohpath`, e.g. `/dns-query{?dns}`); only with `doh`
    /// in `transports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doh_path: Option<String>,
    /// Free text for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A validated, normalized policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Identifier: assigned by the store (`cfg-N` for policies from the config file).
    pub id: String,
    /// Zone suffix, lowercase, trailing dot; `None` matches every zone.
    pub zone: Option<String>,
    /// Nameserver name suffix, lowercase, trailing dot; `None` matches every nameserver.
    pub nameserver: Option<String>,
    /// Prefix in CIDR form; `None` matches every address.
    pub address: Option<String>,
    /// The mode.
    pub mode: Mode,
    /// Transports in order of preference.
    pub transports: Vec<Transport>,
    /// Authentication.
    pub auth: Auth,
    /// The DoH URI template; `None`: [`DEFAULT_DOH_PATH`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doh_path: Option<String>,
    /// Operator's comment.
    pub comment: Option<String>,
    /// From the configuration file: listed, never changed through the API.
    pub read_only: bool,
    /// Changes whenever the policy does (its ETag); 0 for policies from the config file.
    #[serde(default)]
    pub revision: u64,
}

impl Policy {
    /// The policy as an operator would write it again (what export and import carry).
    pub fn spec(&self) -> PolicySpec {
        PolicySpec {
            zone: self.zone.clone(),
            nameserver: self.nameserver.clone(),
            address: self.address.clone(),
            mode: Some(self.mode),
            transports: Some(self.transports.clone()),
            auth: Some(self.auth),
            doh_path: self.doh_path.clone(),
            comment: self.comment.clone(),
        }
    }

    /// A warning the operator should see for this policy, if any: strict PKIX without a
    /// nameserver pin authenticates whatever nameserver name the zone's (unsigned) parent
    /// referral names, so whoever can forge that referral chooses the name checked.
    pub fn warning(&self) -> Option<&'static str> {
        (self.mode == Mode::Strict && self.auth == Auth::Pkix && self.nameserver.is_none()).then_some(
            "strict PKIX without a nameserver pin: the name authenticated comes from an unsigned referral; \
             set `nameserver` (or use DANE)",
        )
    }

    /// What the policy matches: two policies with the same selector would be ambiguous.
    pub fn selector(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        (self.zone.as_deref(), self.nameserver.as_deref(), self.address.as_deref())
    }
}

/// Why a policy was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The field (`mode`, `transports`, `zone`, ...).
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for PolicyError {}

fn err(field: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError { field, reason: reason.into() }
}

/// Lowercases a domain name and adds the trailing dot; checks label and name lengths and
/// characters (letters, digits, hyphen, underscore; `*` is not allowed in a suffix).
pub fn normalize_name(field: &'static str, name: &str) -> Result<String, PolicyError> {
    let n = name.trim().to_ascii_lowercase();
    if n.is_empty() {
        return Err(err(field, "empty name"));
    }
    if n == "." {
        return Ok(n);
    }
    let bare = n.strip_suffix('.').unwrap_or(&n);
    if bare.len() > 253 {
        return Err(err(field, "name longer than 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(err(field, format!("bad label in `{name}`")));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(err(field, format!("`{name}` has a character that is not a letter, digit, `-` or `_`")));
        }
    }
    Ok(format!("{bare}."))
}

/// Parses `ADDR/LEN` or `ADDR` into CIDR text with zero host bits.
pub fn normalize_prefix(field: &'static str, s: &str) -> Result<String, PolicyError> {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| err(field, format!("`{s}` is not an IP address or prefix")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        None => max,
        Some(l) => {
            l.parse().ok().filter(|l| *l <= max).ok_or_else(|| err(field, format!("bad prefix length in `{s}`")))?
        }
    };
    let masked = match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::from((u32::from(a) & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::from((u128::from(a) & m).to_be_bytes())
        }
    };
    if masked != ip {
        return Err(err(field, format!("`{s}` has host bits set (did you mean {masked}/{len}?)")));
    }
    Ok(format!("{masked}/{len}"))
}

impl PolicySpec {
    /// Validates and fills defaults:
    /// - `mode` is required;
    /// - `transports` defaults to `[doq, dot]` (strict), `[doq, dot, do53]`
    ///   (opportunistic), `[do53]` (cleartext);
    /// - `auth` defaults to `pkix` (strict) and `none` (otherwise).
    ///
    /// Contradictions are errors: strict with `do53` or without authentication, cleartext
    /// with an encrypted transport or with authentication, duplicates or an empty list, a
    /// `doh_path` without `doh` or one [`check_doh_path`] refuses.
    pub fn normalize(&self, id: String, read_only: bool) -> Result<Policy, PolicyError> {
        let mode = self.mode.ok_or_else(|| err("mode", "required: strict, opportunistic or cleartext"))?;
        let zone = self.zone.as_deref().map(|z| normalize_name("zone", z)).transpose()?;
        let nameserver = self.nameserver.as_deref().map(|n| normalize_name("nameserver", n)).transpose()?;
        let address = self.address.as_deref().map(|a| normalize_prefix("address", a)).transpose()?;
        let transports = match (&self.transports, mode) {
            (Some(t), _) => t.clone(),
            (None, Mode::Strict) => vec![Transport::Doq, Transport::Dot],
            (None, Mode::Opportunistic) => vec![Transport::Doq, Transport::Dot, Transport::Do53],
            (None, Mode::Cleartext) => vec![Transport::Do53],
        };
        if transports.is_empty() {
            return Err(err("transports", "at least one transport is needed"));
        }
        for (i, t) in transports.iter().enumerate() {
            if transports[..i].contains(t) {
                return Err(err("transports", format!("{t:?} is listed twice").to_lowercase()));
            }
        }
        let auth = self.auth.unwrap_or(if mode == Mode::Strict { Auth::Pkix } else { Auth::None });
        match mode {
            Mode::Strict if transports.contains(&Transport::Do53) => {
                return Err(err("transports", "strict mode cannot include do53"));
            }
            Mode::Strict if auth == Auth::None => {
                return Err(err("auth", "strict mode needs dane or pkix"));
            }
            Mode::Cleartext if transports.iter().any(|t| t.encrypted()) => {
                return Err(err("transports", "cleartext mode allows only do53"));
            }
            Mode::Cleartext if auth != Auth::None => {
                return Err(err("auth", "cleartext mode has nothing to authenticate"));
            }
            Mode::Opportunistic if !transports.iter().any(|t| t.encrypted()) => {
                return Err(err("transports", "opportunistic mode needs an encrypted transport"));
            }
            _ => {}
        }
        if let Some(path) = &self.doh_path {
            if !transports.contains(&Transport::Doh) {
                return Err(err("doh_path", "only with doh in transports"));
            }
            check_doh_path(path).map_err(|e| err("doh_path", e))?;
        }
        if let Some(c) = &self.comment
            && c.len() > 1024
        {
            return Err(err("comment", "longer than 1024 characters"));
        }
        Ok(Policy {
            id,
            zone,
            nameserver,
            address,
            mode,
            transports,
            auth,
            doh_path: self.doh_path.clone(),
            comment: self.comment.clone(),
            read_only,
            revision: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: Mode) -> PolicySpec {
        PolicySpec { mode: Some(mode), ..PolicySpec::default() }
    }

    #[test]
    fn defaults_per_mode() {
        let s = spec(Mode::Strict).normalize("a".into(), false).unwrap();
        assert_eq!((s.transports, s.auth), (vec![Transport::Doq, Transport::Dot], Auth::Pkix));
        let o = spec(Mode::Opportunistic).normalize("b".into(), false).unwrap();
        assert_eq!(o.transports.last(), Some(&Transport::Do53));
        assert_eq!(o.auth, Auth::None);
        let c = spec(Mode::Cleartext).normalize("c".into(), false).unwrap();
        assert_eq!(c.transports, vec![Transport::Do53]);
    }

    /// DoH is spoken: a policy may list it, with its own URI template or the default.
    #[test]
    fn doh_policies_carry_a_checked_uri_template() {
        let mut p = spec(Mode::Strict);
        p.transports = Some(vec![Transport::Doh, Transport::Dot]);
        let n = p.normalize("d".into(), false).unwrap();
        assert_eq!((n.transports.clone(), n.doh_path.as_deref()), (vec![Transport::Doh, Transport::Dot], None));
        p.doh_path = Some("/q{?dns}".into());
        assert_eq!(p.normalize("d".into(), false).unwrap().doh_path.as_deref(), Some("/q{?dns}"));
        assert_eq!(n.spec().normalize("d".into(), false).unwrap(), n, "export and import keep it");
        for bad in ["dns-query{?dns}", "/dns-query", "/a b{?dns}", "/x{?dns}{?dns}", "/x?a=1{?dns}", "/é{?dns}"] {
            p.doh_path = Some(bad.into());
            assert_eq!(p.normalize("d".into(), false).unwrap_err().field, "doh_path", "{bad}");
        }
        assert!(check_doh_path(&format!("/{}{{?dns}}", "a".repeat(600))).is_err());
        assert!(check_doh_path("/dns-query{?dns}").is_ok());
    }

    #[test]
    fn names_and_prefixes_are_normalized() {
        let mut p = spec(Mode::Cleartext);
        p.zone = Some("Example.COM".into());
        p.nameserver = Some("ns1.Example.net.".into());
        p.address = Some("192.0.2.7".into());
        let n = p.normalize("x".into(), false).unwrap();
        assert_eq!(n.zone.as_deref(), Some("example.com."));
        assert_eq!(n.nameserver.as_deref(), Some("ns1.example.net."));
        assert_eq!(n.address.as_deref(), Some("192.0.2.7/32"));
        assert_eq!(normalize_prefix("address", "2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(normalize_name("zone", ".").unwrap(), ".");
    }

    #[test]
    fn contradictions_name_the_field() {
        let field = |p: PolicySpec| p.normalize("x".into(), false).unwrap_err().field;
        assert_eq!(field(PolicySpec::default()), "mode");
        let mut p = spec(Mode::Strict);
        p.transports = Some(vec![Transport::Dot, Transport::Do53]);
        assert_eq!(field(p), "transports");
        let mut p = spec(Mode::Strict);
        p.auth = Some(Auth::None);
        assert_eq!(field(p), "auth");
        let mut p = spec(Mode::Cleartext);
        p.auth = Some(Auth::Pkix);
        assert_eq!(field(p), "auth");
        let mut p = spec(Mode::Cleartext);
        p.transports = Some(vec![Transport::Dot]);
        assert_eq!(field(p), "transports");
        let mut p = spec(Mode::Opportunistic);
        p.transports = Some(vec![Transport::Dot]);
        p.doh_path = Some(DEFAULT_DOH_PATH.into());
        assert_eq!(field(p), "doh_path");
        let mut p = spec(Mode::Opportunistic);
        p.transports = Some(vec![Transport::Dot, Transport::Dot]);
        assert_eq!(field(p), "transports");
        let mut p = spec(Mode::Opportunistic);
        p.address = Some("10.1.2.3/8".into());
        assert_eq!(field(p), "address");
        let mut p = spec(Mode::Opportunistic);
        p.zone = Some("bad..name".into());
        assert_eq!(field(p), "zone");
        let mut p = spec(Mode::Opportunistic);
        p.nameserver = Some("sp ace".into());
        assert_eq!(field(p), "nameserver");
    }
}
