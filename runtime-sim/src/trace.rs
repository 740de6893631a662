//! The trace of a run: a 64-bit FNV-1a hash over every op, reply, I/O effect, completion, timer
//! and fault in order (to prove determinism), and a ring of the last events (to show a failure).
//!
//! Object ids and I/O ids are hashed by content only where that is stable; bulk data is hashed as
//! raw bytes (formatting it would cost more than the rest of the run).

use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt::Write as _;
use truckeefs_core::{Effect, IoRequest, IoResult, IoReply, Op, Reply, RequestId, StagingRequest};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_OFFSET)
    }
}

impl Fnv {
    pub fn bytes(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// One event kept for the failure report.
#[derive(Clone, Debug)]
pub enum Event {
    Op { at_us: u64, id: RequestId, op: Op },
    Reply { at_us: u64, id: RequestId, result: Result<Reply, i32> },
    Io { at_us: u64, request: IoRequest, fault: Option<String> },
    Done { at_us: u64, request: IoRequest, result: IoResult },
    Timeout { at_us: u64 },
    Note { at_us: u64, text: String },
}

pub struct Trace {
    pub hash: Fnv,
    ring: VecDeque<Event>,
    cap: usize,
    pub events: u64,
    /// Print every event to stderr as it happens (`--verbose`).
    pub echo: bool,
}

fn short_bytes(b: &Bytes) -> String {
    if b.len() <= 16 {
        format!("{:?}", b)
    } else {
        format!("<{} bytes {:02x?}..>", b.len(), &b[..8])
    }
}

pub fn op_str(op: &Op) -> String {
    match op {
        Op::Write { ino, fh, offset, data } => format!("Write {{ ino: {ino}, fh: {fh}, offset: {offset}, data: {} }}", short_bytes(data)),
        Op::SetXattr { ino, name, value, flags } => format!(
            "SetXattr {{ ino: {ino}, name: {:?}, value: {}, flags: {flags} }}",
            String::from_utf8_lossy(name),
            short_bytes(value)
        ),
        other => {
            let s = format!("{other:?}");
            // Names are byte vectors: print them readably.
            s
        }
    }
}

fn reply_str(r: &Result<Reply, i32>) -> String {
    match r {
        Ok(Reply::Data(d)) => format!("Ok(Data({}))", short_bytes(d)),
        Ok(Reply::XattrData(d)) => format!("Ok(XattrData({}))", short_bytes(d)),
        Ok(Reply::Dir(entries)) => format!(
            "Ok(Dir[{}])",
            entries.iter().map(|e| format!("{}={}@{}", String::from_utf8_lossy(&e.name), e.ino, e.offset)).collect::<Vec<_>>().join(" ")
        ),
        Ok(Reply::Entry(a)) | Ok(Reply::Attr(a)) => format!(
            "Ok({}(ino {} {:?} size {} perm {:o} nlink {} uid {} gid {}))",
            if matches!(r, Ok(Reply::Entry(_))) { "Entry" } else { "Attr" },
            a.ino,
            a.kind,
            a.size,
            a.perm,
            a.nlink,
            a.uid,
            a.gid
        ),
        Ok(other) => format!("Ok({other:?})"),
        Err(e) => format!("Err({})", errno_name(*e)),
    }
}

fn request_str(r: &IoRequest) -> String {
    match r {
        IoRequest::Staging(StagingRequest::Write { ino, offset, data }) => {
            format!("Staging(Write {{ ino: {ino}, offset: {offset}, data: {} }})", short_bytes(data))
        }
        IoRequest::Meta(truckeefs_core::MetaRequest::Commit(txn)) => {
            let ops: Vec<String> = txn
                .ops
                .iter()
                .map(|o| match o {
                    truckeefs_core::TxnOp::InsertInode(r) => format!("InsertInode({} v{})", r.ino, r.version),
                    truckeefs_core::TxnOp::UpdateInode { row, expect_version } => format!(
                        "UpdateInode({} v{}->v{} size {} nlink {} obj {:?})",
                        row.ino, expect_version, row.version, row.size, row.nlink, row.object
                    ),
                    truckeefs_core::TxnOp::DeleteInode { ino } => format!("DeleteInode({ino})"),
                    truckeefs_core::TxnOp::InsertDentry(d) => {
                        format!("InsertDentry({}/{}={} pos {})", d.parent, String::from_utf8_lossy(&d.name), d.ino, d.pos)
                    }
                    truckeefs_core::TxnOp::DeleteDentry { parent, name, ino } => {
                        format!("DeleteDentry({}/{}={})", parent, String::from_utf8_lossy(name), ino)
                    }
                    truckeefs_core::TxnOp::SetXattr { ino, name, .. } => {
                        format!("SetXattr({ino} {})", String::from_utf8_lossy(name))
                    }
                    truckeefs_core::TxnOp::RemoveXattr { ino, name } => {
                        format!("RemoveXattr({ino} {})", String::from_utf8_lossy(name))
                    }
                })
                .collect();
            format!("Meta(Commit[{}]{})", ops.join(", "), if txn.durable { " durable" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

fn result_str(r: &IoResult) -> String {
    match r {
        Ok(IoReply::Data(d)) => format!("Ok(Data({}))", short_bytes(d)),
        Ok(IoReply::Dir(entries)) => format!("Ok(Dir[{} entries])", entries.len()),
        Ok(other) => {
            let s = format!("Ok({other:?})");
            if s.len() > 200 {
                format!("{}...", &s[..200])
            } else {
                s
            }
        }
        Err(e) => format!("Err({e})"),
    }
}

pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENODATA => "ENODATA",
        libc::ERANGE => "ERANGE",
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EMLINK => "EMLINK",
        libc::EBADF => "EBADF",
        libc::E2BIG => "E2BIG",
        libc::ENODEV => "ENODEV",
        libc::EFBIG => "EFBIG",
        libc::EAGAIN => "EAGAIN",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

impl Event {
    pub fn render(&self) -> String {
        let t = |us: &u64| format!("{:>6}.{:06}", us / 1_000_000, us % 1_000_000);
        match self {
            Event::Op { at_us, id, op } => format!("{} req {:>5} -> {}", t(at_us), id.0, op_str(op)),
            Event::Reply { at_us, id, result } => format!("{} req {:>5} <- {}", t(at_us), id.0, reply_str(result)),
            Event::Io { at_us, request, fault } => format!(
                "{}   io  -> {}{}",
                t(at_us),
                request_str(request),
                fault.as_ref().map(|f| format!("  [fault: {f}]")).unwrap_or_default()
            ),
            Event::Done { at_us, request, result } => {
                let what = request_str(request);
                let what = if what.len() > 60 { format!("{}..", &what[..60]) } else { what };
                format!("{}   io  <- {} = {}", t(at_us), what, result_str(result))
            }
            Event::Timeout { at_us } => format!("{}   timeout", t(at_us)),
            Event::Note { at_us, text } => format!("{} ** {}", t(at_us), text),
        }
    }
}

impl Trace {
    pub fn new(cap: usize) -> Trace {
        Trace { hash: Fnv::default(), ring: VecDeque::with_capacity(cap), cap, events: 0, echo: false }
    }

    fn keep(&mut self, e: Event) {
        self.events += 1;
        if self.echo {
            eprintln!("{}", e.render());
        }
        if self.cap == 0 {
            return;
        }
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        self.ring.push_back(e);
    }

    pub fn tail(&self) -> Vec<String> {
        self.ring.iter().map(|e| e.render()).collect()
    }

    pub fn op(&mut self, at_us: u64, id: RequestId, op: &Op) {
        self.hash.u64(1);
        self.hash.u64(id.0);
        hash_op(&mut self.hash, op);
        self.keep(Event::Op { at_us, id, op: op.clone() });
    }

    pub fn reply(&mut self, at_us: u64, id: RequestId, result: &Result<Reply, i32>) {
        self.hash.u64(2);
        self.hash.u64(id.0);
        match result {
            Ok(Reply::Data(d)) | Ok(Reply::XattrData(d)) => {
                self.hash.u64(d.len() as u64);
                self.hash.bytes(d);
            }
            other => {
                let _ = write!(self.hash, "{other:?}");
            }
        }
        self.keep(Event::Reply { at_us, id, result: result.clone() });
    }

    pub fn io(&mut self, at_us: u64, request: &IoRequest, fault: Option<String>) {
        self.hash.u64(3);
        hash_request(&mut self.hash, request);
        if let Some(f) = &fault {
            self.hash.bytes(f.as_bytes());
        }
        self.keep(Event::Io { at_us, request: request.clone(), fault });
    }

    pub fn done(&mut self, at_us: u64, request: &IoRequest, result: &IoResult) {
        self.hash.u64(4);
        self.hash.u64(at_us);
        hash_request(&mut self.hash, request);
        match result {
            Ok(IoReply::Data(d)) => self.hash.bytes(d),
            other => {
                let _ = write!(self.hash, "{other:?}");
            }
        }
        self.keep(Event::Done { at_us, request: request.clone(), result: result.clone() });
    }

    pub fn timeout(&mut self, at_us: u64) {
        self.hash.u64(5);
        self.hash.u64(at_us);
        self.keep(Event::Timeout { at_us });
    }

    pub fn note(&mut self, at_us: u64, text: String) {
        self.hash.u64(6);
        self.hash.bytes(text.as_bytes());
        self.keep(Event::Note { at_us, text });
    }

    pub fn effect(&mut self, e: &Effect) {
        if let Effect::Kernel(n) = e {
            self.hash.u64(7);
            let _ = write!(self.hash, "{n:?}");
        }
    }
}

fn hash_op(h: &mut Fnv, op: &Op) {
    match op {
        Op::Write { ino, fh, offset, data } => {
            let _ = write!(h, "W{ino},{fh},{offset}");
            h.bytes(data);
        }
        Op::SetXattr { ino, name, value, flags } => {
            let _ = write!(h, "X{ino},{flags}");
            h.bytes(name);
            h.bytes(value);
        }
        other => {
            let _ = write!(h, "{other:?}");
        }
    }
}

fn hash_request(h: &mut Fnv, r: &IoRequest) {
    match r {
        IoRequest::Staging(StagingRequest::Write { ino, offset, data }) => {
            let _ = write!(h, "SW{ino},{offset}");
            h.bytes(data);
        }
        other => {
            let _ = write!(h, "{other:?}");
        }
    }
}
