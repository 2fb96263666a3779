//! One policy zone's triggers as a table: a key per trigger (its kind and what it matches)
//! and the rule at it, in 4096 `Arc`ed buckets. Publishing a changed zone clones bucket
//! pointers, and a change copies only the buckets it touches, so an IXFR of k changes
//! costs O(k) whatever the zone's size, and workers go on reading the previous table.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::RData;

use crate::admission::fold;

/// Buckets per table (a power of two).
const BUCKETS: usize = 4096;

/// Local data records one trigger keeps at most (more are ignored): each is looked at on
/// every query the trigger matches.
pub const MAX_LOCAL_RECORDS: usize = 64;

/// What a trigger matches (the first octet of its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// The query name (or a name of the answer's CNAME chain), exactly.
    Qname = 0,
    /// Names below a name (`*.example.com` in the policy zone).
    QnameWild = 1,
    /// An address in the answer (`rpz-ip`).
    Ip = 2,
    /// A nameserver name of the answer's zone, exactly (`rpz-nsdname`).
    Nsdname = 3,
    /// Nameserver names below a name.
    NsdnameWild = 4,
    /// An address of a nameserver of the answer's zone (`rpz-nsip`).
    Nsip = 5,
}

const TAGS: usize = 6;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `CNAME .`: the name does not exist.
    Nxdomain,
    /// `CNAME *.`: the name exists, with no data of any type.
    Nodata,
    /// `CNAME rpz-passthru.`: answer normally and stop looking (an allow list).
    Passthru,
    /// `CNAME rpz-drop.`: no answer at all.
    Drop,
    /// `CNAME rpz-tcp-only.`: over UDP an empty truncated answer, over TCP the answer.
    TcpOnly,
}

/// The rule at a trigger: an action, or local data (records answered in place of the
/// real ones: a CNAME to a walled garden, addresses).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// A policy action, with the TTL of its record.
    Action(Action, u32),
    /// Local data: (TTL, RDATA) of each record.
    Local(Arc<Vec<(u32, RData)>>),
}

impl Rule {
    /// The rule one record of the policy zone makes (its CNAME target says the action).
    pub fn of(ttl: u32, rdata: &RData) -> Self {
        if let RData::CNAME(c) = rdata {
            let target = c.0.to_ascii().to_ascii_lowercase();
            let action = match target.as_str() {
                "." => Some(Action::Nxdomain),
                "*." => Some(Action::Nodata),
                "rpz-passthru." => Some(Action::Passthru),
                "rpz-drop." => Some(Action::Drop),
                "rpz-tcp-only." => Some(Action::TcpOnly),
                _ => None,
            };
            if let Some(a) = action {
                return Self::Action(a, ttl);
            }
        }
        Self::Local(Arc::new(vec![(ttl, rdata.clone())]))
    }
}

/// A random-keyed hash of keys, fixed for the life of one zone's table (the buckets of a
/// changed table must be where the previous one had them). Keys come from the policy feed,
/// lookups from clients; nobody outside knows the keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self { k0: rand::random::<u64>() | 1, k1: rand::random::<u64>() | 1 }
    }
}

/// Folded 64 x 64 bit multiply over 8 octets at a time.
#[derive(Debug)]
pub struct FoldHasher {
    state: u64,
    k1: u64,
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            self.state = fold(self.state ^ w, self.k1);
        }
        let rest = chunks.remainder();
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        // The length goes in too: "ab" and "ab\0" differ.
        self.state = fold(self.state ^ u64::from_le_bytes(tail), self.k1 ^ (bytes.len() as u64));
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { state: self.k0, k1: self.k1 }
    }
}

type Bucket = HashMap<Box<[u8]>, Rule, KeyHasher>;

/// The longest key: a tag, then a wire name (255) or a family, length and address (18).
pub const MAX_KEY: usize = 1 + 255;

/// A key on the stack: a tag and what follows.
#[derive(Debug)]
pub struct Key {
    buf: [u8; MAX_KEY],
    len: usize,
}

