//! Keeping transferred policy zones fresh, on a thread of its own (`adox-rpz`): AXFR for a
//! zone's first copy (RFC 5936), then IXFR (RFC 1995) at the SOA's refresh interval or
//! when a primary's NOTIFY (RFC 1996) says the zone changed. An IXFR's changes are applied
//! to a copy of the zone's table that shares every bucket it does not touch, then
//! published whole: a worker never waits on a transfer.
//!
//! What a primary sends is bounded: `rpz.max_records` records per transfer, the transfer
//! within `rpz.transfer_timeout_s`, every message checked (ID, QR, RCODE, the zone's SOA
//! first). A NOTIFY is taken only from the zone's own primaries, and starts at most one
//! transfer per zone per second.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::zone::{PolicyZone, ZoneError};
use super::{Rpz, Source, XFR_CURRENT, XFR_FAILED, XFR_OK};

/// Transfer limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Records one transfer may carry.
    pub max_records: usize,
    /// Time one transfer may take, connection included.
    pub timeout: Duration,
}

/// What a transfer brought.
#[derive(Debug)]
enum Outcome {
    /// The zone is at the primary's serial.
    Current,
    /// A new copy, whole (AXFR, or an IXFR answered with the whole zone) or changed.
    Updated { zone: Box<PolicyZone>, changes: usize, whole: bool },
}

/// RFC 1982: whether serial `a` is newer than `b`.
fn newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

fn err(s: impl Into<String>) -> ZoneError {
    ZoneError(s.into())
}

/// The stream of a transfer, read record by record into a zone.
enum Stream {
    /// Nothing yet.
    Start,
    /// The first SOA, the primary's serial; what follows decides the kind.
    First(Record, u32),
    /// A whole zone (AXFR, or IXFR answered in full), until the closing SOA (the serial).
    Whole(PolicyZone, u32),
    /// IXFR changes on a copy of ours; `deleting` between a change's old and new SOA.
    Changes { zone: PolicyZone, deleting: bool, target: u32, changes: usize },
    /// Complete.
    Done(Outcome),
}

