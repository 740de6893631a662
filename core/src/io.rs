//! The I/O the core asks its runtime to perform, and what comes back.
//!
//! Every `Effect::Io { io, request }` gets exactly one `Core::handle_completion(io, result)`.
//! Requests are grouped by the service that executes them: the metadata store ([`MetaRequest`]),
//! the object store ([`StoreRequest`]) and the local staging area with its journal
//! ([`StagingRequest`]). The runtime executes `Meta` requests strictly in the order they were
//! emitted (one transaction stream); the others may run concurrently.

use crate::op::LockRange;
use crate::types::{Attr, FileKind, Ino, Timespec, BLOCK_SIZE};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;

/// Names one object in the object store: a Tahoe capability, or a file name in the local object
/// directory. A capability is a secret, so `Debug` and `Display` print only a short fingerprint.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub String);

impl ObjectId {
    /// A short, stable, non-reversible fingerprint of the id for logs and errors.
    pub fn fingerprint(&self) -> String {
        // FNV-1a: enough to tell objects apart in a log, useless for recovering the id.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.0.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("obj#{:08x}", (h >> 32) as u32)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// One row of the `inodes` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRow {
    pub ino: Ino,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`& 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u32,
    /// Bumped by every committed update; updates name the version they read (optimistic concurrency).
    pub version: u64,
    /// The object holding the file's contents; `None` for an empty file and for non-regular files.
    pub object: Option<ObjectId>,
    /// The target of a symlink.
    pub target: Option<Vec<u8>>,
}

impl InodeRow {
    /// The attributes the kernel gets for this row (the size of a directory is 4096).
    pub fn attr(&self) -> Attr {
        let size = match self.kind {
            FileKind::Directory => 4096,
            _ => self.size,
        };
        Attr {
            ino: self.ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: BLOCK_SIZE,
        }
    }
}

/// An inode row with its extended attributes, as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedInode {
    pub row: InodeRow,
    pub xattrs: BTreeMap<Vec<u8>, Bytes>,
    /// For a directory, the directory that contains it (`None` for the root and for other
    /// kinds): the core needs every ancestor to refuse moving a directory into itself.
    pub parent: Option<Ino>,
}

/// One row of the `dentries` table. `pos` is unique within the directory and never reused, so
/// readdir offsets stay stable while entries come and go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DentryRow {
    pub parent: Ino,
    pub name: Vec<u8>,
    pub ino: Ino,
    pub pos: u64,
}

/// One change inside a metadata transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Insert a new inode; `row.version` is its first version. Fails with `Conflict` if it exists.
    InsertInode(InodeRow),
    /// Replace an inode row if its stored version is `expect_version`; the stored row becomes
    /// `row` (whose `version` is `expect_version + 1`). Otherwise the transaction fails with
    /// `IoErrorKind::Conflict`.
    UpdateInode { row: InodeRow, expect_version: u64 },
    /// Delete an inode and its xattrs.
    DeleteInode { ino: Ino },
    /// Insert a directory entry. Fails with `Conflict` if `(parent, name)` exists.
    InsertDentry(DentryRow),
    /// Delete a directory entry; fails with `Conflict` if it does not exist or points elsewhere.
    DeleteDentry { parent: Ino, name: Vec<u8>, ino: Ino },
    SetXattr { ino: Ino, name: Vec<u8>, value: Bytes },
    RemoveXattr { ino: Ino, name: Vec<u8> },
}

/// An atomic group of changes: all apply or none.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Txn {
    pub ops: Vec<TxnOp>,
    /// The transaction must survive power loss before completion (set for fsync/fsyncdir).
    pub durable: bool,
}

/// What a committed transaction changed, as other hosts sharing the stores must learn it (see
/// `Core::handle_invalidation`): the inodes whose rows or xattrs changed, and the directory
/// entries added or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub inodes: Vec<Ino>,
    pub entries: Vec<(Ino, Vec<u8>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty() && self.entries.is_empty()
    }
}

impl Txn {
    /// What this transaction changes, each inode and entry once.
    pub fn changes(&self) -> Changes {
        let mut c = Changes::default();
        for op in &self.ops {
            match op {
                TxnOp::InsertInode(row) | TxnOp::UpdateInode { row, .. } => c.inodes.push(row.ino),
                TxnOp::DeleteInode { ino } | TxnOp::SetXattr { ino, .. } | TxnOp::RemoveXattr { ino, .. } => {
                    c.inodes.push(*ino)
                }
                TxnOp::InsertDentry(d) => c.entries.push((d.parent, d.name.clone())),
                TxnOp::DeleteDentry { parent, name, .. } => c.entries.push((*parent, name.clone())),
            }
        }
        c.inodes.sort_unstable();
        c.inodes.dedup();
        c.entries.sort();
        c.entries.dedup();
        c
    }

    /// The inodes this transaction takes the last name of and keeps: a name of theirs goes
    /// and their row is left with no links (not a row it deletes). With several hosts, the
    /// host running it lists them as its own before it runs (see `runtime-smol`'s driver). A
    /// row stored with no links again, an upload committed after the file lost its names say,
    /// is not among them: what the host knew of holding it was settled when the name went.
    pub fn unnamed(&self) -> Vec<Ino> {
        let names_go = |ino: Ino| self.ops.iter().any(|op| matches!(op, TxnOp::DeleteDentry { ino: i, .. } if *i == ino));
        let deleted = |ino: Ino| self.ops.iter().any(|op| matches!(op, TxnOp::DeleteInode { ino: i } if *i == ino));
        let mut out: Vec<Ino> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::UpdateInode { row, .. } if row.nlink == 0 && names_go(row.ino) && !deleted(row.ino) => Some(row.ino),
                _ => None,
            })
            .collect();
        out.dedup();
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaRequest {
    /// Reserve `count` fresh ids (used for inode numbers and dentry positions).
    /// Reply: [`IoReply::Ids`] with the first id of the reserved range.
    AllocIds { count: u64 },
    /// Reply: [`IoReply::Inode`].
    LoadInode { ino: Ino },
    /// Every entry of a directory with its inode. Reply: [`IoReply::Dir`].
    LoadDir { ino: Ino },
    /// Reply: [`IoReply::Done`], or `Conflict` when a version check or uniqueness fails.
    Commit(Txn),
    /// Inodes with no links left (orphans of a crash while a file was open-but-unlinked).
    /// Reply: [`IoReply::Orphans`].
    ListOrphans,
    /// Reply: [`IoReply::Usage`].
    Usage,
}

/// A staged file found by the journal scan at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedEntry {
    pub ino: Ino,
    /// The journal record written by the last `Seal`, if any.
    pub sealed: Option<SealRecord>,
    /// The length of the staged data file now.
    pub data_len: u64,
}

/// What the journal records about a staged file when it is sealed (on close or fsync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealRecord {
    pub size: u64,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StagingRequest {
    /// List every staged file (journal replay at start). Reply: [`IoReply::Staged`].
    Scan,
    /// Create the staged copy of a file: the first `size` bytes of `from` (zero-extended), or
    /// empty and zero-extended to `size` when `from` is `None`. Replaces any earlier copy.
    Init { ino: Ino, from: Option<ObjectId>, size: u64 },
    /// Reply: [`IoReply::Written`].
    Write { ino: Ino, offset: u64, data: Bytes },
    /// Reply: [`IoReply::Data`] (shorter than `len` only at the end of the staged file).
    Read { ino: Ino, offset: u64, len: u32 },
    Truncate { ino: Ino, size: u64 },
    /// Make sure the byte range is allocated (fallocate mode 0); extends the file if needed.
    Allocate { ino: Ino, offset: u64, len: u64 },
    /// Make the staged data durable and write the journal record, atomically replacing the last.
    Seal { ino: Ino, record: SealRecord },
    /// Durably remove the journal record, keeping the staged data: its sealed contents are now
    /// in the store. The core changes a staged copy only while it has no record, so a record
    /// always describes exactly the data beside it.
    Unseal { ino: Ino },
    /// Drop the staged copy and its journal record.
    Remove { ino: Ino },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreRequest {
    /// Upload the staged copy of `ino` as it is now. Reply: [`IoReply::Object`].
    PutStaged { ino: Ino },
    /// Reply: [`IoReply::Data`] (shorter than `len` only at the end of the object).
    Read { object: ObjectId, offset: u64, len: u32 },
    /// `object` of `ino` is no longer needed (an old version, or the inode is gone). A store
    /// that names objects after their inode (Tahoe FLAT links `<ino>` under the rootcap) removes
    /// that name only while it still refers to `object`.
    Delete { ino: Ino, object: ObjectId },
    /// Make `object` (of another inode) also the object of `ino`, without copying its bytes
    /// where the store can (a whole-file `copy_file_range`). Reply: [`IoReply::Object`], the
    /// object `ino` now has, which may be `object` itself.
    Share { ino: Ino, object: ObjectId },
    /// Free space of the store. Reply: [`IoReply::Space`].
    Space,
}

/// Record locks as other hosts must see them (multi-host mounts; see `Config::multi_host`).
/// Within a host the core decides; these only check against, and publish to, the other hosts.
/// Ranges are inclusive; `end == u64::MAX` is "to the end of the file".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockRequest {
    /// Unless a live host other than this one holds a lock on `ino` conflicting with `want`,
    /// record `held` as all of this host's locks on `ino`. Reply: [`IoReply::LockConflict`]
    /// (`None`: taken).
    Acquire { ino: Ino, want: LockRange, held: Vec<LockRange> },
    /// This host's locks on `ino` are now `held` (after an unlock or a close). Reply: `Done`.
    Publish { ino: Ino, held: Vec<LockRange> },
    /// The first lock of another live host conflicting with `want`. Reply: `LockConflict`.
    Query { ino: Ino, want: LockRange },
    /// This host opens `ino` (its first handle here): list it among this host's open files, so
    /// that no other host deletes it once its last name goes, unless a host is deleting it
    /// already (a `Reap` answered free): then `NotFound`, and the open fails with ENOENT.
    /// Reply: `Done`. (Only with `Config::shared_opens`, as `Close` and `Reap`.)
    Open { ino: Ino },
    /// This host has no handle of `ino` and does not delete it: it leaves this host's open
    /// listing and its orphan listing (one the runtime made for a transaction that did not
    /// commit). Reply: [`IoReply::Held`]: `false` when the file lost its last name while this
    /// host had it open (another host's `Reap` found it held) and no other live host holds it
    /// now: this host deletes it (with a `Reap` of its own); else `true`, nothing to do.
    Close { ino: Ino },
    /// `ino` has no names left and this host no handle of it: unlist it here and, atomically,
    /// unless another live host lists it open, mark it as being deleted (opens elsewhere fail
    /// from then on) and answer [`IoReply::Held`]`(false)`: this host deletes it. Otherwise
    /// `Held(true)`: the file is marked as unlinked, so that the last host to close it (`Close`
    /// or `Reap`) deletes it, and this host's listing of the file as its own orphan goes (the
    /// holders' open listings protect it now).
    Reap { ino: Ino },
}

impl LockRequest {
    /// Whether the runtime runs this request in the metadata stream: in emission order with the
    /// `Meta` requests (an `Open` emitted before a `Commit` is in force when the commit runs,
    /// and a `Close` never overtakes the next `Open` of the same file).
    pub fn in_meta_stream(&self) -> bool {
        matches!(self, LockRequest::Open { .. } | LockRequest::Close { .. } | LockRequest::Reap { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoRequest {
    Meta(MetaRequest),
    Staging(StagingRequest),
    Store(StoreRequest),
    Lock(LockRequest),
}

impl IoRequest {
    /// Whether the runtime runs this request in the metadata stream: the `Meta` requests and
    /// the listings of open files (see `LockRequest::in_meta_stream`).
    pub fn in_meta_stream(&self) -> bool {
        match self {
            IoRequest::Meta(_) => true,
            IoRequest::Lock(l) => l.in_meta_stream(),
            _ => false,
        }
    }
}

/// Free and total space, in bytes, of whatever holds the file data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Space {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoReply {
    Done,
    Ids { first: u64 },
    Inode(Option<LoadedInode>),
    Dir(Vec<(DentryRow, LoadedInode)>),
    Orphans(Vec<InodeRow>),
    Usage { files: u64, bytes: u64 },
    Staged(Vec<StagedEntry>),
    Written(u32),
    Data(Bytes),
    Object(ObjectId),
    Space(Space),
    LockConflict(Option<LockRange>),
    /// The answer to `LockRequest::Reap` and `Close`: whether another live host holds the file
    /// open (see there).
    Held(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoErrorKind {
    /// A version check or uniqueness constraint failed: someone else changed the row first.
    Conflict,
    /// The thing asked for does not exist (an object, a staged file).
    NotFound,
    /// Stored data failed a check (bad row, short object, bad journal record).
    Corrupt,
    /// No space left where the data was to go.
    NoSpace,
    /// The service did not answer in time.
    Timeout,
    /// Any other failure.
    Other,
}

/// A failed I/O. `message` names what failed (a file, a table) and never contains a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoError {
    pub kind: IoErrorKind,
    pub message: String,
}

impl IoError {
    pub fn new(kind: IoErrorKind, message: impl Into<String>) -> IoError {
        IoError { kind, message: message.into() }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

pub type IoResult = Result<IoReply, IoError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn update(ino: Ino, nlink: u32) -> TxnOp {
        TxnOp::UpdateInode { row: crate::testkit::file_row(ino, nlink), expect_version: 1 }
    }

    fn unlink(ino: Ino) -> TxnOp {
        TxnOp::DeleteDentry { parent: 1, name: format!("f{ino}").into_bytes(), ino }
    }

    fn txn(ops: Vec<TxnOp>) -> Txn {
        Txn { ops, durable: false }
    }

    #[test]
    fn a_file_is_unnamed_by_the_transaction_that_takes_its_last_name() {
        assert_eq!(txn(vec![unlink(5), update(5, 0), update(1, 2)]).unnamed(), vec![5]);
        // Rename over a file: the target loses its name, the source keeps one.
        let rename = vec![unlink(6), unlink(5), update(5, 0), update(6, 1), update(1, 2)];
        assert_eq!(txn(rename).unnamed(), vec![5]);
        // One of two names goes.
        assert!(txn(vec![unlink(5), update(5, 1)]).unnamed().is_empty());
    }

    #[test]
    fn a_row_stored_again_without_names_or_deleted_is_not_unnamed() {
        // The upload of a file that lost its names earlier, committed afterwards.
        assert!(txn(vec![update(5, 0)]).unnamed().is_empty());
        // Its last name and the row go together.
        assert!(txn(vec![unlink(5), update(5, 0), TxnOp::DeleteInode { ino: 5 }]).unnamed().is_empty());
    }
}
