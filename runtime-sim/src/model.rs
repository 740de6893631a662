//! The reference model: what a POSIX filesystem (Linux semantics) must answer.
//!
//! It holds the namespace tree, file contents, sizes, modes, owners, symlink targets, hard links
//! with their link counts, xattrs and open handles, keyed by the inode numbers the core handed
//! out. [`Model::check`] takes one kernel request and the core's answer, decides whether the
//! answer is right for the current state, and applies the change. Errors are checked in the
//! order Linux checks them, for the requests that reach a filesystem.
//!
//! Durability: each regular file remembers the content acknowledged as durable (by a successful
//! close/flush or fsync) and every acknowledged version since. After a crash the file must hold
//! one of those versions, or the one mix the staging journal allows: the bytes of a newer
//! version under the size of an older one (a seal record written while a later write landed).
//! A file whose last change was acknowledged must hold exactly that content.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use truckeefs_core::{Attr, Ctx, FileKind, Ino, LockRange, Op, Reply, SetTime, Timespec, BLOCK_SIZE, NAME_MAX, PATH_MAX, ROOT_INO};

use libc::{
    E2BIG, EAGAIN, EEXIST, EINVAL, EISDIR, ENAMETOOLONG, ENODATA, ENODEV, ENOENT, ENOTDIR, ENOTEMPTY, EOPNOTSUPP, EPERM,
    ERANGE,
};

const XATTR_SIZE_MAX: usize = 65536;
const COPY_CHUNK_MAX: u64 = 4 << 20;
/// Acknowledged versions kept per file before the harness must acknowledge one (close or fsync).
pub const MAX_VERSIONS: usize = 24;

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: FileKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub nlink: u32,
    pub data: Vec<u8>,
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Bytes>,
    pub children: BTreeMap<Vec<u8>, Ino>,
    /// A directory's parent.
    pub parent: Ino,
    /// Open handles (file or directory).
    pub opens: u32,
    /// The content acknowledged durable, and the acknowledged versions since (oldest first).
    pub acked: Vec<u8>,
    pub since: Vec<Vec<u8>>,
    /// The same for what survives a loss of the staging area: the content of the last fsync
    /// (which waits for the upload when staged copies are not durable), and every version since.
    pub synced: Vec<u8>,
    pub since_sync: Vec<Vec<u8>>,
}

impl Node {
    fn new(kind: FileKind, perm: u16, uid: u32, gid: u32, parent: Ino) -> Node {
        Node {
            kind,
            perm,
            uid,
            gid,
            rdev: 0,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            data: Vec::new(),
            target: Vec::new(),
            xattrs: BTreeMap::new(),
            children: BTreeMap::new(),
            parent,
            opens: 0,
            acked: Vec::new(),
            since: Vec::new(),
            synced: Vec::new(),
            since_sync: Vec::new(),
        }
    }

    pub fn size(&self) -> u64 {
        match self.kind {
            FileKind::Directory => 4096,
            FileKind::Regular => self.data.len() as u64,
            FileKind::Symlink => self.target.len() as u64,
            _ => 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MHandle {
    pub ino: Ino,
    pub flags: i32,
    pub dir: bool,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub nodes: HashMap<Ino, Node>,
    pub handles: BTreeMap<u64, MHandle>,
    /// Keep per-file version histories (only needed when the seed may crash).
    pub track_versions: bool,
    /// Treat a different errno in cases the kernel answers before asking the filesystem as a
    /// failure (otherwise it is counted in `divergences`).
    pub strict: bool,
    /// Cases the kernel's VFS answers itself (so FUSE never sees them) where the core's answer
    /// differs from Linux's: description -> count.
    pub divergences: BTreeMap<String, u64>,
    /// Regular files whose content after a crash is not known yet (their size is not checked).
    pub unsettled: BTreeSet<Ino>,
    /// POSIX record locks held, by inode: maximal runs per owner and type.
    pub locks: BTreeMap<Ino, Vec<MLock>>,
    /// Lower bounds of each inode's (mtime, ctime): the wall time of the last request that had
    /// to change them, or a value seen since (times never go back). Cleared by a crash.
    pub times: HashMap<Ino, (Timespec, Timespec)>,
    /// The wall time now (when an answer is checked): no time may be later.
    pub now: Timespec,
    /// Files whose row another writer changed behind the core's back (`foreign_chown`), with
    /// the uids the core may still show (from its cache, or from a reload between two foreign
    /// changes); until the core's next stored change of the row or a crash, requests touching
    /// them may fail with EIO (a version conflict).
    pub foreign: BTreeMap<Ino, Vec<u32>>,
}

/// One record lock of the model; `end` is inclusive (`u64::MAX`: to the end of the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MLock {
    pub owner: u64,
    pub start: u64,
    pub end: u64,
    /// `F_RDLCK` or `F_WRLCK`.
    pub typ: i32,
}

/// The pid the harness gives the locks of a lock owner (one process per owner).
pub fn lock_pid(owner: u64) -> u32 {
    owner as u32
}

fn lock_name(typ: i32) -> &'static str {
    match typ {
        libc::F_RDLCK => "F_RDLCK",
        libc::F_WRLCK => "F_WRLCK",
        libc::F_UNLCK => "F_UNLCK",
        _ => "F_?",
    }
}

/// The outcome of checking one answer.
pub type Check = Result<(), String>;

fn errno(e: i32) -> String {
    crate::trace::errno_name(e)
}

fn show(name: &[u8]) -> String {
    if name.len() > 20 {
        format!("{}..({} bytes)", String::from_utf8_lossy(&name[..8]), name.len())
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}

/// Resize with zeros, like a staged copy read under a shorter or longer recorded size.
pub fn resized(data: &[u8], size: usize) -> Vec<u8> {
    let mut v = data[..size.min(data.len())].to_vec();
    v.resize(size, 0);
    v
}

fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

impl Model {
    pub fn new(root_uid: u32, root_gid: u32, track_versions: bool) -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, Node::new(FileKind::Directory, 0o755, root_uid, root_gid, ROOT_INO));
        Model {
            nodes,
            handles: BTreeMap::new(),
            track_versions,
            strict: false,
            divergences: BTreeMap::new(),
            unsettled: BTreeSet::new(),
            locks: BTreeMap::new(),
            times: HashMap::new(),
            now: Timespec::default(),
            foreign: BTreeMap::new(),
        }
    }

