//! The client's address behind load balancers (`--trusted-proxy`).
//!
//! A node behind a balancer sees the balancer's address; the client's is in `X-Forwarded-For`,
//! which anyone can also send. So the header is read only when the connection comes from a
//! trusted proxy, and then as nginx's `real_ip_recursive` reads it: from the right, skipping the
//! addresses of trusted proxies, the first other address is the client (the one the last
//! trusted hop saw; what a client wrote to the left of it is ignored). An entry that is not an
//! address stops the walk at the last trusted hop. Without trusted proxies (the default) the
//! header is never read. The address goes to the access log and to a function's
//! `requestContext.identity.sourceIp`.

use std::net::{IpAddr, SocketAddr};

pub use ipnet::IpNet;
use keygate_http::Fields;

/// The networks whose connections' `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// One `--trusted-proxy` value: a network (`10.0.0.0/8`, `fd00::/8`) or one address.
    ///
    /// # Errors
    /// What is wrong with `s`, for the command line's message.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
            format!("{s:?} is not an address or a network (10.0.0.5, 10.0.0.0/8, fd00::/8)")
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request with `headers` from `peer` (its port stays the peer's).
    pub(crate) fn client(&self, headers: &Fields, peer: SocketAddr) -> SocketAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        let mut client = peer.ip();
        let lines: Vec<&[u8]> = headers.get_all("x-forwarded-for").collect();
        for hop in lines.iter().rev().flat_map(|line| line.rsplit(|&b| b == b',')) {
            let Some(ip) = hop_address(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        SocketAddr::new(client, peer.port())
    }
}

/// One entry of `X-Forwarded-For`: an address, maybe with a port (`1.2.3.4:80`, `[::1]:80`).
fn hop_address(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: &[&str], xff: &[&str], peer: &str) -> String {
        let proxies = TrustedProxies::new(
            trusted.iter().map(|s| TrustedProxies::parse(s).unwrap()).collect(),
        );
        let fields: Vec<(&str, &[u8])> =
            xff.iter().map(|v| ("x-forwarded-for", v.as_bytes())).collect();
        let req = keygate_http::Request::build("GET", "/", &fields).unwrap();
        let peer: SocketAddr = format!("{peer}:5000").parse().unwrap();
        proxies.client(&req.headers, peer).ip().to_string()
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        // No trusted proxies: the header is never read.
        assert_eq!(client(&[], &["198.51.100.7"], "10.0.0.2"), "10.0.0.2");
        // A client that is not a trusted proxy cannot set its own address.
        assert_eq!(client(&["10.0.0.0/8"], &["198.51.100.7"], "203.0.113.9"), "203.0.113.9");
        // From the balancer: the address it saw.
        assert_eq!(client(&["10.0.0.0/8"], &["198.51.100.7"], "10.0.0.2"), "198.51.100.7");
        // What the client wrote to the left of it is ignored.
        let spoofed = ["1.1.1.1, 198.51.100.7"];
        assert_eq!(client(&["10.0.0.0/8"], &spoofed, "10.0.0.2"), "198.51.100.7");
        // A chain of trusted proxies, over two header lines, one entry with a port.
        let chain = ["198.51.100.7:4711, 10.0.0.9", "10.1.2.3"];
        assert_eq!(client(&["10.0.0.0/8"], &chain, "10.0.0.2"), "198.51.100.7");
        // One address as a network; IPv6; an IPv4-mapped peer.
        assert_eq!(client(&["10.0.0.2"], &["2001:db8::1"], "10.0.0.2"), "2001:db8::1");
        assert_eq!(client(&["10.0.0.0/8"], &["198.51.100.7"], "[::ffff:10.0.0.2]"), "198.51.100.7");
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        assert_eq!(client(&["10.0.0.0/8"], &["nonsense, 10.0.0.9"], "10.0.0.2"), "10.0.0.9");
        assert_eq!(client(&["10.0.0.0/8"], &[""], "10.0.0.2"), "10.0.0.2");
        assert_eq!(client(&["10.0.0.0/8"], &[], "10.0.0.2"), "10.0.0.2");
        // Every hop trusted: the leftmost (a client inside the trusted network).
        assert_eq!(client(&["10.0.0.0/8"], &["10.9.9.9, 10.0.0.9"], "10.0.0.2"), "10.9.9.9");
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("balancer").is_err());
    }
}
