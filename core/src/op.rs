//! What the kernel asks ([`Op`]), what the core answers ([`Reply`]) and every output ([`Effect`]).

use crate::io::IoRequest;
use crate::types::{Attr, FileKind, Ino, IoId, RequestId, Timespec};
use bytes::Bytes;

/// A time to set with `setattr`: a given time, or the wall time of the request (`UTIME_NOW`).
/// `UTIME_OMIT` is expressed by leaving the field `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timespec),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Timespec>,
}

/// A POSIX record lock range as the kernel gives it: `start..=end` (`end == u64::MAX` for EOF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRange {
    pub start: u64,
    pub end: u64,
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub typ: i32,
    pub pid: u32,
}

/// One kernel request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup { parent: Ino, name: Vec<u8> },
    GetAttr { ino: Ino },
    SetAttr { ino: Ino, fh: Option<u64>, set: SetAttr },
    /// `mode` carries the file type bits.
    MkNod { parent: Ino, name: Vec<u8>, mode: u32, umask: u32, rdev: u32 },
    MkDir { parent: Ino, name: Vec<u8>, mode: u32, umask: u32 },
    Unlink { parent: Ino, name: Vec<u8> },
    RmDir { parent: Ino, name: Vec<u8> },
    Symlink { parent: Ino, name: Vec<u8>, target: Vec<u8> },
    ReadLink { ino: Ino },
    Link { ino: Ino, newparent: Ino, newname: Vec<u8> },
    /// `flags`: `RENAME_NOREPLACE`, `RENAME_EXCHANGE` (others give EINVAL).
    Rename { parent: Ino, name: Vec<u8>, newparent: Ino, newname: Vec<u8>, flags: u32 },
    Open { ino: Ino, flags: i32 },
    Create { parent: Ino, name: Vec<u8>, mode: u32, umask: u32, flags: i32 },
    Read { ino: Ino, fh: u64, offset: u64, size: u32 },
    Write { ino: Ino, fh: u64, offset: u64, data: Bytes },
    Flush { ino: Ino, fh: u64, lock_owner: u64 },
    Fsync { ino: Ino, fh: u64, datasync: bool },
    Release { ino: Ino, fh: u64, lock_owner: Option<u64> },
    OpenDir { ino: Ino, flags: i32 },
    /// Entries after `offset` (0 = from the start) that fit in `size` bytes of the kernel's
    /// buffer. `plus`: readdirplus (each entry other than `.` and `..` counts as a lookup).
    ReadDir { ino: Ino, fh: u64, offset: u64, size: u32, plus: bool },
    ReleaseDir { ino: Ino, fh: u64 },
    FsyncDir { ino: Ino, fh: u64 },
    StatFs,
    SetXattr { ino: Ino, name: Vec<u8>, value: Bytes, flags: i32 },
    /// `size == 0` asks for the value's size only.
    GetXattr { ino: Ino, name: Vec<u8>, size: u32 },
    ListXattr { ino: Ino, size: u32 },
    RemoveXattr { ino: Ino, name: Vec<u8> },
    Access { ino: Ino, mask: i32 },
    GetLk { ino: Ino, fh: u64, owner: u64, lock: LockRange },
    SetLk { ino: Ino, fh: u64, owner: u64, lock: LockRange, sleep: bool },
    Fallocate { ino: Ino, fh: u64, offset: u64, length: u64, mode: i32 },
    CopyFileRange { ino_in: Ino, fh_in: u64, off_in: u64, ino_out: Ino, fh_out: u64, off_out: u64, len: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    /// The offset to pass to the next readdir to continue after this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
    /// Present for readdirplus (except for `.` and `..`, which the kernel does not look up).
    pub attr: Option<Attr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// lookup, mknod, mkdir, symlink, link: the kernel now holds one more lookup reference.
    Entry(Attr),
    Attr(Attr),
    Data(Bytes),
    Written(u32),
    Empty,
    /// `keep_cache`: the kernel's page cache for the file is still valid. `stale_attrs`: the
    /// open read a row whose attributes the kernel may hold older (another host changed the
    /// file): the kernel must drop them before the open returns, or it reads up to a size
    /// that is no longer the file's.
    Opened { fh: u64, keep_cache: bool, stale_attrs: bool },
    Created { attr: Attr, fh: u64 },
    Dir(Vec<DirEntry>),
    StatFs(StatFs),
    XattrSize(u32),
    XattrData(Bytes),
    Lock(LockRange),
}

/// A notice for the kernel, performed by the runtime outside any request handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelNotice {
    /// Drop cached attributes and page cache of an inode.
    InvalInode { ino: Ino },
    /// Drop a cached directory entry.
    InvalEntry { parent: Ino, name: Vec<u8> },
}

/// Everything the core asks its runtime to do. Drain with `Core::poll_effect` after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Exactly one per request; the value is a positive errno on failure.
    Reply { id: RequestId, result: Result<Reply, i32> },
    /// Exactly one completion comes back through `Core::handle_completion`.
    Io { io: IoId, request: IoRequest },
    Kernel(KernelNotice),
}
