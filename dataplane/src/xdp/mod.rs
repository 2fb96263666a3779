//! The AF_XDP path for cache hits (experimental; the `xdp` cargo feature and `[xdp]
//! enabled`). An XDP program on one interface sends UDP datagrams for the service
//! addresses to an AF_XDP socket per queue; the worker that owns the socket runs each query
//! through the same front door as a socket's (ACL, cookies, rates, policy zones, packet
//! cache) and writes a hit's answer into the query's own frame, which goes straight back
//! out. What is not answered at once (a miss) is resolved as usual and its answer sent
//! through the worker's UDP socket for that address. Nothing else is redirected: TCP,
//! other addresses and ports, fragments, IPv4 options and IPv6 extension headers go on to
//! the kernel's stack.

// Used by the workers only with the feature; built and tested in every build.
#[cfg_attr(not(feature = "xdp"), allow(dead_code, reason = "its tests run in every build"))]
pub(crate) mod frame;

#[cfg(feature = "xdp")]
mod ffi;
#[cfg(feature = "xdp")]
mod program;
#[cfg(feature = "xdp")]
mod xsk;

#[cfg(feature = "xdp")]
pub(crate) use program::Program;
#[cfg(feature = "xdp")]
pub(crate) use xsk::Port;

/// True when this adoxd was built with the `xdp` feature.
pub const BUILT: bool = cfg!(feature = "xdp");

/// Listen addresses the program's `services` map holds (`redirect.bpf.c`).
pub const MAX_SERVICES: usize = 64;

/// What the worker needs to know of the interface.
#[cfg(feature = "xdp")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkInfo {
    /// Its MAC address: frames for another are not ours.
    pub mac: [u8; 6],
    /// Its MTU: larger answers leave through the socket.
    pub mtu: usize,
    /// Queues it has in both directions (`/sys/class/net/IF/queues`): a socket on a queue
    /// without its TX twin would send nothing in copy mode.
    pub queues: u32,
}

#[cfg(feature = "xdp")]
impl LinkInfo {
    fn read(interface: &str) -> std::io::Result<Self> {
        let sys = |what: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{interface}/{what}")).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("interface {interface:?}: /sys/class/net/{interface}/{what}: {e}"),
                )
            })
        };
        let bad = |what: &str| std::io::Error::other(format!("interface {interface:?}: unexpected {what}"));
        let mut mac = [0; 6];
        let text = sys("address")?;
        let parts: Vec<&str> = text.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(bad("address (not Ethernet?)"));
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).map_err(|_| bad("address"))?;
        }
        let mtu = sys("mtu")?.trim().parse().map_err(|_| bad("mtu"))?;
        let count = |prefix: &str| -> std::io::Result<u32> {
            let dir = format!("/sys/class/net/{interface}/queues");
            let n = std::fs::read_dir(&dir)?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count();
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        let queues = count("rx-")?.min(count("tx-")?);
        Ok(Self { mac, mtu, queues })
    }
}

/// The attached program and one bound socket per queue, `queues` of them, for the
/// first workers.
#[cfg(feature = "xdp")]
pub(crate) fn start(
    interface: &str,
    queues: u32,
    services: &[std::net::SocketAddr],
) -> std::io::Result<(Program, Vec<Port>)> {
    if services.len() > MAX_SERVICES {
        return Err(std::io::Error::other(format!("at most {MAX_SERVICES} listen addresses with [xdp] on")));
    }
    let link = LinkInfo::read(interface)?;
    if queues > link.queues {
        return Err(std::io::Error::other(format!(
            "interface {interface:?} has {} receive/transmit queue pairs, [xdp] queues = {queues}",
            link.queues
        )));
    }
    let mut program = Program::attach(interface, services, link.mac)?;
    let mut ports = Vec::new();
    for queue in 0..queues {
        let port = Port::bind(interface, queue, link).map_err(|e| {
            std::io::Error::new(e.kind(), format!("AF_XDP socket on {interface} queue {queue} (CAP_NET_RAW?): {e}"))
        })?;
        program.serve_queue(queue, port.fd())?;
        tracing::info!(
            interface,
            queue,
            mode = if port.zero_copy { "zero-copy" } else { "copy" },
            "AF_XDP socket bound"
        );
        ports.push(port);
    }
    program.seal()?;
    Ok((program, ports))
}

/// Without the feature there is no program and no socket (`[xdp] enabled` is refused by
/// the configuration check).
#[cfg(not(feature = "xdp"))]
#[derive(Debug)]
pub(crate) enum Program {}

/// See [`Program`].
#[cfg(not(feature = "xdp"))]
#[derive(Debug)]
pub(crate) enum Port {}

#[cfg(not(feature = "xdp"))]
pub(crate) fn start(
    _interface: &str,
    _queues: u32,
    _services: &[std::net::SocketAddr],
) -> std::io::Result<(Program, Vec<Port>)> {
    Err(std::io::Error::other("this adoxd was built without the `xdp` feature"))
}