impl Key {
    /// The key of `tag` over `payload` (a lowercased wire name), `None` if too long.
    pub fn name(tag: Tag, payload: &[u8]) -> Option<Self> {
        if payload.len() >= MAX_KEY {
            return None;
        }
        let mut buf = [0u8; MAX_KEY];
        buf[0] = tag as u8;
        buf[1..=payload.len()].copy_from_slice(payload);
        Some(Self { buf, len: 1 + payload.len() })
    }

    /// The key of an address trigger: `addr` masked to `len` bits.
    pub fn net(tag: Tag, addr: IpAddr, len: u8) -> Self {
        let mut buf = [0u8; MAX_KEY];
        buf[0] = tag as u8;
        let n = match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
                buf[1] = 4;
                buf[3..7].copy_from_slice(&bits.to_be_bytes());
                7
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
                buf[1] = 6;
                buf[3..19].copy_from_slice(&bits.to_be_bytes());
                19
            }
        };
        buf[2] = len;
        Self { buf, len: n }
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One policy zone's triggers.
#[derive(Debug, Clone)]
pub struct Table {
    hasher: KeyHasher,
    buckets: Arc<[Arc<Bucket>]>,
    /// Rules per tag (a lookup skips a tag with none).
    counts: [usize; TAGS],
    /// Rules per (tag, family, prefix length) of the address tags, and the lengths in use,
    /// longest first (longest-prefix match tries only those).
    prefix_counts: HashMap<(u8, u8, u8), usize>,
    prefix_lens: [Vec<u8>; 4],
    /// Rules per (wildcard tag, labels of the name below which it matches), and a bit per
    /// label count in use: a query name is looked up only at the depths some wildcard has
    /// (a name of 127 labels costs no 127 lookups).
    wild_counts: HashMap<(u8, u8), usize>,
    wild_depths: [u128; 2],
    /// Records held (an action is one, local data one per record): what
    /// `rpz.max_records` bounds.
    records: usize,
}

fn size_of_rule(rule: &Rule) -> usize {
    match rule {
        Rule::Action(..) => 1,
        Rule::Local(list) => list.len(),
    }
}

/// The labels of a wire name (the root has none).
pub fn labels_of(wire: &[u8]) -> u8 {
    let (mut at, mut n) = (0usize, 0u8);
    while let Some(&len) = wire.get(at)
        && len != 0
    {
        at += 1 + usize::from(len);
        n = n.saturating_add(1);
    }
    n
}

fn wild_slot(tag: u8) -> Option<usize> {
    match tag {
        t if t == Tag::QnameWild as u8 => Some(0),
        t if t == Tag::NsdnameWild as u8 => Some(1),
        _ => None,
    }
}

impl Default for Table {
    fn default() -> Self {
        let hasher = KeyHasher::default();
        Self {
            hasher,
            buckets: (0..BUCKETS).map(|_| Arc::new(Bucket::with_hasher(hasher))).collect(),
            counts: [0; TAGS],
            prefix_counts: HashMap::new(),
            prefix_lens: Default::default(),
            wild_counts: HashMap::new(),
            wild_depths: [0; 2],
            records: 0,
        }
    }
}

fn lens_slot(tag: u8, family: u8) -> Option<usize> {
    match (tag, family) {
        (t, 4) if t == Tag::Ip as u8 => Some(0),
        (t, 6) if t == Tag::Ip as u8 => Some(1),
        (t, 4) if t == Tag::Nsip as u8 => Some(2),
        (t, 6) if t == Tag::Nsip as u8 => Some(3),
        _ => None,
    }
}

impl Table {
    /// The bucket of a key: middle bits of its hash (a bucket's map probes from the low
    /// bits and tags with the top seven; taking either here would put every key of a
    /// bucket on one probe sequence).
    fn bucket_of(&self, key: &[u8]) -> usize {
        ((self.hasher.hash_one(key) >> 32) as usize) & (BUCKETS - 1)
    }

