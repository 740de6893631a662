//! The random operation generator: what a user of the mount does next.
//!
//! Names come from a small pool (`a`..`e`) so that creates collide, renames replace, and lookups
//! miss; paths are at most three directories deep. Each [`Action`] is what one system call does;
//! the harness turns it into the kernel requests (lookups first, like the kernel).

use crate::model::Model;
use crate::rng::Rng;
use bytes::Bytes;
use truckeefs_core::{FileKind, Ino};

pub type Name = Vec<u8>;
pub type Path = Vec<Name>;

/// A file the kernel has open on behalf of a user.
#[derive(Clone, Debug)]
pub struct OpenFile {
    pub fh: u64,
    pub ino: Ino,
    pub flags: i32,
    pub lock_owner: u64,
}

impl OpenFile {
    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }
    pub fn readable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_WRONLY
    }
    pub fn append(&self) -> bool {
        self.flags & libc::O_APPEND != 0
    }
}

#[derive(Clone, Debug)]
pub enum Action {
    Lookup { path: Path },
    GetAttr { path: Path },
    Create { dir: Path, name: Name, mode: u32, umask: u32, flags: i32, keep_open: bool },
    MkDir { dir: Path, name: Name, mode: u32, umask: u32 },
    MkNod { dir: Path, name: Name, mode: u32, umask: u32 },
    Symlink { dir: Path, name: Name, target: Vec<u8> },
    Link { src: Path, dir: Path, name: Name },
    Unlink { dir: Path, name: Name },
    RmDir { dir: Path, name: Name },
    Rename { dir: Path, name: Name, newdir: Path, newname: Name, flags: u32 },
    Open { path: Path, flags: i32, trunc: bool },
    Write { fh: u64, offset: u64, data: Bytes },
    Read { fh: u64, offset: u64, len: u32 },
    Truncate { path: Path, size: u64 },
    FTruncate { fh: u64, size: u64 },
    Close { fh: u64 },
    Fsync { fh: u64, datasync: bool },
    Chmod { path: Path, mode: u32 },
    Chown { path: Path, uid: u32, gid: u32 },
    SetXattr { path: Path, name: Vec<u8>, value: Bytes, flags: i32 },
    GetXattr { path: Path, name: Vec<u8>, size: u32 },
    ListXattr { path: Path, size: u32 },
    RemoveXattr { path: Path, name: Vec<u8> },
    ReadLink { path: Path },
    ReadDir { dir: Path, plus: bool, bufsize: u32 },
    Access { path: Path, mask: i32, who: usize },
    StatFs,
    Fallocate { fh: u64, offset: u64, len: u64, mode: i32 },
    CopyRange { from: u64, to: u64, off_in: u64, off_out: u64, len: u64 },
    /// `fcntl(F_GETLK)` through a handle (its lock owner asks).
    GetLk { fh: u64, lock: Lock },
    /// `fcntl(F_SETLK)`: set or clear a lock without waiting.
    SetLk { fh: u64, lock: Lock },
    /// The holder takes a lock, the waiter asks for a conflicting one with `F_SETLKW` and sleeps;
    /// then the holders let go one by one (unlock or close) until the waiter gets it.
    LockWait { holder: u64, hold: Lock, waiter: u64, want: Lock },
    /// The kernel drops cached inodes.
    Forget,
    /// Virtual time passes (timers fire, uploads start).
    Sleep { ms: u64 },
    /// Open, flush and close a file: acknowledges its content.
    Ack { path: Path },
}

impl Action {
    /// Requests that must not run while others are in flight (they read or change much).
    pub fn exclusive(&self) -> bool {
        matches!(
            self,
            Action::Rename { .. }
                | Action::ReadDir { .. }
                | Action::StatFs
                | Action::Forget
                | Action::Sleep { .. }
                | Action::LockWait { .. }
        )
    }
}

/// A record lock range: `start..=end` (`end == u64::MAX`: to the end of the file), `typ` is
/// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub start: u64,
    pub end: u64,
    pub typ: i32,
}

