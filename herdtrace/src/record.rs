//! Recording file format (`--record FILE`, read by `herdtrace replay`).
//!
//! Layout (all integers little-endian):
//! ```text
//! "HERDTRC\0"                      8 bytes magic
//! version        u32               FORMAT_VERSION
//! header_len     u32               then header_len bytes of JSON (RecordHeader)
//! records...     each: tag u8 + payload
//!   TAG_EVENT    RAW_EVENT_SIZE bytes: one RawEvent as on the ring buffer
//!   TAG_LOST     u64: events the kernel reported dropped at this point
//! ```
//! The tag framing lets drop markers sit between events at the moment they
//! were observed, and lets later versions add record kinds.
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use herdtrace_common::{RawEvent, RAW_EVENT_SIZE};
use serde::{Deserialize, Serialize};

use crate::events;

pub const MAGIC: &[u8; 8] = b"HERDTRC\0";
pub const FORMAT_VERSION: u32 = 1;
pub const TAG_EVENT: u8 = 1;
pub const TAG_LOST: u8 = 2;
/// A header larger than this is corruption, not a header.
const MAX_HEADER_LEN: u32 = 1 << 20;

/// Facts about the recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub kernel: String,
    pub backend: String,
    pub created_unix_s: u64,
    pub herdtrace_version: String,
    pub event_size: u32,
    /// The two clocks read together when recording started, so replay can
    /// stamp events with wall-clock time; absent in recordings made before
    /// it was added (left out of the JSON then, so those bytes are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<HeaderClock>,
    /// Workers able to accept, read from /proc when recording started (the
    /// fair share of the balance verdict); absent in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
    /// The most listening sockets on one address then (2+: SO_REUSEPORT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners_per_addr: Option<u64>,
}

/// CLOCK_MONOTONIC and CLOCK_REALTIME at one moment, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderClock {
    pub mono_ns: u64,
    pub unix_ns: u64,
}

impl RecordHeader {
    /// A header for a recording made now by this build.
    pub fn new(kernel: &str, backend: &str) -> RecordHeader {
        let now = crate::report::WallClock::now();
        RecordHeader {
            kernel: kernel.to_string(),
            backend: backend.to_string(),
            created_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            herdtrace_version: env!("CARGO_PKG_VERSION").to_string(),
            event_size: RAW_EVENT_SIZE as u32,
            clock: Some(HeaderClock {
                mono_ns: now.mono_ns,
                unix_ns: now.unix_ns,
            }),
            workers: None,
            listeners_per_addr: None,
        }
    }
}

/// One record of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Event(RawEvent),
    /// Drops reported by the kernel counter (an increment).
    Lost(u64),
}

/// Writes a recording.
pub struct Recorder<W: Write> {
    out: W,
}

impl Recorder<BufWriter<File>> {
    /// Creates (or truncates) `path` with mode 0600, refusing to follow a
    /// symlink (the tool runs as root and the path may be in a shared directory).
    pub fn create(path: &Path, header: &RecordHeader) -> Result<Recorder<BufWriter<File>>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    anyhow!(
                        "{} is a symlink; refusing to write through it",
                        path.display()
                    )
                } else {
                    anyhow::Error::from(e)
                }
            })
            .with_context(|| format!("create recording {}", path.display()))?;
        // `mode` applies only to a new file; an existing one keeps its bits.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        Recorder::new(BufWriter::with_capacity(256 * 1024, file), header)
    }
}

impl<W: Write> Recorder<W> {
    /// Writes the magic, version and header to `out`.
    pub fn new(mut out: W, header: &RecordHeader) -> Result<Recorder<W>> {
        let json = serde_json::to_vec(header).context("encode recording header")?;
        out.write_all(MAGIC)
            .and_then(|_| out.write_all(&FORMAT_VERSION.to_le_bytes()))
            .and_then(|_| out.write_all(&(json.len() as u32).to_le_bytes()))
            .and_then(|_| out.write_all(&json))
            .context("write recording header")?;
        Ok(Recorder { out })
    }

