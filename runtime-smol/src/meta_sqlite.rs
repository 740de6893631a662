//! The embedded metadata store: executes the core's [`MetaRequest`]s against one SQLite file.
//!
//! One connection, used from one thread: the runtime runs `Meta` requests strictly in order, so
//! there is no concurrency to manage here. Every `Commit` is one `BEGIN IMMEDIATE` transaction.
//!
//! Integers are stored as SQLite INTEGER (i64). Values the core hands us that do not fit are
//! refused rather than wrapped; values read back that do not fit their Rust type are `Corrupt`.
//!
//! A commit that carries an upload lease's fencing token ([`Fence`], hosts with a coordination
//! server) updates its inode only if the row's `fence` is at most the token, and stores the token
//! there; token 0 (no leases: this embedded store on one host) is not checked.
//!
//! Foreign keys are off on purpose: the core owns referential integrity, and the three metadata
//! stores (SQLite, MySQL, the simulator's) must accept and refuse exactly the same transactions.

use bytes::Bytes;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use crate::backends::Fence;
use truckeefs_core::{
    DentryRow, FileKind, InodeRow, IoError, IoErrorKind, IoReply, IoResult, LoadedInode, MetaRequest, ObjectId,
    Timespec, Txn, TxnOp, ROOT_INO,
};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 2;

/// `MIGRATIONS[v]` takes a database from schema version `v` to `v + 1` (version 0 is an empty
/// file). Each step runs in its own transaction together with the `schema` version bump. Never edit
/// a released step; append a new one and bump [`SCHEMA_VERSION`].
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE schema(version INTEGER NOT NULL);
     INSERT INTO schema(version) VALUES (0);
     CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO counters(name, value) VALUES ('next_id', 2);
     CREATE TABLE inodes(
         ino INTEGER PRIMARY KEY,
         kind INTEGER NOT NULL,
         perm INTEGER NOT NULL,
         uid INTEGER NOT NULL,
         gid INTEGER NOT NULL,
         nlink INTEGER NOT NULL,
         size INTEGER NOT NULL,
         atime_sec INTEGER NOT NULL, atime_nsec INTEGER NOT NULL,
         mtime_sec INTEGER NOT NULL, mtime_nsec INTEGER NOT NULL,
         ctime_sec INTEGER NOT NULL, ctime_nsec INTEGER NOT NULL,
         rdev INTEGER NOT NULL,
         version INTEGER NOT NULL,
         object TEXT,
         target BLOB);
     -- Orphans are few and looked up only at start: a partial index costs nothing otherwise.
     CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;
     -- pos is the rowid: ids come from next_id, so they are unique across all directories.
     CREATE TABLE dentries(
         pos INTEGER PRIMARY KEY,
         parent INTEGER NOT NULL,
         name BLOB NOT NULL,
         ino INTEGER NOT NULL,
         UNIQUE(parent, name));
     -- A directory's parent, for the check that refuses moving a directory into itself.
     CREATE INDEX dentries_ino ON dentries(ino);
     CREATE TABLE xattrs(
         ino INTEGER NOT NULL,
         name BLOB NOT NULL,
         value BLOB NOT NULL,
         PRIMARY KEY(ino, name)) WITHOUT ROWID;",
    // 1 -> 2: the fencing token of the last upload lease that committed the row (see
    // `backends::Fence`); 0 until a host with a coordination server commits an upload. The
    // index serves `max_fence` (only rows that ever had a lease).
    "ALTER TABLE inodes ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX inodes_fence ON inodes(fence) WHERE fence > 0;",
];

/// The page size of new databases: commits of small metadata rows write a quarter of the bytes
/// of SQLite's 4 KiB default (measured: create 38 -> 25 us, unlink 30 -> 20 us per transaction).
const SQLITE_PAGE_SIZE: u32 = 1024;

/// WAL pages between automatic checkpoints (8 MiB at the page size above).
const WAL_CHECKPOINT_PAGES: u32 = 8192;

/// Why the metadata database could not be opened. Each message is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum MetaOpenError {
    #[error("{path}: metadata schema version {found} is newer than this truckeefs supports ({supported}); upgrade truckeefs")]
    NewerSchema { path: String, found: i64, supported: u32 },
    #[error("{path}: not a usable truckeefs metadata database: {reason}")]
    NotMetadata { path: String, reason: String },
    #[error("{path}: cannot open the metadata database: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// The embedded metadata store.
pub struct SqliteMeta {
    conn: Connection,
    /// For error messages.
    path: PathBuf,
}

/// The inode columns, in the order [`decode_inode`] reads them.
const INODE_COLS: &str = "ino, kind, perm, uid, gid, nlink, size, atime_sec, atime_nsec, mtime_sec, mtime_nsec, \
     ctime_sec, ctime_nsec, rdev, version, object, target";
/// The same columns from the `inodes` table aliased `i`.
const INODE_COLS_I: &str = "i.ino, i.kind, i.perm, i.uid, i.gid, i.nlink, i.size, i.atime_sec, i.atime_nsec, \
     i.mtime_sec, i.mtime_nsec, i.ctime_sec, i.ctime_nsec, i.rdev, i.version, i.object, i.target";

impl SqliteMeta {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteMeta, MetaOpenError> {
        let shown = path.display().to_string();
        let sqlite_err = |source: rusqlite::Error| classify_open_error(&shown, source);
        let mut conn = Connection::open(path).map_err(sqlite_err)?;
        // Another process (a second mount by mistake, the sqlite3 shell) may hold the lock briefly.
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite_err)?;
        // Enough for every statement we prepare, so the hot path never re-parses SQL.
        conn.set_prepared_statement_cache_capacity(64);

        // Check the version before anything writes to the file: a newer database is left untouched.
        let found = read_schema_version(&conn).map_err(sqlite_err)?;
        check_version(&shown, found)?;

