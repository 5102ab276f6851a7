//! A minimal HTTP/1.x responder for `/metrics` on a std `TcpListener`, in
//! one thread. Scrapes come every few seconds, so clients are served one at
//! a time with short timeouts; each response closes its connection.
use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, Result};
use prometheus_client::registry::Registry;

use super::metrics::{render, CONTENT_TYPE};

/// Longest request head read (the request line and headers).
const MAX_HEAD: usize = 8192;
/// A client that neither sends its request nor reads the answer within this
/// is dropped, so it cannot hold up the next scrape for long.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

const INDEX: &str = "herdtrace Prometheus exporter: metrics at /metrics\n";

/// Binds `addr`; the error names the flag and the address.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("--prometheus {addr}: cannot listen"))
}

/// Serves `registry` on `listener` from a new thread until the process ends.
pub fn spawn(listener: TcpListener, registry: Arc<Registry>) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("herdtrace-metrics".into())
        .spawn(move || serve(&listener, &registry))
        .context("starting the metrics HTTP thread")
}

fn serve(listener: &TcpListener, registry: &Registry) {
    loop {
        match listener.accept() {
            // A client that misbehaves only loses its own answer.
            Ok((stream, _)) => {
                let _ = handle(stream, registry);
            }
            // EINTR (our own SIGINT/SIGTERM handler), or EMFILE: pause, retry.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn handle(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let answer = respond(&head, || render(registry).ok());
    stream.write_all(&answer)?;
    stream.flush()
}

/// Reads up to the blank line that ends the request head (or [`MAX_HEAD`] bytes).
fn read_head(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The whole response to the request `head`. `metrics` renders the
/// exposition (None: it could not be rendered).
pub fn respond(head: &[u8], metrics: impl FnOnce() -> Option<String>) -> Vec<u8> {
    let line = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return response("400 Bad Request", "text/plain", "bad request\n", true, &[]);
    };
    if !version.starts_with("HTTP/1.") {
        return response("400 Bad Request", "text/plain", "bad request\n", true, &[]);
    }
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return response(
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            true,
            &["Allow: GET, HEAD"],
        );
    }
    let path = target.split('?').next().unwrap_or(target);
    match path {
        "/metrics" => match metrics() {
            Some(body) => response("200 OK", CONTENT_TYPE, &body, with_body, &[]),
            None => response(
                "500 Internal Server Error",
                "text/plain",
                "could not render the metrics\n",
                with_body,
                &[],
            ),
        },
        "/" => response("200 OK", "text/plain", INDEX, with_body, &[]),
        _ => response(
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n",
            with_body,
            &[],
        ),
    }
}

fn response(
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
    extra: &[&str],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).expect("utf8")
    }

    fn body() -> Option<String> {
        Some("x_total 1\n# EOF\n".to_string())
    }

    #[test]
    fn get_metrics_returns_the_exposition_with_its_media_type() {
        let r = text(respond(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", body));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{r}"
        );
        assert!(r.contains("Content-Length: 16\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nx_total 1\n# EOF\n"), "{r}");
    }

    #[test]
    fn a_query_string_is_ignored() {
        let r = text(respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", body));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }

    #[test]
    fn head_has_the_length_but_no_body() {
        let r = text(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", body));
        assert!(r.contains("Content-Length: 16\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
    }

    #[test]
    fn other_paths_methods_and_garbage_get_errors() {
        let r = text(respond(b"GET / HTTP/1.1\r\n\r\n", body));
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with(INDEX),
            "{r}"
        );
        let r = text(respond(b"GET /nope HTTP/1.1\r\n\r\n", body));
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", body));
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        assert!(r.contains("Allow: GET, HEAD\r\n"), "{r}");
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"GET\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            let r = text(respond(bad, body));
            assert!(r.starts_with("HTTP/1.1 400 "), "{bad:?}: {r}");
        }
        let r = text(respond(b"GET /metrics HTTP/1.1\r\n\r\n", || None));
        assert!(r.starts_with("HTTP/1.1 500 "), "{r}");
    }

    #[test]
    fn the_head_reader_stops_at_the_blank_line_and_at_the_limit() {
        let mut src: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            read_head(&mut src).expect("read"),
            b"GET / HTTP/1.1\r\n\r\n"
        );
        let big = vec![b'a'; MAX_HEAD * 3];
        let mut src: &[u8] = &big;
        let head = read_head(&mut src).expect("read");
        assert!(head.len() >= MAX_HEAD && head.len() < MAX_HEAD + 1024);
    }

    #[test]
    fn serves_a_real_scrape_on_loopback() {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = crate::exporter::metrics::Collector::new();
        spawn(listener, collector.registry()).expect("spawn");
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut r = String::new();
            s.read_to_string(&mut r).expect("read to close");
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(r.contains("herdtrace_lost_events_total 0\n"), "{r}");
            assert!(r.ends_with("# EOF\n"), "{r}");
        }
    }

    #[test]
    fn a_busy_address_is_a_one_line_error() {
        let first = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let addr = first.local_addr().expect("addr");
        let err = bind(addr).expect_err("second bind");
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!("--prometheus {addr}: cannot listen: ")),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}
