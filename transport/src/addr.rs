//! Addresses as URLs: `inproc://NAME`, `tcp://HOST:PORT`, `tls://HOST:PORT`
//! and `ucx://HOST:PORT`.

use std::fmt;
use std::str::FromStr;

use crate::error::TransportError;

/// Which backend an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Same process, frames passed by reference.
    Inproc,
    /// Plain TCP.
    Tcp,
    /// TCP with TLS (rustls).
    Tls,
    /// UCX: NVLink, InfiniBand, shared memory. Not built in yet.
    Ucx,
}

impl Scheme {
    /// The URL scheme, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Inproc => "inproc",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ucx => "ucx",
        }
    }
}

/// A parsed endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    scheme: Scheme,
    /// `NAME` for inproc, `HOST:PORT` for the others.
    location: String,
}

impl Address {
    /// The backend.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `NAME` for inproc, `HOST:PORT` otherwise.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The host part of a `HOST:PORT` address, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let host = self
            .location
            .rsplit_once(':')
            .map_or(self.location.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    pub(crate) fn inproc(name: &str) -> Address {
        Address {
            scheme: Scheme::Inproc,
            location: name.to_string(),
        }
    }

    /// An address of the same scheme at another location (a listener's
    /// bound port, say).
    pub fn with_location(&self, location: String) -> Address {
        Address {
            scheme: self.scheme,
            location,
        }
    }
}

impl FromStr for Address {
    type Err = TransportError;

    fn from_str(addr: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| TransportError::InvalidAddress {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, location) = addr
            .split_once("://")
            .ok_or_else(|| invalid("expected SCHEME://..., e.g. tcp://127.0.0.1:8786 or inproc://scheduler"))?;
        let scheme = match scheme {
            "inproc" => Scheme::Inproc,
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ucx" => Scheme::Ucx,
            _ => return Err(invalid("unknown scheme; expected inproc, tcp, tls or ucx")),
        };
        if location.is_empty() {
            return Err(invalid("empty name or host"));
        }
        if scheme != Scheme::Inproc {
            let (host, port) = location.rsplit_once(':').ok_or_else(|| invalid("expected HOST:PORT"))?;
            if host.is_empty() {
                return Err(invalid("empty host"));
            }
            port.parse::<u16>()
                .map_err(|_| invalid("port must be a number from 0 to 65535"))?;
        }
        Ok(Address {
            scheme,
            location: location.to_string(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        let a: Address = "tcp://127.0.0.1:8786".parse().unwrap();
        assert_eq!(a.scheme(), Scheme::Tcp);
        assert_eq!(a.host(), "127.0.0.1");
        assert_eq!(a.to_string(), "tcp://127.0.0.1:8786");
        let a: Address = "tls://[::1]:9000".parse().unwrap();
        assert_eq!((a.scheme(), a.host()), (Scheme::Tls, "::1"));
        let a: Address = "inproc://scheduler".parse().unwrap();
        assert_eq!((a.scheme(), a.location()), (Scheme::Inproc, "scheduler"));
        assert_eq!("ucx://node1:13337".parse::<Address>().unwrap().scheme(), Scheme::Ucx);
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for bad in [
            "127.0.0.1:80",
            "http://x:1",
            "tcp://",
            "tcp://host",
            "tcp://:80",
            "tcp://h:99999",
            "inproc://",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert!(matches!(err, TransportError::InvalidAddress { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
