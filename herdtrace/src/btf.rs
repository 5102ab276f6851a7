//! A minimal reader for raw kernel BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya-ebpf emits no CO-RE relocations, so the eBPF programs get the byte
//! offsets of the kernel struct members they read from user space; this module
//! finds them. It only answers the few questions herdtrace asks (member
//! offsets, function presence and arity) and never panics on bad input.
//!
//! Layout reference: the kernel's `Documentation/bpf/btf.rst`.
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xEB9F;
/// Typedef name prefix of the kernel's BTF tracepoints.
const BTF_TRACE_PREFIX: &str = "btf_trace_";
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;
/// Guards recursion over typedef chains and anonymous members, so a corrupt
/// (cyclic) BTF cannot loop forever or overflow the stack.
const MAX_DEPTH: usize = 64;

/// A BTF type kind (`BTF_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Kind> {
        Some(match raw {
            0 => Kind::Void,
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte `btf_type` record for this kind.
    fn trailing_len(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

/// One type record; trailing data stays in the raw bytes and is read on demand.
#[derive(Debug, Clone, Copy)]
struct TypeRec {
    name_off: u32,
    kind: Kind,
    kind_flag: bool,
    vlen: u16,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT, else the referenced type id.
    size_type: u32,
    /// Absolute offset of the trailing data in `Btf::data`.
    extra: usize,
}

/// A struct/union member found by [`Btf::member`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Offset from the start of the outer struct, in bits.
    pub bit_offset: u32,
    /// Bitfield width in bits, 0 for an ordinary member.
    pub bitfield_size: u32,
    /// BTF type id of the member.
    pub type_id: u32,
}

#[derive(Debug, Default)]
struct NameIndex {
    /// STRUCT and UNION ids by name (names can repeat, e.g. one per module).
    composites: HashMap<String, Vec<u32>>,
    /// FUNC ids by name (first one wins).
    funcs: HashMap<String, u32>,
    /// `btf_trace_<event>` typedefs (their ids): the BTF tracepoints this
    /// kernel has.
    btf_trace: HashMap<String, u32>,
}

/// Parsed BTF: type records indexed by type id (id 0 is `void`).
#[derive(Debug)]
pub struct Btf {
    data: Vec<u8>,
    big_endian: bool,
    str_start: usize,
    str_len: usize,
    types: Vec<TypeRec>,
    names: OnceLock<NameIndex>,
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn load_vmlinux() -> anyhow::Result<Btf> {
        if crate::kernel::simulated_missing().btf() {
            bail!(
                "no {VMLINUX_BTF} (treated as missing: {}=btf)",
                crate::kernel::MISSING_ENV
            );
        }
        Btf::load(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a raw BTF file.
    pub fn load(path: &Path) -> anyhow::Result<Btf> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Btf::parse(data).with_context(|| format!("parsing BTF from {}", path.display()))
    }

    /// Parses raw BTF bytes (header, type section, string section).
    pub fn parse(data: Vec<u8>) -> anyhow::Result<Btf> {
        ensure!(
            data.len() >= HEADER_LEN,
            "truncated BTF: {} bytes, the header alone is {HEADER_LEN}",
            data.len()
        );
        let big_endian = match [data[0], data[1]] {
            m if u16::from_le_bytes(m) == BTF_MAGIC => false,
            m if u16::from_be_bytes(m) == BTF_MAGIC => true,
            m => bail!("not BTF: bad magic {:#06x}", u16::from_le_bytes(m)),
        };
        ensure!(data[2] == 1, "unsupported BTF version {}", data[2]);
        let rd = |off: usize| read_u32(&data, off, big_endian).unwrap_or(0);
        let hdr_len = rd(4) as usize;
        let (type_off, type_len) = (rd(8) as usize, rd(12) as usize);
        let (str_off, str_len) = (rd(16) as usize, rd(20) as usize);
        ensure!(
            hdr_len >= HEADER_LEN && hdr_len <= data.len(),
            "corrupt BTF: header length {hdr_len} outside 24..={}",
            data.len()
        );
        let section = |off: usize, len: usize, what: &str| -> anyhow::Result<usize> {
            let start = hdr_len
                .checked_add(off)
                .filter(|s| s.checked_add(len).is_some_and(|end| end <= data.len()));
            start.with_context(|| {
                format!(
                    "truncated BTF: {what} section {off}+{len} ends past the {} bytes after the header",
                    data.len() - hdr_len
                )
            })
        };
        let type_start = section(type_off, type_len, "type")?;
        let str_start = section(str_off, str_len, "string")?;
        ensure!(
            str_len > 0 && data[str_start] == 0,
            "corrupt BTF: string section must start with an empty string"
        );

        let mut types = vec![TypeRec {
            name_off: 0,
            kind: Kind::Void,
            kind_flag: false,
            vlen: 0,
            size_type: 0,
            extra: 0,
        }];
        let type_end = type_start + type_len;
        let mut pos = type_start;
        while pos < type_end {
            let id = types.len();
            ensure!(
                type_end - pos >= TYPE_LEN,
                "truncated BTF: type {id} record cut short"
            );
            let name_off = rd(pos);
            let info = rd(pos + 4);
            let size_type = rd(pos + 8);
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .filter(|k| *k != Kind::Void)
                .with_context(|| format!("corrupt BTF: type {id} has unknown kind {raw_kind}"))?;
            ensure!(
                (name_off as usize) < str_len,
                "corrupt BTF: type {id} name offset {name_off} outside the string section"
            );
            let vlen = (info & 0xffff) as u16;
            let extra = pos + TYPE_LEN;
            let next = extra + kind.trailing_len(vlen as usize);
            ensure!(
                next <= type_end,
                "truncated BTF: type {id} ({kind:?}, vlen {vlen}) runs past the type section"
            );
            types.push(TypeRec {
                name_off,
                kind,
                kind_flag: info >> 31 == 1,
                vlen,
                size_type,
                extra,
            });
            pos = next;
        }
        Ok(Btf {
            data,
            big_endian,
            str_start,
            str_len,
            types,
            names: OnceLock::new(),
        })
    }

    /// Number of types including the implicit `void` (id 0).
    #[cfg(test)]
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// Kind of a type id, `None` if the id does not exist.
    pub fn kind(&self, id: u32) -> Option<Kind> {
        self.types.get(id as usize).map(|t| t.kind)
    }

    /// Name of a type id (`""` for anonymous types).
    #[cfg(test)]
    pub fn type_name(&self, id: u32) -> Option<&str> {
        let t = self.types.get(id as usize)?;
        std::str::from_utf8(self.name_bytes(t.name_off)?).ok()
    }

    /// Whether a `struct NAME` (not a union, not a forward declaration) exists.
    pub fn struct_exists(&self, name: &str) -> bool {
        self.composites(name)
            .iter()
            .any(|&id| self.kind(id) == Some(Kind::Struct))
    }

    /// Size in bytes of the struct or union `name`.
    #[cfg(test)]
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        let id = *self.composites(name).first()?;
        Some(self.types[id as usize].size_type)
    }

    /// Whether the kernel has BTF tracepoint `event` (a `btf_trace_<event>`
    /// typedef, which is what a BTF tracepoint program attaches by).
    pub fn has_btf_tracepoint(&self, event: &str) -> bool {
        self.index().btf_trace.contains_key(event)
    }

    /// The arguments BTF tracepoint `event` passes its programs: the
    /// parameters of its `btf_trace_<event>` prototype but the first (the
    /// tracepoint's own data pointer). Their number tells the versions of
    /// an event whose arguments changed apart.
    pub fn btf_tracepoint_params(&self, event: &str) -> Option<usize> {
        let typedef = self
            .types
            .get(*self.index().btf_trace.get(event)? as usize)?;
        let ptr = self.types.get(typedef.size_type as usize)?;
        if ptr.kind != Kind::Ptr {
            return None;
        }
        let proto = self.types.get(ptr.size_type as usize)?;
        if proto.kind != Kind::FuncProto {
            return None;
        }
        (proto.vlen as usize).checked_sub(1)
    }

    /// Whether a function (BTF_KIND_FUNC) of this exact name exists.
    #[cfg(test)]
    pub fn has_func(&self, name: &str) -> bool {
        self.index().funcs.contains_key(name)
    }

    /// Number of parameters of function `name` (a trailing `...` is not counted).
    pub fn func_param_count(&self, name: &str) -> Option<usize> {
        let func = self.types[*self.index().funcs.get(name)? as usize];
        let proto = self.types.get(func.size_type as usize)?;
        if proto.kind != Kind::FuncProto {
            return None;
        }
        let n = proto.vlen as usize;
        let Some(last_index) = n.checked_sub(1) else {
            return Some(0);
        };
        // A variadic prototype ends with a param of name 0 and type 0.
        let last = proto.extra + 8 * last_index;
        let variadic = self.u32(last) == Some(0) && self.u32(last + 4) == Some(0);
        Some(if variadic { last_index } else { n })
    }

    /// Byte offset of `path` (dotted, e.g. `"icsk_accept_queue.rskq_accept_tail"`)
    /// inside struct or union `struct_name`. Members of anonymous nested
    /// structs/unions are found as if they were direct members. `None` if a
    /// segment is missing or the member is not byte-aligned (a bitfield).
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Option<u32> {
        let m = self.member(struct_name, path)?;
        (m.bit_offset % 8 == 0).then_some(m.bit_offset / 8)
    }

    /// Like [`Btf::member_offset`] but with bit offset, bitfield width and type.
    pub fn member(&self, struct_name: &str, path: &str) -> Option<Member> {
        self.composites(struct_name)
            .iter()
            .find_map(|&id| self.member_in(id, path))
    }

    fn member_in(&self, struct_id: u32, path: &str) -> Option<Member> {
        let mut current = struct_id;
        let mut found: Option<Member> = None;
        for segment in path.split('.') {
            if segment.is_empty() {
                return None;
            }
            let comp = self.resolve(current)?;
            let m = self.find_member(comp, segment.as_bytes(), 0)?;
            let base = found.map_or(0, |f| f.bit_offset);
            found = Some(Member {
                bit_offset: base.checked_add(m.bit_offset)?,
                ..m
            });
            current = m.type_id;
        }
        found
    }

    /// Finds `name` among the members of composite `id`, descending into
    /// anonymous struct/union members. Offsets are relative to `id`.
    fn find_member(&self, id: u32, name: &[u8], depth: usize) -> Option<Member> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.types.get(id as usize)?;
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            return None;
        }
        for i in 0..t.vlen as usize {
            let at = t.extra + 12 * i;
            let (name_off, type_id, raw_off) =
                (self.u32(at)?, self.u32(at + 4)?, self.u32(at + 8)?);
            // With kind_flag the offset word packs bitfield size (high 8) and bit offset.
            let (bit_offset, bitfield_size) = if t.kind_flag {
                (raw_off & 0x00ff_ffff, raw_off >> 24)
            } else {
                (raw_off, 0)
            };
            let member_name = self.name_bytes(name_off)?;
            if member_name == name {
                return Some(Member {
                    bit_offset,
                    bitfield_size,
                    type_id,
                });
            }
            if member_name.is_empty() {
                let Some(inner) = self.resolve(type_id) else {
                    continue;
                };
                if let Some(m) = self.find_member(inner, name, depth + 1) {
                    return Some(Member {
                        bit_offset: bit_offset.checked_add(m.bit_offset)?,
                        ..m
                    });
                }
            }
        }
        None
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags).
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            let t = self.types.get(id as usize)?;
            match t.kind {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_type
                }
                _ => return Some(id),
            }
        }
        None
    }

    fn composites(&self, name: &str) -> &[u32] {
        self.index()
            .composites
            .get(name)
            .map_or(&[], |v| v.as_slice())
    }

    /// The name index, built on first use and only for the kinds we look up
    /// by name, so parsing stays a single cheap pass.
    fn index(&self) -> &NameIndex {
        self.names.get_or_init(|| {
            let mut index = NameIndex::default();
            for (id, t) in self.types.iter().enumerate() {
                if !matches!(
                    t.kind,
                    Kind::Struct | Kind::Union | Kind::Func | Kind::Typedef
                ) || t.name_off == 0
                {
                    continue;
                }
                let Some(name) = self
                    .name_bytes(t.name_off)
                    .and_then(|b| std::str::from_utf8(b).ok())
                else {
                    continue;
                };
                if t.kind == Kind::Typedef {
                    if let Some(event) = name.strip_prefix(BTF_TRACE_PREFIX) {
                        index.btf_trace.insert(event.to_owned(), id as u32);
                    }
                } else if t.kind == Kind::Func {
                    index.funcs.entry(name.to_owned()).or_insert(id as u32);
                } else {
                    index
                        .composites
                        .entry(name.to_owned())
                        .or_default()
                        .push(id as u32);
                }
            }
            index
        })
    }

    fn name_bytes(&self, off: u32) -> Option<&[u8]> {
        let off = off as usize;
        if off >= self.str_len {
            return None;
        }
        let strings = &self.data[self.str_start + off..self.str_start + self.str_len];
        let end = strings.iter().position(|&b| b == 0)?;
        Some(&strings[..end])
    }

    fn u32(&self, off: usize) -> Option<u32> {
        read_u32(&self.data, off, self.big_endian)
    }
}