fn soa_serial(r: &Record) -> Option<u32> {
    match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// Fills `buf` from the primary by `deadline`, each read at most half a second, so that
/// neither a primary sending a byte at a time nor a stop request waits past it.
fn read_full(tcp: &mut TcpStream, buf: &mut [u8], deadline: Instant, stop: &AtomicBool) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        tcp.set_read_timeout(Some(left.min(Duration::from_millis(500))))?;
        match tcp.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A transfer that failed; `changes`: because of what an IXFR's changes said (a history
/// the primary does not have right), which the whole zone by AXFR may cure.
#[derive(Debug)]
struct Failed {
    error: ZoneError,
    changes: bool,
}

impl From<ZoneError> for Failed {
    fn from(error: ZoneError) -> Self {
        Self { error, changes: false }
    }
}

/// One transfer from `primary`: AXFR when `ours` is `None`, else IXFR from `ours`.
/// `floor`: the serial we are at; a primary not newer than it is current (nothing is
/// read past its first SOA, so a lagging primary never takes us back).
fn transfer(
    primary: SocketAddr,
    origin: &Name,
    ours: Option<&PolicyZone>,
    floor: Option<u32>,
    limits: Limits,
    stop: &AtomicBool,
) -> Result<Outcome, Failed> {
    let deadline = Instant::now() + limits.timeout;
    let mut tcp = TcpStream::connect_timeout(&primary, limits.timeout.min(Duration::from_secs(10)))
        .map_err(|e| err(format!("connect to {primary}: {e}")))?;
    let serial = ours.and_then(|z| z.serial);
    let mut q = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    q.add_query(Query::query(origin.clone(), if serial.is_some() { RecordType::IXFR } else { RecordType::AXFR }));
    if let (Some(s), Some(z)) = (serial, ours) {
        let soa = hickory_proto::rr::rdata::SOA::new(
            origin.clone(),
            origin.clone(),
            s,
            z.refresh_retry.0 as i32,
            z.refresh_retry.1 as i32,
            0,
            0,
        );
        q.add_authority(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)));
    }
    let wire = q.to_vec().map_err(|e| err(e.to_string()))?;
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    tcp.set_write_timeout(Some(limits.timeout)).ok();
    tcp.write_all(&framed).map_err(|e| err(format!("send to {primary}: {e}")))?;
    let mut stream = Stream::Start;
    let mut records = 0usize;
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut len = [0u8; 2];
        if let Err(e) = read_full(&mut tcp, &mut len, deadline, stop) {
            // A lone SOA no newer than ours is the whole answer to an IXFR: current.
            if let Stream::First(_, s) = &stream
                && serial.is_some_and(|o| !newer(*s, o))
            {
                return Ok(Outcome::Current);
            }
            return Err(Failed::from(err(format!("transfer from {primary} ended early: {e}"))));
        }
        let len = usize::from(u16::from_be_bytes(len));
        read_full(&mut tcp, &mut buf[..len], deadline, stop)
            .map_err(|e| err(format!("transfer from {primary}: {e}")))?;
        let m = Message::from_vec(&buf[..len]).map_err(|e| err(format!("bad message from {primary}: {e}")))?;
        if m.id != q.id || m.message_type != MessageType::Response {
            return Err(Failed::from(err(format!("{primary} answered with a message that is not the answer"))));
        }
        if m.response_code != ResponseCode::NoError {
            return Err(Failed::from(err(format!("{primary} answered {}", m.response_code))));
        }
        for r in m.answers {
            records += 1;
            if records > limits.max_records {
                return Err(Failed::from(err(format!(
                    "{primary} sent more than rpz.max_records ({}) records",
                    limits.max_records
                ))));
            }
            stream = step(stream, r, origin, ours).map_err(|error| Failed { error, changes: ours.is_some() })?;
            if let Stream::First(_, s) = &stream
                && floor.is_some_and(|f| !newer(*s, f))
            {
                return Ok(Outcome::Current);
            }
            if let Stream::Whole(z, _) | Stream::Changes { zone: z, .. } = &stream
                && z.table.records() > limits.max_records
            {
                return Err(Failed::from(err(format!(
                    "zone from {primary} holds more than rpz.max_records ({})",
                    limits.max_records
                ))));
            }
            if let Stream::Done(_) = stream {
                break;
            }
        }
        match stream {
            Stream::Done(outcome) => return Ok(outcome),
            Stream::First(_, s) if serial.is_some_and(|o| !newer(s, o)) => return Ok(Outcome::Current),
            _ => {}
        }
    }
}

