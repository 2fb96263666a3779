//! Per-client fairness (`[limits]`): one client flooding cache misses far beyond the
//! worker's capacity gets SERVFAIL for its excess, and another client's misses are still
//! answered.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, temp_config};

/// Sends unique-name misses from 127.0.0.1 at about 4,000 a second (bursts of 20 every
/// 5 ms) until `stop`, draining what comes back; returns how many it sent.
fn flood(target: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..20 {
                let q = Ask::new(&format!("f{sent}.alpha.lab."), RecordType::A).wire();
                let _ = s.send_to(&q, target);
                sent += 1;
            }
            while s.recv_from(&mut buf).is_ok() {}
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    })
}

#[test]
fn one_client_flooding_misses_does_not_starve_another() {
    // One worker with room for 4 misses at a time, 2 of them per client: a few thousand
    // misses a second are many times what it can resolve.
    let (_dir, cfg) = temp_config(
        "[resolver]\nmax_resolutions = 4\n[limits]\nmax_resolutions_per_client = 2\nmax_resolutions_per_prefix = 1000\n",
    );
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    // Warm the delegations both clients use.
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    assert_eq!(d.query("www.beta.lab.", RecordType::A).rcode(), ResponseCode::NoError);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = flood(d.addr, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    // The other client, in another network: unique names too (every one a miss).
    let victim = UdpSocket::bind("127.0.1.2:0").unwrap();
    victim.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut answered, mut asked) = (0u32, 0u32);
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let q = Ask::new(&format!("v{asked}.beta.lab."), RecordType::A).wire();
        victim.send_to(&q, d.addr).unwrap();
        asked += 1;
        if let Ok((n, _)) = victim.recv_from(&mut buf)
            && Response::parse(buf[..n].to_vec()).rcode() == ResponseCode::NXDomain
        {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = attacker.join().unwrap();
    let log = d.terminate();
    let refused_share = Adoxd::stat(&log, "client_share_exceeded");
    assert!(sent > 10 * u64::from(asked), "the flood was a flood: {sent} queries against {asked}");
    assert!(
        f64::from(answered) >= 0.99 * f64::from(asked),
        "the other client got {answered} of {asked} answered during the flood"
    );
    assert!(refused_share > 0, "the flooding client was held to its share");
}
