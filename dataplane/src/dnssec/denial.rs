//! Authenticated denial of existence: NSEC (RFC 4035 section 5.4, RFC 6840 section 4)
//! and NSEC3 (RFC 5155 section 8, RFC 9276). The records given here have already been
//! verified; these functions only decide what they prove.

use std::cell::Cell;
use std::cmp::Ordering;

use hickory_proto::rr::Name;

use super::crypto::nsec3_hash;
use super::rdata::{Nsec, Nsec3, base32hex_decode, canonical_cmp, name_wire_lower};
use crate::names::{is_at_or_below, labels};

const T_NS: u16 = 2;
const T_SOA: u16 = 6;
const T_CNAME: u16 = 5;
const T_DS: u16 = 43;
const T_DNAME: u16 = 39;

/// What a set of denial records proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// The denial holds.
    Secure,
    /// The denial cannot be secure, for a reason that is not an attack: an opt-out span
    /// (the name may be an unsigned delegation) or NSEC3 parameters beyond our limits.
    Insecure(Insecure),
    /// The records do not prove the denial.
    Bogus(&'static str),
    /// The query's NSEC3 hash allowance ran out: a limit of this query, not a property of
    /// the data (never cached).
    Exhausted,
}

/// Why a denial is insecure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insecure {
    /// RFC 5155 opt-out covers the name.
    OptOut,
    /// NSEC3 iterations above the configured limit (RFC 9276 section 3.2): EDE 27.
    Iterations(u16),
    /// No NSEC3 record with a hash algorithm we know.
    UnknownHash,
}

/// Limits on denial work for one client query.
#[derive(Debug)]
pub struct Nsec3Limits<'a> {
    /// NSEC3 iterations above this make the answer insecure.
    pub max_iterations: u16,
    /// NSEC3 hashes this query may still compute.
    pub hashes_left: &'a Cell<u32>,
}

/// NSEC owner `owner` with next name `next` covers `name` (strictly between them in
/// canonical order; the last NSEC of a zone wraps to the apex).
fn nsec_covers(owner: &Name, next: &Name, name: &Name) -> bool {
    if canonical_cmp(owner, name) != Ordering::Less {
        return false;
    }
    if canonical_cmp(owner, next) == Ordering::Less {
        canonical_cmp(name, next) == Ordering::Less
    } else {
        // The last NSEC of the zone: its next name is the apex, and it covers only names
        // inside the zone.
        next.zone_of(name)
    }
}

/// An NSEC at an ancestor of `name` that is a delegation point (NS without SOA) or has a
/// DNAME says nothing about names below it (RFC 6840 section 4.1).
fn nsec_usable_for(owner: &Name, nsec: &Nsec, name: &Name) -> bool {
    if owner == name || !owner.zone_of(name) {
        return true;
    }
    !((nsec.types.has(T_NS) && !nsec.types.has(T_SOA)) || nsec.types.has(T_DNAME))
}

/// The longest common ancestor of two names.
fn common_ancestor(a: &Name, b: &Name) -> Name {
    let mut n = a.clone();
    while !n.zone_of(b) {
        n = n.base_name();
    }
    n
}

/// The closest encloser of `qname` that an NSEC covering it (`owner` to `next`) shows:
/// the longer of the names' common ancestors with either end.
fn nsec_closest_encloser(qname: &Name, owner: &Name, next: &Name) -> Name {
    let a = common_ancestor(qname, owner);
    let b = common_ancestor(qname, next);
    if labels(&a) >= labels(&b) { a } else { b }
}

