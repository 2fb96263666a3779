//! Signed fake zones: ECDSA P-256 (algorithm 13) keys made with ring at test time, the
//! DNSKEY RRset at each signed apex, the child's DS in its parent, an NSEC chain, and an
//! RRSIG over every authoritative RRset, with validity windows on the fake clock. DNSKEY,
//! DS, RRSIG and NSEC are raw RDATA (`RData::Unknown`), as hickory reads them off the wire
//! without its DNSSEC feature. The fake authority (`FakeNet::answer`) adds the RRSIGs and
//! proofs to its replies with the helpers at the end.

use std::cmp::Ordering;

use hickory_proto::rr::rdata::NULL;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

use super::*;
use crate::dnssec::crypto::ds_digest;
use crate::dnssec::rdata::{Nsec, Rrsig, canonical_cmp, key_tag, name_wire_lower};
use crate::dnssec::verify::canonical_rdata;
use crate::names::is_below;

const ALGORITHM: u8 = 13;

/// A validity window, in seconds relative to the fake clock's start: (inception,
/// expiration) as RRSIG times.
pub(super) fn window(inception: i64, expiration: i64) -> (u32, u32) {
    let at = |d: i64| (FAKE_UNIX_START as i64 + d) as u32;
    (at(inception), at(expiration))
}

/// The window of every signature unless a test re-signs: a day back, 30 days ahead.
pub(super) fn default_window() -> (u32, u32) {
    window(-86_400, 30 * 86_400)
}

/// A record of a type hickory keeps raw.
pub(super) fn raw(owner: &Name, ttl: u32, rtype: RecordType, rdata: Vec<u8>) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::Unknown { code: rtype, rdata: NULL::with(rdata) })
}

/// The RDATA octets of a raw record.
pub(super) fn rdata_of(r: &Record) -> &[u8] {
    match &r.data {
        RData::Unknown { rdata, .. } => &rdata.anything,
        other => panic!("not a raw record: {other:?}"),
    }
}

/// The type an RRSIG record covers.
pub(super) fn covered(r: &Record) -> Option<RecordType> {
    (r.record_type() == RecordType::RRSIG)
        .then(|| RecordType::from(u16::from_be_bytes([rdata_of(r)[0], rdata_of(r)[1]])))
}

/// One zone's key: a combined signing key (flags 257: zone key, SEP).
pub(super) struct ZoneKey {
    pub(super) apex: Name,
    pair: EcdsaKeyPair,
    /// The DNSKEY RDATA.
    pub(super) rdata: Vec<u8>,
}

