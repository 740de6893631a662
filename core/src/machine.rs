//! The filesystem state machine: [`Core`].
//!
//! Methods fall into four groups, used in this order by a runtime:
//! - inputs: [`Core::handle_request`], [`Core::handle_forget`], [`Core::handle_completion`],
//!   [`Core::handle_timeout`], [`Core::begin_shutdown`];
//! - drains: [`Core::poll_effect`] (call until `None` after every input) and
//!   [`Core::poll_timeout`] (the next deadline; a spurious timeout is harmless);
//! - getters: [`Core::is_idle`], [`Core::status`].
//!
//! How a request runs: `exec` first makes sure everything it needs is in memory (inodes,
//! directory listings, fresh ids, a staged copy of the file). Anything missing is asked for with
//! an I/O effect and the request is parked; it runs again from the start when a load completes,
//! so nothing before the last `ensure_*` call may change state. Once everything is there the
//! request decides, changes the in-memory state, and either replies at once (reads of cached
//! state) or emits a metadata transaction and replies when it has committed. Transactions run in
//! emission order, so the in-memory state is always the store's state plus the transactions
//! still in flight.
//!
//! File data: a regular file's contents are one object in the store (`row.object`). The first
//! change creates a staged copy (the staging area); reads and writes then use it. Close
//! (flush) seals it — durable locally, with a journal record — and starts an upload; fsync waits
//! until the upload's object is committed to the metadata store. Only then is the staged copy
//! released. Nothing acknowledged is ever dropped: a staged copy outlives failures and restarts
//! (the journal is replayed at start).

use crate::dir::{Dentry, Dir};
use crate::io::*;
use crate::locks::LockTable;
use crate::meta_order::{MetaOrder, Next};
use crate::op::*;
use crate::perm;
use crate::types::*;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use libc::{
    E2BIG, EAGAIN, EEXIST, EINVAL, EIO, EISDIR, EMLINK, ENAMETOOLONG, ENODATA, ENOENT,
    ENOSPC, ENOTDIR, ENOTEMPTY, EOPNOTSUPP, EPERM, ERANGE, ESTALE, EACCES,
};

/// The most links one inode may have (ext4's `EXT4_LINK_MAX`).
pub const LINK_MAX: u32 = 65000;
/// The largest extended attribute value (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// How often a lock request blocked by another host's lock tries again.
const LOCK_POLL: Duration = Duration::from_millis(200);
/// How often a request whose transaction lost to another host's runs again before failing.
const MAX_CONFLICT_RETRIES: u8 = 3;
/// Bytes one `copy_file_range` call moves at most (it may return short; callers loop).
const COPY_CHUNK_MAX: u64 = 4 << 20;

/// Tunables of the core; every bound the core keeps comes from here.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ids reserved from the metadata store at a time (inode numbers and entry positions).
    pub ids_per_alloc: u64,
    /// A file written but not closed is uploaded after this long without writes.
    pub upload_delay: Duration,
    /// Wait before retrying a failed upload.
    pub upload_retry: Duration,
    /// fsync answers once the data is sealed in the staging area instead of committed upstream.
    pub staged_is_durable: bool,
    /// Cached inodes kept beyond those the kernel references.
    pub inode_cache_max: usize,
    /// Update atime on reads, the way Linux's `relatime` does (off with `-o noatime`).
    pub relatime: bool,
    /// Check permissions in the core (a private mount without the kernel's
    /// `default_permissions`; see [`crate::perm`]).
    pub check_permissions: bool,
    /// The supplementary groups assumed for every caller when checking permissions.
    pub groups: Vec<u32>,
    /// Other hosts share the stores: close waits for the committed upload (falling back to the
    /// seal when the store fails), and open re-reads the inode, so that a file closed on one
    /// host is read whole on another at its next open (close-to-open consistency).
    pub multi_host: bool,
    /// Multi-host with a coordination server: the hosts list the files they have open there
    /// (`LockRequest::Open`, `Close`), and a file whose last name goes is deleted by the last
    /// host to close it (`LockRequest::Reap`), so that a file another host has open is kept
    /// until that host closes it or dies.
    pub shared_opens: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ids_per_alloc: 1024,
            upload_delay: Duration::from_secs(5),
            upload_retry: Duration::from_secs(5),
            staged_is_durable: false,
            inode_cache_max: 100_000,
            relatime: true,
            check_permissions: false,
            groups: Vec::new(),
            multi_host: false,
            shared_opens: false,
        }
    }
}

/// What `truckeefs status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub dirty_files: usize,
    pub dirty_bytes: u64,
    pub uploads_in_flight: usize,
    pub cached_inodes: usize,
    pub open_handles: usize,
    pub failed_uploads: u64,
}

#[derive(Debug)]
struct Inode {
    /// The current attributes. `row.object` is always the committed object; `row.size` may run
    /// ahead of it while the file is dirty (see `Data::committed_size`).
    row: InodeRow,
    xattrs: BTreeMap<Vec<u8>, Bytes>,
    /// A directory's parent, known once it was reached through a directory listing.
    parent: Option<Ino>,
    /// Kernel lookup references (lookup, create, readdirplus minus forget).
    lookups: u64,
    /// A transaction failed after this inode's version was bumped: reload before changing it.
    version_stale: bool,
    /// A directory's mtime/ctime changed (an entry was added or removed) and is not stored yet:
    /// it goes with the directory's next transaction or the next flush of directory times.
    times_dirty: bool,
    /// Open file and directory handles.
    opens: u32,
    data: Data,
}

#[derive(Debug, Default)]
struct Data {
    /// A staged copy exists and is authoritative for the contents.
    staged: bool,
    /// The staged copy was made for a truncate and holds only the first this many bytes of the
    /// file: it stands for the file once that truncate is done, and goes if it fails
    /// (`drop_short_copy`).
    short: Option<u64>,
    /// `Staging::Init` in flight.
    init_pending: bool,
    /// `Staging::Remove` in flight: no new staged copy may be made until it is done.
    removing: bool,
    /// The staged copy has a journal record on disk: it is sealed and may not change until the
    /// record is removed (after its upload committed).
    record_on_disk: bool,
    /// `Staging::Unseal` in flight.
    unsealing: bool,
    /// The size that goes with `row.object` in the store.
    committed_size: u64,
    /// Bumped by every change of the contents.
    dirty_gen: u64,
    /// The last generation sealed (durable in the staging area).
    sealed_gen: u64,
    /// The last generation whose object is committed.
    uploaded_gen: u64,
    writes_in_flight: u32,
    staging_reads: u32,
    store_reads: u32,
    upload: Option<Upload>,
    /// An upload should start as soon as nothing is in flight.
    want_upload: bool,
    deadline: Option<Instant>,
    flush_waiters: Vec<(RequestId, u64)>,
    fsync_waiters: Vec<(RequestId, u64)>,
    /// Closes of a multi-host mount: answered when the upload commits, or once sealed if it fails.
    close_waiters: Vec<(RequestId, u64)>,
    /// Old objects to delete once no read of them is in flight.
    garbage: Vec<ObjectId>,
    /// Uploaded objects whose commit failed, each with the object its commit would replace: the
    /// first is garbage once a reload shows the store's row does not name it; if the row does
    /// name it (a failure may hide a commit that happened), the second is.
    uncommitted: Vec<(ObjectId, Option<ObjectId>)>,
    failures: u32,
    /// This host's deletion of the file (without names) failed: tried again on the retry timer.
    delete_again: bool,
    /// Multi-host: another host stored a version after this host's, while this host kept its
    /// own (a handle that changed it is open): the next close of such a handle stores this
    /// host's version again (the last close wins).
    behind: bool,
    /// The staged copy was changed here since it was made (not only copied from the store).
    changed_here: bool,
    /// Multi-host: copies into the staging area that found their object gone, in a row.
    init_misses: u8,
    /// Multi-host: the commit of this uploaded object lost to another host's commit; it runs
    /// again once the row is read afresh (`None` inside: the empty file, no object).
    recommit: Option<Option<ObjectId>>,
}