        if found == 0 {
            // A new database: small pages suit small rows, and every commit writes whole pages
            // to the WAL (a page size can only be chosen before the first table exists).
            conn.pragma_update(None, "page_size", SQLITE_PAGE_SIZE).map_err(sqlite_err)?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sqlite_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(MetaOpenError::NotMetadata {
                path: shown,
                reason: format!("cannot switch to WAL journal mode (got {mode}); is it on a local filesystem?"),
            });
        }
        // NORMAL in WAL mode: a commit is atomic and survives a process crash; a power loss may drop
        // the last commits. Durable transactions ask for more (see `commit`).
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite_err)?;
        // The mount holds the data directory's lock for its whole life, so nobody else may write
        // the database anyway; exclusive locking saves the file-lock system calls of every commit
        // (a third of a small transaction's cost).
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sqlite_err)?;
        conn.pragma_update(None, "foreign_keys", "OFF").map_err(sqlite_err)?;
        // Checkpoint every 8 MiB of WAL instead of SQLite's 1 MiB: a hot page rewritten by many
        // commits is copied into the database once per checkpoint, and checkpoints fsync.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES).map_err(sqlite_err)?;

        migrate(&mut conn, &shown)?;
        Ok(SqliteMeta { conn, path: path.to_path_buf() })
    }

    /// Executes one request; see the documentation of [`MetaRequest`] for each reply.
    pub fn execute(&mut self, req: &MetaRequest) -> IoResult {
        self.execute_fenced(req, None)
    }

    /// [`SqliteMeta::execute`]; a `Commit` also checks and sets the row fence of `fence.ino`
    /// (see [`Fence`]). Other requests ignore `fence`.
    pub fn execute_fenced(&mut self, req: &MetaRequest, fence: Option<Fence>) -> IoResult {
        match req {
            MetaRequest::AllocIds { count } => self.alloc_ids(*count),
            MetaRequest::LoadInode { ino } => Ok(IoReply::Inode(self.load_inode(*ino)?)),
            MetaRequest::LoadDir { ino } => Ok(IoReply::Dir(self.load_dir(*ino)?)),
            MetaRequest::Commit(txn) => self.commit(txn, fence).map(|()| IoReply::Done),
            MetaRequest::ListOrphans => self.list_orphans(),
            MetaRequest::Usage => self.usage(),
        }
    }

    /// The highest fencing token of any inode row (0 if none): a coordination server that lost
    /// its counter starts again above it.
    pub fn max_fence(&mut self) -> Result<u64, IoError> {
        let v: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(fence), 0) FROM inodes WHERE fence > 0")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(|e| self.sql_error(e))?;
        Ok(v.max(0) as u64)
    }

    /// Every object some inode row names (see `backends::open`, which deletes the others).
    /// Fails on a value that is not text rather than leave it out.
    pub fn referenced_objects(&mut self) -> Result<HashSet<String>, IoError> {
        let mut st = self
            .conn
            .prepare("SELECT object FROM inodes WHERE object IS NOT NULL")
            .map_err(|e| self.sql_error(e))?;
        let objects = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<HashSet<_>, _>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(objects)
    }

    /// Every entry naming `ino`, as `(parent, name)`.
    pub fn names(&mut self, ino: u64) -> Result<Vec<(u64, Vec<u8>)>, IoError> {
        let key = self.to_i64(ino, "ino")?;
        let mut st = self
            .conn
            .prepare_cached("SELECT parent, name FROM dentries WHERE ino = ?1 ORDER BY pos")
            .map_err(|e| self.sql_error(e))?;
        let rows = st
            .query_map([key], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows.into_iter().filter_map(|(p, n)| Some((u64::try_from(p).ok()?, n))).collect())
    }

    fn alloc_ids(&mut self, count: u64) -> IoResult {
        let count = self.to_i64(count, "id count")?;
        // One statement, so atomic on its own. The bound keeps `value + count` from overflowing,
        // which SQLite would silently turn into a REAL.
        let first: Option<i64> = self
            .conn
            .prepare_cached(
                "UPDATE counters SET value = value + ?1 \
                 WHERE name = 'next_id' AND value >= 0 AND value <= 9223372036854775807 - ?1 \
                 RETURNING value - ?1",
            )
            .and_then(|mut st| st.query_row([count], |r| r.get(0)).optional())
            .map_err(|e| self.sql_error(e))?;
        match first {
            Some(first) => Ok(IoReply::Ids { first: first as u64 }), // non-negative: checked in WHERE
            None => Err(IoError::new(
                IoErrorKind::Corrupt,
                format!("{}: table counters: next_id is missing, negative or exhausted", self.path.display()),
            )),
        }
    }

    fn load_inode(&mut self, ino: u64) -> Result<Option<LoadedInode>, IoError> {
        let key = self.to_i64(ino, "ino")?;
        let row = {
            let mut st = self
                .conn
                .prepare_cached(&format!("SELECT {INODE_COLS} FROM inodes WHERE ino = ?1"))
                .map_err(|e| self.sql_error(e))?;
            let mut rows = st.query([key]).map_err(|e| self.sql_error(e))?;
            match rows.next().map_err(|e| self.sql_error(e))? {
                Some(r) => decode_inode(&self.path, r, 0)?,
                None => return Ok(None),
            }
        };
        let mut xattrs = BTreeMap::new();
        let mut st = self
            .conn
            .prepare_cached("SELECT ino, name, value FROM xattrs WHERE ino = ?1")
            .map_err(|e| self.sql_error(e))?;
        let mut rows = st.query([key]).map_err(|e| self.sql_error(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sql_error(e))? {
            let (_, name, value) = decode_xattr(&self.path, r)?;
            xattrs.insert(name, value);
        }
        let parent = if row.kind == FileKind::Directory && row.ino != ROOT_INO {
            let mut st = self
                .conn
                .prepare_cached("SELECT parent FROM dentries WHERE ino = ?1 LIMIT 1")
                .map_err(|e| self.sql_error(e))?;
            let found: Option<i64> = st.query_row([key], |r| r.get(0)).optional().map_err(|e| self.sql_error(e))?;
            found.and_then(|p| u64::try_from(p).ok())
        } else {
            None
        };
        Ok(Some(LoadedInode { row, xattrs, parent }))
    }

    fn load_dir(&mut self, dir: u64) -> Result<Vec<(DentryRow, LoadedInode)>, IoError> {
        let key = self.to_i64(dir, "ino")?;
        let mut entries = Vec::new();
        {
            // LEFT JOIN so a dentry whose inode is gone is reported, not silently dropped.
            let sql = format!(
                "SELECT d.pos, d.name, d.ino, {INODE_COLS_I} FROM dentries d LEFT JOIN inodes i ON i.ino = d.ino \
                 WHERE d.parent = ?1 ORDER BY d.pos"
            );
            let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.sql_error(e))?;
            let mut rows = st.query([key]).map_err(|e| self.sql_error(e))?;
            while let Some(r) = rows.next().map_err(|e| self.sql_error(e))? {
                let bad = |what: &str| {
                    IoError::new(
                        IoErrorKind::Corrupt,
                        format!("{}: table dentries, directory {dir}: {what}", self.path.display()),
                    )
                };
                let pos = r.get::<_, i64>(0).ok().and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("bad pos"))?;
                let name: Vec<u8> = r.get(1).map_err(|_| bad(&format!("entry at pos {pos}: bad name")))?;
                let ino = r
                    .get::<_, i64>(2)
                    .ok()
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| bad(&format!("entry at pos {pos}: bad ino")))?;
                let exists = !matches!(r.get_ref(3), Ok(rusqlite::types::ValueRef::Null));
                if !exists {
                    return Err(bad(&format!(
                        "entry {:?} (pos {pos}) points to missing inode {ino}",
                        String::from_utf8_lossy(&name)
                    )));
                }
                let row = decode_inode(&self.path, r, 3)?;
                let dentry = DentryRow { parent: dir, name, ino, pos };
                entries.push((dentry, LoadedInode { row, xattrs: BTreeMap::new(), parent: Some(dir) }));
            }
        }
        if entries.is_empty() {
            return Ok(entries);
        }
        // All xattrs of all entries in one query; hard links in one directory share theirs.
        let mut by_ino: BTreeMap<u64, BTreeMap<Vec<u8>, Bytes>> = BTreeMap::new();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT ino, name, value FROM xattrs WHERE ino IN (SELECT ino FROM dentries WHERE parent = ?1)",
            )
            .map_err(|e| self.sql_error(e))?;
        let mut rows = st.query([key]).map_err(|e| self.sql_error(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sql_error(e))? {
            let (ino, name, value) = decode_xattr(&self.path, r)?;
            by_ino.entry(ino).or_default().insert(name, value);
        }
        for (dentry, inode) in &mut entries {
            if let Some(x) = by_ino.get(&dentry.ino) {
                inode.xattrs = x.clone();
            }
        }
        Ok(entries)
    }

    fn commit(&mut self, txn: &Txn, fence: Option<Fence>) -> Result<(), IoError> {
        if !txn.durable {
            return self.commit_ops(&txn.ops, fence);
        }
        // Durability: in WAL mode with synchronous=FULL, SQLite fsyncs the WAL at commit. The WAL
        // is append-only, so that one fsync also makes every earlier (NORMAL) commit durable,
        // which is what fsync(2) promises. Switching the pragma costs nothing, so only durable
        // transactions pay for the fsync.
        self.set_synchronous("FULL")?;
        let before = self.conn.total_changes();
        let result = self.commit_ops(&txn.ops, fence);
        let changed = self.conn.total_changes() != before;
        // Always go back to NORMAL, even after a failed commit.
        let reset = self.set_synchronous("NORMAL");
        result?;
        reset?;
        if !changed {
            // A transaction that changed no row writes nothing to the WAL, so nothing was synced.
            // A checkpoint syncs the WAL and then the database file, covering earlier commits.
            self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(|e| self.sql_error(e))?;
        }
        Ok(())
    }

    fn set_synchronous(&self, level: &str) -> Result<(), IoError> {
        self.conn.pragma_update(None, "synchronous", level).map_err(|e| self.sql_error(e))
    }

    /// Applies `ops` in one transaction: all or nothing. BEGIN and COMMIT are cached statements
    /// (rusqlite's `Transaction` parses them anew each time, a tenth of a small commit's cost).
    fn commit_ops(&mut self, ops: &[TxnOp], fence: Option<Fence>) -> Result<(), IoError> {
        let SqliteMeta { conn, path } = self;
        let sql_error = |e| sql_error(path, e);
        conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut st| st.execute([])).map_err(sql_error)?;
        let applied = ops.iter().try_for_each(|op| apply_op(conn, path, op, fence));
        let result = applied.and_then(|()| {
            conn.prepare_cached("COMMIT").and_then(|mut st| st.execute([])).map(drop).map_err(sql_error)
        });
        if result.is_err() && !conn.is_autocommit() {
            // Leaves the database as it was; a failure here would surface on the next BEGIN.
            let _ = conn.prepare_cached("ROLLBACK").and_then(|mut st| st.execute([]));
        }
        result
    }

    fn list_orphans(&mut self) -> IoResult {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {INODE_COLS} FROM inodes WHERE nlink = 0 ORDER BY ino"))
            .map_err(|e| sql_error(&self.path, e))?;
        let mut rows = st.query([]).map_err(|e| sql_error(&self.path, e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| sql_error(&self.path, e))? {
            out.push(decode_inode(&self.path, r, 0)?);
        }
        Ok(IoReply::Orphans(out))
    }

    fn usage(&mut self) -> IoResult {
        let regular = FileKind::Regular.code() as i64;
        let (files, bytes): (i64, i64) = self
            .conn
            .prepare_cached("SELECT count(*), coalesce(sum(CASE WHEN kind = ?1 THEN size ELSE 0 END), 0) FROM inodes")
            .and_then(|mut st| st.query_row([regular], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(|e| self.sql_error(e))?;
        match (u64::try_from(files), u64::try_from(bytes)) {
            (Ok(files), Ok(bytes)) => Ok(IoReply::Usage { files, bytes }),
            _ => Err(IoError::new(
                IoErrorKind::Corrupt,
                format!("{}: table inodes: negative sizes (usage {bytes})", self.path.display()),
            )),
        }
    }

    fn sql_error(&self, e: rusqlite::Error) -> IoError {
        sql_error(&self.path, e)
    }

    fn to_i64(&self, v: u64, what: &str) -> Result<i64, IoError> {
        to_i64(&self.path, v, what)
    }
}

fn apply_op(tx: &Connection, path: &Path, op: &TxnOp, fence: Option<Fence>) -> Result<(), IoError> {
    let db = path.display();
    let conflict = |msg: String| IoError::new(IoErrorKind::Conflict, format!("{db}: {msg}"));
    let sql_error = |e| sql_error(path, e);
    match op {
        TxnOp::InsertInode(row) => {
            let p = encode_inode(path, row)?;
            let mut st = tx
                .prepare_cached(&format!(
                    "INSERT INTO inodes ({INODE_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
                ))
                .map_err(sql_error)?;
            match st.execute(params![
                p.ino, p.kind, p.perm, p.uid, p.gid, p.nlink, p.size, p.atime.0, p.atime.1, p.mtime.0, p.mtime.1,
                p.ctime.0, p.ctime.1, p.rdev, p.version, p.object, p.target
            ]) {
                Err(e) if is_constraint(&e) => Err(conflict(format!("table inodes: inode {} already exists", row.ino))),
                r => r.map(drop).map_err(sql_error),
            }
        }
        TxnOp::UpdateInode { row, expect_version } => {
            let p = encode_inode(path, row)?;
            let expect = to_i64(path, *expect_version, "version")?;
            // The fence applies to its own inode only; token 0 is no check (no leases).
            let fence = Fence { ino: row.ino, token: Fence::token_for(fence, row.ino) };
            let token = to_i64(path, fence.token, "fencing token")?;
            // Unfenced updates leave the column out, so they do not touch its index.
            let sql = if token == 0 {
                "UPDATE inodes SET kind = ?2, perm = ?3, uid = ?4, gid = ?5, nlink = ?6, size = ?7, \
                 atime_sec = ?8, atime_nsec = ?9, mtime_sec = ?10, mtime_nsec = ?11, ctime_sec = ?12, \
                 ctime_nsec = ?13, rdev = ?14, version = ?15, object = ?16, target = ?17 \
                 WHERE ino = ?1 AND version = ?18"
            } else {
                "UPDATE inodes SET kind = ?2, perm = ?3, uid = ?4, gid = ?5, nlink = ?6, size = ?7, \
                 atime_sec = ?8, atime_nsec = ?9, mtime_sec = ?10, mtime_nsec = ?11, ctime_sec = ?12, \
                 ctime_nsec = ?13, rdev = ?14, version = ?15, object = ?16, target = ?17, fence = ?19 \
                 WHERE ino = ?1 AND version = ?18 AND fence <= ?19"
            };
            let mut st = tx.prepare_cached(sql).map_err(sql_error)?;
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                &p.ino, &p.kind, &p.perm, &p.uid, &p.gid, &p.nlink, &p.size, &p.atime.0, &p.atime.1, &p.mtime.0,
                &p.mtime.1, &p.ctime.0, &p.ctime.1, &p.rdev, &p.version, &p.object, &p.target, &expect,
            ];
            if token != 0 {
                values.push(&token);
            }
            let n = st.execute(values.as_slice()).map_err(sql_error)?;
            if n == 0 && token != 0 {
                let stored: Option<(i64, i64)> = tx
                    .prepare_cached("SELECT version, fence FROM inodes WHERE ino = ?1")
                    .and_then(|mut st| st.query_row([p.ino], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(sql_error)?;
                if let Some((version, stored)) = stored.filter(|&(v, f)| v == expect && f > token) {
                    return Err(conflict(fence.refusal(version, stored)));
                }
            }
            if n == 0 {
                return Err(conflict(format!(
                    "table inodes: inode {} is not at version {expect_version} (changed or deleted)",
                    row.ino
                )));
            }
            Ok(())
        }
        TxnOp::DeleteInode { ino } => {
            let key = to_i64(path, *ino, "ino")?;
            // Deleting an inode that is already gone is not an error: there is no version to check,
            // and a second clean-up of the same orphan must not fail.
            tx.prepare_cached("DELETE FROM xattrs WHERE ino = ?1")
                .and_then(|mut st| st.execute([key]))
                .map_err(sql_error)?;
            tx.prepare_cached("DELETE FROM inodes WHERE ino = ?1")
                .and_then(|mut st| st.execute([key]))
                .map_err(sql_error)?;
            Ok(())
        }
        TxnOp::InsertDentry(d) => {
            let pos = to_i64(path, d.pos, "pos")?;
            let parent = to_i64(path, d.parent, "parent")?;
            let ino = to_i64(path, d.ino, "ino")?;
            let mut st = tx
                .prepare_cached("INSERT INTO dentries (pos, parent, name, ino) VALUES (?1, ?2, ?3, ?4)")
                .map_err(sql_error)?;
            match st.execute(params![pos, parent, d.name, ino]) {
                Err(e) if is_constraint(&e) => Err(conflict(format!(
                    "table dentries: entry {:?} in directory {} (or position {}) already exists",
                    String::from_utf8_lossy(&d.name),
                    d.parent,
                    d.pos
                ))),
                r => r.map(drop).map_err(sql_error),
            }
        }
        TxnOp::DeleteDentry { parent, name, ino } => {
            let p = to_i64(path, *parent, "parent")?;
            let i = to_i64(path, *ino, "ino")?;
            let n = tx
                .prepare_cached("DELETE FROM dentries WHERE parent = ?1 AND name = ?2 AND ino = ?3")
                .and_then(|mut st| st.execute(params![p, name, i]))
                .map_err(sql_error)?;
            if n == 0 {
                return Err(conflict(format!(
                    "table dentries: no entry {:?} -> inode {ino} in directory {parent}",
                    String::from_utf8_lossy(name)
                )));
            }
            Ok(())
        }
        TxnOp::SetXattr { ino, name, value } => {
            let key = to_i64(path, *ino, "ino")?;
            tx.prepare_cached(
                "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute(params![key, name, &value[..]]))
            .map_err(sql_error)?;
            Ok(())
        }
        TxnOp::RemoveXattr { ino, name } => {
            let key = to_i64(path, *ino, "ino")?;
            // Removing an absent xattr is not an error here: the core decides ENODATA from what
            // it loaded, and the op carries no version to check.
            tx.prepare_cached("DELETE FROM xattrs WHERE ino = ?1 AND name = ?2")
                .and_then(|mut st| st.execute(params![key, name]))
                .map_err(sql_error)?;
            Ok(())
        }
    }
}

/// An inode row as SQLite values.
struct EncodedInode<'a> {
    ino: i64,
    kind: i64,
    perm: i64,
    uid: i64,
    gid: i64,
    nlink: i64,
    size: i64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
    rdev: i64,
    version: i64,
    object: Option<&'a str>,
    target: Option<&'a [u8]>,
}

fn encode_inode<'a>(path: &Path, row: &'a InodeRow) -> Result<EncodedInode<'a>, IoError> {
    let ts = |t: Timespec| (t.sec, t.nsec as i64);
    Ok(EncodedInode {
        ino: to_i64(path, row.ino, "ino")?,
        kind: row.kind.code() as i64,
        perm: row.perm as i64,
        uid: row.uid as i64,
        gid: row.gid as i64,
        nlink: row.nlink as i64,
        size: to_i64(path, row.size, "size")?,
        atime: ts(row.atime),
        mtime: ts(row.mtime),
        ctime: ts(row.ctime),
        rdev: row.rdev as i64,
        version: to_i64(path, row.version, "version")?,
        object: row.object.as_ref().map(|o| o.0.as_str()),
        target: row.target.as_deref(),
    })
}

/// Decodes the [`INODE_COLS`] starting at column `base`. Never panics on a bad row.
fn decode_inode(path: &Path, r: &Row, base: usize) -> Result<InodeRow, IoError> {
    // Name the inode in errors if at least its number is readable.
    let ino_shown = match r.get::<_, i64>(base) {
        Ok(v) => v.to_string(),
        Err(_) => "?".to_string(),
    };
    let bad = |col: &str, detail: &str| {
        IoError::new(
            IoErrorKind::Corrupt,
            format!("{}: table inodes, ino {ino_shown}: bad {col}{detail}", path.display()),
        )
    };
    let int = |i: usize, col: &str| -> Result<i64, IoError> { r.get::<_, i64>(base + i).map_err(|_| bad(col, "")) };
    let ranged = |i: usize, col: &str, max: i64| -> Result<i64, IoError> {
        let v = int(i, col)?;
        if (0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(bad(col, &format!(" ({v})")))
        }
    };
    let time = |i: usize, col: &str| -> Result<Timespec, IoError> {
        let sec = int(i, col)?;
        let nsec = ranged(i + 1, col, 999_999_999)?;
        Ok(Timespec { sec, nsec: nsec as u32 })
    };
    let u32max = u32::MAX as i64;
    let kind_code = int(1, "kind")?;
    let kind = u8::try_from(kind_code)
        .ok()
        .and_then(FileKind::from_code)
        .ok_or_else(|| bad("kind", &format!(" (unknown code {kind_code})")))?;
    let row = InodeRow {
        ino: ranged(0, "ino", i64::MAX)? as u64,
        kind,
        perm: ranged(2, "perm", 0o7777)? as u16,
        uid: ranged(3, "uid", u32max)? as u32,
        gid: ranged(4, "gid", u32max)? as u32,
        nlink: ranged(5, "nlink", u32max)? as u32,
        size: ranged(6, "size", i64::MAX)? as u64,
        atime: time(7, "atime")?,
        mtime: time(9, "mtime")?,
        ctime: time(11, "ctime")?,
        rdev: ranged(13, "rdev", u32max)? as u32,
        version: ranged(14, "version", i64::MAX)? as u64,
        object: r.get::<_, Option<String>>(base + 15).map_err(|_| bad("object", ""))?.map(ObjectId),
        target: r.get::<_, Option<Vec<u8>>>(base + 16).map_err(|_| bad("target", ""))?,
    };
    Ok(row)
}

/// Decodes `ino, name, value` of an xattrs row.
fn decode_xattr(path: &Path, r: &Row) -> Result<(u64, Vec<u8>, Bytes), IoError> {
    let ino = r.get::<_, i64>(0).ok().and_then(|v| u64::try_from(v).ok());
    let bad = |col: &str| {
        let ino = ino.map_or("?".to_string(), |i| i.to_string());
        IoError::new(IoErrorKind::Corrupt, format!("{}: table xattrs, ino {ino}: bad {col}", path.display()))
    };
    let ino = ino.ok_or_else(|| bad("ino"))?;
    let name: Vec<u8> = r.get(1).map_err(|_| bad("name"))?;
    let value: Vec<u8> = r.get(2).map_err(|_| bad("value"))?;
    Ok((ino, name, Bytes::from(value)))
}

fn to_i64(path: &Path, v: u64, what: &str) -> Result<i64, IoError> {
    i64::try_from(v).map_err(|_| {
        IoError::new(IoErrorKind::Other, format!("{}: {what} {v} does not fit the database", path.display()))
    })
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

/// Maps a SQLite failure to an [`IoError`] naming the database. SQLite messages never contain the
/// bound values, so no object id can leak through here.
fn sql_error(path: &Path, e: rusqlite::Error) -> IoError {
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => IoErrorKind::NoSpace,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => IoErrorKind::Timeout,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => IoErrorKind::Corrupt,
        Some(ErrorCode::ConstraintViolation) => IoErrorKind::Conflict,
        _ => IoErrorKind::Other,
    };
    IoError::new(kind, format!("{}: {e}", path.display()))
}

fn classify_open_error(path: &str, source: rusqlite::Error) -> MetaOpenError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            MetaOpenError::NotMetadata { path: path.to_string(), reason: "the file is not a SQLite database".into() }
        }
        Some(ErrorCode::DatabaseCorrupt) => {
            MetaOpenError::NotMetadata { path: path.to_string(), reason: format!("the database is corrupt ({source})") }
        }
        _ => MetaOpenError::Sqlite { path: path.to_string(), source },
    }
}

