//! Client TCP per RFC 7766: idle connections are closed after the idle timeout, the
//! connection caps (overall and per client address) close extra connections at once, a
//! message must arrive whole within its deadline (a trickle of bytes keeps nothing open),
//! a client that never reads is cut off, and a client that half-closes after its queries
//! still gets every answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::{Adoxd, Ask, Response, read_frame, temp_config, write_frame};

/// Seconds until the server closes `s` (reads return 0), or None within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => Some(start.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(start.elapsed()),
        _ => None,
    }
}

#[test]
fn rfc7766_idle_connection_is_closed_after_the_timeout() {
    let (_dir, cfg) = temp_config("[server]\ntcp_idle_timeout_ms = 300\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    // An answered query keeps it open; then it idles.
    write_frame(&mut s, &Ask::new("localhost.", RecordType::A).wire());
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(read_frame(&mut s).is_some());
    let after = closed_within(&mut s, Duration::from_secs(5)).expect("closed by the server");
    assert!(after >= Duration::from_millis(200), "closed too early: {after:?}");
}

#[test]
fn connection_cap_closes_extra_connections() {
    let (_dir, cfg) = temp_config("[server]\ntcp_max_connections = 2\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let keep: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(d.addr).unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(3)).is_some(), "a third connection was kept");
    // The first two still work.
    for mut s in keep {
        write_frame(&mut s, &Ask::new("localhost.", RecordType::A).wire());
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(Response::parse(read_frame(&mut s).unwrap()).rdata(RecordType::A), ["127.0.0.1"]);
    }
}

#[test]
fn half_closed_client_still_gets_every_answer() {
    let d = Adoxd::lab(&[]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    let names = ["www.alpha.lab.", "www.beta.lab.", "www.noglue.lab."];
    let mut bytes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut ask = Ask::new(n, RecordType::A);
        ask.id = i as u16;
        let w = ask.wire();
        bytes.extend_from_slice(&(w.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&w);
    }
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ids: Vec<u16> =
        (0..names.len()).map(|_| Response::parse(read_frame(&mut s).unwrap()).msg.metadata.id).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2]);
    // Then the server closes its side.
    assert!(closed_within(&mut s, Duration::from_secs(5)).is_some());
}

#[test]
fn pipelining_cap_pauses_reading_but_answers_everything() {
    let (_dir, cfg) = temp_config("[server]\ntcp_max_pipelined = 2\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    for i in 0..20u16 {
        let mut ask = Ask::new(&format!("n{i}.alpha.lab."), RecordType::A);
        ask.id = i;
        write_frame(&mut s, &ask.wire());
    }
    let mut ids: Vec<u16> =
        (0..20).map(|_| Response::parse(read_frame(&mut s).expect("answer")).msg.metadata.id).collect();
    ids.sort();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
}

#[test]
fn a_client_that_never_reads_is_held_back() {
    // Big answers requested over and over, never read: adox must stop reading the
    // connection once its unsent output is large, so the client's writes block, instead of
    // queueing answers without bound.
    let d = Adoxd::lab(&[]);
    d.ask_tcp(&Ask::new("big.alpha.lab.", RecordType::TXT));
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = Ask::new("big.alpha.lab.", RecordType::TXT).wire();
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    let chunk: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * 1000).collect();
    let mut written = 0usize;
    let limit = 256 << 20;
    while written < limit {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(written < limit, "adox kept reading {written} bytes of queries whose answers nobody read");
    // Others are still served.
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
}

/// One address cannot take every connection: past `tcp_max_connections_per_client` its
/// connections are closed at accept, and another address is still served.
#[test]
fn per_client_cap_closes_extra_connections_from_one_address() {
    let (_dir, cfg) = temp_config("[server]\ntcp_max_connections_per_client = 2\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    let keep: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(d.addr).unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(3)).is_some(), "a third connection from one address");
    // Another loopback address is another client.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    other.connect(&d.addr.into()).unwrap();
    let mut other: TcpStream = other.into();
    write_frame(&mut other, &Ask::new("localhost.", RecordType::A).wire());
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(Response::parse(read_frame(&mut other).unwrap()).rdata(RecordType::A), ["127.0.0.1"]);
    drop(keep);
}

/// Slowloris: a message trickled one octet at a time never completes; the connection is
/// closed at the message deadline although bytes keep coming (each byte once restarted
/// the idle timer).
#[test]
fn a_trickled_message_is_cut_off_at_its_deadline() {
    let (_dir, cfg) = temp_config("[server]\ntcp_idle_timeout_ms = 60000\ntcp_message_timeout_ms = 1000\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    let q = Ask::new("localhost.", RecordType::A).wire();
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    let start = Instant::now();
    let mut closed = None;
    for b in frame.iter().take(frame.len() - 1).cycle().take(40) {
        if s.write_all(&[*b]).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut buf = [0u8; 1];
        if let Ok(0) = s.read(&mut buf) {
            closed = Some(start.elapsed());
            break;
        }
    }
    let closed = closed.expect("the trickling connection was kept open");
    assert!(closed >= Duration::from_millis(900) && closed < Duration::from_secs(4), "closed after {closed:?}");
}

/// A client outside `allow_clients` cannot hold a connection: it is closed at accept.
#[test]
fn a_refused_client_cannot_hold_a_connection() {
    let (_dir, cfg) = temp_config("[access]\nallow_clients = [\"192.0.2.0/24\"]\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap()]);
    let mut s = TcpStream::connect(d.addr).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)).is_some(), "a refused client kept its connection");
}

/// A client that sends many queries for large answers and never reads them is cut off
/// once its unsent answers pass the hard cap, instead of holding them all in memory.
#[test]
fn a_client_that_never_reads_is_cut_off_at_the_output_cap() {
    let (_dir, cfg) = temp_config("[server]\ntcp_max_pipelined = 4096\n");
    let d = Adoxd::lab(&["--config", cfg.to_str().unwrap(), "--workers", "1"]);
    d.ask_tcp(&Ask::new("big.alpha.lab.", RecordType::TXT));
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive window: the answers pile up on adox's side.
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&d.addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = Ask::new("big.alpha.lab.", RecordType::TXT).wire();
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    let burst: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * 2000).collect();
    let _ = s.write_all(&burst);
    // Past the hard cap adox closes the connection; with unread data on our side the
    // close shows as a reset or end of stream once we look.
    std::thread::sleep(Duration::from_millis(500));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let cut = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
        if total > 64 << 20 {
            break false;
        }
    };
    assert!(cut, "the connection was kept after {total} bytes of answers");
    // Others are still served.
    assert_eq!(d.query("www.alpha.lab.", RecordType::A).rdata(RecordType::A), ["192.0.2.10"]);
}
