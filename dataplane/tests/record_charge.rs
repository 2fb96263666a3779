//! The record cache's charge for an RRset is at least the heap the RRset really holds, for
//! adversarial shapes of every record type hickory parses (and for unknown types). The
//! heap is measured with a counting allocator: the bytes still allocated after a message
//! is parsed and everything but its answer records (in the shared slice the cache keeps)
//! is dropped.

#![allow(unsafe_code, reason = "a counting global allocator, to measure the heap records hold")]
#![allow(clippy::unwrap_used, reason = "a test: a panic is its failure report")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use adox_dataplane::cache::records::charge;
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::{CNAME, CSYNC, HINFO, MX, NAPTR, NULL, OPENPGPKEY, SOA, SRV, SSHFP, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

thread_local! {
    /// Bytes allocated and not freed by this thread (other test threads do not mix in).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

fn count(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every call delegates to the system allocator with the same arguments; the only
// addition is bookkeeping of sizes in a thread-local counter, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        // SAFETY: `p` was allocated by `System` with layout `l` (through `alloc` above).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(new as isize - l.size() as isize);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A name of `labels` one-octet labels under `example.`.
fn many_labels(labels: usize) -> Name {
    n(&format!("{}example.", "a.".repeat(labels)))
}

/// The heap the answer records of `wire` hold once parsed, and the cache's charge for them.
fn measured_and_charged(wire: &[u8]) -> (usize, usize) {
    let before = live();
    let mut msg = Message::from_vec(wire).unwrap();
    // The cache keeps an exact-size shared slice of the records.
    let answers: std::sync::Arc<[Record]> = std::mem::take(&mut msg.answers).into();
    drop(msg);
    let held = live() - before;
    let charged = charge(&answers);
    drop(answers);
    (usize::try_from(held).unwrap_or(0), charged)
}

/// A response whose answer section holds `records`.
fn wire_of(records: Vec<Record>) -> Vec<u8> {
    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.answers = records;
    let wire = m.to_vec().unwrap();
    assert!(wire.len() <= usize::from(u16::MAX), "a message fits 64 KiB");
    wire
}

fn rr(owner: &Name, data: RData) -> Record {
    Record::from_rdata(owner.clone(), 300, data)
}

fn check(what: &str, records: Vec<Record>) {
    let (held, charged) = measured_and_charged(&wire_of(records));
    assert!(held > 0, "{what}: nothing measured");
    assert!(charged >= held, "{what}: charged {charged} bytes, holds {held}");
}

#[test]
fn the_charge_covers_the_heap_of_every_parsed_type_in_hostile_shapes() {
    let owner = n("x.example.");
    let big = vec![0xA5u8; 60_000];
    // TXT: many empty strings, many one-octet strings, a few long ones.
    check("TXT empty strings", vec![rr(&owner, RData::TXT(TXT::new(vec![String::new(); 30_000])))]);
    check("TXT one-octet strings", vec![rr(&owner, RData::TXT(TXT::new(vec!["x".into(); 20_000])))]);
    check("TXT long strings", vec![rr(&owner, RData::TXT(TXT::new(vec!["y".repeat(255); 200])))]);
    check("TXT many records", (0..3000).map(|i| rr(&owner, RData::TXT(TXT::new(vec![format!("{i}")])))).collect());
    // Opaque buffers at their largest.
    check("NULL", vec![rr(&owner, RData::NULL(NULL::with(big.clone())))]);
    check("OPENPGPKEY", vec![rr(&owner, RData::OPENPGPKEY(OPENPGPKEY::new(big.clone())))]);
    check("SSHFP", vec![rr(&owner, RData::SSHFP(SSHFP::new(1u8.into(), 2u8.into(), big.clone())))]);
    check(
        "unknown type",
        vec![rr(&owner, RData::Unknown { code: RecordType::Unknown(65_280), rdata: NULL::with(big) })],
    );
    check(
        "many small unknown records",
        (0..4000u32)
            .map(|i| {
                rr(
                    &owner,
                    RData::Unknown { code: RecordType::Unknown(65_281), rdata: NULL::with(i.to_be_bytes().to_vec()) },
                )
            })
            .collect(),
    );
    // Character strings and names.
    check("HINFO", (0..100).map(|_| rr(&owner, RData::HINFO(HINFO::new("c".repeat(255), "o".repeat(255))))).collect());
    check(
        "NAPTR",
        (0..100)
            .map(|_| {
                let s = |c: &str| c.repeat(255).into_bytes().into_boxed_slice();
                rr(&owner, RData::NAPTR(NAPTR::new(1, 1, s("f"), s("s"), s("r"), many_labels(120))))
            })
            .collect(),
    );
    check(
        "CSYNC full bitmap",
        vec![rr(&owner, RData::CSYNC(CSYNC::new(1, true, true, (1..=65_535).map(RecordType::from))))],
    );
    check("CNAME to a name of many labels", vec![rr(&owner, RData::CNAME(CNAME(many_labels(120))))]);
    check("MX", (0..200).map(|i| rr(&owner, RData::MX(MX::new(i, many_labels(100))))).collect());
    check("SRV", (0..200).map(|i| rr(&owner, RData::SRV(SRV::new(i, 1, 1, many_labels(100))))).collect());
    check("SOA", vec![rr(&owner, RData::SOA(SOA::new(many_labels(120), many_labels(120), 1, 2, 3, 4, 5)))]);
    // Owner names of many labels on small records.
    check(
        "A records with long owners",
        (0..250u8).map(|i| rr(&many_labels(120), RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, i)))).collect(),
    );
}