/// The schema version of the database: 0 for a database without our `schema` table.
fn read_schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_schema: bool =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema'", [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !has_schema {
        return Ok(0);
    }
    // MAX so a (hand-edited) table with several rows still refuses rather than downgrades.
    conn.query_row("SELECT coalesce(max(version), -1) FROM schema", [], |r| r.get(0))
}

fn check_version(path: &str, found: i64) -> Result<(), MetaOpenError> {
    if found > SCHEMA_VERSION as i64 {
        return Err(MetaOpenError::NewerSchema { path: path.to_string(), found, supported: SCHEMA_VERSION });
    }
    if found < 0 {
        return Err(MetaOpenError::NotMetadata {
            path: path.to_string(),
            reason: format!("bad schema version {found}"),
        });
    }
    Ok(())
}

/// Applies the missing migration steps, each in its own transaction.
fn migrate(conn: &mut Connection, path: &str) -> Result<(), MetaOpenError> {
    debug_assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize, "one migration step per version");
    let sqlite_err = |source| MetaOpenError::Sqlite { path: path.to_string(), source };
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err)?;
        // Read again under the write lock: another process may have migrated meanwhile.
        let version = read_schema_version(&tx).map_err(sqlite_err)?;
        check_version(path, version)?;
        let version = version as u32; // 0..=SCHEMA_VERSION: checked above
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version == 0 {
            let tables: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
                .map_err(sqlite_err)?;
            if tables > 0 {
                return Err(MetaOpenError::NotMetadata {
                    path: path.to_string(),
                    reason: "the database has tables but no truckeefs schema".into(),
                });
            }
        }
        tx.execute_batch(MIGRATIONS[version as usize]).map_err(sqlite_err)?;
        if version == 0 {
            insert_root(&tx).map_err(sqlite_err)?;
        }
        tx.execute("UPDATE schema SET version = ?1", [version + 1]).map_err(sqlite_err)?;
        tx.commit().map_err(sqlite_err)?;
    }
}

