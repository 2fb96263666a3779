//! Serve-stale's reading of the record cache (RFC 8767; the worker decides when to use it,
//! `worker/stale.rs`): expired data within `cache.stale_max_s` answers with the stale TTL,
//! marked stale; bogus data never; secure data keeps AD only while its signatures are
//! valid; with the switch off there is nothing stale to read. And prefetch's refresh,
//! which goes to the authority although the answer is cached.

use super::signed::{SignedZones, window};
use super::*;
use crate::dnssec::Security;
use crate::wire::rcode;

fn zones() -> SignedZones {
    SignedZones::new(base_zones(), &[".", "example."])
}

fn config(max_ttl: u32) -> Config {
    let mut cfg = Config::default();
    cfg.cache.max_ttl_s = max_ttl;
    cfg.cache.max_negative_ttl_s = max_ttl;
    cfg.cache.stale_max_s = 3_600;
    cfg
}

/// Every query to `server` is lost from now on.
fn kill(net: &Fake, server: &str) {
    net.drops.borrow_mut().insert(ip(server), u32::MAX);
}

fn stale(r: &Resolver<Fake>, name: &str) -> Result<Answer, ResolveError> {
    block_on(r.resolve_stale(&n(name), RecordType::A))
}

#[test]
fn expired_data_and_nxdomain_answer_stale_with_the_stale_ttl_while_the_authority_is_down() {
    let (r, net) = zones().sign().resolver(&config(60));
    assert!(!block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap().stale);
    assert_eq!(block_on(r.resolve(&n("nx.example."), RecordType::A)).unwrap().rcode, rcode::NXDOMAIN);
    // Live data read this way is not stale.
    assert!(!stale(&r, "www.example.").unwrap().stale);
    kill(&net, "10.0.1.1");
    advance(&net, 61);
    assert!(block_on(r.resolve(&n("www.example."), RecordType::A)).is_err(), "the authority is down");
    let a = stale(&r, "www.example.").unwrap();
    assert!(a.stale);
    assert_eq!(a.answers.iter().find(|x| x.record_type() == RecordType::A).unwrap().ttl, 30);
    assert_eq!(a.cache_ttl, 0, "never kept in the packet cache");
    assert_eq!(a.security, Security::Secure, "its signatures are still valid");
    let nx = stale(&r, "nx.example.").unwrap();
    assert!(nx.stale && nx.rcode == rcode::NXDOMAIN);
    // Past the stale window: nothing.
    advance(&net, 3_600);
    assert_eq!(stale(&r, "www.example."), Err(ResolveError::NotInCache));
}

/// RFC 4035 section 5.3.3 caps secure data at its signatures' expiry; served stale past
/// it, the data is no longer secure (no AD).
#[test]
fn stale_secure_data_loses_ad_once_its_signatures_expire() {
    let mut z = zones().sign();
    z.resign("www.example.", RecordType::A, window(-86_400, 100));
    let (r, net) = z.resolver(&config(3_600));
    assert_eq!(block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap().security, Security::Secure);
    kill(&net, "10.0.1.1");
    advance(&net, 200);
    let a = stale(&r, "www.example.").unwrap();
    assert!(a.stale);
    assert!(matches!(a.security, Security::Insecure(_)), "{:?}", a.security);
}

#[test]
fn bogus_data_is_never_served_stale() {
    let mut z = zones().sign();
    z.resign("www.example.", RecordType::A, window(-20 * 86_400, -3 * 86_400));
    let (r, net) = z.resolver(&config(3_600));
    let bogus = block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert!(matches!(bogus.security, Security::Bogus(_)));
    kill(&net, "10.0.1.1");
    advance(&net, 120);
    assert_eq!(stale(&r, "www.example."), Err(ResolveError::NotInCache));
}

#[test]
fn with_serve_stale_off_nothing_is_read_stale() {
    let mut cfg = config(60);
    cfg.cache.serve_stale = false;
    let (r, net) = resolver(base_zones(), &cfg);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    advance(&net, 61);
    assert_eq!(stale(&r, "www.example."), Err(ResolveError::NotInCache));
    assert_eq!(r.shared().records.get(&n("www.example."), 1, r.upstream().now()).map(|h| h.stale), None);
}

/// Prefetch's resolution (`Resolver::refresh`): the question goes to its authority even
/// though it is cached, and the refreshed entry lives a full TTL again.
#[test]
fn a_refresh_asks_the_authority_although_the_answer_is_cached() {
    let (r, net) = resolver(base_zones(), &config(60));
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let asked_www = |net: &Fake| asked(net, "10.0.1.1").iter().filter(|q| q.starts_with("www.example.")).count();
    let before = asked_www(&net);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    assert_eq!(asked_www(&net), before, "a plain resolution is a cache hit");
    advance(&net, 55);
    let fresh = block_on(r.refresh(&n("www.example."), RecordType::A)).unwrap();
    assert_eq!(asked_www(&net), before + 1, "the refresh went to the authority");
    assert_eq!(fresh.cache_ttl, 60);
    assert_eq!(r.shared().records.get(&n("www.example."), 1, r.upstream().now()).unwrap().ttl_left, 60);
}

