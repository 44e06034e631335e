//! Who a request came from, when the server sits behind reverse proxies it trusts.
//!
//! A node tells its clients apart by address: budgets, throttles and connection bounds are
//! per source. Behind a reverse proxy every request arrives from the proxy, so all of its
//! clients would share one budget, and one of them could spend it for all. A node told which
//! peers are its proxies ([`TrustedProxies`]) takes the client's address from the
//! `X-Forwarded-For` header those proxies add, and from nobody else's: the header is read
//! from the right (each proxy appends the address it was called from), past the proxies the
//! node trusts, and the first address that is not one of them is the client. What a client
//! writes into the header itself stays to the left of that and is never read; a peer that is
//! not a trusted proxy is the client, whatever headers it sends.

use axum::http::HeaderMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// Most networks a node trusts as proxies.
pub const MAX_TRUSTED_PROXIES: usize = 64;

/// Most `X-Forwarded-For` entries read, from the right: more proxies than this in a row
/// would be a loop, not a deployment.
const MAX_HOPS: usize = 32;

/// The address a request came from, as the node tells its clients apart: the peer, or the
/// client a trusted proxy forwarded it for. The server puts it in each request's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// An address or a network of them: `10.0.0.7`, `10.0.0.0/8`, `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// Not an address, nor an address and a prefix length.
    #[error("{0:?} is not an IP address or a network such as 10.0.0.0/8")]
    Syntax(String),
    /// A prefix longer than the address.
    #[error("{given:?}: a prefix of an IPv{version} network is at most {max} bits")]
    Prefix {
        /// What was given.
        given: String,
        /// 4 or 6.
        version: u8,
        /// 32 or 128.
        max: u8,
    },
    /// A network wider than [`MIN_PROXY_PREFIX_V4`] or [`MIN_PROXY_PREFIX_V6`] bits.
    #[error(
        "{given:?} is wider than an IPv{version} /{min}: name the proxies' own addresses, not the networks clients connect from"
    )]
    Wide {
        /// What was given.
        given: String,
        /// 4 or 6.
        version: u8,
        /// The narrowest prefix taken.
        min: u8,
    },
    /// More networks than [`MAX_TRUSTED_PROXIES`].
    #[error("{0} trusted proxies are more than the {MAX_TRUSTED_PROXIES} a node takes")]
    TooMany(usize),
}

/// The narrowest prefix a trusted IPv4 network may have: a wider one (`0.0.0.0/0` at the
/// extreme) would take clients for proxies, and let them name themselves anyone.
pub const MIN_PROXY_PREFIX_V4: u8 = 8;
/// The same for IPv6, where a /8 still spans much of the Internet.
pub const MIN_PROXY_PREFIX_V6: u8 = 32;

impl FromStr for Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Net, NetError> {
        let syntax = || NetError::Syntax(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                (
                    addr.parse::<IpAddr>().map_err(|_| syntax())?,
                    Some(prefix.parse::<u8>().map_err(|_| syntax())?),
                )
            }
            None => (s.trim().parse::<IpAddr>().map_err(|_| syntax())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(NetError::Prefix {
                given: s.to_string(),
                version: if addr.is_ipv4() { 4 } else { 6 },
                max,
            });
        }
        let wide = |version, min| NetError::Wide {
            given: s.to_string(),
            version,
            min,
        };
        // An IPv4 network written as IPv6 (`::ffff:10.0.0.0/104`) is the IPv4 one.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                Some(_) => return Err(wide(6, 96 + MIN_PROXY_PREFIX_V4)),
                None => (addr, prefix),
            },
            IpAddr::V4(_) => (addr, prefix),
        };
        match addr {
            IpAddr::V4(_) if prefix < MIN_PROXY_PREFIX_V4 => {
                return Err(wide(4, MIN_PROXY_PREFIX_V4));
            }
            IpAddr::V6(_) if prefix < MIN_PROXY_PREFIX_V6 => {
                return Err(wide(6, MIN_PROXY_PREFIX_V6));
            }
            _ => {}
        }
        Ok(Net {
            addr: masked(addr, prefix),
            prefix,
        })
    }
}

/// `addr` with the bits past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    fn clear<const N: usize>(mut octets: [u8; N], prefix: u8) -> [u8; N] {
        for (i, octet) in octets.iter_mut().enumerate() {
            let kept = usize::from(prefix).saturating_sub(i * 8).min(8);
            *octet &= !(0xffu16 >> kept) as u8;
        }
        octets
    }
    match addr {
        IpAddr::V4(a) => IpAddr::from(clear(a.octets(), prefix)),
        IpAddr::V6(a) => IpAddr::from(clear(a.octets(), prefix)),
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Net {
    /// Whether `ip` is in this network (an IPv4 address written as IPv6, `::ffff:a.b.c.d`,
    /// is the IPv4 address): the network's address is stored masked, so `ip` masked alike
    /// is equal to it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && masked(ip, self.prefix) == self.addr
    }
}

/// The peers a node takes for its reverse proxies (none by default: every peer is a
/// client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[Net]>);

/// The networks as understood, separated by commas (what a node prints when it starts).
impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

