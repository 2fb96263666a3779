//! The Frame Streams writer (bidirectional, as `fstrm_capture` and dnstap collectors speak
//! it on a socket): READY with the content type, the reader's ACCEPT, START, then data
//! frames; STOP and the reader's FINISH at the end. One thread: it owns the connection,
//! takes encoded frames from the queue, and reconnects (every second at most) when the
//! collector is away, while the queue keeps what arrives up to the buffer.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::Collector;

const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
const ACCEPT: u32 = 0x01;
const START: u32 = 0x02;
const STOP: u32 = 0x03;
const READY: u32 = 0x04;
const FINISH: u32 = 0x05;
const FIELD_CONTENT_TYPE: u32 = 0x01;
/// A control frame from the reader longer than this is not Frame Streams.
const MAX_CONTROL: usize = 512;
/// How long a handshake or the final FINISH may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the writer waits before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

trait Stream: Read + Write + Send {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Stream for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

impl Stream for std::net::TcpStream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

fn control(kind: u32, with_type: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if with_type {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut f = vec![0, 0, 0, 0];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// Reads one control frame; its type.
fn read_control(s: &mut dyn Stream) -> std::io::Result<u32> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    if head[..4] != [0; 4] {
        return Err(bad("a data frame where a control frame was due"));
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(bad("control frame length"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(u32::from_be_bytes([body[0], body[1], body[2], body[3]]))
}

fn connect(c: &Collector) -> std::io::Result<Box<dyn Stream>> {
    let mut s: Box<dyn Stream> = match c {
        Collector::Unix(p) => {
            // A connect to a listener whose backlog is full waits for room: bounded, so a
            // frozen collector cannot hold the writer (and a shutdown) for ever.
            let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
            sock.connect(&socket2::SockAddr::unix(p)?)?;
            Box::new(std::os::unix::net::UnixStream::from(sock))
        }
        Collector::Tcp(a) => Box::new(std::net::TcpStream::connect_timeout(a, HANDSHAKE_TIMEOUT)?),
    };
    s.set_timeouts(Some(HANDSHAKE_TIMEOUT))?;
    s.write_all(&control(READY, true))?;
    if read_control(s.as_mut())? != ACCEPT {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the collector did not ACCEPT"));
    }
    s.write_all(&control(START, true))?;
    // Writes block this thread only; a collector that stops reading for this long is
    // dropped and connected again.
    s.set_timeouts(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// The writer thread's loop, until `stop`.
pub(super) fn run(
    collector: &Collector,
    rx: &crossbeam_channel::Receiver<Vec<u8>>,
    queued: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut conn: Option<Box<dyn Stream>> = None;
    let mut next_try = std::time::Instant::now();
    // Set when stopping: what is still queued then gets a second to reach the collector.
    let mut drain_until: Option<std::time::Instant> = None;
    let take = |frame: &Vec<u8>| queued.fetch_sub(frame.len(), Ordering::Relaxed);
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if stopping
            && *drain_until.get_or_insert_with(|| std::time::Instant::now() + Duration::from_secs(1))
                < std::time::Instant::now()
        {
            break;
        }
        if conn.is_none() {
            if std::time::Instant::now() >= next_try {
                match connect(collector) {
                    Ok(s) => {
                        tracing::info!(collector = ?collector, "dnstap: connected");
                        conn = Some(s);
                    }
                    Err(e) => {
                        crate::rate_limited!(warn, collector = ?collector, error = %e, "dnstap: cannot reach the collector; messages past the buffer are dropped");
                        next_try = std::time::Instant::now() + RECONNECT;
                    }
                }
            }
            if conn.is_none() {
                // The queue fills meanwhile, up to the buffer; offers past it are dropped
                // (and counted) by the query path.
                if stopping {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        }
        let frame = if stopping {
            match rx.try_recv() {
                Ok(f) => f,
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(f) => f,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        };
        take(&frame);
        let Some(s) = conn.as_mut() else { continue };
        let mut batch = frame;
        // Whatever else is queued goes in the same write.
        while batch.len() < 256 * 1024
            && let Ok(more) = rx.try_recv()
        {
            take(&more);
            batch.extend_from_slice(&more);
        }
        if let Err(e) = s.write_all(&batch) {
            crate::rate_limited!(warn, collector = ?collector, error = %e, "dnstap: the collector went away; reconnecting");
            conn = None;
            next_try = std::time::Instant::now() + RECONNECT;
        }
    }
    if let Some(mut s) = conn {
        let _ = s.set_timeouts(Some(HANDSHAKE_TIMEOUT));
        if s.write_all(&control(STOP, false)).is_ok() {
            let _ = read_control(s.as_mut()).map(|t| t == FINISH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_carry_the_content_type() {
        let f = control(READY, true);
        assert_eq!(&f[..4], &[0; 4]);
        assert_eq!(u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize, f.len() - 8);
        assert_eq!(&f[8..12], &READY.to_be_bytes());
        assert_eq!(&f[f.len() - CONTENT_TYPE.len()..], CONTENT_TYPE);
        assert_eq!(control(STOP, false), [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]);
    }
}
