//! Decoding and encoding of [`RawEvent`] records.
//!
//! The bytes come from the ring buffer (or a recording) and are read field by
//! field, little-endian, at the `#[repr(C)]` offsets of `RawEvent`: no
//! transmute, so a short or garbled buffer is an error, never undefined
//! behaviour.
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use herdtrace_common::{RawEvent, RAW_EVENT_SIZE};
use herdtrace_common::{AF_INET, AF_INET6, EV_MAX};

// Byte offsets of the RawEvent fields (checked against `offset_of!` in tests).
const OFF_KIND: usize = 0;
const OFF_CPU: usize = 4;
const OFF_TS: usize = 8;
const OFF_SEQ: usize = 16;
const OFF_TGID: usize = 24;
const OFF_TID: usize = 28;
const OFF_CHAIN: usize = 32;
const OFF_SK: usize = 40;
const OFF_CHILD: usize = 48;
const OFF_RET: usize = 56;
const OFF_AUX: usize = 64;
const OFF_PEER_ADDR: usize = 72;
const OFF_PEER_PORT: usize = 88;
const OFF_LOCAL_PORT: usize = 90;
const OFF_FAMILY: usize = 92;
const OFF_FLAGS: usize = 94;
const OFF_COMM: usize = 96;

/// Why a byte buffer is not a valid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer is not exactly [`RAW_EVENT_SIZE`] bytes long.
    WrongLength(usize),
    /// `kind` is 0 or above `EV_MAX` (written by a newer or broken producer).
    BadKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::WrongLength(n) => {
                write!(f, "event is {n} bytes, expected {RAW_EVENT_SIZE}")
            }
            DecodeError::BadKind(k) => write!(f, "unknown event kind {k} (known: 1..={EV_MAX})"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn arr<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[off..off + N]);
    out
}

fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(arr(buf, off))
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(buf, off))
}

fn u64_at(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(buf, off))
}

/// Decodes one event from exactly [`RAW_EVENT_SIZE`] little-endian bytes.
pub fn decode(buf: &[u8]) -> Result<RawEvent, DecodeError> {
    if buf.len() != RAW_EVENT_SIZE {
        return Err(DecodeError::WrongLength(buf.len()));
    }
    let kind = u32_at(buf, OFF_KIND);
    if kind == 0 || kind > EV_MAX {
        return Err(DecodeError::BadKind(kind));
    }
    Ok(RawEvent {
        kind,
        cpu: u32_at(buf, OFF_CPU),
        ts_ns: u64_at(buf, OFF_TS),
        seq: u64_at(buf, OFF_SEQ),
        tgid: u32_at(buf, OFF_TGID),
        tid: u32_at(buf, OFF_TID),
        chain: u64_at(buf, OFF_CHAIN),
        sk: u64_at(buf, OFF_SK),
        child: u64_at(buf, OFF_CHILD),
        ret: i64::from_le_bytes(arr(buf, OFF_RET)),
        aux: u64_at(buf, OFF_AUX),
        peer_addr: arr(buf, OFF_PEER_ADDR),
        peer_port: u16_at(buf, OFF_PEER_PORT),
        local_port: u16_at(buf, OFF_LOCAL_PORT),
        family: u16_at(buf, OFF_FAMILY),
        flags: u16_at(buf, OFF_FLAGS),
        comm: arr(buf, OFF_COMM),
    })
}

/// Encodes an event into its wire form (the inverse of [`decode`]).
pub fn encode(ev: &RawEvent) -> [u8; RAW_EVENT_SIZE] {
    let mut b = [0u8; RAW_EVENT_SIZE];
    b[OFF_KIND..OFF_KIND + 4].copy_from_slice(&ev.kind.to_le_bytes());
    b[OFF_CPU..OFF_CPU + 4].copy_from_slice(&ev.cpu.to_le_bytes());
    b[OFF_TS..OFF_TS + 8].copy_from_slice(&ev.ts_ns.to_le_bytes());
    b[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&ev.seq.to_le_bytes());
    b[OFF_TGID..OFF_TGID + 4].copy_from_slice(&ev.tgid.to_le_bytes());
    b[OFF_TID..OFF_TID + 4].copy_from_slice(&ev.tid.to_le_bytes());
    b[OFF_CHAIN..OFF_CHAIN + 8].copy_from_slice(&ev.chain.to_le_bytes());
    b[OFF_SK..OFF_SK + 8].copy_from_slice(&ev.sk.to_le_bytes());
    b[OFF_CHILD..OFF_CHILD + 8].copy_from_slice(&ev.child.to_le_bytes());
    b[OFF_RET..OFF_RET + 8].copy_from_slice(&ev.ret.to_le_bytes());
    b[OFF_AUX..OFF_AUX + 8].copy_from_slice(&ev.aux.to_le_bytes());
    b[OFF_PEER_ADDR..OFF_PEER_ADDR + 16].copy_from_slice(&ev.peer_addr);
    b[OFF_PEER_PORT..OFF_PEER_PORT + 2].copy_from_slice(&ev.peer_port.to_le_bytes());
    b[OFF_LOCAL_PORT..OFF_LOCAL_PORT + 2].copy_from_slice(&ev.local_port.to_le_bytes());
    b[OFF_FAMILY..OFF_FAMILY + 2].copy_from_slice(&ev.family.to_le_bytes());
    b[OFF_FLAGS..OFF_FLAGS + 2].copy_from_slice(&ev.flags.to_le_bytes());
    b[OFF_COMM..OFF_COMM + 16].copy_from_slice(&ev.comm);
    b
}

