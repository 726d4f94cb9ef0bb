//! Who is at the other end of a Runtime API connection.
//!
//! A function's Runtime API hands out live events (which carry the caller's API key) and takes
//! the answers clients get, so only the process keygate started for that function, or one of
//! its descendants, may talk to it. TCP carries no peer credentials, so on Linux the client's
//! socket is looked up by its addresses in the kernel's socket table through `sock_diag`
//! netlink (one exact lookup, whatever the number of sockets and processes): it gives the
//! socket's owner uid and inode. A socket of another uid than the function's is refused at
//! once. When the function has a uid of its own (keygate runs as root), the uid is the answer:
//! every process of that uid is the function's. Otherwise (functions share keygate's or one
//! named user) the inode must be held open (`/proc/<pid>/fd`) by the function process or one of
//! its descendants (found through the `ppid` of every process), which costs a walk of `/proc`.
//! Descendants rather than the process group: a process group is joined with `setpgid`, which
//! any other function in keygate's session may call, while no process can make itself another's
//! descendant. Done once per connection (runtime clients keep one keep-alive connection per
//! worker), on the blocking pool. Where netlink is not available, the socket is found in
//! `/proc/net/tcp` (`tcp6`) instead.
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

/// Whose processes a Runtime API admits: the function process `root` and its descendants,
/// which run as `uid`; `exclusive` when no other function shares that uid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    pub(crate) root: u32,
    pub(crate) uid: u32,
    pub(crate) exclusive: bool,
}

/// Whether the TCP client at `peer`, connected to `listener`, is one of `expected`'s processes.
/// `Ok(false)` when the socket or its holder cannot be found (it may have closed).
#[cfg(target_os = "linux")]
pub(crate) fn is_descendant_peer(
    expected: Expected,
    peer: SocketAddr,
    listener: SocketAddr,
) -> Result<bool, PeerError> {
    let found = match diag::client_socket(peer, listener) {
        Ok(found) => found,
        // No sock_diag (a kernel without it, a seccomp filter): the slower table.
        Err(_) => client_socket_inode(peer, listener)?,
    };
    let Some(ClientSocket { uid, inode }) = found else { return Ok(false) };
    if uid != expected.uid {
        return Ok(false);
    }
    if expected.exclusive {
        return Ok(true);
    }
    for pid in descendants(expected.root)? {
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
    _expected: Expected,
    _peer: SocketAddr,
    _listener: SocketAddr,
) -> Result<bool, PeerError> {
    Err(PeerError::Unsupported)
}

/// The client side of a connection: who owns the socket, and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientSocket {
    uid: u32,
    inode: u64,
}

/// The client side of the connection `peer` → `listener`, from `/proc/net/tcp` (`tcp6`).
#[cfg(target_os = "linux")]
fn client_socket_inode(
    peer: SocketAddr,
    listener: SocketAddr,
) -> Result<Option<ClientSocket>, PeerError> {
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
        .map(|e| ClientSocket { uid: e.uid, inode: e.inode }))
}

/// The exact lookup of one TCP socket through `sock_diag` netlink.
#[cfg(target_os = "linux")]
mod diag {
    use std::net::SocketAddr;

    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

    use super::{ClientSocket, PeerError, canonical};

    fn err(what: &'static str) -> impl Fn(std::io::Error) -> PeerError {
        move |e| PeerError::Proc { what, message: e.to_string() }
    }

    /// The socket whose local address is `peer` and remote address `listener` (both on this
    /// machine), or `None` when the kernel has none (it closed).
    pub(super) fn client_socket(
        peer: SocketAddr,
        listener: SocketAddr,
    ) -> Result<Option<ClientSocket>, PeerError> {
        let (peer, listener) = (canonical(peer), canonical(listener));
        let family = if peer.is_ipv4() && listener.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: SocketId {
                    source_port: peer.port(),
                    destination_port: listener.port(),
                    source_address: peer.ip(),
                    destination_address: listener.ip(),
                    interface_id: 0,
                    // INET_DIAG_NOCOOKIE: any socket with these addresses.
                    cookie: [0xff; 8],
                },
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);

        let socket = Socket::new(NETLINK_SOCK_DIAG).map_err(err("a sock_diag socket"))?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(err("a sock_diag socket"))?;
        socket.send(&out, 0).map_err(err("a sock_diag request"))?;
        let mut answer = vec![0; 8192];
        let n = socket.recv(&mut &mut answer[..], 0).map_err(err("a sock_diag answer"))?;
        let parsed = NetlinkMessage::<SockDiagMessage>::deserialize(&answer[..n])
            .map_err(|e| PeerError::Proc { what: "a sock_diag answer", message: e.to_string() })?;
        match parsed.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(found)) => {
                Ok(Some(ClientSocket {
                    uid: found.header.uid,
                    inode: u64::from(found.header.inode),
                }))
            }
            // ENOENT: no such socket (any other error is a failure to look).
            NetlinkPayload::Error(e)
                if e.code.map(|c| c.get()) == Some(-(nix::errno::Errno::ENOENT as i32)) =>
            {
                Ok(None)
            }
            other => Err(PeerError::Proc {
                what: "a sock_diag answer",
                message: format!("unexpected answer {other:?}"),
            }),
        }
    }
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
        let uid = nix::unistd::geteuid().as_raw();
        let me = Expected { root: std::process::id(), uid, exclusive: false };
        assert!(is_descendant_peer(me, peer, addr).unwrap());
        // The kernel's answer and /proc/net/tcp's agree.
        let found = diag::client_socket(peer, addr).unwrap().expect("the client socket");
        assert_eq!(Some(found), client_socket_inode(peer, addr).unwrap());
        assert_eq!(found.uid, uid);
        // A child process (`sleep`) holds no such socket, nor do its descendants.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let from_child = is_descendant_peer(Expected { root: child.id(), ..me }, peer, addr);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!from_child.unwrap());
        // Another uid is refused without a look at any process, and a uid of the function's
        // own is enough.
        let other_uid = Expected { uid: uid.wrapping_add(1), exclusive: true, ..me };
        assert!(!is_descendant_peer(other_uid, peer, addr).unwrap());
        let exclusive = Expected { root: 1, exclusive: true, ..me };
        assert!(is_descendant_peer(exclusive, peer, addr).unwrap());
        // Once the client is gone there is nothing to find.
        drop(client);
        let other: SocketAddr = (Ipv4Addr::LOCALHOST, 1).into();
        assert!(!is_descendant_peer(me, other, addr).unwrap());
        assert_eq!(diag::client_socket(other, addr).unwrap(), None);
    }

    #[test]
    fn v4_mapped_addresses_compare_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