impl Data {
    fn dirty(&self) -> bool {
        self.dirty_gen > self.uploaded_gen
    }
    fn busy(&self) -> bool {
        self.init_pending || self.removing || self.unsealing || self.writes_in_flight > 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Upload {
    gen: u64,
    size: u64,
}

#[derive(Debug, Clone)]
struct Handle {
    ino: Ino,
    flags: i32,
    /// It counts in `Core::listed_opens` (a file's handle on a `shared_opens` mount).
    listed: bool,
    /// The contents were changed through it (write, truncate, fallocate, copy into it): on a
    /// multi-host mount, this host keeps its own version of the file until it is closed.
    wrote: bool,
}

/// A request that waits for state to arrive, or for a lock.
#[derive(Debug, Clone)]
struct Parked {
    id: RequestId,
    ctx: Ctx,
    wall: Timespec,
    op: Op,
    /// Times its transaction lost to another host's (see `Pending::Commit::retry`).
    retries: u8,
}

/// Why a request did not finish now.
enum Stop {
    Errno(i32),
    /// Parked until a load, id allocation or staging change completes.
    Wait,
    /// Parked until a record lock is released.
    WaitLock,
    /// Will be answered by an I/O completion.
    Later,
}

impl From<i32> for Stop {
    fn from(e: i32) -> Stop {
        Stop::Errno(e)
    }
}

type Exec = Result<Reply, Stop>;

/// What an outstanding I/O is for.
#[derive(Debug)]
enum Pending {
    Startup,
    LoadInode(Ino),
    /// Re-read a row after a failed transaction; `base` is the in-memory version when asked.
    Refresh { ino: Ino, base: u64 },
    LoadDir(Ino),
    AllocIds,
    /// `startup`: the list taken at start (every orphan is left over from before); otherwise a
    /// later collection, which spares the inodes this host knows.
    Orphans { startup: bool },
    /// The object of a collected orphan is being deleted; its row goes next.
    OrphanObject(Ino),
    /// The object of a file without names that no host holds (its reap answered so) is being
    /// deleted; its row goes next (`Core::delete_reaped`).
    ReapedObject(Ino, ObjectId),
    /// `applied`: the change already took effect where it cannot be undone (a truncated staged
    /// copy); a failed transaction then still answers with `reply`, since the row is stored with
    /// the file's next upload.
    Commit {
        reply: Option<(RequestId, Result<Reply, i32>)>,
        after: Vec<Cleanup>,
        applied: bool,
        times: Vec<Ino>,
        /// On a multi-host mount, the request itself: if another host's transaction changed the
        /// same rows first (a conflict), it runs again on fresh state instead of failing.
        retry: Option<Box<Parked>>,
    },
    Init(Ino),
    Write { id: RequestId, ino: Ino, end: u64, wall: Timespec },
    Truncate { id: RequestId, ino: Ino, set: SetAttr, wall: Timespec },
    Allocate { id: RequestId, ino: Ino, end: u64, wall: Timespec },
    StagingRead { id: RequestId, ino: Ino, len: usize, copy: Option<CopyTo> },
    /// `retry`: on a multi-host mount, the request itself, run again on the row read anew if the
    /// object is gone (another host stored a new version and deleted this one).
    StoreRead { id: RequestId, ino: Ino, len: usize, copy: Option<CopyTo>, retry: Option<Box<Parked>> },
    Seal { ino: Ino },
    Put { ino: Ino },
    /// A whole-file copy sharing the source's object (`StoreRequest::Share`).
    Share { p: Box<Parked>, src: Ino, object: ObjectId, size: u64 },
    UploadCommit { ino: Ino, object: Option<ObjectId>, old: Option<ObjectId>, old_size: u64 },
    Remove(Ino),
    Unseal(Ino),
    Ignore,
    /// This host's locks on an inode published to the other hosts.
    LockPublished(Ino, u64),
    /// Another host's view of a SetLk (`LockRequest::Acquire`); the request itself.
    LockAcquire(Box<Parked>),
    /// Another host's view of a GetLk (`LockRequest::Query`).
    LockQuery { id: RequestId, want: LockRange },
    Space { id: RequestId },
    Usage { id: RequestId, space: Space },
    /// `LockRequest::Open` of the first open of a file here.
    OpenListed(Ino),
    /// `LockRequest::Reap` of a file without names that this host let go of.
    Reap(Ino),
    /// `LockRequest::Close`: its answer may leave the file to this host to delete.
    Unlisted(Ino),
    /// The row of a file left to this host to delete (see `reap_unseen`).
    ReapLoad(Ino),
}

/// What `create_node` makes.
struct NewNode {
    kind: FileKind,
    mode: u32,
    rdev: u32,
    target: Option<Vec<u8>>,
    /// Open it too (create), with these flags.
    open: Option<i32>,
}

#[derive(Debug, Clone, Copy)]
struct CopyTo {
    ctx: Ctx,
    wall: Timespec,
    ino: Ino,
    fh: u64,
    offset: u64,
}

/// What to do once a transaction has committed.
#[derive(Debug)]
enum Cleanup {
    Staged(Ino),
    /// The inode's row is deleted: drop it from memory with its object and staged copy. (Until
    /// then it stays, so a failed transaction loses nothing.) The transaction also took its last
    /// name: if it fails, the file keeps that name.
    Destroy(Ino),
    /// The same for a file this host kept without names (its last handle closed): if the
    /// transaction fails, the deletion is tried again on the retry timer.
    DestroyUnnamed(Ino),
    /// (`Config::shared_opens`) The transaction took the last name of a file this host has not
    /// open: ask who else has it open (`LockRequest::Reap`) before deleting it. `ongoing`: this
    /// host was deleting it already (the row it read had no names, and the unlink went by a name
    /// it had not yet heard was gone); if the transaction fails, that deletion goes on.
    Reap { ino: Ino, ongoing: bool },
}

/// The pure filesystem core. See the module documentation for the run loop.
pub struct Core {
    config: Config,
    now: Instant,
    ready: bool,
    shutting_down: bool,
    startup_pending: u32,
    inodes: HashMap<Ino, Inode>,
    dirs: HashMap<Ino, Dir>,
    /// Inodes the store said do not exist (answers ENOENT to parked requests).
    absent: HashSet<Ino>,
    /// Inodes destroyed here while a load may still return them.
    deleted: HashSet<Ino>,
    /// Directories whose listing was read again because it named an absent inode, with that
    /// inode (cleared with `absent`).
    relisted: HashSet<(Ino, Ino)>,
    loading_inodes: HashSet<Ino>,
    loading_dirs: HashSet<Ino>,
    refreshing: HashSet<Ino>,
    /// Loads (and refreshes) in flight that another host's change overtook: their answer may
    /// predate the change, so it is dropped and the load sent again.
    stale_dir_loads: HashSet<Ino>,
    stale_inode_loads: HashSet<Ino>,
    /// Inodes with a `LockRequest::Acquire` in flight, and those whose locks changed meanwhile
    /// (published once it completes, so that the other hosts see the last state).
    locks_in_flight: HashSet<Ino>,
    locks_republish: HashSet<Ino>,
    /// Per inode: how many publications of its lock list were asked for, and the last of them
    /// the coordination server has (entries go once the two are equal and nobody waits).
    locks_asked: HashMap<Ino, u64>,
    locks_published: HashMap<Ino, u64>,
    /// Requests that let go of locks, answered once the other hosts can see it: the inode and
    /// the publication they wait for (an unlock answered earlier would leave a lock taken
    /// right after it on another host refused, the list there still naming this host's).
    unlock_waits: HashMap<RequestId, (Ino, u64)>,
    /// Lock requests blocked by another host's lock, and when they try again (they are not told).
    lock_polling: Vec<Parked>,
    lock_poll_at: Option<Instant>,
    /// Whole-file copies that must copy bytes after all (sharing failed or raced).
    no_share: HashSet<RequestId>,
    /// The request being run (multi-host mounts only), for `Pending::Commit::retry`.
    running: Option<Parked>,
    /// Several hosts: the metadata stream, held at a transaction until those it was built on
    /// are answered (see `meta_order`).
    meta_order: MetaOrder,
    /// Other hosts' changes waiting until none of ours is in flight (see `handle_invalidation`).
    invalidations: Vec<Changes>,
    /// Other hosts' changes may have been lost (see `invalidate_all`): everything cached goes,
    /// at the same moment as `invalidations`.
    invalidate_everything: bool,
    /// Opens of a multi-host mount that re-read their inode already, with the row it had here
    /// (`None`: not in memory).
    revalidated: HashMap<RequestId, Option<InodeRow>>,
    /// Closes of a multi-host mount that re-read their inode already (see `flush`).
    close_checked: HashSet<RequestId>,
    loads_in_flight: u32,
    ids: std::ops::Range<u64>,
    ids_loading: bool,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    locks: LockTable,
    parked: Vec<Parked>,
    lock_waiters: Vec<Parked>,
    pending: HashMap<IoId, Pending>,
    next_io: u64,
    effects: VecDeque<Effect>,
    deadlines: BTreeSet<(Instant, Ino)>,
    failed_uploads: u64,
    /// Directories with unsaved times, and when they are stored at the latest.
    dir_times: BTreeSet<Ino>,
    /// Directories whose unsaved times went into the transaction being built (`update_row`):
    /// unsaved again if it fails.
    times_in_txn: Vec<Ino>,
    dir_times_flush_at: Option<Instant>,
    /// Staged files found at start, waiting for their inode to load, with the loads tried.
    replaying: HashMap<Ino, (StagedEntry, u32)>,
    /// (`Config::shared_opens`) The files this host lists as open in the coordination server,
    /// with the handles it has of each (0 while the open that listed it is still running).
    listed_opens: HashMap<Ino, u32>,
    /// Files whose `LockRequest::Open` is in flight (their opens wait for it).
    opens_listing: HashSet<Ino>,
    /// Files whose listing was refused (another host is deleting them): their opens fail with
    /// ESTALE, see `stale_handle` (cleared with `absent`).
    open_refused: HashSet<Ino>,
    /// Files without names this host is deleting after a `LockRequest::Reap` (from the request
    /// until the row is gone, or until another host turns out to hold it).
    reaping: HashSet<Ino>,
    /// Files whose deletion went with a transaction that failed, but may have committed (its
    /// answer lost), with the objects they had: deleted once the row read again is gone.
    destroy_in_doubt: HashMap<Ino, Vec<ObjectId>>,
    /// Files whose `LockRequest::Close` failed (the coordination server was away): a listing
    /// left behind would keep another host from deleting the file. And files left to this host
    /// to delete whose row could not be read (`reap_unseen`). Both are tried again at
    /// `listings_again_at`.
    unlist_again: BTreeSet<Ino>,
    reap_again: BTreeSet<Ino>,
    listings_again_at: Option<Instant>,
}

impl Core {
    /// A new core. It first replays the staging journal and cleans up orphans; requests that
    /// arrive meanwhile wait.
    pub fn new(config: Config, now: Instant) -> Core {
        let mut core = Core {
            config,
            now,
            ready: false,
            shutting_down: false,
            startup_pending: 0,
            inodes: HashMap::new(),
            dirs: HashMap::new(),
            absent: HashSet::new(),
            deleted: HashSet::new(),
            relisted: HashSet::new(),
            loading_inodes: HashSet::new(),
            loading_dirs: HashSet::new(),
            stale_dir_loads: HashSet::new(),
            stale_inode_loads: HashSet::new(),
            refreshing: HashSet::new(),
            running: None,
            no_share: HashSet::new(),
            locks_in_flight: HashSet::new(),
            locks_republish: HashSet::new(),
            locks_asked: HashMap::new(),
            locks_published: HashMap::new(),
            unlock_waits: HashMap::new(),
            lock_polling: Vec::new(),
            lock_poll_at: None,
            meta_order: MetaOrder::default(),
            invalidations: Vec::new(),
            invalidate_everything: false,
            revalidated: HashMap::new(),
            close_checked: HashSet::new(),
            loads_in_flight: 0,
            ids: 0..0,
            ids_loading: false,
            handles: HashMap::new(),
            next_fh: 1,
            locks: LockTable::default(),
            parked: Vec::new(),
            lock_waiters: Vec::new(),
            pending: HashMap::new(),
            next_io: 1,
            effects: VecDeque::new(),
            deadlines: BTreeSet::new(),
            failed_uploads: 0,
            replaying: HashMap::new(),
            dir_times: BTreeSet::new(),
            times_in_txn: Vec::new(),
            dir_times_flush_at: None,
            listed_opens: HashMap::new(),
            opens_listing: HashSet::new(),
            open_refused: HashSet::new(),
            reaping: HashSet::new(),
            destroy_in_doubt: HashMap::new(),
            unlist_again: BTreeSet::new(),
            reap_again: BTreeSet::new(),
            listings_again_at: None,
        };
        core.startup_pending = 2;
        core.io(IoRequest::Staging(StagingRequest::Scan), Pending::Startup);
        core.io(IoRequest::Meta(MetaRequest::ListOrphans), Pending::Orphans { startup: true });
        core
    }

    /// Deletes the inodes without names that nobody holds open any more, as after a start: the
    /// runtime calls it when a host that shared the stores died, and answers `ListOrphans` with
    /// the orphans no live host holds. The inodes this host knows are spared (it deletes its own
    /// once it lets go of them).
    pub fn collect_orphans(&mut self, now: Instant) {
        self.now = now;
        if self.pending.values().any(|p| matches!(p, Pending::Orphans { .. })) {
            return;
        }
        self.io(IoRequest::Meta(MetaRequest::ListOrphans), Pending::Orphans { startup: false });
    }

    // ----- inputs -----

    /// One kernel request. Exactly one `Effect::Reply` with this id follows, now or later.
    pub fn handle_request(&mut self, now: Instant, wall: SystemTime, id: RequestId, ctx: Ctx, op: Op) {
        self.now = now;
        let p = Parked { id, ctx, wall: Timespec::from_system(wall), op, retries: 0 };
        if !self.ready {
            self.parked.push(p);
            return;
        }
        self.run(p);
    }

    /// The kernel dropped `nlookup` references to `ino` (forget has no reply).
    pub fn handle_forget(&mut self, now: Instant, ino: Ino, nlookup: u64) {
        self.now = now;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(nlookup);
        }
        self.maybe_evict(ino);
    }

    /// The result of the I/O effect `io`.
    pub fn handle_completion(&mut self, now: Instant, io: IoId, result: IoResult) {
        self.now = now;
        let Some(pending) = self.pending.remove(&io) else {
            debug_assert!(false, "completion for unknown io {io:?}");
            return;
        };
        self.meta_order.answered(io, result.is_err());
        self.complete(pending, result);
        self.release_held();
        self.apply_invalidations();
        self.wake_parked();
    }

    /// Another host changed these inodes and entries in the shared stores: what is cached of
    /// them is forgotten (or, for what cannot be — open or dirty files — re-read), and the kernel
    /// is told to drop its copies. Applied once none of this host's transactions is in flight,
    /// since the cache is the store plus those transactions.
    pub fn handle_invalidation(&mut self, now: Instant, changes: Changes) {
        self.now = now;
        if !changes.is_empty() {
            self.invalidations.push(changes);
        }
        self.apply_invalidations();
        self.wake_parked();
    }

    /// Messages from other hosts may have been lost (the runtime's subscription to them was cut
    /// and is back): every cached copy of shared state is treated as changed by another host,
    /// as if one invalidation named every inode and every entry this host caches. What is only
    /// a copy is forgotten; what is more (open, dirty or locked files, unsaved directory times)
    /// has its row read again; the kernel drops its cached attributes, pages and entries.
    /// Open handles stay valid (close-to-open: the next open reads the file again). (Names the
    /// kernel holds under a directory whose listing this host no longer caches cannot be named:
    /// they go with the kernel's entry timeout.)
    pub fn invalidate_all(&mut self, now: Instant) {
        self.now = now;
        self.invalidate_everything = true;
        self.apply_invalidations();
        self.wake_parked();
    }

    /// Every inode and every directory entry cached now, as one invalidation (in a fixed order:
    /// the kernel notices follow it).
    fn everything_cached(&self) -> Changes {
        let mut inodes: Vec<Ino> = self.inodes.keys().copied().collect();
        inodes.sort_unstable();
        let mut parents: Vec<Ino> = self.dirs.keys().copied().collect();
        parents.sort_unstable();
        let entries = parents
            .into_iter()
            .flat_map(|parent| self.dirs[&parent].after(0).map(move |(_, name, _)| (parent, name.to_vec())))
            .collect();
        Changes { inodes, entries }
    }

    fn apply_invalidations(&mut self) {
        let nothing = self.invalidations.is_empty() && !self.invalidate_everything;
        if nothing || self.pending.values().any(|p| matches!(p, Pending::Commit { .. })) {
            return;
        }
        if std::mem::take(&mut self.invalidate_everything) {
            // It covers every other invalidation waiting; loads in flight may predate anything.
            self.invalidations = vec![self.everything_cached()];
            self.stale_dir_loads.extend(self.loading_dirs.iter().copied());
            self.stale_inode_loads.extend(self.loading_inodes.iter().chain(&self.refreshing).copied());
            // Listings too, an empty one or one of a directory that stays (the root, an open
            // one): nothing but copies (no transaction of this host is in flight).
            self.dirs.clear();
        }
        for changes in std::mem::take(&mut self.invalidations) {
            // A listing in flight may hold the old entries or rows; a load or refresh in flight
            // the old row.
            for (parent, _) in &changes.entries {
                if self.loading_dirs.contains(parent) {
                    self.stale_dir_loads.insert(*parent);
                }
            }
            for ino in &changes.inodes {
                self.stale_dir_loads.extend(self.loading_dirs.iter().copied());
                if self.loading_inodes.contains(ino) || self.refreshing.contains(ino) {
                    self.stale_inode_loads.insert(*ino);
                }
            }
            for (parent, name) in changes.entries {
                self.dirs.remove(&parent);
                self.effects.push_back(Effect::Kernel(KernelNotice::InvalEntry { parent, name }));
            }
            for ino in changes.inodes {
                if !self.inodes.contains_key(&ino) {
                    continue;
                }
                if self.is_forgettable(ino) {
                    self.inodes.remove(&ino);
                    self.dirs.remove(&ino);
                    self.dir_times.remove(&ino);
                } else if !self.refreshing.contains(&ino) {
                    if let Some(i) = self.inodes.get_mut(&ino) {
                        i.version_stale = true;
                    }
                    self.refresh(ino);
                }
                self.effects.push_back(Effect::Kernel(KernelNotice::InvalInode { ino }));
            }
        }
    }

    /// Whether nothing but a copy of the store is held for `ino` (so it may be dropped and
    /// loaded again).
    fn is_forgettable(&self, ino: Ino) -> bool {
        let Some(i) = self.inodes.get(&ino) else { return true };
        let d = &i.data;
        ino != ROOT_INO
            && i.opens == 0
            // Without names: this host is deleting it (or it must learn who did). With
            // `shared_opens`, only while it reaps it: otherwise another host has it open.
            && (i.row.nlink > 0 || (self.config.shared_opens && !self.reaping.contains(&ino) && !d.delete_again))
            && !i.times_dirty
            && !d.staged
            && !d.busy()
            && !d.record_on_disk
            && d.upload.is_none()
            && !d.dirty()
            && d.staging_reads + d.store_reads == 0
            && !self.locks.is_locked(ino)
    }

    /// Time has reached a deadline given by `poll_timeout` (or not: spurious calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.lock_poll_at.is_some_and(|t| t <= now) {
            self.lock_poll_at = None;
            let polling = std::mem::take(&mut self.lock_polling);
            self.lock_waiters.extend(polling);
            self.wake_lock_waiters();
        }
        if self.dir_times_flush_at.is_some_and(|t| t <= now) {
            self.flush_dir_times();
        }
        if self.listings_again_at.is_some_and(|t| t <= now) {
            self.listings_again_at = None;
            for ino in std::mem::take(&mut self.unlist_again) {
                // (Unless it is listed again since: its own close unlists it.)
                if !self.listed_opens.contains_key(&ino) {
                    self.unlist(ino);
                }
            }
            for ino in std::mem::take(&mut self.reap_again) {
                self.reap_unseen(ino);
            }
        }
        while let Some(&(when, ino)) = self.deadlines.iter().next() {
            if when > now {
                break;
            }
            self.deadlines.remove(&(when, ino));
            if let Some(inode) = self.inodes.get_mut(&ino) {
                if inode.data.deadline == Some(when) {
                    inode.data.deadline = None;
                    inode.data.want_upload = true;
                }
                if inode.data.delete_again && inode.opens == 0 {
                    // Its deletion failed earlier. (Only this host's: a row without names that a
                    // refresh brought is another host's to delete.)
                    inode.data.delete_again = false;
                    self.delete_owed(ino);
                    continue;
                }
            }
            self.pump_upload(ino);
        }
    }

    /// Unmount: upload everything dirty. Poll effects until [`Core::is_idle`].
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.now = now;
        self.shutting_down = true;
        self.flush_dir_times();
        // Deletions that failed are tried again now.
        let mut undeleted: Vec<Ino> =
            self.inodes.iter().filter(|(_, i)| i.data.delete_again && i.opens == 0).map(|(k, _)| *k).collect();
        undeleted.sort_unstable();
        for ino in undeleted {
            if let Some(inode) = self.inodes.get_mut(&ino) {
                inode.data.delete_again = false;
            }
            self.delete_owed(ino);
        }
        let dirty: Vec<Ino> = self.inodes.iter().filter(|(_, i)| i.data.dirty()).map(|(k, _)| *k).collect();
        for ino in dirty {
            if let Some(inode) = self.inodes.get_mut(&ino) {
                inode.data.want_upload = true;
            }
            self.pump_upload(ino);
        }
    }

    // ----- drains and getters -----

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let upload = self.deadlines.iter().next().map(|(t, _)| *t);
        [upload, self.dir_times_flush_at, self.lock_poll_at, self.listings_again_at].into_iter().flatten().min()
    }

    /// Nothing in flight, nothing left to upload or to delete.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.dir_times.is_empty()
            // A file left to this host to delete, whose row could not be read yet.
            && self.reap_again.is_empty()
            && !self.inodes.values().any(|i| (i.data.dirty() && i.row.nlink > 0) || i.data.delete_again)
    }

    pub fn status(&self) -> Status {
        let mut s = Status {
            cached_inodes: self.inodes.len(),
            open_handles: self.handles.len(),
            failed_uploads: self.failed_uploads,
            ..Status::default()
        };
        for i in self.inodes.values() {
            if i.data.dirty() && i.row.nlink > 0 {
                s.dirty_files += 1;
                s.dirty_bytes += i.row.size;
            }
            if i.data.upload.is_some() {
                s.uploads_in_flight += 1;
            }
        }
        s
    }

    // ----- the request loop -----

    fn run(&mut self, p: Parked) {
        if self.config.multi_host {
            self.running = Some(p.clone());
        }
        let result = self.exec(&p);
        self.running = None;
        match result {
            Ok(reply) => self.reply(p.id, Ok(reply)),
            Err(Stop::Errno(e)) => {
                let e = self.stale_handle(&p.op, e);
                self.reply(p.id, Err(e));
                self.truncate_abandoned(&p.op);
            }
            Err(Stop::Wait) => self.parked.push(p),
            Err(Stop::WaitLock) => self.lock_waiters.push(p),
            Err(Stop::Later) => {}
        }
    }

    /// With several hosts, an inode the kernel names by number that the store no longer has
    /// was removed by another host after the kernel looked its name up (a rename over the
    /// name, an unlink): ESTALE, not ENOENT. The kernel then looks the path up again and
    /// retries once (`LOOKUP_REVAL`), so an open of a name another host has just replaced opens
    /// the new file, and one of a name that went fails with ENOENT from that lookup.
    fn stale_handle(&self, op: &Op, errno: i32) -> i32 {
        if errno != ENOENT || !self.config.multi_host {
            return errno;
        }
        let ino = match op {
            Op::GetAttr { ino }
            | Op::SetAttr { ino, .. }
            | Op::ReadLink { ino }
            | Op::Link { ino, .. }
            | Op::Open { ino, .. }
            | Op::OpenDir { ino, .. }
            | Op::SetXattr { ino, .. }
            | Op::GetXattr { ino, .. }
            | Op::ListXattr { ino, .. }
            | Op::RemoveXattr { ino, .. }
            | Op::Access { ino, .. } => *ino,
            _ => return errno,
        };
        let gone = self.absent.contains(&ino) || self.deleted.contains(&ino) || self.open_refused.contains(&ino);
        if gone { ESTALE } else { errno }
    }

    fn wake_parked(&mut self) {
        if !self.ready || self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            self.run(p);
        }
        if self.parked.is_empty() && self.loads_in_flight == 0 {
            self.absent.clear();
            self.relisted.clear();
            self.open_refused.clear();
        }
    }

    fn wake_lock_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.lock_waiters);
        for p in waiters {
            self.run(p);
        }
    }

    fn reply(&mut self, id: RequestId, result: Result<Reply, i32>) {
        if !self.close_checked.is_empty() {
            self.close_checked.remove(&id);
        }
        if let Some((ino, _)) = self.unlock_waits.remove(&id) {
            self.forget_publications(ino);
        }
        self.effects.push_back(Effect::Reply { id, result });
    }

    fn io(&mut self, request: IoRequest, pending: Pending) -> IoId {
        let io = IoId(self.next_io);
        self.next_io += 1;
        self.pending.insert(io, pending);
        if !self.config.multi_host || !request.in_meta_stream() {
            self.effects.push_back(Effect::Io { io, request });
        } else if let Some(request) = self.meta_order.issue(io, request) {
            self.effects.push_back(Effect::Io { io, request });
        } // (else held: see `meta_order`)
        io
    }

    /// Held requests of the metadata stream whose turn came: sent, or (transactions) failed as
    /// the store would have failed them.
    fn release_held(&mut self) {
        while let Some(next) = self.meta_order.release() {
            match next {
                Next::Send(io, request) => self.effects.push_back(Effect::Io { io, request }),
                Next::Fail(io) => {
                    if let Some(pending) = self.pending.remove(&io) {
                        let e = IoError::new(IoErrorKind::Conflict, "a change of the same row before it failed");
                        self.complete(pending, Err(e));
                    }
                }
            }
        }
    }

    fn exec(&mut self, p: &Parked) -> Exec {
        let (ctx, wall) = (p.ctx, p.wall);
        if self.config.check_permissions {
            self.authorize(ctx, &p.op)?;
        }
        match &p.op {
            Op::Lookup { parent, name } => self.lookup(*parent, name),
            Op::GetAttr { ino } => {
                self.ensure_inode(*ino)?;
                Ok(Reply::Attr(self.attr(*ino)))
            }
            Op::SetAttr { ino, fh, set } => {
                if let (Some(fh), Some(_)) = (fh, set.size) {
                    self.mark_changing(*fh);
                }
                let set = self.authorize_setattr(ctx, *ino, *set, fh.is_some())?;
                self.setattr(p.id, *ino, set, wall)
            }
            Op::MkNod { parent, name, mode, umask, rdev } => {
                let kind = if mode & libc::S_IFMT == 0 {
                    FileKind::Regular
                } else {
                    FileKind::from_mode(*mode).ok_or(EINVAL)?
                };
                if kind == FileKind::Directory {
                    return Err(EINVAL.into());
                }
                let node = NewNode { kind, mode: mode & !umask, rdev: *rdev, target: None, open: None };
                self.create_node(p.id, ctx, wall, *parent, name, node)
            }
            Op::MkDir { parent, name, mode, umask } => {
                let node = NewNode { kind: FileKind::Directory, mode: mode & !umask, rdev: 0, target: None, open: None };
                self.create_node(p.id, ctx, wall, *parent, name, node)
            }
            Op::Symlink { parent, name, target } => {
                if target.len() >= PATH_MAX {
                    return Err(ENAMETOOLONG.into());
                }
                let node = NewNode { kind: FileKind::Symlink, mode: 0o777, rdev: 0, target: Some(target.clone()), open: None };
                self.create_node(p.id, ctx, wall, *parent, name, node)
            }
            Op::Create { parent, name, mode, umask, flags } => {
                let node = NewNode { kind: FileKind::Regular, mode: mode & !umask, rdev: 0, target: None, open: Some(*flags) };
                self.create_node(p.id, ctx, wall, *parent, name, node)
            }
            Op::Unlink { parent, name } => self.unlink(p.id, wall, *parent, name, false),
            Op::RmDir { parent, name } => self.unlink(p.id, wall, *parent, name, true),
            Op::ReadLink { ino } => {
                self.ensure_inode(*ino)?;
                let inode = &self.inodes[ino];
                match (&inode.row.kind, &inode.row.target) {
                    (FileKind::Symlink, Some(t)) => Ok(Reply::Data(Bytes::from(t.clone()))),
                    _ => Err(EINVAL.into()),
                }
            }
            Op::Link { ino, newparent, newname } => self.link(p.id, wall, *ino, *newparent, newname),
            Op::Rename { parent, name, newparent, newname, flags } => {
                self.rename(p.id, wall, *parent, name, *newparent, newname, *flags)
            }
            Op::Open { ino, flags } => {
                let opened = self.open(p, *ino, *flags);
                if let Err(Stop::Errno(_)) = opened {
                    self.unlist_unused(*ino);
                }
                opened
            }
            Op::OpenDir { ino, flags } => {
                self.ensure_inode(*ino)?;
                if self.inodes[ino].row.kind != FileKind::Directory {
                    return Err(ENOTDIR.into());
                }
                let fh = self.open_handle(*ino, *flags, false);
                Ok(Reply::Opened { fh, keep_cache: false, stale_attrs: false })
            }
            Op::Read { ino, fh: _, offset, size } => {
                let r = self.read(p.id, *ino, *offset, *size as u64, None);
                if !matches!(r, Err(Stop::Wait)) {
                    self.touch_atime(*ino, wall);
                }
                r
            }
            Op::Write { ino, fh, offset, data } => {
                self.mark_changing(*fh);
                self.write(p.id, wall, *ino, *fh, *offset, data.clone())
            }
            Op::Flush { ino, fh, lock_owner } => {
                // The owner's locks go even if the flush fails: the file is closed all the same.
                let released = self.locks.release_owner(*ino, *lock_owner);
                if released {
                    self.publish_locks(*ino);
                    self.wake_lock_waiters();
                }
                self.wait_unlock_seen(p.id, *ino, released)?;
                self.ensure_inode(*ino)?;
                self.flush(p.id, *ino, *fh)
            }
            Op::Fsync { ino, fh: _, datasync: _ } => {
                self.ensure_inode(*ino)?;
                self.fsync(p.id, *ino)
            }
            Op::Release { ino, fh, lock_owner } => {
                self.release_handle(*ino, *fh, *lock_owner);
                Ok(Reply::Empty)
            }
            Op::ReleaseDir { ino, fh } => {
                self.release_handle(*ino, *fh, None);
                Ok(Reply::Empty)
            }
            Op::ReadDir { ino, fh: _, offset, size, plus } => {
                let r = self.readdir(*ino, *offset, *size, *plus);
                if r.is_ok() {
                    self.touch_atime(*ino, wall);
                }
                r
            }
            Op::FsyncDir { ino, fh: _ } => {
                self.ensure_inode(*ino)?;
                let ops = if self.inodes[ino].times_dirty { vec![self.update_row(*ino)] } else { vec![] };
                self.commit(ops, true, Some((p.id, Ok(Reply::Empty))), vec![]);
                Err(Stop::Later)
            }
            Op::StatFs => {
                self.io(IoRequest::Store(StoreRequest::Space), Pending::Space { id: p.id });
                Err(Stop::Later)
            }
            Op::SetXattr { ino, name, value, flags } => self.setxattr(p.id, wall, *ino, name, value, *flags),
            Op::GetXattr { ino, name, size } => {
                self.ensure_inode(*ino)?;
                check_xattr_name(name)?;
                let value = self.inodes[ino].xattrs.get(name).ok_or(ENODATA)?;
                sized_reply(value.clone(), *size)
            }
            Op::ListXattr { ino, size } => {
                self.ensure_inode(*ino)?;
                let mut list = Vec::new();
                for name in self.inodes[ino].xattrs.keys() {
                    list.extend_from_slice(name);
                    list.push(0);
                }
                sized_reply(Bytes::from(list), *size)
            }
            Op::RemoveXattr { ino, name } => {
                self.ensure_inode(*ino)?;
                check_xattr_name(name)?;
                let inode = self.inodes.get_mut(ino).ok_or(ENOENT)?;
                if inode.xattrs.remove(name).is_none() {
                    return Err(ENODATA.into());
                }
                inode.row.ctime = wall;
                let ops = vec![TxnOp::RemoveXattr { ino: *ino, name: name.clone() }, self.update_row(*ino)];
                self.commit(ops, false, Some((p.id, Ok(Reply::Empty))), vec![]);
                Err(Stop::Later)
            }
            Op::Access { ino, mask } => {
                self.ensure_inode(*ino)?;
                let caller = perm::Caller::new(ctx, &self.config.groups);
                if *mask == libc::F_OK || perm::allowed(&self.inodes[ino].row, caller, *mask as u32) {
                    Ok(Reply::Empty)
                } else {
                    Err(EACCES.into())
                }
            }
            Op::GetLk { ino, fh: _, owner, lock } => {
                self.ensure_inode(*ino)?;
                match self.locks.conflict(*ino, *owner, lock) {
                    Some(l) => Ok(Reply::Lock(LockRange { start: l.start, end: l.end, typ: l.typ, pid: l.pid })),
                    None if self.config.multi_host => {
                        let want = *lock;
                        self.io(IoRequest::Lock(LockRequest::Query { ino: *ino, want }), Pending::LockQuery { id: p.id, want });
                        Err(Stop::Later)
                    }
                    None => Ok(Reply::Lock(LockRange { typ: libc::F_UNLCK, ..*lock })),
                }
            }
            Op::SetLk { ino, .. } if self.unlock_waits.contains_key(&p.id) => {
                // Its change is made, and only its publication awaited: nothing of the file's
                // row (being read again, say) can fail it now.
                self.wait_unlock_seen(p.id, *ino, false)?;
                Ok(Reply::Empty)
            }
            Op::SetLk { ino, fh: _, owner, lock, sleep } => {
                self.ensure_inode(*ino)?;
                if lock.typ != libc::F_UNLCK && self.locks.conflict(*ino, *owner, lock).is_some() {
                    return if *sleep { Err(Stop::WaitLock) } else { Err(EAGAIN.into()) };
                }
                if self.config.multi_host && lock.typ != libc::F_UNLCK {
                    // Other hosts must agree first; one acquisition per inode at a time.
                    if self.locks_in_flight.contains(ino) {
                        return Err(Stop::WaitLock);
                    }
                    let held = self.locks.held_after(*ino, *owner, lock);
                    self.locks_in_flight.insert(*ino);
                    let request = LockRequest::Acquire { ino: *ino, want: *lock, held };
                    self.io(IoRequest::Lock(request), Pending::LockAcquire(Box::new(p.clone())));
                    return Err(Stop::Later);
                }
                let changed = self.locks.set(*ino, *owner, lock);
                if changed {
                    self.publish_locks(*ino);
                    self.wake_lock_waiters();
                }
                self.wait_unlock_seen(p.id, *ino, changed)?;
                Ok(Reply::Empty)
            }
            Op::Fallocate { ino, fh, offset, length, mode } => {
                if *mode != 0 {
                    return Err(EOPNOTSUPP.into());
                }
                self.mark_changing(*fh);
                self.ensure_inode(*ino)?;
                if self.inodes[ino].row.kind != FileKind::Regular {
                    return Err(libc::ENODEV.into());
                }
                self.ensure_writable(*ino, u64::MAX)?;
                let end = offset.checked_add(*length).ok_or(libc::EFBIG)?;
                self.inodes.get_mut(ino).ok_or(ENOENT)?.data.writes_in_flight += 1;
                self.io(
                    IoRequest::Staging(StagingRequest::Allocate { ino: *ino, offset: *offset, len: *length }),
                    Pending::Allocate { id: p.id, ino: *ino, end, wall },
                );
                Err(Stop::Later)
            }
            Op::CopyFileRange { ino_in, fh_in: _, off_in, ino_out, fh_out, off_out, len } => {
                self.mark_changing(*fh_out);
                self.ensure_inode(*ino_in)?;
                self.ensure_inode(*ino_out)?;
                if self.inodes[ino_in].row.kind != FileKind::Regular
                    || self.inodes[ino_out].row.kind != FileKind::Regular
                {
                    return Err(EINVAL.into());
                }
                if *off_in == 0 && *off_out == 0 && !self.no_share.remove(&p.id) {
                    if let Some(object) = self.shareable(*ino_in, *ino_out, *len) {
                        let size = self.inodes[ino_in].row.size;
                        let pending = Pending::Share { p: Box::new(p.clone()), src: *ino_in, object: object.clone(), size };
                        self.io(IoRequest::Store(StoreRequest::Share { ino: *ino_out, object }), pending);
                        return Err(Stop::Later);
                    }
                }
                let copy = CopyTo { ctx, wall, ino: *ino_out, fh: *fh_out, offset: *off_out };
                self.read(p.id, *ino_in, *off_in, (*len).min(COPY_CHUNK_MAX), Some(copy))
            }
        }
    }

    /// Open of a file (or, with EISDIR, a directory). With `shared_opens`, the first open here
    /// first lists the file as open in the coordination server, then reads its row: either the
    /// row is read after the listing, or the other host's `Reap` came first and the listing is
    /// refused. So no host deletes a file this host opens unseen.
    fn open(&mut self, p: &Parked, ino: Ino, flags: i32) -> Exec {
        if self.config.shared_opens && !self.listed_opens.contains_key(&ino) {
            if self.open_refused.contains(&ino) {
                return Err(ENOENT.into());
            }
            if self.opens_listing.insert(ino) {
                self.io(IoRequest::Lock(LockRequest::Open { ino }), Pending::OpenListed(ino));
            }
            return Err(Stop::Wait);
        }
        if self.config.multi_host && !self.revalidated.contains_key(&p.id) {
            // Close-to-open: read the inode again (another host may have closed a new
            // version), unless this host holds more than a copy of it.
            let before = self.inodes.get(&ino).map(|i| i.row.clone());
            if self.is_forgettable(ino) {
                self.inodes.remove(&ino);
            } else {
                // Held for more than a copy (open, dirty, locked): its row is read again
                // all the same.
                self.reread_row(ino);
            }
            self.revalidated.insert(p.id, before);
        }
        if let Err(stop) = self.ensure_inode(ino) {
            if !matches!(stop, Stop::Wait) {
                self.revalidated.remove(&p.id);
            }
            return Err(stop);
        }
        let row = &self.inodes[&ino].row;
        let revalidated = self.revalidated.remove(&p.id);
        if let Some(before) = &revalidated {
            // Read again without names that had names here: another host took its last name
            // (a rename over it, say) after the kernel looked it up, and only an open handle
            // somewhere keeps it. The name names another file now, or none: ESTALE makes the
            // kernel look it up again (see `stale_handle`). A file this host knew unnamed (open
            // and unlinked here, reopened through `/proc/PID/fd`) opens as before.
            if row.nlink == 0 && row.kind == FileKind::Regular && before.as_ref().is_none_or(|b| b.nlink > 0) {
                return Err(ESTALE.into());
            }
        }
        let (keep_cache, stale_attrs) = match revalidated {
            // Read again: what the kernel holds is as old as the row this host had, or, with no
            // row here, of unknown age.
            Some(Some(before)) => (before.object == row.object, before.attr() != row.attr()),
            Some(None) => (row.object.is_none(), true),
            None => (true, false),
        };
        if self.inodes[&ino].row.kind == FileKind::Directory {
            return Err(EISDIR.into());
        }
        let fh = self.open_handle(ino, flags, self.config.shared_opens);
        Ok(Reply::Opened { fh, keep_cache, stale_attrs })
    }

    // ----- loading state -----

    fn ensure_inode(&mut self, ino: Ino) -> Result<(), Stop> {
        if let Some(inode) = self.inodes.get(&ino) {
            if inode.version_stale {
                // A failed transaction left its version unknown: wait for a reload (and start
                // one if the last attempt failed).
                if !self.refreshing.contains(&ino) {
                    self.refresh(ino);
                }
                return Err(Stop::Wait);
            }
            return Ok(());
        }
        if self.absent.contains(&ino) || self.deleted.contains(&ino) {
            return Err(ENOENT.into());
        }
        if self.loading_inodes.insert(ino) {
            self.loads_in_flight += 1;
            self.io(IoRequest::Meta(MetaRequest::LoadInode { ino }), Pending::LoadInode(ino));
        }
        Err(Stop::Wait)
    }

    fn ensure_dir(&mut self, ino: Ino) -> Result<(), Stop> {
        self.ensure_inode(ino)?;
        if self.inodes[&ino].row.kind != FileKind::Directory {
            return Err(ENOTDIR.into());
        }
        if self.dirs.contains_key(&ino) {
            return Ok(());
        }
        self.load_dir(ino);
        Err(Stop::Wait)
    }

    fn load_dir(&mut self, ino: Ino) {
        if self.loading_dirs.insert(ino) {
            self.loads_in_flight += 1;
            self.io(IoRequest::Meta(MetaRequest::LoadDir { ino }), Pending::LoadDir(ino));
        }
    }

    fn ensure_ids(&mut self, n: u64) -> Result<(), Stop> {
        if self.ids.end - self.ids.start >= n {
            return Ok(());
        }
        if !self.ids_loading {
            self.ids_loading = true;
            let count = self.config.ids_per_alloc.max(n);
            self.io(IoRequest::Meta(MetaRequest::AllocIds { count }), Pending::AllocIds);
        }
        Err(Stop::Wait)
    }

    fn take_id(&mut self) -> u64 {
        debug_assert!(self.ids.start < self.ids.end, "take_id without ensure_ids");
        let id = self.ids.start;
        self.ids.start += 1;
        id
    }

    /// Make sure `ino` has a staged copy that may be changed now. Only the first `keep` bytes
    /// of the current contents are copied into a new one (a truncate needs no more).
    ///
    /// A sealed copy is never changed in place: its journal record promises that the data beside
    /// it is what was acknowledged. Changes wait until its upload has committed and the record is
    /// gone; this also keeps an upload from reading a copy that is being written.
    fn ensure_writable(&mut self, ino: Ino, keep: u64) -> Result<(), Stop> {
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let d = &mut inode.data;
        if d.staged && !d.init_pending {
            if d.upload.is_some() || d.unsealing {
                return Err(Stop::Wait);
            }
            if d.record_on_disk {
                if d.uploaded_gen < d.sealed_gen && inode.row.nlink > 0 {
                    // The record is the only durable copy of acknowledged data: keep it until the
                    // upload (or its retry, on its timer) has committed.
                    return Err(Stop::Wait);
                }
                d.unsealing = true;
                self.io(IoRequest::Staging(StagingRequest::Unseal { ino }), Pending::Unseal(ino));
                return Err(Stop::Wait);
            }
            return Ok(());
        }
        if d.init_pending || d.removing {
            return Err(Stop::Wait);
        }
        d.init_pending = true;
        d.staged = true;
        d.changed_here = false;
        let size = inode.row.size.min(keep);
        inode.data.short = (size < inode.row.size).then_some(size);
        let from = if size > 0 { inode.row.object.clone() } else { None };
        self.io(IoRequest::Staging(StagingRequest::Init { ino, from, size }), Pending::Init(ino));
        Err(Stop::Wait)
    }

    fn insert_loaded(&mut self, loaded: LoadedInode) -> Ino {
        let ino = loaded.row.ino;
        if self.inodes.contains_key(&ino) {
            return ino; // in memory is authoritative (stale rows are fixed by `refresh`)
        }
        if !self.deleted.contains(&ino) {
            let committed_size = loaded.row.size;
            self.inodes.insert(
                ino,
                Inode {
                    row: loaded.row,
                    xattrs: loaded.xattrs,
                    parent: if ino == ROOT_INO { Some(ROOT_INO) } else { loaded.parent },
                    lookups: 0,
                    version_stale: false,
                    times_dirty: false,
                    opens: 0,
                    data: Data { committed_size, ..Data::default() },
                },
            );
        }
        ino
    }

    /// Another host may have changed `ino`'s row: requests on it wait until it is read again (a
    /// refresh already on its way may predate the change: it is sent again).
    fn reread_row(&mut self, ino: Ino) {
        let Some(i) = self.inodes.get_mut(&ino) else { return };
        i.version_stale = true;
        if self.refreshing.contains(&ino) {
            self.stale_inode_loads.insert(ino);
        } else {
            self.refresh(ino);
        }
    }

    /// Re-read `ino`'s row after a failed transaction.
    fn refresh(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else { return };
        let base = inode.row.version;
        self.refreshing.insert(ino);
        self.io(IoRequest::Meta(MetaRequest::LoadInode { ino }), Pending::Refresh { ino, base });
    }

    /// The row of a stale inode arrived. The store's row is the truth (the failed change was
    /// answered with an error); only what belongs to unsaved data — its size and times — is kept
    /// from memory. Transactions issued after the load was asked for are still in flight, and
    /// each bumped the in-memory version: they are added to the stored version.
    fn apply_refresh(&mut self, ino: Ino, base: u64, loaded: Option<LoadedInode>) {
        self.refreshing.remove(&ino);
        if let Some(objects) = self.destroy_in_doubt.remove(&ino) {
            if loaded.is_none() {
                // The deletion in doubt committed: its objects are this host's to delete.
                for object in objects {
                    self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
                }
            }
        }
        let changing = self.changing_here(ino);
        let Some(existing) = self.inodes.get_mut(&ino) else { return };
        let pinned = changing && existing.data.changed_here;
        if !existing.version_stale {
            return;
        }
        let Some(loaded) = loaded else {
            // Not in the store: its creation failed, or (several hosts) another host deleted
            // it. Nothing refers to it any more: drop what this host still has of it.
            if let Some(gone) = self.inodes.remove(&ino) {
                let d = gone.data;
                if let Some(old) = d.deadline {
                    self.deadlines.remove(&(old, ino));
                }
                for (rid, _) in d.flush_waiters.into_iter().chain(d.fsync_waiters).chain(d.close_waiters) {
                    self.reply(rid, Ok(Reply::Empty));
                }
                // Objects this host uploaded for it and never committed, and old ones it was to
                // delete, go too.
                let uploaded = d.recommit.flatten().into_iter().chain(d.uncommitted.into_iter().map(|(object, _)| object));
                for object in uploaded.chain(d.garbage) {
                    self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
                }
                if d.staged || d.init_pending || d.record_on_disk {
                    self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
                }
            }
            self.deleted.insert(ino);
            self.reaping.remove(&ino);
            return;
        };
        let since = existing.row.version.wrapping_sub(base);
        let current = existing.row.clone();
        // Another host stored a new version: a clean staged copy of the old one (kept while the
        // file is open) would serve the old bytes and size. Drop it; reads go to the new object.
        // Unless this host changed the file through a handle still open: it keeps its own
        // version, and stores it again when that handle closes. Or the copy is busy (a read of
        // it in flight, say): it goes once that is done (`give_way`). Either way it is `behind`
        // meanwhile, so a row this host stores keeps the new object's size.
        let d = &mut existing.data;
        let newer = loaded.row.object != current.object;
        let clean = d.staged && !d.dirty() && d.upload.is_none();
        let outdated = !pinned && clean && !d.busy() && d.staging_reads == 0 && newer;
        if outdated {
            d.staged = false;
            d.removing = true;
            d.behind = false;
        } else if newer && d.staged && (pinned || clean) {
            d.behind = true;
        }
        existing.row = loaded.row;
        existing.row.version = existing.row.version.wrapping_add(since);
        existing.xattrs = loaded.xattrs;
        existing.data.committed_size = existing.row.size;
        if existing.data.dirty() || existing.data.staged {
            existing.row.size = current.size;
        }
        // Times of unsaved data (or of this host's own version, kept) stay; a clean copy's are the
        // stored ones. (Kept there, the ctime of the failed change would be shown, and go back
        // at the next reload: nothing stores it.)
        if existing.data.dirty() || existing.times_dirty || (existing.data.staged && pinned) {
            existing.row.mtime = current.mtime;
            existing.row.ctime = current.ctime;
        }
        existing.version_stale = false;
        // Every transaction that could have stored these objects ran before this reload (all
        // of them were issued before the failure that asked for it).
        let d = &mut existing.data;
        let stored = existing.row.object.clone();
        for (object, replaced) in std::mem::take(&mut d.uncommitted) {
            if Some(&object) != stored.as_ref() {
                d.garbage.push(object);
            } else if let Some(replaced) = replaced.filter(|r| !d.garbage.contains(r)) {
                // Committed after all: the object it replaced is this host's to delete, as
                // after a commit that said so.
                d.garbage.push(replaced);
            }
        }
        if outdated {
            self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Remove(ino));
        }
        self.collect_garbage(ino);
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let unnamed = inode.row.nlink == 0 && inode.opens == 0 && inode.row.kind != FileKind::Directory;
        let closed_named = inode.row.nlink > 0 && inode.opens == 0;
        if self.config.shared_opens && unnamed && !self.reaping.contains(&ino) {
            // Without names and not open here (a transaction of this host that reported a
            // failure committed after all, say): whoever sees that may reap it, safely.
            self.reap(ino);
        }
        if closed_named {
            // Named after all, and closed here (closed while the change that took its names
            // had failed and the row was read again): its listing as open goes.
            self.unlist_unused(ino);
        }
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        if inode.row.nlink > 0 && d.dirty() && d.upload.is_none() && d.deadline.is_none() {
            // Named again (the transaction taking its last name failed): the upload dropped while
            // it had none runs on the retry timer, as every dirty file's does.
            let when = self.now + self.config.upload_retry;
            d.deadline = Some(when);
            self.deadlines.insert((when, ino));
        }
        if let Some(object) = inode.data.recommit.take() {
            let replaced = inode.row.object.clone();
            self.commit_upload(ino, object, replaced);
        }
    }

    fn maybe_evict(&mut self, ino: Ino) {
        if self.inodes.len() <= self.config.inode_cache_max || ino == ROOT_INO {
            return;
        }
        let Some(inode) = self.inodes.get(&ino) else { return };
        let d = &inode.data;
        // (Nor while its staged copy is being made, removed or unsealed: an inode loaded again
        // would know nothing of that request, and a removal finishing after its next copy was
        // made would delete that copy.)
        if inode.lookups > 0 || inode.opens > 0 || inode.row.nlink == 0 || inode.times_dirty || d.staged || d.dirty()
            || d.upload.is_some()
            || d.busy()
            || d.staging_reads + d.store_reads > 0 || self.locks.is_locked(ino)
            || self.pending_touches(ino)
            || self.times_in_flight().any(|i| i == ino)
        {
            return;
        }
        self.inodes.remove(&ino);
        self.dirs.remove(&ino);
    }

    /// Directories whose unsaved times ride on a transaction in flight: if it fails, the times
    /// go back to them (a reload would not have them), so they stay in memory meanwhile.
    fn times_in_flight(&self) -> impl Iterator<Item = Ino> + '_ {
        self.pending
            .values()
            .filter_map(|p| match p {
                Pending::Commit { times, .. } => Some(times.iter().copied()),
                _ => None,
            })
            .flatten()
    }

    fn pending_touches(&self, ino: Ino) -> bool {
        self.loading_dirs.contains(&ino) || self.loading_inodes.contains(&ino)
    }

    // ----- attributes -----

    fn attr(&self, ino: Ino) -> Attr {
        self.inodes[&ino].row.attr()
    }

    /// The row as it should be stored now: current attributes with the committed object and its
    /// size. Bumps the in-memory version: the returned op must be committed.
    fn update_row(&mut self, ino: Ino) -> TxnOp {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            debug_assert!(false, "update_row of an inode not in memory");
            return TxnOp::DeleteInode { ino };
        };
        let expect_version = inode.row.version;
        inode.row.version += 1;
        if inode.times_dirty {
            inode.times_dirty = false;
            self.dir_times.remove(&ino);
            self.times_in_txn.push(ino);
        }
        let mut row = inode.row.clone();
        row.size = inode.data.committed_size;
        // (Behind: the row names another host's object, and `row.size` is this host's own
        // version's: the stored size stays the object's.)
        if !inode.data.dirty() && !inode.data.behind {
            inode.data.committed_size = inode.row.size;
            row.size = inode.row.size;
        }
        TxnOp::UpdateInode { row, expect_version }
    }

    fn commit(
        &mut self,
        ops: Vec<TxnOp>,
        durable: bool,
        reply: Option<(RequestId, Result<Reply, i32>)>,
        after: Vec<Cleanup>,
    ) {
        let times = std::mem::take(&mut self.times_in_txn);
        let retry = reply.as_ref().and_then(|(id, _)| self.conflict_retry(*id));
        let pending = Pending::Commit { reply, after, applied: false, times, retry };
        self.io(IoRequest::Meta(MetaRequest::Commit(Txn { ops, durable })), pending);
    }

    /// Several hosts: the request `id` being run, to run again on the rows read afresh if its
    /// transaction conflicts with another host's change (see `Pending::Commit::retry`).
    fn conflict_retry(&self, id: RequestId) -> Option<Box<Parked>> {
        let p = self.running.as_ref().filter(|p| p.id == id)?;
        (self.config.multi_host && p.retries < MAX_CONFLICT_RETRIES).then(|| Box::new(p.clone()))
    }

    /// The permission checks of a private mount (the kernel's when `default_permissions` is on).
    /// Runs before the operation itself, so an error here wins over the operation's own
    /// errors only where Linux's does: a missing name still gives ENOENT, an existing one EEXIST.
    fn authorize(&mut self, ctx: Ctx, op: &Op) -> Result<(), Stop> {
        use perm::{R, W, X};
        match op {
            Op::Lookup { parent, .. } => self.permit(ctx, *parent, X),
            Op::MkNod { parent, name, .. }
            | Op::MkDir { parent, name, .. }
            | Op::Symlink { parent, name, .. }
            | Op::Create { parent, name, .. }
            | Op::Link { newparent: parent, newname: name, .. } => {
                self.permit(ctx, *parent, X)?;
                self.ensure_dir(*parent)?;
                if self.dirs[parent].get(name).is_some() {
                    return Ok(()); // EEXIST comes from the operation
                }
                self.permit(ctx, *parent, W)
            }
            Op::Unlink { parent, name } | Op::RmDir { parent, name } => {
                self.permit(ctx, *parent, X)?;
                self.permit_delete(ctx, *parent, name).map(|_| ())
            }
            Op::Rename { parent, name, newparent, newname, .. } => {
                self.permit(ctx, *parent, X)?;
                self.permit(ctx, *newparent, X)?;
                let Some(src) = self.permit_delete(ctx, *parent, name)? else { return Ok(()) };
                if self.permit_delete(ctx, *newparent, newname)?.is_none() {
                    self.permit(ctx, *newparent, W)?;
                }
                // A directory moving elsewhere has its `..` rewritten.
                if parent != newparent && self.inodes[&src].row.kind == FileKind::Directory {
                    self.permit(ctx, src, W)?;
                }
                Ok(())
            }
            Op::Open { ino, flags } => self.permit(ctx, *ino, perm::open_mask(*flags)),
            Op::OpenDir { ino, .. } => self.permit(ctx, *ino, R),
            Op::GetXattr { ino, name, .. } => match perm::xattr_mask(name, false) {
                Some(mask) => self.permit(ctx, *ino, mask),
                None => Ok(()),
            },
            Op::SetXattr { ino, name, .. } | Op::RemoveXattr { ino, name } => match perm::xattr_mask(name, true) {
                Some(mask) => self.permit(ctx, *ino, mask),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Checks `mask` on `ino` (loading it first).
    fn permit(&mut self, ctx: Ctx, ino: Ino, mask: u32) -> Result<(), Stop> {
        self.ensure_inode(ino)?;
        let caller = perm::Caller::new(ctx, &self.config.groups);
        Ok(perm::check(&self.inodes[&ino].row, caller, mask)?)
    }

    /// Checks that the entry `name` of `dir` may be removed; `None` when there is no such entry
    /// (the operation answers ENOENT itself), else the entry's inode.
    fn permit_delete(&mut self, ctx: Ctx, dir: Ino, name: &[u8]) -> Result<Option<Ino>, Stop> {
        self.ensure_dir(dir)?;
        let Some(d) = self.dirs[&dir].get(name) else { return Ok(None) };
        self.ensure_named(dir, d.ino)?;
        let caller = perm::Caller::new(ctx, &self.config.groups);
        perm::may_delete(&self.inodes[&dir].row, &self.inodes[&d.ino].row, caller)?;
        Ok(Some(d.ino))
    }

    /// The setattr as it may be applied (see [`perm::setattr`]); unchanged on a shared mount.
    fn authorize_setattr(&mut self, ctx: Ctx, ino: Ino, set: SetAttr, has_fh: bool) -> Result<SetAttr, Stop> {
        if !self.config.check_permissions {
            return Ok(set);
        }
        self.ensure_inode(ino)?;
        let caller = perm::Caller::new(ctx, &self.config.groups);
        Ok(perm::setattr(&self.inodes[&ino].row, caller, set, has_fh)?)
    }

    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Exec {
        check_name(name)?;
        self.ensure_dir(parent)?;
        let ino = self.dirs[&parent].get(name).ok_or(ENOENT)?.ino;
        self.ensure_named(parent, ino)?;
        Ok(self.entry(ino, Some(parent)))
    }

    /// `ensure_inode` of the inode an entry of `parent` names. With several hosts, if the
    /// store says it does not exist (a load found no row, or a refresh: then it was dropped
    /// here), the listing is older than another host's change (a rename over the name, an
    /// unlink and a new file) whose invalidation is still on its way: it is read again, rather
    /// than answering ENOENT for a name that may never have gone (a rename replaces
    /// atomically). Once per listing and inode: one read again is as new as the store (it is
    /// read once nothing of this host is in flight).
    fn ensure_named(&mut self, parent: Ino, ino: Ino) -> Result<(), Stop> {
        // (Or read again without names: the listing names it all the same, see `open`.)
        let gone = self.absent.contains(&ino)
            || self.deleted.contains(&ino)
            || self.inodes.get(&ino).is_some_and(|i| i.row.nlink == 0);
        if self.config.multi_host && gone && !self.relisted.contains(&(parent, ino)) {
            if self.pending.values().any(|p| matches!(p, Pending::Commit { .. })) {
                // The listing is the store plus this host's transactions in flight: read it
                // again once they are done.
                return Err(Stop::Wait);
            }
            self.relisted.insert((parent, ino));
            self.dirs.remove(&parent);
            self.load_dir(parent);
            return Err(Stop::Wait);
        }
        self.ensure_inode(ino)
    }

    /// An entry reply: the kernel takes one lookup reference.
    fn entry(&mut self, ino: Ino, parent: Option<Ino>) -> Reply {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups += 1;
            if inode.row.kind == FileKind::Directory && parent.is_some() {
                inode.parent = parent;
            }
        }
        Reply::Entry(self.attr(ino))
    }

    fn setattr(&mut self, id: RequestId, ino: Ino, set: SetAttr, wall: Timespec) -> Exec {
        self.ensure_inode(ino)?;
        if let Some(size) = set.size {
            let inode = &self.inodes[&ino];
            match inode.row.kind {
                FileKind::Regular => {}
                FileKind::Directory => return Err(EISDIR.into()),
                _ => return Err(EINVAL.into()),
            }
            if size != inode.row.size || inode.data.staged {
                self.ensure_writable(ino, size)?;
                let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
                inode.data.writes_in_flight += 1;
                self.io(
                    IoRequest::Staging(StagingRequest::Truncate { ino, size }),
                    Pending::Truncate { id, ino, set, wall },
                );
                return Err(Stop::Later);
            }
        }
        self.finish_setattr(id, ino, set, wall, false);
        Err(Stop::Later)
    }

    /// The metadata part of setattr. `truncated`: the staged copy was just truncated, so the
    /// contents changed (a size equal to the current one changes nothing and stages nothing).
    fn finish_setattr(&mut self, id: RequestId, ino: Ino, set: SetAttr, wall: Timespec, truncated: bool) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            self.reply(id, Err(ENOENT));
            return;
        };
        let r = &mut inode.row;
        if let Some(mode) = set.mode {
            r.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = set.uid {
            r.uid = uid;
        }
        if let Some(gid) = set.gid {
            r.gid = gid;
        }
        if let Some(size) = set.size {
            if size != r.size {
                r.size = size;
                r.mtime = wall;
            }
        }
        match set.atime {
            Some(SetTime::Now) => r.atime = wall,
            Some(SetTime::At(t)) => r.atime = t,
            None => {}
        }
        match set.mtime {
            Some(SetTime::Now) => r.mtime = wall,
            Some(SetTime::At(t)) => r.mtime = t,
            None => {}
        }
        r.ctime = set.ctime.unwrap_or(wall);
        if truncated {
            // Dirty before the row is built: its size must stay the committed object's.
            inode.data.dirty_gen += 1;
            // (A short copy holds the whole file now.)
            inode.data.short = None;
        }
        let ops = vec![self.update_row(ino)];
        let attr = self.attr(ino);
        let txn = Txn { ops, durable: false };
        let times = std::mem::take(&mut self.times_in_txn);
        // (Run again on a conflict unless the staged copy was truncated already.)
        let retry = if truncated { None } else { self.conflict_retry(id) };
        let pending =
            Pending::Commit { reply: Some((id, Ok(Reply::Attr(attr)))), after: vec![], applied: truncated, times, retry };
        self.io(IoRequest::Meta(MetaRequest::Commit(txn)), pending);
        if truncated {
            self.schedule_upload(ino);
        }
    }

    /// The contents changed: a new generation to upload.
    fn data_changed(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.data.dirty_gen += 1;
            inode.data.changed_here = true;
        }
        self.schedule_upload(ino);
    }

    /// Upload a changed file now if nobody has it open, else after a quiet period.
    fn schedule_upload(&mut self, ino: Ino) {
        let now = self.now;
        let delay = self.config.upload_delay;
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        if inode.opens == 0 {
            inode.data.want_upload = true;
        } else if let Some(old) = inode.data.deadline.replace(now + delay) {
            self.deadlines.remove(&(old, ino));
            self.deadlines.insert((now + delay, ino));
        } else {
            self.deadlines.insert((now + delay, ino));
        }
        self.pump_upload(ino);
    }

    // ----- namespace -----

    /// mknod, mkdir, symlink and create. Answered when the transaction commits.
    fn create_node(&mut self, id: RequestId, ctx: Ctx, wall: Timespec, parent: Ino, name: &[u8], node: NewNode) -> Exec {
        let NewNode { kind, mode, rdev, target, open } = node;
        check_name(name)?;
        self.ensure_dir(parent)?;
        self.ensure_ids(2)?;
        if self.dirs[&parent].get(name).is_some() {
            return Err(EEXIST.into());
        }
        let p = &self.inodes[&parent].row;
        if p.nlink == 0 {
            return Err(ENOENT.into());
        }
        if kind == FileKind::Directory && p.nlink >= LINK_MAX {
            return Err(EMLINK.into());
        }
        let mut perm = (mode & 0o7777) as u16;
        let mut gid = ctx.gid;
        if p.perm & libc::S_ISGID as u16 != 0 {
            gid = p.gid;
            if kind == FileKind::Directory {
                perm |= libc::S_ISGID as u16;
            }
        }
        let ino = self.take_id();
        let pos = self.take_id();
        let size = target.as_ref().map_or(0, |t| t.len() as u64);
        let row = InodeRow {
            ino,
            kind,
            perm,
            uid: ctx.uid,
            gid,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            size,
            atime: wall,
            mtime: wall,
            ctime: wall,
            rdev,
            version: 1,
            object: None,
            target,
        };
        self.inodes.insert(
            ino,
            Inode {
                row: row.clone(),
                xattrs: BTreeMap::new(),
                parent: (kind == FileKind::Directory).then_some(parent),
                lookups: 0,
                version_stale: false,
                times_dirty: false,
                opens: 0,
                data: Data { committed_size: size, ..Data::default() },
            },
        );
        if kind == FileKind::Directory {
            self.dirs.insert(ino, Dir::default());
        }
        self.dirs.get_mut(&parent).ok_or(ENOENT)?.insert(name.to_vec(), Dentry { ino, kind, pos });
        let is_dir = kind == FileKind::Directory;
        if is_dir {
            self.inodes.get_mut(&parent).ok_or(ENOENT)?.row.nlink += 1;
        }
        let mut ops =
            vec![TxnOp::InsertInode(row), TxnOp::InsertDentry(DentryRow { parent, name: name.to_vec(), ino, pos })];
        self.touch_dir(parent, wall, &mut ops, is_dir);
        let reply = match (self.entry(ino, Some(parent)), open) {
            (Reply::Entry(attr), Some(flags)) => {
                if self.config.shared_opens {
                    // Listed before the name exists for the other hosts (the runtime runs the
                    // listing before the transaction): none of them can delete it unseen.
                    self.io(IoRequest::Lock(LockRequest::Open { ino }), Pending::OpenListed(ino));
                }
                Reply::Created { attr, fh: self.open_handle(ino, flags, self.config.shared_opens) }
            }
            (reply, _) => reply,
        };
        self.commit(ops, false, Some((id, Ok(reply))), vec![]);
        Err(Stop::Later)
    }

    /// Tells the other hosts (multi-host mounts) this host's locks on `ino` after a change.
    fn publish_locks(&mut self, ino: Ino) {
        if !self.config.multi_host {
            return;
        }
        *self.locks_asked.entry(ino).or_insert(0) += 1;
        if self.locks_in_flight.contains(&ino) {
            self.locks_republish.insert(ino);
            return;
        }
        // One lock request per inode at a time: the runtime may run two concurrently, and an
        // older list stored last would show other hosts a lock let go of for good.
        let held = self.locks.held(ino);
        self.locks_in_flight.insert(ino);
        let asked = self.locks_asked.get(&ino).copied().unwrap_or(0);
        self.io(IoRequest::Lock(LockRequest::Publish { ino, held }), Pending::LockPublished(ino, asked));
    }

    /// Whether request `id`, which let go of locks of `ino` (`released`) now or on an earlier
    /// run, must wait until the other hosts can see that: parked (`Stop::WaitLock`) until the
    /// publication of the list without them completes. (Whether it reached the server or not:
    /// the list is the server's business, and a failure there is logged by the runtime.)
    fn wait_unlock_seen(&mut self, id: RequestId, ino: Ino, released: bool) -> Result<(), Stop> {
        if released && self.config.multi_host {
            let asked = self.locks_asked.get(&ino).copied().unwrap_or(0);
            self.unlock_waits.insert(id, (ino, asked));
        }
        let Some(&(ino, wanted)) = self.unlock_waits.get(&id) else { return Ok(()) };
        if self.locks_published.get(&ino).copied().unwrap_or(0) >= wanted {
            self.unlock_waits.remove(&id);
            self.forget_publications(ino);
            return Ok(());
        }
        Err(Stop::WaitLock)
    }

    /// Drops the publication counts of `ino` once all asked for are done and nobody waits.
    fn forget_publications(&mut self, ino: Ino) {
        if self.locks_asked.get(&ino) == self.locks_published.get(&ino)
            && !self.locks_in_flight.contains(&ino)
            && !self.unlock_waits.values().any(|(i, _)| *i == ino)
        {
            self.locks_asked.remove(&ino);
            self.locks_published.remove(&ino);
        }
    }

    /// The other hosts' answer to a SetLk.
    fn lock_acquired(&mut self, p: Parked, result: IoResult) {
        let Op::SetLk { ino, owner, lock, sleep, .. } = p.op else { return };
        self.locks_in_flight.remove(&ino);
        match result {
            Ok(IoReply::LockConflict(None)) => {
                // Only releases can have happened here meanwhile (other SetLks of this inode
                // waited), so the lock is still free on this host.
                self.locks.set(ino, owner, &lock);
                self.reply(p.id, Ok(Reply::Empty));
            }
            Ok(_) if sleep => {
                // Held by another host, which does not tell us when it lets go: look again soon.
                self.lock_poll_at.get_or_insert(self.now + LOCK_POLL);
                self.lock_polling.push(p);
            }
            Ok(_) => self.reply(p.id, Err(EAGAIN)),
            Err(_) => self.reply(p.id, Err(libc::ENOLCK)),
        }
        if self.locks_republish.remove(&ino) {
            self.publish_locks(ino);
        }
        self.wake_lock_waiters();
    }

    /// The object a whole-file copy from `src` to `dst` can share instead of copying bytes: `src`
    /// is all in the store (nothing staged), `dst` is empty and untouched, and the copy covers
    /// all of `src`.
    fn shareable(&self, src: Ino, dst: Ino, len: u64) -> Option<ObjectId> {
        let (s, d) = (self.inodes.get(&src)?, self.inodes.get(&dst)?);
        // The source's object holds all of its contents (a staged copy may remain beside it,
        // identical, and its journal record may be on its way out).
        let committed = |i: &Inode| {
            let d = &i.data;
            !d.dirty() && d.upload.is_none() && d.writes_in_flight == 0 && !d.init_pending && !d.removing
        };
        // The destination has nothing at all yet, not even a staged copy reads would go to.
        let untouched = |i: &Inode| !i.data.staged && !i.data.busy() && committed(i);
        (src != dst
            && committed(s)
            && untouched(d)
            && d.row.size == 0
            && d.row.object.is_none()
            && s.row.size > 0
            && len >= s.row.size)
            .then(|| s.row.object.clone())
            .flatten()
    }

    /// The store shared `src`'s object with the copy's destination: commit it as the
    /// destination's contents, unless either file changed meanwhile (then copy the bytes).
    fn shared(&mut self, p: Parked, src: Ino, object: ObjectId, size: u64, result: IoResult) {
        let Op::CopyFileRange { ino_out: dst, .. } = p.op else { return };
        let got = match result {
            Ok(IoReply::Object(o)) => o,
            _ => {
                // Sharing failed: copy the bytes instead.
                self.no_share.insert(p.id);
                self.parked.push(p);
                return;
            }
        };
        let still = self.inodes.get(&src).and_then(|i| i.row.object.clone()) == Some(object)
            && self.shareable(src, dst, size).is_some();
        if !still {
            self.io(IoRequest::Store(StoreRequest::Delete { ino: dst, object: got }), Pending::Ignore);
            self.no_share.insert(p.id);
            self.parked.push(p);
            return;
        }
        let Some(inode) = self.inodes.get_mut(&dst) else { return };
        inode.row.object = Some(got);
        inode.row.size = size;
        inode.data.committed_size = size;
        inode.row.mtime = p.wall;
        inode.row.ctime = p.wall;
        let row = self.update_row(dst);
        self.commit(vec![row], false, Some((p.id, Ok(Reply::Written(size.min(u64::from(u32::MAX)) as u32)))), vec![]);
    }

    /// Takes back what a reply that will not be sent gave the kernel: a lookup reference, and
    /// for a create its open handle.
    fn undo_reply(&mut self, reply: &Reply) {
        let (ino, fh) = match reply {
            Reply::Created { attr, fh } => (attr.ino, Some(*fh)),
            Reply::Entry(attr) => (attr.ino, None),
            _ => return,
        };
        if let Some(h) = fh.and_then(|fh| self.handles.remove(&fh)) {
            if h.listed {
                self.forget_listed_handle(ino);
                self.unlist_unused(ino);
            }
        }
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.lookups = i.lookups.saturating_sub(1);
            if fh.is_some() {
                i.opens = i.opens.saturating_sub(1);
            }
        }
    }

    /// `listed`: the handle of a file on a `shared_opens` mount (see `listed_opens`).
    fn open_handle(&mut self, ino: Ino, flags: i32, listed: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, flags, wrote: false, listed });
        if listed {
            *self.listed_opens.entry(ino).or_insert(0) += 1;
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.opens += 1;
        }
        fh
    }

    fn release_handle(&mut self, ino: Ino, fh: u64, lock_owner: Option<u64>) {
        let mut listed = false;
        if let Some(h) = self.handles.remove(&fh) {
            debug_assert_eq!(h.ino, ino, "handle of another inode");
            listed = h.listed;
            if listed {
                self.forget_listed_handle(ino);
            }
            if h.wrote {
                self.give_way_unless_changing(ino);
            }
        }
        if let Some(owner) = lock_owner {
            if self.locks.release_owner(ino, owner) {
                self.publish_locks(ino);
                self.wake_lock_waiters();
            }
        }
        let Some(inode) = self.inodes.get_mut(&ino) else {
            if listed {
                self.unlist_unused(ino);
            }
            return;
        };
        inode.opens = inode.opens.saturating_sub(1);
        if inode.opens > 0 {
            return;
        }
        if inode.row.nlink == 0 {
            // (With `shared_opens`, its `Reap` unlists it here too.)
            self.delete_owed(ino);
            return;
        }
        self.unlist_unused(ino);
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        if inode.data.dirty() {
            inode.data.want_upload = true;
        }
        self.pump_upload(ino);
        self.maybe_unstage(ino);
    }

    /// A listed handle of `ino` went (see `listed_opens`).
    fn forget_listed_handle(&mut self, ino: Ino) {
        if let Some(n) = self.listed_opens.get_mut(&ino) {
            *n = n.saturating_sub(1);
        }
    }

    /// `ino` is listed as open here but no handle of it is left (its last one closed, or the
    /// open that listed it failed): unlist it. (A file without names is unlisted by its `Reap`.)
    fn unlist_unused(&mut self, ino: Ino) {
        if self.listed_opens.get(&ino) == Some(&0) {
            self.listed_opens.remove(&ino);
            self.unlist(ino);
        }
    }

    fn unlist(&mut self, ino: Ino) {
        self.io(IoRequest::Lock(LockRequest::Close { ino }), Pending::Unlisted(ino));
    }

    /// The coordination server says this host was the last to hold `ino` open after another
    /// host unlinked it (that host's `Reap` found it held before this host's `Close` went
    /// through): this host deletes it, once it has read the row without names.
    fn reap_unseen(&mut self, ino: Ino) {
        if !self.listed_opens.contains_key(&ino) && !self.reaping.contains(&ino) {
            // (A load of its own: an invalidation may drop the inode while it is read.)
            self.io(IoRequest::Meta(MetaRequest::LoadInode { ino }), Pending::ReapLoad(ino));
        }
    }

    /// (`shared_opens`) `ino` has no names and no handle here: ask whether another host has it
    /// open (see `LockRequest::Reap`); this host deletes it only if none has.
    fn reap(&mut self, ino: Ino) {
        self.listed_opens.remove(&ino);
        if self.reaping.insert(ino) || !self.pending.values().any(|p| matches!(p, Pending::Reap(i) if *i == ino)) {
            self.io(IoRequest::Lock(LockRequest::Reap { ino }), Pending::Reap(ino));
        }
    }

    /// Another host holds `ino` (without names) open, or it is gone: this host forgets it and
    /// drops what it kept of it (the holder deletes the row and its object).
    fn let_go(&mut self, ino: Ino) {
        self.reaping.remove(&ino);
        if self.inodes.get(&ino).is_none_or(|i| i.opens > 0) {
            return;
        }
        let Some(gone) = self.inodes.remove(&ino) else { return };
        self.dirs.remove(&ino);
        let d = gone.data;
        if let Some(old) = d.deadline {
            self.deadlines.remove(&(old, ino));
        }
        for (rid, _) in d.flush_waiters.into_iter().chain(d.fsync_waiters).chain(d.close_waiters) {
            self.reply(rid, Ok(Reply::Empty));
        }
        // Old versions of this host's (the row names none of them) are still its own to delete.
        for object in d.garbage.into_iter().chain(d.recommit.flatten()) {
            self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
        }
        if d.staged || d.init_pending || d.record_on_disk {
            self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
        }
    }

    /// The deletion of `ino`, without names and closed, if its row is known: a row being read
    /// again may owe its link count of 0 to a change that failed (an unlink answered EIO), and
    /// the file keeps its name then. It waits for the row, on the retry timer; named after all,
    /// it is not deleted.
    fn delete_owed(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get(&ino) else { return };
        if inode.version_stale {
            if !self.refreshing.contains(&ino) {
                self.refresh(ino);
            }
            self.delete_later(ino);
            return;
        }
        if inode.row.nlink == 0 {
            self.destroy(ino);
        }
    }

    /// The transaction deleting `ino` failed, but may have committed all the same (its answer
    /// lost): if the row read again is gone, its objects go too (`apply_refresh`).
    fn destroy_in_doubt(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get(&ino) {
            let objects = inode.row.object.iter().chain(&inode.data.garbage).cloned().collect();
            self.destroy_in_doubt.insert(ino, objects);
        }
    }

    /// Tries the deletion of `ino` (without names) again on the retry timer.
    fn delete_later(&mut self, ino: Ino) {
        let when = self.now + self.config.upload_retry;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.data.delete_again = true;
            if let Some(old) = inode.data.deadline.replace(when) {
                self.deadlines.remove(&(old, ino));
            }
            self.deadlines.insert((when, ino));
        }
    }

    /// Multi-host: a handle that changed the contents is being used (see `Handle::wrote`).
    fn mark_changing(&mut self, fh: u64) {
        if let Some(h) = self.handles.get_mut(&fh).filter(|_| self.config.multi_host) {
            h.wrote = true;
        }
    }

    /// Multi-host: whether this host keeps its own version of `ino` (a handle that changed it
    /// is open).
    fn changing_here(&self, ino: Ino) -> bool {
        self.config.multi_host && self.handles.values().any(|h| h.ino == ino && h.wrote)
    }

    /// Nothing of this host changes `ino` any more (its last writing handle closed, or the
    /// staged copy was only busy): if another host's version came after this host's own
    /// (clean) one, the staged copy goes, so that reads see the newer version.
    fn give_way(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        if !d.behind {
            return;
        }
        if d.staged && !d.dirty() && d.upload.is_none() && !d.busy() && d.staging_reads == 0 {
            d.behind = false;
            d.staged = false;
            d.removing = true;
            inode.row.size = d.committed_size;
            self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Remove(ino));
        }
    }

    /// [`Self::give_way`] unless a handle of this host still changes the file: after its last
    /// writing handle closed, or once a read or unseal that kept an outdated copy is done.
    fn give_way_unless_changing(&mut self, ino: Ino) {
        if !self.changing_here(ino) {
            self.give_way(ino);
        }
    }

    /// Remove an inode with no links and no open handles: its row, then (see `finish_destroy`)
    /// its object and staged copy. With `shared_opens`, once no other host has it open.
    fn destroy(&mut self, ino: Ino) {
        if self.config.shared_opens && self.inodes.get(&ino).is_some_and(|i| i.row.kind != FileKind::Directory) {
            self.reap(ino);
        } else {
            self.delete_unnamed(ino);
        }
    }

    /// The deletion itself (see `destroy`). With `shared_opens`, it names the row's version: a
    /// change another host made meanwhile (its commit of a new object) makes it conflict, and
    /// it runs again (on the retry timer) on the row read afresh, deleting that object too.
    fn delete_unnamed(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        if self.config.shared_opens && inode.version_stale {
            // The version this host knows may be a failed transaction's guess, which another
            // host's change can match: the row is read again first (`delete_owed`), and a new
            // version's object is deleted with it.
            self.delete_owed(ino);
            return;
        }
        let waiters: Vec<RequestId> = inode
            .data
            .flush_waiters
            .drain(..)
            .chain(inode.data.fsync_waiters.drain(..))
            .chain(inode.data.close_waiters.drain(..))
            .map(|(id, _)| id)
            .collect();
        for rid in waiters {
            self.reply(rid, Ok(Reply::Empty));
        }
        let mut ops = Vec::new();
        if self.config.shared_opens {
            ops.push(self.update_row(ino));
        }
        ops.push(TxnOp::DeleteInode { ino });
        self.commit(ops, false, None, vec![Cleanup::DestroyUnnamed(ino)]);
    }

    /// This host is still deleting `ino` (it did not open it meanwhile: its last close reaps it
    /// again).
    fn still_reaping(&self, ino: Ino) -> bool {
        self.reaping.contains(&ino) && self.inodes.get(&ino).is_some_and(|i| i.opens == 0)
    }

    /// (`Config::shared_opens`) A file without names that no host holds: its object goes first,
    /// then its row (`delete_unnamed`), as for a collected orphan. A crash in between leaves a
    /// row naming a missing object, which a collection of orphans deletes (deleting a missing
    /// object is no error); the other order would leave an object that nothing names.
    fn delete_reaped(&mut self, ino: Ino) {
        match self.inodes.get(&ino).and_then(|i| i.row.object.clone()) {
            Some(object) => {
                self.io(IoRequest::Store(StoreRequest::Delete { ino, object: object.clone() }), Pending::ReapedObject(ino, object));
            }
            None => self.delete_unnamed(ino),
        }
    }

    /// Whether a collection of orphans leaves `ino` alone: this host knows it (without
    /// `shared_opens`), or has it open or is deleting it. A copy of its row without names is
    /// dropped (no host holds the file).
    fn spares_orphan(&mut self, ino: Ino) -> bool {
        if !self.config.shared_opens {
            return self.inodes.contains_key(&ino);
        }
        let held = self.inodes.get(&ino).is_some_and(|i| i.opens > 0 || i.data.delete_again);
        if held || self.reaping.contains(&ino) || self.listed_opens.contains_key(&ino) {
            return true;
        }
        self.let_go(ino);
        false
    }

    /// Deletes the row of an orphan collected (its object is gone already).
    fn delete_orphan_row(&mut self, ino: Ino) {
        self.commit(vec![TxnOp::DeleteInode { ino }], false, None, vec![Cleanup::Staged(ino)]);
    }

    /// The deletion of an orphan collected failed (its object's or its row's). Without
    /// `shared_opens` the row stays for the next collection (the next start). With it, this host
    /// tries again on the retry timer as it does for a file left to it to delete
    /// (`reap_unseen`): no other host would before another one dies.
    fn orphan_left(&mut self, ino: Ino) {
        if self.config.shared_opens {
            self.reaping.remove(&ino);
            self.reap_again.insert(ino);
            self.listings_again_at.get_or_insert(self.now + self.config.upload_retry);
        }
    }

    /// The transaction deleting `ino` committed: forget it and drop its data.
    fn finish_destroy(&mut self, ino: Ino) {
        self.reaping.remove(&ino);
        let Some(inode) = self.inodes.remove(&ino) else { return };
        self.dirs.remove(&ino);
        self.deleted.insert(ino);
        if let Some(old) = inode.data.deadline {
            self.deadlines.remove(&(old, ino));
        }
        let d = inode.data;
        for object in inode.row.object.into_iter().chain(d.garbage) {
            self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
        }
        if d.staged || d.init_pending || d.record_on_disk {
            self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
        }
    }

    fn unlink(&mut self, id: RequestId, wall: Timespec, parent: Ino, name: &[u8], dir: bool) -> Exec {
        if name == b"." {
            return Err(EINVAL.into());
        }
        if name == b".." {
            return Err(ENOTEMPTY.into());
        }
        check_name(name)?;
        self.ensure_dir(parent)?;
        let d = self.dirs[&parent].get(name).ok_or(ENOENT)?;
        self.ensure_named(parent, d.ino)?;
        let is_dir = self.inodes[&d.ino].row.kind == FileKind::Directory;
        if dir && !is_dir {
            return Err(ENOTDIR.into());
        }
        if !dir && is_dir {
            return Err(EISDIR.into());
        }
        if is_dir {
            self.ensure_dir(d.ino)?;
            if !self.dirs[&d.ino].is_empty() {
                return Err(ENOTEMPTY.into());
            }
        }
        self.dirs.get_mut(&parent).ok_or(ENOENT)?.remove(name);
        let mut ops = vec![TxnOp::DeleteDentry { parent, name: name.to_vec(), ino: d.ino }];
        if is_dir {
            let pinode = self.inodes.get_mut(&parent).ok_or(ENOENT)?;
            pinode.row.nlink = pinode.row.nlink.saturating_sub(1);
        }
        self.touch_dir(parent, wall, &mut ops, is_dir);
        let (after, _) = self.drop_link(d.ino, wall, &mut ops);
        self.commit(ops, false, Some((id, Ok(Reply::Empty))), after);
        Err(Stop::Later)
    }

    /// One name of `ino` is gone: lower its link count, and remove it entirely if nothing
    /// references it any more. Adds the row changes to `ops`; returns data to clean up after.
    fn drop_link(&mut self, ino: Ino, wall: Timespec, ops: &mut Vec<TxnOp>) -> (Vec<Cleanup>, bool) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return (vec![], false) };
        let links_before = inode.row.nlink;
        if inode.row.kind == FileKind::Directory {
            inode.row.nlink = 0;
        } else {
            inode.row.nlink = inode.row.nlink.saturating_sub(1);
        }
        inode.row.ctime = wall;
        if inode.row.nlink > 0 || inode.opens > 0 {
            ops.push(self.update_row(ino));
            return (vec![], false);
        }
        if self.config.shared_opens && inode.row.kind != FileKind::Directory {
            // Another host may have it open: the row stays, without names, until this host
            // learns whether one has (`reap`, once this commits); the runtime lists it as this
            // host's orphan meanwhile, so a crash leaves it to the others.
            ops.push(self.update_row(ino));
            let ongoing = !self.reaping.insert(ino);
            return (vec![Cleanup::Reap { ino, ongoing }], false);
        }
        // No names and no open handles: remove it in the same transaction. With several hosts,
        // only the row this host read: another host may have given it a name since (a link
        // whose invalidation is still on its way); then the transaction conflicts and runs
        // again on the fresh row.
        if self.config.multi_host {
            // (Stored with a link count, the one it had or at least 1 for a row this host
            // read without names: the runtime takes a row stored without links for a file kept
            // open after its last name went, and lists it as this host's orphan, for ever if
            // the transaction fails.)
            if let TxnOp::UpdateInode { mut row, expect_version } = self.update_row(ino) {
                row.nlink = links_before.max(1);
                ops.push(TxnOp::UpdateInode { row, expect_version });
            }
        } else if let Some(inode) = self.inodes.get_mut(&ino) {
            // The version moves on in memory as if a row were stored: a commit issued while this
            // transaction is in flight (an upload's) is built on the link count lowered here, so
            // it must conflict if this one fails, not store a named file without links.
            inode.row.version += 1;
        }
        ops.push(TxnOp::DeleteInode { ino });
        (vec![Cleanup::Destroy(ino)], true)
    }

    fn link(&mut self, id: RequestId, wall: Timespec, ino: Ino, newparent: Ino, newname: &[u8]) -> Exec {
        check_name(newname)?;
        self.ensure_inode(ino)?;
        self.ensure_dir(newparent)?;
        self.ensure_ids(1)?;
        // The kernel's order: an existing name first, then what may be linked.
        if self.dirs[&newparent].get(newname).is_some() {
            return Err(EEXIST.into());
        }
        let inode = &self.inodes[&ino];
        if inode.row.kind == FileKind::Directory {
            return Err(EPERM.into());
        }
        if inode.row.nlink >= LINK_MAX {
            return Err(EMLINK.into());
        }
        if inode.row.nlink == 0 {
            return Err(ENOENT.into());
        }
        let kind = inode.row.kind;
        let pos = self.take_id();
        self.dirs.get_mut(&newparent).ok_or(ENOENT)?.insert(newname.to_vec(), Dentry { ino, kind, pos });
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        inode.row.nlink += 1;
        inode.row.ctime = wall;
        let mut ops = vec![
            TxnOp::InsertDentry(DentryRow { parent: newparent, name: newname.to_vec(), ino, pos }),
            self.update_row(ino),
        ];
        self.touch_dir(newparent, wall, &mut ops, false);
        let reply = self.entry(ino, None);
        self.commit(ops, false, Some((id, Ok(reply))), vec![]);
        Err(Stop::Later)
    }

    /// Is directory `ino` equal to `ancestor` or below it? Loads missing ancestors (and waits).
    fn is_within(&mut self, mut ino: Ino, ancestor: Ino) -> Result<bool, Stop> {
        // Deeper than any path the kernel can hand over (PATH_MAX / 2 components).
        for _ in 0..PATH_MAX {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            self.ensure_inode(ino)?;
            match self.inodes.get(&ino).and_then(|i| i.parent) {
                Some(p) => ino = p,
                None => {
                    debug_assert!(false, "directory {ino} without a known parent");
                    return Err(EIO.into());
                }
            }
        }
        Err(EIO.into())
    }

    #[allow(clippy::too_many_arguments)]
    fn rename(
        &mut self,
        id: RequestId,
        wall: Timespec,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
    ) -> Exec {
        const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
        const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
        if flags & !(NOREPLACE | EXCHANGE) != 0 || flags == NOREPLACE | EXCHANGE {
            return Err(EINVAL.into());
        }
        check_name(name)?;
        check_name(newname)?;
        self.ensure_dir(parent)?;
        self.ensure_dir(newparent)?;
        let src = self.dirs[&parent].get(name).ok_or(ENOENT)?;
        self.ensure_named(parent, src.ino)?;
        let dst = self.dirs[&newparent].get(newname);
        if let Some(d) = dst {
            self.ensure_named(newparent, d.ino)?;
            if d.kind == FileKind::Directory && flags & EXCHANGE == 0 {
                self.ensure_dir(d.ino)?;
            }
        }
        self.ensure_ids(2)?;
        let src_dir = src.kind == FileKind::Directory;
        if flags & EXCHANGE != 0 {
            let dst = dst.ok_or(ENOENT)?;
            if dst.ino == src.ino {
                return Ok(Reply::Empty);
            }
            if src_dir && self.is_within(newparent, src.ino)? {
                return Err(EINVAL.into());
            }
            if dst.kind == FileKind::Directory && self.is_within(parent, dst.ino)? {
                return Err(EINVAL.into());
            }
            return self.exchange(id, wall, parent, name, src, newparent, newname, dst);
        }
        if let Some(d) = dst {
            // Linux's order: NOREPLACE onto any existing name, even the source's inode, is EEXIST.
            if flags & NOREPLACE != 0 {
                return Err(EEXIST.into());
            }
            if d.ino == src.ino {
                return Ok(Reply::Empty); // the same file under both names: nothing to do
            }
            // The kernel's order: a directory into itself (EINVAL), then a target that is an
            // ancestor of the source (ENOTEMPTY), then the kinds.
            if src_dir && self.is_within(newparent, src.ino)? {
                return Err(EINVAL.into());
            }
            if d.kind == FileKind::Directory && self.is_within(parent, d.ino)? {
                return Err(ENOTEMPTY.into());
            }
            let dst_dir = d.kind == FileKind::Directory;
            if src_dir && !dst_dir {
                return Err(ENOTDIR.into());
            }
            if !src_dir && dst_dir {
                return Err(EISDIR.into());
            }
            if dst_dir && !self.dirs[&d.ino].is_empty() {
                return Err(ENOTEMPTY.into());
            }
        }
        if src_dir && self.is_within(newparent, src.ino)? {
            return Err(EINVAL.into());
        }
        if src_dir && parent != newparent && self.inodes[&newparent].row.nlink >= LINK_MAX && dst.is_none() {
            return Err(EMLINK.into());
        }
        let pos = self.take_id();
        let mut ops = vec![TxnOp::DeleteDentry { parent, name: name.to_vec(), ino: src.ino }];
        let mut after = Vec::new();
        self.dirs.get_mut(&parent).ok_or(ENOENT)?.remove(name);
        if let Some(d) = dst {
            self.dirs.get_mut(&newparent).ok_or(ENOENT)?.remove(newname);
            ops.push(TxnOp::DeleteDentry { parent: newparent, name: newname.to_vec(), ino: d.ino });
            if d.kind == FileKind::Directory {
                let np = self.inodes.get_mut(&newparent).ok_or(ENOENT)?;
                np.row.nlink = np.row.nlink.saturating_sub(1);
            }
            let (a, _) = self.drop_link(d.ino, wall, &mut ops);
            after = a;
        }
        self.dirs
            .get_mut(&newparent)
            .ok_or(ENOENT)?
            .insert(newname.to_vec(), Dentry { pos, ..src });
        ops.push(TxnOp::InsertDentry(DentryRow { parent: newparent, name: newname.to_vec(), ino: src.ino, pos }));
        if src_dir && parent != newparent {
            self.inodes.get_mut(&parent).ok_or(ENOENT)?.row.nlink -= 1;
            self.inodes.get_mut(&newparent).ok_or(ENOENT)?.row.nlink += 1;
        }
        let moved = self.inodes.get_mut(&src.ino).ok_or(ENOENT)?;
        moved.row.ctime = wall;
        if src_dir {
            moved.parent = Some(newparent);
        }
        ops.push(self.update_row(src.ino));
        self.touch_parents(parent, newparent, wall, &mut ops)?;
        self.commit(ops, false, Some((id, Ok(Reply::Empty))), after);
        Err(Stop::Later)
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        id: RequestId,
        wall: Timespec,
        parent: Ino,
        name: &[u8],
        src: Dentry,
        newparent: Ino,
        newname: &[u8],
        dst: Dentry,
    ) -> Exec {
        let (pos_a, pos_b) = (self.take_id(), self.take_id());
        let mut ops = vec![
            TxnOp::DeleteDentry { parent, name: name.to_vec(), ino: src.ino },
            TxnOp::DeleteDentry { parent: newparent, name: newname.to_vec(), ino: dst.ino },
            TxnOp::InsertDentry(DentryRow { parent, name: name.to_vec(), ino: dst.ino, pos: pos_a }),
            TxnOp::InsertDentry(DentryRow { parent: newparent, name: newname.to_vec(), ino: src.ino, pos: pos_b }),
        ];
        self.dirs.get_mut(&parent).ok_or(ENOENT)?.insert(name.to_vec(), Dentry { pos: pos_a, ..dst });
        self.dirs.get_mut(&newparent).ok_or(ENOENT)?.insert(newname.to_vec(), Dentry { pos: pos_b, ..src });
        if parent != newparent {
            let src_dir = src.kind == FileKind::Directory;
            let dst_dir = dst.kind == FileKind::Directory;
            if src_dir != dst_dir {
                let (from, to) = if src_dir { (parent, newparent) } else { (newparent, parent) };
                self.inodes.get_mut(&from).ok_or(ENOENT)?.row.nlink -= 1;
                self.inodes.get_mut(&to).ok_or(ENOENT)?.row.nlink += 1;
            }
            if src_dir {
                self.inodes.get_mut(&src.ino).ok_or(ENOENT)?.parent = Some(newparent);
            }
            if dst_dir {
                self.inodes.get_mut(&dst.ino).ok_or(ENOENT)?.parent = Some(parent);
            }
        }
        for ino in [src.ino, dst.ino] {
            self.inodes.get_mut(&ino).ok_or(ENOENT)?.row.ctime = wall;
            ops.push(self.update_row(ino));
        }
        self.touch_parents(parent, newparent, wall, &mut ops)?;
        self.commit(ops, false, Some((id, Ok(Reply::Empty))), vec![]);
        Err(Stop::Later)
    }

    /// An entry of `dir` was added or removed at `wall`. A change of its link count is stored
    /// with `ops`; a change of its times alone is stored later (see `flush_dir_times`), which
    /// saves a row update per create and unlink. Nothing but the times can be lost that way, and
    /// only to a crash within a second.
    fn touch_dir(&mut self, dir: Ino, wall: Timespec, ops: &mut Vec<TxnOp>, nlink_changed: bool) {
        const DIR_TIMES_DELAY: Duration = Duration::from_secs(1);
        let Some(inode) = self.inodes.get_mut(&dir) else { return };
        inode.row.mtime = wall;
        inode.row.ctime = wall;
        // With several hosts, a change of a directory's names (other than the root's, which is
        // never removed) goes with a new version of its row: a host removing the directory (or
        // renaming another over it) with an older listing, empty, then conflicts instead of
        // deleting it with the new names left pointing into nothing.
        let shared = self.config.multi_host && dir != ROOT_INO;
        if nlink_changed || inode.version_stale || shared {
            ops.push(self.update_row(dir));
            return;
        }
        inode.times_dirty = true;
        self.dir_times.insert(dir);
        if self.dir_times_flush_at.is_none() {
            self.dir_times_flush_at = Some(self.now + DIR_TIMES_DELAY);
        }
    }

    /// Store the times of every directory that has unsaved ones.
    fn flush_dir_times(&mut self) {
        self.dir_times_flush_at = None;
        let dirs: Vec<Ino> = std::mem::take(&mut self.dir_times).into_iter().collect();
        let mut ops = Vec::new();
        for dir in dirs {
            match self.inodes.get(&dir) {
                Some(i) if i.times_dirty && !i.version_stale => ops.push(self.update_row(dir)),
                Some(i) if i.times_dirty => {
                    // Its stored version is unknown after a failed transaction: the times wait
                    // for a reload (tried again if the last one failed), then the next flush.
                    if !self.refreshing.contains(&dir) {
                        self.refresh(dir);
                    }
                    self.dir_times.insert(dir);
                    self.dir_times_flush_at = Some(self.now + Duration::from_secs(1));
                }
                _ => {}
            }
        }
        if !ops.is_empty() {
            self.commit(ops, false, None, vec![]);
        }
    }

    /// A rename changed both directories: bump their times and store them.
    fn touch_parents(&mut self, parent: Ino, newparent: Ino, wall: Timespec, ops: &mut Vec<TxnOp>) -> Result<(), Stop> {
        let parents = if parent == newparent { vec![parent] } else { vec![parent, newparent] };
        for p in parents {
            let pi = self.inodes.get_mut(&p).ok_or(ENOENT)?;
            pi.row.mtime = wall;
            pi.row.ctime = wall;
            ops.push(self.update_row(p));
        }
        Ok(())
    }

    fn readdir(&mut self, ino: Ino, offset: u64, size: u32, plus: bool) -> Exec {
        self.ensure_dir(ino)?;
        let header = if plus { 152 } else { 24 };
        let fits = |used: &mut usize, name_len: usize| {
            let len = (header + name_len + 7) & !7;
            if *used + len > size as usize {
                return false;
            }
            *used += len;
            true
        };
        let mut used = 0usize;
        let mut out = Vec::new();
        let self_attr = self.attr(ino);
        let parent = self.inodes[&ino].parent.unwrap_or(ROOT_INO);
        if offset < 1 && fits(&mut used, 1) {
            out.push(DirEntry { ino, offset: 1, kind: FileKind::Directory, name: b".".to_vec(), attr: plus.then_some(self_attr) });
        }
        if offset < 2 && fits(&mut used, 2) {
            // `..` carries its own inode number in its attributes (the front writes the entry
            // from them); the parent's times are used when it is in memory.
            let parent_attr = if self.inodes.contains_key(&parent) { self.attr(parent) } else { Attr { ino: parent, ..self_attr } };
            out.push(DirEntry { ino: parent, offset: 2, kind: FileKind::Directory, name: b"..".to_vec(), attr: plus.then_some(parent_attr) });
        }
        let mut batch: Vec<(u64, Vec<u8>, Dentry)> = Vec::new();
        for (off, name, d) in self.dirs[&ino].after(offset) {
            if !fits(&mut used, name.len()) {
                break;
            }
            batch.push((off, name.to_vec(), d));
        }
        if plus && batch.iter().any(|(_, _, d)| !self.inodes.contains_key(&d.ino)) {
            // Some children were evicted: a fresh listing brings their attributes back.
            self.load_dir(ino);
            return Err(Stop::Wait);
        }
        if plus {
            // A child left stale by a failed transaction may show the change that failed (the
            // nlink 0 of a failed unlink): its attributes wait for its reload, as a lookup does.
            let mut stale = false;
            for (_, _, d) in &batch {
                stale |= self.ensure_inode(d.ino).is_err();
            }
            if stale {
                return Err(Stop::Wait);
            }
        }
        for (off, name, d) in batch {
            let attr = if plus {
                let a = self.entry(d.ino, Some(ino));
                match a {
                    Reply::Entry(a) => Some(a),
                    _ => None,
                }
            } else {
                None
            };
            out.push(DirEntry { ino: d.ino, offset: off, kind: d.kind, name, attr });
        }
        Ok(Reply::Dir(out))
    }

    /// `relatime`: a read marks the access time when it is not newer than the last change or is
    /// a day old. The reply does not wait for this transaction.
    fn touch_atime(&mut self, ino: Ino, wall: Timespec) {
        const DAY_SECS: i64 = 24 * 3600;
        if !self.config.relatime {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let r = &inode.row;
        if inode.version_stale || inode.row.nlink == 0 || (r.atime > r.mtime && r.atime > r.ctime && wall.sec - r.atime.sec < DAY_SECS) {
            return;
        }
        inode.row.atime = wall;
        let ops = vec![self.update_row(ino)];
        self.commit(ops, false, None, vec![]);
    }

    fn setxattr(&mut self, id: RequestId, wall: Timespec, ino: Ino, name: &[u8], value: &Bytes, flags: i32) -> Exec {
        self.ensure_inode(ino)?;
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(E2BIG.into());
        }
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let exists = inode.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(EEXIST.into());
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(ENODATA.into());
        }
        inode.xattrs.insert(name.to_vec(), value.clone());
        inode.row.ctime = wall;
        let ops = vec![TxnOp::SetXattr { ino, name: name.to_vec(), value: value.clone() }, self.update_row(ino)];
        self.commit(ops, false, Some((id, Ok(Reply::Empty))), vec![]);
        Err(Stop::Later)
    }

    // ----- file data -----

    fn read(&mut self, id: RequestId, ino: Ino, offset: u64, len: u64, copy: Option<CopyTo>) -> Exec {
        self.ensure_inode(ino)?;
        let inode = &self.inodes[&ino];
        if inode.row.kind == FileKind::Directory {
            return Err(EISDIR.into());
        }
        if inode.data.init_pending || inode.data.removing {
            return Err(Stop::Wait);
        }
        let size = inode.row.size;
        if offset >= size || len == 0 {
            return self.finish_read(id, Bytes::new(), 0, copy);
        }
        let len = len.min(size - offset) as u32;
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        if inode.data.staged {
            inode.data.staging_reads += 1;
            self.io(
                IoRequest::Staging(StagingRequest::Read { ino, offset, len }),
                Pending::StagingRead { id, ino, len: len as usize, copy },
            );
        } else if let Some(object) = inode.row.object.clone() {
            inode.data.store_reads += 1;
            let retry = self.running.clone().filter(|p| p.retries < MAX_CONFLICT_RETRIES).map(Box::new);
            self.io(
                IoRequest::Store(StoreRequest::Read { object, offset, len }),
                Pending::StoreRead { id, ino, len: len as usize, copy, retry },
            );
        } else {
            // A hole with no data anywhere (cannot normally happen: a non-empty file is staged
            // or has an object). Zeros are the truthful answer for a hole.
            return self.finish_read(id, Bytes::from(vec![0u8; len as usize]), len as usize, copy);
        }
        Err(Stop::Later)
    }

    fn finish_read(&mut self, id: RequestId, data: Bytes, len: usize, copy: Option<CopyTo>) -> Exec {
        // A short read inside the file's size is a hole at the end of the stored copy.
        let data = if data.len() < len {
            let mut v = data.to_vec();
            v.resize(len, 0);
            Bytes::from(v)
        } else {
            data
        };
        match copy {
            None => Ok(Reply::Data(data)),
            Some(to) => {
                if data.is_empty() {
                    return Ok(Reply::Written(0));
                }
                let p = Parked {
                    id,
                    ctx: to.ctx,
                    wall: to.wall,
                    op: Op::Write { ino: to.ino, fh: to.fh, offset: to.offset, data },
                    retries: 0,
                };
                self.run(p);
                Err(Stop::Later)
            }
        }
    }

    fn write(&mut self, id: RequestId, wall: Timespec, ino: Ino, fh: u64, offset: u64, data: Bytes) -> Exec {
        self.ensure_inode(ino)?;
        if self.inodes[&ino].row.kind != FileKind::Regular {
            return Err(EINVAL.into());
        }
        self.ensure_writable(ino, u64::MAX)?;
        let append = self.handles.get(&fh).is_some_and(|h| h.flags & libc::O_APPEND != 0);
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let offset = if append { inode.row.size } else { offset };
        let end = offset.checked_add(data.len() as u64).ok_or(libc::EFBIG)?;
        inode.data.writes_in_flight += 1;
        self.io(IoRequest::Staging(StagingRequest::Write { ino, offset, data }), Pending::Write { id, ino, end, wall });
        Err(Stop::Later)
    }

    fn flush(&mut self, id: RequestId, ino: Ino, fh: u64) -> Exec {
        let multi_host = self.config.multi_host;
        let wrote = self.handles.get(&fh).is_some_and(|h| h.wrote);
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let d = &mut inode.data;
        if multi_host && wrote && d.staged && !d.dirty() && inode.row.nlink > 0 && self.close_checked.insert(id) {
            // This host's version is stored already (uploaded before the close): whether
            // another host's came after it is in the store, which may not have told this host
            // yet. Read the row again first.
            self.reread_row(ino);
            return Err(Stop::Wait);
        }
        self.close_checked.remove(&id);
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let d = &mut inode.data;
        if multi_host && wrote && d.behind && d.changed_here && d.staged && !d.dirty() {
            // Another host's version came after this host's: the close stores this one again.
            d.behind = false;
            d.dirty_gen += 1;
        }
        if multi_host && inode.row.nlink > 0 && d.dirty() {
            d.close_waiters.push((id, d.dirty_gen));
            d.want_upload = true;
            self.pump_upload(ino);
            return Err(Stop::Later);
        }
        if inode.row.nlink == 0 || d.dirty_gen <= d.sealed_gen {
            return Ok(Reply::Empty);
        }
        d.flush_waiters.push((id, d.dirty_gen));
        d.want_upload = true;
        self.pump_upload(ino);
        Err(Stop::Later)
    }

    fn fsync(&mut self, id: RequestId, ino: Ino) -> Exec {
        let staged_ok = self.config.staged_is_durable;
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let d = &mut inode.data;
        if inode.row.nlink == 0 {
            return Ok(Reply::Empty);
        }
        if !d.dirty() || (staged_ok && d.dirty_gen <= d.sealed_gen) {
            // Nothing of the contents to wait for; make the metadata durable.
            self.commit(vec![], true, Some((id, Ok(Reply::Empty))), vec![]);
            return Err(Stop::Later);
        }
        if staged_ok {
            d.flush_waiters.push((id, d.dirty_gen));
        } else {
            d.fsync_waiters.push((id, d.dirty_gen));
        }
        d.want_upload = true;
        self.pump_upload(ino);
        Err(Stop::Later)
    }

    /// Start the next step of `ino`'s upload if one is wanted and nothing is in the way.
    fn pump_upload(&mut self, ino: Ino) {
        let shutting_down = self.shutting_down;
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        if d.upload.is_some() || d.busy() {
            return;
        }
        if inode.row.nlink == 0 && inode.version_stale && d.dirty() {
            // Without names by a transaction that failed (and may not have committed): the row
            // says whether the data is still to upload, or goes with the file.
            if !self.refreshing.contains(&ino) {
                self.refresh(ino);
            }
            return;
        }
        if inode.row.nlink == 0 {
            self.answer_unnamed_waiters(ino);
            return;
        }
        if !d.dirty() {
            d.want_upload = false;
            return;
        }
        if !(d.want_upload || shutting_down) {
            return;
        }
        d.want_upload = false;
        let gen = d.dirty_gen;
        let size = inode.row.size;
        d.upload = Some(Upload { gen, size });
        if let Some(old) = d.deadline.take() {
            self.deadlines.remove(&(old, ino));
        }
        let record = SealRecord { size, mtime: inode.row.mtime, ctime: inode.row.ctime };
        self.io(IoRequest::Staging(StagingRequest::Seal { ino, record }), Pending::Seal { ino });
    }

    /// A file without names is not uploaded: closes and fsyncs waiting for an upload of it (the
    /// last name went on another host meanwhile) are answered, as they are at once once it has
    /// none.
    fn answer_unnamed_waiters(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        let waiters: Vec<RequestId> =
            d.close_waiters.drain(..).chain(d.fsync_waiters.drain(..)).chain(d.flush_waiters.drain(..)).map(|(id, _)| id).collect();
        for id in waiters {
            self.reply(id, Ok(Reply::Empty));
        }
    }

    /// Drop the staged copy of a clean file nobody has open. Called only where a staged copy
    /// stops being needed (upload committed, last close, last read of it), never on the way to
    /// staging, so a request waiting for a staged copy cannot see it removed again.
    fn maybe_unstage(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        if d.staged && !d.dirty() && inode.opens == 0 && d.upload.is_none() && !d.busy() && d.staging_reads == 0 {
            d.staged = false;
            d.removing = true;
            // The stored object is the contents now (another host's, if a refresh brought one
            // while the copy was busy), and so is its size.
            inode.row.size = d.committed_size;
            self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Remove(ino));
        }
    }

    /// Answer the flush waiters whose generation is sealed and the fsync waiters whose generation
    /// is uploaded; with `error`, also fail those the failed upload covered.
    fn answer_waiters(&mut self, ino: Ino, error: Option<i32>) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        let failed = error.zip(d.upload.map(|u| u.gen));
        let mut answers = Vec::new();
        let mut settle = |waiters: &mut Vec<(RequestId, u64)>, done: u64| {
            waiters.retain(|&(id, gen)| {
                let answer = match failed {
                    _ if gen <= done => Ok(Reply::Empty),
                    Some((errno, failed_gen)) if gen <= failed_gen => Err(errno),
                    _ => return true,
                };
                answers.push((id, answer));
                false
            });
        };
        settle(&mut d.flush_waiters, d.sealed_gen);
        settle(&mut d.fsync_waiters, d.uploaded_gen);
        // A close waits for the upload, but a failed store does not fail it once the data is
        // sealed: the upload is retried, as after any close.
        let (sealed, uploaded) = (d.sealed_gen, d.uploaded_gen);
        d.close_waiters.retain(|&(id, gen)| {
            let answer = match failed {
                _ if gen <= uploaded => Ok(Reply::Empty),
                Some(_) if gen <= sealed => Ok(Reply::Empty),
                Some((errno, failed_gen)) if gen <= failed_gen => Err(errno),
                _ => return true,
            };
            answers.push((id, answer));
            false
        });
        for (id, r) in answers {
            self.reply(id, r);
        }
    }

    fn upload_failed(&mut self, ino: Ino, err: &IoError) {
        self.failed_uploads += 1;
        let errno = match err.kind {
            IoErrorKind::NoSpace => ENOSPC,
            _ => EIO,
        };
        self.answer_waiters(ino, Some(errno));
        let when = self.now + self.config.upload_retry;
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        inode.data.upload = None;
        inode.data.failures += 1;
        if let Some(old) = inode.data.deadline.replace(when) {
            self.deadlines.remove(&(old, ino));
        }
        self.deadlines.insert((when, ino));
    }

    fn collect_garbage(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        if inode.data.store_reads > 0 || inode.data.garbage.is_empty() {
            return;
        }
        let garbage = std::mem::take(&mut inode.data.garbage);
        for object in garbage {
            self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
        }
    }

    // ----- completions -----

    fn complete(&mut self, pending: Pending, result: IoResult) {
        match pending {
            Pending::Startup => {
                match result {
                    Ok(IoReply::Staged(entries)) => self.replay(entries),
                    Ok(_) => debug_assert!(false, "scan returned something else"),
                    Err(_) => {
                        // The staging area could not be read: nothing to replay, but the files in
                        // it are not deleted either; the runtime logged the error.
                    }
                }
                self.startup_step_done();
            }
            Pending::Orphans { startup } => {
                if let Ok(IoReply::Orphans(rows)) = result {
                    for row in rows {
                        if !startup && self.spares_orphan(row.ino) {
                            continue;
                        }
                        if self.config.shared_opens {
                            // Deleted here, object first: no reap of it runs meanwhile (one
                            // deletes the row first, and a crash then would leave the object).
                            self.reaping.insert(row.ino);
                        }
                        match row.object {
                            // The object goes first: a crash in between leaves a row naming no
                            // object, which the next collection deletes (deleting a missing
                            // object is no error); the other order would leave an object that
                            // nothing names.
                            Some(object) => {
                                let ino = row.ino;
                                self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::OrphanObject(ino));
                            }
                            None => self.delete_orphan_row(row.ino),
                        }
                    }
                }
                if startup {
                    self.startup_step_done();
                }
            }
            Pending::OrphanObject(ino) => {
                if result.is_ok() {
                    self.delete_orphan_row(ino);
                } else {
                    self.orphan_left(ino);
                }
            }
            Pending::ReapedObject(ino, object) => match result {
                Ok(_) if self.still_reaping(ino) => {
                    // The row is stored naming no object with its deletion.
                    if let Some(inode) = self.inodes.get_mut(&ino).filter(|i| i.row.object.as_ref() == Some(&object)) {
                        inode.row.object = None;
                    }
                    self.delete_unnamed(ino);
                }
                Ok(_) => {
                    self.reaping.remove(&ino);
                }
                // The row stays, naming the object: the deletion runs again on the retry timer.
                Err(_) => self.delete_later(ino),
            },
            Pending::LoadInode(ino) if self.stale_inode_loads.remove(&ino) => {
                self.loading_inodes.remove(&ino);
                self.loads_in_flight -= 1;
                let _ = self.ensure_inode(ino);
                if !self.loading_inodes.contains(&ino) {
                    // Known without another load (in memory, or gone): a replay waiting for it
                    // goes on.
                    self.replay_loaded(ino, true);
                }
            }
            Pending::LoadInode(ino) => {
                self.loading_inodes.remove(&ino);
                self.loads_in_flight -= 1;
                let loaded = match result {
                    Ok(IoReply::Inode(Some(loaded))) => {
                        self.insert_loaded(loaded);
                        true
                    }
                    Ok(_) => {
                        self.absent.insert(ino);
                        true
                    }
                    Err(_) => {
                        // Not known to be absent: the next request loads it again.
                        self.fail_parked_on(ino);
                        false
                    }
                };
                self.replay_loaded(ino, loaded);
                if self.loads_in_flight == 0 {
                    self.deleted.clear();
                }
            }
            Pending::Refresh { ino, .. } if self.stale_inode_loads.remove(&ino) => {
                self.refreshing.remove(&ino);
                if self.inodes.get(&ino).is_some_and(|i| i.version_stale) {
                    self.refresh(ino);
                }
            }
            Pending::Refresh { ino, base } => match result {
                Ok(IoReply::Inode(loaded)) => self.apply_refresh(ino, base, loaded),
                _ => {
                    self.refreshing.remove(&ino);
                    if let Some(inode) = self.inodes.get_mut(&ino) {
                        let d = &mut inode.data;
                        if d.dirty() && d.upload.is_none() && d.deadline.is_none() && d.recommit.is_none() {
                            // Data still to upload waits for the row: read again on the retry
                            // timer (`pump_upload`), not only when a request needs it.
                            let when = self.now + self.config.upload_retry;
                            d.deadline = Some(when);
                            self.deadlines.insert((when, ino));
                        }
                        if let Some(object) = inode.data.recommit.take() {
                            // The commit cannot run again without the row: retried later, as
                            // after any failed upload.
                            // (Never sent: it replaced nothing.)
                            inode.data.uncommitted.extend(object.map(|o| (o, None)));
                            let e = IoError::new(IoErrorKind::Other, "the row to commit on could not be read");
                            self.upload_failed(ino, &e);
                        }
                    }
                    self.fail_parked_on(ino);
                }
            },
            Pending::LoadDir(ino) if self.stale_dir_loads.remove(&ino) => {
                self.loading_dirs.remove(&ino);
                self.loads_in_flight -= 1;
                self.load_dir(ino);
            }
            Pending::LoadDir(ino) => {
                self.loading_dirs.remove(&ino);
                self.loads_in_flight -= 1;
                match result {
                    Ok(IoReply::Dir(entries)) => {
                        let known = self.dirs.contains_key(&ino);
                        let mut dir = Dir::default();
                        for (dentry, loaded) in entries {
                            let kind = loaded.row.kind;
                            let child = self.insert_loaded(loaded);
                            if kind == FileKind::Directory {
                                if let Some(c) = self.inodes.get_mut(&child) {
                                    c.parent = Some(ino);
                                }
                            }
                            dir.insert(dentry.name, Dentry { ino: child, kind, pos: dentry.pos });
                        }
                        if !known && self.inodes.contains_key(&ino) {
                            self.dirs.insert(ino, dir);
                        }
                    }
                    Ok(_) | Err(_) => self.fail_parked_on(ino),
                }
                if self.loads_in_flight == 0 {
                    self.deleted.clear();
                }
            }
            Pending::AllocIds => {
                self.ids_loading = false;
                match result {
                    Ok(IoReply::Ids { first }) => {
                        self.ids = first..first + self.config.ids_per_alloc.max(2);
                    }
                    _ => self.fail_all_parked(EIO),
                }
            }
            Pending::Commit { reply, after, applied, times, retry } => match result {
                Ok(_) => {
                    if let Some((id, r)) = reply {
                        self.reply(id, r);
                    }
                    for c in after {
                        match c {
                            Cleanup::Staged(ino) => {
                                self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
                                // (A copy of its row read meanwhile goes too.)
                                if self.config.shared_opens {
                                    self.let_go(ino);
                                }
                            }
                            Cleanup::Destroy(ino) | Cleanup::DestroyUnnamed(ino) => self.finish_destroy(ino),
                            Cleanup::Reap { ino, .. } => self.reap(ino),
                        }
                    }
                }
                Err(e) => {
                    let errno = match e.kind {
                        IoErrorKind::NoSpace => ENOSPC,
                        _ => EIO,
                    };
                    // The kernel never gets the entry or handle of a change that did not happen.
                    if let Some((_, Ok(r))) = &reply {
                        if !applied {
                            self.undo_reply(r);
                        }
                    }
                    let retry = retry.filter(|_| e.kind == IoErrorKind::Conflict && !applied);
                    if let Some((id, r)) = reply {
                        if retry.is_none() {
                            self.reply(id, if applied { r } else { Err(errno) });
                        }
                    }
                    // Times that rode on the failed transaction are unsaved again.
                    for dir in times {
                        if let Some(inode) = self.inodes.get_mut(&dir) {
                            inode.times_dirty = true;
                            self.dir_times.insert(dir);
                            self.dir_times_flush_at.get_or_insert(self.now + Duration::from_secs(1));
                        }
                    }
                    // A deletion of a file without names that did not happen is tried again on
                    // the retry timer (one that went with its last name did not take it).
                    for c in &after {
                        match c {
                            Cleanup::DestroyUnnamed(ino) => {
                                if e.kind != IoErrorKind::Conflict {
                                    self.destroy_in_doubt(*ino);
                                }
                                self.delete_later(*ino);
                            }
                            Cleanup::Reap { ino, ongoing } => {
                                // The name stays (or the request runs again): the runtime's
                                // orphan listing of the file goes. A deletion that was going on
                                // before goes on.
                                if !ongoing {
                                    self.reaping.remove(ino);
                                }
                                if !self.listed_opens.contains_key(ino) {
                                    self.unlist(*ino);
                                    // Should the transaction have committed all the same (its
                                    // answer lost), the row read again is without names, and
                                    // this host reaps it. With a load of its own: the inode may
                                    // leave memory before the reload of `forget_clean_state`
                                    // comes back (an invalidation), and nobody else would.
                                    if e.kind != IoErrorKind::Conflict {
                                        self.reap_unseen(*ino);
                                    }
                                }
                            }
                            Cleanup::Destroy(ino) if e.kind != IoErrorKind::Conflict => self.destroy_in_doubt(*ino),
                            // (An orphan's row: see `delete_orphan_row`.)
                            Cleanup::Staged(ino) => self.orphan_left(*ino),
                            Cleanup::Destroy(_) => {}
                        }
                    }
                    self.forget_clean_state();
                    if let Some(p) = retry {
                        // Runs again once the state it needs is loaded afresh.
                        self.parked.push(Parked { retries: p.retries + 1, ..*p });
                    }
                }
            },
            Pending::Init(ino) => {
                let failed = result.is_err();
                if !failed && !self.inodes.contains_key(&ino) {
                    // The file went while its copy was being made (another host deleted it, and
                    // the Remove of its copy ran first): the copy was made again.
                    self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
                    return;
                }
                let mut replaced = false;
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.data.init_pending = false;
                    if failed {
                        inode.data.staged = false;
                        inode.data.short = None;
                    }
                    // Multi-host: the object to copy is gone because another host stored a new
                    // version (and deleted this one): read the row again; the requests waiting
                    // for the copy run again on it (a few times at most).
                    let gone = result.as_ref().is_err_and(|e| e.kind == IoErrorKind::NotFound);
                    replaced = gone && self.config.multi_host && inode.data.init_misses < MAX_CONFLICT_RETRIES;
                    inode.data.init_misses = if replaced { inode.data.init_misses + 1 } else { 0 };
                }
                if replaced {
                    self.reread_row(ino);
                } else if failed {
                    self.fail_parked_on(ino);
                } else if !self.parked.iter().any(|p| truncates(&p.op) == Some(ino)) {
                    // The truncate it was made for failed meanwhile.
                    self.drop_short_copy(ino);
                }
                self.pump_upload(ino);
            }
            Pending::Write { id, ino, end, wall } => {
                let Some(inode) = self.inodes.get_mut(&ino) else {
                    // The file went while the write was on its way (another host deleted it,
                    // and its staged copy was removed): the write made the staged file again.
                    if result.is_ok() {
                        self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
                    }
                    self.reply(id, Err(ENOENT));
                    return;
                };
                inode.data.writes_in_flight -= 1;
                match result {
                    Ok(IoReply::Written(n)) => {
                        if end > inode.row.size {
                            inode.row.size = end;
                        }
                        inode.row.mtime = wall;
                        inode.row.ctime = wall;
                        self.reply(id, Ok(Reply::Written(n)));
                        self.data_changed(ino);
                    }
                    Ok(_) => self.reply(id, Err(EIO)),
                    Err(e) => {
                        self.reply(id, Err(if e.kind == IoErrorKind::NoSpace { ENOSPC } else { EIO }));
                        self.pump_upload(ino);
                    }
                }
            }
            Pending::Allocate { id, ino, end, wall } => {
                let Some(inode) = self.inodes.get_mut(&ino) else {
                    self.reply(id, Err(ENOENT));
                    return;
                };
                inode.data.writes_in_flight -= 1;
                match result {
                    Ok(_) => {
                        if end > inode.row.size {
                            inode.row.size = end;
                            inode.row.ctime = wall;
                        }
                        self.reply(id, Ok(Reply::Empty));
                        self.data_changed(ino);
                    }
                    Err(e) => {
                        self.reply(id, Err(if e.kind == IoErrorKind::NoSpace { ENOSPC } else { EIO }));
                        self.pump_upload(ino);
                    }
                }
            }
            Pending::Truncate { id, ino, set, wall } => {
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.data.writes_in_flight -= 1;
                }
                match result {
                    Ok(_) => self.finish_setattr(id, ino, set, wall, true),
                    Err(e) => {
                        self.reply(id, Err(if e.kind == IoErrorKind::NoSpace { ENOSPC } else { EIO }));
                        self.drop_short_copy(ino);
                        self.pump_upload(ino);
                    }
                }
            }
            Pending::StagingRead { id, ino, len, copy } => {
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.data.staging_reads -= 1;
                }
                self.finish_read_io(id, result, len, copy);
                self.pump_upload(ino);
                self.maybe_unstage(ino);
                self.give_way_unless_changing(ino);
            }
            Pending::StoreRead { id, ino, len, copy, retry } => {
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.data.store_reads -= 1;
                }
                match (result, retry) {
                    (Err(e), Some(mut p)) if e.kind == IoErrorKind::NotFound && self.inodes.contains_key(&ino) => {
                        // Another host stored a new version and deleted the object this host
                        // knew: read the row again, then read again (close-to-open allows the
                        // newer version to a handle opened before).
                        p.retries += 1;
                        self.reread_row(ino);
                        self.parked.push(*p);
                    }
                    (result, _) => self.finish_read_io(id, result, len, copy),
                }
                self.collect_garbage(ino);
            }
            Pending::Seal { ino } => {
                let Some(inode) = self.inodes.get_mut(&ino) else {
                    // Removed while sealing: the seal may have re-created the staged copy.
                    self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
                    return;
                };
                let Some(up) = inode.data.upload else { return };
                if let Err(e) = result {
                    self.upload_failed(ino, &e);
                    return;
                }
                inode.data.sealed_gen = inode.data.sealed_gen.max(up.gen);
                inode.data.record_on_disk = true;
                self.answer_waiters(ino, None);
                let Some(inode) = self.inodes.get_mut(&ino) else { return };
                if inode.row.nlink == 0 {
                    inode.data.upload = None;
                    self.answer_unnamed_waiters(ino);
                    return;
                }
                if up.size == 0 {
                    let old = inode.row.object.clone();
                    self.commit_upload(ino, None, old);
                } else {
                    self.io(IoRequest::Store(StoreRequest::PutStaged { ino }), Pending::Put { ino });
                }
            }
            Pending::Share { p, src, object, size } => self.shared(*p, src, object, size, result),
            Pending::Put { ino } => match result {
                Ok(IoReply::Object(object)) => {
                    let Some(inode) = self.inodes.get(&ino) else {
                        self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
                        return;
                    };
                    let old = inode.row.object.clone();
                    self.commit_upload(ino, Some(object), old);
                }
                Ok(_) => self.upload_failed(ino, &IoError::new(IoErrorKind::Other, "unexpected reply to upload")),
                Err(e) => self.upload_failed(ino, &e),
            },
            Pending::UploadCommit { ino, object, old, old_size } => {
                if !self.inodes.contains_key(&ino) {
                    // This host let the file go meanwhile (it has no names, and another host
                    // holds it open). Stored, the object is the file's now, and the one it
                    // replaced is this host's to delete; refused, the new one is.
                    let unused = match &result {
                        Ok(_) => old.filter(|o| Some(o) != object.as_ref()),
                        Err(e) if e.kind == IoErrorKind::Conflict => object,
                        // Maybe stored: an object left over costs space, one deleted the file.
                        Err(_) => None,
                    };
                    if let Some(object) = unused {
                        self.io(IoRequest::Store(StoreRequest::Delete { ino, object }), Pending::Ignore);
                    }
                    return;
                }
                let Some(inode) = self.inodes.get_mut(&ino) else { return };
                let Some(up) = inode.data.upload else { return };
                match &result {
                    Err(e) if e.kind == IoErrorKind::Conflict && self.config.multi_host => {
                        // Another host's commit came first: this one runs again on the row read
                        // afresh (`apply_refresh`), with the same object (the last one wins).
                        inode.row.object = old;
                        inode.data.committed_size = old_size;
                        inode.data.recommit = Some(object);
                        // (It keeps this inode, uploading, and reads its row again.)
                        self.forget_clean_state();
                        return;
                    }
                    _ => {}
                }
                if let Err(e) = result {
                    // Transactions issued after this one may have stored the new object already,
                    // and the failure may hide a commit that happened: the reload that follows
                    // (`apply_refresh`) decides whether the object is garbage. The staged copy
                    // stays dirty and the retry uploads and commits again.
                    inode.data.uncommitted.extend(object.map(|o| (o, old.clone())));
                    inode.row.object = old;
                    inode.data.committed_size = old_size;
                    self.upload_failed(ino, &e);
                    self.forget_clean_state();
                    return;
                }
                let d = &mut inode.data;
                d.upload = None;
                d.failures = 0;
                d.behind = false;
                d.uploaded_gen = d.uploaded_gen.max(up.gen);
                if !d.dirty() {
                    d.committed_size = inode.row.size;
                }
                if let Some(old) = old {
                    if Some(&old) != inode.row.object.as_ref() {
                        d.garbage.push(old);
                    }
                }
                self.answer_waiters(ino, None);
                self.collect_garbage(ino);
                let Some(inode) = self.inodes.get_mut(&ino) else { return };
                let d = &mut inode.data;
                if d.record_on_disk {
                    // The sealed data is in the store now: drop the record so the copy may change.
                    d.unsealing = true;
                    self.io(IoRequest::Staging(StagingRequest::Unseal { ino }), Pending::Unseal(ino));
                }
                let Some(inode) = self.inodes.get_mut(&ino) else { return };
                let d = &mut inode.data;
                if d.dirty()
                    && (!d.flush_waiters.is_empty()
                        || !d.fsync_waiters.is_empty()
                        || !d.close_waiters.is_empty()
                        || inode.opens == 0)
                {
                    d.want_upload = true;
                } else if d.dirty() && d.deadline.is_none() {
                    let when = self.now + self.config.upload_delay;
                    d.deadline = Some(when);
                    self.deadlines.insert((when, ino));
                }
                self.pump_upload(ino);
                self.maybe_unstage(ino);
            }
            Pending::Remove(ino) => {
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.data.removing = false;
                    inode.data.record_on_disk = false;
                }
                self.pump_upload(ino);
            }
            Pending::Unseal(ino) => {
                let ok = result.is_ok();
                if let Some(inode) = self.inodes.get_mut(&ino) {
                    inode.data.unsealing = false;
                    if ok {
                        inode.data.record_on_disk = false;
                    }
                }
                if !ok {
                    self.fail_parked_on(ino);
                }
                self.pump_upload(ino);
                self.maybe_unstage(ino);
                self.give_way_unless_changing(ino);
            }
            Pending::Ignore => {}
            Pending::OpenListed(ino) => {
                self.opens_listing.remove(&ino);
                match result {
                    Err(e) if e.kind == IoErrorKind::NotFound => {
                        // Another host is deleting it (it has no names).
                        self.open_refused.insert(ino);
                    }
                    // Listed; or the coordination server failed (the runtime logged it): the
                    // open goes on unlisted, as on a mount without one.
                    _ => {
                        self.listed_opens.entry(ino).or_insert(0);
                    }
                }
            }
            Pending::Unlisted(ino) => match result {
                Ok(IoReply::Held(false)) => self.reap_unseen(ino),
                Ok(_) => {}
                Err(_) => {
                    self.unlist_again.insert(ino);
                    self.listings_again_at.get_or_insert(self.now + self.config.upload_retry);
                }
            },
            Pending::ReapLoad(ino) => {
                let loaded = match result {
                    Ok(IoReply::Inode(Some(loaded))) => loaded,
                    Ok(_) => return, // deleted already
                    Err(_) => {
                        self.reap_again.insert(ino);
                        self.listings_again_at.get_or_insert(self.now + self.config.upload_retry);
                        return;
                    }
                };
                let held = self.listed_opens.contains_key(&ino)
                    || self.reaping.contains(&ino)
                    || self.inodes.get(&ino).is_some_and(|i| i.opens > 0);
                if loaded.row.nlink > 0 || loaded.row.kind == FileKind::Directory || held {
                    // Named again, or open here again (its last close reaps it), or being
                    // deleted here already.
                    return;
                }
                if self.inodes.get(&ino).is_some_and(|i| i.data.busy() || i.data.upload.is_some()) {
                    // Its staged copy is being worked on (sealed for an upload at its last
                    // close, say): what comes back must find the inode it was for, and a seal
                    // finishing after the copy's removal would make it again. Read the row
                    // again once that is done.
                    self.reap_again.insert(ino);
                    self.listings_again_at.get_or_insert(self.now + self.config.upload_retry);
                    return;
                }
                // Whatever this host kept of it (an older row, a staged copy) goes: the row
                // read now is the one to delete.
                self.let_go(ino);
                self.insert_loaded(loaded);
                if self.inodes.contains_key(&ino) {
                    self.reap(ino);
                }
            }
            Pending::Reap(ino) => match result {
                // (Unless this host opened it meanwhile: its last close reaps it again.)
                Ok(IoReply::Held(false)) if self.still_reaping(ino) => {
                    self.delete_reaped(ino)
                }
                Ok(IoReply::Held(false)) => {
                    self.reaping.remove(&ino);
                }
                Ok(_) => self.let_go(ino),
                Err(_) => self.delete_later(ino),
            },
            Pending::LockPublished(ino, asked) => {
                self.locks_in_flight.remove(&ino);
                let published = self.locks_published.entry(ino).or_insert(0);
                *published = (*published).max(asked);
                if self.locks_republish.remove(&ino) {
                    self.publish_locks(ino);
                }
                self.forget_publications(ino);
                self.wake_lock_waiters();
            }
            Pending::LockAcquire(p) => self.lock_acquired(*p, result),
            Pending::LockQuery { id, want } => {
                let r = match result {
                    Ok(IoReply::LockConflict(Some(l))) => Ok(Reply::Lock(l)),
                    Ok(_) => Ok(Reply::Lock(LockRange { typ: libc::F_UNLCK, ..want })),
                    Err(_) => Err(libc::ENOLCK),
                };
                self.reply(id, r);
            }
            Pending::Space { id } => match result {
                Ok(IoReply::Space(space)) => {
                    self.io(IoRequest::Meta(MetaRequest::Usage), Pending::Usage { id, space });
                }
                _ => self.reply(id, Err(EIO)),
            },
            Pending::Usage { id, space } => match result {
                Ok(IoReply::Usage { files, bytes: _ }) => {
                    let bsize = 4096u64;
                    let ffree = 1u64 << 32;
                    self.reply(
                        id,
                        Ok(Reply::StatFs(StatFs {
                            blocks: space.total_bytes / bsize,
                            bfree: space.free_bytes / bsize,
                            bavail: space.avail_bytes / bsize,
                            files: files + ffree,
                            ffree,
                            bsize: bsize as u32,
                            namelen: NAME_MAX as u32,
                            frsize: bsize as u32,
                        })),
                    );
                }
                _ => self.reply(id, Err(EIO)),
            },
        }
    }

    fn commit_upload(&mut self, ino: Ino, object: Option<ObjectId>, old: Option<ObjectId>) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let Some(up) = inode.data.upload else { return };
        if inode.version_stale {
            // The row is being read again (after a failed transaction, or another host's change):
            // commit once it is here, as after a conflict. A refresh that failed left the row
            // stale with no read on its way: one is sent (else the upload ran again for ever).
            inode.data.recommit = Some(object);
            if !self.refreshing.contains(&ino) {
                self.refresh(ino);
            }
            return;
        }
        // From here on every transaction of this inode stores the new object, so it must store
        // the size that goes with it (transactions run in order).
        let old_size = inode.data.committed_size;
        inode.row.object = object.clone();
        inode.data.committed_size = up.size;
        let expect_version = inode.row.version;
        inode.row.version += 1;
        let mut row = inode.row.clone();
        row.size = up.size;
        let ops = vec![TxnOp::UpdateInode { row, expect_version }];
        self.io(
            IoRequest::Meta(MetaRequest::Commit(Txn { ops, durable: true })),
            Pending::UploadCommit { ino, object, old, old_size },
        );
    }

    fn finish_read_io(&mut self, id: RequestId, result: IoResult, len: usize, copy: Option<CopyTo>) {
        match result {
            Ok(IoReply::Data(data)) => match self.finish_read(id, data, len, copy) {
                Ok(r) => self.reply(id, Ok(r)),
                Err(Stop::Errno(e)) => self.reply(id, Err(e)),
                Err(_) => {}
            },
            Ok(_) | Err(_) => self.reply(id, Err(EIO)),
        }
    }

    /// The staging journal at start: every staged file is uploaded (or dropped if its inode is gone).
    fn replay(&mut self, entries: Vec<StagedEntry>) {
        for e in entries {
            self.startup_pending += 1;
            self.replaying.insert(e.ino, (e.clone(), 0));
            if self.loading_inodes.insert(e.ino) {
                self.loads_in_flight += 1;
                self.io(IoRequest::Meta(MetaRequest::LoadInode { ino: e.ino }), Pending::LoadInode(e.ino));
            }
        }
    }

    /// A load for a replayed staged file finished (`loaded`: the store answered, with the inode
    /// or without it). A staged copy is only ever dropped on the store's word that its inode is
    /// gone; after failed loads it is kept for the next mount.
    fn replay_loaded(&mut self, ino: Ino, loaded: bool) {
        const REPLAY_LOAD_TRIES: u32 = 5;
        let Some((entry, tries)) = self.replaying.remove(&ino) else { return };
        if !loaded {
            if tries + 1 < REPLAY_LOAD_TRIES {
                self.replaying.insert(ino, (entry, tries + 1));
                if self.loading_inodes.insert(ino) {
                    self.loads_in_flight += 1;
                    self.io(IoRequest::Meta(MetaRequest::LoadInode { ino }), Pending::LoadInode(ino));
                }
                return;
            }
            self.startup_step_done();
            return;
        }
        // (See below: whether a record may hold acknowledged data the store lacks.)
        let records_may_hold_acked_data = !self.config.multi_host || self.config.staged_is_durable;
        match (self.inodes.get_mut(&ino), entry.sealed) {
            // Only a sealed copy holds acknowledged data (a copy is changed only while it has no
            // record). An unsealed one holds writes nobody was told are safe, and the store
            // already has the file as of its last acknowledgement: it is dropped.
            //
            // Several hosts: a close or fsync is answered only once its upload committed (unless
            // `staged_is_durable`), so a record is acknowledged data only if the store took it,
            // and the store then holds it or a newer version, perhaps another host's (the crash
            // came between the commit and the record's removal): uploading the copy again would
            // undo that. It is dropped.
            (Some(inode), Some(record))
                if inode.row.nlink > 0
                    && inode.row.kind == FileKind::Regular
                    && records_may_hold_acked_data =>
            {
                inode.row.size = record.size;
                inode.row.mtime = record.mtime;
                inode.row.ctime = record.ctime;
                let d = &mut inode.data;
                d.staged = true;
                d.record_on_disk = true;
                d.sealed_gen = d.uploaded_gen + 1;
                d.dirty_gen = d.uploaded_gen + 1;
                d.want_upload = true;
                self.pump_upload(ino);
            }
            (Some(inode), _) => {
                // Tracked, so that a new staged copy waits for this removal to finish.
                inode.data.removing = true;
                self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Remove(ino));
            }
            (None, _) => {
                self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Ignore);
            }
        }
        self.startup_step_done();
    }

    fn startup_step_done(&mut self) {
        self.startup_pending -= 1;
        if self.startup_pending == 0 {
            self.ready = true;
        }
    }

    /// Parked requests that name `ino` get EIO (a load or staging step for it failed); answering
    /// them keeps a failing store from being asked again and again. Others stay parked.
    fn fail_parked_on(&mut self, ino: Ino) {
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if op_names(&p.op, ino) {
                self.fail_parked(p, EIO);
            } else {
                self.parked.push(p);
            }
        }
    }

    /// A request failed: if it was a truncate, the short copy made for it goes.
    fn truncate_abandoned(&mut self, op: &Op) {
        if let Some(ino) = truncates(op) {
            self.drop_short_copy(ino);
        }
    }

    /// A short staged copy (`Data::short`) whose truncate will not run does not hold the file:
    /// it goes, and the next change makes a whole one. (With its `Init` in flight, the
    /// completion looks again.)
    fn drop_short_copy(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else { return };
        let d = &mut inode.data;
        if d.short.is_none() || d.init_pending || d.removing {
            return;
        }
        d.short = None;
        d.staged = false;
        d.removing = true;
        self.io(IoRequest::Staging(StagingRequest::Remove { ino }), Pending::Remove(ino));
    }

    fn fail_all_parked(&mut self, errno: i32) {
        for p in std::mem::take(&mut self.parked) {
            self.fail_parked(p, errno);
        }
    }

    /// Answers a parked request with an error; an open that listed its file lets go of it.
    fn fail_parked(&mut self, p: Parked, errno: i32) {
        self.reply(p.id, Err(errno));
        self.truncate_abandoned(&p.op);
        if let Op::Open { ino, .. } = p.op {
            self.revalidated.remove(&p.id);
            self.unlist_unused(ino);
        }
    }

    /// A transaction failed: the in-memory state may be ahead of the store. Drop everything
    /// that can be loaded again; keep what holds unsaved data or open handles.
    fn forget_clean_state(&mut self) {
        self.dirs.clear();
        let times_in_flight: HashSet<Ino> = self.times_in_flight().collect();
        self.inodes.retain(|ino, i| {
            let d = &i.data;
            i.opens > 0
                // Without names and closed: this host deletes it (maybe on the retry timer).
                || (i.row.nlink == 0 && *ino != ROOT_INO)
                || i.times_dirty
                || times_in_flight.contains(ino)
                || d.staged
                || d.busy()
                || d.record_on_disk
                || d.upload.is_some()
                || d.dirty()
                || d.staging_reads + d.store_reads > 0
        });
        let inodes = &self.inodes;
        self.dir_times.retain(|ino| inodes.contains_key(ino));
        // A listing or load in flight may hold rows older than this host's own commits, which
        // the copies just dropped were ahead of: each is sent again when it comes back.
        self.stale_dir_loads.extend(self.loading_dirs.iter().copied());
        self.stale_inode_loads.extend(self.loading_inodes.iter().copied());
        let keep: Vec<Ino> = self.inodes.keys().copied().collect();
        for ino in keep {
            // Re-read the row so the failed change is undone and later updates do not conflict.
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.version_stale = true; // cleared by `apply_refresh`
            }
            self.refresh(ino);
        }
    }
}

