//! The address a worker gives its peers and clients.
//!
//! A worker that listens on all interfaces (`tcp://0.0.0.0:PORT`) cannot
//! hand that address out: it names no host. It advertises instead the
//! address of its interface on the route to the scheduler, which is the
//! one its peers (reaching the same scheduler) can reach, unless told an
//! address outright (`--contact-address`, for NAT and the like).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use weft_transport::Address;

use crate::error::{Result, RuntimeError};

/// Where peers reach a worker listening at `listening`: `contact` when
/// given; else `listening` with an unspecified host replaced by this
/// host's address on the route to `scheduler`.
pub fn contact_address(listening: &Address, scheduler: &str, contact: Option<&str>) -> Result<String> {
    if let Some(contact) = contact {
        let parsed: Address = contact.parse()?;
        return Ok(parsed.to_string());
    }
    let Ok(ip) = listening.host().parse::<IpAddr>() else {
        return Ok(listening.to_string()); // a name, or inproc
    };
    if !ip.is_unspecified() {
        return Ok(listening.to_string());
    }
    let port = listening.location().rsplit_once(':').map_or("0", |(_, port)| port);
    let local = route_to(scheduler)?;
    let location = match local {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    Ok(listening.with_location(location).to_string())
}

/// This host's address on the route to the host of `scheduler` (a UDP
/// socket connected there: no packet is sent).
fn route_to(scheduler: &str) -> Result<IpAddr> {
    let fail = |reason: String| {
        RuntimeError::Config(format!(
            "cannot tell which address peers reach this worker at, on the route to {scheduler}: {reason}; \
             pass --contact-address or a --listen address with a host"
        ))
    };
    let address: Address = scheduler.parse()?;
    let target: SocketAddr = address
        .location()
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("it resolves to no address".into()))?;
    let unspecified: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0)).map_err(|e| fail(e.to_string()))?;
    socket.connect(target).map_err(|e| fail(e.to_string()))?;
    Ok(socket.local_addr().map_err(|e| fail(e.to_string()))?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        text.parse().unwrap()
    }

    #[test]
    fn all_interfaces_advertise_the_route_to_the_scheduler() {
        let scheduler = "tcp://127.0.0.1:8786";
        assert_eq!(
            contact_address(&addr("tcp://0.0.0.0:4567"), scheduler, None).unwrap(),
            "tcp://127.0.0.1:4567"
        );
        // A host given, or an address given outright, is kept.
        assert_eq!(
            contact_address(&addr("tcp://127.0.0.2:99"), scheduler, None).unwrap(),
            "tcp://127.0.0.2:99"
        );
        assert_eq!(
            contact_address(&addr("tcp://0.0.0.0:4567"), scheduler, Some("tcp://10.1.2.3:4567")).unwrap(),
            "tcp://10.1.2.3:4567"
        );
        assert!(contact_address(&addr("tcp://0.0.0.0:1"), scheduler, Some("nonsense")).is_err());
        // IPv6, where this machine has it.
        if UdpSocket::bind("[::1]:0").is_ok() {
            assert_eq!(
                contact_address(&addr("tcp://[::]:5"), "tcp://[::1]:8786", None).unwrap(),
                "tcp://[::1]:5"
            );
        }
    }

    #[test]
    fn an_unreachable_scheduler_is_a_clear_error() {
        let error = contact_address(&addr("tcp://0.0.0.0:1"), "tcp://no-such-host.invalid:1", None).unwrap_err();
        assert!(error.to_string().contains("--contact-address"), "{error}");
    }
}