/// A kernel `comm` buffer as text: up to the first NUL, invalid UTF-8 replaced.
pub fn comm_str(comm: &[u8; 16]) -> Cow<'_, str> {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end])
}

/// The event's task name (see [`comm_str`]).
pub fn comm(ev: &RawEvent) -> Cow<'_, str> {
    comm_str(&ev.comm)
}

/// Builds a `comm` buffer from a name (truncated to 15 bytes + NUL, as the kernel does).
#[cfg(feature = "test-hooks")]
pub fn comm_bytes(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The peer address of an event, or `None` when the family is neither
/// `AF_INET` nor `AF_INET6` (not filled in by the probe).
pub fn peer_of(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The event's peer address (see [`peer_of`]).
pub fn peer(ev: &RawEvent) -> Option<SocketAddr> {
    peer_of(ev.family, &ev.peer_addr, ev.peer_port)
}

/// Short name of an event kind, for diagnostics.
pub fn kind_name(kind: u32) -> &'static str {
    use herdtrace_common::*;
    match kind {
        EV_ARRIVAL => "arrival",
        EV_WAKE => "wake",
        EV_EPOLL_CB => "epoll_cb",
        EV_POLL_RET => "poll_ret",
        EV_SEND_EVENTS => "send_events",
        EV_ACCEPT_RET => "accept_ret",
        EV_TASK_NEW => "task_new",
        EV_TASK_EXIT => "task_exit",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use herdtrace_common::{EV_ACCEPT_RET, EV_ARRIVAL, EV_TASK_EXIT};
    use proptest::prelude::*;

    fn sample() -> RawEvent {
        RawEvent {
            kind: EV_ACCEPT_RET,
            cpu: 3,
            ts_ns: 0x0102_0304_0506_0708,
            seq: 0x1112_1314_1516_1718,
            tgid: 0x2122_2324,
            tid: 0x3132_3334,
            chain: 0x4142_4344_4546_4748,
            sk: 0x5152_5354_5556_5758,
            child: 0x6162_6364_6566_6768,
            ret: -11,
            aux: 0x7172_7374_7576_7778,
            peer_addr: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            peer_port: 0x8182,
            local_port: 0x9192,
            family: AF_INET6,
            flags: 0xa1a2,
            comm: comm_bytes("nginx"),
        }
    }

    #[test]
    fn offsets_match_repr_c_layout() {
        assert_eq!(offset_of!(RawEvent, kind), OFF_KIND);
        assert_eq!(offset_of!(RawEvent, cpu), OFF_CPU);
        assert_eq!(offset_of!(RawEvent, ts_ns), OFF_TS);
        assert_eq!(offset_of!(RawEvent, seq), OFF_SEQ);
        assert_eq!(offset_of!(RawEvent, tgid), OFF_TGID);
        assert_eq!(offset_of!(RawEvent, tid), OFF_TID);
        assert_eq!(offset_of!(RawEvent, chain), OFF_CHAIN);
        assert_eq!(offset_of!(RawEvent, sk), OFF_SK);
        assert_eq!(offset_of!(RawEvent, child), OFF_CHILD);
        assert_eq!(offset_of!(RawEvent, ret), OFF_RET);
        assert_eq!(offset_of!(RawEvent, aux), OFF_AUX);
        assert_eq!(offset_of!(RawEvent, peer_addr), OFF_PEER_ADDR);
        assert_eq!(offset_of!(RawEvent, peer_port), OFF_PEER_PORT);
        assert_eq!(offset_of!(RawEvent, local_port), OFF_LOCAL_PORT);
        assert_eq!(offset_of!(RawEvent, family), OFF_FAMILY);
        assert_eq!(offset_of!(RawEvent, flags), OFF_FLAGS);
        assert_eq!(offset_of!(RawEvent, comm), OFF_COMM);
        assert_eq!(OFF_COMM + 16, RAW_EVENT_SIZE);
    }

    #[test]
    fn decode_reads_little_endian_fields_at_their_offsets() {
        let mut b = [0u8; RAW_EVENT_SIZE];
        b[0] = EV_ARRIVAL as u8;
        b[OFF_TS..OFF_TS + 8].copy_from_slice(&[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]);
        b[OFF_RET..OFF_RET + 8].copy_from_slice(&[0xff; 8]);
        b[OFF_LOCAL_PORT] = 0x90;
        b[OFF_LOCAL_PORT + 1] = 0x1f;
        let ev = decode(&b).expect("valid event");
        assert_eq!(ev.kind, EV_ARRIVAL);
        assert_eq!(ev.ts_ns, 0x0102_0304_0506_0708);
        assert_eq!(ev.ret, -1);
        assert_eq!(ev.local_port, 8080);
        assert_eq!(ev.sk, 0);
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let ev = sample();
        assert_eq!(decode(&encode(&ev)), Ok(ev));
    }

    #[test]
    fn decode_rejects_wrong_length() {
        let b = encode(&sample());
        assert_eq!(decode(&b[..111]), Err(DecodeError::WrongLength(111)));
        assert_eq!(decode(&[]), Err(DecodeError::WrongLength(0)));
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::WrongLength(113)));
    }

    #[test]
    fn decode_rejects_kind_zero_and_above_max() {
        let mut ev = sample();
        ev.kind = 0;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::BadKind(0)));
        ev.kind = EV_MAX + 1;
        assert_eq!(decode(&encode(&ev)), Err(DecodeError::BadKind(EV_MAX + 1)));
        ev.kind = EV_TASK_EXIT;
        assert!(decode(&encode(&ev)).is_ok());
    }

    #[test]
    fn decode_error_messages_are_one_line() {
        assert_eq!(
            DecodeError::WrongLength(3).to_string(),
            "event is 3 bytes, expected 112"
        );
        assert_eq!(
            DecodeError::BadKind(42).to_string(),
            "unknown event kind 42 (known: 1..=8)"
        );
    }

    #[test]
    fn comm_stops_at_nul_and_is_lossy() {
        assert_eq!(comm_str(&comm_bytes("lighttpd")), "lighttpd");
        let full = *b"0123456789abcdef";
        assert_eq!(comm_str(&full), "0123456789abcdef");
        let mut bad = [0u8; 16];
        bad[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(comm_str(&bad), "a\u{fffd}b");
        assert_eq!(comm_str(&[0u8; 16]), "");
        assert_eq!(comm_bytes("a-very-long-thread-name"), *b"a-very-long-thr\0");
    }

    #[test]
    fn peer_follows_family() {
        let mut ev = sample();
        ev.family = AF_INET;
        ev.peer_addr = [127, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        ev.peer_port = 53412;
        assert_eq!(peer(&ev), Some("127.0.0.1:53412".parse().expect("addr")));
        ev.family = AF_INET6;
        ev.peer_addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(peer(&ev), Some("[::1]:53412".parse().expect("addr")));
        ev.family = 0;
        assert_eq!(peer(&ev), None);
    }

    #[test]
    fn kind_names_cover_every_kind() {
        for k in 1..=EV_MAX {
            assert_ne!(kind_name(k), "unknown", "kind {k}");
        }
        assert_eq!(kind_name(0), "unknown");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match decode(&bytes) {
                Ok(ev) => prop_assert_eq!(encode(&ev).to_vec(), bytes),
                Err(DecodeError::WrongLength(n)) => prop_assert_eq!(n, bytes.len()),
                Err(DecodeError::BadKind(k)) => prop_assert!(k == 0 || k > EV_MAX),
            }
        }

        #[test]
        fn valid_events_roundtrip(kind in 1..=EV_MAX, rest in proptest::collection::vec(any::<u8>(), RAW_EVENT_SIZE - 4)) {
            let mut b = kind.to_le_bytes().to_vec();
            b.extend_from_slice(&rest);
            let ev = decode(&b).expect("valid kind");
            prop_assert_eq!(encode(&ev).to_vec(), b);
        }
    }
}