/// A stale NXDOMAIN speaks for its own name only: the names below it may exist by now, so
/// RFC 8020's walk up takes live denials only.
#[test]
fn a_stale_nxdomain_does_not_cover_the_names_below_it() {
    let (r, net) = resolver(base_zones(), &config(60));
    assert_eq!(block_on(r.resolve(&n("nx.example."), RecordType::A)).unwrap().rcode, rcode::NXDOMAIN);
    advance(&net, 61);
    kill(&net, "10.0.1.1");
    assert!(stale(&r, "nx.example.").unwrap().stale, "the name itself");
    assert_eq!(stale(&r, "below.nx.example."), Err(ResolveError::NotInCache), "not the names below it");
}

/// What the worker reads to keep serve-stale from standing in for a strict transport rule:
/// a resolution that ran an exchange under a strict plan says so.
#[test]
fn a_resolution_under_a_strict_plan_says_so() {
    let strict = adox_api::policy::PolicySpec {
        zone: Some("example.".into()),
        mode: Some(adox_api::policy::Mode::Strict),
        transports: Some(vec![adox_api::policy::Transport::Dot]),
        auth: Some(adox_api::policy::Auth::Pkix),
        ..Default::default()
    };
    let cfg = Config { policies: vec![strict], ..config(60) };
    let (r, _net) = resolver(base_zones(), &cfg);
    r.shared().policies.store(crate::upstream::policy::PolicyTable::compile(&cfg.policies().unwrap()).unwrap());
    let watch = std::rc::Rc::new(Watch::default());
    block_on(r.resolve_watching(&n("www.example."), RecordType::A, watch.clone(), false)).unwrap();
    assert!(watch.met_strict.get(), "example.'s servers are strict");
    let watch = std::rc::Rc::new(Watch::default());
    block_on(r.resolve_watching(&n("a.root."), RecordType::A, watch.clone(), false)).unwrap();
    assert!(!watch.met_strict.get(), "the root's are not");
}

/// What the worker reads before it keeps a failure (`cache.failure_ttl_s`): a resolution
/// that failed because its zone's only server was busy with our own queries says so; one
/// whose server is simply gone does not.
#[test]
fn a_failure_of_our_own_load_says_so() {
    let mut cfg = config(60);
    cfg.resolver.max_outstanding_per_server = 1;
    cfg.cache.serve_stale = false;
    let (r, net) = resolver(base_zones(), &cfg);
    block_on(r.resolve(&n("www.example."), RecordType::A)).unwrap();
    let held = r.reserve(ip("10.0.1.1"), &n("example.")).unwrap();
    let watch = std::rc::Rc::new(Watch::default());
    let busy = block_on(r.resolve_watching(&n("busy.example."), RecordType::A, watch.clone(), false));
    assert!(matches!(busy, Err(ResolveError::NoReachableAuthority { .. })), "{busy:?}");
    assert!(watch.local_fault.get(), "the only server was busy with our own queries");
    drop(held);
    kill(&net, "10.0.1.1");
    let watch = std::rc::Rc::new(Watch::default());
    let gone = block_on(r.resolve_watching(&n("gone.example."), RecordType::A, watch.clone(), false));
    assert!(matches!(gone, Err(ResolveError::NoReachableAuthority { .. })), "{gone:?}");
    assert!(!watch.local_fault.get(), "a server that does not answer is the name's trouble");
}

/// Keys that could not be fetched for a reason of our own (the zone's only server busy
/// with our own queries) are no verdict on the zone: the lookup fails and nothing is
/// cached as bogus. A server that does not answer still makes them bogus (DNSKEY missing).
#[test]
fn keys_not_fetched_for_our_own_load_are_not_cached_as_bogus() {
    use crate::resolver::Budget;
    use crate::resolver::validate::Keys;
    let mut cfg = config(60);
    cfg.resolver.max_outstanding_per_server = 1;
    let (r, net) = zones().sign().resolver(&cfg);
    let (example, dnskey) = (n("example."), u16::from(RecordType::DNSKEY));
    let held = r.reserve(ip("10.0.1.1"), &example).unwrap();
    let budget = Budget::new(r.shared(), r.upstream().now());
    let keys = block_on(r.zone_keys(&example, &budget));
    assert!(matches!(keys, Err(ResolveError::NoReachableAuthority { .. })), "{keys:?}");
    assert!(r.shared().records.meta(&example, dnskey, r.upstream().now()).is_none(), "nothing cached as bogus");
    drop(held);
    kill(&net, "10.0.1.1");
    let budget = Budget::new(r.shared(), r.upstream().now());
    let keys = block_on(r.zone_keys(&example, &budget));
    assert!(matches!(keys, Ok(Keys::Not(Security::Bogus(_)))), "{keys:?}");
}