impl ZoneKey {
    pub(super) fn new(apex: Name) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let mut rdata = vec![1, 1, 3, ALGORITHM];
        rdata.extend_from_slice(&pair.public_key().as_ref()[1..]); // the bare point, no 0x04
        Self { apex, pair, rdata }
    }

    pub(super) fn tag(&self) -> u16 {
        key_tag(&self.rdata)
    }

    fn dnskey(&self) -> Record {
        self.dnskey_with_ttl(3600)
    }

    /// Its DNSKEY record, with `ttl`.
    pub(super) fn dnskey_with_ttl(&self, ttl: u32) -> Record {
        raw(&self.apex, ttl, RecordType::DNSKEY, self.rdata.clone())
    }

    /// Sets the REVOKE bit (RFC 5011 section 3): the key tag changes with it, and so do
    /// its DNSKEY record and the signatures it makes.
    pub(super) fn revoke(&mut self) {
        self.rdata[1] |= 0x80;
    }

    /// The SHA-256 DS RDATA of this key.
    pub(super) fn ds_rdata(&self) -> Vec<u8> {
        let mut rdata = self.tag().to_be_bytes().to_vec();
        rdata.extend_from_slice(&[ALGORITHM, 2]);
        rdata.extend(ds_digest(2, &name_wire_lower(&self.apex), &self.rdata).unwrap());
        rdata
    }

    /// The DS as a trust anchor line.
    pub(super) fn ds_text(&self) -> String {
        let digest: String = self.ds_rdata()[4..].iter().map(|b| format!("{b:02X}")).collect();
        format!("{} IN DS {} {ALGORITHM} 2 {digest}\n", self.apex.to_ascii(), self.tag())
    }

    /// An RRSIG over `set` (one RRset, no RRSIGs in it) within `window` (RFC 4034 section
    /// 3.1.8.1: the RRSIG RDATA up to the signer, then the records in canonical form and
    /// order).
    pub(super) fn sign(&self, set: &[&Record], window: (u32, u32)) -> Record {
        self.sign_with_labels(set, window, crate::dnssec::verify::rrsig_labels(&set[0].name) as u8)
    }

    /// Likewise with the RRSIG's Labels field given: fewer than the owner's for a record
    /// synthesized from a wildcard (RFC 4034 section 3.1.3).
    pub(super) fn sign_with_labels(&self, set: &[&Record], window: (u32, u32), labels: u8) -> Record {
        let (owner, rtype, ttl) = (&set[0].name, set[0].record_type(), set[0].ttl);
        let mut rdata = u16::from(rtype).to_be_bytes().to_vec();
        rdata.push(ALGORITHM);
        rdata.push(labels);
        rdata.extend_from_slice(&ttl.to_be_bytes());
        rdata.extend_from_slice(&window.1.to_be_bytes());
        rdata.extend_from_slice(&window.0.to_be_bytes());
        rdata.extend_from_slice(&self.tag().to_be_bytes());
        rdata.extend(name_wire_lower(&self.apex));
        let mut data = Rrsig::parse(&rdata).unwrap().signed_header;
        let mut rdatas: Vec<Vec<u8>> = set.iter().map(|r| canonical_rdata(r).unwrap()).collect();
        rdatas.sort();
        rdatas.dedup();
        // A wildcard expansion is signed as the wildcard (RFC 4035 section 5.3.2).
        let signed_owner = if usize::from(labels) < crate::dnssec::verify::rrsig_labels(owner) {
            Name::from_ascii("*").unwrap().append_name(&owner.trim_to(usize::from(labels))).unwrap()
        } else {
            owner.clone()
        };
        for rd in rdatas {
            data.extend(name_wire_lower(&signed_owner));
            data.extend_from_slice(&u16::from(rtype).to_be_bytes());
            data.extend_from_slice(&1u16.to_be_bytes());
            data.extend_from_slice(&ttl.to_be_bytes());
            data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            data.extend(rd);
        }
        rdata.extend_from_slice(self.pair.sign(&SystemRandom::new(), &data).unwrap().as_ref());
        raw(owner, ttl, RecordType::RRSIG, rdata)
    }
}

/// The zone cuts of `zone` (NS owners below the apex).
fn cuts(zone: &Zone) -> Vec<Name> {
    zone.records
        .iter()
        .filter(|r| r.record_type() == RecordType::NS && r.name != zone.apex)
        .map(|r| r.name.clone())
        .collect()
}

/// Whether `r` is the zone's own data (not glue below a cut, not the NS RRset of a cut,
/// not a signature): what gets signed.
fn signed_here(zone: &Zone, cuts: &[Name], r: &Record) -> bool {
    let t = r.record_type();
    t != RecordType::RRSIG
        && !cuts.iter().any(|c| is_below(&r.name, c))
        && !(cuts.contains(&r.name)
            && t != RecordType::DS
            && t != RecordType::NSEC
            && u16::from(t) != crate::upstream::deleg::DELEG_TYPE)
        && is_at_or_below(&r.name, &zone.apex)
}

/// An NSEC type bitmap (RFC 4034 section 4.1.2): one block per window in use.
fn bitmap(types: &[RecordType]) -> Vec<u8> {
    let mut codes: Vec<u16> = types.iter().map(|t| u16::from(*t)).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut out = Vec::new();
    for window in codes.chunk_by(|a, b| a >> 8 == b >> 8) {
        let len = usize::from(window[window.len() - 1] & 0xff) / 8 + 1;
        let mut bits = vec![0u8; len];
        for c in window {
            bits[usize::from(c & 0xff) / 8] |= 0x80 >> (c % 8);
        }
        out.extend([(window[0] >> 8) as u8, len as u8]);
        out.extend(bits);
    }
    out
}

