//! Who is on the other end of a loopback TCP connection.
//!
//! A unix socket tells its peer's uid (`SO_PEERCRED`); TCP does not. On loopback both ends
//! are sockets of this kernel, and `/proc/net/tcp{,6}` lists each with its owner's uid: the
//! peer is the socket whose local address is our remote one and whose remote address is our
//! local one. Grants and agents bound to a uid hold over TCP this way too.

use std::net::{IpAddr, SocketAddr};

/// The uid owning the socket at `peer` connected to `local`, if the kernel lists it.
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    if !peer.ip().is_loopback() {
        return None;
    }
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    find_uid(&text, peer, local)
}

/// The uid column of the row whose local address is `at` and remote address `to`.
fn find_uid(table: &str, at: SocketAddr, to: SocketAddr) -> Option<u32> {
    let (a, b) = (encode(at), encode(to));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid ...; only an ESTABLISHED (01) row: a
        // TIME_WAIT row of an earlier connection on the same ports shows uid 0.
        (f.len() > 7
            && f[3] == "01"
            && f[1].eq_ignore_ascii_case(&a)
            && f[2].eq_ignore_ascii_case(&b))
        .then(|| f[7].parse().ok())
        .flatten()
    })
}

/// An address as the kernel writes it there: the address in 32-bit words of host byte
/// order, in hex, then `:` and the port in hex.
fn encode(a: SocketAddr) -> String {
    let ip = match a.ip() {
        IpAddr::V4(v) => format!("{:08X}", u32::from_ne_bytes(v.octets())),
        IpAddr::V6(v) => v
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_connection_is_traced_to_this_process_uid() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(tcp_peer_uid(s.local_addr().unwrap(), peer), Some(me));
        // Some other port: nobody.
        let other = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(tcp_peer_uid(s.local_addr().unwrap(), other), None);
    }
}