/// Reads one more record of a transfer.
fn step(stream: Stream, r: Record, origin: &Name, ours: Option<&PolicyZone>) -> Result<Stream, ZoneError> {
    let serial = soa_serial(&r);
    Ok(match stream {
        Stream::Start => {
            let s = serial
                .filter(|_| r.name == *origin)
                .ok_or_else(|| err("the transfer does not start with the zone's SOA"))?;
            Stream::First(r, s)
        }
        Stream::First(first, target) => {
            // Never back: a primary behind ours (a lagging secondary) changes nothing.
            if let Some(o) = ours.and_then(|z| z.serial)
                && !newer(target, o)
            {
                return Err(err(format!("the primary is at serial {target}, not newer than ours ({o})")));
            }
            match serial {
                // SOA, SOA at the same serial: an empty zone, whole.
                Some(s) if s == target => Stream::Done(Outcome::Updated {
                    zone: Box::new(PolicyZone::from_records(origin, [&first])?),
                    changes: 0,
                    whole: true,
                }),
                // An IXFR's first change starts at our serial.
                Some(s) => match ours {
                    Some(ours) if Some(s) == ours.serial => {
                        Stream::Changes { zone: ours.clone(), deleting: true, target, changes: 0 }
                    }
                    _ => return Err(err(format!("IXFR changes start at serial {s}, not at ours"))),
                },
                None => {
                    let mut zone = PolicyZone::default();
                    zone.apply(origin, &first, true);
                    zone.apply(origin, &r, true);
                    Stream::Whole(zone, target)
                }
            }
        }
        Stream::Whole(zone, target) if serial.is_some() => {
            // The closing SOA is the first one again, at the apex.
            if serial != Some(target) || r.name != *origin {
                return Err(err("a whole-zone transfer does not end with its first SOA"));
            }
            let changes = zone.table.len();
            Stream::Done(Outcome::Updated { zone: Box::new(zone), changes, whole: true })
        }
        Stream::Whole(mut zone, target) => {
            zone.apply(origin, &r, true);
            Stream::Whole(zone, target)
        }
        Stream::Changes { mut zone, deleting, target, changes } => match serial {
            Some(_) if deleting => {
                zone.apply(origin, &r, true);
                Stream::Changes { zone, deleting: false, target, changes }
            }
            Some(s) if s == target && zone.serial == Some(target) => {
                Stream::Done(Outcome::Updated { zone: Box::new(zone), changes, whole: false })
            }
            // The next change starts where the last one ended.
            Some(s) if Some(s) == zone.serial => Stream::Changes { zone, deleting: true, target, changes },
            Some(s) => return Err(err(format!("IXFR change from serial {s} does not follow the one before"))),
            None => {
                zone.apply(origin, &r, !deleting);
                Stream::Changes { zone, deleting, target, changes: changes + 1 }
            }
        },
        Stream::Done(o) => Stream::Done(o),
    })
}

/// A transferred zone's schedule.
#[derive(Debug)]
struct Schedule {
    index: usize,
    primaries: Vec<SocketAddr>,
    working: Option<PolicyZone>,
    due: Instant,
    last_try: Option<Instant>,
    failures: u32,
}

/// The thread: stops when `stop` is set (within half a second).
#[derive(Debug)]
pub struct Transfers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Transfers {
    /// Starts the thread for every zone with primaries; `notify`: the socket NOTIFY
    /// messages arrive on (`rpz.notify_listen`).
    pub fn start(rpz: Arc<Rpz>, notify: Option<UdpSocket>, limits: Limits) -> std::io::Result<Option<Self>> {
        let now = Instant::now();
        let zones: Vec<Schedule> = rpz
            .zones
            .iter()
            .enumerate()
            .filter_map(|(index, z)| match &z.source {
                Source::Primaries(p) => {
                    Some(Schedule { index, primaries: p.clone(), working: None, due: now, last_try: None, failures: 0 })
                }
                Source::File(_) => None,
            })
            .collect();
        if zones.is_empty() {
            return Ok(None);
        }
        if let Some(s) = &notify {
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("adox-rpz".into())
            .spawn(move || run(&rpz, zones, notify, limits, &flag))?;
        Ok(Some(Self { stop, thread: Some(thread) }))
    }

    /// Stops the thread and waits for it (a transfer under way is cut at its timeout).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(rpz: &Rpz, mut zones: Vec<Schedule>, notify: Option<UdpSocket>, limits: Limits, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for z in zones.iter_mut().filter(|z| z.due <= now) {
            refresh(rpz, z, limits, stop);
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        let next = zones.iter().map(|z| z.due).min().unwrap_or(now + Duration::from_secs(1));
        let wait =
            next.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(10), Duration::from_millis(500));
        match &notify {
            Some(sock) => {
                sock.set_read_timeout(Some(wait)).ok();
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    on_notify(rpz, &mut zones, sock, &buf[..n], from);
                }
            }
            None => std::thread::sleep(wait),
        }
    }
}

