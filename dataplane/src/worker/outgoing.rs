//! Sockets toward authoritative servers, bound to the operator's source addresses
//! (`transport.outgoing_v4` / `outgoing_v6`) when set, else to whatever the kernel picks.
//! Every upstream socket (Do53 over UDP and TCP, DoT, DoQ) is made here, so a resolver on a
//! multi-homed host sends from the address its authorities and firewalls expect.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// The source addresses of upstream sockets, one per family; `None` lets the kernel choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<Ipv6Addr>,
}

impl Outgoing {
    /// The local address (port 0: an ephemeral port the kernel picks at random) for
    /// talking to `server`.
    fn local_for(self, server: SocketAddr) -> SocketAddr {
        let ip: IpAddr = match server {
            SocketAddr::V4(_) => self.v4.unwrap_or(Ipv4Addr::UNSPECIFIED).into(),
            SocketAddr::V6(_) => self.v6.unwrap_or(Ipv6Addr::UNSPECIFIED).into(),
        };
        (ip, 0).into()
    }

    /// A UDP socket connected to `server`, so the kernel drops datagrams from anyone else.
    /// Without a configured source address there is no bind: connect picks the address
    /// and an ephemeral port, at random as bind to port 0 would (one system call fewer
    /// per upstream query).
    pub(crate) fn udp(self, server: SocketAddr) -> io::Result<mio::net::UdpSocket> {
        let local = self.local_for(server);
        let sock = Socket::new(Domain::for_address(server), Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
        if !local.ip().is_unspecified() {
            sock.bind(&local.into())?;
        }
        sock.connect(&server.into()).map_err(|e| {
            // Out of ephemeral ports, connect says EAGAIN where bind said EADDRINUSE: keep
            // the one that says what ran out.
            if e.raw_os_error() == Some(libc::EAGAIN) { io::Error::from(io::ErrorKind::AddrInUse) } else { e }
        })?;
        Ok(mio::net::UdpSocket::from_std(sock.into()))
    }

    /// A TCP connection to `server`, still being set up (non-blocking connect).
    pub(crate) fn tcp(self, server: SocketAddr) -> io::Result<mio::net::TcpStream> {
        let local = self.local_for(server);
        if local.ip().is_unspecified() {
            return mio::net::TcpStream::connect(server);
        }
        let sock = Socket::new(Domain::for_address(server), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        // The port is chosen at connect, for the whole 4-tuple: without this, bind takes
        // a port of its own for the address, and TIME_WAITs of past connections would
        // exhaust the ports at a few hundred connections a second.
        crate::sys::bind_address_no_port(std::os::fd::AsRawFd::as_raw_fd(&sock))?;
        sock.bind(&local.into())?;
        match sock.connect(&server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(mio::net::TcpStream::from_std(sock.into()))
    }

    /// Checks at start-up that each configured address can be bound here (it is one of
    /// this host's addresses), so a typo is a clear error and not a resolver that fails
    /// every query.
    pub(crate) fn check(self) -> Result<(), (IpAddr, io::Error)> {
        let addrs = [self.v4.map(IpAddr::from), self.v6.map(IpAddr::from)];
        for ip in addrs.into_iter().flatten() {
            std::net::UdpSocket::bind((ip, 0)).map_err(|e| (ip, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_leave_from_the_configured_address_of_their_family() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = Outgoing { v4: Some(Ipv4Addr::new(127, 0, 0, 77)), v6: None };
        let u = out.udp(server.local_addr().unwrap()).unwrap();
        assert_eq!(u.local_addr().unwrap().ip(), IpAddr::from([127, 0, 0, 77]));
        u.send(b"x").unwrap();
        let mut buf = [0u8; 4];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 77]));
        let _t = out.tcp(listener.local_addr().unwrap()).unwrap();
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 77]));
        // Unset: the kernel's choice (127.0.0.1 toward a loopback server), on an ephemeral
        // port chosen at connect, a new one per socket (distinct here; the kernel's pick is
        // random, RFC 5452).
        let ports: std::collections::HashSet<u16> = (0..32)
            .map(|_| {
                let u = Outgoing::default().udp(server.local_addr().unwrap()).unwrap();
                let local = u.local_addr().unwrap();
                assert_eq!(local.ip(), IpAddr::from([127, 0, 0, 1]));
                assert_ne!(local.port(), 0);
                local.port()
            })
            .collect();
        assert!(ports.len() > 24, "{} distinct ports of 32", ports.len());
    }

    #[test]
    fn an_address_this_host_does_not_have_is_refused_at_start() {
        // 192.0.2.1 (TEST-NET-1) is never one of ours; nothing is sent.
        let out = Outgoing { v4: Some(Ipv4Addr::new(192, 0, 2, 1)), v6: None };
        let (ip, e) = out.check().unwrap_err();
        assert_eq!(ip, IpAddr::from([192, 0, 2, 1]));
        assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable);
        assert!(Outgoing { v4: Some(Ipv4Addr::LOCALHOST), v6: None }.check().is_ok());
    }
}