    pub fn write_event(&mut self, ev: &RawEvent) -> Result<()> {
        self.out
            .write_all(&[TAG_EVENT])
            .and_then(|_| self.out.write_all(&events::encode(ev)))
            .context("write recording")
    }

    pub fn write_lost(&mut self, n: u64) -> Result<()> {
        self.out
            .write_all(&[TAG_LOST])
            .and_then(|_| self.out.write_all(&n.to_le_bytes()))
            .context("write recording")
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("flush recording")
    }

    /// Flushes and returns the writer.
    #[cfg(feature = "test-hooks")]
    pub fn finish(mut self) -> Result<W> {
        self.out.flush().context("flush recording")?;
        Ok(self.out)
    }
}

/// Reads a recording; every malformation is a one-line error, never a panic.
pub struct Reader<R: Read> {
    input: R,
    offset: u64,
    header: RecordHeader,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Reader<BufReader<File>>> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        Reader::new(BufReader::with_capacity(256 * 1024, file))
    }
}

/// Fills `buf`; returns how many bytes were read before end of file.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> Reader<R> {
    /// Reads and checks the magic, version and header.
    pub fn new(mut input: R) -> Result<Reader<R>> {
        let mut magic = [0u8; 8];
        let n = read_full(&mut input, &mut magic).context("read recording")?;
        if n == 0 {
            bail!("empty file, not a herdtrace recording");
        }
        if n < magic.len() || magic != *MAGIC {
            if magic[..n] == MAGIC[..n] {
                bail!("truncated header ({n} bytes)");
            }
            bail!("not a herdtrace recording (bad magic)");
        }
        let mut word = [0u8; 4];
        if read_full(&mut input, &mut word).context("read recording")? < 4 {
            bail!("truncated header (no format version)");
        }
        let version = u32::from_le_bytes(word);
        if version != FORMAT_VERSION {
            bail!(
                "unsupported recording format version {version} (this herdtrace reads version {FORMAT_VERSION})"
            );
        }
        if read_full(&mut input, &mut word).context("read recording")? < 4 {
            bail!("truncated header (no header length)");
        }
        let len = u32::from_le_bytes(word);
        if len > MAX_HEADER_LEN {
            bail!("corrupt header: length {len} is implausible");
        }
        let mut json = vec![0u8; len as usize];
        let got = read_full(&mut input, &mut json).context("read recording")?;
        if got < json.len() {
            bail!("truncated header ({got} of {len} bytes)");
        }
        let header: RecordHeader =
            serde_json::from_slice(&json).map_err(|e| anyhow!("corrupt header: {e}"))?;
        if header.event_size as usize != RAW_EVENT_SIZE {
            bail!(
                "unsupported event size {} (this herdtrace reads {RAW_EVENT_SIZE}-byte events)",
                header.event_size
            );
        }
        Ok(Reader {
            input,
            offset: 16 + u64::from(len),
            header,
        })
    }

    pub fn header(&self) -> &RecordHeader {
        &self.header
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let at = self.offset;
        let mut tag = [0u8; 1];
        if read_full(&mut self.input, &mut tag).context("read recording")? == 0 {
            return Ok(None);
        }
        let record = match tag[0] {
            TAG_EVENT => {
                let mut buf = [0u8; RAW_EVENT_SIZE];
                self.payload(at, &mut buf, "event")?;
                let ev =
                    events::decode(&buf).map_err(|e| anyhow!("bad event at offset {at}: {e}"))?;
                Record::Event(ev)
            }
            TAG_LOST => {
                let mut buf = [0u8; 8];
                self.payload(at, &mut buf, "lost-events marker")?;
                Record::Lost(u64::from_le_bytes(buf))
            }
            other => bail!("corrupt record at offset {at}: unknown tag {other:#04x}"),
        };
        Ok(Some(record))
    }

    fn payload(&mut self, at: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let got = read_full(&mut self.input, buf).context("read recording")?;
        if got < buf.len() {
            bail!(
                "truncated {what} at offset {at} ({got} of {} bytes; the recording was cut short)",
                buf.len()
            );
        }
        self.offset += 1 + buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::synth::herd_stream;
    use herdtrace_common::EV_MAX;

    /// A fixed header for tests (also used by `replay`'s tests).
    pub(crate) fn header() -> RecordHeader {
        RecordHeader {
            kernel: "6.18.0".into(),
            backend: "tracepoint".into(),
            created_unix_s: 1_700_000_000,
            herdtrace_version: "0.1.0".into(),
            event_size: RAW_EVENT_SIZE as u32,
            clock: None,
            workers: None,
            listeners_per_addr: None,
        }
    }

    fn recording(events: &[RawEvent], lost_after: Option<usize>) -> Vec<u8> {
        let mut rec = Recorder::new(Vec::new(), &header()).expect("header");
        for (i, ev) in events.iter().enumerate() {
            rec.write_event(ev).expect("event");
            if lost_after == Some(i) {
                rec.write_lost(42).expect("lost");
            }
        }
        rec.finish().expect("finish")
    }

    fn read_all(bytes: &[u8]) -> Result<(RecordHeader, Vec<Record>)> {
        let mut r = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok((r.header().clone(), out))
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", read_all(bytes).expect_err("must fail"))
    }

    #[test]
    fn clock_and_workers_round_trip_and_old_headers_keep_their_bytes() {
        let mut h = header();
        let old = serde_json::to_string(&h).expect("json");
        assert!(
            !old.contains("clock") && !old.contains("workers") && !old.contains("listeners"),
            "{old}"
        );
        h.clock = Some(HeaderClock {
            mono_ns: 5,
            unix_ns: 1_796_019_352_000_000_000,
        });
        h.workers = Some(4);
        h.listeners_per_addr = Some(4);
        let mut rec = Recorder::new(Vec::new(), &h).expect("header");
        rec.write_event(&herd_stream(1, 1)[0]).expect("event");
        let bytes = rec.finish().expect("finish");
        let (back, _) = read_all(&bytes).expect("read");
        assert_eq!(back, h);
        // A header written before these fields existed still reads.
        let parsed: RecordHeader = serde_json::from_str(&old).expect("old header");
        assert_eq!(
            (parsed.clock, parsed.workers, parsed.listeners_per_addr),
            (None, None, None)
        );
        // A new header takes both clocks now.
        let now = RecordHeader::new("k", "b");
        assert!(now
            .clock
            .is_some_and(|c| c.unix_ns > 1_700_000_000_000_000_000));
    }

    #[test]
    fn roundtrip_in_memory() {
        let events = herd_stream(3, 2);
        let bytes = recording(&events, Some(4));
        let (h, recs) = read_all(&bytes).expect("read");
        assert_eq!(h, header());
        assert_eq!(recs.len(), events.len() + 1);
        assert_eq!(recs[5], Record::Lost(42));
        let back: Vec<RawEvent> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(*e),
                Record::Lost(_) => None,
            })
            .collect();
        assert_eq!(back, events);
    }

    #[test]
    fn layout_is_magic_version_header_then_tagged_records() {
        let bytes = recording(&herd_stream(1, 1)[..1], None);
        assert_eq!(&bytes[..8], b"HERDTRC\0");
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4")) as usize;
        let h: serde_json::Value = serde_json::from_slice(&bytes[16..16 + len]).expect("json");
        assert_eq!(h["event_size"], 112);
        assert_eq!(h["backend"], "tracepoint");
        assert_eq!(bytes[16 + len], TAG_EVENT);
        assert_eq!(bytes.len(), 16 + len + 1 + RAW_EVENT_SIZE);
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("herdtrace-rec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir
    }

    #[test]
    fn file_is_created_0600_and_reads_back() {
        let dir = tmp("file");
        let path = dir.join("t.htr");
        std::fs::write(&path, b"old contents").expect("pre-existing file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let events = herd_stream(2, 3);
        let mut rec = Recorder::create(&path, &header()).expect("create");
        for ev in &events {
            rec.write_event(ev).expect("write");
        }
        rec.write_lost(7).expect("lost");
        rec.finish().expect("finish");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut r = Reader::open(&path).expect("open");
        let mut n = 0;
        let mut lost = 0;
        while let Some(rec) = r.next_record().expect("record") {
            match rec {
                Record::Event(_) => n += 1,
                Record::Lost(k) => lost += k,
            }
        }
        assert_eq!((n, lost), (events.len(), 7));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tmp("symlink");
        let target = dir.join("victim");
        std::fs::write(&target, b"keep me").expect("victim");
        let link = dir.join("t.htr");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = Recorder::create(&link, &header())
            .err()
            .expect("must refuse");
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep me");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn empty_and_foreign_files_are_rejected() {
        assert_eq!(err(b""), "empty file, not a herdtrace recording");
        assert_eq!(
            err(b"GIF89a..........."),
            "not a herdtrace recording (bad magic)"
        );
        assert_eq!(err(b"HERD"), "truncated header (4 bytes)");
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut bytes = recording(&[], None);
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            err(&bytes),
            "unsupported recording format version 9 (this herdtrace reads version 1)"
        );
    }

    #[test]
    fn corrupt_headers_are_rejected() {
        let good = recording(&[], None);
        let mut bad_json = good.clone();
        bad_json[16] = b'[';
        assert!(
            err(&bad_json).starts_with("corrupt header: "),
            "{}",
            err(&bad_json)
        );
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            err(&huge),
            "corrupt header: length 4294967295 is implausible"
        );
        let mut other_size = header();
        other_size.event_size = 120;
        let bytes = Recorder::new(Vec::new(), &other_size)
            .expect("header")
            .finish()
            .expect("finish");
        assert_eq!(
            err(&bytes),
            "unsupported event size 120 (this herdtrace reads 112-byte events)"
        );
    }

    #[test]
    fn every_truncation_is_an_error_or_a_record_boundary() {
        let events = herd_stream(2, 2);
        let bytes = recording(&events, Some(0));
        let header_end = 16 + u32::from_le_bytes(bytes[12..16].try_into().expect("4")) as usize;
        // Record ends: the first event, the lost marker after it, then the rest.
        let mut boundaries = vec![header_end, header_end + 1 + RAW_EVENT_SIZE];
        boundaries.push(boundaries[1] + 1 + 8);
        for _ in 1..events.len() {
            boundaries.push(boundaries[boundaries.len() - 1] + 1 + RAW_EVENT_SIZE);
        }
        assert_eq!(boundaries.last(), Some(&bytes.len()));
        for cut in 0..=bytes.len() {
            match read_all(&bytes[..cut]) {
                Ok((_, recs)) => {
                    let k = boundaries.iter().position(|&b| b == cut);
                    assert_eq!(
                        k,
                        Some(recs.len()),
                        "cut {cut}: a clean end only at a boundary"
                    );
                }
                Err(e) => {
                    assert!(!boundaries.contains(&cut), "cut {cut}: {e:#}");
                    let msg = format!("{e:#}");
                    assert!(
                        msg.starts_with("truncated") || msg.starts_with("empty"),
                        "cut {cut}: {msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_event_names_its_offset() {
        let bytes = recording(&herd_stream(1, 1), None);
        let cut = &bytes[..bytes.len() - 10];
        let msg = err(cut);
        let last_at = bytes.len() - 1 - RAW_EVENT_SIZE;
        assert_eq!(
            msg,
            format!(
                "truncated event at offset {last_at} (102 of 112 bytes; the recording was cut short)"
            )
        );
    }

    #[test]
    fn bad_kind_and_bad_tag_name_their_offset() {
        let events = herd_stream(1, 1);
        let mut bytes = recording(&events[..2], None);
        let header_end = bytes.len() - 2 * (1 + RAW_EVENT_SIZE);
        let second = header_end + 1 + RAW_EVENT_SIZE;
        bytes[second + 1..second + 5].copy_from_slice(&(EV_MAX + 7).to_le_bytes());
        assert_eq!(
            err(&bytes),
            format!("bad event at offset {second}: unknown event kind 15 (known: 1..=8)")
        );
        bytes[header_end] = 0x7f;
        assert_eq!(
            err(&bytes),
            format!("corrupt record at offset {header_end}: unknown tag 0x7f")
        );
    }
}