fn read_u32(data: &[u8], off: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

/// Declares [`KernelOffsets`] from one table, so the struct, its BTF lookup,
/// the list of lost metrics and the eBPF programs' `Config` cannot drift
/// apart: each field has the name of the `Config` member it fills.
macro_rules! kernel_offsets {
    ($( $(#[$doc:meta])* $field:ident: $strukt:literal, $path:literal, $need:ident, lost: $lost:literal; )*) => {
        /// Byte offsets of the kernel struct members the eBPF programs read,
        /// taken from the running kernel's BTF. A `None` member is absent on
        /// this kernel: [`KernelOffsets::missing`] says which metric is lost.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct KernelOffsets {
            $( $(#[$doc])* pub $field: Option<u32>, )*
        }

        impl KernelOffsets {
            /// Looks every member up in `btf`. Fails only when `btf` is not a
            /// kernel BTF at all; single missing members become `None`.
            pub fn from_btf(btf: &Btf) -> anyhow::Result<KernelOffsets> {
                ensure!(
                    btf.struct_exists("task_struct"),
                    "BTF has no struct task_struct: not a kernel (vmlinux) BTF"
                );
                Ok(KernelOffsets {
                    // `a|b`: the first path this kernel has (a member that moved).
                    $( $field: $path.split('|').find_map(|p| btf.member_offset($strukt, p)), )*
                })
            }

            /// The offset slot of `member` (`"struct.path"`), if it is one.
            #[cfg(feature = "test-hooks")]
            pub fn slot_mut(&mut self, member: &str) -> Option<&mut Option<u32>> {
                $( if member == concat!($strukt, ".", $path) {
                    return Some(&mut self.$field);
                } )*
                None
            }

            /// Every member: `(field, "struct.path", offset, required, metric lost if missing)`.
            pub fn entries(&self) -> Vec<OffsetEntry> {
                vec![ $( OffsetEntry {
                    field: stringify!($field),
                    member: concat!($strukt, ".", $path),
                    offset: self.$field,
                    required: Need::$need == Need::Required,
                    lost: $lost,
                }, )* ]
            }

            /// Writes every offset into the programs' configuration (0 for a
            /// missing member: the programs then skip what needs it).
            pub fn apply(&self, config: &mut herdtrace_common::Config) {
                $( config.$field = self.$field.unwrap_or(0); )*
                config.sock_common_head_packed = u32::from(self.sock_common_head_packed());
                config.fdtable_packed = u32::from(self.fdtable_packed());
            }
        }
    };
}

#[derive(PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// One row of [`KernelOffsets::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Field name in [`KernelOffsets`] and in the programs' `Config`.
    pub field: &'static str,
    /// `struct.member.path` as looked up in BTF.
    pub member: &'static str,
    pub offset: Option<u32>,
    /// Every backend needs it: without it no backend runs.
    pub required: bool,
    /// What herdtrace cannot report without this member.
    pub lost: &'static str,
}

kernel_offsets! {
    /// `task_struct.pid` (thread id of a woken or forked task).
    task_struct_pid: "task_struct", "pid", Required, lost: "thread id of woken tasks";
    /// `task_struct.tgid` (process of a forked task).
    task_struct_tgid: "task_struct", "tgid", Required, lost: "process of forked tasks";
    /// `task_struct.comm` (name of a woken task, BTF tracepoint).
    task_struct_comm: "task_struct", "comm", Optional, lost: "names of woken tasks";
    task_struct_files: "task_struct", "files", Optional, lost: "listener/child socket of each accept (fd lookup)";
    files_struct_fdt: "files_struct", "fdt", Optional, lost: "listener/child socket of each accept (fd lookup)";
    fdtable_max_fds: "fdtable", "max_fds", Optional, lost: "listener/child socket of each accept (fd lookup)";
    fdtable_fd: "fdtable", "fd", Optional, lost: "listener/child socket of each accept (fd lookup)";
    /// `file.private_data` (the `struct socket` of a socket file, the `eventpoll` of an epoll file).
    file_private_data: "file", "private_data", Required, lost: "listener/child socket of each accept";
    socket_sk: "socket", "sk", Required, lost: "listener/child socket of each accept";
    /// `sock.__sk_common.skc_daddr` (IPv4 peer address).
    sock_common_skc_daddr: "sock", "__sk_common.skc_daddr", Optional, lost: "IPv4 peer address of connections";
    /// `sock.__sk_common.skc_rcv_saddr` (IPv4 local address: which listener).
    sock_common_skc_rcv_saddr: "sock", "__sk_common.skc_rcv_saddr", Optional, lost: "telling listeners on the same port apart by address";
    /// `sock.__sk_common.skc_dport` (peer port, network order).
    sock_common_skc_dport: "sock", "__sk_common.skc_dport", Optional, lost: "peer port of connections";
    /// `sock.__sk_common.skc_num` (local port, host order).
    sock_common_skc_num: "sock", "__sk_common.skc_num", Required, lost: "local port of connections";
    sock_common_skc_family: "sock", "__sk_common.skc_family", Optional, lost: "address family of connections";
    sock_common_skc_state: "sock", "__sk_common.skc_state", Required, lost: "telling listening sockets from others";
    /// Absent without CONFIG_IPV6.
    sock_common_skc_v6_daddr: "sock", "__sk_common.skc_v6_daddr", Optional, lost: "IPv6 peer address of connections";
    /// Absent without CONFIG_IPV6.
    sock_common_skc_v6_rcv_saddr: "sock", "__sk_common.skc_v6_rcv_saddr", Optional, lost: "telling IPv6 listeners on the same port apart by address";
    /// `possible_net_t` holds the `struct net *` (absent without CONFIG_NET_NS: then 0, one namespace).
    sock_common_skc_net: "sock", "__sk_common.skc_net.net", Optional, lost: "telling listeners in different network namespaces apart";
    net_ns_inum: "net", "ns.inum", Optional, lost: "telling listeners in different network namespaces apart";
    /// `inet_connection_sock.icsk_accept_queue.rskq_accept_tail`, from the start of the socket.
    inet_connection_sock_rskq_accept_tail: "inet_connection_sock", "icsk_accept_queue.rskq_accept_tail", Optional,
        lost: "child socket at arrival when no probe names it (matching arrivals to accepts)";
    /// `request_sock.sk` (the child socket of a queued request).
    request_sock_sk: "request_sock", "sk", Optional, lost: "child socket at arrival when no probe names it";
    /// `eppoll_entry.base` (pointer to the epitem).
    eppoll_entry_base: "eppoll_entry", "base", Optional, lost: "epoll instance of each ep_poll_callback";
    /// `eppoll_entry.wait` (the wait entry `ep_poll_callback` receives).
    eppoll_entry_wait: "eppoll_entry", "wait", Optional, lost: "epoll instance of each ep_poll_callback";
    /// `epitem.ffd.file` (the watched file).
    epitem_ffd_file: "epitem", "ffd.file", Optional, lost: "listener of each ep_poll_callback (kprobe/fentry epoll chains)";
    epitem_ep: "epitem", "ep", Optional, lost: "epoll instance of each ep_poll_callback";
    /// `sock.sk_wq` (pointer to the socket's `socket_wq`).
    sock_sk_wq: "sock", "sk_wq", Optional, lost: "recognising a blocking accept's wakeup (kprobe/fentry)";
    /// `socket_wq.wait` (the wait queue head inside `socket_wq`).
    socket_wq_wait: "socket_wq", "wait", Optional, lost: "recognising a blocking accept's wakeup (kprobe/fentry)";
    /// `io_kiocb.opcode` (absent without CONFIG_IO_URING).
    io_kiocb_opcode: "io_kiocb", "opcode", Optional, lost: "telling io_uring accepts from other completions (tracepoint backend, 5.19+)";
    /// `io_kiocb.ctx` (the request's ring; 6.0+ io_uring tracepoints pass the request).
    io_kiocb_ctx: "io_kiocb", "ctx", Optional, lost: "io_uring accepts where the tracepoints pass the request (6.0+)";
    /// The request's tag: `io_kiocb.cqe.user_data` (5.19+), `io_kiocb.user_data` before.
    io_kiocb_user_data: "io_kiocb", "cqe.user_data|user_data", Optional, lost: "io_uring accepts where the tracepoints pass the request (6.0+)";
}

impl KernelOffsets {
    /// The members this kernel lacks, each with the metric it costs.
    pub fn missing(&self) -> Vec<OffsetEntry> {
        self.entries()
            .into_iter()
            .filter(|e| e.offset.is_none())
            .collect()
    }

    /// The first member every backend needs that this kernel lacks.
    pub fn missing_required(&self) -> Option<OffsetEntry> {
        self.missing().into_iter().find(|e| e.required)
    }

    /// `sock_common` starts with daddr (+0), rcv_saddr (+4), dport (+12),
    /// num (+14), family (+16) and state (+18) on every kernel since 2.6, so
    /// the eBPF programs read the 20 bytes in one helper call instead of one
    /// call per field; any other layout falls back to the separate reads.
    pub fn sock_common_head_packed(&self) -> bool {
        let Some(base) = self.sock_common_skc_daddr else {
            return false;
        };
        [
            (self.sock_common_skc_rcv_saddr, 4),
            (self.sock_common_skc_dport, 12),
            (self.sock_common_skc_num, 14),
            (self.sock_common_skc_family, 16),
            (self.sock_common_skc_state, 18),
        ]
        .iter()
        .all(|&(off, rel)| off == Some(base + rel))
    }

    /// `fdtable` starts with `max_fds` and, 8 bytes on, the `fd` array
    /// pointer: one read gets both.
    pub fn fdtable_packed(&self) -> bool {
        matches!(
            (self.fdtable_max_fds, self.fdtable_fd),
            (Some(max), Some(fd)) if fd == max + 8
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes BTF blobs for tests: header + type section + string section.
    #[derive(Default)]
    pub(crate) struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl BtfBuilder {
        pub(crate) fn new() -> Self {
            BtfBuilder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        fn header(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, st: u32) -> u32 {
            let name_off = self.str(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            self.words(&[name_off, info, st]);
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.header(name, 1, false, 0, size);
            self.words(&[size * 8]);
            id
        }
        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.header("", 2, false, 0, to)
        }
        pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.header("", 3, false, 0, 0);
            self.words(&[elem, index, n]);
            id
        }
        /// Members are `(name, type, bit offset)`.
        pub(crate) fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let kind = if union { 5 } else { 4 };
            let id = self.header(name, kind, false, members.len() as u32, size);
            for &(n, t, off) in members {
                let n = self.str(n);
                self.words(&[n, t, off]);
            }
            id
        }
        pub(crate) fn struct_(&mut self, name: &str, size: u32, m: &[(&str, u32, u32)]) -> u32 {
            self.composite(false, name, size, m)
        }
        pub(crate) fn union_(&mut self, name: &str, size: u32, m: &[(&str, u32, u32)]) -> u32 {
            self.composite(true, name, size, m)
        }
        /// A kind_flag struct; members are `(name, type, bit offset, bitfield bits)`.
        pub(crate) fn bitfield_struct(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let id = self.header(name, 4, true, members.len() as u32, size);
            for &(n, t, off, bits) in members {
                let n = self.str(n);
                self.words(&[n, t, (bits << 24) | off]);
            }
            id
        }
        pub(crate) fn enum_(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
            let id = self.header(name, 6, false, values.len() as u32, 4);
            for &(n, v) in values {
                let n = self.str(n);
                self.words(&[n, v]);
            }
            id
        }
        pub(crate) fn fwd(&mut self, name: &str) -> u32 {
            self.header(name, 7, false, 0, 0)
        }
        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.header(name, 8, false, 0, to)
        }
        pub(crate) fn volatile(&mut self, to: u32) -> u32 {
            self.header("", 9, false, 0, to)
        }
        pub(crate) fn const_(&mut self, to: u32) -> u32 {
            self.header("", 10, false, 0, to)
        }
        pub(crate) fn restrict(&mut self, to: u32) -> u32 {
            self.header("", 11, false, 0, to)
        }
        pub(crate) fn func(&mut self, name: &str, proto: u32) -> u32 {
            self.header(name, 12, false, 1, proto)
        }
        /// Params are `(name, type)`; `("", 0)` last means variadic.
        pub(crate) fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
            let id = self.header("", 13, false, params.len() as u32, ret);
            for &(n, t) in params {
                let n = self.str(n);
                self.words(&[n, t]);
            }
            id
        }
        pub(crate) fn var(&mut self, name: &str, ty: u32) -> u32 {
            let id = self.header(name, 14, false, 0, ty);
            self.words(&[1]);
            id
        }
        pub(crate) fn datasec(&mut self, name: &str, vars: &[(u32, u32, u32)]) -> u32 {
            let id = self.header(name, 15, false, vars.len() as u32, 0);
            for &(t, off, size) in vars {
                self.words(&[t, off, size]);
            }
            id
        }
        pub(crate) fn float(&mut self, name: &str, size: u32) -> u32 {
            self.header(name, 16, false, 0, size)
        }
        pub(crate) fn decl_tag(&mut self, name: &str, ty: u32, component: u32) -> u32 {
            let id = self.header(name, 17, false, 0, ty);
            self.words(&[component]);
            id
        }
        pub(crate) fn type_tag(&mut self, name: &str, to: u32) -> u32 {
            self.header(name, 18, false, 0, to)
        }
        pub(crate) fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
            let id = self.header(name, 19, false, values.len() as u32, 8);
            for &(n, v) in values {
                let n = self.str(n);
                self.words(&[n, v as u32, (v >> 32) as u32]);
            }
            id
        }
        /// Appends raw bytes to the type section (for corrupt-input tests).
        pub(crate) fn raw_type_bytes(&mut self, bytes: &[u8]) {
            self.types.extend_from_slice(bytes);
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let words = [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature of the kernel's sock/sock_common layout: anonymous unions
    /// inside anonymous structs, typedef + volatile chains, a bitfield struct,
    /// and every kind whose record size the parser must know.
    fn sample() -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let u8_ = b.int("unsigned char", 1);
        let u16_ = b.int("unsigned short", 2);
        let u32_ = b.int("unsigned int", 4);
        let u64_ = b.int("long long unsigned int", 8);
        let be32 = b.typedef("__be32", u32_);
        let be16 = b.typedef("__be16", u16_);
        let vu8 = b.volatile(u8_);
        // Exercise kinds the queries never use, so their record sizes are skipped right.
        b.enum_("sk_state", &[("TCP_ESTABLISHED", 1), ("TCP_LISTEN", 10)]);
        b.enum64("big", &[("HUGE", 1 << 40)]);
        b.float("double", 8);
        let idx = b.int("int", 4);
        b.array(u8_, idx, 16);
        b.fwd("struct_only_forward");
        let v = b.var("some_var", u32_);
        b.datasec(".data..percpu", &[(v, 0, 4)]);
        let c = b.const_(u32_);
        b.restrict(c);
        b.type_tag("rcu", u64_);
        // union { __addrpair skc_addrpair; struct { __be32 skc_daddr; __be32 skc_rcv_saddr; }; }
        let addr_s = b.struct_(
            "",
            8,
            &[("skc_daddr", be32, 0), ("skc_rcv_saddr", be32, 32)],
        );
        let addr_u = b.union_("", 8, &[("skc_addrpair", u64_, 0), ("", addr_s, 0)]);
        let port_s = b.struct_("", 4, &[("skc_dport", be16, 0), ("skc_num", u16_, 16)]);
        let port_u = b.union_("", 4, &[("skc_portpair", u32_, 0), ("", port_s, 0)]);
        let sc = b.struct_(
            "sock_common",
            16,
            &[
                ("", addr_u, 0),
                ("", port_u, 64),
                ("skc_family", u16_, 96),
                ("skc_state", vu8, 112),
            ],
        );
        b.decl_tag("tagged", sc, u32::MAX);
        let sc_td = b.typedef("sock_common_t", sc);
        let sc_td2 = b.typedef("sock_common_t2", sc_td);
        let sc_c = b.const_(sc_td2);
        let pvoid = b.ptr(0);
        let flags = b.bitfield_struct(
            "flags",
            4,
            &[("a", u32_, 0, 3), ("b", u32_, 3, 5), ("c", u32_, 8, 8)],
        );
        let sock = b.struct_(
            "sock",
            64,
            &[
                ("__sk_common", sc_c, 0),
                ("sk_flags", flags, 128),
                ("sk_wq", pvoid, 192),
            ],
        );
        // struct socket has `struct sock *sk` (a pointer: not descendable).
        let psock = b.ptr(sock);
        b.struct_("socket", 48, &[("state", idx, 0), ("sk", psock, 192)]);
        // A union at top level and a name shared by a FWD that must be ignored.
        b.union_("top_union", 8, &[("x", u32_, 0), ("y", u64_, 0)]);
        let p2 = b.func_proto(idx, &[("wq_head", u64_), ("mode", u32_), ("nr", idx)]);
        b.func("__wake_up_common", p2);
        let p3 = b.func_proto(idx, &[("fmt", u64_), ("", 0)]);
        b.func("printk", p3);
        let p0 = b.func_proto(0, &[]);
        b.func("no_args", p0);
        b.build()
    }

    fn parsed() -> Btf {
        Btf::parse(sample()).expect("sample BTF parses")
    }

    #[test]
    fn parses_every_kind_and_counts_types() {
        let btf = parsed();
        // 39 records written by sample() plus void.
        assert_eq!(btf.type_count(), 40);
        assert_eq!(btf.kind(0), Some(Kind::Void));
        assert_eq!(btf.kind(1), Some(Kind::Int));
        assert_eq!(btf.type_name(1), Some("unsigned char"));
        assert_eq!(btf.kind(9), Some(Kind::Enum64));
        assert_eq!(btf.kind(10), Some(Kind::Float));
        assert_eq!(btf.kind(1000), None);
    }

    #[test]
    fn direct_members() {
        let btf = parsed();
        assert_eq!(btf.member_offset("sock_common", "skc_family"), Some(12));
        assert_eq!(btf.member_offset("sock_common", "skc_state"), Some(14));
        assert_eq!(btf.member_offset("sock", "sk_wq"), Some(24));
        assert_eq!(btf.member_offset("socket", "sk"), Some(24));
        assert_eq!(btf.member_offset("top_union", "y"), Some(0));
    }

    #[test]
    fn anonymous_structs_and_unions_are_transparent() {
        let btf = parsed();
        assert_eq!(btf.member_offset("sock_common", "skc_daddr"), Some(0));
        assert_eq!(btf.member_offset("sock_common", "skc_rcv_saddr"), Some(4));
        assert_eq!(btf.member_offset("sock_common", "skc_addrpair"), Some(0));
        assert_eq!(btf.member_offset("sock_common", "skc_dport"), Some(8));
        assert_eq!(btf.member_offset("sock_common", "skc_num"), Some(10));
        assert_eq!(btf.member_offset("sock_common", "skc_portpair"), Some(8));
    }

    #[test]
    fn dotted_paths_through_typedef_and_const_chains() {
        let btf = parsed();
        // __sk_common is `const sock_common_t2` → typedef → typedef → struct.
        assert_eq!(btf.member_offset("sock", "__sk_common.skc_state"), Some(14));
        assert_eq!(btf.member_offset("sock", "__sk_common.skc_num"), Some(10));
        assert_eq!(btf.member_offset("sock", "sk_flags.c"), Some(17));
        let m = btf.member("sock", "__sk_common.skc_dport").expect("dport");
        assert_eq!(m.bit_offset, 64);
        assert_eq!(btf.type_name(m.type_id), Some("__be16"));
    }

    #[test]
    fn bitfields_with_kind_flag() {
        let btf = parsed();
        let a = btf.member("flags", "a").expect("a");
        assert_eq!((a.bit_offset, a.bitfield_size), (0, 3));
        let b = btf.member("flags", "b").expect("b");
        assert_eq!((b.bit_offset, b.bitfield_size), (3, 5));
        // Not byte-aligned: no byte offset.
        assert_eq!(btf.member_offset("flags", "b"), None);
        let c = btf.member("sock", "sk_flags.c").expect("c");
        assert_eq!((c.bit_offset, c.bitfield_size), (136, 8));
    }

    #[test]
    fn missing_names_and_bad_paths() {
        let btf = parsed();
        assert_eq!(btf.member_offset("sock", "nope"), None);
        assert_eq!(btf.member_offset("nope", "skc_state"), None);
        assert_eq!(btf.member_offset("sock", ""), None);
        assert_eq!(btf.member_offset("sock", "__sk_common."), None);
        assert_eq!(btf.member_offset("sock", ".__sk_common"), None);
        // Cannot descend through a pointer or into a scalar.
        assert_eq!(btf.member_offset("socket", "sk.__sk_common"), None);
        assert_eq!(btf.member_offset("sock", "sk_wq.x"), None);
        // An anonymous member is not addressable by the empty name.
        assert_eq!(btf.member_offset("sock_common", ""), None);
        // A forward declaration is not a struct.
        assert!(!btf.struct_exists("struct_only_forward"));
    }

    #[test]
    fn struct_queries() {
        let btf = parsed();
        assert!(btf.struct_exists("sock"));
        assert!(btf.struct_exists("sock_common"));
        assert!(!btf.struct_exists("top_union"), "a union is not a struct");
        assert!(
            !btf.struct_exists("sock_common_t"),
            "a typedef is not a struct"
        );
        assert!(!btf.struct_exists(""));
        assert_eq!(btf.struct_size("sock"), Some(64));
        assert_eq!(btf.struct_size("top_union"), Some(8));
        assert_eq!(btf.struct_size("missing"), None);
    }

    #[test]
    fn functions_and_arity() {
        let btf = parsed();
        assert!(btf.has_func("__wake_up_common"));
        assert!(!btf.has_func("sock"), "a struct is not a function");
        assert!(!btf.has_func("ep_poll_callback"));
        assert_eq!(btf.func_param_count("__wake_up_common"), Some(3));
        assert_eq!(btf.func_param_count("printk"), Some(1), "`...` not counted");
        assert_eq!(btf.func_param_count("no_args"), Some(0));
        assert_eq!(btf.func_param_count("missing"), None);
    }

    #[test]
    fn big_endian_blob_parses() {
        // Swap every 32-bit word and the 16-bit magic; the string section is bytes.
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.struct_("pair", 8, &[("lo", int, 0), ("hi", int, 32)]);
        let le = b.build();
        let type_len = b.types.len();
        let mut be = le.clone();
        be[0..2].copy_from_slice(&BTF_MAGIC.to_be_bytes());
        for off in (4..HEADER_LEN + type_len).step_by(4) {
            be[off..off + 4].reverse();
        }
        let btf = Btf::parse(be).expect("big-endian parses");
        assert_eq!(btf.member_offset("pair", "hi"), Some(4));
    }

    fn parse_err(data: Vec<u8>) -> String {
        format!("{:#}", Btf::parse(data).expect_err("must be rejected"))
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let good = sample();
        assert!(parse_err(Vec::new()).contains("truncated"));
        assert!(parse_err(good[..10].to_vec()).contains("truncated"));
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert!(parse_err(bad_magic).contains("bad magic"));
        let mut bad_version = good.clone();
        bad_version[2] = 2;
        assert!(parse_err(bad_version).contains("version 2"));
        let mut bad_hdr = good.clone();
        bad_hdr[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_err(bad_hdr).contains("header length"));
        // Sections past the end, including offsets that overflow usize arithmetic.
        assert!(parse_err(good[..good.len() - 1].to_vec()).contains("string section"));
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_err(huge).contains("type section"));
        let mut no_nul = good.clone();
        let str_start =
            HEADER_LEN + u32::from_le_bytes([good[16], good[17], good[18], good[19]]) as usize;
        no_nul[str_start] = b'x';
        assert!(parse_err(no_nul).contains("empty string"));
        // Every truncation of the type section must be an error, never a panic.
        for cut in HEADER_LEN..good.len() {
            let _ = Btf::parse(good[..cut].to_vec());
        }
    }

    #[test]
    fn a_member_that_moved_is_found_at_either_place() {
        let offsets = |cqe_inside: bool| {
            let mut b = BtfBuilder::new();
            let u64_ = b.int("u64", 8);
            b.struct_("task_struct", 8, &[("pid", u64_, 0)]);
            if cqe_inside {
                // 5.19+: the tag inside the request's CQE fields.
                let cqe = b.struct_("io_cqe", 16, &[("user_data", u64_, 0)]);
                b.struct_("io_kiocb", 64, &[("ctx", u64_, 64), ("cqe", cqe, 256)]);
            } else {
                b.struct_(
                    "io_kiocb",
                    64,
                    &[("ctx", u64_, 64), ("user_data", u64_, 384)],
                );
            }
            KernelOffsets::from_btf(&Btf::parse(b.build()).expect("parses")).expect("offsets")
        };
        assert_eq!(offsets(true).io_kiocb_user_data, Some(32));
        assert_eq!(offsets(false).io_kiocb_user_data, Some(48));
        assert_eq!(offsets(false).io_kiocb_ctx, Some(8));
    }

    #[test]
    fn btf_tracepoint_arguments_are_counted_without_the_data_pointer() {
        let mut b = BtfBuilder::new();
        let pvoid = b.ptr(0);
        let u64_ = b.int("u64", 8);
        let int = b.int("int", 4);
        // 7.x: io_uring_complete(ctx, req, cqe); 6.12: seven arguments.
        let new = b.func_proto(0, &[("", pvoid), ("", pvoid), ("", pvoid), ("", pvoid)]);
        let pnew = b.ptr(new);
        b.typedef("btf_trace_io_uring_complete", pnew);
        let task_add = b.func_proto(0, &[("", pvoid), ("", pvoid), ("", int)]);
        let ptask_add = b.ptr(task_add);
        b.typedef("btf_trace_io_uring_task_add", ptask_add);
        let none = b.func_proto(0, &[("", pvoid)]);
        let pnone = b.ptr(none);
        b.typedef("btf_trace_no_args", pnone);
        // Not a pointer to a prototype: no count rather than a wrong one.
        b.typedef("btf_trace_odd", u64_);
        let btf = Btf::parse(b.build()).expect("parses");
        assert_eq!(btf.btf_tracepoint_params("io_uring_complete"), Some(3));
        assert_eq!(btf.btf_tracepoint_params("io_uring_task_add"), Some(2));
        assert_eq!(btf.btf_tracepoint_params("no_args"), Some(0));
        assert_eq!(btf.btf_tracepoint_params("odd"), None);
        assert_eq!(btf.btf_tracepoint_params("missing"), None);
        assert!(btf.has_btf_tracepoint("odd"));
    }

    #[test]
    fn corrupt_type_records() {
        let mut b = BtfBuilder::new();
        b.int("int", 4);
        b.raw_type_bytes(&[0, 0, 0, 0, 0, 0, 0, 31 << 3]); // short record
        assert!(parse_err(b.build()).contains("cut short"));

        let mut b = BtfBuilder::new();
        b.raw_type_bytes(&[0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 0]); // kind 25
        assert!(parse_err(b.build()).contains("unknown kind 25"));

        let mut b = BtfBuilder::new();
        // STRUCT with vlen 3 but no member records.
        b.raw_type_bytes(&[0, 0, 0, 0, 3, 0, 0, 4, 8, 0, 0, 0]);
        assert!(parse_err(b.build()).contains("runs past"));

        let mut b = BtfBuilder::new();
        b.raw_type_bytes(&[0xff, 0xff, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0]); // name past strings
        assert!(parse_err(b.build()).contains("name offset"));
    }

    #[test]
    fn cycles_and_bad_references_do_not_hang() {
        let mut b = BtfBuilder::new();
        // Typedef 1 → 2 → 1: a cycle; struct member of that type.
        b.typedef("a", 2);
        b.typedef("b", 1);
        b.struct_("s", 8, &[("m", 1, 0), ("", 1, 0), ("dangling", 999, 32)]);
        // Anonymous member pointing at its own struct: recursion must stop.
        b.struct_("self_ref", 8, &[("", 4, 0)]);
        let btf = Btf::parse(b.build()).expect("structurally valid");
        assert_eq!(btf.member_offset("s", "m"), Some(0));
        assert_eq!(btf.member_offset("s", "m.x"), None);
        assert_eq!(btf.member_offset("s", "dangling"), Some(4));
        assert_eq!(btf.member_offset("s", "dangling.x"), None);
        assert_eq!(btf.member_offset("self_ref", "x"), None);
    }

    #[test]
    fn func_pointing_at_non_proto() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.func("odd", int);
        b.func("dangling", 77);
        let btf = Btf::parse(b.build()).expect("parses");
        assert!(btf.has_func("odd"));
        assert_eq!(btf.func_param_count("odd"), None);
        assert_eq!(btf.func_param_count("dangling"), None);
    }

    #[test]
    fn kernel_offsets_from_miniature() {
        let btf = parsed();
        let off = KernelOffsets::from_btf(&btf);
        let err = format!("{:#}", off.expect_err("no task_struct"));
        assert!(err.contains("task_struct"), "{err}");

        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.struct_(
            "task_struct",
            64,
            &[("pid", int, 32 * 8), ("tgid", int, 33 * 8)],
        );
        let btf = Btf::parse(b.build()).expect("parses");
        let off = KernelOffsets::from_btf(&btf).expect("has task_struct");
        assert_eq!(off.task_struct_pid, Some(32));
        assert_eq!(off.task_struct_tgid, Some(33));
        assert_eq!(off.socket_sk, None);
        let missing: Vec<_> = off.missing().iter().map(|e| e.member).collect();
        assert!(missing.contains(&"socket.sk"));
        assert!(missing.contains(&"epitem.ffd.file"));
        assert!(!missing.contains(&"task_struct.pid"));
        assert_eq!(missing.len(), off.entries().len() - 2);
        assert!(off.missing().iter().all(|e| !e.lost.is_empty()));
    }

    /// Reads the running kernel's BTF. Skips (with a printed reason) when the
    /// kernel has none, except under CI=true where the BTF must be there.
    fn host_btf() -> Option<Btf> {
        if !Path::new(VMLINUX_BTF).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {VMLINUX_BTF} is missing"
            );
            eprintln!("skipped: {VMLINUX_BTF} not present (kernel without CONFIG_DEBUG_INFO_BTF)");
            return None;
        }
        let start = std::time::Instant::now();
        let btf = Btf::load_vmlinux().expect("the running kernel's BTF parses");
        eprintln!("parsed {} types in {:?}", btf.type_count(), start.elapsed());
        Some(btf)
    }

    #[test]
    fn host_vmlinux_btf_has_the_members_herdtrace_reads() {
        let Some(btf) = host_btf() else { return };
        assert!(btf.type_count() > 10_000, "suspiciously small vmlinux BTF");
        for (strukt, path) in [
            ("task_struct", "tgid"),
            ("task_struct", "pid"),
            ("sock_common", "skc_state"),
            ("sock_common", "skc_dport"),
            ("files_struct", "fdt"),
            ("fdtable", "fd"),
            ("file", "private_data"),
            ("socket", "sk"),
            ("eppoll_entry", "wait"),
            ("epitem", "ffd"),
            ("inet_connection_sock", "icsk_accept_queue"),
        ] {
            let size = btf.struct_size(strukt).expect(strukt);
            let off = btf
                .member_offset(strukt, path)
                .unwrap_or_else(|| panic!("{strukt}.{path} missing"));
            assert!(off < size, "{strukt}.{path} = {off} outside size {size}");
        }
        assert!(btf.struct_exists("task_struct"));
        assert!(!btf.struct_exists("no_such_struct_herdtrace"));
        assert!(btf.has_func("ep_poll_callback"));
        // Both arities the tracer distinguishes are within the known forms.
        let wake = btf
            .func_param_count("__wake_up_common")
            .expect("__wake_up_common");
        assert!(wake == 5 || wake == 6, "__wake_up_common has {wake} params");
        let accept = btf
            .func_param_count("inet_csk_accept")
            .expect("inet_csk_accept");
        assert!(
            accept == 2 || accept == 4,
            "inet_csk_accept has {accept} params"
        );
    }

    #[test]
    fn host_kernel_offsets_are_sane() {
        let Some(btf) = host_btf() else { return };
        let off = KernelOffsets::from_btf(&btf).expect("vmlinux BTF is a kernel BTF");
        for e in off.entries() {
            // CONFIG_IPV6 and CONFIG_NET_NS are the only members a
            // supported kernel may lack.
            if (e.field.contains("v6") || e.field.contains("net")) && e.offset.is_none() {
                continue;
            }
            let value = e.offset.unwrap_or_else(|| panic!("{} missing", e.member));
            let strukt = e.member.split('.').next().expect("struct name");
            let size = btf.struct_size(strukt).expect(strukt);
            assert!(value < size, "{} = {value} outside size {size}", e.member);
        }
        // sock_common is the first member of sock, and skc_daddr the first of sock_common;
        // everything else sits past the start of its struct.
        assert_eq!(off.sock_common_skc_daddr, Some(0));
        for (name, v) in [
            ("task_struct_pid", off.task_struct_pid),
            ("task_struct_tgid", off.task_struct_tgid),
            ("task_struct_comm", off.task_struct_comm),
            ("task_struct_files", off.task_struct_files),
            ("socket_sk", off.socket_sk),
            ("skc_state", off.sock_common_skc_state),
            ("skc_num", off.sock_common_skc_num),
            ("skc_dport", off.sock_common_skc_dport),
            ("skc_rcv_saddr", off.sock_common_skc_rcv_saddr),
            ("skc_net", off.sock_common_skc_net),
            ("net_ns_inum", off.net_ns_inum),
            (
                "rskq_accept_tail",
                off.inet_connection_sock_rskq_accept_tail,
            ),
            ("sock_sk_wq", off.sock_sk_wq),
            ("epitem_ffd_file", off.epitem_ffd_file),
            ("eppoll_entry_base", off.eppoll_entry_base),
        ] {
            assert!(v.is_some_and(|v| v > 0), "{name} = {v:?}");
        }
        // Adjacent members keep their declared order.
        assert_eq!(
            off.task_struct_tgid
                .zip(off.task_struct_pid)
                .map(|(t, p)| t - p),
            Some(4)
        );
        assert_eq!(
            off.sock_common_skc_num
                .zip(off.sock_common_skc_dport)
                .map(|(n, d)| n - d),
            Some(2)
        );
        // The nested path adds the two offsets.
        let queue = btf.member_offset("inet_connection_sock", "icsk_accept_queue");
        let tail = btf.member_offset("request_sock_queue", "rskq_accept_tail");
        assert_eq!(
            off.inet_connection_sock_rskq_accept_tail,
            queue.zip(tail).map(|(q, t)| q + t)
        );
        // The running kernel has the layouts the eBPF programs read in one call.
        assert!(off.sock_common_head_packed(), "{off:?}");
        assert!(off.fdtable_packed(), "{off:?}");
        // The io_uring request's ring and tag (the BTF io_uring programs).
        assert!(off.io_kiocb_ctx.is_some() && off.io_kiocb_user_data.is_some());
        assert_eq!(
            off.io_kiocb_user_data,
            btf.member_offset("io_kiocb", "cqe.user_data")
        );
        // It has the BTF tracepoints the probe table prefers.
        for event in crate::probes::btf_tracepoints() {
            if event == "io_uring_submit_sqe" {
                continue; // 6.1's name (io_uring_submit_req since)
            }
            assert!(btf.has_btf_tracepoint(event), "btf_trace_{event}");
        }
        assert!(!btf.has_btf_tracepoint("no_such_event_herdtrace"));
        // Every offset lands in the programs' configuration under its own name.
        let mut config = herdtrace_common::Config::default();
        off.apply(&mut config);
        assert_eq!(Some(config.task_struct_pid), off.task_struct_pid);
        assert_eq!(Some(config.socket_wq_wait), off.socket_wq_wait);
        assert_eq!(config.sock_common_head_packed, 1);
    }

    fn sock_and_fdtable(head: [Option<u32>; 6], fdt: [Option<u32>; 2]) -> KernelOffsets {
        KernelOffsets {
            sock_common_skc_daddr: head[0],
            sock_common_skc_rcv_saddr: head[1],
            sock_common_skc_dport: head[2],
            sock_common_skc_num: head[3],
            sock_common_skc_family: head[4],
            sock_common_skc_state: head[5],
            fdtable_max_fds: fdt[0],
            fdtable_fd: fdt[1],
            ..KernelOffsets::default()
        }
    }

    #[test]
    fn packed_layouts_are_recognised_and_anything_else_falls_back() {
        let fdt = [Some(0), Some(8)];
        let usual = [Some(0), Some(4), Some(12), Some(14), Some(16), Some(18)];
        assert!(sock_and_fdtable(usual, fdt).sock_common_head_packed());
        // The block may start anywhere as long as the members keep their places.
        let shifted = [Some(8), Some(12), Some(20), Some(22), Some(24), Some(26)];
        assert!(sock_and_fdtable(shifted, fdt).sock_common_head_packed());
        for i in 0..6 {
            let mut missing = usual;
            missing[i] = None;
            assert!(
                !sock_and_fdtable(missing, fdt).sock_common_head_packed(),
                "{i}"
            );
            let mut moved = usual;
            moved[i] = usual[i].map(|v| v + 2);
            assert!(
                !sock_and_fdtable(moved, fdt).sock_common_head_packed(),
                "{i}"
            );
        }
        assert!(sock_and_fdtable(usual, fdt).fdtable_packed());
        assert!(sock_and_fdtable(usual, [Some(4), Some(12)]).fdtable_packed());
        assert!(!sock_and_fdtable(usual, [Some(0), Some(16)]).fdtable_packed());
        assert!(!sock_and_fdtable(usual, [None, Some(8)]).fdtable_packed());
        assert!(!sock_and_fdtable(usual, [Some(0), None]).fdtable_packed());
    }
}