/// The zones of a test net, signed by the keys of some of them.
pub(super) struct SignedZones {
    pub(super) zones: Vec<Zone>,
    pub(super) keys: Vec<ZoneKey>,
}

impl SignedZones {
    /// `zones` with fresh keys for the apexes in `signed` (not signed yet: tests may add
    /// records first).
    pub(super) fn new(zones: Vec<Zone>, signed: &[&str]) -> Self {
        Self { zones, keys: signed.iter().map(|z| ZoneKey::new(n(z))).collect() }
    }

    /// The zone with this apex.
    pub(super) fn zone(&mut self, apex: &str) -> &mut Zone {
        self.zones.iter_mut().find(|z| z.apex == n(apex)).unwrap()
    }

    /// Signs: the DS of each signed child into its parent, then per signed zone its
    /// DNSKEY RRset, its NSEC chain and an RRSIG over each of its RRsets.
    pub(super) fn sign(mut self) -> Self {
        for key in self.keys.iter().filter(|k| !k.apex.is_root()) {
            let parent = self
                .zones
                .iter_mut()
                .filter(|z| is_below(&key.apex, &z.apex))
                .max_by_key(|z| z.apex.num_labels())
                .unwrap();
            parent.records.push(raw(&key.apex, 3600, RecordType::DS, key.ds_rdata()));
        }
        for key in &self.keys {
            let zone = self.zones.iter_mut().find(|z| z.apex == key.apex).unwrap();
            zone.records.push(key.dnskey());
            let cut_names = cuts(zone);
            // The NSEC chain over the zone's names, delegations included, glue not.
            let mut owners: Vec<Name> = Vec::new();
            for r in zone.records.iter().filter(|r| signed_here(zone, &cut_names, r) || cut_names.contains(&r.name)) {
                if !owners.contains(&r.name) {
                    owners.push(r.name.clone());
                }
            }
            owners.sort_by(canonical_cmp);
            let mut nsecs = Vec::new();
            for (i, owner) in owners.iter().enumerate() {
                let next = &owners[(i + 1) % owners.len()];
                let mut types: Vec<RecordType> = zone
                    .records
                    .iter()
                    .filter(|r| {
                        r.name == *owner && (signed_here(zone, &cut_names, r) || r.record_type() == RecordType::NS)
                    })
                    .map(|r| r.record_type())
                    .collect();
                types.extend([RecordType::RRSIG, RecordType::NSEC]);
                let mut rdata = name_wire_lower(next);
                rdata.extend(bitmap(&types));
                nsecs.push(raw(owner, 300, RecordType::NSEC, rdata));
            }
            zone.records.extend(nsecs);
            let signed: Vec<Record> =
                zone.records.iter().filter(|r| signed_here(zone, &cut_names, r)).cloned().collect();
            for (_, _, set) in iterate::group_rrsets(&signed) {
                let set: Vec<&Record> = set.iter().collect();
                zone.records.push(key.sign(&set, default_window()));
            }
        }
        self
    }

    /// Signs the RRset `owner`/`rtype` again, within `window`, replacing its RRSIG.
    pub(super) fn resign(&mut self, owner: &str, rtype: RecordType, window: (u32, u32)) {
        let owner = n(owner);
        let key = self
            .keys
            .iter()
            .filter(|k| k.apex.zone_of(&owner) && !(rtype == RecordType::DS && k.apex == owner))
            .max_by_key(|k| k.apex.num_labels())
            .unwrap();
        let zone = self.zones.iter_mut().find(|z| z.apex == key.apex).unwrap();
        zone.records.retain(|r| !(r.name == owner && covered(r) == Some(rtype)));
        let set: Vec<Record> =
            zone.records.iter().filter(|r| r.name == owner && r.record_type() == rtype).cloned().collect();
        zone.records.push(key.sign(&set.iter().collect::<Vec<_>>(), window));
    }

    /// A validating resolver over these zones (Do53 only), anchored at the root's DS the
    /// way an operator would: `dnssec.trust_anchor_file`.
    pub(super) fn resolver(self, cfg: &Config) -> (Resolver<Fake>, Fake) {
        let anchor = self.keys.iter().find(|k| k.apex.is_root()).unwrap().ds_text();
        self.resolver_anchored(cfg, &anchor)
    }