/// Why a denial record at the name itself does not prove NODATA (RFC 4035 section 5.4,
/// RFC 5155 sections 8.5-8.6): `why` words each refusal for NSEC or NSEC3.
fn nodata_at(types: &super::rdata::TypeBitmap, qname: &Name, qtype: u16, why: &[&'static str; 3]) -> Proof {
    if types.has(qtype) || types.has(T_CNAME) {
        return Proof::Bogus(why[0]);
    }
    if qtype == T_DS && types.has(T_SOA) && !qname.is_root() {
        return Proof::Bogus(why[1]);
    }
    if qtype != T_DS && types.has(T_NS) && !types.has(T_SOA) {
        return Proof::Bogus(why[2]);
    }
    Proof::Secure
}

const NSEC_NODATA: [&str; 3] =
    ["the NSEC lists the type", "the child's NSEC cannot deny a DS", "the parent's NSEC at a delegation"];
const NSEC3_NODATA: [&str; 3] =
    ["the NSEC3 lists the type", "the child's NSEC3 cannot deny a DS", "the parent's NSEC3 at a delegation"];

fn wildcard_of(name: &Name) -> Option<Name> {
    let mut w = Name::from_ascii("*").ok()?.append_name(name).ok()?;
    w.set_fqdn(true);
    Some(w)
}

/// The NSEC covering `name`, if any usable one does.
fn nsec_covering<'a>(nsecs: &'a [(Name, Nsec)], name: &Name) -> Option<&'a (Name, Nsec)> {
    nsecs.iter().find(|(o, n)| nsec_covers(o, &n.next, name) && nsec_usable_for(o, n, name))
}

/// The wildcard whose absence an NSEC covering `qname` (`owner` to `next`) leaves to be
/// proven for an NXDOMAIN: the one at the closest encloser it shows. Aggressive negative
/// caching (RFC 8198) looks up the span that may cover it.
pub fn nsec_wildcard_to_deny(qname: &Name, owner: &Name, next: &Name) -> Option<Name> {
    wildcard_of(&nxdomain_encloser(qname, owner, next)?)
}

/// The closest encloser an NSEC covering `qname` (`owner` to `next`) shows for an
/// NXDOMAIN, or `None` when `next` lies below `qname`: then `qname` exists, as an empty
/// non-terminal. Except the immediate successor `\000.qname` of RFC 4470's minimally
/// covering NSECs (online signers), which only a literal `\000` child would match and
/// which says nothing of where `qname`'s ancestors end: the owner side shows that.
fn nxdomain_encloser(qname: &Name, owner: &Name, next: &Name) -> Option<Name> {
    let successor = labels(next) == labels(qname) + 1 && next.iter().next() == Some(&[0u8][..]);
    if successor && next.base_name() == *qname {
        return Some(common_ancestor(qname, owner));
    }
    if crate::names::is_below(next, qname) {
        return None;
    }
    Some(nsec_closest_encloser(qname, owner, next))
}

/// NXDOMAIN with NSEC: `qname` is covered, and so is the wildcard at its closest encloser.
pub fn nsec_nxdomain(qname: &Name, nsecs: &[(Name, Nsec)]) -> Proof {
    let Some((owner, nsec)) = nsec_covering(nsecs, qname) else {
        return Proof::Bogus("no NSEC covers the name");
    };
    let Some(ce) = nxdomain_encloser(qname, owner, &nsec.next) else {
        return Proof::Bogus("the name is an empty non-terminal");
    };
    let Some(wild) = wildcard_of(&ce) else { return Proof::Bogus("bad closest encloser") };
    if nsecs.iter().any(|(o, _)| *o == wild) {
        return Proof::Bogus("the wildcard exists");
    }
    if nsec_covering(nsecs, &wild).is_none() {
        return Proof::Bogus("no NSEC covers the wildcard");
    }
    Proof::Secure
}

/// NODATA with NSEC: an NSEC at `qname` without the type (or an empty non-terminal, or a
/// wildcard without the type).
pub fn nsec_nodata(qname: &Name, qtype: u16, nsecs: &[(Name, Nsec)]) -> Proof {
    if let Some((_, nsec)) = nsecs.iter().find(|(o, _)| o == qname) {
        return nodata_at(&nsec.types, qname, qtype, &NSEC_NODATA);
    }
    if let Some((owner, nsec)) = nsec_covering(nsecs, qname) {
        // An empty non-terminal: the next name lies below the asked one.
        if crate::names::is_below(&nsec.next, qname) {
            return Proof::Secure;
        }
        let ce = nsec_closest_encloser(qname, owner, &nsec.next);
        if let Some(wild) = wildcard_of(&ce)
            && let Some((_, w)) = nsecs.iter().find(|(o, _)| *o == wild)
            && !w.types.has(qtype)
            && !w.types.has(T_CNAME)
        {
            return Proof::Secure;
        }
    }
    Proof::Bogus("no NSEC proves the type absent")
}

