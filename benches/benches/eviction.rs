//! Cache eviction under a Zipf load: hit ratio of adox's CLOCK cache beside exact LRU and
//! FIFO at several cache sizes and skews, and the real memory per entry of the packet cache
//! and the record cache (bytes allocated, counted by a wrapping global allocator, beside the
//! bytes each cache charges itself).
//!
//! `cargo bench -p adox-benches --bench eviction` (deterministic: no timing involved).
#![allow(unsafe_code, reason = "a counting global allocator, to measure memory per cache entry")]
#![allow(clippy::expect_used, reason = "a benchmark: its inputs are built here and valid")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use adox_dataplane::cache::clock::ClockCache;
use adox_dataplane::cache::packet::PacketCache;
use adox_dataplane::cache::records::{Rank, RecordCache};
use adox_dataplane::wire::parse_query;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: deterministic and good enough for sampling.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn zipf_trace(keys: usize, len: usize, s: f64, seed: u64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(keys);
    let mut sum = 0.0;
    for k in 1..=keys {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    let mut rng = Rng(seed);
    // Ranks are scattered over key ids so that popularity does not follow insertion order.
    let perm: Vec<u32> = {
        let mut p: Vec<u32> = (0..keys as u32).collect();
        for i in (1..keys).rev() {
            p.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        p
    };
    (0..len)
        .map(|_| {
            let u = rng.unit() * sum;
            let rank = cdf.partition_point(|&c| c < u).min(keys - 1);
            perm[rank]
        })
        .collect()
}

fn hit_ratio_clock(trace: &[u32], cap: usize) -> f64 {
    let mut c: ClockCache<u32, ()> = ClockCache::new(cap * (ClockCache::<u32, ()>::overhead() + 1));
    let mut hits = 0;
    for &k in trace {
        if c.get(&k).is_some() {
            hits += 1;
        } else {
            c.insert(k, (), 1);
        }
    }
    hits as f64 / trace.len() as f64
}

fn hit_ratio_lru(trace: &[u32], cap: usize) -> f64 {
    let mut at: HashMap<u32, u64> = HashMap::new();
    let mut order: BTreeMap<u64, u32> = BTreeMap::new();
    let mut hits = 0;
    for (tick, &k) in trace.iter().enumerate() {
        let tick = tick as u64;
        if let Some(old) = at.insert(k, tick) {
            hits += 1;
            order.remove(&old);
        } else if at.len() > cap
            && let Some((_, victim)) = order.pop_first()
        {
            at.remove(&victim);
        }
        order.insert(tick, k);
    }
    hits as f64 / trace.len() as f64
}

fn hit_ratio_fifo(trace: &[u32], cap: usize) -> f64 {
    let mut set: HashSet<u32> = HashSet::new();
    let mut q: VecDeque<u32> = VecDeque::new();
    let mut hits = 0;
    for &k in trace {
        if set.contains(&k) {
            hits += 1;
        } else {
            set.insert(k);
            q.push_back(k);
            if q.len() > cap
                && let Some(v) = q.pop_front()
            {
                set.remove(&v);
            }
        }
    }
    hits as f64 / trace.len() as f64
}

fn query(i: usize) -> Vec<u8> {
    let name = format!("host{i}.example{}.lab", i % 1000);
    let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn memory_per_entry() {
    const N: usize = 100_000;
    // Packet cache: a typical A answer (question + one compressed A record).
    let before = LIVE.load(Ordering::Relaxed);
    let mut pc = PacketCache::new(1 << 30);
    for i in 0..N {
        let q = query(i);
        let p = parse_query(&q).expect("valid query");
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 1]);
        pc.store(&p, &q, &r, 0, 3600);
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "packet cache: {N} entries, {} B allocated per entry, {} B charged per entry (typical A answer, {} B of wire)",
        used / N as isize,
        pc.used_bytes() / N,
        query(0).len() + 16
    );
    drop(pc);
    let before = LIVE.load(Ordering::Relaxed);
    let rc = RecordCache::new(1 << 30, 86_400, 3_600);
    let now = Instant::now();
    for i in 0..N {
        let name: Name = format!("host{i}.example{}.lab.", i % 1000).parse().expect("name");
        let rec = Record::from_rdata(name.clone(), 3600, RData::A(A::new(192, 0, 2, (i % 250) as u8)));
        rc.put_rrset(&name, 1, vec![rec], Rank::AuthAnswer, now);
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "record cache: {N} one-record A RRsets, {} B allocated per entry, {} B charged per entry",
        used / N as isize,
        rc.used_bytes() / N
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` and `cargo test --benches` ask for a list: nothing to list.
        return;
    }
    let keys = 200_000;
    let len = 2_000_000;
    println!("hit ratio under Zipf load: {keys} distinct keys, {len} requests, cold start included");
    println!("{:>5} {:>7} {:>8} {:>8} {:>8}", "s", "cache%", "CLOCK", "LRU", "FIFO");
    for s in [0.8, 1.0, 1.2] {
        let trace = zipf_trace(keys, len, s, 42);
        for pct in [1, 5, 20] {
            let cap = keys * pct / 100;
            println!(
                "{s:>5} {pct:>6}% {:>8.4} {:>8.4} {:>8.4}",
                hit_ratio_clock(&trace, cap),
                hit_ratio_lru(&trace, cap),
                hit_ratio_fifo(&trace, cap)
            );
        }
    }
    memory_per_entry();
}
