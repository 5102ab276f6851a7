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
//!   TAG_SKIPS    a skip sample: at_ns u64, count u16, then per program
//!                name_len u8 + name + runs u64 + flags u8 (bit 0: its runs
//!                can change a connection's figures; bit 1: they leave only
//!                the task's own state stale, `AfterSkip::TaskCascades`)
//!   TAG_INSERT_FAILED  name_len u8 + map name + u64: failed inserts (an increment)
//! ```
//! The tag framing lets drop markers and counter samples sit between events
//! at the moment they were observed, and lets later versions add record
//! kinds. Replay applies them where they sit, so it flags the connections
//! that the live run flagged.
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use herdtrace_common::{RawEvent, RAW_EVENT_SIZE};
use serde::{Deserialize, Serialize};

use crate::engine::{KnownTask, SetupHint, Untraced};
use crate::events;
pub use crate::pipeline::SkippedRuns;
use crate::probes::AfterSkip;

pub const MAGIC: &[u8; 8] = b"HERDTRC\0";
pub const FORMAT_VERSION: u32 = 1;
pub const TAG_EVENT: u8 = 1;
pub const TAG_LOST: u8 = 2;
pub const TAG_SKIPS: u8 = 3;
pub const TAG_INSERT_FAILED: u8 = 4;
/// More programs than this in one skip sample is corruption.
const MAX_SKIP_PROGRAMS: u16 = 1024;
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
    /// Which tasks those workers were (the task table lists the idle ones
    /// too); absent in older recordings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_tasks: Vec<KnownTask>,
    /// How the workers wait for connections, as /proc showed it (names the
    /// pattern of an imbalance); absent when not known and in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_hint: Option<SetupHint>,
    /// Tasks outside the trace that waited on the same listeners; absent
    /// when there were none and in older recordings.
    #[serde(default, skip_serializing_if = "Untraced::is_empty")]
    pub untraced: Untraced,
    /// Processes that ran one accept loop on any of their threads (one
    /// worker each for the balance verdict); absent when there were none
    /// and in older recordings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_loops: Vec<u32>,
    /// Every skip sample of the run is recorded (TAG_SKIPS, also the empty
    /// ones): the live run held closed connections until the next sample,
    /// and replay does the same. Absent (false) in older recordings, which
    /// carry no skip samples.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_samples: bool,
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
            worker_tasks: Vec::new(),
            setup_hint: None,
            untraced: Untraced::default(),
            accept_loops: Vec::new(),
            skip_samples: false,
        }
    }
}