/// Takes a NOTIFY for one of our zones from one of its primaries (acknowledged, and the
/// zone's refresh brought forward); anything else is dropped and counted.
fn on_notify(rpz: &Rpz, zones: &mut [Schedule], sock: &UdpSocket, msg: &[u8], from: SocketAddr) {
    let Ok(m) = Message::from_vec(msg) else { return };
    if m.op_code != OpCode::Notify || m.message_type != MessageType::Query {
        return;
    }
    let zone = m.queries.first().and_then(|q| {
        zones
            .iter_mut()
            // (On a dual-stack socket an IPv4 primary arrives as ::ffff:a.b.c.d.)
            .find(|z| {
                rpz.zones[z.index].name == *q.name()
                    && z.primaries.iter().any(|p| p.ip().to_canonical() == from.ip().to_canonical())
            })
    });
    let Some(z) = zone else {
        rpz.notifies[1].fetch_add(1, Ordering::Relaxed);
        crate::rate_limited!(info, %from, "NOTIFY refused: not a policy zone of that primary");
        return;
    };
    rpz.notifies[0].fetch_add(1, Ordering::Relaxed);
    // At most one transfer per zone per second, however many NOTIFYs arrive.
    let earliest = z.last_try.map_or_else(Instant::now, |t| t + Duration::from_secs(1));
    z.due = z.due.min(earliest.max(Instant::now()));
    let mut reply = Message::new(m.id, MessageType::Response, OpCode::Notify);
    reply.metadata.authoritative = true;
    reply.queries = m.queries;
    if let Ok(wire) = reply.to_vec() {
        let _ = sock.send_to(&wire, from);
    }
}