/// A small range, so that locks of different owners overlap often.
fn lock_range(rng: &mut Rng, typ: i32) -> Lock {
    let start = rng.below(48);
    let end = if rng.chance(0.15) { u64::MAX } else { start + rng.below(24) };
    Lock { start, end, typ }
}

/// The lock type a handle may take (the kernel wants a readable file for a read lock and a
/// writable one for a write lock, and answers EBADF itself otherwise).
fn lock_type(rng: &mut Rng, h: &OpenFile) -> i32 {
    match (h.readable(), h.writable()) {
        (true, true) => *rng.pick(&[libc::F_RDLCK, libc::F_WRLCK]),
        (false, true) => libc::F_WRLCK,
        _ => libc::F_RDLCK,
    }
}

const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];
const XATTR_NAMES: [&[u8]; 4] = [b"user.a", b"user.b", b"user.long.name.c", b"user.d"];
pub const MAX_DEPTH: usize = 3;
/// Files stay below this size (plus one write), so versions stay cheap to keep.
pub const MAX_FILE: u64 = 96 * 1024;

/// What the generator can see.
pub struct View<'a> {
    pub model: &'a Model,
    /// Every reachable inode with one path (from `Model::walk`).
    pub entries: &'a [(Path, Ino)],
    pub open: &'a [OpenFile],
}

impl View<'_> {
    fn of_kind(&self, kinds: &[FileKind]) -> Vec<&(Path, Ino)> {
        self.entries.iter().filter(|(_, ino)| kinds.contains(&self.model.nodes[ino].kind)).collect()
    }
}

fn name(rng: &mut Rng) -> Name {
    match rng.below(200) {
        0 => vec![b'L'; 255],
        1 => vec![b'T'; 256],
        _ => rng.pick(&NAMES).to_vec(),
    }
}

fn data(rng: &mut Rng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    // Runs of one byte with a random start: cheap, and a misplaced block shows.
    let base = rng.next_u64() as u8;
    if rng.chance(0.5) {
        for (i, b) in v.iter_mut().enumerate() {
            *b = base.wrapping_add((i / 7) as u8) | 1;
        }
    } else {
        rng.fill(&mut v);
    }
    Bytes::from(v)
}

fn mode(rng: &mut Rng) -> u32 {
    *rng.pick(&[0o644, 0o600, 0o755, 0o700, 0o444, 0o640])
}

fn umask(rng: &mut Rng) -> u32 {
    *rng.pick(&[0o022, 0o022, 0o002, 0o077, 0])
}

fn offset(rng: &mut Rng, size: u64) -> u64 {
    match rng.below(10) {
        0 => 0,
        1..=5 => rng.below(size + 1),
        6..=7 => size,
        8 => size + rng.below(4096),
        _ => rng.below(MAX_FILE / 2),
    }
}