    /// The rule at `key`.
    pub fn get(&self, key: &Key) -> Option<&Rule> {
        let k = key.as_bytes();
        if self.counts[usize::from(k[0])] == 0 {
            return None;
        }
        self.buckets[self.bucket_of(k)].get(k)
    }

    /// Rules in the table.
    pub fn len(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Records held (see the field).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Whether the table has no rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any rule has this tag.
    pub fn has(&self, tag: Tag) -> bool {
        self.counts[tag as usize] > 0
    }

    /// The prefix lengths in use for an address tag and family, longest first.
    pub fn prefix_lens(&self, tag: Tag, v6: bool) -> &[u8] {
        lens_slot(tag as u8, if v6 { 6 } else { 4 }).map_or(&[], |i| &self.prefix_lens[i])
    }

    /// Whether a wildcard of `tag` matches below names of `labels` labels.
    pub fn wild_at(&self, tag: Tag, labels: u8) -> bool {
        wild_slot(tag as u8).is_some_and(|i| labels < 128 && self.wild_depths[i] & (1u128 << labels) != 0)
    }

    fn bucket_mut(&mut self, key: &[u8]) -> &mut Bucket {
        let i = self.bucket_of(key);
        let buckets = Arc::make_mut(&mut self.buckets);
        Arc::make_mut(&mut buckets[i])
    }

    fn counted(&mut self, key: &[u8], delta: isize) {
        let tag = usize::from(key[0]);
        self.counts[tag] = self.counts[tag].saturating_add_signed(delta);
        if let Some(slot) = wild_slot(key[0]) {
            let depth = labels_of(&key[1..]).min(127);
            let c = self.wild_counts.entry((key[0], depth)).or_default();
            *c = c.saturating_add_signed(delta);
            if *c == 0 {
                self.wild_counts.remove(&(key[0], depth));
                self.wild_depths[slot] &= !(1u128 << depth);
            } else {
                self.wild_depths[slot] |= 1u128 << depth;
            }
            return;
        }
        if let Some(slot) = key.get(1).and_then(|f| lens_slot(key[0], *f)) {
            let k = (key[0], key[1], key[2]);
            let c = self.prefix_counts.entry(k).or_default();
            *c = c.saturating_add_signed(delta);
            let len = key[2];
            let lens = &mut self.prefix_lens[slot];
            if *c == 0 {
                self.prefix_counts.remove(&k);
                lens.retain(|l| *l != len);
            } else if !lens.contains(&len) {
                lens.push(len);
                lens.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
    }

    /// Adds one record's rule at `key`: local data joins the local data there; an action
    /// replaces what was there (a trigger has one action).
    pub fn add(&mut self, key: &Key, rule: Rule) {
        let k = key.as_bytes();
        let bucket = self.bucket_mut(k);
        let mut added = size_of_rule(&rule) as isize;
        let fresh = match bucket.get_mut(k) {
            Some(Rule::Local(list)) if matches!(rule, Rule::Local(_)) => {
                if let Rule::Local(new) = rule {
                    let list = Arc::make_mut(list);
                    let before = list.len();
                    for r in new.iter() {
                        if list.len() < MAX_LOCAL_RECORDS && !list.contains(r) {
                            list.push(r.clone());
                        }
                    }
                    added = (list.len() - before) as isize;
                }
                false
            }
            Some(existing) => {
                added -= size_of_rule(existing) as isize;
                *existing = rule;
                false
            }
            None => {
                bucket.insert(k.into(), rule);
                true
            }
        };
        self.records = self.records.saturating_add_signed(added);
        if fresh {
            self.counted(k, 1);
        }
    }

    /// Removes one record's rule at `key` (IXFR deletions): the record from local data, or
    /// the action if it is that one. Returns whether anything went.
    pub fn remove(&mut self, key: &Key, rule: &Rule) -> bool {
        let k = key.as_bytes();
        if self.buckets[self.bucket_of(k)].get(k).is_none() {
            return false;
        }
        let bucket = self.bucket_mut(k);
        let (gone_records, empty) = match (bucket.get_mut(k), rule) {
            (Some(Rule::Local(list)), Rule::Local(gone)) => {
                let before = list.len();
                Arc::make_mut(list).retain(|r| !gone.contains(r));
                (before - list.len(), list.is_empty())
            }
            (Some(Rule::Action(a, _)), Rule::Action(b, _)) if a == b => (1, true),
            _ => (0, false),
        };
        if empty {
            bucket.remove(k);
            self.counted(k, -1);
        }
        self.records = self.records.saturating_sub(gone_records);
        gone_records > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for l in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
        out
    }

    #[test]
    fn rules_are_added_found_and_removed_and_published_tables_do_not_change() {
        let mut t = Table::default();
        let k = Key::name(Tag::Qname, &wire("bad.example.")).unwrap();
        t.add(&k, Rule::Action(Action::Nxdomain, 60));
        let published = t.clone();
        let a = Rule::of(30, &RData::A("192.0.2.1".parse().unwrap()));
        let b = Rule::of(30, &RData::A("192.0.2.2".parse().unwrap()));
        let garden = Key::name(Tag::Qname, &wire("garden.example.")).unwrap();
        t.add(&garden, a.clone());
        t.add(&garden, b.clone());
        assert_eq!((t.len(), t.records()), (2, 3));
        assert_eq!(published.len(), 1, "a published table does not see later changes");
        assert!(published.get(&garden).is_none());
        match t.get(&garden) {
            Some(Rule::Local(l)) => assert_eq!(l.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(t.remove(&garden, &a));
        assert_eq!(t.len(), 2, "one record of two went, the trigger stays");
        assert!(t.remove(&garden, &b));
        assert_eq!(t.len(), 1);
        assert!(!t.remove(&k, &Rule::Action(Action::Drop, 60)), "a different action is not removed");
        assert!(t.remove(&k, &Rule::Action(Action::Nxdomain, 5)));
        assert!(t.is_empty() && t.get(&k).is_none());
        let w = Key::name(Tag::QnameWild, &wire("wild.example.")).unwrap();
        t.add(&w, Rule::Action(Action::Nodata, 60));
        assert!(t.wild_at(Tag::QnameWild, 2) && !t.wild_at(Tag::QnameWild, 1) && !t.wild_at(Tag::QnameWild, 3));
        t.remove(&w, &Rule::Action(Action::Nodata, 60));
        assert!(!t.wild_at(Tag::QnameWild, 2));
    }

    #[test]
    fn address_keys_are_masked_and_prefix_lengths_tracked() {
        let mut t = Table::default();
        t.add(&Key::net(Tag::Ip, "192.0.2.77".parse().unwrap(), 24), Rule::Action(Action::Nxdomain, 60));
        t.add(&Key::net(Tag::Ip, "192.0.2.5".parse().unwrap(), 32), Rule::Action(Action::Drop, 60));
        assert_eq!(t.prefix_lens(Tag::Ip, false), &[32, 24]);
        assert!(t.get(&Key::net(Tag::Ip, "192.0.2.200".parse().unwrap(), 24)).is_some());
        assert!(t.get(&Key::net(Tag::Ip, "192.0.3.1".parse().unwrap(), 24)).is_none());
        assert!(t.prefix_lens(Tag::Nsip, false).is_empty());
        t.remove(&Key::net(Tag::Ip, "192.0.2.5".parse().unwrap(), 32), &Rule::Action(Action::Drop, 60));
        assert_eq!(t.prefix_lens(Tag::Ip, false), &[24]);
        let v6 = "2001:db8::1".parse().unwrap();
        t.add(&Key::net(Tag::Ip, v6, 48), Rule::Action(Action::Nodata, 60));
        assert_eq!(t.prefix_lens(Tag::Ip, true), &[48]);
        assert!(t.get(&Key::net(Tag::Ip, "2001:db8:0:ffff::9".parse().unwrap(), 48)).is_some());
    }
}
