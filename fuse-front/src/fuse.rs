//! The fuser adapter: one short function per kernel operation, turning it into a core [`Op`],
//! and one table ([`Replies`]) turning core replies back into fuser replies. No filesystem
//! logic lives here.

use bytes::Bytes;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use truckeefs_core::{
    Attr, Ctx, FileKind, KernelNotice, LockRange, Op, Reply, RequestId, SetAttr, SetTime, Timespec,
};
use truckeefs_runtime_smol::{Runtime, Sink};

/// A fuser reply object waiting for the core's answer.
enum Pending {
    Entry(ReplyEntry),
    Attr(ReplyAttr),
    Data(ReplyData),
    Write(ReplyWrite),
    Empty(ReplyEmpty),
    Open(ReplyOpen, u64),
    Create(ReplyCreate),
    Dir(ReplyDirectory),
    DirPlus(ReplyDirectoryPlus),
    Statfs(ReplyStatfs),
    Xattr(ReplyXattr),
    Lock(ReplyLock),
}

/// Reply objects by request id, shared between the fuser thread (which files them) and the
/// driver thread (which answers them).
pub struct Replies {
    pending: Mutex<HashMap<u64, Pending>>,
    ttl: Duration,
    notices: OnceLock<mpsc::Sender<Notice>>,
}

/// What the invalidation thread sends the kernel, in order.
enum Notice {
    Kernel(KernelNotice),
    /// An open whose file another host changed: the kernel's attributes of `ino` are dropped
    /// first (with `FUSE_AUTO_INVAL_DATA`, its next read fetches them again and, if the size
    /// or mtime moved, drops the pages), then the open is answered.
    Open { ino: u64, reply: ReplyOpen, fh: u64, flags: u32 },
}

impl Replies {
    pub fn new(ttl: Duration) -> Arc<Replies> {
        Arc::new(Replies { pending: Mutex::new(HashMap::new()), ttl, notices: OnceLock::new() })
    }

    /// Starts the thread that passes invalidations to the kernel. They must not be sent by a
    /// thread holding the driver's lock: the kernel may be holding a directory's lock while it
    /// waits for a request that needs the driver (a deadlock), so they go through this thread.
    pub fn set_notifier(&self, n: fuser::Notifier) {
        let (tx, rx) = mpsc::channel::<Notice>();
        let spawned = std::thread::Builder::new().name("truckeefs-notify".into()).spawn(move || {
            for notice in rx {
                let (r, notice) = match notice {
                    Notice::Kernel(k) => (
                        match &k {
                            KernelNotice::InvalInode { ino } => n.inval_inode(*ino, 0, 0),
                            KernelNotice::InvalEntry { parent, name } => n.inval_entry(*parent, OsStr::from_bytes(name)),
                        },
                        k,
                    ),
                    Notice::Open { ino, reply, fh, flags } => {
                        // The attributes only (a negative offset): no page is touched.
                        let r = n.inval_inode(ino, -1, 0);
                        reply.opened(fh, flags);
                        (r, KernelNotice::InvalInode { ino })
                    }
                };
                // ENOENT: the kernel holds nothing of the inode.
                if let Err(e) = r {
                    tracing::debug!(?notice, error = %e, "kernel invalidation");
                }
            }
        });
        match spawned {
            Ok(_) => {
                let _ = self.notices.set(tx);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start the kernel invalidation thread; the kernel's caches expire by time only"),
        }
    }
}

/// The [`Sink`] handed to the runtime.
pub struct ReplySink(pub Arc<Replies>);

impl Sink for ReplySink {
    fn reply(&self, id: RequestId, result: Result<Reply, i32>) {
        // A poisoned lock means a panic elsewhere already; answering is still right.
        let pending = self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.0);
        match pending {
            Some(p) => answer(&self.0, p, result),
            None => tracing::error!(?id, "reply for an unknown request"),
        }
    }

    fn notice(&self, notice: KernelNotice) {
        if let Some(tx) = self.0.notices.get() {
            let _ = tx.send(Notice::Kernel(notice));
        }
    }
}

fn answer(replies: &Replies, p: Pending, result: Result<Reply, i32>) {
    let ttl = replies.ttl;
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
        (Pending::Open(r, ino), Reply::Opened { fh, keep_cache, stale_attrs }) => {
            let flags = if keep_cache { fuser::consts::FOPEN_KEEP_CACHE } else { 0 };
            match replies.notices.get() {
                Some(tx) if stale_attrs => {
                    if let Err(mpsc::SendError(Notice::Open { reply, fh, flags, .. })) =
                        tx.send(Notice::Open { ino, reply: r, fh, flags })
                    {
                        reply.opened(fh, flags);
                    }
                }
                _ => r.opened(fh, flags),
            }
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
                let Some(a) = e.attr else { continue };
                if r.add(e.ino, e.offset as i64, OsStr::from_bytes(&e.name), &ttl, &file_attr(&a), 0) {
                    tracing::warn!("readdirplus buffer smaller than expected");
                    break;
                }
            }
            r.ok()
        }
        (Pending::Statfs(r), Reply::StatFs(s)) => {
            r.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize)
        }
        (Pending::Xattr(r), Reply::XattrSize(n)) => r.size(n),
        (Pending::Xattr(r), Reply::XattrData(d)) => r.data(&d),
        (Pending::Lock(r), Reply::Lock(l)) => r.locked(l.start, l.end, l.typ, l.pid),
        (p, other) => {
            tracing::error!(?other, "reply of the wrong kind");
            p.error(libc::EIO)
        }
    }
}

