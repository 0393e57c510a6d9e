//! The largest block size that fits the link a request arrived on: the MTU of the interface
//! holding the request's local address, less the IP, UDP and TFTP headers (1468 on a
//! 1500-byte Ethernet, 65464 on Linux's 65536-byte loopback). Boot ROMs that cannot reassemble
//! IP fragments fail silently on bigger blocks, so the server caps what it grants to this by
//! default (dnsmasq and pin/tftp do the same).
//!
//! Linux: the interface comes from `getifaddrs`, its MTU from `/sys/class/net/NAME/mtu`.
//! Elsewhere nothing is known and no cap applies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::options::MAX_BLKSIZE;

/// The block size that fits a link of `mtu` bytes for `ip`'s family, within TFTP's range.
pub fn blksize_for_mtu(mtu: u32, ip: IpAddr) -> u16 {
    // IPv4 20 or IPv6 40 bytes, UDP 8, TFTP's DATA header 4.
    let headers = if ip.is_ipv4() { 32 } else { 52 };
    let fits = mtu.saturating_sub(headers).clamp(8, u32::from(MAX_BLKSIZE));
    fits as u16
}

/// The MTU of the interface that holds `ip`, if it can be found.
#[cfg(target_os = "linux")]
pub fn mtu_of(ip: IpAddr) -> Option<u32> {
    let name = nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let a = ifa.address?;
        let found = match ip {
            IpAddr::V4(v4) => a.as_sockaddr_in().map(|s| s.ip()) == Some(v4),
            IpAddr::V6(v6) => a.as_sockaddr_in6().map(|s| s.ip()) == Some(v6),
        };
        found.then_some(ifa.interface_name)
    })?;
    // Interface names never hold a path separator; refuse one anyway.
    if name.contains('/') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The MTU of the interface that holds `ip`: unknown off Linux.
#[cfg(not(target_os = "linux"))]
pub fn mtu_of(_: IpAddr) -> Option<u32> {
    None
}

/// Block-size caps by local address, looked up again after a while (an MTU may change).
#[derive(Debug, Default)]
pub struct MtuCache {
    known: HashMap<IpAddr, (Instant, Option<u16>)>,
}

impl MtuCache {
    /// How long a lookup is trusted.
    const FRESH: Duration = Duration::from_secs(30);

    /// The block size that fits the link of local address `ip`, if known.
    pub fn blksize_cap(&mut self, ip: IpAddr) -> Option<u16> {
        let now = Instant::now();
        if let Some(&(at, cap)) = self.known.get(&ip) {
            if now.duration_since(at) < Self::FRESH {
                return cap;
            }
        }
        let cap = mtu_of(ip).map(|mtu| blksize_for_mtu(mtu, ip));
        if self.known.len() > 4096 {
            self.known.clear();
        }
        self.known.insert(ip, (now, cap));
        cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_arithmetic() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(blksize_for_mtu(1500, v4), 1468);
        assert_eq!(blksize_for_mtu(1500, v6), 1448);
        assert_eq!(blksize_for_mtu(9000, v4), 8968);
        assert_eq!(blksize_for_mtu(65536, v4), 65464);
        assert_eq!(blksize_for_mtu(0, v4), 8);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn loopback_has_an_mtu() {
        let mtu = mtu_of("127.0.0.1".parse().unwrap()).expect("lo's MTU");
        assert!(mtu >= 1280, "{mtu}");
        assert_eq!(
            mtu_of("192.0.2.123".parse().unwrap()),
            None,
            "an address no interface holds"
        );
    }
}
