//! `adox-load`: a UDP load generator for DNS servers.
//!
//! Reads queries in dnsperf's format (`NAME TYPE` per line), spreads them over many source
//! ports (each its own connected socket, so SO_REUSEPORT hashing reaches every worker),
//! and runs either at a fixed rate or flat out with a cap on queries in flight, for a set
//! duration. Reports sent, answered, lost, QPS, RCODEs and latency percentiles.
//!
//! ```text
//! adox-load --server 127.0.0.1:5300 --queries names.txt --duration 10 --rate 60000
//! adox-load --server 127.0.0.1:5300 --queries names.txt --duration 10 --max-outstanding 500
//! ```

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

/// Send timestamps remembered per socket; a reply whose slot was reused is not matched.
const SLOTS: usize = 4096;

#[derive(Debug)]
struct Args {
    server: SocketAddr,
    queries: String,
    duration: Duration,
    rate: Option<f64>,
    max_outstanding: usize,
    sockets: usize,
    timeout: Duration,
    edns: bool,
    json: bool,
    /// At a fixed rate, sleep (nanosleep, microsecond timers) until the next send is due
    /// instead of spinning.
    pace_sleep: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: adox-load --server ADDR:PORT --queries FILE [--duration SECS] [--rate QPS | --max-outstanding N]\n\
         \x20                [--sockets N (>=128 default 128)] [--timeout-ms MS] [--edns] [--json] [--pace spin|sleep]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        server: SocketAddr::from(([127, 0, 0, 1], 5300)),
        queries: String::new(),
        duration: Duration::from_secs(10),
        rate: None,
        max_outstanding: 1000,
        sockets: 128,
        timeout: Duration::from_millis(1000),
        edns: false,
        json: false,
        pace_sleep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        let bad = |f: &str, v: &str| -> ! {
            eprintln!("adox-load: bad value `{v}` for {f}");
            std::process::exit(2)
        };
        match flag.as_str() {
            "--server" => {
                let v = val();
                a.server = v.parse().unwrap_or_else(|_| bad("--server", &v));
            }
            "--queries" => a.queries = val(),
            "--duration" => {
                let v = val();
                a.duration = Duration::from_secs_f64(v.parse().unwrap_or_else(|_| bad("--duration", &v)));
            }
            "--rate" => {
                let v = val();
                a.rate = Some(
                    v.parse().ok().filter(|r: &f64| *r > 0.0 && r.is_finite()).unwrap_or_else(|| bad("--rate", &v)),
                );
            }
            "--max-outstanding" => {
                let v = val();
                a.max_outstanding = v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| bad("--max-outstanding", &v));
            }
            "--sockets" => {
                let v = val();
                a.sockets = v.parse().ok().filter(|n| *n >= 1).unwrap_or_else(|| bad("--sockets", &v));
            }
            "--timeout-ms" => {
                let v = val();
                a.timeout = Duration::from_millis(v.parse().unwrap_or_else(|_| bad("--timeout-ms", &v)));
            }
            "--edns" => a.edns = true,
            "--pace" => {
                let v = val();
                a.pace_sleep = match v.as_str() {
                    "spin" => false,
                    "sleep" => true,
                    _ => bad("--pace", &v),
                };
            }
            "--json" => a.json = true,
            _ => usage(),
        }
    }
    if a.queries.is_empty() {
        usage();
    }
    a
}

fn load_queries(path: &str, edns: bool) -> io::Result<Vec<Vec<u8>>> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for (i, line) in io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(rtype)) = (parts.next(), parts.next()) else {
            return Err(io::Error::other(format!("{path}:{}: expected NAME TYPE", i + 1)));
        };
        let name = Name::from_ascii(name).map_err(|e| io::Error::other(format!("{path}:{}: {e}", i + 1)))?;
        let rtype: RecordType = rtype.parse().map_err(|e| io::Error::other(format!("{path}:{}: {e}", i + 1)))?;
        let mut m = Message::new(0, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, rtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        out.push(m.to_vec().map_err(|e| io::Error::other(e.to_string()))?);
    }
    if out.is_empty() {
        return Err(io::Error::other(format!("{path}: no queries")));
    }
    Ok(out)
}

struct Sock {
    s: UdpSocket,
    next_id: u16,
    sent_at: Vec<u64>,
    outstanding: usize,
}

