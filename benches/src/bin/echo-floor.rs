//! `echo-floor`: the cost floor for a UDP DNS server on this machine. It answers every
//! datagram by sending it back with QR set, reading and writing in batches with
//! recvmmsg/sendmmsg, and does no DNS work at all: no resolver can be cheaper per query.
//!
//! `echo-floor 127.0.0.1:5310`
#![allow(unsafe_code, reason = "recvmmsg/sendmmsg through libc: the point of the floor")]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 64;
const MAX: usize = 4096;

fn main() {
    let addr: SocketAddr = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: echo-floor ADDR:PORT");
        std::process::exit(2)
    });
    let sock = UdpSocket::bind(addr).unwrap_or_else(|e| {
        eprintln!("echo-floor: bind {addr}: {e}");
        std::process::exit(1)
    });
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; MAX]; BATCH];
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: MAX }).collect();
    // SAFETY: as above.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        for i in 0..BATCH {
            iovs[i].iov_len = MAX;
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs holds BATCH valid headers whose buffers, iovecs and name storage live
        // as long as this call; blocking until at least one datagram arrives.
        let n =
            unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            let len = hdrs[i].msg_len as usize;
            if len > 2 {
                bufs[i][2] |= 0x80;
            }
            iovs[i].iov_len = len;
        }
        // SAFETY: the first n headers were filled by recvmmsg and still point at live buffers
        // and peer addresses; their iov lengths are the received lengths.
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
    }
}