/// Brings one zone up to date from its primaries (the first that answers), publishes a
/// new copy, and sets the next refresh: the SOA's refresh (or `refresh_s`) after a
/// success, its retry (doubling, at most an hour) after failures.
fn refresh(rpz: &Rpz, z: &mut Schedule, limits: Limits, stop: &AtomicBool) {
    let info = &rpz.zones[z.index];
    let started = Instant::now();
    z.last_try = Some(started);
    let mut last_error = None;
    let mut result = None;
    'primaries: for p in &z.primaries {
        // IXFR from what we have; when that fails (a primary without the history, a
        // broken change sequence), the whole zone by AXFR from the same primary.
        // Only then: a timeout or a refusal is not cured by asking for more.
        let floor = z.working.as_ref().and_then(|w| w.serial);
        let mut ours = z.working.as_ref();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match transfer(*p, &info.name, ours, floor, limits, stop) {
                Ok(o) => {
                    result = Some((o, *p));
                    break 'primaries;
                }
                Err(Failed { error, changes }) => {
                    last_error = Some((error, *p));
                    if !(changes && ours.is_some()) {
                        break;
                    }
                    ours = None;
                }
            }
        }
    }
    let (refresh, retry) = z.working.as_ref().map_or((0, 0), |w| w.refresh_retry);
    match result {
        Some((Outcome::Current, _)) => {
            info.transfers[XFR_CURRENT].fetch_add(1, Ordering::Relaxed);
            z.failures = 0;
        }
        Some((Outcome::Updated { zone, changes, whole }, from)) => {
            info.transfers[XFR_OK].fetch_add(1, Ordering::Relaxed);
            z.failures = 0;
            tracing::info!(
                zone = %info.name,
                primary = %from,
                serial = zone.serial.unwrap_or_default(),
                rules = zone.table.len(),
                kind = if whole { "whole" } else { "incremental" },
                changes,
                took_ms = started.elapsed().as_millis() as u64,
                "policy zone transferred"
            );
            // A change of serial alone rewrites nothing: the packet caches stay.
            rpz.publish(z.index, Arc::new(PolicyZone::clone(&zone)), whole || changes > 0);
            z.working = Some(*zone);
        }
        None => {
            info.transfers[XFR_FAILED].fetch_add(1, Ordering::Relaxed);
            z.failures = z.failures.saturating_add(1);
            if let Some((e, p)) = last_error {
                crate::rate_limited!(warn, zone = %info.name, primary = %p, error = %e, "policy zone transfer failed");
            }
        }
    }
    let (refresh, retry) = z.working.as_ref().map_or((refresh, retry), |w| w.refresh_retry);
    let wait = if z.failures == 0 {
        if info.refresh_s > 0 { info.refresh_s } else { refresh.clamp(30, 86_400) }
    } else {
        let base = if info.refresh_s > 0 { info.refresh_s.min(retry.max(1)) } else { retry.clamp(5, 3_600) };
        base.saturating_mul(1 << (z.failures - 1).min(10)).min(3_600)
    };
    z.due = Instant::now() + Duration::from_secs(u64::from(wait));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn soa(serial: u32) -> Record {
        let s = hickory_proto::rr::rdata::SOA::new(n("ns.rpz."), n("a.rpz."), serial, 3600, 600, 86400, 60);
        Record::from_rdata(n("rpz."), 60, RData::SOA(s))
    }

    fn block(owner: &str) -> Record {
        Record::from_rdata(n(owner), 60, RData::CNAME(hickory_proto::rr::rdata::CNAME(Name::root())))
    }

    fn feed(records: Vec<Record>, ours: Option<&PolicyZone>) -> Result<Stream, ZoneError> {
        let mut s = Stream::Start;
        for r in records {
            s = step(s, r, &n("rpz."), ours)?;
        }
        Ok(s)
    }

    #[test]
    fn serials_compare_in_sequence_space() {
        assert!(newer(2, 1) && !newer(1, 2) && !newer(5, 5));
        assert!(newer(0, u32::MAX), "wrap-around");
    }

    #[test]
    fn axfr_ixfr_and_ixfr_answered_in_full_are_read() {
        let Stream::Done(Outcome::Updated { zone, whole: true, .. }) =
            feed(vec![soa(1), block("a.rpz."), block("b.rpz."), soa(1)], None).unwrap()
        else {
            panic!()
        };
        assert_eq!((zone.serial, zone.table.len()), (Some(1), 2));
        // IXFR 1 -> 3 in two changes: -a +c, then -b.
        let changes =
            vec![soa(3), soa(1), block("a.rpz."), soa(2), block("c.rpz."), soa(2), block("b.rpz."), soa(3), soa(3)];
        let Stream::Done(Outcome::Updated { zone: next, whole: false, .. }) = feed(changes, Some(&zone)).unwrap()
        else {
            panic!()
        };
        assert_eq!((next.serial, next.table.len()), (Some(3), 1));
        assert_eq!(zone.table.len(), 2, "the copy we had is untouched");
        // An IXFR answered with the whole zone.
        let Stream::Done(Outcome::Updated { zone: full, whole: true, .. }) =
            feed(vec![soa(4), block("z.rpz."), soa(4)], Some(&zone)).unwrap()
        else {
            panic!()
        };
        assert_eq!(full.table.len(), 1);
        // An empty zone, whole, in answer to an IXFR.
        let Stream::Done(Outcome::Updated { zone: empty, whole: true, .. }) =
            feed(vec![soa(5), soa(5)], Some(&zone)).unwrap()
        else {
            panic!()
        };
        assert_eq!((empty.serial, empty.table.len()), (Some(5), 0));
        // Refused: changes from a serial we do not have; a gap between changes (1 -> 2,
        // then 4 -> 5); a primary behind us, whole or not; a whole zone that ends on
        // another serial; a stream without SOA.
        assert!(feed(vec![soa(3), soa(2), block("a.rpz.")], Some(&zone)).is_err());
        let gap = vec![soa(5), soa(1), soa(2), block("c.rpz."), soa(4), soa(5), soa(5)];
        assert!(feed(gap, Some(&zone)).is_err());
        let mut ahead = PolicyZone::clone(&zone);
        ahead.serial = Some(7);
        assert!(feed(vec![soa(6), block("z.rpz."), soa(6)], Some(&ahead)).is_err());
        assert!(feed(vec![soa(2), block("z.rpz."), soa(3)], None).is_err());
        assert!(feed(vec![block("a.rpz.")], None).is_err());
    }
}
