//! Operator overrides compiled for the query path, and the store workers read them from.
//!
//! A [`PolicyTable`] indexes policies by zone, so a lookup walks the labels of the zone
//! being resolved (a handful of hash lookups), never the whole list. Among the policies of
//! the most specific matching zone, the one with the longest matching nameserver suffix
//! wins, then the longest address prefix (requirements.md, "Precedence"). Workers read the
//! current table through [`PolicyStore`] without locks; a new table replaces it whole.
//!
//! The index is split into [`BUCKETS`] maps behind `Arc`s: cloning a table copies only the
//! bucket pointers, and changing one policy copies only its bucket. The control plane keeps
//! a working table, applies a batch of changes to it and publishes a clone, so a push into
//! a table of 100,000 policies copies a few dozen entries, not the whole table.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use adox_api::policy::{Policy, PolicyError};
use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use ipnet::IpNet;

use crate::acl::PrefixSet;

/// Buckets of the zone index (a power of two).
pub const BUCKETS: usize = 4096;

#[derive(Debug, Clone)]
struct Compiled {
    policy: Arc<Policy>,
    nameserver: Option<Name>,
    prefix: Option<(PrefixSet, u8)>,
}

impl Compiled {
    fn new(p: &Policy) -> Result<(Name, Self), PolicyError> {
        let zone = match &p.zone {
            Some(z) => parse_name("zone", z)?,
            None => Name::root(),
        };
        let nameserver = p.nameserver.as_deref().map(|n| parse_name("nameserver", n)).transpose()?;
        let prefix = match &p.address {
            Some(a) => {
                let net: IpNet = a
                    .parse()
                    .map_err(|_| PolicyError { field: "address", reason: format!("`{a}` is not a prefix") })?;
                Some((PrefixSet::new(&[net]), net.prefix_len()))
            }
            None => None,
        };
        Ok((zone, Self { policy: Arc::new(p.clone()), nameserver, prefix }))
    }

    /// Specificity within one zone: nameserver labels, then prefix length (-1 when absent).
    fn rank(&self) -> (i32, i32) {
        (
            self.nameserver.as_ref().map_or(-1, |n| crate::names::labels(n) as i32),
            self.prefix.as_ref().map_or(-1, |(_, len)| i32::from(*len)),
        )
    }

    fn matches(&self, nameserver: &Name, addr: IpAddr) -> bool {
        self.nameserver.as_ref().is_none_or(|n| n.zone_of(nameserver))
            && self.prefix.as_ref().is_none_or(|(set, _)| set.contains(addr))
    }
}

type Bucket = HashMap<Name, Vec<Compiled>>;

/// The compiled overrides.
#[derive(Debug, Clone)]
pub struct PolicyTable {
    buckets: Arc<[Arc<Bucket>]>,
    len: usize,
}

impl Default for PolicyTable {
    fn default() -> Self {
        Self { buckets: (0..BUCKETS).map(|_| Arc::new(Bucket::new())).collect(), len: 0 }
    }
}

fn parse_name(field: &'static str, s: &str) -> Result<Name, PolicyError> {
    Name::from_ascii(s).map(|n| crate::names::canonical(&n)).map_err(|e| PolicyError { field, reason: e.to_string() })
}

/// The bucket of a canonical zone name: a fixed hash, the same in every table.
fn bucket_of(zone: &Name) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    zone.hash(&mut h);
    (h.finish() as usize) & (BUCKETS - 1)
}

impl PolicyTable {
    /// Compiles normalized policies (see `adox_api::policy::PolicySpec::normalize`).
    pub fn compile(policies: &[Policy]) -> Result<Self, PolicyError> {
        let mut t = Self::default();
        for p in policies {
            t.insert(p)?;
        }
        Ok(t)
    }

    fn bucket_mut(&mut self, zone: &Name) -> &mut Bucket {
        let i = bucket_of(zone);
        // The bucket array itself is copied only when a published table still shares it.
        let buckets = Arc::make_mut(&mut self.buckets);
        Arc::make_mut(&mut buckets[i])
    }

    /// Adds one policy (its id must not be in the table; see [`PolicyTable::remove`]).
    pub fn insert(&mut self, p: &Policy) -> Result<(), PolicyError> {
        let (zone, c) = Compiled::new(p)?;
        if let Some(w) = p.warning() {
            tracing::warn!(policy = %p.id, zone = p.zone.as_deref().unwrap_or("."), "{w}");
        }
        self.bucket_mut(&zone).entry(zone).or_default().push(c);
        self.len += 1;
        Ok(())
    }

    /// Removes the policy with `p.id` filed under `p.zone`; true when it was there.
    pub fn remove(&mut self, p: &Policy) -> bool {
        let Ok(zone) = p.zone.as_deref().map_or(Ok(Name::root()), |z| parse_name("zone", z)) else {
            return false;
        };
        if !self.buckets[bucket_of(&zone)].get(&zone).is_some_and(|l| l.iter().any(|c| c.policy.id == p.id)) {
            return false;
        }
        let bucket = self.bucket_mut(&zone);
        if let Some(list) = bucket.get_mut(&zone) {
            list.retain(|c| c.policy.id != p.id);
            if list.is_empty() {
                bucket.remove(&zone);
            }
        }
        self.len -= 1;
        true
    }

    /// The override for (zone, nameserver name, nameserver address), if any: most specific
    /// zone first, then nameserver suffix, then prefix length.
    pub fn lookup(&self, zone: &Name, nameserver: &Name, addr: IpAddr) -> Option<&Arc<Policy>> {
        if self.len == 0 {
            return None;
        }
        let mut z = crate::names::canonical(zone);
        loop {
            if let Some(list) = self.buckets[bucket_of(&z)].get(&z)
                && let Some(best) = list.iter().filter(|c| c.matches(nameserver, addr)).max_by_key(|c| c.rank())
            {
                return Some(&best.policy);
            }
            if z.is_root() {
                return None;
            }
            z = z.base_name();
        }
    }

