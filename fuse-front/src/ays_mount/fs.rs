//! The fuser adapter of one aysfs mount: kernel requests become core [`Op`]s for its
//! [`AysMount`]; core replies come back through [`AysReplies`]. No filesystem logic lives here.

use bytes::Bytes;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use truckeefs_core::{Attr, Ctx, FileKind, KernelNotice, Op, Reply, RequestId, SetAttr, SetTime, Timespec};
use truckeefs_runtime_smol::ays::client::AysMount;
use truckeefs_runtime_smol::Sink;

enum Pending {
    Entry(ReplyEntry),
    Attr(ReplyAttr),
    Data(ReplyData),
    Write(ReplyWrite),
    Empty(ReplyEmpty),
    Open(ReplyOpen),
    Create(ReplyCreate),
    Dir(ReplyDirectory),
    DirPlus(ReplyDirectoryPlus),
    Statfs(ReplyStatfs),
    Xattr(ReplyXattr),
}

impl Pending {
    fn error(self, errno: i32) {
        match self {
            Pending::Entry(r) => r.error(errno),
            Pending::Attr(r) => r.error(errno),
            Pending::Data(r) => r.error(errno),
            Pending::Write(r) => r.error(errno),
            Pending::Empty(r) => r.error(errno),
            Pending::Open(r) => r.error(errno),
            Pending::Create(r) => r.error(errno),
            Pending::Dir(r) => r.error(errno),
            Pending::DirPlus(r) => r.error(errno),
            Pending::Statfs(r) => r.error(errno),
            Pending::Xattr(r) => r.error(errno),
        }
    }
}

/// Reply objects by request id, shared by the fuser thread and the driver.
pub struct AysReplies {
    pending: Mutex<HashMap<u64, Pending>>,
    ttl: Duration,
    notifier: OnceLock<fuser::Notifier>,
}

impl AysReplies {
    pub fn new(ttl: Duration) -> Arc<AysReplies> {
        Arc::new(AysReplies { pending: Mutex::new(HashMap::new()), ttl, notifier: OnceLock::new() })
    }

    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }
}

/// The [`Sink`] of one mount.
pub struct AysSink(pub Arc<AysReplies>);

impl Sink for AysSink {
    fn reply(&self, id: RequestId, result: Result<Reply, i32>) {
        let p = self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.0);
        match p {
            Some(p) => answer(p, result, self.0.ttl),
            None => tracing::error!(?id, "reply for an unknown request"),
        }
    }

    fn notice(&self, notice: KernelNotice) {
        let Some(n) = self.0.notifier.get() else { return };
        // Invalidations may block on the kernel; never do it on the thread that answers it.
        let n = n.clone();
        std::thread::spawn(move || {
            let r = match &notice {
                KernelNotice::InvalInode { ino } => n.inval_inode(*ino, 0, 0),
                KernelNotice::InvalEntry { parent, name } => n.inval_entry(*parent, OsStr::from_bytes(name)),
            };
            if let Err(e) = r {
                tracing::debug!(?notice, error = %e, "kernel invalidation");
            }
        });
    }
}

fn answer(p: Pending, result: Result<Reply, i32>, ttl: Duration) {
    let reply = match result {
        Ok(r) => r,
        Err(errno) => return p.error(errno),
    };
    match (p, reply) {
        (Pending::Entry(r), Reply::Entry(a)) => r.entry(&ttl, &file_attr(&a), 0),
        (Pending::Attr(r), Reply::Attr(a)) => r.attr(&ttl, &file_attr(&a)),
        (Pending::Data(r), Reply::Data(d)) => r.data(&d),
        (Pending::Write(r), Reply::Written(n)) => r.written(n),
        (Pending::Empty(r), Reply::Empty) => r.ok(),
        (Pending::Open(r), Reply::Opened { fh, keep_cache }) => {
            r.opened(fh, if keep_cache { fuser::consts::FOPEN_KEEP_CACHE } else { 0 })
        }
        (Pending::Create(r), Reply::Created { attr, fh }) => r.created(&ttl, &file_attr(&attr), 0, fh, 0),
        (Pending::Dir(mut r), Reply::Dir(entries)) => {
            for e in entries {
                if r.add(e.ino, e.offset as i64, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                    break;
                }
            }
            r.ok()
        }
        (Pending::DirPlus(mut r), Reply::Dir(entries)) => {
            for e in entries {
                let Some(a) = e.attr else {
                    // `.` and `..` carry no attributes; readdirplus still lists them.
                    let attr = dot_attr(e.ino);
                    if r.add(e.ino, e.offset as i64, OsStr::from_bytes(&e.name), &Duration::ZERO, &attr, 0) {
                        break;
                    }
                    continue;
                };
                if r.add(e.ino, e.offset as i64, OsStr::from_bytes(&e.name), &ttl, &file_attr(&a), 0) {
                    break;
                }
            }
            r.ok()
        }
        (Pending::Statfs(r), Reply::StatFs(s)) => r.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize),
        (Pending::Xattr(r), Reply::XattrSize(n)) => r.size(n),
        (Pending::Xattr(r), Reply::XattrData(d)) => r.data(&d),
        (p, other) => {
            tracing::error!(?other, "reply of the wrong kind");
            p.error(libc::EIO)
        }
    }
}

