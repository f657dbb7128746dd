//! `--allow` access control: a list of IPv4/IPv6 networks, matched the way
//! distccd 3.4 matches them (an IPv4-mapped IPv6 peer is checked as IPv4).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One `ADDR[/BITS]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why an `--allow` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowParseError {
    #[error("--allow {0:?}: not an IPv4 or IPv6 address (expected ADDR or ADDR/BITS, e.g. 192.168.1.0/24)")]
    BadAddress(String),
    #[error("--allow {value:?}: prefix length must be 0..={max} for this address family")]
    BadPrefix { value: String, max: u8 },
}

impl Network {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Parse `ADDR` (a single host) or `ADDR/BITS`.
    pub fn parse(value: &str) -> Result<Self, AllowParseError> {
        let (addr_text, bits_text) = match value.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (value, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| AllowParseError::BadAddress(value.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match bits_text {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| AllowParseError::BadPrefix {
                    value: value.to_string(),
                    max,
                })?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The networks `--allow-private` stands for. distccd 3.4 leaves out `::1`
/// because of a loop-bound bug; we include it, since refusing the IPv6
/// loopback is never what `--allow-private` means.
pub fn private_networks() -> Vec<Network> {
    let v4 = |a, b, c, d, p| Network {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix: p,
    };
    let v6 = |addr: Ipv6Addr, p| Network {
        addr: IpAddr::V6(addr),
        prefix: p,
    };
    vec![
        v4(192, 168, 0, 0, 16),
        v4(10, 0, 0, 0, 8),
        v4(172, 16, 0, 0, 12),
        v4(127, 0, 0, 0, 8),
        v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
        v6(Ipv6Addr::LOCALHOST, 128),
    ]
}

/// The client networks a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    networks: Vec<Network>,
}

impl AccessList {
    pub fn new(networks: Vec<Network>) -> Self {
        Self { networks }
    }

    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// Is a peer at `ip` allowed? An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports for IPv4 peers) is matched against the
    /// IPv4 entries as well as the IPv6 ones.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.networks
            .iter()
            .any(|n| n.contains(ip) || mapped.is_some_and(|m| n.contains(m)))
    }
}

/// The address as a person would write it: IPv4-mapped IPv6 shown as IPv4.
pub fn display_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_hosts_and_networks() {
        assert_eq!(
            Network::parse("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            Network::parse("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            Network::parse("fe80::/10").unwrap().to_string(),
            "fe80::/10"
        );
        assert_eq!(Network::parse("::1").unwrap().to_string(), "::1/128");
        assert!(matches!(
            Network::parse("10.0.0.0/33"),
            Err(AllowParseError::BadPrefix { .. })
        ));
        assert!(matches!(
            Network::parse("10.0.0.0/x"),
            Err(AllowParseError::BadPrefix { .. })
        ));
        assert!(matches!(
            Network::parse("example.com"),
            Err(AllowParseError::BadAddress(_))
        ));
        assert!(Network::parse("::/129").is_err());
        assert!(Network::parse("0.0.0.0/0").is_ok());
    }

    #[test]
    fn matches_prefixes() {
        let list = AccessList::new(vec![
            Network::parse("10.0.0.0/8").unwrap(),
            Network::parse("192.168.1.7").unwrap(),
            Network::parse("2001:db8::/32").unwrap(),
        ]);
        assert!(list.allows(ip("10.255.1.2")));
        assert!(!list.allows(ip("11.0.0.1")));
        assert!(list.allows(ip("192.168.1.7")));
        assert!(!list.allows(ip("192.168.1.8")));
        assert!(list.allows(ip("2001:db8:1::5")));
        assert!(!list.allows(ip("2001:db9::5")));
        assert!(!list.allows(ip("127.0.0.1")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let list = AccessList::new(vec![Network::parse("127.0.0.1").unwrap()]);
        assert!(list.allows(ip("::ffff:127.0.0.1")));
        assert!(!list.allows(ip("::ffff:127.0.0.2")));
        assert!(!list.allows(ip("::1")));
        assert_eq!(display_ip(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn zero_prefix_matches_everything_of_its_family() {
        let list = AccessList::new(vec![Network::parse("0.0.0.0/0").unwrap()]);
        assert!(list.allows(ip("8.8.8.8")));
        assert!(list.allows(ip("::ffff:8.8.8.8")));
        assert!(!list.allows(ip("2001:db8::1")));
    }

    #[test]
    fn private_networks_cover_loopback_and_rfc1918() {
        let list = AccessList::new(private_networks());
        for ok in [
            "127.0.0.1",
            "10.1.1.1",
            "172.31.255.255",
            "192.168.0.1",
            "fe80::1",
            "fd00::1",
            "::1",
        ] {
            assert!(list.allows(ip(ok)), "{ok}");
        }
        for bad in ["172.32.0.1", "8.8.8.8", "2001:db8::1", "192.169.0.1"] {
            assert!(!list.allows(ip(bad)), "{bad}");
        }
    }
}