/// The file `op` truncates (a setattr of its size).
fn truncates(op: &Op) -> Option<Ino> {
    match op {
        Op::SetAttr { ino, set: SetAttr { size: Some(_), .. }, .. } => Some(*ino),
        _ => None,
    }
}

fn op_names(op: &Op, ino: Ino) -> bool {
    match op {
        Op::Lookup { parent, .. }
        | Op::MkNod { parent, .. }
        | Op::MkDir { parent, .. }
        | Op::Unlink { parent, .. }
        | Op::RmDir { parent, .. }
        | Op::Symlink { parent, .. }
        | Op::Create { parent, .. } => *parent == ino,
        Op::Rename { parent, newparent, .. } => *parent == ino || *newparent == ino,
        Op::Link { ino: i, newparent, .. } => *i == ino || *newparent == ino,
        Op::CopyFileRange { ino_in, ino_out, .. } => *ino_in == ino || *ino_out == ino,
        Op::GetAttr { ino: i }
        | Op::SetAttr { ino: i, .. }
        | Op::ReadLink { ino: i }
        | Op::Open { ino: i, .. }
        | Op::Read { ino: i, .. }
        | Op::Write { ino: i, .. }
        | Op::Flush { ino: i, .. }
        | Op::Fsync { ino: i, .. }
        | Op::Release { ino: i, .. }
        | Op::OpenDir { ino: i, .. }
        | Op::ReadDir { ino: i, .. }
        | Op::ReleaseDir { ino: i, .. }
        | Op::FsyncDir { ino: i, .. }
        | Op::SetXattr { ino: i, .. }
        | Op::GetXattr { ino: i, .. }
        | Op::ListXattr { ino: i, .. }
        | Op::RemoveXattr { ino: i, .. }
        | Op::Access { ino: i, .. }
        | Op::GetLk { ino: i, .. }
        | Op::SetLk { ino: i, .. }
        | Op::Fallocate { ino: i, .. } => *i == ino,
        Op::StatFs => false,
    }
}

fn check_name(name: &[u8]) -> Result<(), Stop> {
    if name.len() > NAME_MAX {
        return Err(ENAMETOOLONG.into());
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(EINVAL.into());
    }
    Ok(())
}

fn check_xattr_name(name: &[u8]) -> Result<(), Stop> {
    if name.is_empty() || name.len() > 255 {
        return Err(ERANGE.into());
    }
    const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    if !NAMESPACES.iter().any(|ns| name.starts_with(ns) && name.len() > ns.len()) {
        return Err(EOPNOTSUPP.into());
    }
    Ok(())
}

fn sized_reply(value: Bytes, size: u32) -> Exec {
    if size == 0 {
        return Ok(Reply::XattrSize(value.len() as u32));
    }
    if value.len() > size as usize {
        return Err(ERANGE.into());
    }
    Ok(Reply::XattrData(value))
}


