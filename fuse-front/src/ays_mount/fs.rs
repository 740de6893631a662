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
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};
use truckeefs_core::{Attr, Ctx, FileKind, KernelNotice, Op, Reply, RequestId, SetAttr, SetTime, Timespec};
use truckeefs_runtime_smol::ays::client::AysMount;
use truckeefs_runtime_smol::Sink;

use super::passthrough::{Modes, Plan};

enum Pending {
    Entry(ReplyEntry),
    Attr(ReplyAttr),
    Data(ReplyData),
    Write(ReplyWrite),
    Empty(ReplyEmpty),
    Open(ReplyOpen),
    /// The open of a file (not a directory): may be answered with a passthrough.
    OpenFile(ReplyOpen, u64),
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
            Pending::Open(r) | Pending::OpenFile(r, _) => r.error(errno),
            Pending::Create(r) => r.error(errno),
            Pending::Dir(r) => r.error(errno),
            Pending::DirPlus(r) => r.error(errno),
            Pending::Statfs(r) => r.error(errno),
            Pending::Xattr(r) => r.error(errno),
        }
    }
}

/// Reply objects by request id, shared by the fuser thread and the driver.
///
/// **Passthrough.** Where the kernel allows it (Linux 6.9 or later, the mount process holding
/// CAP_SYS_ADMIN), a file opened for reading is answered with its blob cache file as the
/// backing file (`FOPEN_PASSTHROUGH`): the kernel then reads the blob itself, and reads and
/// their copies never pass through this process. The blob was verified against its md5 before
/// the open was answered (the core opens it only then), so nothing unverified is served either
/// way. Files of the debug overlay are never passed through. Where the kernel does not support
/// it, the first refusal is logged and every open after it is served through the process as
/// before; a refusal for another reason (out of memory) falls back for that open only.
pub struct AysReplies {
    pending: Mutex<HashMap<u64, Pending>>,
    ttl: Duration,
    notifier: OnceLock<fuser::Notifier>,
    /// The mount, to find the blob file of a handle (weak: the mount owns the sink that owns this).
    mount: OnceLock<Weak<AysMount>>,
    /// Passthrough asked for at init and not refused yet.
    passthrough: AtomicBool,
    /// A passthrough was answered (logged once).
    passthrough_seen: AtomicBool,
    /// A registration failed for another reason than no support (logged once).
    passthrough_failed: AtomicBool,
    /// How each open file is read, with the backing files registered with the kernel.
    modes: Mutex<Modes<fuser::BackingId>>,
}

impl AysReplies {
    pub fn new(ttl: Duration) -> Arc<AysReplies> {
        Arc::new(AysReplies {
            pending: Mutex::new(HashMap::new()),
            ttl,
            notifier: OnceLock::new(),
            mount: OnceLock::new(),
            passthrough: AtomicBool::new(false),
            passthrough_seen: AtomicBool::new(false),
            passthrough_failed: AtomicBool::new(false),
            modes: Mutex::new(Modes::default()),
        })
    }

    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }

    pub fn set_mount(&self, m: &Arc<AysMount>) {
        let _ = self.mount.set(Arc::downgrade(m));
    }

    /// Answers the open of handle `fh` of `ino`: by passthrough of its blob file if possible
    /// (see [`Modes`]), else through this process.
    fn open_file(&self, r: ReplyOpen, fh: u64, ino: u64, keep_cache: bool) {
        use fuser::consts::{FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE};
        let cached_flags = if keep_cache { FOPEN_KEEP_CACHE } else { 0 };
        let file = if keep_cache && self.passthrough.load(Ordering::Relaxed) {
            self.mount.get().and_then(Weak::upgrade).and_then(|m| m.blob_file(fh))
        } else {
            None
        };
        let file = file.and_then(|f| f.metadata().ok().map(|m| ((m.dev(), m.ino()), f)));
        let key = file.as_ref().map(|(k, _)| *k);
        let mut modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        enum Then {
            Passed(Option<fuser::BackingId>),
            Cached,
            Nothing,
        }
        let then = match (modes.plan(ino, key), &file) {
            (Plan::Share(id), _) => {
                r.opened_passthrough(fh, 0, id);
                Then::Passed(None)
            }
            (Plan::Direct, _) => {
                r.opened(fh, FOPEN_DIRECT_IO);
                Then::Nothing
            }
            (Plan::Register, Some((_, f))) => match r.open_backing(&**f) {
                Ok(id) => {
                    r.opened_passthrough(fh, 0, &id);
                    if !self.passthrough_seen.swap(true, Ordering::Relaxed) {
                        tracing::info!("passthrough: the kernel reads open files straight from the blob cache");
                    }
                    Then::Passed(Some(id))
                }
                Err(e) => {
                    // Passthrough not offered at all (no CAP_SYS_ADMIN, an old kernel, a stacked
                    // filesystem): off for good. Anything else (out of memory, say): this open
                    // only, so one failure does not slow every later read of the mount.
                    let unsupported =
                        matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS | libc::EINVAL));
                    if unsupported {
                        if self.passthrough.swap(false, Ordering::Relaxed) {
                            tracing::info!(
                                error = %e,
                                "the kernel refused a passthrough file (it needs Linux 6.9 or later and CAP_SYS_ADMIN); reads are served through the mount process"
                            );
                        }
                    } else if !self.passthrough_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "the kernel did not take a blob file for passthrough; that open is read through the mount process (logged once)"
                        );
                    }
                    r.opened(fh, cached_flags);
                    Then::Cached
                }
            },
            (Plan::Cached | Plan::Register, _) => {
                r.opened(fh, cached_flags);
                Then::Cached
            }
        };
        match (then, key) {
            (Then::Passed(id), Some(key)) => modes.passed_through(fh, ino, key, id),
            (Then::Cached, _) => modes.cached(fh, ino),
            _ => {}
        }
    }

    /// The kernel released handle `fh`: the inode's backing file goes with its last handle.
    fn released(&self, fh: u64) {
        // Unregistered (dropped) after the lock is let go: the ioctl needs no lock.
        let gone = self.modes.lock().unwrap_or_else(|e| e.into_inner()).released(fh);
        drop(gone);
    }
}

/// The [`Sink`] of one mount.
pub struct AysSink(pub Arc<AysReplies>);

impl Sink for AysSink {
    fn reply(&self, id: RequestId, result: Result<Reply, i32>) {
        let p = self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.0);
        match p {
            Some(p) => answer(&self.0, p, result),
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

fn answer(replies: &AysReplies, p: Pending, result: Result<Reply, i32>) {
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
        (Pending::Open(r), Reply::Opened { fh, keep_cache, .. }) => {
            r.opened(fh, if keep_cache { fuser::consts::FOPEN_KEEP_CACHE } else { 0 })
        }
        // A file: passed through where it is kept in cache (read-only, outside the debug overlay).
        (Pending::OpenFile(r, ino), Reply::Opened { fh, keep_cache, .. }) => replies.open_file(r, fh, ino, keep_cache),
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
        // Passthrough needs a stacking depth of at least 1 (this mount cannot then sit below
        // another stacked filesystem, such as overlayfs, more than once).
        let passthrough = config.add_capabilities(FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(1).is_ok();
        self.replies.passthrough.store(passthrough, Ordering::Relaxed);
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
        self.send(req, Op::Open { ino, flags }, Pending::OpenFile(reply, ino));
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
        self.replies.released(fh);
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

    /// ENOTTY, as the main mount answers (`fuse.rs`).
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