fn dot_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.ctime.to_system(),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn name(n: &OsStr) -> Vec<u8> {
    n.as_bytes().to_vec()
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(Timespec::from_system(t)),
    })
}

/// The fuser filesystem of one aysfs mount.
pub struct AysFs {
    mount: Arc<AysMount>,
    replies: Arc<AysReplies>,
    next_id: u64,
}

impl AysFs {
    pub fn new(mount: Arc<AysMount>, replies: Arc<AysReplies>) -> AysFs {
        AysFs { mount, replies, next_id: 1 }
    }

    fn send(&mut self, req: &Request<'_>, op: Op, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        self.replies.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, pending);
        let ctx = Ctx { uid: req.uid(), gid: req.gid(), pid: req.pid() };
        self.mount.request(RequestId(id), ctx, op);
    }
}

impl Filesystem for AysFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        use fuser::consts::*;
        let wanted = FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS | FUSE_ASYNC_READ;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            let _ = config.add_capabilities(wanted & !unsupported);
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, reply: ReplyEntry) {
        self.send(req, Op::Lookup { parent, name: name(n) }, Pending::Entry(reply));
    }

    fn getattr(&mut self, req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        self.send(req, Op::GetAttr { ino }, Pending::Attr(reply));
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            ctime: ctime.map(Timespec::from_system),
        };
        self.send(req, Op::SetAttr { ino, fh, set }, Pending::Attr(reply));
    }

    fn readlink(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyData) {
        reply.error(libc::EINVAL);
    }

    fn mknod(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(libc::EROFS);
    }

    fn mkdir(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(libc::EROFS);
    }

    fn unlink(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn rmdir(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn symlink(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(libc::EROFS);
    }

    fn rename(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, _np: u64, _nn: &OsStr, _f: u32, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn link(&mut self, _req: &Request<'_>, _i: u64, _np: u64, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(libc::EROFS);
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        self.send(req, Op::Open { ino, flags }, Pending::Open(reply));
    }

    fn read(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        if offset < 0 {
            return reply.error(libc::EINVAL);
        }
        self.send(req, Op::Read { ino, fh, offset: offset as u64, size }, Pending::Data(reply));
    }

    fn write(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        if offset < 0 {
            return reply.error(libc::EINVAL);
        }
        let op = Op::Write { ino, fh, offset: offset as u64, data: Bytes::copy_from_slice(data) };
        self.send(req, op, Pending::Write(reply));
    }

    fn flush(&mut self, req: &Request<'_>, ino: u64, fh: u64, lock_owner: u64, reply: ReplyEmpty) {
        self.send(req, Op::Flush { ino, fh, lock_owner }, Pending::Empty(reply));
    }

    fn release(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.send(req, Op::Release { ino, fh, lock_owner }, Pending::Empty(reply));
    }

    fn fsync(&mut self, req: &Request<'_>, ino: u64, fh: u64, datasync: bool, reply: ReplyEmpty) {
        self.send(req, Op::Fsync { ino, fh, datasync }, Pending::Empty(reply));
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        self.send(req, Op::OpenDir { ino, flags }, Pending::Open(reply));
    }

    fn readdir(&mut self, req: &Request<'_>, ino: u64, fh: u64, offset: i64, reply: ReplyDirectory) {
        let op = Op::ReadDir { ino, fh, offset: offset.max(0) as u64, size: 4096, plus: false };
        self.send(req, op, Pending::Dir(reply));
    }

    fn readdirplus(&mut self, req: &Request<'_>, ino: u64, fh: u64, offset: i64, reply: ReplyDirectoryPlus) {
        let op = Op::ReadDir { ino, fh, offset: offset.max(0) as u64, size: 4096, plus: true };
        self.send(req, op, Pending::DirPlus(reply));
    }

    fn releasedir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _flags: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&mut self, req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        self.send(req, Op::StatFs, Pending::Statfs(reply));
    }

    fn setxattr(&mut self, _req: &Request<'_>, _i: u64, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn getxattr(&mut self, req: &Request<'_>, ino: u64, n: &OsStr, size: u32, reply: ReplyXattr) {
        self.send(req, Op::GetXattr { ino, name: name(n), size }, Pending::Xattr(reply));
    }

    fn listxattr(&mut self, req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.send(req, Op::ListXattr { ino, size }, Pending::Xattr(reply));
    }

    fn removexattr(&mut self, _req: &Request<'_>, _i: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::EROFS);
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        self.send(req, Op::Access { ino, mask }, Pending::Empty(reply));
    }

    fn create(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        self.send(req, Op::Create { parent, name: name(n), mode, umask, flags }, Pending::Create(reply));
    }

    fn fallocate(&mut self, _req: &Request<'_>, _i: u64, _fh: u64, _o: i64, _l: i64, _m: i32, reply: ReplyEmpty) {
        reply.error(libc::EOPNOTSUPP);
    }
}
