//! `/metrics` over HTTP/1.1 with hyper, on the trace session's tokio
//! runtime. Scrapes come every few seconds, so the limits are tight: a few
//! clients at a time, a short deadline for the request head and for the
//! whole exchange, a small cap on the head's size, one request per
//! connection.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::metrics::{render, CONTENT_TYPE};

/// Longest request head accepted (request line and headers); longer: 431.
pub const MAX_HEAD: usize = 8192;
/// A client must have sent its whole request head within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole exchange, request and answer, ends within this, whatever the client does.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 8;

const INDEX: &str = "herdtrace Prometheus exporter: metrics at /metrics\n";

/// Binds `addr`; the error names the flag and the address.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--prometheus {addr}: cannot listen"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("--prometheus {addr}: setting the socket non-blocking"))?;
    Ok(listener)
}

/// Serves `registry` on `listener` until the runtime ends (call it inside one).
pub fn spawn(listener: std::net::TcpListener, registry: Arc<Registry>) -> Result<()> {
    let listener = TcpListener::from_std(listener).context("serving /metrics")?;
    tokio::spawn(serve(listener, registry));
    Ok(())
}

async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return; // never closed
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let registry = Arc::clone(&registry);
                tokio::spawn(async move {
                    // A client that misbehaves only loses its own answer.
                    let _ = tokio::time::timeout(CONN_TIMEOUT, handle(stream, registry)).await;
                    drop(slot);
                });
            }
            // EMFILE and the like: pause, retry.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn handle(stream: TcpStream, registry: Arc<Registry>) -> hyper::Result<()> {
    let service = service_fn(move |req: Request<Incoming>| {
        let registry = Arc::clone(&registry);
        async move {
            Ok::<_, Infallible>(respond(req.method(), req.uri().path(), || {
                render(&registry).ok()
            }))
        }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// The answer to `method path`. `metrics` renders the exposition (None: it
/// could not be rendered). A HEAD answer keeps its length; hyper leaves the
/// body out.
pub fn respond(
    method: &Method,
    path: &str,
    metrics: impl FnOnce() -> Option<String>,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match metrics() {
            Some(body) => {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
                r
            }
            None => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not render the metrics\n",
            ),
        },
        "/" => text(StatusCode::OK, INDEX),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream as StdStream};
    use std::time::Instant;

    fn body() -> Option<String> {
        Some("x_total 1\n# EOF\n".to_string())
    }

    fn bytes_of(r: Response<Full<Bytes>>) -> (StatusCode, String, String) {
        let status = r.status();
        let ctype = r
            .headers()
            .get(CONTENT_TYPE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let body = rt
            .block_on(r.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn get_metrics_returns_the_exposition_with_its_media_type() {
        let (status, ctype, b) = bytes_of(respond(&Method::GET, "/metrics", body));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, CONTENT_TYPE);
        assert_eq!(b, "x_total 1\n# EOF\n");
    }

    #[test]
    fn other_paths_and_methods_get_errors() {
        let (status, _, b) = bytes_of(respond(&Method::GET, "/", body));
        assert_eq!((status, b.as_str()), (StatusCode::OK, INDEX));
        let (status, _, _) = bytes_of(respond(&Method::GET, "/nope", body));
        assert_eq!(status, StatusCode::NOT_FOUND);
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let r = respond(&m, "/metrics", body);
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
            assert_eq!(r.headers()[ALLOW], "GET, HEAD", "{m}");
        }
        let (status, _, _) = bytes_of(respond(&Method::GET, "/metrics", || None));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Runs `start` inside a tokio runtime that keeps running, in a thread
    /// of its own (as the trace session's would), and returns what it returned.
    pub(crate) fn in_runtime_thread<T: Send + 'static>(
        start: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _ = tx.send(start());
                std::future::pending::<()>().await
            });
        });
        rx.recv().expect("started")
    }

    /// A served listener on loopback.
    fn serve_in_background(registry: Arc<Registry>) -> SocketAddr {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let addr = listener.local_addr().expect("addr");
        in_runtime_thread(move || spawn(listener, registry).expect("spawn"));
        addr
    }

    /// Sends `request` raw and reads the answer to the end (the server closes).
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = StdStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("write");
        let mut r = Vec::new();
        let _ = s.read_to_end(&mut r);
        String::from_utf8_lossy(&r).into_owned()
    }

    fn registry() -> Arc<Registry> {
        crate::exporter::metrics::Collector::new().registry()
    }

    #[test]
    fn serves_real_scrapes_one_per_connection() {
        let addr = serve_in_background(registry());
        for _ in 0..2 {
            let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(
                r.to_ascii_lowercase().contains("connection: close\r\n"),
                "{r}"
            );
            assert!(r.contains("herdtrace_lost_events_total 0\n"), "{r}");
            assert!(r.ends_with("# EOF\n"), "{r}");
        }
        // A query string is ignored; HTTP/1.0 works.
        let r = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    }

    #[test]
    fn head_has_the_length_but_no_body() {
        let addr = serve_in_background(registry());
        let get = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let len = get.split_once("\r\n\r\n").expect("head and body").1.len();
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-length: {len}\r\n")),
            "{head}"
        );
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
    }

    #[test]
    fn the_limits_hold_on_a_real_socket() {
        let addr = serve_in_background(registry());
        let r = exchange(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        assert!(
            r.to_ascii_lowercase().contains("allow: get, head\r\n"),
            "{r}"
        );
        // A head over the cap: 431, the connection closed.
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        big.extend_from_slice(b"\r\n\r\n");
        let r = exchange(addr, &big);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // Garbage is a 400, not a crash; the server goes on serving.
        for bad in [
            &b"\xff\xfe\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            let r = exchange(addr, bad);
            assert!(
                r.is_empty() || r.starts_with("HTTP/1.1 400 "),
                "{bad:?}: {r}"
            );
        }
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }

    /// A client that never finishes its request is dropped after HEAD_TIMEOUT
    /// and does not hold up other scrapes meanwhile.
    #[test]
    fn a_silent_client_is_dropped_and_blocks_nobody() {
        let addr = serve_in_background(registry());
        let mut slow = StdStream::connect(addr).expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost")
            .expect("write");
        let started = Instant::now();
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            started.elapsed() < HEAD_TIMEOUT,
            "served while the other waits"
        );
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        let waited = started.elapsed();
        assert!(
            waited >= HEAD_TIMEOUT - Duration::from_millis(100) && waited < CONN_TIMEOUT * 2,
            "closed after {waited:?}"
        );
        // hyper may answer 408 before closing; never a 200.
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 408 "),
            "{rest}"
        );
    }

    #[test]
    fn more_clients_than_slots_are_served_in_turn() {
        let addr = serve_in_background(registry());
        // Every slot taken by a client that sends nothing.
        let idle: Vec<StdStream> = (0..MAX_CLIENTS)
            .map(|_| StdStream::connect(addr).expect("connect"))
            .collect();
        // The next one waits in the backlog, then is served once slots free up.
        let started = Instant::now();
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(started.elapsed() >= HEAD_TIMEOUT - Duration::from_millis(100));
        drop(idle);
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
