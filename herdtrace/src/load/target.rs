//! Parsing `--addr` and `--request`, and the socket address handed to connect().
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`; port 0 is refused.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| format!("bad port in {s:?}"))?,
        None => s
            .parse::<SocketAddr>()
            .map_err(|_| format!("expected HOST:PORT with an IP address or localhost (e.g. 127.0.0.1:8080), got {s:?}"))?,
    };
    if addr.port() == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    Ok(addr)
}

/// A request path: starts with '/', printable ASCII without spaces, at most 2048 bytes.
pub fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("the path must start with '/', got {s:?}"));
    }
    if s.len() > 2048 {
        return Err("the path is longer than 2048 bytes".into());
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("the path contains {c:?}; percent-encode it"));
    }
    Ok(s.to_owned())
}

/// The request sent on every connection.
pub fn request_bytes(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").into_bytes()
}

/// A socket address in the form connect() takes.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
    family: libc::c_int,
}

impl RawAddr {
    pub fn new(addr: SocketAddr) -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let (len, family) = match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe {
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                (std::mem::size_of::<libc::sockaddr_in>(), libc::AF_INET)
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
                let sin6 = unsafe {
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                (std::mem::size_of::<libc::sockaddr_in6>(), libc::AF_INET6)
            }
        };
        Self {
            storage,
            len: len as libc::socklen_t,
            family,
        }
    }

    pub fn family(&self) -> libc::c_int {
        self.family
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    pub fn socklen(&self) -> libc::socklen_t {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:8080"),
            Ok("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_addr("localhost:80"),
            Ok("127.0.0.1:80".parse().expect("addr"))
        );
        assert_eq!(
            parse_addr("[::1]:443"),
            Ok("[::1]:443".parse().expect("addr"))
        );
        for bad in [
            "nonsense",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "localhost:x",
            "example.com:80",
            "",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/"), Ok("/".to_owned()));
        assert_eq!(parse_path("/a/b?c=d%20e"), Ok("/a/b?c=d%20e".to_owned()));
        for bad in ["", "a", "/a b", "/a\r\nX: y", "/é"] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
        assert!(parse_path(&format!("/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn request_format() {
        assert_eq!(request_bytes("/x"), b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn raw_addresses_connect() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let raw = RawAddr::new(l.local_addr().expect("addr"));
        assert_eq!(raw.family(), libc::AF_INET);
        assert_eq!(
            raw.socklen() as usize,
            std::mem::size_of::<libc::sockaddr_in>()
        );
        // SAFETY: plain syscalls on a socket closed below.
        unsafe {
            let fd = libc::socket(raw.family(), libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            assert_eq!(libc::connect(fd, raw.as_ptr(), raw.socklen()), 0);
            libc::close(fd);
        }
        let v6 = RawAddr::new("[::1]:9".parse().expect("addr"));
        assert_eq!(v6.family(), libc::AF_INET6);
        assert_eq!(
            v6.socklen() as usize,
            std::mem::size_of::<libc::sockaddr_in6>()
        );
    }
}