impl TrustedProxies {
    /// None: each peer is the client.
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    /// These networks, at most [`MAX_TRUSTED_PROXIES`].
    pub fn new(nets: Vec<Net>) -> Result<TrustedProxies, NetError> {
        if nets.len() > MAX_TRUSTED_PROXIES {
            return Err(NetError::TooMany(nets.len()));
        }
        Ok(TrustedProxies(nets.into()))
    }

    /// Parses each of `nets` (see [`Net`]); an error names the one that is wrong.
    pub fn parse<S: AsRef<str>>(nets: &[S]) -> Result<TrustedProxies, NetError> {
        TrustedProxies::new(
            nets.iter()
                .map(|n| n.as_ref().parse())
                .collect::<Result<_, _>>()?,
        )
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as understood (host bits dropped, IPv4 written as IPv6 as IPv4).
    pub fn nets(&self) -> &[Net] {
        &self.0
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client a request from `peer` with `headers` came from: `peer` unless it is a
    /// trusted proxy; then, reading `X-Forwarded-For` from the right (the last header line
    /// first), the first address that is not a trusted proxy. An entry that is not an
    /// address (whatever its bytes) ends the reading, and the last proxy read is the client
    /// (the request's origin is unknown past it); so it is when every entry is a trusted
    /// proxy. At most [`MAX_HOPS`] entries are read.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
            .take(MAX_HOPS);
        for entry in entries {
            let Some(hop) = forwarded_addr(entry) else {
                break;
            };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry's address: `a.b.c.d`, an IPv6 address, either with a port
/// (`a.b.c.d:p`, `[v6]:p`), or `[v6]`.
fn forwarded_addr(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        headers
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(nets).unwrap()
    }

    #[test]
    fn networks_parse_and_contain_what_they_should() {
        let net: Net = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4 written as IPv6");
        let odd: Net = "192.168.5.130/25".parse().unwrap();
        assert!(odd.contains(ip("192.168.5.200")));
        assert!(!odd.contains(ip("192.168.5.127")));
        let one: Net = "2001:db8::7".parse().unwrap();
        assert!(one.contains(ip("2001:db8::7")));
        assert!(!one.contains(ip("2001:db8::8")));
        let v6: Net = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert_eq!(one.to_string(), "2001:db8::7/128");
        // Host bits are dropped; an IPv4 network written as IPv6 is the IPv4 one.
        assert_eq!("10.1.2.3/8".parse::<Net>(), "10.0.0.0/8".parse::<Net>());
        assert_eq!(
            "::ffff:10.0.0.0/104".parse::<Net>(),
            "10.0.0.0/8".parse::<Net>()
        );
        assert_eq!(
            "10.1.2.3/8".parse::<Net>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            proxies(&["10.1.2.3/8", "2001:db8::7"]).to_string(),
            "10.0.0.0/8, 2001:db8::7/128"
        );
        // Networks so wide that clients would be taken for proxies.
        for (wide, version, min) in [
            ("0.0.0.0/0", 4, 8),
            ("10.0.0.0/7", 4, 8),
            ("::ffff:10.0.0.0/8", 6, 104),
            ("::ffff:10.0.0.0/103", 4, 8),
            ("::/0", 6, 32),
            ("2000::/8", 6, 32),
            ("2001:db8::/31", 6, 32),
        ] {
            assert_eq!(
                wide.parse::<Net>(),
                Err(NetError::Wide {
                    given: wide.into(),
                    version,
                    min
                }),
                "{wide}"
            );
        }

        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/x",
            "proxy.example",
            "10.0.0.0/8/1",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
        ] {
            assert_eq!(
                bad.parse::<Net>(),
                Err(NetError::Syntax(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            "10.0.0.0/33".parse::<Net>(),
            Err(NetError::Prefix {
                version: 4,
                max: 32,
                ..
            })
        ));
        assert!(matches!(
            "::/129".parse::<Net>(),
            Err(NetError::Prefix {
                version: 6,
                max: 128,
                ..
            })
        ));
        let many: Vec<String> = (0..=MAX_TRUSTED_PROXIES)
            .map(|i| format!("10.0.0.{i}"))
            .collect();
        assert_eq!(
            TrustedProxies::parse(&many),
            Err(NetError::TooMany(MAX_TRUSTED_PROXIES + 1))
        );
    }

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::none();
        let claims = forwarded(&["198.51.100.1"]);
        assert_eq!(none.client(ip("203.0.113.5"), &claims), ip("203.0.113.5"));
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(some.client(ip("203.0.113.5"), &claims), ip("203.0.113.5"));
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_first_untrusted_address_from_the_right() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::1"]);
        let proxy = ip("10.0.0.2");
        assert_eq!(
            p.client(proxy, &forwarded(&["198.51.100.1"])),
            ip("198.51.100.1")
        );
        // What the client wrote itself is left of the address its proxy appended.
        assert_eq!(
            p.client(proxy, &forwarded(&["1.2.3.4, 9.9.9.9", "198.51.100.1"])),
            ip("198.51.100.1")
        );
        // Two proxies in a row.
        assert_eq!(
            p.client(proxy, &forwarded(&["1.2.3.4, 198.51.100.1, 10.9.9.9"])),
            ip("198.51.100.1")
        );
        assert_eq!(
            p.client(ip("2001:db8::1"), &forwarded(&["[2001:db8::99]:4711"])),
            ip("2001:db8::99")
        );
        assert_eq!(
            p.client(proxy, &forwarded(&["198.51.100.1:80"])),
            ip("198.51.100.1")
        );
        // No header: the proxy itself; only proxies: the farthest one.
        assert_eq!(p.client(proxy, &HeaderMap::new()), proxy);
        assert_eq!(
            p.client(proxy, &forwarded(&["10.1.1.1, 10.2.2.2"])),
            ip("10.1.1.1")
        );
        // An entry that is not an address ends the reading: the last proxy read is the
        // client, never anything the unreadable entry's side wrote.
        assert_eq!(p.client(proxy, &forwarded(&["1.2.3.4, junk"])), proxy);
        assert_eq!(
            p.client(proxy, &forwarded(&["1.2.3.4, junk, 10.7.7.7"])),
            ip("10.7.7.7")
        );
        // An entry's bytes need not be text: what is right of it is still read, and it ends
        // the reading like any unreadable entry.
        assert_eq!(
            p.client(proxy, &forwarded(&["é, 198.51.100.1"])),
            ip("198.51.100.1")
        );
        assert_eq!(p.client(proxy, &forwarded(&["198.51.100.1, é"])), proxy);
        assert_eq!(
            p.client(ip("2001:db8::1"), &forwarded(&["[2001:db8::99]"])),
            ip("2001:db8::99")
        );
        // Bytes that are not UTF-8 at all are an unreadable entry like any other.
        let mut raw = HeaderMap::new();
        raw.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.1").unwrap(),
        );
        assert_eq!(p.client(proxy, &raw), ip("198.51.100.1"));
        raw.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(p.client(proxy, &raw), proxy);
        // At most MAX_HOPS entries are read: past a longer run of proxies, the farthest
        // one read is the client.
        let run = vec!["10.0.0.1"; MAX_HOPS + 8].join(", ");
        assert_eq!(
            p.client(proxy, &forwarded(&[&format!("198.51.100.1, {run}")])),
            ip("10.0.0.1")
        );
        let run = vec!["10.0.0.1"; MAX_HOPS - 1].join(", ");
        assert_eq!(
            p.client(proxy, &forwarded(&[&format!("198.51.100.1, {run}")])),
            ip("198.51.100.1")
        );
        // A peer written as IPv6-mapped IPv4 is the IPv4 proxy.
        assert_eq!(
            p.client(ip("::ffff:10.0.0.2"), &forwarded(&["198.51.100.1"])),
            ip("198.51.100.1")
        );
    }

    proptest! {
        /// Against the rule stated another way: the client is the peer if the peer is not
        /// trusted. Else take the run of readable trusted proxies at the right end of the
        /// header: the entry left of it, if it is an address (one not trusted); otherwise the
        /// leftmost of the run, or the peer when the run is empty.
        #[test]
        fn the_client_is_what_the_rule_says(
            peer in 0u8..8,
            lines in prop::collection::vec(
                prop::collection::vec(prop::option::of(0u8..10), 0..16),
                0..4,
            ),
        ) {
            // Addresses 10.0.0.0..3 are trusted proxies, 10.0.0.4..7 are not; 8, 9 and
            // `None` are entries that are not addresses (words, bytes that are not text).
            let p = proxies(&["10.0.0.0/30"]);
            let addr = |n: u8| IpAddr::from([10, 0, 0, n]);
            let text = |e: &Option<u8>| match e {
                None => "junk".to_string(),
                Some(8) => "10.0.0.é".to_string(),
                Some(9) => String::new(),
                Some(n) => addr(*n).to_string(),
            };
            let joined: Vec<String> = lines
                .iter()
                .map(|line| line.iter().map(text).collect::<Vec<_>>().join(", "))
                .collect();
            let headers = forwarded(&joined.iter().map(String::as_str).collect::<Vec<_>>());
            let got = p.client(addr(peer), &headers);
            // An empty header line is one entry that is not an address.
            let entries: Vec<Option<u8>> = lines
                .iter()
                .flat_map(|line| {
                    if line.is_empty() { vec![None] } else { line.clone() }
                })
                .map(|e| e.filter(|n| *n < 8))
                .collect();
            let tail = &entries[entries.len().saturating_sub(MAX_HOPS)..];
            // The run of readable trusted proxies at the right end, and what is left of it.
            let run = tail.iter().rev().take_while(|e| e.is_some_and(|n| n < 4)).count();
            let left = tail.len() - run;
            let leftmost_of_run = tail.get(left).copied().flatten().map_or(addr(peer), addr);
            let expected = match (peer >= 4, left.checked_sub(1).map(|i| tail[i])) {
                (true, _) => addr(peer),
                (false, Some(Some(untrusted))) => addr(untrusted),
                (false, Some(None) | None) => leftmost_of_run,
            };
            prop_assert_eq!(got, expected);
        }
    }
}
