//! An in-memory store that executes every [`IoRequest`] at once: for the core's own tests and
//! the fuzz targets. (The simulator has its own, with latencies, faults and crashes.)

use crate::io::*;
use crate::types::*;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Metadata, objects and the staging area in memory; the staging area keeps what was sealed
/// separately, as a crash would.
#[derive(Clone, Default)]
pub struct MemStore {
    pub next_id: u64,
    pub inodes: HashMap<Ino, InodeRow>,
    pub dentries: BTreeMap<(Ino, Vec<u8>), (Ino, u64)>,
    pub objects: HashMap<String, Vec<u8>>,
    pub staged: HashMap<Ino, Vec<u8>>,
    pub sealed: HashMap<Ino, (Vec<u8>, SealRecord)>,
    pub next_obj: u64,
    /// The host executing the requests (tests of several hosts copy the rest between them).
    pub host: u64,
    /// The coordination server's open listings (`LockRequest::Open`): the hosts of each file.
    pub opens: BTreeMap<Ino, BTreeSet<u64>>,
    /// Files a host is deleting after a `Reap` answered free: opens of them are refused.
    pub reaping: BTreeSet<Ino>,
    /// Files a `Reap` found held: the last host to close them deletes them.
    pub unlinked: BTreeSet<Ino>,
}

