//! Admission at the front door, shared by every worker: the query rates each client
//! address, client network and (network, question) may use over UDP (`[limits]`), and DNS
//! cookies (`[cookies]`), whose valid server cookie proves a client's address and exempts
//! it from those rates. Both are swapped whole on a reload; the rate tables are fixed in
//! size when made, so no flood can grow them.

pub mod cookies;
mod ratelimit;

pub(crate) use ratelimit::fold;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;

use crate::acl::PrefixSet;
use crate::config::{Config, ConfigError, RateAction};
use ratelimit::{KeyHash, RateTable};

/// The network `ip` belongs to: the address with its host bits cleared.
pub(crate) fn network_of(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let len = u32::from(prefix_v4.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let len = u32::from(prefix_v6.min(128));
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// Which rate a query went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// `limits.queries_per_second_per_client`.
    Client,
    /// `limits.queries_per_second_per_prefix`.
    Prefix,
    /// `limits.responses_per_second` (the same question from one network).
    Response,
}

/// The rates in force (only those configured have a table).
#[derive(Debug)]
pub(crate) struct Rates {
    per_client: Option<RateTable>,
    per_prefix: Option<RateTable>,
    responses: Option<RateTable>,
    exempt: PrefixSet,
    /// What a query over a rate gets.
    pub(crate) action: RateAction,
    prefix_v4: u8,
    prefix_v6: u8,
    keys: KeyHash,
    epoch: Instant,
}

impl Rates {
    /// The rates of `[limits]`; `None` when none is set.
    fn from_config(cfg: &Config) -> Result<Option<Self>, ConfigError> {
        let l = &cfg.limits;
        let table = |rate: u32| (rate > 0).then(|| RateTable::new(rate, l.rate_table_slots));
        let rates = Self {
            per_client: table(l.queries_per_second_per_client),
            per_prefix: table(l.queries_per_second_per_prefix),
            responses: table(l.responses_per_second),
            exempt: PrefixSet::new(&l.exempt_prefixes()?),
            action: l.rate_action()?,
            prefix_v4: l.client_prefix_v4,
            prefix_v6: l.client_prefix_v6,
            keys: KeyHash::default(),
            epoch: Instant::now(),
        };
        let any = rates.per_client.is_some() || rates.per_prefix.is_some() || rates.responses.is_some();
        Ok(any.then_some(rates))
    }

    /// Charges one UDP query from `ip` for `qname`/`qtype` (the name as the client wrote
    /// it) at `now`; the rate it went over, if any. The rates are charged from the
    /// narrowest (the address) out, and a query refused by one is not charged to the
    /// next: one host over its own rate does not spend its network's.
    pub(crate) fn check(&self, ip: IpAddr, qname: &[u8], qtype: u16, now: Instant) -> Result<(), Over> {
        let Some((ip, now_ms)) = self.admit_addr(ip, now)? else { return Ok(()) };
        if let Some(t) = &self.responses {
            let net = network_of(ip, self.prefix_v4, self.prefix_v6);
            if !t.take(self.keys.question(net, qname, qtype), now_ms) {
                return Err(Over::Response);
            }
        }
        Ok(())
    }

    /// Charges one UDP message from `ip` to the address and network rates only (a message
    /// refused at the door, with no question to key the response rate).
    pub(crate) fn check_addr(&self, ip: IpAddr, now: Instant) -> Result<(), Over> {
        self.admit_addr(ip, now).map(|_| ())
    }

    /// The address and network rates; the canonical address and the clock in
    /// milliseconds when the rest is to be charged, `None` for an exempt client.
    fn admit_addr(&self, ip: IpAddr, now: Instant) -> Result<Option<(IpAddr, u32)>, Over> {
        // An IPv4 client seen as ::ffff:a.b.c.d is the IPv4 client.
        let ip = ip.to_canonical();
        if self.exempt.contains(ip) {
            return Ok(None);
        }
        // Wraps after 49 days; the tables treat a wrapped distance as time that passed.
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        if let Some(t) = &self.per_client
            && !t.take(self.keys.addr(0, ip), now_ms)
        {
            return Err(Over::Client);
        }
        if let Some(t) = &self.per_prefix
            && !t.take(self.keys.addr(1, network_of(ip, self.prefix_v4, self.prefix_v6)), now_ms)
        {
            return Err(Over::Prefix);
        }
        Ok(Some((ip, now_ms)))
    }
}

/// The cookie secrets in force and when the generated one is due for replacement.
#[derive(Debug)]
pub(crate) struct CookieJar {
    /// The secrets.
    pub(crate) secrets: cookies::Secrets,
    /// Unix time after which a generated secret is replaced; `None` for a file's.
    rotate_at: Option<u64>,
}

/// The front door's shared state, and the cookies adox itself sends upstream.
pub struct Admission {
    rates: ArcSwapOption<Rates>,
    cookies: ArcSwapOption<CookieJar>,
    /// `cookies.rotate_s` of a generated secret.
    rotate_s: std::sync::atomic::AtomicU64,
    /// `cookies.upstream`: DNS cookies in queries to authoritative servers over Do53.
    upstream: std::sync::atomic::AtomicBool,
    /// The secret of adox's own client cookies (made at start, never shown).
    client_secret: [u8; 16],
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets stay out of logs.
        f.debug_struct("Admission").field("rates", &self.rates).finish_non_exhaustive()
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            rates: ArcSwapOption::empty(),
            cookies: ArcSwapOption::empty(),
            rotate_s: Default::default(),
            upstream: Default::default(),
            client_secret: rand::random(),
        }
    }
}

