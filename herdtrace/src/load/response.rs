//! Judging a response from the bytes streamed through it, without keeping it:
//! the first bytes (for the status line), the end of the header block, a count.
use crate::serve::http::{status_code, HeaderEnd};

const PREFIX: usize = 16;

/// What a finished response amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A complete HTTP header block with this status code.
    Complete(u16),
    /// Nothing at all, no HTTP status line, or EOF inside the header block.
    Short,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseProbe {
    prefix: [u8; PREFIX],
    prefix_len: u8,
    end: HeaderEnd,
}

impl ResponseProbe {
    pub fn feed(&mut self, chunk: &[u8]) {
        let have = usize::from(self.prefix_len);
        let take = (PREFIX - have).min(chunk.len());
        self.prefix[have..have + take].copy_from_slice(&chunk[..take]);
        self.prefix_len += take as u8;
        if !self.end.found() {
            self.end.feed(chunk);
        }
    }

    /// The verdict once EOF was reached.
    pub fn verdict(&self) -> Verdict {
        match status_code(&self.prefix[..usize::from(self.prefix_len)]) {
            Some(code) if self.end.found() => Verdict::Complete(code),
            _ => Verdict::Short,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::RESPONSE;

    fn probe(chunks: &[&[u8]]) -> ResponseProbe {
        let mut p = ResponseProbe::default();
        for c in chunks {
            p.feed(c);
        }
        p
    }

    #[test]
    fn whole_response_in_one_chunk() {
        let p = probe(&[RESPONSE]);
        assert_eq!(p.verdict(), Verdict::Complete(200));
    }

    #[test]
    fn response_byte_by_byte() {
        let chunks: Vec<&[u8]> = RESPONSE.chunks(1).collect();
        assert_eq!(probe(&chunks).verdict(), Verdict::Complete(200));
    }

    #[test]
    fn nothing_is_short() {
        assert_eq!(probe(&[]).verdict(), Verdict::Short);
    }

    #[test]
    fn truncated_header_is_short() {
        assert_eq!(
            probe(&[b"HTTP/1.0 200 OK\r\nContent-"]).verdict(),
            Verdict::Short
        );
    }

    #[test]
    fn garbage_is_short() {
        assert_eq!(probe(&[b"hello\r\n\r\n"]).verdict(), Verdict::Short);
    }

    #[test]
    fn other_status_codes() {
        let p = probe(&[b"HTTP/1.1 404 Not Found\r\n", b"\r\n"]);
        assert_eq!(p.verdict(), Verdict::Complete(404));
    }

    #[test]
    fn status_split_across_chunks() {
        assert_eq!(
            probe(&[b"HTT", b"P/1.0 5", b"03 x\r\n\r\n"]).verdict(),
            Verdict::Complete(503)
        );
    }
}