/// The row of a regular file `ino` with `nlink` links, empty, at version 2 (for tests).
pub fn file_row(ino: Ino, nlink: u32) -> InodeRow {
    InodeRow {
        ino,
        kind: FileKind::Regular,
        perm: 0o644,
        uid: 0,
        gid: 0,
        nlink,
        size: 0,
        atime: Timespec::default(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
        rdev: 0,
        version: 2,
        object: None,
        target: None,
    }
}

impl MemStore {
    /// A store holding only the root directory.
    pub fn new() -> MemStore {
        let t = Timespec { sec: 1, nsec: 0 };
        let root = InodeRow {
            ino: ROOT_INO,
            kind: FileKind::Directory,
            perm: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            version: 1,
            object: None,
            target: None,
        };
        MemStore { next_id: 2, inodes: HashMap::from([(ROOT_INO, root)]), ..MemStore::default() }
    }

    fn loaded(&self, ino: Ino) -> Option<LoadedInode> {
        let parent = self
            .dentries
            .iter()
            .find(|(_, (i, _))| *i == ino)
            .map(|((p, _), _)| *p)
            .filter(|_| self.inodes.get(&ino).is_some_and(|r| r.kind == FileKind::Directory));
        self.inodes.get(&ino).map(|row| LoadedInode { row: row.clone(), xattrs: BTreeMap::new(), parent })
    }

    /// This host no longer lists `ino` as open.
    fn unlist(&mut self, ino: Ino) {
        if let Some(hosts) = self.opens.get_mut(&ino) {
            hosts.remove(&self.host);
            if hosts.is_empty() {
                self.opens.remove(&ino);
            }
        }
    }

    /// Executes one request, like a runtime would.
    pub fn execute(&mut self, req: &IoRequest) -> IoResult {
        let conflict = || Err(IoError::new(IoErrorKind::Conflict, "conflict"));
        Ok(match req {
            // One host: nobody else holds locks.
            IoRequest::Lock(LockRequest::Acquire { .. } | LockRequest::Query { .. }) => IoReply::LockConflict(None),
            IoRequest::Lock(LockRequest::Publish { .. }) => IoReply::Done,
            IoRequest::Lock(LockRequest::Open { ino }) => {
                if self.reaping.contains(ino) {
                    return Err(IoError::new(IoErrorKind::NotFound, "being deleted"));
                }
                self.opens.entry(*ino).or_default().insert(self.host);
                IoReply::Done
            }
            IoRequest::Lock(LockRequest::Close { ino }) => {
                self.unlist(*ino);
                IoReply::Held(self.opens.contains_key(ino) || !self.unlinked.contains(ino))
            }
            IoRequest::Lock(LockRequest::Reap { ino }) => {
                self.unlist(*ino);
                let held = self.opens.contains_key(ino);
                if held {
                    self.unlinked.insert(*ino);
                } else {
                    self.unlinked.remove(ino);
                    self.reaping.insert(*ino);
                }
                IoReply::Held(held)
            }
            IoRequest::Meta(MetaRequest::AllocIds { count }) => {
                let first = self.next_id;
                self.next_id += count;
                IoReply::Ids { first }
            }
            IoRequest::Meta(MetaRequest::LoadInode { ino }) => IoReply::Inode(self.loaded(*ino)),
            IoRequest::Meta(MetaRequest::LoadDir { ino }) => IoReply::Dir(
                self.dentries
                    .iter()
                    .filter(|((p, _), _)| p == ino)
                    .map(|((p, n), (i, pos))| {
                        (DentryRow { parent: *p, name: n.clone(), ino: *i, pos: *pos }, self.loaded(*i).expect("core committed an entry for a missing inode"))
                    })
                    .collect(),
            ),
            IoRequest::Meta(MetaRequest::Commit(txn)) => {
                // All or nothing, like the real stores.
                let before = (self.inodes.clone(), self.dentries.clone());
                for op in &txn.ops {
                    match op {
                        TxnOp::InsertInode(row) => {
                            self.inodes.insert(row.ino, row.clone());
                        }
                        TxnOp::UpdateInode { row, expect_version } => {
                            if self.inodes.get(&row.ino).map(|r| r.version) != Some(*expect_version) {
                                (self.inodes, self.dentries) = before;
                                return conflict();
                            }
                            self.inodes.insert(row.ino, row.clone());
                        }
                        TxnOp::DeleteInode { ino } => {
                            self.inodes.remove(ino);
                        }
                        TxnOp::InsertDentry(d) => {
                            if self.dentries.insert((d.parent, d.name.clone()), (d.ino, d.pos)).is_some() {
                                (self.inodes, self.dentries) = before;
                                return conflict();
                            }
                        }
                        TxnOp::DeleteDentry { parent, name, .. } => {
                            if self.dentries.remove(&(*parent, name.clone())).is_none() {
                                (self.inodes, self.dentries) = before;
                                return conflict();
                            }
                        }
                        TxnOp::SetXattr { .. } | TxnOp::RemoveXattr { .. } => {}
                    }
                }
                IoReply::Done
            }
            IoRequest::Meta(MetaRequest::ListOrphans) => {
                IoReply::Orphans(self.inodes.values().filter(|r| r.nlink == 0).cloned().collect())
            }
            IoRequest::Meta(MetaRequest::Usage) => IoReply::Usage { files: self.inodes.len() as u64, bytes: 0 },
            IoRequest::Staging(StagingRequest::Scan) => IoReply::Staged(
                self.sealed
                    .iter()
                    .map(|(ino, (d, r))| StagedEntry { ino: *ino, sealed: Some(*r), data_len: d.len() as u64 })
                    .collect(),
            ),
            IoRequest::Staging(StagingRequest::Init { ino, from, size }) => {
                let mut data = match from {
                    Some(o) => match self.objects.get(&o.0) {
                        Some(d) => d.clone(),
                        None => return Err(IoError::new(IoErrorKind::NotFound, "no such object")),
                    },
                    None => Vec::new(),
                };
                data.resize(*size as usize, 0);
                self.staged.insert(*ino, data);
                IoReply::Done
            }
            IoRequest::Staging(StagingRequest::Write { ino, offset, data }) => {
                let f = self.staged.entry(*ino).or_default();
                let end = *offset as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[*offset as usize..end].copy_from_slice(data);
                IoReply::Written(data.len() as u32)
            }
            IoRequest::Staging(StagingRequest::Read { ino, offset, len }) => {
                let f = self.staged.get(ino).expect("core read a staged copy it never created");
                let start = (*offset as usize).min(f.len());
                let end = (start + *len as usize).min(f.len());
                IoReply::Data(Bytes::copy_from_slice(&f[start..end]))
            }
            IoRequest::Staging(StagingRequest::Truncate { ino, size }) => {
                self.staged.entry(*ino).or_default().resize(*size as usize, 0);
                IoReply::Done
            }
            IoRequest::Staging(StagingRequest::Allocate { ino, offset, len }) => {
                let f = self.staged.entry(*ino).or_default();
                f.resize(f.len().max((offset + len) as usize), 0);
                IoReply::Done
            }
            IoRequest::Staging(StagingRequest::Seal { ino, record }) => {
                let data = self.staged.get(ino).cloned().unwrap_or_default();
                self.sealed.insert(*ino, (data, *record));
                IoReply::Done
            }
            IoRequest::Staging(StagingRequest::Unseal { ino }) => {
                self.sealed.remove(ino);
                IoReply::Done
            }
            IoRequest::Staging(StagingRequest::Remove { ino }) => {
                self.staged.remove(ino);
                self.sealed.remove(ino);
                IoReply::Done
            }
            IoRequest::Store(StoreRequest::PutStaged { ino }) => {
                self.next_obj += 1;
                let id = format!("{:032x}", self.next_obj);
                let data = self.staged.get(ino).cloned().expect("core uploaded a staged copy it never created");
                self.objects.insert(id.clone(), data);
                IoReply::Object(ObjectId(id))
            }
            IoRequest::Store(StoreRequest::Read { object, offset, len }) => {
                let Some(f) = self.objects.get(&object.0) else {
                    return Err(IoError::new(IoErrorKind::NotFound, format!("object {object} is missing")));
                };
                let start = (*offset as usize).min(f.len());
                let end = (start + *len as usize).min(f.len());
                IoReply::Data(Bytes::copy_from_slice(&f[start..end]))
            }
            IoRequest::Store(StoreRequest::Share { object, .. }) => {
                // Like the local object directory: a second name for the same bytes.
                let Some(data) = self.objects.get(&object.0).cloned() else {
                    return Err(IoError::new(IoErrorKind::NotFound, format!("object {object} is missing")));
                };
                self.next_obj += 1;
                let id = format!("{:032x}", self.next_obj);
                self.objects.insert(id.clone(), data);
                IoReply::Object(ObjectId(id))
            }
            IoRequest::Store(StoreRequest::Delete { object, .. }) => {
                self.objects.remove(&object.0);
                IoReply::Done
            }
            IoRequest::Store(StoreRequest::Space) => {
                IoReply::Space(Space { total_bytes: 1 << 30, free_bytes: 1 << 29, avail_bytes: 1 << 29 })
            }
        })
    }
}
