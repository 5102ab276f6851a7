//! The tiny slice of HTTP/1.0 both the server and the load generator need:
//! spotting the end of a header block across reads, and the fixed response.

/// The server's whole response; the connection is closed after it.
pub const RESPONSE: &[u8] =
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/// Finds "\r\n\r\n" in a byte stream fed in arbitrary chunks, without buffering.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeaderEnd {
    /// How many bytes of "\r\n\r\n" the stream currently ends with (0..=3),
    /// or 4 once the terminator was seen.
    matched: u8,
}

impl HeaderEnd {
    const PATTERN: &'static [u8; 4] = b"\r\n\r\n";

    /// Feeds the next chunk; returns `Some(n)` when the terminator ends at byte
    /// `n` of this chunk (n counts the terminator's bytes), else `None`.
    /// Once found it stays found and later chunks return `Some(0)`.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.found() {
            return Some(0);
        }
        for (i, &b) in chunk.iter().enumerate() {
            self.matched = if b == Self::PATTERN[self.matched as usize] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.found() {
                return Some(i + 1);
            }
        }
        None
    }

    /// True once the terminator was seen.
    pub fn found(&self) -> bool {
        self.matched == 4
    }
}

/// The status code of a response that starts with "HTTP/x.y NNN", if it does.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let code = rest.get(sp + 1..sp + 4)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        code.iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_terminator_in_one_chunk() {
        let mut h = HeaderEnd::default();
        assert_eq!(h.feed(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"), Some(27));
        assert!(h.found());
        assert_eq!(h.feed(b"more"), Some(0));
    }

    #[test]
    fn finds_terminator_split_at_every_position() {
        let msg = b"GET / HTTP/1.0\r\nHost: x\r\n\r\nbody";
        let end = 27;
        for split in 0..=msg.len() {
            let mut h = HeaderEnd::default();
            let first = h.feed(&msg[..split]);
            if split >= end {
                assert_eq!(first, Some(end), "split {split}");
            } else {
                assert_eq!(first, None, "split {split}");
                assert_eq!(h.feed(&msg[split..]), Some(end - split), "split {split}");
            }
        }
    }

    #[test]
    fn byte_by_byte_and_near_misses() {
        let mut h = HeaderEnd::default();
        for &b in b"a\r\n\rb\r\r\n\r" {
            assert_eq!(h.feed(&[b]), None);
        }
        assert_eq!(h.feed(b"\n"), Some(1));
    }

    #[test]
    fn bare_newlines_do_not_count() {
        let mut h = HeaderEnd::default();
        assert_eq!(h.feed(b"GET /\n\n\n\r\n\n"), None);
        assert!(!h.found());
    }

    #[test]
    fn response_is_complete_http() {
        assert_eq!(status_code(RESPONSE), Some(200));
        let mut h = HeaderEnd::default();
        let end = h.feed(RESPONSE).expect("response has a header terminator");
        assert_eq!(&RESPONSE[end..], b"ok\n");
        let text = std::str::from_utf8(RESPONSE).expect("ascii");
        assert!(text.contains("Content-Length: 3\r\n"));
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_code(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(status_code(b"HTTP/1.0 200"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 20"), None);
        assert_eq!(status_code(b"HTTP/1.0 2x0 OK"), None);
        assert_eq!(status_code(b"HTTX/1.0 200 OK"), None);
        assert_eq!(status_code(b""), None);
    }
}