    pub fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        self.nodes.get(&dir).and_then(|d| d.children.get(name).copied())
    }

    /// Every reachable node with one of its paths, in a stable order (depth first, by name).
    pub fn walk(&self) -> Vec<(Vec<Vec<u8>>, Ino)> {
        let mut out = vec![(Vec::new(), ROOT_INO)];
        let mut i = 0;
        let mut seen = BTreeSet::new();
        while i < out.len() {
            let (path, ino) = out[i].clone();
            i += 1;
            if let Some(n) = self.nodes.get(&ino) {
                for (name, child) in &n.children {
                    let mut p = path.clone();
                    p.push(name.clone());
                    if self.nodes[child].kind == FileKind::Directory || seen.insert(*child) {
                        out.push((p, *child));
                    }
                }
            }
        }
        out
    }

    /// Is `ino` equal to `ancestor` or below it?
    fn is_within(&self, mut ino: Ino, ancestor: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) if n.kind == FileKind::Directory => ino = n.parent,
                _ => return false,
            }
        }
    }

    /// Compare attributes the core returned with the model's.
    pub fn check_attr(&self, ino: Ino, a: &Attr) -> Check {
        let n = self.nodes.get(&ino).ok_or_else(|| format!("attr of inode {ino} unknown to the model"))?;
        let mut diffs = Vec::new();
        if a.ino != ino {
            diffs.push(format!("ino {} != {}", a.ino, ino));
        }
        if a.kind != n.kind {
            diffs.push(format!("kind {:?} != {:?}", a.kind, n.kind));
        }
        if a.size != n.size() && !self.unsettled.contains(&ino) {
            diffs.push(format!("size {} != {}", a.size, n.size()));
        }
        if a.blocks != a.size.div_ceil(512) {
            diffs.push(format!("blocks {} for size {}", a.blocks, a.size));
        }
        if a.perm != n.perm {
            diffs.push(format!("perm {:o} != {:o}", a.perm, n.perm));
        }
        if a.nlink != n.nlink {
            diffs.push(format!("nlink {} != {}", a.nlink, n.nlink));
        }
        let uid_ok = a.uid == n.uid || self.foreign.get(&ino).is_some_and(|old| old.contains(&a.uid));
        if !uid_ok || a.gid != n.gid {
            diffs.push(format!("owner {}:{} != {}:{}", a.uid, a.gid, n.uid, n.gid));
        }
        if a.rdev != n.rdev {
            diffs.push(format!("rdev {} != {}", a.rdev, n.rdev));
        }
        if a.blksize != BLOCK_SIZE {
            diffs.push(format!("blksize {}", a.blksize));
        }
        if !self.unsettled.contains(&ino) {
            let show = |t: Timespec| format!("{}.{:09}", t.sec, t.nsec);
            let (mtime, ctime) = self.times.get(&ino).copied().unwrap_or_default();
            if a.mtime < mtime {
                diffs.push(format!("mtime {} before {} (a change then, or a value seen)", show(a.mtime), show(mtime)));
            }
            if a.ctime < ctime {
                diffs.push(format!("ctime {} before {} (a change then, or a value seen)", show(a.ctime), show(ctime)));
            }
            if a.mtime > self.now || a.ctime > self.now {
                diffs.push(format!("mtime {} / ctime {} later than now {}", show(a.mtime), show(a.ctime), show(self.now)));
            }
            if a.ctime < a.mtime {
                diffs.push(format!("ctime {} before mtime {}", show(a.ctime), show(a.mtime)));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("attributes of inode {ino} differ from the model: {}", diffs.join(", ")))
        }
    }

    /// A new version of a file's contents was acknowledged.
    fn new_version(&mut self, ino: Ino) {
        if !self.track_versions {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            let v = n.data.clone();
            n.since.push(v.clone());
            n.since_sync.push(v);
        }
    }

    /// The current contents of `ino` are durable (close or fsync): a crash keeps them.
    pub fn ack(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            if n.kind == FileKind::Regular {
                n.acked = n.data.clone();
                n.since.clear();
            }
        }
    }

    /// The current contents of `ino` are in the store (fsync, or everything uploaded): even a
    /// loss of the staging area keeps them.
    pub fn sync(&mut self, ino: Ino) {
        self.ack(ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            if n.kind == FileKind::Regular {
                n.synced = n.data.clone();
                n.since_sync.clear();
            }
        }
    }

    pub fn ack_all(&mut self) {
        let inos: Vec<Ino> = self.nodes.keys().copied().collect();
        for ino in inos {
            self.sync(ino);
        }
    }

    /// Number of unacknowledged versions of a file (since the last close, or the last fsync).
    pub fn pending_versions(&self, ino: Ino) -> usize {
        self.nodes.get(&ino).map_or(0, |n| n.since.len().max(n.since_sync.len()))
    }

    /// After a crash: may a file hold `content`?
    pub fn allowed_after_crash(&self, ino: Ino, content: &[u8]) -> Check {
        let n = &self.nodes[&ino];
        let mut versions: Vec<&Vec<u8>> = vec![&n.acked];
        versions.extend(n.since.iter());
        if n.since.is_empty() {
            if content == n.acked.as_slice() {
                return Ok(());
            }
            return Err(format!(
                "inode {ino}: acknowledged content lost: expected {} bytes (the last close/fsync, or fsync after a loss of the staging area), found {} bytes{}",
                n.acked.len(),
                content.len(),
                first_diff(&n.acked, content)
            ));
        }
        for v in &versions {
            if content == v.as_slice() {
                return Ok(());
            }
        }
        // A newer version's bytes under an older version's size.
        for (b, vb) in versions.iter().enumerate() {
            if content.len() != vb.len() {
                continue;
            }
            for va in &versions[b..] {
                if resized(va, vb.len()) == content {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "inode {ino}: content after the crash is none of the {} allowed versions (acked {} bytes, latest {} bytes, found {} bytes{})",
            versions.len(),
            n.acked.len(),
            versions.last().map_or(0, |v| v.len()),
            content.len(),
            first_diff(versions.last().unwrap(), content)
        ))
    }

    /// A request was in flight when the mount crashed: its change may or may not have happened,
    /// so the content it would have made is one more allowed version.
    pub fn maybe(&mut self, op: &Op) {
        if !self.track_versions {
            return;
        }
        let changed: Option<(Ino, Vec<u8>)> = match op {
            Op::Write { ino, fh, offset, data } => self.nodes.get(ino).map(|n| {
                let append = self.handles.get(fh).is_some_and(|h| h.flags & libc::O_APPEND != 0);
                let mut v = n.data.clone();
                let at = if append { v.len() as u64 } else { *offset };
                write_at(&mut v, at, data);
                (*ino, v)
            }),
            Op::SetAttr { ino, set, .. } => set.size.and_then(|size| {
                self.nodes.get(ino).filter(|n| n.kind == FileKind::Regular).map(|n| (*ino, resized(&n.data, size as usize)))
            }),
            Op::Fallocate { ino, offset, length, mode: 0, .. } => self.nodes.get(ino).map(|n| {
                let end = (offset + length) as usize;
                (*ino, if n.data.len() < end { resized(&n.data, end) } else { n.data.clone() })
            }),
            Op::CopyFileRange { ino_in, off_in, ino_out, off_out, len, .. } => {
                match (self.nodes.get(ino_in), self.nodes.get(ino_out)) {
                    (Some(a), Some(b)) => {
                        let n = (*len).min(COPY_CHUNK_MAX).min((a.data.len() as u64).saturating_sub(*off_in));
                        let mut v = b.data.clone();
                        if n > 0 {
                            write_at(&mut v, *off_out, &a.data[*off_in as usize..(*off_in + n) as usize]);
                        }
                        Some((*ino_out, v))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((ino, v)) = changed {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.since.push(v.clone());
                n.since_sync.push(v);
            }
        }
    }

    /// The mount crashed: handles are gone, unlinked files with them. With `staging_lost` the
    /// staging area is gone too: only what the last fsync stored is acknowledged.
    pub fn crash(&mut self, staging_lost: bool) {
        if staging_lost {
            for n in self.nodes.values_mut() {
                n.acked = n.synced.clone();
                n.since = n.since_sync.clone();
            }
        }
        self.handles.clear();
        self.locks.clear();
        self.foreign.clear();
        // Times of changes not yet stored (file data, directory entries) may be lost with them.
        self.times.clear();
        for n in self.nodes.values_mut() {
            n.opens = 0;
        }
        self.nodes.retain(|_, n| n.nlink > 0);
        self.unsettled = self.nodes.iter().filter(|(_, n)| n.kind == FileKind::Regular).map(|(i, _)| *i).collect();
    }

    /// After a crash, the content found is the truth from now on: durable, but perhaps only in
    /// the staging area (a replayed copy not uploaded yet), so one more version since the last
    /// fsync.
    pub fn settle(&mut self, ino: Ino, content: Vec<u8>) {
        self.unsettled.remove(&ino);
        self.times.remove(&ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.data = content.clone();
            n.acked = content.clone();
            n.since.clear();
            if self.track_versions {
                n.since_sync.push(content);
            }
        }
    }

    fn drop_if_unused(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get(&ino) {
            if n.nlink == 0 && n.opens == 0 {
                self.nodes.remove(&ino);
                self.times.remove(&ino);
                self.locks.remove(&ino);
                self.foreign.remove(&ino);
            }
        }
    }

    // ----- the check of one answer -----

    /// Check `result` as the answer to `op` and apply the change. `faulted`: a fault was injected
    /// while the request was in flight, so EIO and ENOSPC are acceptable (and change nothing).
    pub fn check(&mut self, op: &Op, ctx: Ctx, result: &Result<Reply, i32>, faulted: bool, issued: Timespec) -> Check {
        // A close releases the owner's record locks whatever the flush answers.
        match op {
            Op::Flush { ino, lock_owner, .. } | Op::Release { ino, lock_owner: Some(lock_owner), .. } => {
                self.lock_release_owner(*ino, *lock_owner)
            }
            _ => {}
        }
        if faulted {
            if let Err(e) = result {
                if *e == libc::EIO || *e == libc::ENOSPC {
                    return Ok(());
                }
            }
        }
        if *result == Err(libc::EIO) && self.inodes_of(op).iter().any(|i| self.foreign.contains_key(i)) {
            return Ok(()); // a version conflict with the other writer: nothing changed
        }
        // A rename of a name onto itself (or onto another link of the same inode) changes nothing.
        let same_rename = match op {
            Op::Rename { parent, name, newparent, newname, .. } => {
                let src = self.child(*parent, name);
                src.is_none() || src == self.child(*newparent, newname)
            }
            _ => false,
        };
        let r = self.check_inner(op, ctx, result).map(|()| {
            if result.is_ok() {
                self.bump_times(op, result, issued, same_rename);
                // A stored change of the row: the core has the other writer's version now.
                if let Op::SetAttr { ino, .. } | Op::SetXattr { ino, .. } | Op::RemoveXattr { ino, .. } | Op::Link { ino, .. } = op {
                    self.foreign.remove(ino);
                }
            }
        });
        r.map_err(|msg| format!("{msg}\n    op: {op:?}\n    answer: {}", crate::trace::Event::Reply {
            at_us: 0,
            id: truckeefs_core::RequestId(0),
            result: result.clone()
        }
        .render()))
    }

    fn expect_err(&self, expected: i32, result: &Result<Reply, i32>) -> Check {
        match result {
            Err(e) if *e == expected => Ok(()),
            Err(e) => Err(format!("expected {}, got {}", errno(expected), errno(*e))),
            Ok(r) => Err(format!("expected {}, got success {:?}", errno(expected), short_reply(r))),
        }
    }

    /// An error Linux's VFS returns before the filesystem is asked: a different error from the
    /// core is only a divergence (the kernel never lets the request through); `noop_ok` accepts
    /// success too where the request would change nothing.
    fn kernel_err(&mut self, what: &str, expected: i32, result: &Result<Reply, i32>, noop_ok: bool) -> Check {
        match result {
            Err(e) if *e == expected => Ok(()),
            Err(e) if !self.strict => {
                let key = format!("{what}: Linux {}, core {}", errno(expected), errno(*e));
                *self.divergences.entry(key).or_default() += 1;
                Ok(())
            }
            Ok(Reply::Empty) if noop_ok && !self.strict => {
                let key = format!("{what}: Linux {}, core success (no change)", errno(expected));
                *self.divergences.entry(key).or_default() += 1;
                Ok(())
            }
            _ => self.expect_err(expected, result),
        }
    }

    fn unexpected<T>(&self, expected: &str, result: &Result<Reply, i32>) -> Result<T, String> {
        match result {
            Err(e) => Err(format!("expected {expected}, got {}", errno(*e))),
            Ok(r) => Err(format!("expected {expected}, got {:?}", short_reply(r))),
        }
    }

    fn dir_of(&self, ino: Ino) -> Result<&Node, i32> {
        match self.nodes.get(&ino) {
            Some(n) if n.kind == FileKind::Directory => Ok(n),
            Some(_) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    fn check_inner(&mut self, op: &Op, ctx: Ctx, result: &Result<Reply, i32>) -> Check {
        match op {
            Op::Lookup { parent, name } => {
                if name.len() > NAME_MAX {
                    return self.expect_err(ENAMETOOLONG, result);
                }
                let dir = match self.dir_of(*parent) {
                    Ok(d) => d,
                    Err(e) => return self.expect_err(e, result),
                };
                let Some(child) = dir.children.get(name).copied() else { return self.expect_err(ENOENT, result) };
                match result {
                    Ok(Reply::Entry(a)) => self.check_attr(child, a),
                    _ => self.unexpected(&format!("the entry of inode {child}"), result),
                }
            }
            Op::GetAttr { ino } => match result {
                Ok(Reply::Attr(a)) => self.check_attr(*ino, a),
                _ => self.unexpected("attributes", result),
            },
            Op::SetAttr { ino, fh: _, set } => {
                let n = self.nodes.get(ino).ok_or("setattr of an inode unknown to the model")?;
                if set.size.is_some() {
                    match n.kind {
                        FileKind::Regular => {}
                        FileKind::Directory => return self.expect_err(EISDIR, result),
                        _ => return self.expect_err(EINVAL, result),
                    }
                }
                let Ok(Reply::Attr(a)) = result else { return self.unexpected("attributes", result) };
                let n = self.nodes.get_mut(ino).expect("checked");
                if let Some(mode) = set.mode {
                    n.perm = (mode & 0o7777) as u16;
                }
                if let Some(uid) = set.uid {
                    n.uid = uid;
                }
                if let Some(gid) = set.gid {
                    n.gid = gid;
                }
                let _ = (SetTime::Now, set.atime);
                if let Some(size) = set.size {
                    let changed = size != n.data.len() as u64;
                    n.data.resize(size as usize, 0);
                    if changed {
                        self.new_version(*ino);
                    }
                }
                self.check_attr(*ino, a)
            }
            Op::MkNod { parent, name, mode, umask, rdev } => {
                let kind = if mode & libc::S_IFMT == 0 {
                    FileKind::Regular
                } else {
                    match FileKind::from_mode(*mode) {
                        Some(k) if k != FileKind::Directory => k,
                        _ => return self.expect_err(EINVAL, result),
                    }
                };
                self.check_create(*parent, name, kind, mode & !umask, *rdev, None, ctx, result, None)
            }
            Op::MkDir { parent, name, mode, umask } => {
                self.check_create(*parent, name, FileKind::Directory, mode & !umask, 0, None, ctx, result, None)
            }
            Op::Symlink { parent, name, target } => {
                if target.len() >= PATH_MAX {
                    return self.expect_err(ENAMETOOLONG, result);
                }
                self.check_create(*parent, name, FileKind::Symlink, 0o777, 0, Some(target.clone()), ctx, result, None)
            }
            Op::Create { parent, name, mode, umask, flags } => {
                self.check_create(*parent, name, FileKind::Regular, mode & !umask, 0, None, ctx, result, Some(*flags))
            }
            Op::Unlink { parent, name } | Op::RmDir { parent, name } => {
                let rmdir = matches!(op, Op::RmDir { .. });
                if name.len() > NAME_MAX {
                    return self.expect_err(ENAMETOOLONG, result);
                }
                let dir = match self.dir_of(*parent) {
                    Ok(d) => d,
                    Err(e) => return self.expect_err(e, result),
                };
                let Some(child) = dir.children.get(name).copied() else { return self.expect_err(ENOENT, result) };
                let c = &self.nodes[&child];
                let is_dir = c.kind == FileKind::Directory;
                if rmdir && !is_dir {
                    return self.expect_err(ENOTDIR, result);
                }
                if !rmdir && is_dir {
                    return self.expect_err(EISDIR, result);
                }
                if is_dir && !c.children.is_empty() {
                    return self.expect_err(ENOTEMPTY, result);
                }
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                self.nodes.get_mut(parent).unwrap().children.remove(name);
                if is_dir {
                    self.nodes.get_mut(parent).unwrap().nlink -= 1;
                    self.nodes.get_mut(&child).unwrap().nlink = 0;
                } else {
                    self.nodes.get_mut(&child).unwrap().nlink -= 1;
                }
                self.drop_if_unused(child);
                Ok(())
            }
            Op::ReadLink { ino } => {
                let n = self.nodes.get(ino).ok_or("readlink of an unknown inode")?;
                if n.kind != FileKind::Symlink {
                    return self.expect_err(EINVAL, result);
                }
                match result {
                    Ok(Reply::Data(d)) if d[..] == n.target[..] => Ok(()),
                    _ => self.unexpected(&format!("target {:?}", show(&n.target)), result),
                }
            }
            Op::Link { ino, newparent, newname } => {
                if newname.len() > NAME_MAX {
                    return self.expect_err(ENAMETOOLONG, result);
                }
                let dir = match self.dir_of(*newparent) {
                    Ok(d) => d,
                    Err(e) => return self.expect_err(e, result),
                };
                let exists = dir.children.contains_key(newname);
                let n = self.nodes.get(ino).ok_or("link of an unknown inode")?;
                let (is_dir, nlink) = (n.kind == FileKind::Directory, n.nlink);
                if exists {
                    return self.kernel_err("link to an existing name", EEXIST, result, false);
                }
                if is_dir {
                    return self.kernel_err("link of a directory", EPERM, result, false);
                }
                if nlink == 0 {
                    return self.kernel_err("link of an unlinked file", ENOENT, result, false);
                }
                let Ok(Reply::Entry(a)) = result else { return self.unexpected("an entry", result) };
                self.nodes.get_mut(newparent).unwrap().children.insert(newname.clone(), *ino);
                self.nodes.get_mut(ino).unwrap().nlink += 1;
                self.check_attr(*ino, a)
            }
            Op::Rename { parent, name, newparent, newname, flags } => {
                self.check_rename(*parent, name, *newparent, newname, *flags, result)
            }
            Op::Open { ino, flags } => {
                let n = self.nodes.get(ino).ok_or("open of an unknown inode")?;
                if n.kind == FileKind::Directory {
                    return self.expect_err(EISDIR, result);
                }
                let Ok(Reply::Opened { fh, .. }) = result else { return self.unexpected("a handle", result) };
                self.add_handle(*fh, *ino, *flags, false)
            }
            Op::OpenDir { ino, flags } => {
                let n = self.nodes.get(ino).ok_or("opendir of an unknown inode")?;
                if n.kind != FileKind::Directory {
                    return self.expect_err(ENOTDIR, result);
                }
                let Ok(Reply::Opened { fh, .. }) = result else { return self.unexpected("a handle", result) };
                self.add_handle(*fh, *ino, *flags, true)
            }
            Op::Release { ino, fh, .. } | Op::ReleaseDir { ino, fh } => {
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                let h = self.handles.remove(fh).ok_or_else(|| format!("release of unknown handle {fh}"))?;
                if h.ino != *ino {
                    return Err(format!("handle {fh} is of inode {}, released as {ino}", h.ino));
                }
                if let Some(n) = self.nodes.get_mut(ino) {
                    n.opens -= 1;
                }
                self.drop_if_unused(*ino);
                Ok(())
            }
            Op::Read { ino, offset, size, .. } => {
                let n = self.nodes.get(ino).ok_or("read of an unknown inode")?;
                if n.kind == FileKind::Directory {
                    return self.expect_err(EISDIR, result);
                }
                let start = (*offset).min(n.data.len() as u64) as usize;
                let end = (*offset + *size as u64).min(n.data.len() as u64) as usize;
                let want = &n.data[start.min(end)..end];
                match result {
                    Ok(Reply::Data(d)) if d[..] == *want => Ok(()),
                    Ok(Reply::Data(d)) => Err(format!(
                        "read of inode {ino} at {offset}+{size}: got {} bytes, expected {} bytes{}",
                        d.len(),
                        want.len(),
                        first_diff(want, d)
                    )),
                    _ => self.unexpected("data", result),
                }
            }
            Op::Write { ino, fh, offset, data } => {
                let n = self.nodes.get(ino).ok_or("write of an unknown inode")?;
                if n.kind != FileKind::Regular {
                    return self.expect_err(EINVAL, result);
                }
                match result {
                    Ok(Reply::Written(w)) if *w as usize == data.len() => {}
                    _ => return self.unexpected(&format!("Written({})", data.len()), result),
                }
                let append = self.handles.get(fh).is_some_and(|h| h.flags & libc::O_APPEND != 0);
                let n = self.nodes.get_mut(ino).unwrap();
                let at = if append { n.data.len() as u64 } else { *offset };
                write_at(&mut n.data, at, data);
                self.new_version(*ino);
                Ok(())
            }
            Op::Flush { ino, .. } => {
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                self.ack(*ino);
                Ok(())
            }
            Op::Fsync { ino, .. } => {
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                self.sync(*ino);
                Ok(())
            }
            Op::FsyncDir { .. } => match result {
                Ok(Reply::Empty) => Ok(()),
                _ => self.unexpected("success", result),
            },
            Op::ReadDir { .. } => Ok(()), // checked over the whole listing by the harness
            Op::StatFs => match result {
                Ok(Reply::StatFs(s)) if s.namelen == NAME_MAX as u32 && s.bsize > 0 => Ok(()),
                _ => self.unexpected("statfs", result),
            },
            Op::SetXattr { ino, name, value, flags } => {
                if let Some(e) = xattr_name_error(name) {
                    return self.expect_err(e, result);
                }
                if value.len() > XATTR_SIZE_MAX {
                    return self.expect_err(E2BIG, result);
                }
                let n = self.nodes.get(ino).ok_or("setxattr of an unknown inode")?;
                let exists = n.xattrs.contains_key(name);
                if flags & libc::XATTR_CREATE != 0 && exists {
                    return self.expect_err(EEXIST, result);
                }
                if flags & libc::XATTR_REPLACE != 0 && !exists {
                    return self.expect_err(ENODATA, result);
                }
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                self.nodes.get_mut(ino).unwrap().xattrs.insert(name.clone(), value.clone());
                Ok(())
            }
            Op::GetXattr { ino, name, size } => {
                if let Some(e) = xattr_name_error(name) {
                    return self.expect_err(e, result);
                }
                let n = self.nodes.get(ino).ok_or("getxattr of an unknown inode")?;
                let Some(v) = n.xattrs.get(name) else { return self.expect_err(ENODATA, result) };
                sized_check(v, *size, result, self)
            }
            Op::ListXattr { ino, size } => {
                let n = self.nodes.get(ino).ok_or("listxattr of an unknown inode")?;
                let total: usize = n.xattrs.keys().map(|k| k.len() + 1).sum();
                if *size == 0 {
                    return match result {
                        Ok(Reply::XattrSize(s)) if *s as usize == total => Ok(()),
                        _ => self.unexpected(&format!("XattrSize({total})"), result),
                    };
                }
                if total > *size as usize {
                    return self.expect_err(ERANGE, result);
                }
                let Ok(Reply::XattrData(d)) = result else { return self.unexpected("an xattr list", result) };
                let mut got: Vec<&[u8]> = d.split(|b| *b == 0).collect();
                if got.last().is_some_and(|l| l.is_empty()) {
                    got.pop();
                }
                let got: BTreeSet<&[u8]> = got.into_iter().collect();
                let want: BTreeSet<&[u8]> = n.xattrs.keys().map(|k| k.as_slice()).collect();
                if got != want || d.len() != total {
                    return Err(format!("xattr list {:?} != {:?}", got, want));
                }
                Ok(())
            }
            Op::RemoveXattr { ino, name } => {
                if let Some(e) = xattr_name_error(name) {
                    return self.expect_err(e, result);
                }
                let n = self.nodes.get(ino).ok_or("removexattr of an unknown inode")?;
                if !n.xattrs.contains_key(name) {
                    return self.expect_err(ENODATA, result);
                }
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                self.nodes.get_mut(ino).unwrap().xattrs.remove(name);
                Ok(())
            }
            Op::Access { ino, mask } => {
                let n = self.nodes.get(ino).ok_or("access of an unknown inode")?;
                if let Some(old) = self.foreign.get(ino) {
                    // The core may still judge by an owner in its cache.
                    let stale = |uid: u32| may_access(&Node { uid, ..n.clone() }, ctx, *mask);
                    if old.iter().any(|u| stale(*u) != may_access(n, ctx, *mask)) {
                        return match result {
                            Ok(Reply::Empty) | Err(libc::EACCES) => Ok(()),
                            _ => self.unexpected("access granted or EACCES", result),
                        };
                    }
                }
                if may_access(n, ctx, *mask) {
                    match result {
                        Ok(Reply::Empty) => Ok(()),
                        _ => self.unexpected("access granted", result),
                    }
                } else {
                    self.expect_err(libc::EACCES, result)
                }
            }
            Op::Fallocate { ino, offset, length, mode, .. } => {
                if *mode != 0 {
                    return self.expect_err(EOPNOTSUPP, result);
                }
                let n = self.nodes.get(ino).ok_or("fallocate of an unknown inode")?;
                if n.kind != FileKind::Regular {
                    return self.expect_err(ENODEV, result);
                }
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                let end = (offset + length) as usize;
                let n = self.nodes.get_mut(ino).unwrap();
                if n.data.len() < end {
                    n.data.resize(end, 0);
                    self.new_version(*ino);
                }
                Ok(())
            }
            Op::CopyFileRange { ino_in, off_in, ino_out, fh_out, off_out, len, .. } => {
                let src = self.nodes.get(ino_in).ok_or("copy from an unknown inode")?;
                let dst = self.nodes.get(ino_out).ok_or("copy to an unknown inode")?;
                if src.kind != FileKind::Regular || dst.kind != FileKind::Regular {
                    return self.expect_err(EINVAL, result);
                }
                let n = (*len).min(COPY_CHUNK_MAX).min((src.data.len() as u64).saturating_sub(*off_in));
                match result {
                    Ok(Reply::Written(w)) if *w as u64 == n => {}
                    _ => return self.unexpected(&format!("Written({n})"), result),
                }
                if n > 0 {
                    let bytes = src.data[*off_in as usize..(*off_in + n) as usize].to_vec();
                    let append = self.handles.get(fh_out).is_some_and(|h| h.flags & libc::O_APPEND != 0);
                    let dst = self.nodes.get_mut(ino_out).unwrap();
                    let at = if append { dst.data.len() as u64 } else { *off_out };
                    write_at(&mut dst.data, at, &bytes);
                    self.new_version(*ino_out);
                }
                Ok(())
            }
            Op::GetLk { ino, owner, lock, .. } => {
                let Ok(Reply::Lock(l)) = result else { return self.unexpected("a lock", result) };
                let blockers = self.lock_conflicts(*ino, *owner, lock);
                if blockers.is_empty() {
                    if l.typ != libc::F_UNLCK {
                        return Err(format!("GetLk reports {l:?}, but no lock of another owner conflicts"));
                    }
                    return Ok(());
                }
                // Any one of the conflicting locks (or a part of one that overlaps the request).
                let fits = |b: &MLock| {
                    b.typ == l.typ
                        && b.start <= l.start
                        && l.end <= b.end
                        && l.start <= lock.end
                        && lock.start <= l.end
                        && l.pid == lock_pid(b.owner)
                };
                if !blockers.iter().any(fits) {
                    return Err(format!("GetLk reports {l:?}, but the conflicting locks are {blockers:?}"));
                }
                Ok(())
            }
            Op::SetLk { ino, owner, lock, sleep, .. } => {
                if lock.typ != libc::F_UNLCK {
                    let blockers = self.lock_conflicts(*ino, *owner, lock);
                    if let Some(b) = blockers.first() {
                        if *sleep {
                            return Err(format!(
                                "a blocking SetLk ({} {}..={}) was answered while owner {} holds {} {}..={}",
                                lock_name(lock.typ),
                                lock.start,
                                lock.end,
                                b.owner,
                                lock_name(b.typ),
                                b.start,
                                b.end
                            ));
                        }
                        return self.expect_err(EAGAIN, result);
                    }
                }
                let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
                self.lock_set(*ino, *owner, lock);
                Ok(())
            }
        }
    }

    /// Another writer (another host) changed the owner of `ino` in the metadata store.
    pub fn foreign_chown(&mut self, ino: Ino, uid: u32) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            let old = std::mem::replace(&mut n.uid, uid);
            self.foreign.entry(ino).or_default().push(old);
        }
    }

    /// The existing inodes a request names (directly, or as the entry it removes or renames).
    fn inodes_of(&self, op: &Op) -> Vec<Ino> {
        match op {
            Op::Unlink { parent, name } | Op::RmDir { parent, name } | Op::Lookup { parent, name } => {
                vec![*parent].into_iter().chain(self.child(*parent, name)).collect()
            }
            Op::Rename { parent, name, newparent, newname, .. } => vec![*parent, *newparent]
                .into_iter()
                .chain(self.child(*parent, name))
                .chain(self.child(*newparent, newname))
                .collect(),
            Op::Link { ino, newparent, .. } => vec![*ino, *newparent],
            Op::CopyFileRange { ino_in, ino_out, .. } => vec![*ino_in, *ino_out],
            Op::MkNod { parent, .. } | Op::MkDir { parent, .. } | Op::Symlink { parent, .. } | Op::Create { parent, .. } => {
                vec![*parent]
            }
            Op::StatFs => vec![],
            Op::GetAttr { ino }
            | Op::SetAttr { ino, .. }
            | Op::ReadLink { ino }
            | Op::Open { ino, .. }
            | Op::Read { ino, .. }
            | Op::Write { ino, .. }
            | Op::Flush { ino, .. }
            | Op::Fsync { ino, .. }
            | Op::Release { ino, .. }
            | Op::OpenDir { ino, .. }
            | Op::ReadDir { ino, .. }
            | Op::ReleaseDir { ino, .. }
            | Op::FsyncDir { ino, .. }
            | Op::SetXattr { ino, .. }
            | Op::GetXattr { ino, .. }
            | Op::ListXattr { ino, .. }
            | Op::RemoveXattr { ino, .. }
            | Op::Access { ino, .. }
            | Op::GetLk { ino, .. }
            | Op::SetLk { ino, .. }
            | Op::Fallocate { ino, .. } => vec![*ino],
        }
    }

    // ----- record locks -----

    /// The locks of other owners that conflict with `want` (two read locks do not conflict).
    pub fn lock_conflicts(&self, ino: Ino, owner: u64, want: &LockRange) -> Vec<MLock> {
        self.locks
            .get(&ino)
            .map(|ls| {
                ls.iter()
                    .filter(|l| {
                        l.owner != owner
                            && l.start <= want.end
                            && want.start <= l.end
                            && (l.typ == libc::F_WRLCK || want.typ == libc::F_WRLCK)
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Set `owner`'s lock on the range (or unlock it): what the owner held there is replaced.
    fn lock_set(&mut self, ino: Ino, owner: u64, want: &LockRange) {
        let ls = self.locks.entry(ino).or_default();
        let mut out: Vec<MLock> = Vec::new();
        for l in ls.drain(..) {
            if l.owner != owner || l.end < want.start || want.end < l.start {
                out.push(l);
                continue;
            }
            if l.start < want.start {
                out.push(MLock { end: want.start - 1, ..l });
            }
            if l.end > want.end {
                out.push(MLock { start: want.end + 1, ..l });
            }
        }
        if want.typ != libc::F_UNLCK {
            out.push(MLock { owner, start: want.start, end: want.end, typ: want.typ });
        }
        // Maximal runs: join touching locks of one owner and type.
        out.sort_by_key(|l| (l.owner, l.typ, l.start));
        let mut runs: Vec<MLock> = Vec::new();
        for l in out {
            if let Some(r) = runs.last_mut() {
                if r.owner == l.owner && r.typ == l.typ && l.start <= r.end.saturating_add(1) {
                    r.end = r.end.max(l.end);
                    continue;
                }
            }
            runs.push(l);
        }
        if runs.is_empty() {
            self.locks.remove(&ino);
        } else {
            *ls = runs;
        }
    }

    fn lock_release_owner(&mut self, ino: Ino, owner: u64) {
        if let Some(ls) = self.locks.get_mut(&ino) {
            ls.retain(|l| l.owner != owner);
            if ls.is_empty() {
                self.locks.remove(&ino);
            }
        }
    }

    // ----- times -----

    /// `ino`'s mtime (if `m`) and ctime (if `c`) are at least `t` from now on.
    fn bump(&mut self, ino: Ino, m: bool, c: bool, t: Timespec) {
        if !self.nodes.contains_key(&ino) {
            return;
        }
        let e = self.times.entry(ino).or_default();
        if m {
            e.0 = e.0.max(t);
        }
        if c {
            e.1 = e.1.max(t);
        }
    }

    /// After a successful request: the times it must have changed, and the times it showed
    /// (they never go back).
    fn bump_times(&mut self, op: &Op, result: &Result<Reply, i32>, t: Timespec, same_rename: bool) {
        match op {
            Op::Write { ino, .. } => self.bump(*ino, true, true, t),
            Op::SetAttr { ino, set, .. } => {
                let m = set.size.is_some() || set.mtime == Some(SetTime::Now);
                self.bump(*ino, m, true, t);
            }
            Op::SetXattr { ino, .. } | Op::RemoveXattr { ino, .. } => self.bump(*ino, false, true, t),
            Op::Link { ino, newparent, .. } => {
                self.bump(*ino, false, true, t);
                self.bump(*newparent, true, true, t);
            }
            Op::Create { parent, .. } | Op::MkDir { parent, .. } | Op::MkNod { parent, .. } | Op::Symlink { parent, .. } => {
                self.bump(*parent, true, true, t);
                let new = match result {
                    Ok(Reply::Entry(a)) | Ok(Reply::Created { attr: a, .. }) => Some(a.ino),
                    _ => None,
                };
                if let Some(ino) = new {
                    self.bump(ino, true, true, t);
                }
            }
            Op::Unlink { parent, .. } | Op::RmDir { parent, .. } => self.bump(*parent, true, true, t),
            Op::Rename { parent, newparent, newname, .. } if !same_rename => {
                // Applied already: the new name holds the moved inode.
                let moved = self.child(*newparent, newname);
                self.bump(*parent, true, true, t);
                self.bump(*newparent, true, true, t);
                if let Some(ino) = moved {
                    self.bump(ino, false, true, t);
                }
            }
            _ => {}
        }
        let seen: Vec<Attr> = match result {
            Ok(Reply::Entry(a)) | Ok(Reply::Attr(a)) | Ok(Reply::Created { attr: a, .. }) => vec![*a],
            _ => vec![],
        };
        for a in seen {
            if !self.unsettled.contains(&a.ino) {
                self.bump(a.ino, true, false, a.mtime);
                self.bump(a.ino, false, true, a.ctime);
            }
        }
    }

    fn add_handle(&mut self, fh: u64, ino: Ino, flags: i32, dir: bool) -> Check {
        if self.handles.insert(fh, MHandle { ino, flags, dir }).is_some() {
            return Err(format!("handle {fh} handed out twice"));
        }
        self.nodes.get_mut(&ino).unwrap().opens += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn check_create(
        &mut self,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        rdev: u32,
        target: Option<Vec<u8>>,
        ctx: Ctx,
        result: &Result<Reply, i32>,
        open_flags: Option<i32>,
    ) -> Check {
        if name.len() > NAME_MAX {
            return self.expect_err(ENAMETOOLONG, result);
        }
        let dir = match self.dir_of(parent) {
            Ok(d) => d,
            Err(e) => return self.expect_err(e, result),
        };
        if dir.children.contains_key(name) {
            return self.expect_err(EEXIST, result);
        }
        let mut perm = (mode & 0o7777) as u16;
        let mut gid = ctx.gid;
        if dir.perm & libc::S_ISGID as u16 != 0 {
            gid = dir.gid;
            if kind == FileKind::Directory {
                perm |= libc::S_ISGID as u16;
            }
        }
        let (attr, fh) = match (result, open_flags) {
            (Ok(Reply::Entry(a)), None) => (*a, None),
            (Ok(Reply::Created { attr, fh }), Some(_)) => (*attr, Some(*fh)),
            _ => return self.unexpected(if open_flags.is_some() { "Created" } else { "an entry" }, result),
        };
        let ino = attr.ino;
        if self.nodes.contains_key(&ino) || ino == 0 {
            return Err(format!("create returned inode {ino}, which is already in use"));
        }
        let mut node = Node::new(kind, perm, ctx.uid, gid, parent);
        node.rdev = rdev;
        if let Some(t) = target {
            node.target = t;
        }
        self.nodes.insert(ino, node);
        let dir = self.nodes.get_mut(&parent).unwrap();
        dir.children.insert(name.to_vec(), ino);
        if kind == FileKind::Directory {
            dir.nlink += 1;
        }
        if let (Some(fh), Some(flags)) = (fh, open_flags) {
            self.add_handle(fh, ino, flags, false)?;
        }
        self.check_attr(ino, &attr)
    }

    fn check_rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
        result: &Result<Reply, i32>,
    ) -> Check {
        const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
        const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
        if flags & !(NOREPLACE | EXCHANGE) != 0 || flags == NOREPLACE | EXCHANGE {
            return self.expect_err(EINVAL, result);
        }
        if name.len() > NAME_MAX || newname.len() > NAME_MAX {
            return self.expect_err(ENAMETOOLONG, result);
        }
        for p in [parent, newparent] {
            if let Err(e) = self.dir_of(p) {
                return self.expect_err(e, result);
            }
        }
        // Everything up to the type checks is decided by the VFS before the filesystem is asked
        // (do_renameat2, lock_rename's trap, vfs_rename, may_delete), in this order.
        let Some(src) = self.child(parent, name) else {
            return self.kernel_err("rename of a missing name", ENOENT, result, false);
        };
        let dst = self.child(newparent, newname);
        let same = dst == Some(src);
        if flags & NOREPLACE != 0 && dst.is_some() {
            return self.kernel_err("rename NOREPLACE onto an existing name", EEXIST, result, same);
        }
        if flags & EXCHANGE != 0 && dst.is_none() {
            return self.kernel_err("rename EXCHANGE with a missing target", ENOENT, result, false);
        }
        let src_dir = self.nodes[&src].kind == FileKind::Directory;
        // The source may not be an ancestor of the target's directory.
        if src_dir && self.is_within(newparent, src) {
            return self.kernel_err("rename of a directory into itself", EINVAL, result, same);
        }
        // The target may not be an ancestor of the source's directory.
        if let Some(d) = dst {
            if self.nodes[&d].kind == FileKind::Directory && self.is_within(parent, d) {
                let e = if flags & EXCHANGE != 0 { EINVAL } else { ENOTEMPTY };
                return self.kernel_err("rename onto an ancestor of the source", e, result, false);
            }
        }
        if same {
            // vfs_rename returns 0 for the same inode without asking the filesystem.
            return match result {
                Ok(Reply::Empty) => Ok(()),
                Err(e) if !self.strict => {
                    let what = if flags & EXCHANGE != 0 { "rename EXCHANGE of an inode with itself" } else { "rename of an inode onto itself" };
                    *self.divergences.entry(format!("{what}: Linux success, core {}", errno(*e))).or_default() += 1;
                    Ok(())
                }
                _ => self.unexpected("success (same inode)", result),
            };
        }
        if flags & EXCHANGE == 0 {
            if let Some(d) = dst {
                let dn = &self.nodes[&d];
                let dst_dir = dn.kind == FileKind::Directory;
                let empty = dn.children.is_empty();
                if src_dir && !dst_dir {
                    return self.kernel_err("rename of a directory onto a non-directory", ENOTDIR, result, false);
                }
                if !src_dir && dst_dir {
                    return self.kernel_err("rename of a non-directory onto a directory", EISDIR, result, false);
                }
                if dst_dir && !empty {
                    return self.expect_err(ENOTEMPTY, result);
                }
            }
        }
        let Ok(Reply::Empty) = result else { return self.unexpected("success", result) };
        if flags & EXCHANGE != 0 {
            let dst = dst.unwrap();
            self.nodes.get_mut(&parent).unwrap().children.insert(name.to_vec(), dst);
            self.nodes.get_mut(&newparent).unwrap().children.insert(newname.to_vec(), src);
            if parent != newparent {
                let dst_dir = self.nodes[&dst].kind == FileKind::Directory;
                if src_dir != dst_dir {
                    let (from, to) = if src_dir { (parent, newparent) } else { (newparent, parent) };
                    self.nodes.get_mut(&from).unwrap().nlink -= 1;
                    self.nodes.get_mut(&to).unwrap().nlink += 1;
                }
                if src_dir {
                    self.nodes.get_mut(&src).unwrap().parent = newparent;
                }
                if dst_dir {
                    self.nodes.get_mut(&dst).unwrap().parent = parent;
                }
            }
            return Ok(());
        }
        self.nodes.get_mut(&parent).unwrap().children.remove(name);
        if let Some(d) = dst {
            let dst_dir = self.nodes[&d].kind == FileKind::Directory;
            if dst_dir {
                self.nodes.get_mut(&newparent).unwrap().nlink -= 1;
                self.nodes.get_mut(&d).unwrap().nlink = 0;
            } else {
                self.nodes.get_mut(&d).unwrap().nlink -= 1;
            }
            self.drop_if_unused(d);
        }
        self.nodes.get_mut(&newparent).unwrap().children.insert(newname.to_vec(), src);
        if src_dir && parent != newparent {
            self.nodes.get_mut(&parent).unwrap().nlink -= 1;
            self.nodes.get_mut(&newparent).unwrap().nlink += 1;
            self.nodes.get_mut(&src).unwrap().parent = newparent;
        }
        Ok(())
    }

    /// Internal consistency of the model itself (link counts, parents).
    pub fn self_check(&self) -> Check {
        let mut links: HashMap<Ino, u32> = HashMap::new();
        let mut subdirs: HashMap<Ino, u32> = HashMap::new();
        for (ino, n) in &self.nodes {
            for c in n.children.values() {
                *links.entry(*c).or_default() += 1;
                let cn = self.nodes.get(c).ok_or_else(|| format!("model: {ino} lists missing child {c}"))?;
                if cn.kind == FileKind::Directory {
                    *subdirs.entry(*ino).or_default() += 1;
                    if cn.parent != *ino {
                        return Err(format!("model: dir {c} in {ino} has parent {}", cn.parent));
                    }
                }
            }
        }
        for (ino, n) in &self.nodes {
            let want = if n.kind == FileKind::Directory {
                if *ino != ROOT_INO && links.get(ino).copied().unwrap_or(0) == 0 {
                    0
                } else {
                    2 + subdirs.get(ino).copied().unwrap_or(0)
                }
            } else {
                links.get(ino).copied().unwrap_or(0)
            };
            if n.nlink != want {
                return Err(format!("model: inode {ino} nlink {} but {} links", n.nlink, want));
            }
        }
        Ok(())
    }
}

fn xattr_name_error(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 255 {
        return Some(ERANGE);
    }
    const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    if !NAMESPACES.iter().any(|ns| name.starts_with(ns) && name.len() > ns.len()) {
        return Some(EOPNOTSUPP);
    }
    None
}

fn sized_check(v: &Bytes, size: u32, result: &Result<Reply, i32>, m: &Model) -> Check {
    if size == 0 {
        return match result {
            Ok(Reply::XattrSize(s)) if *s as usize == v.len() => Ok(()),
            _ => m.unexpected(&format!("XattrSize({})", v.len()), result),
        };
    }
    if v.len() > size as usize {
        return m.expect_err(ERANGE, result);
    }
    match result {
        Ok(Reply::XattrData(d)) if d == v => Ok(()),
        _ => m.unexpected(&format!("XattrData({:?})", v), result),
    }
}

/// `access(2)` for a caller without supplementary groups; root may read and write anything and
/// execute what has an execute bit (or is a directory).
fn may_access(n: &Node, ctx: Ctx, mask: i32) -> bool {
    if mask == libc::F_OK {
        return true;
    }
    let perm = n.perm as i32;
    if ctx.uid == 0 {
        return mask & libc::X_OK == 0 || n.kind == FileKind::Directory || perm & 0o111 != 0;
    }
    let bits = if ctx.uid == n.uid {
        (perm >> 6) & 7
    } else if ctx.gid == n.gid {
        (perm >> 3) & 7
    } else {
        perm & 7
    };
    mask & !bits & 7 == 0
}

fn short_reply(r: &Reply) -> String {
    crate::trace::Event::Reply { at_us: 0, id: truckeefs_core::RequestId(0), result: Ok(r.clone()) }
        .render()
        .split("<- ")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

pub fn first_diff(want: &[u8], got: &[u8]) -> String {
    match want.iter().zip(got.iter()).position(|(a, b)| a != b) {
        Some(i) => format!("; first difference at byte {i}: expected {:#04x}, got {:#04x}", want[i], got[i]),
        None if want.len() != got.len() => format!("; same bytes up to {}", want.len().min(got.len())),
        None => String::new(),
    }
}
