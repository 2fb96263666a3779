//! What a cached record really holds on the heap, as an upper bound: the caches charge
//! their byte budgets with it, so an authoritative server cannot make a small charge hold
//! a large heap. The wire size is no such bound: hickory keeps each TXT string in its own
//! allocation, a CSYNC type bitmap as a tree of record types, a long name in a spilled
//! buffer, so some shapes hold ten times their wire size or more. Each owned buffer is
//! charged with the allocator's rounding (a size class can be a quarter larger than the
//! request, the smallest ones 8 or 16 bytes); `tests/record_charge.rs` checks the bound
//! against a counting allocator for adversarial shapes of every type hickory parses.

use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// One heap allocation of `len` bytes, with the allocator's rounding.
pub(crate) fn alloc(len: usize) -> usize {
    if len == 0 { 0 } else { len + len / 4 + 16 }
}

/// The heap a name holds beyond its inline storage: hickory keeps up to 32 octets of label
/// data and 24 label ends inline, and spills either into a buffer that may have grown by
/// doubling.
pub fn name_heap(name: &Name) -> usize {
    let data = name.len();
    let labels = name.iter().len();
    let spilled_data = if data > 32 { alloc(2 * data) } else { 0 };
    let spilled_ends = if labels > 24 { alloc(2 * labels) } else { 0 };
    spilled_data + spilled_ends
}

/// The heap one record's RDATA holds.
pub fn rdata_heap(d: &RData) -> usize {
    match d {
        RData::A(_) | RData::AAAA(_) | RData::Update0(_) => 0,
        RData::CNAME(n) => name_heap(&n.0),
        RData::NS(n) => name_heap(&n.0),
        RData::PTR(n) => name_heap(&n.0),
        RData::ANAME(n) => name_heap(&n.0),
        RData::MX(m) => name_heap(&m.exchange),
        RData::SRV(s) => name_heap(&s.target),
        RData::SOA(s) => name_heap(&s.mname) + name_heap(&s.rname),
        // A boxed slice of boxed strings: one fat pointer per string, each string its own
        // allocation.
        RData::TXT(t) => alloc(16 * t.txt_data.len()) + t.txt_data.iter().map(|s| alloc(s.len())).sum::<usize>(),
        RData::HINFO(h) => alloc(h.cpu.len()) + alloc(h.os.len()),
        RData::NAPTR(n) => {
            alloc(n.flags.len()) + alloc(n.services.len()) + alloc(n.regexp.len()) + name_heap(&n.replacement)
        }
        RData::NULL(n) => alloc(n.anything.capacity()),
        RData::Unknown { rdata, .. } => alloc(rdata.anything.capacity()),
        RData::OPENPGPKEY(k) => alloc(k.public_key.capacity()),
        RData::SSHFP(s) => alloc(s.fingerprint.capacity()),
        RData::TLSA(t) => alloc(t.cert_data.capacity()),
        RData::SMIMEA(s) => alloc(s.0.cert_data.capacity()),
        // A tree of record types (about 16 bytes each with the nodes' overhead, charged 32)
        // and the bitmap's original octets.
        RData::CSYNC(c) => alloc(32 * c.type_bit_maps.iter().count()) + wire_bound(d),
        // Types adox keeps as raw RDATA (SVCB, HTTPS, TLSA, CAA, CERT and the DNSSEC types
        // arrive as `Unknown`) or never caches (OPT, TSIG): if one gets here, a bound from
        // its wire size.
        _ => wire_bound(d),
    }
}

/// A bound for RDATA of a shape not modelled above: four times its wire size.
fn wire_bound(d: &RData) -> usize {
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    let wire = match d.emit(&mut enc) {
        Ok(()) => buf.len(),
        // Not encodable: charge the largest RDATA a message can carry.
        Err(_) => usize::from(u16::MAX),
    };
    alloc(4 * wire)
}

/// The heap one record holds: its owner name and its RDATA.
pub fn record_heap(r: &Record) -> usize {
    name_heap(&r.name) + rdata_heap(&r.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::TXT;

    #[test]
    fn short_names_and_addresses_hold_nothing_on_the_heap() {
        let a = Record::from_rdata(
            "www.example.".parse().unwrap(),
            60,
            RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 1)),
        );
        assert_eq!(record_heap(&a), 0);
        let long: Name = format!("{}example.", "a.".repeat(40)).parse().unwrap();
        assert!(name_heap(&long) >= 2 * long.len(), "label data and label ends both spill");
    }

    #[test]
    fn many_tiny_txt_strings_are_charged_per_string() {
        let strings: Vec<String> = (0..1000).map(|_| "x".to_string()).collect();
        let txt = RData::TXT(TXT::new(strings));
        // 2 octets of wire per string; 16 octets of pointer and an allocation each.
        assert!(rdata_heap(&txt) >= 1000 * (16 + 8));
    }
}
