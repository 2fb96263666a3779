//! Records held in wire form (RFC 1035 section 4.1.3) by the record cache. A parsed hickory
//! `Record` takes 272 bytes inline before its heap (an RRSIG's signature, long names,
//! TXT strings); the same A record is 14 bytes on the wire, an ECDSA P-256 RRSIG about 100.
//! A cached name is mostly read never or once more (its answer lives in the packet cache),
//! so the cache keeps the wire and parses on read: a few hundred nanoseconds on the miss
//! path for about half the memory per cached name.
//!
//! The records of one entry are written by one encoder, so owner names after the first
//! (an RRset's records and its RRSIGs share one) are compression pointers into the same
//! buffer, which one decoder over that buffer follows. What is held is exactly the buffer's
//! length, whatever shape a server sent: no parsed form can make a short charge hold a large
//! heap.
//!
//! The types adox keeps as raw RDATA (`wire::RAW_TYPES`: SVCB, HTTPS, TLSA, CAA, CERT) are
//! written under their private-use stand-ins, as replies are parsed, so that they come back
//! raw and not as hickory's parsed forms.

use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::wire::{raw_stand_in, raw_type_of};

/// Records in wire form, names compressed within the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `records`; `None` if one cannot be written (hickory refuses RDATA it cannot
    /// encode; nothing so shaped reaches the cache from a parsed message).
    pub fn pack(records: &[Record]) -> Option<Self> {
        let mut buf = Vec::with_capacity(records.len() * 32);
        let mut enc = BinEncoder::new(&mut buf);
        for r in records {
            match &r.data {
                RData::Unknown { code, rdata } if let Some(stand_in) = raw_stand_in(u16::from(*code)) => {
                    let mut hidden = r.clone();
                    hidden.data = RData::Unknown { code: RecordType::from(stand_in), rdata: rdata.clone() };
                    hidden.emit(&mut enc).ok()?;
                }
                _ => r.emit(&mut enc).ok()?,
            }
        }
        Some(Self(buf.into_boxed_slice()))
    }

    /// The records, in the order packed; `None` if the buffer does not parse (never, for a
    /// buffer [`Self::pack`] wrote).
    pub fn unpack(&self) -> Option<Vec<Record>> {
        let mut dec = BinDecoder::new(&self.0);
        let mut out = Vec::new();
        while !dec.is_empty() {
            let mut r = Record::read(&mut dec).ok()?;
            if let RData::Unknown { code, .. } = &mut r.data
                && let Some(real) = raw_type_of(u16::from(*code))
            {
                *code = RecordType::from(real);
            }
            out.push(r);
        }
        Some(out)
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Octets of wire.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Bytes held on the heap, with the allocator's rounding (`charge.rs`).
    pub fn heap(&self) -> usize {
        super::charge::alloc(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, NS, NULL, SOA, TXT};

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn octets(records: &[Record]) -> Vec<Vec<u8>> {
        records.iter().map(|r| r.to_bytes().unwrap()).collect()
    }

    /// Every shape the cache holds comes back as it went in: owner case, TTLs, types
    /// hickory parses, types it keeps raw (RRSIG), an empty RDATA, several owners.
    #[test]
    fn records_come_back_as_packed() {
        let rrsig_rdata: Vec<u8> = (0..100u8).collect();
        let records = vec![
            Record::from_rdata(Name::from_ascii("WwW.Example.").unwrap(), 300, RData::A(A::new(192, 0, 2, 1))),
            Record::from_rdata(n("www.example."), 299, RData::A(A::new(192, 0, 2, 2))),
            Record::from_rdata(
                n("www.example."),
                300,
                RData::Unknown { code: RecordType::RRSIG, rdata: NULL::with(rrsig_rdata) },
            ),
            Record::from_rdata(n("example."), 60, RData::NS(NS(Name::from_ascii("NS1.Example.").unwrap()))),
            Record::from_rdata(
                n("example."),
                60,
                RData::SOA(SOA::new(n("ns1.example."), n("admin.example."), 7, 1, 2, 3, 4)),
            ),
            Record::from_rdata(n("t.example."), 5, RData::TXT(TXT::new(vec!["a".into(), String::new(), "c".into()]))),
            Record::update0(n("u.example."), 0, RecordType::AAAA),
        ];
        let packed = Packed::pack(&records).unwrap();
        let back = packed.unpack().unwrap();
        assert_eq!(back, records);
        // hickory's equality ignores TTLs and case: compare each record's own octets.
        assert_eq!(octets(&back), octets(&records));
        assert_eq!(back[0].name.to_string(), "WwW.Example.", "owner case kept");
        assert_eq!(back[0].ttl, 300);
        assert_eq!(back[1].ttl, 299);
    }

    /// The types kept raw come back raw, octet for octet, not as hickory would parse them
    /// (a TLSA or SVCB that hickory parses, a CAA it would not write back as received).
    #[test]
    fn raw_types_come_back_raw() {
        for (rtype, rdata) in [
            (RecordType::TLSA, vec![3, 1, 1, 0xab, 0xcd]),
            (RecordType::SVCB, vec![0, 1, 3, b'n', b's', b'1', 0, 0, 1, 0, 4, 3, b'd', b'o', b't']),
            (RecordType::CAA, vec![0, 5, b'i', b's', b's', b'u', b'e', b'X']),
            (RecordType::HTTPS, vec![0, 1, 0, 0, 1, 0, 3, 2, b'h', b'2']),
            (RecordType::CERT, vec![0, 1, 0, 0, 8, 0xde, 0xad]),
        ] {
            let r = Record::from_rdata(
                n("_853._tcp.ns1.example."),
                60,
                RData::Unknown { code: rtype, rdata: NULL::with(rdata) },
            );
            let back = Packed::pack(std::slice::from_ref(&r)).unwrap().unpack().unwrap();
            assert_eq!(octets(&back), octets(std::slice::from_ref(&r)), "{rtype}");
            assert_eq!(back, vec![r], "{rtype}");
        }
    }

    /// An RRset and its RRSIGs write their owner once: the rest are pointers.
    #[test]
    fn owners_after_the_first_are_pointers() {
        let owner = n("n123456.smem.");
        let one = vec![Record::from_rdata(owner.clone(), 60, RData::A(A::new(192, 0, 2, 1)))];
        let two: Vec<Record> =
            (1..=2).map(|i| Record::from_rdata(owner.clone(), 60, RData::A(A::new(192, 0, 2, i)))).collect();
        let (p1, p2) = (Packed::pack(&one).unwrap(), Packed::pack(&two).unwrap());
        assert_eq!(p1.0.len(), owner.len() + 1 + 10 + 4);
        assert_eq!(p2.0.len() - p1.0.len(), 2 + 10 + 4);
        assert!(Packed::pack(&[]).unwrap().is_empty());
        assert_eq!(Packed::pack(&[]).unwrap().unpack().unwrap(), vec![]);
    }

    /// Past 64 KiB of wire nothing is packed (the caller keeps such records parsed).
    #[test]
    fn more_than_64_kib_is_refused() {
        let owner = n("big.example.");
        let many: Vec<Record> = (0..5000u32)
            .map(|i| Record::from_rdata(owner.clone(), 60, RData::A(A::from(std::net::Ipv4Addr::from(i)))))
            .collect();
        assert!(Packed::pack(&many).is_none());
        assert!(Packed::pack(&many[..1000]).is_some());
    }

    #[test]
    fn a_damaged_buffer_is_refused_not_misread() {
        let records = vec![Record::from_rdata(n("a.example."), 60, RData::A(A::new(192, 0, 2, 1)))];
        let mut bytes = Packed::pack(&records).unwrap().0.into_vec();
        bytes.pop();
        assert_eq!(Packed(bytes.into_boxed_slice()).unpack(), None);
    }
}