/// A wildcard expansion of `qname` from `*.parent`: `qname` itself must not exist, and the
/// closest encloser the covering NSEC shows must be the wildcard's parent (no closer name
/// exists that would have blocked the expansion).
pub fn nsec_wildcard_answer(qname: &Name, wildcard_parent: &Name, nsecs: &[(Name, Nsec)]) -> Proof {
    let Some((owner, nsec)) = nsec_covering(nsecs, qname) else {
        return Proof::Bogus("no NSEC proves the wildcard expansion");
    };
    let ce = nsec_closest_encloser(qname, owner, &nsec.next);
    if ce != *wildcard_parent {
        return Proof::Bogus("the wildcard is not at the closest encloser");
    }
    Proof::Secure
}

/// Whether the denial records show `name` as a delegation without DS: an NSEC or NSEC3 at
/// `name` with NS and without SOA and DS. `Some(false)`: a record at `name` shows no
/// delegation; `None`: no record matches `name`.
pub fn delegation_without_ds(
    name: &Name,
    zone: &Name,
    nsecs: &[(Name, Nsec)],
    nsec3s: &[(Name, Nsec3)],
    limits: &Nsec3Limits<'_>,
) -> Option<bool> {
    let delegation = |t: &super::rdata::TypeBitmap| t.has(T_NS) && !t.has(T_SOA) && !t.has(T_DS);
    if let Some((_, n)) = nsecs.iter().find(|(o, _)| o == name) {
        return Some(delegation(&n.types));
    }
    let set = Hashed::new(zone, nsec3s);
    if set.check_params(limits).is_err() {
        return None;
    }
    let h = set.hash(name, limits).ok()?;
    set.matching(&h).map(|n| delegation(&n.types))
}

/// NSEC3 records of one zone with their hashed owner names decoded.
struct Hashed<'a> {
    zone: &'a Name,
    items: Vec<(Vec<u8>, &'a Nsec3)>,
}

impl<'a> Hashed<'a> {
    fn new(zone: &'a Name, nsec3s: &'a [(Name, Nsec3)]) -> Self {
        let items = nsec3s
            .iter()
            // RFC 5155 section 8.2: unknown hash algorithms and flags are ignored.
            .filter(|(o, n)| {
                n.hash_algorithm == 1 && n.flags & !1 == 0 && labels(o) == labels(zone) + 1 && zone.zone_of(o)
            })
            .filter_map(|(o, n)| {
                let first = o.iter().next()?;
                let h = base32hex_decode(first)?;
                (h.len() == n.next_hash.len()).then_some((h, n))
            })
            .collect();
        Self { zone, items }
    }

    /// The hash of `name` under the zone's parameters (those of the first record).
    fn hash(&self, name: &Name, limits: &Nsec3Limits<'_>) -> Result<Vec<u8>, Proof> {
        let Some((_, p)) = self.items.first() else { return Err(Proof::Insecure(Insecure::UnknownHash)) };
        let left = limits.hashes_left.get();
        if left == 0 {
            return Err(Proof::Exhausted);
        }
        limits.hashes_left.set(left - 1);
        Ok(nsec3_hash(&name_wire_lower(name), &p.salt, p.iterations))
    }

