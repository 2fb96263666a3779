//! dnstap: what adox receives and sends, as the dnstap protobuf schema's messages over
//! Frame Streams, to a collector on a unix socket or TCP (`[dnstap]`). The query path only
//! encodes a message and offers it to a bounded queue (`dnstap.buffer_bytes`); one thread
//! of its own writes the queue to the collector, reconnecting when it goes away. A slow or
//! absent collector never slows an answer: past the buffer, messages are dropped and
//! counted (`adox_dnstap_messages_total{result="dropped"}`).

mod encode;
mod fstrm;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

pub use encode::{Kind, Protocol};

/// Where the collector listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collector {
    /// A unix stream socket (`fstrm_capture -u PATH`).
    Unix(std::path::PathBuf),
    /// A TCP address (`fstrm_capture -a ADDR -p PORT`).
    Tcp(SocketAddr),
}

/// Which message types are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools, reason = "four independent switches, as the configuration has them")]
pub struct Types {
    /// CLIENT_QUERY.
    pub client_query: bool,
    /// CLIENT_RESPONSE.
    pub client_response: bool,
    /// RESOLVER_QUERY.
    pub resolver_query: bool,
    /// RESOLVER_RESPONSE.
    pub resolver_response: bool,
}

/// One message's facts; the rest of the schema's fields are left out.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The message type.
    pub kind: Kind,
    /// The transport it travelled on.
    pub protocol: Protocol,
    /// The querying side's address (a client's; adox's own is omitted upstream: the kernel
    /// picks it).
    pub query_addr: Option<SocketAddr>,
    /// The answering side's address (an authoritative server's).
    pub response_addr: Option<SocketAddr>,
    /// When the query was sent or received.
    pub query_time: Option<SystemTime>,
    /// When the response was sent or received.
    pub response_time: Option<SystemTime>,
    /// The query, as sent or received.
    pub query: Option<&'a [u8]>,
    /// The response, as sent or received.
    pub response: Option<&'a [u8]>,
}

/// The sending side, shared by every worker and the resolver.
#[derive(Debug)]
pub struct Dnstap {
    types: Types,
    identity: Vec<u8>,
    version: Vec<u8>,
    tx: crossbeam_channel::Sender<Vec<u8>>,
    /// Octets of encoded messages queued and not yet written.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    stop: Arc<AtomicBool>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The outcome of offering one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued for the collector.
    Queued,
    /// The buffer was full: dropped.
    Dropped,
    /// This type is not sent.
    Off,
}

impl Dnstap {
    /// Starts the writer thread for `collector`.
    pub fn start(collector: Collector, types: Types, identity: String, max_bytes: usize) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (queued, stop) = (queued.clone(), stop.clone());
            std::thread::Builder::new()
                .name("adox-dnstap".into())
                .spawn(move || fstrm::run(&collector, &rx, &queued, &stop))?
        };
        Ok(Arc::new(Self {
            types,
            identity: identity.into_bytes(),
            version: format!("adox {}", env!("CARGO_PKG_VERSION")).into_bytes(),
            tx,
            queued,
            max_bytes,
            stop,
            writer: std::sync::Mutex::new(Some(writer)),
        }))
    }

    /// Whether messages of `kind` are sent (so the caller can skip gathering them).
    pub fn wants(&self, kind: Kind) -> bool {
        match kind {
            Kind::ClientQuery => self.types.client_query,
            Kind::ClientResponse => self.types.client_response,
            Kind::ResolverQuery => self.types.resolver_query,
            Kind::ResolverResponse => self.types.resolver_response,
        }
    }

    /// Encodes `event` and queues it, unless its type is off or the buffer is full.
    pub fn offer(&self, event: &Event<'_>) -> Offered {
        if !self.wants(event.kind) {
            return Offered::Off;
        }
        // Full (a collector away): nothing to encode.
        if self.queued.load(Ordering::Relaxed) >= self.max_bytes {
            return Offered::Dropped;
        }
        let frame = encode::frame(&self.identity, &self.version, event);
        let len = frame.len();
        // Reserve the octets first: many workers offer at once.
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return Offered::Dropped;
        }
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return Offered::Dropped;
        }
        Offered::Queued
    }

    /// Stops the writer: what is queued is written if the collector takes it within a
    /// second (the rest is lost), then the stream is closed (STOP, FINISH).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}