impl Pending {
    fn error(self, errno: i32) {
        match self {
            Pending::Entry(r) => r.error(errno),
            Pending::Attr(r) => r.error(errno),
            Pending::Data(r) => r.error(errno),
            Pending::Write(r) => r.error(errno),
            Pending::Empty(r) => r.error(errno),
            Pending::Open(r, _) => r.error(errno),
            Pending::Create(r) => r.error(errno),
            Pending::Dir(r) => r.error(errno),
            Pending::DirPlus(r) => r.error(errno),
            Pending::Statfs(r) => r.error(errno),
            Pending::Xattr(r) => r.error(errno),
            Pending::Lock(r) => r.error(errno),
        }
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
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

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(Timespec::from_system(t)),
    })
}

fn name(n: &OsStr) -> Vec<u8> {
    n.as_bytes().to_vec()
}

/// What `destroy` leaves for `main`: the runtime's shutdown result.
pub type ShutdownResult = Arc<Mutex<Option<Result<(), String>>>>;

/// The fuser filesystem: forwards every request to the runtime.
pub struct FuseFs {
    runtime: Option<Runtime>,
    replies: Arc<Replies>,
    next_id: u64,
    shutdown: ShutdownResult,
    /// A multi-host mount: flock(2) goes to the core (as whole-file record locks) instead of
    /// staying in the kernel, so that other hosts see it; and the kernel checks a file's
    /// attributes before it reads (`FUSE_AUTO_INVAL_DATA`), so that an open which found the
    /// file changed by another host drops its cached size (`Reply::Opened::stale_attrs`).
    multi_host: bool,
}

impl FuseFs {
    pub fn new(runtime: Runtime, replies: Arc<Replies>, shutdown: ShutdownResult, multi_host: bool) -> FuseFs {
        FuseFs { runtime: Some(runtime), replies, next_id: 1, shutdown, multi_host }
    }