/// Draw the next action.
pub fn generate(rng: &mut Rng, v: &View<'_>) -> Action {
    let dirs = v.of_kind(&[FileKind::Directory]);
    let files = v.of_kind(&[FileKind::Regular]);
    let any = v.entries;
    let writable: Vec<&OpenFile> = v.open.iter().filter(|h| h.writable()).collect();
    let readable: Vec<&OpenFile> = v.open.iter().filter(|h| h.readable()).collect();

    // A random directory (and a name in it), a random existing entry.
    let pick_dir = |rng: &mut Rng| -> Path { rng.pick(&dirs).0.clone() };
    let pick_in = |rng: &mut Rng, dir: &Path| -> Name {
        let ino = v.entries.iter().find(|(p, _)| p == dir).map(|(_, i)| *i);
        let children: Vec<&Name> =
            ino.and_then(|i| v.model.nodes.get(&i)).map(|n| n.children.keys().collect()).unwrap_or_default();
        if !children.is_empty() && rng.chance(0.7) {
            (*rng.pick(&children)).clone()
        } else {
            name(rng)
        }
    };
    let pick_any = |rng: &mut Rng| -> Path { rng.pick(any).0.clone() };
    let pick_file = |rng: &mut Rng| -> Option<Path> {
        if files.is_empty() {
            None
        } else {
            Some(rng.pick(&files).0.clone())
        }
    };
    let size_of = |ino: Ino| v.model.nodes.get(&ino).map_or(0, |n| n.data.len() as u64);

    #[rustfmt::skip]
    let weights = [
        10, // 0 create
        5,  // 1 mkdir
        1,  // 2 mknod
        3,  // 3 symlink
        3,  // 4 link
        6,  // 5 unlink
        3,  // 6 rmdir
        6,  // 7 rename
        8,  // 8 open
        22, // 9 write
        8,  // 10 read
        3,  // 11 truncate by path
        3,  // 12 ftruncate
        9,  // 13 close
        4,  // 14 fsync
        2,  // 15 chmod
        1,  // 16 chown
        4,  // 17 setxattr
        3,  // 18 getxattr
        2,  // 19 listxattr
        2,  // 20 removexattr
        2,  // 21 readlink
        3,  // 22 readdir
        4,  // 23 getattr
        3,  // 24 lookup
        2,  // 25 access
        1,  // 26 statfs
        2,  // 27 fallocate
        2,  // 28 copy range
        2,  // 29 forget
        3,  // 30 sleep
        2,  // 31 getlk
        3,  // 32 setlk
        2,  // 33 setlkw
    ];
    for _ in 0..20 {
        let a = match rng.weighted(&weights) {
            0 => {
                let dir = pick_dir(rng);
                let flags = libc::O_CREAT
                    | *rng.pick(&[libc::O_RDWR, libc::O_RDWR, libc::O_WRONLY])
                    | if rng.chance(0.1) { libc::O_APPEND } else { 0 }
                    | if rng.chance(0.3) { libc::O_EXCL } else { 0 };
                Some(Action::Create {
                    name: pick_in(rng, &dir),
                    dir,
                    mode: mode(rng),
                    umask: umask(rng),
                    flags,
                    keep_open: rng.chance(0.7),
                })
            }
            1 => {
                let dir = pick_dir(rng);
                if dir.len() >= MAX_DEPTH {
                    None
                } else {
                    let m = if rng.chance(0.1) { 0o2775 } else { mode(rng) | 0o700 };
                    Some(Action::MkDir { name: pick_in(rng, &dir), dir, mode: m, umask: umask(rng) })
                }
            }
            2 => {
                let dir = pick_dir(rng);
                let kind = if rng.chance(0.5) { libc::S_IFIFO } else { libc::S_IFREG };
                Some(Action::MkNod { name: pick_in(rng, &dir), dir, mode: kind | mode(rng), umask: umask(rng) })
            }
            3 => {
                let dir = pick_dir(rng);
                let target = match rng.below(20) {
                    0 => vec![b'x'; 4096],
                    1 => vec![b'y'; 4095],
                    _ => rng.pick(&[&b"a"[..], b"../b", b"/tmp/x", b"c/d/e"]).to_vec(),
                };
                Some(Action::Symlink { name: pick_in(rng, &dir), dir, target })
            }
            4 => {
                let src = if rng.chance(0.9) { pick_file(rng) } else { Some(pick_any(rng)) };
                src.filter(|p| !p.is_empty()).map(|src| {
                    let dir = pick_dir(rng);
                    Action::Link { src, name: pick_in(rng, &dir), dir }
                })
            }
            5 => {
                let dir = pick_dir(rng);
                Some(Action::Unlink { name: pick_in(rng, &dir), dir })
            }
            6 => {
                let dir = pick_dir(rng);
                Some(Action::RmDir { name: pick_in(rng, &dir), dir })
            }
            7 => {
                let dir = pick_dir(rng);
                let newdir = pick_dir(rng);
                let flags = match rng.below(10) {
                    0 => libc::RENAME_NOREPLACE,
                    1 => libc::RENAME_EXCHANGE,
                    _ => 0,
                };
                Some(Action::Rename { name: pick_in(rng, &dir), dir, newname: pick_in(rng, &newdir), newdir, flags })
            }
            8 => pick_file(rng).map(|path| {
                let acc = *rng.pick(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR, libc::O_RDWR]);
                let append = if rng.chance(0.1) { libc::O_APPEND } else { 0 };
                let trunc = acc != libc::O_RDONLY && rng.chance(0.1);
                Action::Open { path, flags: acc | append | if trunc { libc::O_TRUNC } else { 0 }, trunc }
            }),
            9 => {
                if writable.is_empty() {
                    None
                } else {
                    let h = rng.pick(&writable);
                    let size = size_of(h.ino);
                    let len = match rng.below(10) {
                        0 => 1,
                        1..=6 => rng.range(1, 512),
                        7..=8 => rng.range(512, 4096),
                        _ => rng.range(4096, 20000),
                    };
                    let off = offset(rng, size);
                    if off + len > MAX_FILE {
                        None
                    } else {
                        Some(Action::Write { fh: h.fh, offset: off, data: data(rng, len as usize) })
                    }
                }
            }
            10 => {
                if readable.is_empty() {
                    None
                } else {
                    let h = rng.pick(&readable);
                    let size = size_of(h.ino);
                    Some(Action::Read { fh: h.fh, offset: offset(rng, size), len: rng.range(1, 32768) as u32 })
                }
            }
            11 => truncate_action(rng, v),
            12 => {
                if writable.is_empty() {
                    None
                } else {
                    let h = rng.pick(&writable);
                    let size = size_of(h.ino);
                    Some(Action::FTruncate { fh: h.fh, size: truncate_size(rng, size) })
                }
            }
            13 => {
                if v.open.is_empty() {
                    None
                } else {
                    Some(Action::Close { fh: rng.pick(v.open).fh })
                }
            }
            14 => {
                if v.open.is_empty() {
                    None
                } else {
                    Some(Action::Fsync { fh: rng.pick(v.open).fh, datasync: rng.chance(0.3) })
                }
            }
            15 => {
                let path = pick_any(rng);
                let m = if rng.chance(0.1) { 0o2775 } else { mode(rng) };
                Some(Action::Chmod { path, mode: m })
            }
            16 => Some(Action::Chown { path: pick_any(rng), uid: *rng.pick(&[0, 1000, 1001]), gid: *rng.pick(&[0, 1000, 1001]) }),
            17..=20 => {
                // User xattrs exist on regular files and directories only (the kernel refuses
                // them elsewhere before asking the filesystem).
                let targets = v.of_kind(&[FileKind::Regular, FileKind::Directory]);
                let path = rng.pick(&targets).0.clone();
                let xname = match rng.below(30) {
                    0 => b"other.x".to_vec(),
                    1 => b"user.".to_vec(),
                    _ => rng.pick(&XATTR_NAMES).to_vec(),
                };
                Some(match rng.below(4) {
                    0 => {
                        let len = rng.below(40) as usize;
                        let flags = match rng.below(6) {
                            0 => libc::XATTR_CREATE,
                            1 => libc::XATTR_REPLACE,
                            _ => 0,
                        };
                        Action::SetXattr { path, name: xname, value: data(rng, len), flags }
                    }
                    1 => Action::GetXattr { path, name: xname, size: *rng.pick(&[0, 0, 4, 64, 64, 1024]) },
                    2 => Action::ListXattr { path, size: *rng.pick(&[0, 0, 8, 256, 4096]) },
                    _ => Action::RemoveXattr { path, name: xname },
                })
            }
            21 => {
                let links = v.of_kind(&[FileKind::Symlink]);
                if links.is_empty() || rng.chance(0.1) {
                    Some(Action::ReadLink { path: pick_any(rng) }).filter(|a| matches!(a, Action::ReadLink { path } if !path.is_empty()))
                } else {
                    Some(Action::ReadLink { path: rng.pick(&links).0.clone() })
                }
            }
            22 => Some(Action::ReadDir { dir: pick_dir(rng), plus: rng.chance(0.5), bufsize: *rng.pick(&[512, 1024, 4096, 4096]) }),
            23 => Some(Action::GetAttr { path: pick_any(rng) }),
            24 => {
                let dir = pick_dir(rng);
                let n = pick_in(rng, &dir);
                let mut path = dir;
                path.push(n);
                Some(Action::Lookup { path })
            }
            25 => Some(Action::Access {
                path: pick_any(rng),
                mask: *rng.pick(&[libc::F_OK, libc::R_OK, libc::W_OK, libc::X_OK, libc::R_OK | libc::W_OK]),
                who: rng.below(3) as usize,
            }),
            26 => Some(Action::StatFs),
            27 => {
                if writable.is_empty() {
                    None
                } else {
                    let h = rng.pick(&writable);
                    let size = size_of(h.ino);
                    let off = offset(rng, size);
                    let len = rng.range(1, 8192);
                    let mode = if rng.chance(0.1) { libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE } else { 0 };
                    (off + len <= MAX_FILE).then_some(Action::Fallocate { fh: h.fh, offset: off, len, mode })
                }
            }
            28 => {
                if readable.is_empty() || writable.is_empty() {
                    None
                } else {
                    let from = rng.pick(&readable);
                    let to = rng.pick(&writable);
                    if from.ino == to.ino || to.append() {
                        None
                    } else {
                        let off_in = offset(rng, size_of(from.ino));
                        let off_out = offset(rng, size_of(to.ino));
                        let len = rng.range(1, 16384);
                        (off_out + len <= MAX_FILE).then_some(Action::CopyRange {
                            from: from.fh,
                            to: to.fh,
                            off_in,
                            off_out,
                            len,
                        })
                    }
                }
            }
            29 => Some(Action::Forget),
            30 => Some(Action::Sleep { ms: *rng.pick(&[10, 100, 1000, 3000, 8000, 15000]) }),
            31 => {
                if v.open.is_empty() {
                    None
                } else {
                    let h = rng.pick(v.open);
                    let typ = *rng.pick(&[libc::F_RDLCK, libc::F_WRLCK]);
                    Some(Action::GetLk { fh: h.fh, lock: lock_range(rng, typ) })
                }
            }
            32 => {
                if v.open.is_empty() {
                    None
                } else {
                    let h = rng.pick(v.open);
                    let typ = if rng.chance(0.25) { libc::F_UNLCK } else { lock_type(rng, h) };
                    Some(Action::SetLk { fh: h.fh, lock: lock_range(rng, typ) })
                }
            }
            _ => {
                // Two handles of one file (two lock owners).
                if v.open.is_empty() {
                    None
                } else {
                    let h = rng.pick(v.open);
                    let others: Vec<&OpenFile> = v.open.iter().filter(|o| o.ino == h.ino && o.fh != h.fh).collect();
                    if others.is_empty() {
                        None
                    } else {
                        let w = rng.pick(&others);
                        let typ = lock_type(rng, h);
                        let hold = lock_range(rng, typ);
                        // Overlapping the held range.
                        let start = rng.range(hold.start.saturating_sub(8), hold.start + 8);
                        let end = if rng.chance(0.15) { u64::MAX } else { start + rng.below(24) };
                        let want = Lock { start, end, typ: lock_type(rng, w) };
                        Some(Action::LockWait { holder: h.fh, hold, waiter: w.fh, want })
                    }
                }
            }
        };
        if let Some(a) = a {
            return a;
        }
    }
    Action::Sleep { ms: 1 }
}

fn truncate_size(rng: &mut Rng, size: u64) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => size,
        2 | 3 => rng.below(size + 1),
        _ => (size + rng.below(8192)).min(MAX_FILE),
    }
}

/// A truncate of a path to a random size (regular files mostly).
pub fn truncate_action(rng: &mut Rng, v: &View<'_>) -> Option<Action> {
    let files = v.of_kind(&[FileKind::Regular]);
    let (path, ino) = if files.is_empty() || rng.chance(0.05) { rng.pick(v.entries).clone() } else { (*rng.pick(&files)).clone() };
    if path.is_empty() {
        return None;
    }
    let size = v.model.nodes.get(&ino).map_or(0, |n| n.data.len() as u64);
    Some(Action::Truncate { path, size: truncate_size(rng, size) })
}