/// One record of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Event(RawEvent),
    /// Drops reported by the kernel counter (an increment).
    Lost(u64),
    /// A skip sample read at clock time `at_ns`: the programs whose runs
    /// the kernel skipped since the previous sample (none: a sample that
    /// showed no skips).
    Skips {
        at_ns: u64,
        programs: Vec<SkippedRuns>,
    },
    /// Inserts into a map that failed in the kernel (an increment).
    InsertFailed {
        map: String,
        n: u64,
    },
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

    /// Writes a skip sample; only programs with skipped runs are listed.
    pub fn write_skips(&mut self, at_ns: u64, programs: &[SkippedRuns]) -> Result<()> {
        let listed: Vec<&SkippedRuns> = programs.iter().filter(|p| p.runs > 0).collect();
        let count = u16::try_from(listed.len())
            .ok()
            .filter(|&n| n <= MAX_SKIP_PROGRAMS)
            .ok_or_else(|| anyhow!("{} programs in one skip sample", listed.len()))?;
        let mut buf = vec![TAG_SKIPS];
        buf.extend_from_slice(&at_ns.to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        for p in listed {
            put_name(&mut buf, &p.program)?;
            buf.extend_from_slice(&p.runs.to_le_bytes());
            let task_only = p.after == AfterSkip::TaskCascades;
            buf.push(u8::from(p.flags) | u8::from(task_only) << 1);
        }
        self.out.write_all(&buf).context("write recording")
    }

    pub fn write_insert_failed(&mut self, map: &str, n: u64) -> Result<()> {
        let mut buf = vec![TAG_INSERT_FAILED];
        put_name(&mut buf, map)?;
        buf.extend_from_slice(&n.to_le_bytes());
        self.out.write_all(&buf).context("write recording")
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

/// A name (program or map) with its length byte.
fn put_name(buf: &mut Vec<u8>, name: &str) -> Result<()> {
    let len = u8::try_from(name.len()).map_err(|_| anyhow!("name too long: {name}"))?;
    buf.push(len);
    buf.extend_from_slice(name.as_bytes());
    Ok(())
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
        self.offset += 1;
        let record = match tag[0] {
            TAG_EVENT => {
                let mut buf = [0u8; RAW_EVENT_SIZE];
                self.payload(at, &mut buf, "event")?;
                let ev =
                    events::decode(&buf).map_err(|e| anyhow!("bad event at offset {at}: {e}"))?;
                Record::Event(ev)
            }
            TAG_LOST => Record::Lost(self.u64_field(at, "lost-events marker")?),
            TAG_SKIPS => {
                let what = "skip sample";
                let at_ns = self.u64_field(at, what)?;
                let mut count = [0u8; 2];
                self.payload(at, &mut count, what)?;
                let count = u16::from_le_bytes(count);
                if count > MAX_SKIP_PROGRAMS {
                    bail!("corrupt skip sample at offset {at}: {count} programs");
                }
                let mut programs = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let program = self.name(at, what)?;
                    let runs = self.u64_field(at, what)?;
                    let mut flags = [0u8; 1];
                    self.payload(at, &mut flags, what)?;
                    if flags[0] > 3 {
                        bail!(
                            "corrupt skip sample at offset {at}: flags {:#04x}",
                            flags[0]
                        );
                    }
                    programs.push(SkippedRuns {
                        program,
                        runs,
                        flags: flags[0] & 1 != 0,
                        after: if flags[0] & 2 != 0 {
                            AfterSkip::TaskCascades
                        } else {
                            AfterSkip::Anything
                        },
                    });
                }
                Record::Skips { at_ns, programs }
            }
            TAG_INSERT_FAILED => {
                let what = "failed-inserts marker";
                let map = self.name(at, what)?;
                Record::InsertFailed {
                    map,
                    n: self.u64_field(at, what)?,
                }
            }
            other => bail!("corrupt record at offset {at}: unknown tag {other:#04x}"),
        };
        Ok(Some(record))
    }

    /// Reads the next `buf.len()` bytes of the record that starts at `at`.
    fn payload(&mut self, at: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let got = read_full(&mut self.input, buf).context("read recording")?;
        if got < buf.len() {
            bail!(
                "truncated {what} at offset {at} ({got} of {} bytes; the recording was cut short)",
                buf.len()
            );
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u64_field(&mut self, at: u64, what: &str) -> Result<u64> {
        let mut buf = [0u8; 8];
        self.payload(at, &mut buf, what)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// A length-prefixed UTF-8 name.
    fn name(&mut self, at: u64, what: &str) -> Result<String> {
        let mut len = [0u8; 1];
        self.payload(at, &mut len, what)?;
        let mut bytes = vec![0u8; usize::from(len[0])];
        self.payload(at, &mut bytes, what)?;
        String::from_utf8(bytes)
            .map_err(|_| anyhow!("corrupt {what} at offset {at}: a name is not UTF-8"))
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
            worker_tasks: Vec::new(),
            setup_hint: None,
            untraced: Untraced::default(),
            accept_loops: Vec::new(),
            skip_samples: false,
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
            !old.contains("clock")
                && !old.contains("workers")
                && !old.contains("listeners")
                && !old.contains("untraced"),
            "{old}"
        );
        h.clock = Some(HeaderClock {
            mono_ns: 5,
            unix_ns: 1_796_019_352_000_000_000,
        });
        h.workers = Some(4);
        h.listeners_per_addr = Some(4);
        h.worker_tasks = vec![KnownTask {
            pid: 7,
            tid: 8,
            comm: "nginx".into(),
            ports: vec![80, 443],
        }];
        h.setup_hint = Some(SetupHint::TakingTurns);
        h.untraced = Untraced {
            tasks: vec![KnownTask {
                pid: 9,
                tid: 9,
                comm: "nginx".into(),
                ports: vec![80],
            }],
            trace_pid: Some(7),
        };
        h.accept_loops = vec![7];
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
        assert!(parsed.worker_tasks.is_empty() && parsed.accept_loops.is_empty());
        assert_eq!(parsed.setup_hint, None);
        // A worker written before its ports were: no ports.
        let task: KnownTask =
            serde_json::from_str(r#"{"pid":7,"tid":8,"comm":"nginx"}"#).expect("old task");
        assert!(task.ports.is_empty());
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
                _ => None,
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
                other => panic!("not written: {other:?}"),
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

    fn skipped(program: &str, runs: u64, flags: bool) -> SkippedRuns {
        SkippedRuns {
            program: program.into(),
            runs,
            flags,
            after: AfterSkip::Anything,
        }
    }

    /// Events, a skip sample with two programs, an empty one, failed inserts.
    fn recording_with_counters() -> (Vec<u8>, Vec<Record>) {
        let events = herd_stream(2, 2);
        let mut rec = Recorder::new(Vec::new(), &header()).expect("header");
        rec.write_event(&events[0]).expect("event");
        let task_only = SkippedRuns {
            after: AfterSkip::TaskCascades,
            ..skipped("tp_poll_exit", 3, true)
        };
        rec.write_skips(
            5_000,
            &[
                task_only.clone(),
                skipped("quiet", 0, true),
                skipped("fx_ep_send_events", 2, false),
            ],
        )
        .expect("skips");
        rec.write_skips(6_000, &[skipped("quiet", 0, true)])
            .expect("empty sample");
        rec.write_insert_failed("ACTIVE", 9).expect("inserts");
        rec.write_event(&events[1]).expect("event");
        let want = vec![
            Record::Event(events[0]),
            Record::Skips {
                at_ns: 5_000,
                // Programs without skipped runs are left out.
                programs: vec![task_only, skipped("fx_ep_send_events", 2, false)],
            },
            Record::Skips {
                at_ns: 6_000,
                programs: vec![],
            },
            Record::InsertFailed {
                map: "ACTIVE".into(),
                n: 9,
            },
            Record::Event(events[1]),
        ];
        (rec.finish().expect("finish"), want)
    }

    #[test]
    fn skip_samples_and_failed_inserts_round_trip_in_stream_order() {
        let (bytes, want) = recording_with_counters();
        let (_, got) = read_all(&bytes).expect("read");
        assert_eq!(got, want);
    }

    #[test]
    fn counter_records_cut_anywhere_are_truncation_errors_or_boundaries() {
        let (bytes, want) = recording_with_counters();
        let mut clean_ends = 0;
        for cut in 0..=bytes.len() {
            match read_all(&bytes[..cut]) {
                Ok((_, recs)) => {
                    assert_eq!(recs[..], want[..recs.len()], "cut {cut}");
                    clean_ends += 1;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(
                        msg.starts_with("truncated") || msg.starts_with("empty"),
                        "cut {cut}: {msg}"
                    );
                }
            }
        }
        // After the header, and after each of the five records.
        assert_eq!(clean_ends, 6);
    }

    #[test]
    fn corrupt_counter_records_name_their_offset() {
        let mut rec = Recorder::new(Vec::new(), &header()).expect("header");
        rec.write_skips(1, &[skipped("p", 1, true)]).expect("skips");
        let good = rec.finish().expect("finish");
        let at = good.len() - (1 + 8 + 2 + 1 + 1 + 8 + 1);
        let mut bad_flags = good.clone();
        let last = bad_flags.len() - 1;
        bad_flags[last] = 4;
        assert_eq!(
            err(&bad_flags),
            format!("corrupt skip sample at offset {at}: flags 0x04")
        );
        let mut bad_name = good.clone();
        bad_name[at + 1 + 8 + 2 + 1] = 0xff;
        assert_eq!(
            err(&bad_name),
            format!("corrupt skip sample at offset {at}: a name is not UTF-8")
        );
        let mut many = good.clone();
        many[at + 9..at + 11].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            err(&many),
            format!("corrupt skip sample at offset {at}: 65535 programs")
        );
        // A record after a counter record is read at the right offset.
        let mut rec = Recorder::new(Vec::new(), &header()).expect("header");
        rec.write_insert_failed("TRACED", 1).expect("inserts");
        let mut bytes = rec.finish().expect("finish");
        let next = bytes.len();
        bytes.push(0x7f);
        assert_eq!(
            err(&bytes),
            format!("corrupt record at offset {next}: unknown tag 0x7f")
        );
    }

    #[test]
    fn only_new_recordings_say_they_carry_skip_samples() {
        let old = serde_json::to_string(&header()).expect("json");
        assert!(!old.contains("skip_samples"), "{old}");
        let parsed: RecordHeader = serde_json::from_str(&old).expect("old header");
        assert!(!parsed.skip_samples);
        let mut h = header();
        h.skip_samples = true;
        let json = serde_json::to_string(&h).expect("json");
        let back: RecordHeader = serde_json::from_str(&json).expect("header");
        assert!(back.skip_samples, "{json}");
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