impl Admission {
    /// Built from the configuration at start.
    pub fn new(cfg: &Config, now_unix: u64) -> Result<Self, ConfigError> {
        let a = Self::default();
        a.reload_rates(cfg)?;
        a.reload_cookies(cfg, now_unix)?;
        Ok(a)
    }

    /// `[limits]`' rates made afresh (a reload that changed them: their counts start
    /// over). An error changes nothing.
    pub fn reload_rates(&self, cfg: &Config) -> Result<(), ConfigError> {
        self.rates.store(Rates::from_config(cfg)?.map(Arc::new));
        Ok(())
    }

    /// `[cookies]` applied (a reload): the secret file read again, or a generated secret
    /// kept (replaced when a file stops being used: a file's secret is not kept as
    /// previous). Returns whether the secrets in force changed. An error changes nothing.
    pub fn reload_cookies(&self, cfg: &Config, now_unix: u64) -> Result<bool, ConfigError> {
        let c = &cfg.cookies;
        let from_file = match (&c.secret_file, c.enabled) {
            (Some(path), true) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    field: "cookies.secret_file",
                    path: path.clone(),
                    source,
                })?;
                Some(cookies::Secrets::parse(&text).map_err(|reason| ConfigError::Invalid {
                    field: "cookies.secret_file".into(),
                    reason: format!("{}: {reason}", path.display()),
                })?)
            }
            _ => None,
        };
        self.rotate_s.store(c.rotate_s, std::sync::atomic::Ordering::Relaxed);
        let upstream_was = self.upstream.swap(c.upstream, std::sync::atomic::Ordering::Relaxed);
        let mut changed = upstream_was != c.upstream;
        // rcu: a rotation by a worker in between is not undone.
        self.cookies.rcu(|running| {
            let next = if !c.enabled {
                None
            } else if let Some(secrets) = &from_file {
                Some(Arc::new(CookieJar { secrets: secrets.clone(), rotate_at: None }))
            } else {
                match running {
                    // A generated secret stays; a new rotate_s counts from now if sooner.
                    Some(j) if j.rotate_at.is_some() => Some(Arc::new(CookieJar {
                        secrets: j.secrets.clone(),
                        rotate_at: j.rotate_at.map(|at| at.min(now_unix + c.rotate_s)),
                    })),
                    _ => Some(Arc::new(CookieJar {
                        secrets: cookies::Secrets::random(None),
                        rotate_at: Some(now_unix + c.rotate_s),
                    })),
                }
            };
            changed |= running.as_ref().map(|j| &j.secrets) != next.as_ref().map(|j| &j.secrets);
            next
        });
        Ok(changed)
    }

    /// adox's client cookie for the authoritative server `server`, when `cookies.upstream`
    /// is on.
    pub(crate) fn upstream_cookie(&self, server: IpAddr) -> Option<[u8; cookies::CLIENT_COOKIE_LEN]> {
        self.upstream
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| cookies::client_cookie(&self.client_secret, server))
    }

    /// The rates in force, if any.
    pub(crate) fn rates(&self) -> arc_swap::Guard<Option<Arc<Rates>>> {
        self.rates.load()
    }

    /// The cookie secrets, when cookies are on.
    pub(crate) fn cookies(&self) -> arc_swap::Guard<Option<Arc<CookieJar>>> {
        self.cookies.load()
    }

    /// Replaces a generated secret whose time has come (the old one stays valid as the
    /// previous); called by one worker's sweep.
    pub(crate) fn rotate_cookie_secret(&self, now_unix: u64) {
        let due = |j: &Option<Arc<CookieJar>>| j.as_ref().is_some_and(|j| j.rotate_at.is_some_and(|at| now_unix >= at));
        if !due(&self.cookies.load()) {
            return;
        }
        let rotate_s = self.rotate_s.load(std::sync::atomic::Ordering::Relaxed);
        // rcu: a reload in between is not undone either.
        self.cookies.rcu(|running| match running {
            Some(j) if due(running) => Some(Arc::new(CookieJar {
                secrets: cookies::Secrets::random(Some(j.secrets.current)),
                rotate_at: Some(now_unix + rotate_s),
            })),
            other => other.clone(),
        });
        tracing::info!("DNS cookie secret replaced (the previous one is still accepted)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml: &str) -> Config {
        let c = Config::from_toml(toml).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn a_client_over_its_rate_is_limited_and_its_neighbours_are_not() {
        let a = Admission::new(&cfg("[limits]\nqueries_per_second_per_client = 5\n"), 0).unwrap();
        let rates = a.rates().clone().unwrap();
        let now = Instant::now();
        let (ip, neighbour) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let ok = (0..20).filter(|_| rates.check(ip, b"\x01a\x00", 1, now).is_ok()).count();
        assert_eq!(ok, 5);
        assert_eq!(rates.check(ip, b"\x01a\x00", 1, now), Err(Over::Client));
        assert!(rates.check(neighbour, b"\x01a\x00", 1, now).is_ok());
    }

    #[test]
    fn networks_exemptions_and_identical_questions() {
        let a = Admission::new(
            &cfg("[limits]\nqueries_per_second_per_prefix = 3\nresponses_per_second = 2\nrate_limit_exempt = [\"198.51.100.0/24\"]\nrate_limit_action = \"refused\"\n"),
            0,
        )
        .unwrap();
        let rates = a.rates().clone().unwrap();
        assert_eq!(rates.action, RateAction::Refused);
        let now = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The same question twice from a /24, then a third: the response rate.
        assert!(rates.check(ip("192.0.2.1"), b"\x01a\x00", 1, now).is_ok());
        assert!(rates.check(ip("192.0.2.2"), b"\x01A\x00", 1, now).is_ok());
        assert_eq!(rates.check(ip("192.0.2.3"), b"\x01a\x00", 1, now), Err(Over::Response));
        // The network's three are spent.
        assert_eq!(rates.check(ip("192.0.2.4"), b"\x01b\x00", 1, now), Err(Over::Prefix));
        assert!(rates.check(ip("192.0.3.1"), b"\x01b\x00", 1, now).is_ok(), "another /24");
        for _ in 0..50 {
            assert!(rates.check(ip("198.51.100.7"), b"\x01a\x00", 1, now).is_ok(), "exempt");
        }
    }

    #[test]
    fn no_rate_no_table_and_bad_settings_are_named() {
        let a = Admission::new(&Config::default(), 0).unwrap();
        assert!(a.rates().is_none());
        assert!(a.cookies().is_some(), "cookies are on by default");
        let bad = Config::from_toml("[limits]\nrate_limit_action = \"tarpit\"\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("limits.rate_limit_action"));
        let bad = Config::from_toml("[limits]\nrate_limit_exempt = [\"10.1.2.3/8\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("limits.rate_limit_exempt[0]"));
    }

    #[test]
    fn a_generated_secret_survives_a_reload_and_rotates_with_the_previous_kept() {
        let c = Config::default();
        let a = Admission::new(&c, 1000).unwrap();
        let first = a.cookies().clone().unwrap().secrets.current;
        assert!(!a.reload_cookies(&c, 2000).unwrap());
        assert_eq!(a.cookies().clone().unwrap().secrets.current, first, "kept across a reload");
        a.rotate_cookie_secret(1000 + c.cookies.rotate_s - 1);
        assert_eq!(a.cookies().clone().unwrap().secrets.current, first, "not yet due");
        a.rotate_cookie_secret(1000 + c.cookies.rotate_s);
        let jar = a.cookies().clone().unwrap();
        assert_ne!(jar.secrets.current, first);
        assert_eq!(jar.secrets.previous, Some(first));
    }

    #[test]
    fn a_secret_file_is_read_on_each_reload_and_a_bad_one_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("adox-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "00112233445566778899aabbccddeeff\n").unwrap();
        let c = cfg(&format!("[cookies]\nsecret_file = {:?}\n", path.display().to_string()));
        let a = Admission::new(&c, 0).unwrap();
        assert_eq!(a.cookies().clone().unwrap().secrets.current[15], 0xff);
        std::fs::write(&path, "not hex\n").unwrap();
        let err = a.reload_cookies(&c, 0).unwrap_err().to_string();
        assert!(err.contains("cookies.secret_file"), "{err}");
        assert_eq!(a.cookies().clone().unwrap().secrets.current[15], 0xff, "unchanged");
        std::fs::write(&path, "ffeeddccbbaa99887766554433221100\n00112233445566778899aabbccddeeff\n").unwrap();
        assert!(a.reload_cookies(&c, 0).unwrap(), "a new secret in the file");
        assert!(!a.reload_cookies(&c, 0).unwrap(), "the same file again");
        let jar = a.cookies().clone().unwrap();
        assert_eq!((jar.secrets.current[0], jar.secrets.previous.map(|p| p[15])), (0xff, Some(0xff)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