    fn matching(&self, h: &[u8]) -> Option<&'a Nsec3> {
        self.items.iter().find(|(o, _)| o == h).map(|(_, n)| *n)
    }

    fn covering(&self, h: &[u8]) -> Option<&'a Nsec3> {
        self.items
            .iter()
            .find(|(o, n)| {
                let (o, next) = (o.as_slice(), n.next_hash.as_slice());
                if o < next {
                    o < h && h < next
                } else {
                    // The last NSEC3 of the chain wraps around to the first hash.
                    h > o || h < next
                }
            })
            .map(|(_, n)| *n)
    }

    /// RFC 5155 section 8.3: the closest encloser of `qname` (a matched ancestor) and the
    /// NSEC3 covering the next closer name.
    fn closest_encloser(&self, qname: &Name, limits: &Nsec3Limits<'_>) -> Result<(Name, &'a Nsec3), Proof> {
        let mut next_closer: Option<Vec<u8>> = None;
        let mut cur = qname.clone();
        loop {
            let h = self.hash(&cur, limits)?;
            if let Some(m) = self.matching(&h) {
                if cur == *qname {
                    return Err(Proof::Bogus("the name exists"));
                }
                // RFC 5155 section 8.3: a delegation point or a DNAME cannot be the closest
                // encloser (the name's data lives in another zone, or is redirected).
                if m.types.has(T_DNAME) || (m.types.has(T_NS) && !m.types.has(T_SOA)) {
                    return Err(Proof::Bogus("the closest encloser is a delegation or a DNAME"));
                }
                let nc = next_closer.ok_or(Proof::Bogus("no next closer"))?;
                let cover = self.covering(&nc).ok_or(Proof::Bogus("no NSEC3 covers the next closer name"))?;
                return Ok((cur, cover));
            }
            if cur == *self.zone || cur.is_root() {
                return Err(Proof::Bogus("no closest encloser"));
            }
            next_closer = Some(h);
            cur = cur.base_name();
        }
    }

    fn check_params(&self, limits: &Nsec3Limits<'_>) -> Result<(), Proof> {
        match self.items.first() {
            None => Err(Proof::Insecure(Insecure::UnknownHash)),
            Some((_, p)) if p.iterations > limits.max_iterations => {
                Err(Proof::Insecure(Insecure::Iterations(p.iterations)))
            }
            Some(_) => Ok(()),
        }
    }
}

/// NXDOMAIN with NSEC3 (RFC 5155 section 8.4).
pub fn nsec3_nxdomain(qname: &Name, zone: &Name, nsec3s: &[(Name, Nsec3)], limits: &Nsec3Limits<'_>) -> Proof {
    let set = Hashed::new(zone, nsec3s);
    if let Err(p) = set.check_params(limits) {
        return p;
    }
    let (ce, nc_cover) = match set.closest_encloser(qname, limits) {
        Ok(x) => x,
        Err(p) => return p,
    };
    let Some(wild) = wildcard_of(&ce) else { return Proof::Bogus("bad closest encloser") };
    let h = match set.hash(&wild, limits) {
        Ok(h) => h,
        Err(p) => return p,
    };
    if set.covering(&h).is_none() {
        return Proof::Bogus("no NSEC3 covers the wildcard");
    }
    if nc_cover.opt_out() {
        // An opt-out span may hide an unsigned delegation: not provably absent.
        return Proof::Insecure(Insecure::OptOut);
    }
    Proof::Secure
}

/// NODATA with NSEC3 (RFC 5155 sections 8.5 to 8.7).
pub fn nsec3_nodata(
    qname: &Name,
    qtype: u16,
    zone: &Name,
    nsec3s: &[(Name, Nsec3)],
    limits: &Nsec3Limits<'_>,
) -> Proof {
    let set = Hashed::new(zone, nsec3s);
    if let Err(p) = set.check_params(limits) {
        return p;
    }
    let h = match set.hash(qname, limits) {
        Ok(h) => h,
        Err(p) => return p,
    };
    if let Some(n) = set.matching(&h) {
        return nodata_at(&n.types, qname, qtype, &NSEC3_NODATA);
    }
    let (ce, nc_cover) = match set.closest_encloser(qname, limits) {
        Ok(x) => x,
        Err(p) => return p,
    };
    if nc_cover.opt_out() {
        // RFC 5155 section 8.6 (and erratum 3441 for other types): under an opt-out span
        // the name may be an unsigned delegation, or an empty non-terminal above one.
        return Proof::Insecure(Insecure::OptOut);
    }
    if qtype == T_DS {
        return Proof::Bogus("no NSEC3 for the DS");
    }
    // RFC 5155 section 8.7: a wildcard NODATA.
    let Some(wild) = wildcard_of(&ce) else { return Proof::Bogus("bad closest encloser") };
    let h = match set.hash(&wild, limits) {
        Ok(h) => h,
        Err(p) => return p,
    };
    match set.matching(&h) {
        Some(w) if !w.types.has(qtype) && !w.types.has(T_CNAME) => Proof::Secure,
        _ => Proof::Bogus("no NSEC3 proves the type absent"),
    }
}

