//! The simulator's metadata store: executes every [`MetaRequest`] in memory exactly like
//! `truckeefs_runtime_smol::meta_sqlite::SqliteMeta` does (the conformance tests in
//! `tests/meta_conformance.rs` run the same checks against both).
//!
//! What is reproduced: ids from one counter starting at 2; the root (ino 1) in a new store;
//! inode rows replaced whole on update with a version check; dentries unique on `(parent, name)`
//! and on `pos`; xattrs upserted; deleting an inode deletes its xattrs but not dentries pointing
//! to it (no foreign keys); every commit atomic (an undo log rolls back a failed one); values
//! SQLite cannot hold refused with `Other`; rows SQLite would refuse to decode (`perm > 0o7777`,
//! nanoseconds out of range, a dentry pointing to a missing inode) reported as `Corrupt`.
//!
//! The whole store survives a simulated crash of the mount (the SQLite file does too; power loss
//! is not simulated).

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use truckeefs_core::{
    DentryRow, FileKind, Ino, InodeRow, IoError, IoErrorKind, IoReply, IoResult, LoadedInode, MetaRequest, Timespec,
    Txn, TxnOp, ROOT_INO,
};

/// Where a dentry lives: `pos` is the primary key, `(parent, name)` is unique.
#[derive(Clone, Debug)]
struct DentryVal {
    parent: Ino,
    name: Vec<u8>,
    ino: Ino,
}

#[derive(Clone, Debug, Default)]
pub struct MemMeta {
    next_id: i64,
    inodes: BTreeMap<Ino, InodeRow>,
    xattrs: HashMap<Ino, BTreeMap<Vec<u8>, Bytes>>,
    by_pos: BTreeMap<u64, DentryVal>,
    by_name: HashMap<(Ino, Vec<u8>), u64>,
    by_parent: HashMap<Ino, BTreeSet<u64>>,
    /// Counters for the simulator's statistics.
    pub commits: u64,
}

/// One change to undo if a later op of the same transaction fails.
enum Undo {
    Inode(Ino, Option<InodeRow>),
    Xattrs(Ino, Option<BTreeMap<Vec<u8>, Bytes>>),
    Xattr(Ino, Vec<u8>, Option<Bytes>),
    DentryInserted(u64),
    DentryDeleted(u64, DentryVal),
}

fn other(msg: String) -> IoError {
    IoError::new(IoErrorKind::Other, format!("mem-meta: {msg}"))
}

fn conflict(msg: String) -> IoError {
    IoError::new(IoErrorKind::Conflict, format!("mem-meta: {msg}"))
}

fn corrupt(msg: String) -> IoError {
    IoError::new(IoErrorKind::Corrupt, format!("mem-meta: {msg}"))
}

/// SQLite stores integers as i64: larger values are refused, not wrapped.
fn fits(v: u64, what: &str) -> Result<(), IoError> {
    if v > i64::MAX as u64 {
        return Err(other(format!("{what} {v} does not fit the database")));
    }
    Ok(())
}

fn check_row_encodable(row: &InodeRow) -> Result<(), IoError> {
    fits(row.ino, "ino")?;
    fits(row.size, "size")?;
    fits(row.version, "version")
}

/// What `decode_inode` of the SQLite store refuses.
fn check_row_decodable(row: &InodeRow) -> Result<(), IoError> {
    let bad_time = |t: &Timespec| t.nsec > 999_999_999;
    if row.perm > 0o7777 {
        return Err(corrupt(format!("table inodes, ino {}: bad perm ({})", row.ino, row.perm)));
    }
    if bad_time(&row.atime) || bad_time(&row.mtime) || bad_time(&row.ctime) {
        return Err(corrupt(format!("table inodes, ino {}: bad time", row.ino)));
    }
    Ok(())
}

impl MemMeta {
    /// A new store holding only the root directory, owned by `uid:gid`, with all times `now`.
    pub fn new(uid: u32, gid: u32, now: Timespec) -> MemMeta {
        let mut m = MemMeta { next_id: 2, ..MemMeta::default() };
        m.inodes.insert(
            ROOT_INO,
            InodeRow {
                ino: ROOT_INO,
                kind: FileKind::Directory,
                perm: 0o755,
                uid,
                gid,
                nlink: 2,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                rdev: 0,
                version: 1,
                object: None,
                target: None,
            },
        );
        m
    }

    /// Executes one request; see [`MetaRequest`] for each reply.
    pub fn execute(&mut self, req: &MetaRequest) -> IoResult {
        match req {
            MetaRequest::AllocIds { count } => self.alloc_ids(*count),
            MetaRequest::LoadInode { ino } => {
                fits(*ino, "ino")?;
                Ok(IoReply::Inode(self.load(*ino)?))
            }
            MetaRequest::LoadDir { ino } => {
                fits(*ino, "ino")?;
                self.load_dir(*ino).map(IoReply::Dir)
            }
            MetaRequest::Commit(txn) => self.commit(txn).map(|()| IoReply::Done),
            MetaRequest::ListOrphans => {
                let mut out = Vec::new();
                for row in self.inodes.values().filter(|r| r.nlink == 0) {
                    check_row_decodable(row)?;
                    out.push(row.clone());
                }
                Ok(IoReply::Orphans(out))
            }
            MetaRequest::Usage => {
                let files = self.inodes.len() as u64;
                let bytes = self.inodes.values().filter(|r| r.kind == FileKind::Regular).map(|r| r.size).sum();
                Ok(IoReply::Usage { files, bytes })
            }
        }
    }