fn main() {
    let args = parse_args();
    let queries = load_queries(&args.queries, args.edns).unwrap_or_else(|e| {
        eprintln!("adox-load: {e}");
        std::process::exit(1)
    });
    // Loopback for a server on loopback (as always); any address for one elsewhere (a
    // veth peer in benches/xdp.sh), the route choosing the source.
    let bind: SocketAddr = match (args.server.is_ipv4(), args.server.ip().is_loopback()) {
        (true, true) => ([127, 0, 0, 1], 0).into(),
        (true, false) => ([0, 0, 0, 0], 0).into(),
        (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let fail = |what: &str, e: io::Error| -> ! {
        eprintln!("adox-load: {what}: {e}");
        std::process::exit(1)
    };
    let mut poll = Poll::new().unwrap_or_else(|e| fail("poll", e));
    let mut socks: Vec<Sock> = Vec::with_capacity(args.sockets);
    for i in 0..args.sockets {
        let mut s = UdpSocket::bind(bind).unwrap_or_else(|e| fail("bind", e));
        s.connect(args.server).unwrap_or_else(|e| fail("connect", e));
        poll.registry().register(&mut s, Token(i), Interest::READABLE).unwrap_or_else(|e| fail("register", e));
        socks.push(Sock { s, next_id: 0, sent_at: vec![0; SLOTS], outstanding: 0 });
    }
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let now_us = || start.elapsed().as_micros() as u64;
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut rcodes = [0u64; 16];
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut buf = [0u8; 4096];
    let mut qi = 0usize;
    let mut si = 0usize;
    let mut outstanding = 0usize;
    let end_send = args.duration;
    let end_all = args.duration + args.timeout;
    let timeout_us = args.timeout.as_micros() as u64;
    let mut last_expiry = Instant::now();
    loop {
        // Queries unanswered past the timeout are lost: free their slots.
        if last_expiry.elapsed() >= Duration::from_millis(100) {
            last_expiry = Instant::now();
            let now = now_us();
            for sock in socks.iter_mut().filter(|s| s.outstanding > 0) {
                for t in sock.sent_at.iter_mut() {
                    if *t != 0 && now - *t > timeout_us {
                        *t = 0;
                        sock.outstanding -= 1;
                        outstanding -= 1;
                    }
                }
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= end_all || (elapsed >= end_send && outstanding == 0) {
            break;
        }
        // Send what is due.
        if elapsed < end_send {
            let due = match args.rate {
                Some(r) => ((elapsed.as_secs_f64() * r) as u64).saturating_sub(sent).min(256),
                None => args.max_outstanding.saturating_sub(outstanding).min(256) as u64,
            };
            for _ in 0..due {
                let sock = &mut socks[si];
                si = (si + 1) % args.sockets;
                let q = &queries[qi];
                qi = (qi + 1) % queries.len();
                let id = sock.next_id;
                sock.next_id = sock.next_id.wrapping_add(1);
                let mut msg = [0u8; 512];
                let n = q.len().min(512);
                msg[..n].copy_from_slice(&q[..n]);
                msg[..2].copy_from_slice(&id.to_be_bytes());
                let slot = usize::from(id) % SLOTS;
                if sock.sent_at[slot] != 0 {
                    // The slot still holds an unanswered query: count it as lost now.
                    sock.outstanding -= 1;
                    outstanding -= 1;
                }
                match sock.s.send(&msg[..n]) {
                    Ok(_) => {
                        sock.sent_at[slot] = now_us().max(1);
                        sock.outstanding += 1;
                        outstanding += 1;
                        sent += 1;
                    }
                    Err(_) => sock.sent_at[slot] = 0,
                }
            }
        }
        // Receive what has come back (edge-triggered: drain each ready socket).
        // While sending, never sleep: epoll's timeout has millisecond granularity, so any
        // wait would turn a fixed rate into bursts of rate/1000 queries and measure the
        // bursts rather than the server. The generator has a core of its own.
        let wait = if start.elapsed() < end_send { Duration::ZERO } else { Duration::from_millis(1) };
        if let Err(e) = poll.poll(&mut events, Some(wait))
            && e.kind() != io::ErrorKind::Interrupted
        {
            fail("poll", e);
        }
        // With --pace sleep, yield the core until the next send is due (at most 1 ms): the
        // generator can then share its core with other work (run it at real-time priority
        // so that work cannot delay its sends). Replies that arrive meanwhile are
        // timestamped at wake-up, so latency is measured to within one send interval.
        if args.pace_sleep
            && events.is_empty()
            && let Some(r) = args.rate
        {
            let next_due = Duration::from_secs_f64((sent + 1) as f64 / r);
            let now = start.elapsed();
            if now < end_send && next_due > now + Duration::from_micros(10) {
                std::thread::sleep((next_due - now).min(Duration::from_millis(1)));
            }
        }
        for ev in events.iter() {
            let sock = &mut socks[ev.token().0];
            while let Ok(n) = sock.s.recv(&mut buf) {
                if n < 4 {
                    continue;
                }
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                let slot = usize::from(id) % SLOTS;
                let t = sock.sent_at[slot];
                if t == 0 {
                    continue;
                }
                let now = now_us();
                sock.sent_at[slot] = 0;
                sock.outstanding -= 1;
                outstanding -= 1;
                if now - t <= timeout_us {
                    received += 1;
                    rcodes[usize::from(buf[3] & 0x0F)] += 1;
                    lat.push((now - t).min(u64::from(u32::MAX)) as u32);
                }
            }
        }
    }
    let duration = args.duration.as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        lat[((lat.len() as f64 - 1.0) * p).round() as usize]
    };
    let lost = sent - received;
    let qps = received as f64 / duration;
    if args.json {
        println!(
            "{{\"sent\":{sent},\"received\":{received},\"lost\":{lost},\"duration_s\":{duration},\"qps\":{qps:.0},\
             \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"noerror\":{},\"servfail\":{},\"nxdomain\":{},\"refused\":{}}}",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(0.999),
            rcodes[0],
            rcodes[2],
            rcodes[3],
            rcodes[5]
        );
    } else {
        println!("sent {sent}, answered {received}, lost {lost} ({:.3}%)", 100.0 * lost as f64 / sent.max(1) as f64);
        println!("throughput {qps:.0} answers/s over {duration:.1} s from {} source ports", args.sockets);
        println!("latency p50 {} us, p90 {} us, p99 {} us, p99.9 {} us", pct(0.5), pct(0.9), pct(0.99), pct(0.999));
        println!("rcodes: NOERROR {} NXDOMAIN {} SERVFAIL {} REFUSED {}", rcodes[0], rcodes[3], rcodes[2], rcodes[5]);
    }
}