    /// Policies compiled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The current table, shared by every worker: read without locks, replaced whole.
#[derive(Debug, Default)]
pub struct PolicyStore(ArcSwap<PolicyTable>);

impl PolicyStore {
    /// A store holding `table`.
    pub fn new(table: PolicyTable) -> Self {
        Self(ArcSwap::from_pointee(table))
    }

    /// The current table; a worker loads it once per step so a change applies to the next
    /// query.
    pub fn load(&self) -> arc_swap::Guard<Arc<PolicyTable>> {
        self.0.load()
    }

    /// Replaces the table; the old one is freed by whoever drops its last reference.
    pub fn store(&self, table: PolicyTable) {
        self.0.store(Arc::new(table));
    }

    /// Replaces the table and hands the old one back, so that the caller (the control
    /// plane) can free it off the workers once no worker holds it
    /// (`Arc::strong_count` is 1: arc-swap turns every reader's guard into a counted
    /// reference when the pointer is swapped).
    pub fn swap(&self, table: PolicyTable) -> Arc<PolicyTable> {
        self.0.swap(Arc::new(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adox_api::policy::{Mode, PolicySpec};

    fn pol(id: &str, zone: Option<&str>, ns: Option<&str>, addr: Option<&str>, mode: Mode) -> Policy {
        PolicySpec {
            zone: zone.map(Into::into),
            nameserver: ns.map(Into::into),
            address: addr.map(Into::into),
            mode: Some(mode),
            ..PolicySpec::default()
        }
        .normalize(id.into(), false)
        .unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn id(t: &PolicyTable, zone: &str, ns: &str, ip: &str) -> Option<String> {
        t.lookup(&n(zone), &n(ns), ip.parse().unwrap()).map(|p| p.id.clone())
    }

    #[test]
    fn most_specific_zone_then_nameserver_then_prefix() {
        let t = PolicyTable::compile(&[
            pol("all", None, None, None, Mode::Opportunistic),
            pol("lab", Some("lab"), None, None, Mode::Cleartext),
            pol("alpha", Some("alpha.lab"), None, None, Mode::Strict),
            pol("alpha-ns1", Some("alpha.lab"), Some("ns1.alpha.lab"), None, Mode::Cleartext),
            pol("alpha-net", Some("alpha.lab"), None, Some("127.53.1.0/24"), Mode::Opportunistic),
            pol("alpha-host", Some("alpha.lab"), None, Some("127.53.1.2"), Mode::Cleartext),
        ])
        .unwrap();
        assert_eq!(id(&t, "www.alpha.lab.", "ns9.other.", "192.0.2.1").as_deref(), Some("alpha"));
        assert_eq!(
            id(&t, "alpha.lab.", "NS1.alpha.lab.", "127.53.1.2").as_deref(),
            Some("alpha-ns1"),
            "ns beats prefix"
        );
        assert_eq!(id(&t, "alpha.lab.", "ns2.alpha.lab.", "127.53.1.2").as_deref(), Some("alpha-host"));
        assert_eq!(id(&t, "alpha.lab.", "ns2.alpha.lab.", "127.53.1.3").as_deref(), Some("alpha-net"));
        assert_eq!(id(&t, "beta.lab.", "ns1.beta.lab.", "127.53.2.1").as_deref(), Some("lab"));
        assert_eq!(id(&t, "example.", "a.example.", "192.0.2.1").as_deref(), Some("all"));
    }

    #[test]
    fn a_zone_policy_that_does_not_match_falls_to_the_parent() {
        let t = PolicyTable::compile(&[
            pol("lab", Some("lab"), None, None, Mode::Cleartext),
            pol("alpha-ns1", Some("alpha.lab"), Some("ns1.alpha.lab"), None, Mode::Strict),
        ])
        .unwrap();
        assert_eq!(id(&t, "alpha.lab.", "ns2.alpha.lab.", "127.53.1.2").as_deref(), Some("lab"));
        assert!(id(&t, "other.", "ns.other.", "192.0.2.1").is_none());
    }

    #[test]
    fn store_swaps_whole_tables() {
        let s = PolicyStore::new(PolicyTable::default());
        assert!(s.load().is_empty());
        let held = s.load();
        s.store(PolicyTable::compile(&[pol("x", None, None, None, Mode::Cleartext)]).unwrap());
        assert_eq!(s.load().len(), 1);
        assert!(held.is_empty(), "a reader keeps the table it loaded");
    }

    #[test]
    fn incremental_changes_leave_published_clones_alone() {
        let mut t = PolicyTable::compile(&[pol("lab", Some("lab"), None, None, Mode::Cleartext)]).unwrap();
        let published = t.clone();
        let strict = pol("alpha", Some("alpha.lab"), None, None, Mode::Strict);
        t.insert(&strict).unwrap();
        assert_eq!(id(&t, "www.alpha.lab.", "ns.x.", "192.0.2.1").as_deref(), Some("alpha"));
        assert_eq!(id(&published, "www.alpha.lab.", "ns.x.", "192.0.2.1").as_deref(), Some("lab"));
        assert!(t.remove(&strict));
        assert!(!t.remove(&strict), "removing twice finds nothing");
        assert_eq!(id(&t, "www.alpha.lab.", "ns.x.", "192.0.2.1").as_deref(), Some("lab"));
        assert_eq!((t.len(), published.len()), (1, 1));
    }
}