    fn alloc_ids(&mut self, count: u64) -> IoResult {
        fits(count, "id count")?;
        let count = count as i64;
        if self.next_id < 0 || self.next_id > i64::MAX - count {
            return Err(corrupt("table counters: next_id is missing, negative or exhausted".into()));
        }
        let first = self.next_id;
        self.next_id += count;
        Ok(IoReply::Ids { first: first as u64 })
    }

    fn load(&self, ino: Ino) -> Result<Option<LoadedInode>, IoError> {
        let Some(row) = self.inodes.get(&ino) else { return Ok(None) };
        check_row_decodable(row)?;
        let xattrs = self.xattrs.get(&ino).cloned().unwrap_or_default();
        let parent = if row.kind == FileKind::Directory && ino != truckeefs_core::ROOT_INO {
            self.by_pos.values().find(|d| d.ino == ino).map(|d| d.parent)
        } else {
            None
        };
        Ok(Some(LoadedInode { row: row.clone(), xattrs, parent }))
    }

    fn load_dir(&self, dir: Ino) -> Result<Vec<(DentryRow, LoadedInode)>, IoError> {
        let mut out = Vec::new();
        let Some(positions) = self.by_parent.get(&dir) else { return Ok(out) };
        for pos in positions {
            let d = &self.by_pos[pos];
            let Some(row) = self.inodes.get(&d.ino) else {
                return Err(corrupt(format!(
                    "table dentries, directory {dir}: entry {:?} (pos {pos}) points to missing inode {}",
                    String::from_utf8_lossy(&d.name),
                    d.ino
                )));
            };
            check_row_decodable(row)?;
            let xattrs = self.xattrs.get(&d.ino).cloned().unwrap_or_default();
            out.push((
                DentryRow { parent: dir, name: d.name.clone(), ino: d.ino, pos: *pos },
                LoadedInode { row: row.clone(), xattrs, parent: Some(dir) },
            ));
        }
        Ok(out)
    }