/// The root directory of a new filesystem, owned by whoever creates it.
fn insert_root(tx: &Connection) -> rusqlite::Result<()> {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let now = Timespec::from_system(SystemTime::now());
    tx.execute(
        &format!(
            "INSERT INTO inodes ({INODE_COLS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, 2, 0, ?6, ?7, ?6, ?7, ?6, ?7, 0, 1, NULL, NULL)"
        ),
        params![
            ROOT_INO as i64,
            FileKind::Directory.code() as i64,
            0o755i64,
            uid as i64,
            gid as i64,
            now.sec,
            now.nsec as i64
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64, nsec: u32) -> Timespec {
        Timespec { sec, nsec }
    }

    fn file_row(ino: u64, version: u64) -> InodeRow {
        InodeRow {
            ino,
            kind: FileKind::Regular,
            perm: 0o644,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 12345,
            atime: ts(1, 2),
            mtime: ts(-3, 999_999_999),
            ctime: ts(5, 0),
            rdev: 0,
            version,
            object: Some(ObjectId("0123456789abcdef0123456789abcdef".into())),
            target: None,
        }
    }

    fn open_tmp() -> (tempfile::TempDir, SqliteMeta) {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMeta::open(&dir.path().join("meta.db")).unwrap();
        (dir, meta)
    }

    fn commit(meta: &mut SqliteMeta, ops: Vec<TxnOp>) -> IoResult {
        meta.execute(&MetaRequest::Commit(Txn { ops, durable: false }))
    }

    fn load(meta: &mut SqliteMeta, ino: u64) -> Option<LoadedInode> {
        match meta.execute(&MetaRequest::LoadInode { ino }).unwrap() {
            IoReply::Inode(i) => i,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn load_dir(meta: &mut SqliteMeta, ino: u64) -> Vec<(DentryRow, LoadedInode)> {
        match meta.execute(&MetaRequest::LoadDir { ino }).unwrap() {
            IoReply::Dir(d) => d,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn dentry(parent: u64, name: &[u8], ino: u64, pos: u64) -> DentryRow {
        DentryRow { parent, name: name.to_vec(), ino, pos }
    }

    #[test]
    fn new_database_has_root_and_counter() {
        let (_d, mut meta) = open_tmp();
        let root = load(&mut meta, ROOT_INO).expect("root exists");
        assert_eq!(root.row.kind, FileKind::Directory);
        assert_eq!(root.row.perm, 0o755);
        assert_eq!(root.row.nlink, 2);
        assert_eq!(root.row.version, 1);
        assert_eq!(root.row.uid, unsafe { libc::getuid() });
        assert!(root.xattrs.is_empty());
        assert_eq!(meta.execute(&MetaRequest::AllocIds { count: 10 }), Ok(IoReply::Ids { first: 2 }));
        assert_eq!(meta.execute(&MetaRequest::AllocIds { count: 1 }), Ok(IoReply::Ids { first: 12 }));
        assert_eq!(meta.execute(&MetaRequest::AllocIds { count: 0 }), Ok(IoReply::Ids { first: 13 }));
        assert_eq!(meta.execute(&MetaRequest::AllocIds { count: 1 }), Ok(IoReply::Ids { first: 13 }));
        assert_eq!(load(&mut meta, 99), None);
        assert_eq!(meta.execute(&MetaRequest::Usage), Ok(IoReply::Usage { files: 1, bytes: 0 }));
    }

    #[test]
    fn round_trip_inode_dentry_xattr() {
        let (_d, mut meta) = open_tmp();
        let mut link = file_row(3, 1);
        link.kind = FileKind::Symlink;
        link.object = None;
        link.size = 4;
        link.target = Some(b"\xffab/".to_vec());
        let file = file_row(2, 1);
        commit(
            &mut meta,
            vec![
                TxnOp::InsertInode(file.clone()),
                TxnOp::InsertInode(link.clone()),
                TxnOp::InsertDentry(dentry(1, b"z-file", 2, 20)),
                TxnOp::InsertDentry(dentry(1, b"a-link\xfe", 3, 10)),
                TxnOp::InsertDentry(dentry(1, b"hard", 2, 30)),
                TxnOp::SetXattr { ino: 2, name: b"user.a".to_vec(), value: Bytes::from_static(b"1") },
                TxnOp::SetXattr { ino: 2, name: b"user.b".to_vec(), value: Bytes::from_static(b"\0\x01") },
                TxnOp::SetXattr { ino: 2, name: b"user.a".to_vec(), value: Bytes::from_static(b"one") },
            ],
        )
        .unwrap();
        let got = load(&mut meta, 2).unwrap();
        assert_eq!(got.row, file);
        let want_x: BTreeMap<Vec<u8>, Bytes> =
            [(b"user.a".to_vec(), Bytes::from_static(b"one")), (b"user.b".to_vec(), Bytes::from_static(b"\0\x01"))]
                .into();
        assert_eq!(got.xattrs, want_x);
        assert_eq!(load(&mut meta, 3).unwrap().row, link);

        let dir = load_dir(&mut meta, 1);
        let names: Vec<(&[u8], u64, u64)> = dir.iter().map(|(d, _)| (&d.name[..], d.ino, d.pos)).collect();
        assert_eq!(names, vec![(&b"a-link\xfe"[..], 3, 10), (&b"z-file"[..], 2, 20), (&b"hard"[..], 2, 30)]);
        assert!(dir.iter().all(|(d, _)| d.parent == 1));
        assert_eq!(dir[1].1.row, file);
        assert_eq!(dir[1].1.xattrs, want_x);
        assert_eq!(dir[2].1.xattrs, want_x);
        assert!(dir[0].1.xattrs.is_empty());
        assert!(load_dir(&mut meta, 2).is_empty());

        // Update, remove an xattr, delete a dentry.
        let mut file2 = file.clone();
        file2.version = 2;
        file2.size = 7;
        file2.object = None;
        file2.nlink = 2;
        commit(
            &mut meta,
            vec![
                TxnOp::UpdateInode { row: file2.clone(), expect_version: 1 },
                TxnOp::RemoveXattr { ino: 2, name: b"user.a".to_vec() },
                TxnOp::RemoveXattr { ino: 2, name: b"user.absent".to_vec() },
                TxnOp::DeleteDentry { parent: 1, name: b"z-file".to_vec(), ino: 2 },
            ],
        )
        .unwrap();
        let got = load(&mut meta, 2).unwrap();
        assert_eq!(got.row, file2);
        assert_eq!(got.xattrs.len(), 1);
        assert_eq!(load_dir(&mut meta, 1).len(), 2);
        assert_eq!(meta.execute(&MetaRequest::Usage), Ok(IoReply::Usage { files: 3, bytes: 7 }));

        // Delete the inode: its xattrs go too.
        commit(
            &mut meta,
            vec![
                TxnOp::DeleteDentry { parent: 1, name: b"hard".to_vec(), ino: 2 },
                TxnOp::DeleteInode { ino: 2 },
                TxnOp::DeleteInode { ino: 2 },
            ],
        )
        .unwrap();
        assert_eq!(load(&mut meta, 2), None);
        let xattrs: i64 = meta.conn.query_row("SELECT count(*) FROM xattrs", [], |r| r.get(0)).unwrap();
        assert_eq!(xattrs, 0);
        // Re-inserting the same ino starts clean.
        commit(&mut meta, vec![TxnOp::InsertInode(file.clone())]).unwrap();
        assert!(load(&mut meta, 2).unwrap().xattrs.is_empty());
    }

    #[test]
    fn every_kind_and_extreme_values_round_trip() {
        let (_d, mut meta) = open_tmp();
        let kinds = [
            FileKind::Regular,
            FileKind::Directory,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDevice,
            FileKind::BlockDevice,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let mut row = file_row(100 + i as u64, u64::MAX >> 1);
            row.kind = kind;
            row.perm = 0o7777;
            row.uid = u32::MAX;
            row.gid = u32::MAX;
            row.nlink = u32::MAX;
            row.rdev = u32::MAX;
            row.size = i64::MAX as u64;
            row.atime = ts(i64::MIN, 0);
            row.mtime = ts(i64::MAX, 999_999_999);
            commit(&mut meta, vec![TxnOp::InsertInode(row.clone())]).unwrap();
            assert_eq!(load(&mut meta, row.ino).unwrap().row, row);
        }
        // Values SQLite cannot hold are refused, not wrapped.
        let too_big = file_row(u64::MAX, 1);
        let err = commit(&mut meta, vec![TxnOp::InsertInode(too_big)]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Other);
    }

    #[test]
    fn version_conflict() {
        let (_d, mut meta) = open_tmp();
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        commit(&mut meta, vec![TxnOp::UpdateInode { row: file_row(2, 2), expect_version: 1 }]).unwrap();
        let err = commit(&mut meta, vec![TxnOp::UpdateInode { row: file_row(2, 2), expect_version: 1 }]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        assert!(err.message.contains("meta.db"), "{}", err.message);
        // Updating a missing inode is a conflict too.
        let err = commit(&mut meta, vec![TxnOp::UpdateInode { row: file_row(9, 2), expect_version: 1 }]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        assert_eq!(load(&mut meta, 2).unwrap().row.version, 2);
    }

    #[test]
    fn insert_conflicts() {
        let (_d, mut meta) = open_tmp();
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertDentry(dentry(1, b"a", 2, 5))])
            .unwrap();
        // Same name, same parent.
        let err = commit(&mut meta, vec![TxnOp::InsertDentry(dentry(1, b"a", 2, 6))]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        // Same name in another directory is fine.
        commit(&mut meta, vec![TxnOp::InsertDentry(dentry(2, b"a", 2, 7))]).unwrap();
        // Existing inode.
        let err = commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        assert!(!err.message.contains("0123456789abcdef"), "object id leaked: {}", err.message);
        // Deleting a dentry that is missing, or points elsewhere.
        let err = commit(&mut meta, vec![TxnOp::DeleteDentry { parent: 1, name: b"b".to_vec(), ino: 2 }]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        let err = commit(&mut meta, vec![TxnOp::DeleteDentry { parent: 1, name: b"a".to_vec(), ino: 3 }]).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        assert_eq!(load_dir(&mut meta, 1).len(), 1);
    }

    #[test]
    fn transaction_is_atomic() {
        let (_d, mut meta) = open_tmp();
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertDentry(dentry(1, b"a", 2, 5))])
            .unwrap();
        for second in [
            TxnOp::UpdateInode { row: file_row(2, 9), expect_version: 8 },
            TxnOp::InsertDentry(dentry(1, b"a", 3, 6)),
            TxnOp::DeleteDentry { parent: 1, name: b"nope".to_vec(), ino: 2 },
            TxnOp::InsertInode(file_row(2, 1)),
        ] {
            let err = commit(
                &mut meta,
                vec![
                    TxnOp::InsertInode(file_row(3, 1)),
                    second,
                    TxnOp::SetXattr { ino: 2, name: b"user.x".to_vec(), value: Bytes::new() },
                ],
            )
            .unwrap_err();
            assert_eq!(err.kind, IoErrorKind::Conflict);
            assert_eq!(load(&mut meta, 3), None, "first op must be rolled back");
            assert!(load(&mut meta, 2).unwrap().xattrs.is_empty());
        }
        // And the connection is still usable afterwards, also for a durable commit.
        meta.execute(&MetaRequest::Commit(Txn { ops: vec![TxnOp::InsertInode(file_row(3, 1))], durable: true }))
            .unwrap();
        assert!(load(&mut meta, 3).is_some());
    }

    #[test]
    fn durable_commits_restore_normal_sync() {
        let (_d, mut meta) = open_tmp();
        let sync = |m: &SqliteMeta| -> i64 { m.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap() };
        assert_eq!(sync(&meta), 1);
        meta.execute(&MetaRequest::Commit(Txn { ops: vec![], durable: true })).unwrap();
        assert_eq!(sync(&meta), 1);
        let err = meta
            .execute(&MetaRequest::Commit(Txn {
                ops: vec![TxnOp::UpdateInode { row: file_row(2, 2), expect_version: 1 }],
                durable: true,
            }))
            .unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        assert_eq!(sync(&meta), 1);
    }

    #[test]
    fn orphans() {
        let (_d, mut meta) = open_tmp();
        let mut orphan = file_row(4, 1);
        orphan.nlink = 0;
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertInode(orphan.clone())]).unwrap();
        assert_eq!(meta.execute(&MetaRequest::ListOrphans), Ok(IoReply::Orphans(vec![orphan.clone()])));
        let mut unlinked = file_row(2, 2);
        unlinked.nlink = 0;
        commit(&mut meta, vec![TxnOp::UpdateInode { row: unlinked.clone(), expect_version: 1 }]).unwrap();
        assert_eq!(meta.execute(&MetaRequest::ListOrphans), Ok(IoReply::Orphans(vec![unlinked, orphan])));
        commit(&mut meta, vec![TxnOp::DeleteInode { ino: 2 }, TxnOp::DeleteInode { ino: 4 }]).unwrap();
        assert_eq!(meta.execute(&MetaRequest::ListOrphans), Ok(IoReply::Orphans(vec![])));
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let mut meta = SqliteMeta::open(&path).unwrap();
            assert_eq!(meta.execute(&MetaRequest::AllocIds { count: 5 }), Ok(IoReply::Ids { first: 2 }));
            commit(
                &mut meta,
                vec![
                    TxnOp::InsertInode(file_row(2, 1)),
                    TxnOp::InsertDentry(dentry(1, b"f", 2, 3)),
                    TxnOp::SetXattr { ino: 2, name: b"user.k".to_vec(), value: Bytes::from_static(b"v") },
                ],
            )
            .unwrap();
        }
        let mut meta = SqliteMeta::open(&path).unwrap();
        assert_eq!(meta.execute(&MetaRequest::AllocIds { count: 1 }), Ok(IoReply::Ids { first: 7 }));
        let dir_entries = load_dir(&mut meta, 1);
        assert_eq!(dir_entries.len(), 1);
        assert_eq!(dir_entries[0].1.row, file_row(2, 1));
        assert_eq!(dir_entries[0].1.xattrs.len(), 1);
        assert_eq!(load(&mut meta, ROOT_INO).unwrap().row.version, 1);
    }

    #[test]
    fn newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        drop(SqliteMeta::open(&path).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute("UPDATE schema SET version = 7", []).unwrap();
        }
        let err = SqliteMeta::open(&path).err().expect("must refuse");
        assert!(matches!(err, MetaOpenError::NewerSchema { found: 7, supported: SCHEMA_VERSION, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("meta.db") && msg.contains("newer") && msg.contains("upgrade"), "{msg}");
        assert!(!msg.contains('\n'));
        // Still at version 7: nothing was written.
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn.query_row("SELECT version FROM schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 7);
    }

    fn fenced(meta: &mut SqliteMeta, row: InodeRow, expect_version: u64, token: u64) -> IoResult {
        let txn = Txn { ops: vec![TxnOp::UpdateInode { row, expect_version }], durable: false };
        meta.execute_fenced(&MetaRequest::Commit(txn), Some(Fence { ino: 2, token }))
    }

    #[test]
    fn fencing_tokens() {
        let (_d, mut meta) = open_tmp();
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        assert_eq!(meta.max_fence(), Ok(0));
        fenced(&mut meta, file_row(2, 2), 1, 5).unwrap();
        // A lower token, at the right version: refused, saying why.
        let err = fenced(&mut meta, file_row(2, 3), 2, 4).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Conflict);
        assert!(err.message.contains("fencing token 5") && err.message.contains("meta.db"), "{}", err.message);
        assert!(!err.message.contains("0123456789abcdef"), "object id leaked: {}", err.message);
        // Equal and higher are accepted; 0 is never checked and leaves the fence.
        fenced(&mut meta, file_row(2, 3), 2, 5).unwrap();
        fenced(&mut meta, file_row(2, 4), 3, 9).unwrap();
        fenced(&mut meta, file_row(2, 5), 4, 0).unwrap();
        commit(&mut meta, vec![TxnOp::UpdateInode { row: file_row(2, 6), expect_version: 5 }]).unwrap();
        assert_eq!(fenced(&mut meta, file_row(2, 7), 6, 8).unwrap_err().kind, IoErrorKind::Conflict);
        assert_eq!(meta.max_fence(), Ok(9));
        // A stale version with a good token is the usual version conflict.
        let err = fenced(&mut meta, file_row(2, 7), 5, 10).unwrap_err();
        assert!(err.message.contains("not at version 5"), "{}", err.message);
        assert_eq!(load(&mut meta, 2).unwrap().row.version, 6);
    }

    /// A database of schema version 1 (before fencing tokens) gets the column, every row at 0.
    #[test]
    fn version_1_databases_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0]).unwrap();
            insert_root(&tx).unwrap();
            tx.execute("UPDATE schema SET version = 1", []).unwrap();
            tx.commit().unwrap();
        }
        let mut meta = SqliteMeta::open(&path).unwrap();
        let v: i64 = meta.conn.query_row("SELECT version FROM schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 2);
        let fence: i64 = meta.conn.query_row("SELECT fence FROM inodes WHERE ino = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(fence, 0);
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        fenced(&mut meta, file_row(2, 2), 1, 3).unwrap();
        assert_eq!(meta.max_fence(), Ok(3));
    }

    #[test]
    fn garbage_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, "this is not a database, just some text\n".repeat(200)).unwrap();
        let err = SqliteMeta::open(&path).err().expect("must refuse");
        assert!(matches!(err, MetaOpenError::NotMetadata { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.db"), "{err}");

        // A valid SQLite database of some other program.
        let other = dir.path().join("other.db");
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        let err = SqliteMeta::open(&other).err().expect("must refuse");
        assert!(matches!(err, MetaOpenError::NotMetadata { .. }), "{err:?}");
        assert!(err.to_string().contains("other.db"), "{err}");

        // A path in a missing directory.
        let err = SqliteMeta::open(&dir.path().join("no/such/meta.db")).err().expect("must fail");
        assert!(err.to_string().contains("no/such/meta.db"), "{err}");

        // An empty file is an empty database: it is initialized.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, "").unwrap();
        let mut meta = SqliteMeta::open(&empty).unwrap();
        assert!(load(&mut meta, ROOT_INO).is_some());
    }

    #[test]
    fn referenced_objects_are_those_of_the_rows_and_a_bad_one_fails() {
        let (_dir, mut meta) = open_tmp();
        let mut other = file_row(3, 1);
        other.object = Some(ObjectId("fedcba".into()));
        let mut none = file_row(4, 1);
        none.object = None;
        let ops = [file_row(2, 1), other, none].into_iter().map(TxnOp::InsertInode).collect();
        commit(&mut meta, ops).unwrap();
        let want: HashSet<String> = ["0123456789abcdef0123456789abcdef".to_string(), "fedcba".to_string()].into();
        assert_eq!(meta.referenced_objects().unwrap(), want);
        // A value that cannot be read: no set at all (one without it would let its object go).
        meta.conn.execute_batch("UPDATE inodes SET object = x'00ff' WHERE ino = 3").unwrap();
        assert_eq!(meta.referenced_objects().unwrap_err().kind, IoErrorKind::Other);
    }

    #[test]
    fn bad_rows_are_corrupt_not_panics() {
        let (dir, mut meta) = open_tmp();
        commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1)), TxnOp::InsertDentry(dentry(1, b"f", 2, 3))])
            .unwrap();
        // The store holds its database exclusively: corrupt rows through its own connection.
        let _ = &dir;
        let cases = [
            "UPDATE inodes SET kind = 42 WHERE ino = 2",
            "UPDATE inodes SET size = -1 WHERE ino = 2",
            "UPDATE inodes SET mtime_nsec = 1000000000 WHERE ino = 2",
            "UPDATE inodes SET uid = 'bob' WHERE ino = 2",
            "UPDATE inodes SET perm = 65535 WHERE ino = 2",
            "UPDATE inodes SET object = x'00ff' WHERE ino = 2",
        ];
        for sql in cases {
            meta.conn.execute_batch(&format!("BEGIN; {sql};")).unwrap();
            meta.conn.execute_batch("COMMIT").unwrap();
            let err = meta.execute(&MetaRequest::LoadInode { ino: 2 }).unwrap_err();
            assert_eq!(err.kind, IoErrorKind::Corrupt, "{sql}");
            assert!(err.message.contains("inodes") && err.message.contains("ino 2"), "{}", err.message);
            let err = meta.execute(&MetaRequest::LoadDir { ino: 1 }).unwrap_err();
            assert_eq!(err.kind, IoErrorKind::Corrupt, "{sql}");
            // Put the row back.
            meta.conn.execute_batch("DELETE FROM inodes WHERE ino = 2").unwrap();
            commit(&mut meta, vec![TxnOp::InsertInode(file_row(2, 1))]).unwrap();
        }
        // A bad xattr row.
        meta.conn.execute_batch("INSERT INTO xattrs VALUES (2, 'text-name', x'00')").unwrap();
        let err = meta.execute(&MetaRequest::LoadInode { ino: 2 }).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Corrupt);
        assert!(err.message.contains("xattrs"), "{}", err.message);
        meta.conn.execute_batch("DELETE FROM xattrs").unwrap();
        // A dentry pointing to a missing inode.
        meta.conn.execute_batch("INSERT INTO dentries VALUES (9, 1, x'6768', 77)").unwrap();
        let err = meta.execute(&MetaRequest::LoadDir { ino: 1 }).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Corrupt);
        assert!(err.message.contains("dentries") && err.message.contains("77"), "{}", err.message);
        // Orphan listing with a bad row.
        meta.conn.execute_batch("UPDATE inodes SET nlink = 0, kind = 0 WHERE ino = 2").unwrap();
        assert_eq!(meta.execute(&MetaRequest::ListOrphans).unwrap_err().kind, IoErrorKind::Corrupt);
    }

    /// Not a benchmark, but catches a hot path that re-prepares or syncs: thousands of small
    /// transactions must take well under a second each thousand.
    #[test]
    fn many_small_transactions() {
        let (_d, mut meta) = open_tmp();
        let start = std::time::Instant::now();
        let n = 2000u64;
        for i in 0..n {
            let ino = 10 + i;
            commit(
                &mut meta,
                vec![TxnOp::InsertInode(file_row(ino, 1)), TxnOp::InsertDentry(dentry(1, b"x", ino, ino))],
            )
            .unwrap();
            commit(
                &mut meta,
                vec![
                    TxnOp::DeleteDentry { parent: 1, name: b"x".to_vec(), ino },
                    TxnOp::UpdateInode { row: file_row(ino, 2), expect_version: 1 },
                ],
            )
            .unwrap();
        }
        let per_sec = (2 * n) as f64 / start.elapsed().as_secs_f64();
        eprintln!("{per_sec:.0} transactions/s");
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
