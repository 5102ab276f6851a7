//! Thin `libc` wrappers for the server: sockets, epoll and thread ids, each
//! returning `io::Result` so callers can tell EAGAIN/EINTR apart.
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Turns a `-1`-on-error return into `io::Result`.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value outlives the call and the length matches its type.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn loopback(port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    sa
}

fn loopback6(port: u16) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = port.to_be();
    sa.sin6_addr.s6_addr = std::net::Ipv6Addr::LOCALHOST.octets();
    sa
}

/// A TCP listening socket on 127.0.0.1:`port`, or [::1]:`port` with `ipv6`
/// (port 0 = kernel's choice).
pub fn listener(
    port: u16,
    backlog: i32,
    reuseport: bool,
    nonblocking: bool,
    ipv6: bool,
) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain syscall; the fd is owned right after the check.
    let fd = unsafe { OwnedFd::from_raw_fd(cvt(libc::socket(family, ty, 0))?) };
    // SO_REUSEADDR so a fixed --port can be reused while old connections sit in TIME_WAIT.
    set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if ipv6 {
        let sa = loopback6(port);
        // SAFETY: sa is a valid sockaddr_in6 of the given length.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        })?;
    } else {
        let sa = loopback(port);
        // SAFETY: sa is a valid sockaddr_in of the given length.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
    }
    // SAFETY: plain syscall on an owned fd.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// The local port a socket is bound to (IPv4 or IPv6: the port sits at the
/// same place in both address structures).
pub fn local_port(fd: RawFd) -> io::Result<u16> {
    let mut sa = loopback6(0);
    let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: sa/len describe a writable sockaddr_in6 buffer, large enough
    // for either family.
    cvt(unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in6).cast(), &mut len) })?;
    Ok(u16::from_be(sa.sin6_port))
}

/// A new epoll instance (close-on-exec).
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned right after the check.
    Ok(unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) })
}

/// Adds `fd` to `epfd` with `events`; the event data is the fd itself.
pub fn epoll_add(epfd: RawFd, fd: RawFd, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: ev is a valid epoll_event for the duration of the call.
    cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

/// One `epoll_wait` call for at most one event (each instance watches one
/// listener, so one is all there can be): the number of events returned.
pub fn epoll_wait_one(epfd: RawFd, timeout_ms: i32) -> io::Result<usize> {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: ev is a writable buffer for one event.
    cvt(unsafe { libc::epoll_wait(epfd, &mut ev, 1, timeout_ms) }).map(|n| n as usize)
}

/// `accept4` with close-on-exec; the accepted socket is blocking.
pub fn accept(listen: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address buffers are allowed; the fd is owned right after the check.
    let fd = cvt(unsafe {
        libc::accept4(
            listen,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by accept4 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets SO_RCVTIMEO so a silent client cannot hold a worker.
pub fn set_recv_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv outlives the call and the length matches its type.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `read` into `buf`: bytes read (0 = EOF).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its whole length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send` with MSG_NOSIGNAL (a vanished peer gives EPIPE, not a signal).
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is readable for its whole length.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The kernel thread id of the caller.
pub fn gettid() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The process id of the caller.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}
