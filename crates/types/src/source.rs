//! Who counts as one source of requests, for every budget and throttle kept per source.

use std::net::IpAddr;

/// The source `source` counts as: one IPv4 address, or one IPv6 /64 (a host is handed a
/// whole /64, so a key per address would hand it 2^64 budgets); an IPv4 address written as
/// IPv6 (`::ffff:a.b.c.d`) is that IPv4 address; `None` (unknown) is one source of its own.
pub fn source_key(source: Option<IpAddr>) -> [u8; 8] {
    match source {
        None => [0xff; 8],
        Some(IpAddr::V4(a)) => {
            let [a, b, c, d] = a.octets();
            [0, 0, 0, 0, a, b, c, d]
        }
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => source_key(Some(IpAddr::V4(v4))),
            None => {
                let o = a.octets();
                let mut k = [0u8; 8];
                k.copy_from_slice(o.get(..8).unwrap_or(&[0; 8]));
                k
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let a = ip("2001:db8:1:2:3:4:5:6");
        assert_eq!(source_key(a), source_key(ip("2001:db8:1:2:ffff::1")));
        assert_ne!(source_key(a), source_key(ip("2001:db8:1:3::1")));
        assert_eq!(
            source_key(ip("::ffff:192.0.2.1")),
            source_key(ip("192.0.2.1"))
        );
        assert_ne!(source_key(ip("192.0.2.1")), source_key(ip("192.0.2.2")));
        assert_ne!(source_key(None), source_key(ip("192.0.2.1")));
    }
}