/// A wildcard expansion with NSEC3 (RFC 5155 section 8.8): the next closer name below
/// the wildcard's parent is covered.
pub fn nsec3_wildcard_answer(
    qname: &Name,
    wildcard_parent: &Name,
    zone: &Name,
    nsec3s: &[(Name, Nsec3)],
    limits: &Nsec3Limits<'_>,
) -> Proof {
    let set = Hashed::new(zone, nsec3s);
    if let Err(p) = set.check_params(limits) {
        return p;
    }
    if !is_at_or_below(qname, wildcard_parent) || labels(qname) <= labels(wildcard_parent) {
        return Proof::Bogus("bad wildcard expansion");
    }
    let next_closer = qname.trim_to(labels(wildcard_parent) + 1);
    let h = match set.hash(&next_closer, limits) {
        Ok(h) => h,
        Err(p) => return p,
    };
    match set.covering(&h) {
        Some(n) if n.opt_out() => Proof::Insecure(Insecure::OptOut),
        Some(_) => Proof::Secure,
        None => Proof::Bogus("no NSEC3 proves the wildcard expansion"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnssec::rdata::TypeBitmap;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    /// A bitmap with the given types (window 0 only).
    fn bitmap(types: &[u16]) -> TypeBitmap {
        let mut octets = [0u8; 32];
        for t in types {
            octets[usize::from(*t / 8)] |= 0x80 >> (t % 8);
        }
        let len = octets.iter().rposition(|b| *b != 0).map_or(1, |i| i + 1);
        let mut raw = vec![0, len as u8];
        raw.extend_from_slice(&octets[..len]);
        TypeBitmap::parse(&raw).unwrap()
    }

    fn nsec(owner: &str, next: &str, types: &[u16]) -> (Name, Nsec) {
        (n(owner), Nsec { next: n(next), types: bitmap(types) })
    }

    /// The zone of RFC 4035 appendix A, reduced: example. a.example. (delegation)
    /// ai.example. b.example. (delegation, no DS) ns1 ns2 *.w x.w x.y.w xx.
    fn zone() -> Vec<(Name, Nsec)> {
        vec![
            nsec("example.", "a.example.", &[2, 6, 15, 46, 47, 48]),
            nsec("a.example.", "ai.example.", &[2, 43, 46, 47]),
            nsec("ai.example.", "b.example.", &[1, 13, 28, 46, 47]),
            nsec("b.example.", "ns1.example.", &[2, 46, 47]),
            nsec("ns1.example.", "ns2.example.", &[1, 46, 47]),
            nsec("ns2.example.", "*.w.example.", &[1, 46, 47]),
            nsec("*.w.example.", "x.w.example.", &[15, 46, 47]),
            nsec("x.w.example.", "x.y.w.example.", &[15, 46, 47]),
            nsec("x.y.w.example.", "xx.example.", &[15, 46, 47]),
            nsec("xx.example.", "example.", &[1, 13, 28, 46, 47]),
        ]
    }

    #[test]
    fn rfc_4035_b_2_name_error() {
        let z = zone();
        // ml.example.: covered by b.example. -> ns1.example.; *.example. by example. -> a.example.
        assert_eq!(nsec_nxdomain(&n("ml.example."), &z), Proof::Secure);
        // Without the wildcard's NSEC, not proven.
        let partial: Vec<_> = z.iter().filter(|(o, _)| *o != n("example.")).cloned().collect();
        assert_eq!(nsec_nxdomain(&n("ml.example."), &partial), Proof::Bogus("no NSEC covers the wildcard"));
        // An existing name is not denied.
        assert_eq!(nsec_nxdomain(&n("ai.example."), &z), Proof::Bogus("no NSEC covers the name"));
    }

    /// An NSEC whose next name lies below the asked name shows that name as an empty
    /// non-terminal: it proves NODATA there, never NXDOMAIN (which would deny the names
    /// below it too, RFC 8020).
    #[test]
    fn an_empty_non_terminal_is_never_denied_as_nxdomain() {
        let nsecs = vec![nsec("example.", "x.ent.example.", &[2, 6, 46, 47, 48])];
        assert_eq!(nsec_nxdomain(&n("ent.example."), &nsecs), Proof::Bogus("the name is an empty non-terminal"));
        assert_eq!(nsec_nodata(&n("ent.example."), 1, &nsecs), Proof::Secure);
        // RFC 4470 section 4: an online signer's NSEC from just before the name to its
        // immediate successor covers it, and proves NXDOMAIN.
        let succ = Name::from_labels(vec![vec![0u8], b"nx".to_vec(), b"example".to_vec()]).unwrap();
        let nsecs = vec![
            (n("nw.example."), Nsec { next: succ, types: bitmap(&[46, 47]) }),
            (n("example."), Nsec { next: n("a.example."), types: bitmap(&[2, 6, 46, 47, 48]) }),
        ];
        assert_eq!(nsec_nxdomain(&n("nx.example."), &nsecs), Proof::Secure);
    }

    #[test]
    fn rfc_4035_b_3_no_data_and_b_7_wildcard_no_data() {
        let z = zone();
        assert_eq!(nsec_nodata(&n("ns1.example."), 15, &z), Proof::Secure);
        assert_eq!(nsec_nodata(&n("ns1.example."), 1, &z), Proof::Bogus("the NSEC lists the type"));
        // a.z.w.example. AAAA: covered by x.y.w -> xx, wildcard *.w has MX only.
        assert_eq!(nsec_nodata(&n("a.z.w.example."), 28, &z), Proof::Secure);
        assert_eq!(nsec_nodata(&n("a.z.w.example."), 15, &z), Proof::Bogus("no NSEC proves the type absent"));
        // Empty non-terminal y.w.example.
        assert_eq!(nsec_nodata(&n("y.w.example."), 1, &z), Proof::Secure);
    }

    #[test]
    fn rfc_6840_4_1_parent_side_nsec_proves_only_the_ds() {
        let z = zone();
        // b.example. is an insecure delegation: no DS, proven.
        assert_eq!(nsec_nodata(&n("b.example."), T_DS, &z), Proof::Secure);
        // But it cannot deny other types at the delegation or names below it.
        assert_eq!(nsec_nodata(&n("b.example."), 1, &z), Proof::Bogus("the parent's NSEC at a delegation"));
        assert_eq!(nsec_nxdomain(&n("x.b.example."), &z), Proof::Bogus("no NSEC covers the name"));
        // a.example. has a DS: NODATA for DS is false.
        assert_eq!(nsec_nodata(&n("a.example."), T_DS, &z), Proof::Bogus("the NSEC lists the type"));
    }

    /// A proven "no DS" makes a zone insecure only at a delegation (NS without SOA and
    /// DS): anywhere else a name claimed as a signer or zone cut is no cut at all.
    #[test]
    fn rfc4035_5_2_no_ds_means_insecure_only_at_a_delegation() {
        let z = zone();
        let left = Cell::new(100);
        let limits = Nsec3Limits { max_iterations: 150, hashes_left: &left };
        let apex = n("example.");
        assert_eq!(delegation_without_ds(&n("b.example."), &apex, &z, &[], &limits), Some(true));
        assert_eq!(delegation_without_ds(&n("ns1.example."), &apex, &z, &[], &limits), Some(false), "a host");
        assert_eq!(delegation_without_ds(&n("a.example."), &apex, &z, &[], &limits), Some(false), "has a DS");
        assert_eq!(delegation_without_ds(&n("q.example."), &apex, &z, &[], &limits), None);
        let names: &[(&str, &[u16])] =
            &[("example.", &[2, 6, 46, 48, 51]), ("sub.example.", &[2]), ("host.example.", &[1, 46])];
        let z3 = nsec3_zone("example.", names, 0, false);
        assert_eq!(delegation_without_ds(&n("sub.example."), &apex, &[], &z3, &limits), Some(true));
        assert_eq!(delegation_without_ds(&n("host.example."), &apex, &[], &z3, &limits), Some(false));
    }

    /// RFC 5155 section 8.3: the closest encloser cannot be a delegation point, or the
    /// parent's records would deny names that live in the child.
    #[test]
    fn rfc5155_8_3_a_delegation_is_no_closest_encloser() {
        let names: &[(&str, &[u16])] = &[("example.", &[2, 6, 46, 48, 51]), ("sub.example.", &[2, 43, 46])];
        let z = nsec3_zone("example.", names, 0, false);
        let left = Cell::new(100);
        let limits = Nsec3Limits { max_iterations: 150, hashes_left: &left };
        assert_eq!(
            nsec3_nxdomain(&n("www.sub.example."), &n("example."), &z, &limits),
            Proof::Bogus("the closest encloser is a delegation or a DNAME")
        );
    }

    #[test]
    fn wildcard_expansion_needs_the_name_covered() {
        let z = zone();
        assert_eq!(nsec_wildcard_answer(&n("a.z.w.example."), &n("w.example."), &z), Proof::Secure);
        assert!(matches!(nsec_wildcard_answer(&n("x.w.example."), &n("w.example."), &z), Proof::Bogus(_)));
        // RFC 4035 section 5.3.4: the expansion must come from the closest encloser. For
        // x.ai.example. the covering NSEC ai -> b shows ai.example. exists: *.example.
        // could not have matched.
        assert_eq!(
            nsec_wildcard_answer(&n("x.ai.example."), &n("example."), &z),
            Proof::Bogus("the wildcard is not at the closest encloser")
        );
    }

    /// NSEC3 chain of a zone with the given names (salt aabbccdd, `iterations`).
    fn nsec3_zone(zone: &str, names: &[(&str, &[u16])], iterations: u16, opt_out: bool) -> Vec<(Name, Nsec3)> {
        let salt = vec![0xaa, 0xbb, 0xcc, 0xdd];
        let mut hashed: Vec<(Vec<u8>, &[u16])> =
            names.iter().map(|(s, t)| (nsec3_hash(&name_wire_lower(&n(s)), &salt, iterations), *t)).collect();
        hashed.sort();
        let count = hashed.len();
        (0..count)
            .map(|i| {
                let (h, types) = &hashed[i];
                let next = hashed[(i + 1) % count].0.clone();
                let label = base32hex(h);
                let owner = Name::from_ascii(label).unwrap().append_name(&n(zone)).unwrap();
                let rec = Nsec3 {
                    hash_algorithm: 1,
                    flags: u8::from(opt_out),
                    iterations,
                    salt: salt.clone(),
                    next_hash: next,
                    types: bitmap(types),
                };
                (owner, rec)
            })
            .collect()
    }

    fn base32hex(b: &[u8]) -> String {
        const A: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
        let mut out = String::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for x in b {
            acc = (acc << 8) | u32::from(*x);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(A[((acc >> bits) & 31) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn rfc_5155_8_4_name_error_and_8_5_no_data() {
        let names: &[(&str, &[u16])] = &[
            ("example.", &[2, 6, 46, 48, 51]),
            ("a.example.", &[2, 43, 46]),
            ("ns1.example.", &[1, 46]),
            ("x.y.w.example.", &[15, 46]),
            ("y.w.example.", &[]),
            ("w.example.", &[]),
            ("*.w.example.", &[15, 46]),
        ];
        let z = nsec3_zone("example.", names, 12, false);
        let left = Cell::new(100);
        let limits = Nsec3Limits { max_iterations: 150, hashes_left: &left };
        let zone = n("example.");
        assert_eq!(
            nsec3_nxdomain(&n("a.c.x.w.example."), &zone, &z, &limits),
            Proof::Bogus("no NSEC3 covers the wildcard")
        );
        assert_eq!(nsec3_nxdomain(&n("q.example."), &zone, &z, &limits), Proof::Secure);
        assert_eq!(nsec3_nxdomain(&n("ns1.example."), &zone, &z, &limits), Proof::Bogus("the name exists"));
        assert_eq!(nsec3_nodata(&n("ns1.example."), 15, &zone, &z, &limits), Proof::Secure);
        assert_eq!(nsec3_nodata(&n("ns1.example."), 1, &zone, &z, &limits), Proof::Bogus("the NSEC3 lists the type"));
        // Wildcard NODATA (8.7): q.w.example. AAAA from *.w.example. (MX only).
        assert_eq!(nsec3_nodata(&n("q.w.example."), 28, &zone, &z, &limits), Proof::Secure);
        // Wildcard answer (8.8).
        assert_eq!(nsec3_wildcard_answer(&n("q.w.example."), &n("w.example."), &zone, &z, &limits), Proof::Secure);
        assert!(left.get() < 100, "hashes were charged");
    }

    #[test]
    fn nsec3_chain_wraps_around_both_ends() {
        let names: &[(&str, &[u16])] = &[("example.", &[2, 6, 46, 48, 51]), ("a.example.", &[1, 46])];
        let z = nsec3_zone("example.", names, 0, false);
        let zone = n("example.");
        let set = Hashed::new(&zone, &z);
        let (lo, hi) = (
            set.items.iter().map(|(h, _)| h.clone()).min().unwrap(),
            set.items.iter().map(|(h, _)| h.clone()).max().unwrap(),
        );
        let mut below = lo.clone();
        *below.last_mut().unwrap() = below.last().unwrap().wrapping_sub(1);
        let mut above = hi.clone();
        *above.last_mut().unwrap() = above.last().unwrap().wrapping_add(1);
        // Before the first hash and after the last: both covered by the last record.
        assert!(lo.last() != Some(&0) && set.covering(&below).is_some());
        assert!(hi.last() != Some(&255) && set.covering(&above).is_some());
        assert!(set.covering(&lo).is_none(), "a matching hash is not covered");
    }

    #[test]
    fn rfc_5155_8_6_opt_out_and_rfc_9276_iterations() {
        let names: &[(&str, &[u16])] = &[("example.", &[2, 6, 46, 48, 51]), ("a.example.", &[2, 43, 46])];
        let z = nsec3_zone("example.", names, 0, true);
        let left = Cell::new(100);
        let limits = Nsec3Limits { max_iterations: 150, hashes_left: &left };
        let zone = n("example.");
        // An unsigned delegation inside an opt-out span: no DS, insecure.
        assert_eq!(nsec3_nodata(&n("b.example."), T_DS, &zone, &z, &limits), Proof::Insecure(Insecure::OptOut));
        let z = nsec3_zone("example.", names, 151, false);
        assert_eq!(nsec3_nxdomain(&n("q.example."), &zone, &z, &limits), Proof::Insecure(Insecure::Iterations(151)));
        // The hash allowance bounds the work.
        let z = nsec3_zone("example.", names, 0, false);
        let none = Cell::new(1);
        let limits = Nsec3Limits { max_iterations: 150, hashes_left: &none };
        assert_eq!(nsec3_nxdomain(&n("a.b.c.q.example."), &zone, &z, &limits), Proof::Exhausted);
    }
}
