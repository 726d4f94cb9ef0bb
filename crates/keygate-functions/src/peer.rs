//! Who is at the other end of a Runtime API connection.
//!
//! A function's Runtime API hands out live events (which carry the caller's API key) and takes
//! the answers clients get, so only the process keygate started for that function, or one of
//! its descendants, may talk to it. TCP carries no peer credentials, so on Linux the peer is
//! found through `/proc`: the client's socket is the TCP table entry (`/proc/net/tcp`, `tcp6`)
//! whose local address is the peer's and whose remote address is the listener's; its inode must
//! be held open (`/proc/<pid>/fd`) by the function process or one of its descendants (found
//! through the `ppid` of every process). Descendants rather than the process group: a process
//! group is joined with `setpgid`, which any other function in keygate's session may call, while
//! no process can make itself another's descendant. Done once per connection (runtime clients
//! keep one keep-alive connection per worker), on the blocking pool.
//!
//! Anything that cannot be read (no `/proc`, another OS, the client already gone) refuses the
//! connection: it fails closed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Why a peer could not be checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("cannot read {what}: {message}")]
    Proc { what: &'static str, message: String },
    #[cfg(not(target_os = "linux"))]
    #[error("the Runtime API peer check needs Linux's /proc")]
    Unsupported,
}

/// Whether the TCP client at `peer`, connected to `listener`, is `root` (a pid) or one of its
/// descendants. `Ok(false)` when the socket or its holder cannot be found (it may have closed).
#[cfg(target_os = "linux")]
pub(crate) fn is_descendant_peer(
    root: u32,
    peer: SocketAddr,
    listener: SocketAddr,
) -> Result<bool, PeerError> {
    let Some(inode) = client_socket_inode(peer, listener)? else { return Ok(false) };
    for pid in descendants(root)? {
        // A process that exits meanwhile simply holds nothing any more.
        let Ok(fds) = procfs::process::Process::new(pid).and_then(|p| p.fd()) else { continue };
        let holds = fds.flatten().any(
            |fd| matches!(fd.target, procfs::process::FDTarget::Socket(held) if held == inode),
        );
        if holds {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn is_descendant_peer(
    _root: u32,
    _peer: SocketAddr,
    _listener: SocketAddr,
) -> Result<bool, PeerError> {
    Err(PeerError::Unsupported)
}

/// The inode of the client side of the connection `peer` → `listener`.
#[cfg(target_os = "linux")]
fn client_socket_inode(peer: SocketAddr, listener: SocketAddr) -> Result<Option<u64>, PeerError> {
    let proc_err =
        |what| move |e: procfs::ProcError| PeerError::Proc { what, message: e.to_string() };
    let (peer, listener) = (canonical(peer), canonical(listener));
    let v4 = procfs::net::tcp().map_err(proc_err("/proc/net/tcp"))?;
    // An IPv6 socket reaches the IPv4 listener with a v4-mapped address; no tcp6 table at all
    // (IPv6 disabled) just means there is no such socket.
    let v6 = procfs::net::tcp6().unwrap_or_default();
    Ok(v4
        .iter()
        .chain(&v6)
        .find(|e| {
            e.inode != 0
                && canonical(e.local_address) == peer
                && canonical(e.remote_address) == listener
        })
        .map(|e| e.inode))
}

/// `root` and every process below it, from the parent pids of all processes.
#[cfg(target_os = "linux")]
fn descendants(root: u32) -> Result<Vec<i32>, PeerError> {
    let root = i32::try_from(root).map_err(|_| PeerError::Proc {
        what: "the function's pid",
        message: format!("{root} is out of range"),
    })?;
    let all = procfs::process::all_processes()
        .map_err(|e| PeerError::Proc { what: "/proc", message: e.to_string() })?;
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for process in all.flatten() {
        if let Ok(stat) = process.stat() {
            children.entry(stat.ppid).or_default().push(stat.pid);
        }
    }
    let mut found = vec![root];
    let mut seen: HashSet<i32> = HashSet::from([root]);
    let mut at = 0;
    while let Some(&pid) = found.get(at) {
        at += 1;
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if seen.insert(child) {
                found.push(child);
            }
        }
    }
    Ok(found)
}

/// `addr` with a v4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it maps.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    use super::*;

    #[test]
    fn a_connection_from_this_process_is_its_own_and_not_a_childs() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(client.local_addr().unwrap(), peer);
        assert!(is_descendant_peer(std::process::id(), peer, addr).unwrap());
        // A child process (`sleep`) holds no such socket, nor do its descendants.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let from_child = is_descendant_peer(child.id(), peer, addr).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(!from_child);
        // Once the client is gone there is nothing to find.
        drop(client);
        let other: SocketAddr = (Ipv4Addr::LOCALHOST, 1).into();
        assert!(!is_descendant_peer(std::process::id(), other, addr).unwrap());
    }

    #[test]
    fn v4_mapped_addresses_compare_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