    /// Applies every op of `txn` or none.
    pub fn commit(&mut self, txn: &Txn) -> Result<(), IoError> {
        let mut undo = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            if let Err(e) = self.apply(op, &mut undo) {
                while let Some(u) = undo.pop() {
                    self.revert(u);
                }
                return Err(e);
            }
        }
        self.commits += 1;
        Ok(())
    }

    fn apply(&mut self, op: &TxnOp, undo: &mut Vec<Undo>) -> Result<(), IoError> {
        match op {
            TxnOp::InsertInode(row) => {
                check_row_encodable(row)?;
                if self.inodes.contains_key(&row.ino) {
                    return Err(conflict(format!("table inodes: inode {} already exists", row.ino)));
                }
                self.inodes.insert(row.ino, row.clone());
                undo.push(Undo::Inode(row.ino, None));
            }
            TxnOp::UpdateInode { row, expect_version } => {
                check_row_encodable(row)?;
                fits(*expect_version, "version")?;
                match self.inodes.get_mut(&row.ino) {
                    Some(old) if old.version == *expect_version => {
                        let prev = std::mem::replace(old, row.clone());
                        undo.push(Undo::Inode(row.ino, Some(prev)));
                    }
                    _ => {
                        return Err(conflict(format!(
                            "table inodes: inode {} is not at version {expect_version} (changed or deleted)",
                            row.ino
                        )))
                    }
                }
            }
            TxnOp::DeleteInode { ino } => {
                fits(*ino, "ino")?;
                let x = self.xattrs.remove(ino);
                undo.push(Undo::Xattrs(*ino, x));
                let prev = self.inodes.remove(ino);
                undo.push(Undo::Inode(*ino, prev));
            }
            TxnOp::InsertDentry(d) => {
                fits(d.pos, "pos")?;
                fits(d.parent, "parent")?;
                fits(d.ino, "ino")?;
                let key = (d.parent, d.name.clone());
                if self.by_pos.contains_key(&d.pos) || self.by_name.contains_key(&key) {
                    return Err(conflict(format!(
                        "table dentries: entry {:?} in directory {} (or position {}) already exists",
                        String::from_utf8_lossy(&d.name),
                        d.parent,
                        d.pos
                    )));
                }
                self.by_name.insert(key, d.pos);
                self.by_parent.entry(d.parent).or_default().insert(d.pos);
                self.by_pos.insert(d.pos, DentryVal { parent: d.parent, name: d.name.clone(), ino: d.ino });
                undo.push(Undo::DentryInserted(d.pos));
            }
            TxnOp::DeleteDentry { parent, name, ino } => {
                fits(*parent, "parent")?;
                fits(*ino, "ino")?;
                let pos = self.by_name.get(&(*parent, name.clone())).copied();
                match pos {
                    Some(pos) if self.by_pos[&pos].ino == *ino => {
                        let val = self.remove_dentry(pos);
                        undo.push(Undo::DentryDeleted(pos, val));
                    }
                    _ => {
                        return Err(conflict(format!(
                            "table dentries: no entry {:?} -> inode {ino} in directory {parent}",
                            String::from_utf8_lossy(name)
                        )))
                    }
                }
            }
            TxnOp::SetXattr { ino, name, value } => {
                fits(*ino, "ino")?;
                let prev = self.xattrs.entry(*ino).or_default().insert(name.clone(), value.clone());
                undo.push(Undo::Xattr(*ino, name.clone(), prev));
            }
            TxnOp::RemoveXattr { ino, name } => {
                fits(*ino, "ino")?;
                if let Some(map) = self.xattrs.get_mut(ino) {
                    let prev = map.remove(name);
                    if map.is_empty() {
                        self.xattrs.remove(ino);
                    }
                    if prev.is_some() {
                        undo.push(Undo::Xattr(*ino, name.clone(), prev));
                    }
                }
            }
        }
        Ok(())
    }

    fn remove_dentry(&mut self, pos: u64) -> DentryVal {
        let val = self.by_pos.remove(&pos).expect("dentry by pos");
        self.by_name.remove(&(val.parent, val.name.clone()));
        if let Some(set) = self.by_parent.get_mut(&val.parent) {
            set.remove(&pos);
            if set.is_empty() {
                self.by_parent.remove(&val.parent);
            }
        }
        val
    }

    fn revert(&mut self, u: Undo) {
        match u {
            Undo::Inode(ino, prev) => match prev {
                Some(row) => {
                    self.inodes.insert(ino, row);
                }
                None => {
                    self.inodes.remove(&ino);
                }
            },
            Undo::Xattrs(ino, prev) => match prev {
                Some(x) => {
                    self.xattrs.insert(ino, x);
                }
                None => {
                    self.xattrs.remove(&ino);
                }
            },
            Undo::Xattr(ino, name, prev) => {
                let map = self.xattrs.entry(ino).or_default();
                match prev {
                    Some(v) => {
                        map.insert(name, v);
                    }
                    None => {
                        map.remove(&name);
                    }
                }
                if map.is_empty() {
                    self.xattrs.remove(&ino);
                }
            }
            Undo::DentryInserted(pos) => {
                self.remove_dentry(pos);
            }
            Undo::DentryDeleted(pos, val) => {
                self.by_name.insert((val.parent, val.name.clone()), pos);
                self.by_parent.entry(val.parent).or_default().insert(pos);
                self.by_pos.insert(pos, val);
            }
        }
    }

    // ----- inspection for the simulator's checks -----

    pub fn inode(&self, ino: Ino) -> Option<&InodeRow> {
        self.inodes.get(&ino)
    }

    /// The inodes without names (what `ListOrphans` lists).
    pub fn orphans(&self) -> Vec<Ino> {
        self.inodes.values().filter(|r| r.nlink == 0).map(|r| r.ino).collect()
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Every object id referenced by an inode row.
    pub fn referenced_objects(&self) -> BTreeSet<String> {
        self.inodes.values().filter_map(|r| r.object.as_ref().map(|o| o.0.clone())).collect()
    }

    /// Entries of a directory as `(name, ino)` in position order.
    pub fn dir_entries(&self, dir: Ino) -> Vec<(Vec<u8>, Ino)> {
        self.by_parent
            .get(&dir)
            .map(|s| s.iter().map(|p| (self.by_pos[p].name.clone(), self.by_pos[p].ino)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ino: Ino, version: u64) -> InodeRow {
        InodeRow {
            ino,
            kind: FileKind::Regular,
            perm: 0o644,
            uid: 1,
            gid: 2,
            nlink: 1,
            size: 3,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            rdev: 0,
            version,
            object: None,
            target: None,
        }
    }

    #[test]
    fn failed_commit_leaves_no_trace() {
        let mut m = MemMeta::new(0, 0, Timespec::default());
        let before = format!("{:?}", (&m.inodes, &m.by_pos, &m.xattrs.len()));
        let txn = Txn {
            ops: vec![
                TxnOp::InsertInode(row(5, 1)),
                TxnOp::SetXattr { ino: 5, name: b"user.a".to_vec(), value: Bytes::from_static(b"x") },
                TxnOp::InsertDentry(DentryRow { parent: 1, name: b"a".to_vec(), ino: 5, pos: 9 }),
                TxnOp::DeleteInode { ino: 1 },
                TxnOp::UpdateInode { row: row(7, 2), expect_version: 1 },
            ],
            durable: false,
        };
        assert_eq!(m.commit(&txn).unwrap_err().kind, IoErrorKind::Conflict);
        assert_eq!(before, format!("{:?}", (&m.inodes, &m.by_pos, &m.xattrs.len())));
        assert!(m.by_name.is_empty() && m.by_parent.is_empty());
    }
}