    /// Likewise with the trust anchor file holding `anchors`.
    pub(super) fn resolver_anchored(self, cfg: &Config, anchors: &str) -> (Resolver<Fake>, Fake) {
        static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("adox-test-anchor-{}-{seq}", std::process::id()));
        std::fs::write(&path, anchors).unwrap();
        let mut cfg = cfg.clone();
        cfg.dnssec.trust_anchor_file = Some(path.clone());
        let made = resolver(self.zones, &cfg);
        std::fs::remove_file(&path).unwrap();
        made
    }
}

/// The RRSIGs in `zone` over the RRsets among `records`.
pub(super) fn signatures_over(zone: &Zone, records: &[Record]) -> Vec<Record> {
    let mut sets: Vec<(Name, RecordType)> = Vec::new();
    for r in records {
        if !sets.contains(&(r.name.clone(), r.record_type())) {
            sets.push((r.name.clone(), r.record_type()));
        }
    }
    zone.records.iter().filter(|s| sets.iter().any(|(o, t)| s.name == *o && covered(s) == Some(*t))).cloned().collect()
}

/// The NSEC RRset at `owner` with its RRSIGs.
fn nsec_with_sigs(zone: &Zone, owner: &Name) -> Vec<Record> {
    let nsec: Vec<Record> =
        zone.records.iter().filter(|r| r.name == *owner && r.record_type() == RecordType::NSEC).cloned().collect();
    let mut out = signatures_over(zone, &nsec);
    out.splice(0..0, nsec);
    out
}

/// The NSEC owner whose span covers `name` (RFC 4034 section 4.1.1: strictly between the
/// owner and the next name, the last one wrapping to the apex).
fn covering(zone: &Zone, name: &Name) -> Option<Name> {
    zone.records.iter().filter(|r| r.record_type() == RecordType::NSEC).find_map(|r| {
        let next = Nsec::parse(rdata_of(r))?.next;
        let after_owner = canonical_cmp(&r.name, name) == Ordering::Less;
        let before_next = canonical_cmp(name, &next) == Ordering::Less || next == zone.apex;
        (after_owner && before_next).then(|| r.name.clone())
    })
}

/// The NSEC proof of a negative answer for `qname` (RFC 4035 section 3.1.3): for
/// NXDOMAIN, the NSEC covering the name and the one covering the wildcard at its closest
/// encloser; for NODATA, the NSEC at the name (or, at an empty non-terminal, the one
/// covering it). Empty for an unsigned zone.
pub(super) fn denial(zone: &Zone, qname: &Name, nxdomain: bool) -> Vec<Record> {
    let mut owners: Vec<Name> = Vec::new();
    let at = zone.records.iter().any(|r| r.name == *qname && r.record_type() == RecordType::NSEC);
    owners.extend(if at { Some(qname.clone()) } else { covering(zone, qname) });
    if nxdomain {
        let mut encloser = qname.base_name();
        while !zone.records.iter().any(|r| is_at_or_below(&r.name, &encloser)) && encloser != zone.apex {
            encloser = encloser.base_name();
        }
        let mut wildcard = Name::from_ascii("*").unwrap().append_name(&encloser).unwrap();
        wildcard.set_fqdn(true);
        owners.extend(covering(zone, &wildcard).filter(|o| !owners.contains(o)));
    }
    owners.iter().flat_map(|o| nsec_with_sigs(zone, o)).collect()
}

/// What a signed parent adds to a referral to `cut` (RFC 4035 section 3.1.4): the DS
/// RRset with its RRSIGs, or the NSEC showing there is none.
pub(super) fn referral_proof(zone: &Zone, cut: &Name) -> Vec<Record> {
    let ds: Vec<Record> =
        zone.records.iter().filter(|r| r.name == *cut && r.record_type() == RecordType::DS).cloned().collect();
    if ds.is_empty() {
        return nsec_with_sigs(zone, cut);
    }
    let mut out = signatures_over(zone, &ds);
    out.splice(0..0, ds);
    out
}
