//! Serving one accepted connection: read the request head, optionally burn
//! CPU, write the fixed response, close. No allocation.
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::http::{HeaderEnd, RESPONSE};
use super::{signals, sys};

/// How long a worker waits for a silent client's request.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Reusable per-worker scratch space.
pub struct Scratch {
    buf: [u8; 4096],
}

impl Default for Scratch {
    fn default() -> Self {
        Self { buf: [0; 4096] }
    }
}

/// Serves `conn` (blocking socket) and closes it. Errors are the client's
/// business (reset, timeout): the connection is dropped either way.
pub fn serve(conn: OwnedFd, work: Duration, scratch: &mut Scratch) {
    let fd = conn.as_raw_fd();
    if sys::set_recv_timeout(fd, RECV_TIMEOUT).is_err() {
        return;
    }
    if !read_request(fd, &mut scratch.buf) {
        return;
    }
    if !work.is_zero() {
        spin(work);
    }
    let mut sent = 0;
    while sent < RESPONSE.len() {
        match sys::send(fd, &RESPONSE[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !signals::stopping() => {}
            Err(_) => return,
        }
    }
    // `conn` drops here: close().
}

/// Reads until the end of the request head or EOF; false if the client failed.
fn read_request(fd: i32, buf: &mut [u8]) -> bool {
    let mut head = HeaderEnd::default();
    loop {
        match sys::read(fd, buf) {
            Ok(0) => return true,
            Ok(n) => {
                if head.feed(&buf[..n]).is_some() {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !signals::stopping() => {}
            Err(_) => return false,
        }
    }
}

/// Busy-loops for `d` (simulated request work that keeps the CPU busy).
pub fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;

    fn pair() -> (TcpStream, OwnedFd) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (c, OwnedFd::from(s))
    }

    #[test]
    fn answers_a_request_split_over_writes() {
        let (mut client, server) = pair();
        client.write_all(b"GET / HTTP/1.0\r\nHo").expect("write");
        let t = std::thread::spawn(move || {
            let mut s = Scratch::default();
            serve(server, Duration::ZERO, &mut s);
        });
        std::thread::sleep(Duration::from_millis(20));
        client.write_all(b"st: x\r\n\r\n").expect("write");
        let mut resp = Vec::new();
        client.read_to_end(&mut resp).expect("read to EOF");
        t.join().expect("server thread");
        assert_eq!(resp, RESPONSE);
    }

    #[test]
    fn answers_when_client_half_closes_without_terminator() {
        let (mut client, server) = pair();
        client.write_all(b"GET /").expect("write");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut s = Scratch::default();
        serve(server, Duration::ZERO, &mut s);
        let mut resp = Vec::new();
        client.read_to_end(&mut resp).expect("read to EOF");
        assert_eq!(resp, RESPONSE);
    }

    #[test]
    fn silent_client_is_dropped_after_the_receive_timeout() {
        let (mut client, server) = pair();
        let start = Instant::now();
        let mut s = Scratch::default();
        serve(server, Duration::ZERO, &mut s);
        assert!(start.elapsed() >= RECV_TIMEOUT);
        let mut resp = Vec::new();
        // The server closed without answering: EOF (or a reset), never a response.
        let _ = client.read_to_end(&mut resp);
        assert!(resp.is_empty());
    }

    #[test]
    fn spin_waits_at_least_the_given_time() {
        let start = Instant::now();
        spin(Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