    fn send(&mut self, req: &Request<'_>, op: Op, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        let Some(rt) = &self.runtime else {
            return pending.error(libc::EIO);
        };
        self.replies.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, pending);
        let ctx = Ctx { uid: req.uid(), gid: req.gid(), pid: req.pid() };
        rt.request(RequestId(id), ctx, op);
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        use fuser::consts::*;
        let mut wanted = FUSE_POSIX_LOCKS | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS;
        if self.multi_host {
            wanted |= FUSE_FLOCK_LOCKS;
            // (With no attribute caching, every open looks its file up afresh already.)
            if !self.replies.ttl.is_zero() {
                wanted |= FUSE_AUTO_INVAL_DATA;
            }
        }
        if let Err(unsupported) = config.add_capabilities(wanted) {
            tracing::debug!(unsupported, "kernel lacks some FUSE capabilities");
            let _ = config.add_capabilities(wanted & !unsupported);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let r = rt.shutdown();
            *self.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, reply: ReplyEntry) {
        self.send(req, Op::Lookup { parent, name: name(n) }, Pending::Entry(reply));
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        if let Some(rt) = &self.runtime {
            rt.forget(ino, nlookup);
        }
    }

    fn batch_forget(&mut self, _req: &Request<'_>, nodes: &[fuser::fuse_forget_one]) {
        if let Some(rt) = &self.runtime {
            for n in nodes {
                rt.forget(n.nodeid, n.nlookup);
            }
        }
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

    fn readlink(&mut self, req: &Request<'_>, ino: u64, reply: ReplyData) {
        self.send(req, Op::ReadLink { ino }, Pending::Data(reply));
    }

    fn mknod(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        self.send(req, Op::MkNod { parent, name: name(n), mode, umask, rdev }, Pending::Entry(reply));
    }

    fn mkdir(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.send(req, Op::MkDir { parent, name: name(n), mode, umask }, Pending::Entry(reply));
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, reply: ReplyEmpty) {
        self.send(req, Op::Unlink { parent, name: name(n) }, Pending::Empty(reply));
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, reply: ReplyEmpty) {
        self.send(req, Op::RmDir { parent, name: name(n) }, Pending::Empty(reply));
    }

    fn symlink(&mut self, req: &Request<'_>, parent: u64, n: &OsStr, target: &Path, reply: ReplyEntry) {
        let target = target.as_os_str().as_bytes().to_vec();
        self.send(req, Op::Symlink { parent, name: name(n), target }, Pending::Entry(reply));
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        n: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let op = Op::Rename { parent, name: name(n), newparent, newname: name(newname), flags };
        self.send(req, op, Pending::Empty(reply));
    }

    fn link(&mut self, req: &Request<'_>, ino: u64, newparent: u64, newname: &OsStr, reply: ReplyEntry) {
        self.send(req, Op::Link { ino, newparent, newname: name(newname) }, Pending::Entry(reply));
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        self.send(req, Op::Open { ino, flags }, Pending::Open(reply, ino));
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
        self.send(req, Op::OpenDir { ino, flags }, Pending::Open(reply, ino));
    }

    fn readdir(&mut self, req: &Request<'_>, ino: u64, fh: u64, offset: i64, reply: ReplyDirectory) {
        let op = Op::ReadDir { ino, fh, offset: offset.max(0) as u64, size: 4096, plus: false };
        self.send(req, op, Pending::Dir(reply));
    }

    fn readdirplus(&mut self, req: &Request<'_>, ino: u64, fh: u64, offset: i64, reply: ReplyDirectoryPlus) {
        let op = Op::ReadDir { ino, fh, offset: offset.max(0) as u64, size: 4096, plus: true };
        self.send(req, op, Pending::DirPlus(reply));
    }

    fn releasedir(&mut self, req: &Request<'_>, ino: u64, fh: u64, _flags: i32, reply: ReplyEmpty) {
        self.send(req, Op::ReleaseDir { ino, fh }, Pending::Empty(reply));
    }

    fn fsyncdir(&mut self, req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        self.send(req, Op::FsyncDir { ino, fh }, Pending::Empty(reply));
    }

    /// No ioctl is supported: ENOTTY, as a regular file answers one it does not know (a
    /// program's `isatty` asks with `TCGETS` on every open), and no log line each time.
    fn ioctl(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _flags: u32,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(libc::ENOTTY);
    }

    fn statfs(&mut self, req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        self.send(req, Op::StatFs, Pending::Statfs(reply));
    }

    fn setxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            return reply.error(libc::EINVAL);
        }
        let op = Op::SetXattr { ino, name: name(n), value: Bytes::copy_from_slice(value), flags };
        self.send(req, op, Pending::Empty(reply));
    }

    fn getxattr(&mut self, req: &Request<'_>, ino: u64, n: &OsStr, size: u32, reply: ReplyXattr) {
        self.send(req, Op::GetXattr { ino, name: name(n), size }, Pending::Xattr(reply));
    }

    fn listxattr(&mut self, req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.send(req, Op::ListXattr { ino, size }, Pending::Xattr(reply));
    }

    fn removexattr(&mut self, req: &Request<'_>, ino: u64, n: &OsStr, reply: ReplyEmpty) {
        self.send(req, Op::RemoveXattr { ino, name: name(n) }, Pending::Empty(reply));
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        self.send(req, Op::Access { ino, mask }, Pending::Empty(reply));
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        n: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.send(req, Op::Create { parent, name: name(n), mode, umask, flags }, Pending::Create(reply));
    }

    fn getlk(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let lock = LockRange { start, end, typ, pid };
        self.send(req, Op::GetLk { ino, fh, owner: lock_owner, lock }, Pending::Lock(reply));
    }

    fn setlk(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let lock = LockRange { start, end, typ, pid };
        self.send(req, Op::SetLk { ino, fh, owner: lock_owner, lock, sleep }, Pending::Empty(reply));
    }

    fn fallocate(&mut self, req: &Request<'_>, ino: u64, fh: u64, offset: i64, length: i64, mode: i32, reply: ReplyEmpty) {
        if offset < 0 || length <= 0 {
            return reply.error(libc::EINVAL);
        }
        let op = Op::Fallocate { ino, fh, offset: offset as u64, length: length as u64, mode };
        self.send(req, op, Pending::Empty(reply));
    }

    fn copy_file_range(
        &mut self,
        req: &Request<'_>,
        ino_in: u64,
        fh_in: u64,
        offset_in: i64,
        ino_out: u64,
        fh_out: u64,
        offset_out: i64,
        len: u64,
        flags: u32,
        reply: ReplyWrite,
    ) {
        if flags != 0 || offset_in < 0 || offset_out < 0 {
            return reply.error(libc::EINVAL);
        }
        let op = Op::CopyFileRange {
            ino_in,
            fh_in,
            off_in: offset_in as u64,
            ino_out,
            fh_out,
            off_out: offset_out as u64,
            len,
        };
        self.send(req, op, Pending::Write(reply));
    }
}
