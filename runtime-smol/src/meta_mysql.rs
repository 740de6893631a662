//! The MySQL/MariaDB metadata store: executes the core's [`MetaRequest`]s against a database on a
//! SQL server shared by every host that mounts the filesystem.
//!
//! Same tables, same semantics as the embedded store ([`crate::meta_sqlite`]): one conformance
//! suite (`runtime-sim/tests/meta_conformance.rs`) runs against both and the simulator's store.
//!
//! # Tokio stays in here
//! `mysql_async` runs on Tokio. A [`MysqlMeta`] owns one thread (`truckeefs-mysql`) with a
//! current-thread Tokio runtime and one connection; [`MysqlMeta::execute`] hands it the request
//! over a channel and blocks for the answer. Nothing of Tokio appears in this module's API, and
//! `execute` may be called from any thread, inside any executor (smol's included).
//!
//! # Transactions and concurrency
//! Every `Commit` is one InnoDB transaction (`START TRANSACTION` ... `COMMIT`): all or nothing; on
//! the first failing op the transaction is rolled back. Concurrency between hosts is optimistic:
//! `UPDATE inodes ... WHERE ino = ? AND version = ?` changing no row, a duplicate `(parent, name)`
//! or `pos`, or a deadlock the server broke by rolling us back, are all `Conflict`; the core then
//! re-reads and retries. InnoDB row locks make two concurrent updates of one version serialise:
//! the second waits for the first to commit, then finds the version changed. The session uses
//! `CLIENT_FOUND_ROWS`, so an update that matches its row but leaves it unchanged still counts
//! (as in SQLite). `AllocIds` is one statement (`UPDATE ... SET value = LAST_INSERT_ID(value + n)`),
//! atomic across hosts. Reads are single statements (joins), so each sees one consistent snapshot.
//! The commit of an uploaded object carries the fencing token of the host's upload lease
//! ([`Fence`]): its update adds `AND fence <= token` and sets `fence = token`, so a host paused past
//! its lease cannot overwrite a version committed under a later one (a `Conflict` as above); token
//! 0 (no coordination server, hence no leases) is not checked and leaves the column alone.
//!
//! # Durability
//! With InnoDB's default `innodb_flush_log_at_trx_commit = 1` every `COMMIT` is on disk when the
//! server acknowledges it, so a `durable` transaction needs nothing more (and an empty durable
//! transaction has nothing to wait for). `open` warns in the log when the server is set otherwise.
//!
//! # Outages
//! A request that finds the connection broken, or the server unreachable, fails with
//! `IoErrorKind::Other` (the core answers EIO); the next request connects again. A connection
//! found dead by the first statement of a request (the server restarted while we were idle) is
//! replaced and the request retried once, since nothing of it can have taken effect; a `COMMIT`
//! lost in flight is never retried: its outcome is found out instead (below). A request taking
//! longer than [`MysqlConfig::timeout`] fails with `Timeout` and its connection is dropped (the
//! server rolls back whatever it left open).
//!
//! # Commits in doubt
//! A `COMMIT` whose answer never comes (the connection breaks, or the request times out) may have
//! happened or not. A `durable` transaction (an upload's commit, an fsync's) therefore also sets
//! this store's own row of `counters` (`commit/` and 96 random bits, inserted at open and deleted
//! at close) to a number it never used before, in the round trip of its `START TRANSACTION`.
//! When its answer is lost, the store connects again, ends the old session (`KILL CONNECTION`)
//! and reads that row with a locking read, which waits until the old transaction has ended one
//! way or the other: the number says whether it committed. The core gets the true outcome,
//! success or a failure that changed nothing, rather than a failure that may hide a commit. Only
//! if that cannot be found out within another [`MysqlConfig::timeout`] (the server stays away)
//! does the request fail in doubt, as other transactions do; the core reads their rows again
//! after any failure. (The marker is one more statement: on every transaction it cost about a
//! fifth of the create rate.) A store that crashes leaves its row behind (some 40 bytes).
//!
//! # Secrets
//! Errors name the server as `host:port/db`. The password is never printed (`MysqlConfig`'s
//! `Debug` masks it) and object ids appear only as [`ObjectId::fingerprint`]s.
//!
//! # Differences from SQLite
//! MySQL's columns are typed: names (dentries and xattrs) are `VARBINARY(255)` — the core never
//! sends longer ones (`NAME_MAX`, `XATTR_NAME_MAX`) — and xattr values `MEDIUMBLOB`. Integer
//! columns are as wide as the Rust fields (`SMALLINT UNSIGNED` for `perm`, `INT UNSIGNED` for
//! uids, nlink and nanoseconds), so everything the core can hand us is stored exactly as SQLite
//! stores it, and refused (`Other`) exactly where SQLite refuses it (u64 beyond i64).

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, SslOpts, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use crate::backends::Fence;
use truckeefs_core::{
    DentryRow, FileKind, InodeRow, IoError, IoErrorKind, IoReply, IoResult, LoadedInode, MetaRequest, ObjectId,
    Timespec, Txn, TxnOp, ROOT_INO,
};

/// The schema version this build writes and understands (the same numbering as SQLite's).
pub const SCHEMA_VERSION: u32 = 2;

/// The tables of the schema, in the order they are created.
const TABLES: &[&str] = &["schema", "counters", "inodes", "dentries", "xattrs"];

/// `MIGRATIONS[v]` takes a database from schema version `v` to `v + 1`. MySQL commits DDL
/// implicitly, so a step cannot be one transaction as in SQLite: each statement is idempotent
/// instead, and a step interrupted half-way (a crash, a lost connection) is simply run again by the
/// next `open` (the version is bumped last). Concurrent `open`s on several hosts are serialised by
/// a named lock (`GET_LOCK`). Never edit a released step; append one and bump [`SCHEMA_VERSION`].
const MIGRATIONS: &[&[&str]] = &[
    // 0 -> 1: the first schema (the `schema` table itself exists already; see `migrate`).
    &[
        "CREATE TABLE IF NOT EXISTS counters(
             name VARBINARY(32) NOT NULL PRIMARY KEY,
             value BIGINT NOT NULL) ENGINE=InnoDB",
        "INSERT IGNORE INTO counters(name, value) VALUES ('next_id', 2)",
        "CREATE TABLE IF NOT EXISTS inodes(
             ino BIGINT NOT NULL PRIMARY KEY,
             kind TINYINT UNSIGNED NOT NULL,
             perm SMALLINT UNSIGNED NOT NULL,
             uid INT UNSIGNED NOT NULL,
             gid INT UNSIGNED NOT NULL,
             nlink INT UNSIGNED NOT NULL,
             size BIGINT NOT NULL,
             atime_sec BIGINT NOT NULL, atime_nsec INT UNSIGNED NOT NULL,
             mtime_sec BIGINT NOT NULL, mtime_nsec INT UNSIGNED NOT NULL,
             ctime_sec BIGINT NOT NULL, ctime_nsec INT UNSIGNED NOT NULL,
             rdev INT UNSIGNED NOT NULL,
             version BIGINT NOT NULL,
             object BLOB NULL,
             target BLOB NULL,
             -- Orphans (nlink = 0) are looked up at start.
             KEY inodes_orphans (nlink)) ENGINE=InnoDB",
        // pos is the primary key: ids come from next_id, so they are unique across directories.
        "CREATE TABLE IF NOT EXISTS dentries(
             pos BIGINT NOT NULL PRIMARY KEY,
             parent BIGINT NOT NULL,
             name VARBINARY(255) NOT NULL,
             ino BIGINT NOT NULL,
             UNIQUE KEY dentries_name (parent, name),
             -- A directory's parent, for the check that refuses moving a directory into itself.
             KEY dentries_ino (ino)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS xattrs(
             ino BIGINT NOT NULL,
             name VARBINARY(255) NOT NULL,
             value MEDIUMBLOB NOT NULL,
             PRIMARY KEY (ino, name)) ENGINE=InnoDB",
        // The root directory is inserted by `migrate` (it needs the owner and the time).
    ],
    // 1 -> 2: the fencing token of the last upload lease that committed the row (see
    // `backends::Fence`), and an index for `max_fence`. MySQL has no `ADD COLUMN IF NOT EXISTS`
    // (MariaDB has): a step run again after an interruption finds the column or the index there
    // (errors 1060 and 1061), which `migrate_locked` takes as done.
    &[
        "ALTER TABLE inodes ADD COLUMN fence BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE inodes ADD KEY inodes_fence (fence)",
    ],
];

/// Where the metadata lives. `Debug` never shows the password.
#[derive(Clone)]
pub struct MysqlConfig {
    /// Host name or address of the server.
    pub host: String,
    pub port: u16,
    /// The database (created if missing and the user may). Letters, digits, `_`, `$` and `-`.
    pub db: String,
    pub user: String,
    pub password: String,
    /// Require TLS, verifying the server's certificate against the system's roots.
    pub ssl: bool,
    /// How long one request (or one connection attempt) may take before it fails with `Timeout`.
    pub timeout: Duration,
}

impl Default for MysqlConfig {
    fn default() -> MysqlConfig {
        MysqlConfig {
            host: "localhost".into(),
            port: 3306,
            db: "truckeefs".into(),
            user: "truckeefs".into(),
            password: String::new(),
            ssl: false,
            timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { "***" })
            .field("ssl", &self.ssl)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl MysqlConfig {
    /// The server as errors name it: `host:port/db` (`[v6addr]:port/db`).
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            format!("{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// Why the metadata database could not be opened. Each message is one line naming the server as
/// `host:port/db`; none contains the password.
#[derive(Debug, thiserror::Error)]
pub enum MysqlOpenError {
    #[error("{server}: metadata schema version {found} is newer than this truckeefs supports ({supported}); upgrade truckeefs")]
    NewerSchema { server: String, found: i64, supported: u32 },
    #[error("{server}: not a usable truckeefs metadata database: {reason}")]
    NotMetadata { server: String, reason: String },
    #[error("{server}: access denied for user {user:?} (check the user name and password): {message}")]
    AccessDenied { server: String, user: String, message: String },
    #[error("{server}: cannot connect to the metadata server: {message}")]
    Connect { server: String, message: String },
    #[error("{server}: bad metadata server configuration: {reason}")]
    Config { server: String, reason: String },
    #[error("{server}: {message}")]
    Sql { server: String, message: String },
}

/// What the worker thread does: one of the core's requests, or a query of the runtime's own.
enum Job {
    /// With the fencing token its commit checks, if any.
    Meta(MetaRequest, Option<Fence>),
    /// The highest fencing token of any inode row.
    MaxFence,
    /// Every entry naming an inode, as `(parent, name)`.
    Names(u64),
}

enum JobReply {
    Meta(IoReply),
    Names(Vec<(u64, Vec<u8>)>),
    MaxFence(u64),
}

/// The MySQL/MariaDB metadata store: a handle on its worker thread.
pub struct MysqlMeta {
    server: String,
    jobs: Option<mpsc::Sender<Job>>,
    replies: mpsc::Receiver<(Result<JobReply, IoError>, bool)>,
    thread: Option<JoinHandle<()>>,
    /// The last request was a transaction that failed with its outcome unknown.
    in_doubt: bool,
    /// This host's claim on the database, when it mounts it ([`MysqlMeta::claim`]).
    claim: Option<crate::meta_presence::Claim>,
}

impl fmt::Debug for MysqlMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlMeta").field("server", &self.server).finish_non_exhaustive()
    }
}

impl MysqlMeta {
    /// Connects, creates the database and its tables if missing, and brings the schema up to
    /// date. A database with a newer schema is refused and left untouched.
    pub fn open(config: &MysqlConfig) -> Result<MysqlMeta, MysqlOpenError> {
        let server = config.server();
        check_db_name(config).map_err(|reason| MysqlOpenError::Config { server: server.clone(), reason })?;
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (reply_tx, reply_rx) = mpsc::channel::<(Result<JobReply, IoError>, bool)>();
        let (open_tx, open_rx) = mpsc::channel::<Result<(), MysqlOpenError>>();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("truckeefs-mysql".into())
            .spawn(move || worker(config, job_rx, reply_tx, open_tx))
            .map_err(|e| MysqlOpenError::Sql {
                server: server.clone(),
                message: format!("cannot start the metadata thread: {e}"),
            })?;
        match open_rx.recv() {
            Ok(Ok(())) => Ok(MysqlMeta {
                server,
                jobs: Some(job_tx),
                replies: reply_rx,
                thread: Some(thread),
                claim: None,
                in_doubt: false,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(MysqlOpenError::Sql { server, message: "the metadata thread stopped while opening".into() })
            }
        }
    }

    /// The server as errors name it (`host:port/db`).
    /// Claims the database for this host until the store is dropped: `shared` when the host
    /// coordinates with others through Redis; without, it must be the only host (see
    /// [`crate::meta_presence`]). The error, one line naming the server, says who is in the way.
    pub fn claim(&mut self, config: &MysqlConfig, shared: bool) -> Result<(), String> {
        self.claim = Some(crate::meta_presence::Claim::take(config, shared)?);
        Ok(())
    }

    /// Lets go of this host's claim (as dropping the store does), saying whether it went
    /// cleanly.
    pub fn release_claim(&mut self) -> Result<(), String> {
        self.claim.take().map_or(Ok(()), |c| c.release())
    }

    /// For `status`: this host's claim on the database, if it holds one.
    pub fn claim_text(&self) -> Option<&'static str> {
        self.claim.as_ref().map(|c| c.describe())
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Executes one request; see the documentation of [`MetaRequest`] for each reply.
    pub fn execute(&mut self, req: &MetaRequest) -> IoResult {
        self.execute_fenced(req, None)
    }

    /// [`MysqlMeta::execute`]; a `Commit` also checks and sets the row fence of `fence.ino`
    /// (see [`Fence`]). Other requests ignore `fence`.
    pub fn execute_fenced(&mut self, req: &MetaRequest, fence: Option<Fence>) -> IoResult {
        match self.job(Job::Meta(req.clone(), fence))? {
            JobReply::Meta(reply) => Ok(reply),
            _ => Err(IoError::new(IoErrorKind::Other, "metadata thread: mismatched reply")),
        }
    }

    /// Whether the last request was a transaction that failed with its outcome unknown (its
    /// answer lost, and not settled): it may have committed.
    pub fn last_in_doubt(&self) -> bool {
        self.in_doubt
    }

    /// The highest fencing token of any inode row (0 if none): a coordination server that lost
    /// its counter starts again above it.
    pub fn max_fence(&mut self) -> Result<u64, IoError> {
        match self.job(Job::MaxFence)? {
            JobReply::MaxFence(v) => Ok(v),
            _ => Err(IoError::new(IoErrorKind::Other, "metadata thread: mismatched reply")),
        }
    }

    /// Every entry naming `ino`, as `(parent, name)`.
    pub fn names(&mut self, ino: u64) -> Result<Vec<(u64, Vec<u8>)>, IoError> {
        match self.job(Job::Names(ino))? {
            JobReply::Names(names) => Ok(names),
            _ => Err(IoError::new(IoErrorKind::Other, "metadata thread: mismatched reply")),
        }
    }

    fn job(&mut self, job: Job) -> Result<JobReply, IoError> {
        let stopped = || IoError::new(IoErrorKind::Other, format!("{}: the metadata thread stopped", self.server));
        self.in_doubt = false;
        let Some(jobs) = &self.jobs else { return Err(stopped()) };
        if jobs.send(job).is_err() {
            return Err(stopped());
        }
        let (reply, in_doubt) = self.replies.recv().unwrap_or_else(|_| (Err(stopped()), false));
        self.in_doubt = in_doubt;
        reply
    }
}

impl Drop for MysqlMeta {
    fn drop(&mut self) {
        // Closing the channel ends the worker, which closes its connection (bounded by its timeout).
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The worker thread: opens the store, reports, then serves requests until the channel closes.
fn worker(
    config: MysqlConfig,
    jobs: mpsc::Receiver<Job>,
    replies: mpsc::Sender<(Result<JobReply, IoError>, bool)>,
    opened: mpsc::Sender<Result<(), MysqlOpenError>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = opened.send(Err(MysqlOpenError::Sql {
                server: config.server(),
                message: format!("cannot start the metadata runtime: {e}"),
            }));
            return;
        }
    };
    let mut store = match rt.block_on(Store::open(&config)) {
        Ok(store) => store,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    drop(config);
    if opened.send(Ok(())).is_err() {
        return;
    }
    for req in jobs {
        store.in_doubt = false;
        let reply = rt.block_on(store.execute(&req));
        if replies.send((reply, store.in_doubt)).is_err() {
            break;
        }
    }
    rt.block_on(store.close());
}

/// The inode columns, in the order [`decode_inode`] reads them.
const INODE_COLS: &str = "ino, kind, perm, uid, gid, nlink, size, atime_sec, atime_nsec, mtime_sec, mtime_nsec, \
     ctime_sec, ctime_nsec, rdev, version, object, target";
/// How many they are.
const N_INODE_COLS: usize = 17;

/// An inode with its parent (for a directory) and its xattrs, one row per xattr: one statement, so
/// one snapshot. The parent is the entry with the smallest position, as in the other stores.
const SQL_LOAD_INODE: &str = "SELECT i.ino, i.kind, i.perm, i.uid, i.gid, i.nlink, i.size, i.atime_sec, \
     i.atime_nsec, i.mtime_sec, i.mtime_nsec, i.ctime_sec, i.ctime_nsec, i.rdev, i.version, i.object, i.target, \
     (SELECT d.parent FROM dentries d WHERE d.ino = i.ino ORDER BY d.pos LIMIT 1), x.name, x.value \
     FROM inodes i LEFT JOIN xattrs x ON x.ino = i.ino WHERE i.ino = ?";
/// Every entry of a directory with its inode and xattrs, one row per xattr, by position. LEFT JOIN
/// so a dentry whose inode is gone is reported, not silently dropped.
const SQL_LOAD_DIR: &str = "SELECT d.pos, d.name, d.ino, i.ino, i.kind, i.perm, i.uid, i.gid, i.nlink, i.size, \
     i.atime_sec, i.atime_nsec, i.mtime_sec, i.mtime_nsec, i.ctime_sec, i.ctime_nsec, i.rdev, i.version, \
     i.object, i.target, x.name, x.value \
     FROM dentries d LEFT JOIN inodes i ON i.ino = d.ino LEFT JOIN xattrs x ON x.ino = d.ino \
     WHERE d.parent = ? ORDER BY d.pos";
const SQL_INSERT_INODE: &str = "INSERT INTO inodes (ino, kind, perm, uid, gid, nlink, size, atime_sec, atime_nsec, \
     mtime_sec, mtime_nsec, ctime_sec, ctime_nsec, rdev, version, object, target) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const SQL_UPDATE_INODE: &str = "UPDATE inodes SET kind = ?, perm = ?, uid = ?, gid = ?, nlink = ?, size = ?, \
     atime_sec = ?, atime_nsec = ?, mtime_sec = ?, mtime_nsec = ?, ctime_sec = ?, ctime_nsec = ?, rdev = ?, \
     version = ?, object = ?, target = ? WHERE ino = ? AND version = ?";
/// [`SQL_UPDATE_INODE`] with the fencing token of an upload lease: the row must not carry a later
/// one, and carries this one afterwards.
const SQL_UPDATE_INODE_FENCED: &str = "UPDATE inodes SET kind = ?, perm = ?, uid = ?, gid = ?, nlink = ?, size = ?, \
     atime_sec = ?, atime_nsec = ?, mtime_sec = ?, mtime_nsec = ?, ctime_sec = ?, ctime_nsec = ?, rdev = ?, \
     version = ?, object = ?, target = ?, fence = ? WHERE ino = ? AND version = ? AND fence <= ?";
/// One statement, so atomic on its own; the bound keeps `value + n` from overflowing. The new value
/// comes back in the OK packet's last-insert-id.
const SQL_ALLOC_IDS: &str = "UPDATE counters SET value = LAST_INSERT_ID(value + ?) \
     WHERE name = 'next_id' AND value >= 0 AND value <= 9223372036854775807 - ?";

/// Session settings of every connection: strict typing (an over-long or out-of-range value is an
/// error, never silently truncated), no engine other than InnoDB, and lock waits that end (with a
/// clean error) before our own request timeout.
fn session_init(timeout: Duration) -> Vec<String> {
    let lock_wait = (timeout.as_secs() / 2).max(1);
    vec![
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO'".into(),
        format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}"),
        "SET SESSION autocommit = 1".into(),
    ]
}

/// How a request failed.
enum Fail {
    /// The server answered: reply with this error; the connection stays.
    Reply(IoError),
    /// Reply with this error, but the connection is in doubt: drop it.
    ReplyAndReset(IoError),
    /// The connection broke. `retry` when repeating the request on a new connection is safe:
    /// nothing of it took effect, or repeating it is harmless (never a `COMMIT` in flight).
    Lost { message: String, retry: bool },
    /// The connection broke while a `COMMIT` was in flight: it may have happened.
    InDoubt { message: String },
}

impl From<IoError> for Fail {
    fn from(e: IoError) -> Fail {
        Fail::Reply(e)
    }
}

/// The connection owner, on the worker thread.
struct Store {
    opts: Opts,
    server: String,
    timeout: Duration,
    conn: Option<Conn>,
    /// This store's row of `counters`, set by each of its transactions (see the module docs).
    marker: String,
    /// The number the last transaction set it to.
    seq: u64,
    /// The last request failed with its outcome unknown (see [`MysqlMeta::last_in_doubt`]).
    in_doubt: bool,
}

/// What a transaction sets its store's marker row to (see the module docs).
#[derive(Clone, Copy)]
struct Marker<'a> {
    name: &'a str,
    seq: u64,
}

/// A fresh name for a store's marker row: `commit/` and 96 random bits in hex.
fn new_marker() -> std::io::Result<String> {
    Ok(format!("commit/{}", crate::objects::random_hex(12)?))
}

impl Store {
    async fn open(config: &MysqlConfig) -> Result<Store, MysqlOpenError> {
        let server = config.server();
        let opts = build_opts(config, true);
        let mut conn = match connect_for_open(config, opts.clone()).await {
            Err(OpenConnError::UnknownDb) => {
                create_database(config).await?;
                connect_for_open(config, opts.clone()).await.map_err(|e| e.into_open_error(config))?
            }
            r => r.map_err(|e| e.into_open_error(config))?,
        };
        // Creating the tables may wait for another host doing the same (a named lock, 60 s).
        let budget = config.timeout * 4 + Duration::from_secs(60);
        match tokio::time::timeout(budget, migrate(&mut conn, &server)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(MysqlOpenError::Connect {
                    server,
                    message: format!("no answer within {budget:?} while preparing the database"),
                })
            }
        }
        let flush: Option<Value> = conn.query_first("SELECT @@innodb_flush_log_at_trx_commit").await.map_err(|e| {
            MysqlOpenError::Sql { server: server.clone(), message: format!("while preparing the database: {e}") }
        })?;
        if flush.as_ref().and_then(value_i64) != Some(1) {
            tracing::warn!(
                server = %server,
                "innodb_flush_log_at_trx_commit is not 1: commits (fsync included) may be lost if the server loses power"
            );
        }
        let marker = new_marker()
            .map_err(|e| MysqlOpenError::Sql { server: server.clone(), message: format!("/dev/urandom: {e}") })?;
        conn.exec_drop("INSERT INTO counters(name, value) VALUES (?, 0)", (marker.as_bytes(),)).await.map_err(|e| {
            MysqlOpenError::Sql { server: server.clone(), message: format!("while preparing the database: {e}") }
        })?;
        Ok(Store { opts, server, timeout: config.timeout, conn: Some(conn), marker, seq: 0, in_doubt: false })
    }

    async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let bye = async {
                let _ = conn.exec_drop("DELETE FROM counters WHERE name = ?", (self.marker.as_bytes(),)).await;
                let _ = conn.disconnect().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
        }
    }

    async fn execute(&mut self, req: &Job) -> Result<JobReply, IoError> {
        let mut retried = false;
        let marker = match req {
            Job::Meta(MetaRequest::Commit(txn), _) if txn.durable && !txn.ops.is_empty() => {
                self.seq += 1;
                Some(self.seq)
            }
            _ => None,
        };
        loop {
            let reused = self.conn.is_some();
            let conn = match self.conn.as_mut() {
                Some(conn) => conn,
                None => {
                    let conn = self.connect().await?;
                    self.conn.insert(conn)
                }
            };
            let conn_id = conn.id();
            let mark = marker.map(|seq| Marker { name: &self.marker, seq });
            let outcome = tokio::time::timeout(self.timeout, run(conn, &self.server, req, mark)).await;
            match outcome {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(Fail::Reply(e))) => return Err(e),
                Ok(Err(Fail::ReplyAndReset(e))) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(Err(Fail::Lost { message, retry })) => {
                    self.conn = None;
                    if retry && reused && !retried {
                        // The connection died while we were idle (a server restart, an idle
                        // timeout): nothing of the request happened; try once on a new one.
                        tracing::info!(server = %self.server, "metadata connection lost ({message}); reconnecting");
                        retried = true;
                        continue;
                    }
                    return Err(IoError::new(
                        IoErrorKind::Other,
                        format!("{}: connection to the metadata server lost: {message}", self.server),
                    ));
                }
                Ok(Err(Fail::InDoubt { message })) => {
                    self.conn = None;
                    let why = format!("connection to the metadata server lost: {message}");
                    return match marker {
                        Some(seq) => self.settle(conn_id, seq, IoErrorKind::Other, why).await,
                        None => {
                            self.in_doubt = true;
                            Err(IoError::new(
                                IoErrorKind::Other,
                                format!("{}: {why}; the transaction may have committed", self.server),
                            ))
                        }
                    };
                }
                Err(_) => {
                    // The connection is somewhere in the middle of a request: unusable.
                    self.conn = None;
                    if let Some(seq) = marker {
                        let why = format!("no answer from the metadata server within {:?}", self.timeout);
                        return self.settle(conn_id, seq, IoErrorKind::Timeout, why).await;
                    }
                    // A transaction cut off anywhere may have reached its `COMMIT`.
                    self.in_doubt = matches!(req, Job::Meta(MetaRequest::Commit(txn), _) if !txn.ops.is_empty());
                    return Err(IoError::new(
                        IoErrorKind::Timeout,
                        format!("{}: no answer from the metadata server within {:?}", self.server, self.timeout),
                    ));
                }
            }
        }
    }

    /// A transaction whose answer was lost (`why`) on connection `old`: finds out whether it
    /// committed (see the module docs), within the request timeout. If not, or if that cannot be
    /// found out, it fails with `kind`.
    async fn settle(&mut self, old: u32, seq: u64, kind: IoErrorKind, why: String) -> Result<JobReply, IoError> {
        let server = self.server.clone();
        let found = match tokio::time::timeout(self.timeout, self.committed(old, seq)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match found {
            Ok(true) => {
                tracing::info!(server = %server, "{why}; the transaction had committed");
                Ok(JobReply::Meta(IoReply::Done))
            }
            Ok(false) => Err(IoError::new(kind, format!("{server}: {why}; the transaction did not commit"))),
            Err(e) => {
                self.conn = None;
                self.in_doubt = true;
                Err(IoError::new(
                    kind,
                    format!("{server}: {why}; whether the transaction committed is unknown ({e})"),
                ))
            }
        }
    }

    /// Whether the transaction that set this store's marker to `seq` on connection `old` committed.
    async fn committed(&mut self, old: u32, seq: u64) -> Result<bool, String> {
        let mut conn = self.connect().await.map_err(|e| e.message)?;
        // Gone already (error 1094) or ended now: either way its transaction ends, and the locking
        // read below waits for that.
        let _ = conn.query_drop(format!("KILL CONNECTION {old}")).await;
        let value: Option<Value> = conn
            .exec_first("SELECT value FROM counters WHERE name = ? LOCK IN SHARE MODE", (self.marker.as_bytes(),))
            .await
            .map_err(|e| describe(&e))?;
        self.conn = Some(conn);
        match value.as_ref().and_then(value_i64) {
            Some(v) => Ok(v == seq as i64),
            None => Err(format!("the row counters.{} is gone", self.marker)),
        }
    }

    async fn connect(&self) -> Result<Conn, IoError> {
        match tokio::time::timeout(self.timeout, Conn::new(self.opts.clone())).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(IoError::new(
                IoErrorKind::Other,
                format!("{}: cannot connect to the metadata server: {}", self.server, describe(&e)),
            )),
            Err(_) => Err(IoError::new(
                IoErrorKind::Timeout,
                format!("{}: cannot connect to the metadata server: no answer within {:?}", self.server, self.timeout),
            )),
        }
    }
}

pub(crate) fn build_opts(config: &MysqlConfig, with_db: bool) -> Opts {
    let mut b = OptsBuilder::default()
        .ip_or_hostname(config.host.clone())
        .tcp_port(config.port)
        .user(Some(config.user.clone()))
        .pass(Some(config.password.clone()))
        .db_name(with_db.then(|| config.db.clone()))
        .client_found_rows(true)
        .stmt_cache_size(64)
        .tcp_nodelay(true)
        .init(session_init(config.timeout));
    if config.ssl {
        // TLS end to end: no switch to the server's unix socket behind our back.
        b = b.ssl_opts(SslOpts::default()).prefer_socket(false);
    }
    Opts::from(b)
}

fn check_db_name(config: &MysqlConfig) -> Result<(), String> {
    let ok = !config.db.is_empty()
        && config.db.len() <= 64
        && config.db.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "database name {:?}: use 1 to 64 letters, digits, '_', '$' or '-'",
            config.db.chars().take(80).collect::<String>()
        ))
    }
}

enum OpenConnError {
    UnknownDb,
    Denied(String),
    Failed(String),
    TimedOut(Duration),
}

impl OpenConnError {
    fn into_open_error(self, config: &MysqlConfig) -> MysqlOpenError {
        let server = config.server();
        match self {
            OpenConnError::UnknownDb => {
                MysqlOpenError::Sql { server, message: "the database does not exist and was not created".into() }
            }
            OpenConnError::Denied(message) => {
                MysqlOpenError::AccessDenied { server, user: config.user.clone(), message }
            }
            OpenConnError::Failed(message) => MysqlOpenError::Connect { server, message },
            OpenConnError::TimedOut(t) => {
                MysqlOpenError::Connect { server, message: format!("no answer within {t:?}") }
            }
        }
    }
}

async fn connect_for_open(config: &MysqlConfig, opts: Opts) -> Result<Conn, OpenConnError> {
    match tokio::time::timeout(config.timeout, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        // ER_BAD_DB_ERROR
        Ok(Err(mysql_async::Error::Server(e))) if e.code == 1049 => Err(OpenConnError::UnknownDb),
        // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR
        Ok(Err(mysql_async::Error::Server(e))) if e.code == 1045 || e.code == 1044 => {
            Err(OpenConnError::Denied(format!("{} (MySQL error {})", e.message, e.code)))
        }
        Ok(Err(e)) => Err(OpenConnError::Failed(describe(&e))),
        Err(_) => Err(OpenConnError::TimedOut(config.timeout)),
    }
}

/// Creates the database (the name is checked by [`check_db_name`], so quoting it is safe).
async fn create_database(config: &MysqlConfig) -> Result<(), MysqlOpenError> {
    let mut conn = connect_for_open(config, build_opts(config, false)).await.map_err(|e| e.into_open_error(config))?;
    let sql = format!("CREATE DATABASE IF NOT EXISTS `{}`", config.db);
    let r = tokio::time::timeout(config.timeout, conn.query_drop(sql)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
    match r {
        Ok(Ok(())) => {
            tracing::info!(server = %config.server(), "created the metadata database");
            Ok(())
        }
        Ok(Err(e)) => Err(MysqlOpenError::Sql {
            server: config.server(),
            message: format!("the database does not exist and cannot be created: {e}"),
        }),
        Err(_) => Err(MysqlOpenError::Connect {
            server: config.server(),
            message: format!("no answer within {:?} while creating the database", config.timeout),
        }),
    }
}

/// Reads the schema version: 0 when there is no `schema` table (a new database, or one a migration
/// step left half-done before it bumped the version).
async fn read_schema_version(conn: &mut Conn, server: &str) -> Result<(i64, Vec<String>), MysqlOpenError> {
    let sql_err = |e: mysql_async::Error| MysqlOpenError::Sql {
        server: server.to_string(),
        message: format!("cannot read the schema version: {e}"),
    };
    let tables: Vec<Value> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        .await
        .map_err(sql_err)?;
    let tables: Vec<String> =
        tables.iter().filter_map(value_bytes).map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    if !tables.iter().any(|t| t == "schema") {
        return Ok((0, tables));
    }
    // MAX so a (hand-edited) table with several rows still refuses rather than downgrades.
    let v: Option<Value> = conn.query_first("SELECT coalesce(max(version), 0) FROM `schema`").await.map_err(sql_err)?;
    let v = v.as_ref().and_then(value_i64).ok_or_else(|| MysqlOpenError::NotMetadata {
        server: server.to_string(),
        reason: "unreadable schema version".into(),
    })?;
    Ok((v, tables))
}

fn check_version(server: &str, found: i64) -> Result<(), MysqlOpenError> {
    if found > SCHEMA_VERSION as i64 {
        return Err(MysqlOpenError::NewerSchema { server: server.to_string(), found, supported: SCHEMA_VERSION });
    }
    if found < 0 {
        return Err(MysqlOpenError::NotMetadata {
            server: server.to_string(),
            reason: format!("bad schema version {found}"),
        });
    }
    Ok(())
}

/// Brings the schema up to date, holding a named lock so hosts opening at once take turns.
async fn migrate(conn: &mut Conn, server: &str) -> Result<(), MysqlOpenError> {
    debug_assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize, "one migration step per version");
    // Check the version before anything writes: a newer database is left untouched.
    let (found, _) = read_schema_version(conn, server).await?;
    check_version(server, found)?;
    if found == SCHEMA_VERSION as i64 {
        return Ok(());
    }
    let sql_err = |e: mysql_async::Error| MysqlOpenError::Sql {
        server: server.to_string(),
        message: format!("cannot create or upgrade the tables: {e}"),
    };
    let lock = "SELECT GET_LOCK(LEFT(CONCAT('truckeefs-schema:', DATABASE()), 64), 60)";
    let got: Option<Value> = conn.query_first(lock).await.map_err(sql_err)?;
    if got.as_ref().and_then(value_i64) != Some(1) {
        return Err(MysqlOpenError::Sql {
            server: server.to_string(),
            message: "another host has been upgrading the tables for a minute; try again".into(),
        });
    }
    let result = migrate_locked(conn, server).await;
    let _ = conn.query_drop("SELECT RELEASE_LOCK(LEFT(CONCAT('truckeefs-schema:', DATABASE()), 64))").await;
    result
}

async fn migrate_locked(conn: &mut Conn, server: &str) -> Result<(), MysqlOpenError> {
    let sql_err = |e: mysql_async::Error| MysqlOpenError::Sql {
        server: server.to_string(),
        message: format!("cannot create or upgrade the tables: {e}"),
    };
    loop {
        // Read again under the lock: another host may have migrated meanwhile.
        let (version, tables) = read_schema_version(conn, server).await?;
        check_version(server, version)?;
        let version = version as u32; // 0..=SCHEMA_VERSION: checked above
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version == 0 {
            let has_schema = tables.iter().any(|t| t == "schema");
            let foreign: Vec<&String> = tables.iter().filter(|t| !TABLES.contains(&t.as_str())).collect();
            if (!has_schema && !tables.is_empty()) || !foreign.is_empty() {
                return Err(MysqlOpenError::NotMetadata {
                    server: server.to_string(),
                    reason: format!("the database has {} tables but no truckeefs schema", tables.len()),
                });
            }
            conn.query_drop("CREATE TABLE IF NOT EXISTS `schema`(version INT NOT NULL) ENGINE=InnoDB")
                .await
                .map_err(sql_err)?;
            let rows: Option<Value> = conn.query_first("SELECT count(*) FROM `schema`").await.map_err(sql_err)?;
            if rows.as_ref().and_then(value_i64) == Some(0) {
                conn.query_drop("INSERT INTO `schema`(version) VALUES (0)").await.map_err(sql_err)?;
            }
        }
        for stmt in MIGRATIONS[version as usize] {
            match conn.query_drop(*stmt).await {
                // ER_DUP_FIELDNAME, ER_DUP_KEYNAME: an interrupted run of this step got this far.
                Err(mysql_async::Error::Server(e)) if e.code == 1060 || e.code == 1061 => {}
                r => r.map_err(sql_err)?,
            }
        }
        if version == 0 {
            insert_root(conn).await.map_err(sql_err)?;
        }
        check_engines(conn, server).await?;
        conn.exec_drop("UPDATE `schema` SET version = ?", (version + 1,)).await.map_err(sql_err)?;
        tracing::info!(server, version = version + 1, "metadata schema created or upgraded");
    }
}

/// Transactions need InnoDB: refuse tables someone created with another engine.
async fn check_engines(conn: &mut Conn, server: &str) -> Result<(), MysqlOpenError> {
    let rows: Vec<(Value, Value)> = conn
        .query("SELECT table_name, engine FROM information_schema.tables WHERE table_schema = DATABASE()")
        .await
        .map_err(|e| MysqlOpenError::Sql {
            server: server.to_string(),
            message: format!("cannot list the tables: {e}"),
        })?;
    for (name, engine) in rows {
        let engine = value_bytes(&engine).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        if !engine.eq_ignore_ascii_case("InnoDB") {
            let name = value_bytes(&name).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            return Err(MysqlOpenError::NotMetadata {
                server: server.to_string(),
                reason: format!("table {name} uses the {engine} engine; transactions need InnoDB"),
            });
        }
    }
    Ok(())
}

/// The root directory of a new filesystem, owned by whoever creates it.
async fn insert_root(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let now = Timespec::from_system(SystemTime::now());
    let sql = format!(
        "INSERT IGNORE INTO inodes ({INODE_COLS}) \
         VALUES (?, ?, 493, ?, ?, 2, 0, ?, ?, ?, ?, ?, ?, 0, 1, NULL, NULL)"
    );
    let params: Vec<Value> = vec![
        (ROOT_INO as i64).into(),
        (FileKind::Directory.code() as i64).into(),
        (uid as i64).into(),
        (gid as i64).into(),
        now.sec.into(),
        (now.nsec as i64).into(),
        now.sec.into(),
        (now.nsec as i64).into(),
        now.sec.into(),
        (now.nsec as i64).into(),
    ];
    conn.exec_drop(sql, params).await
}

/// Executes one request on `conn`.
async fn run(conn: &mut Conn, server: &str, job: &Job, marker: Option<Marker<'_>>) -> Result<JobReply, Fail> {
    let (req, fence) = match job {
        Job::Meta(req, fence) => (req, *fence),
        Job::Names(ino) => return names(conn, server, *ino).await.map(JobReply::Names),
        Job::MaxFence => return max_fence(conn, server).await.map(JobReply::MaxFence),
    };
    let reply = match req {
        MetaRequest::AllocIds { count } => alloc_ids(conn, server, *count).await,
        MetaRequest::LoadInode { ino } => load_inode(conn, server, *ino).await.map(IoReply::Inode),
        MetaRequest::LoadDir { ino } => load_dir(conn, server, *ino).await.map(IoReply::Dir),
        MetaRequest::Commit(txn) => commit(conn, server, txn, fence, marker).await.map(|()| IoReply::Done),
        MetaRequest::ListOrphans => list_orphans(conn, server).await,
        MetaRequest::Usage => usage(conn, server).await,
    };
    reply.map(JobReply::Meta)
}

async fn names(conn: &mut Conn, server: &str, ino: u64) -> Result<Vec<(u64, Vec<u8>)>, Fail> {
    let key = to_i64(server, ino, "ino")?;
    let rows: Vec<Row> =
        conn.exec("SELECT parent, name FROM dentries WHERE ino = ? ORDER BY pos", (key,)).await.map_err(|e| classify(server, e, true))?;
    rows.into_iter()
        .map(Row::unwrap)
        .map(|r| {
            let parent = r.first().and_then(value_i64).and_then(|p| u64::try_from(p).ok());
            let name = r.get(1).and_then(value_bytes);
            match (parent, name) {
                (Some(parent), Some(name)) => Ok((parent, name.to_vec())),
                _ => Err(Fail::Reply(IoError::new(
                    IoErrorKind::Corrupt,
                    format!("{server}: table dentries: a bad entry for inode {ino}"),
                ))),
            }
        })
        .collect()
}

async fn alloc_ids(conn: &mut Conn, server: &str, count: u64) -> Result<IoReply, Fail> {
    let n = to_i64(server, count, "id count")?;
    // Repeating this after a lost connection at worst skips ids, which is harmless.
    conn.exec_drop(SQL_ALLOC_IDS, (n, n)).await.map_err(|e| classify(server, e, true))?;
    let matched = conn.affected_rows();
    let next = conn.last_insert_id();
    match (matched, next) {
        // `next` is at least 2 + n: checked in the WHERE clause and the start value.
        (1, Some(next)) if next >= count => Ok(IoReply::Ids { first: next - count }),
        _ => Err(Fail::Reply(IoError::new(
            IoErrorKind::Corrupt,
            format!("{server}: table counters: next_id is missing, negative or exhausted"),
        ))),
    }
}

async fn load_inode(conn: &mut Conn, server: &str, ino: u64) -> Result<Option<LoadedInode>, Fail> {
    let key = to_i64(server, ino, "ino")?;
    let rows: Vec<Row> = conn.exec(SQL_LOAD_INODE, (key,)).await.map_err(|e| classify(server, e, true))?;
    let mut rows = rows.into_iter().map(Row::unwrap);
    let Some(first) = rows.next() else { return Ok(None) };
    let row = decode_inode(server, &first, 0)?;
    let mut xattrs = BTreeMap::new();
    add_xattr(server, row.ino, &first, N_INODE_COLS + 1, &mut xattrs)?;
    for r in rows {
        add_xattr(server, row.ino, &r, N_INODE_COLS + 1, &mut xattrs)?;
    }
    let parent = if row.kind == FileKind::Directory && row.ino != ROOT_INO {
        first.get(N_INODE_COLS).and_then(value_i64).and_then(|p| u64::try_from(p).ok())
    } else {
        None
    };
    Ok(Some(LoadedInode { row, xattrs, parent }))
}

async fn load_dir(conn: &mut Conn, server: &str, dir: u64) -> Result<Vec<(DentryRow, LoadedInode)>, Fail> {
    let key = to_i64(server, dir, "ino")?;
    let rows: Vec<Row> = conn.exec(SQL_LOAD_DIR, (key,)).await.map_err(|e| classify(server, e, true))?;
    let mut entries: Vec<(DentryRow, LoadedInode)> = Vec::new();
    let bad = |what: &str| {
        Fail::Reply(IoError::new(IoErrorKind::Corrupt, format!("{server}: table dentries, directory {dir}: {what}")))
    };
    for r in rows.into_iter().map(Row::unwrap) {
        let col = |i: usize| r.get(i).unwrap_or(&Value::NULL);
        let pos = value_i64(col(0)).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("bad pos"))?;
        // Further xattrs of the entry before.
        if let Some((d, inode)) = entries.last_mut() {
            if d.pos == pos {
                add_xattr(server, inode.row.ino, &r, 3 + N_INODE_COLS, &mut inode.xattrs)?;
                continue;
            }
        }
        let name = value_bytes(col(1)).ok_or_else(|| bad(&format!("entry at pos {pos}: bad name")))?.to_vec();
        let ino = value_i64(col(2))
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| bad(&format!("entry at pos {pos}: bad ino")))?;
        if matches!(col(3), Value::NULL) {
            return Err(bad(&format!(
                "entry {:?} (pos {pos}) points to missing inode {ino}",
                String::from_utf8_lossy(&name)
            )));
        }
        let row = decode_inode(server, &r, 3)?;
        let mut xattrs = BTreeMap::new();
        add_xattr(server, row.ino, &r, 3 + N_INODE_COLS, &mut xattrs)?;
        let dentry = DentryRow { parent: dir, name, ino, pos };
        entries.push((dentry, LoadedInode { row, xattrs, parent: Some(dir) }));
    }
    Ok(entries)
}

async fn list_orphans(conn: &mut Conn, server: &str) -> Result<IoReply, Fail> {
    let sql = format!("SELECT {INODE_COLS} FROM inodes WHERE nlink = 0 ORDER BY ino");
    let rows: Vec<Row> = conn.exec(sql, ()).await.map_err(|e| classify(server, e, true))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows.into_iter().map(Row::unwrap) {
        out.push(decode_inode(server, &r, 0)?);
    }
    Ok(IoReply::Orphans(out))
}

async fn usage(conn: &mut Conn, server: &str) -> Result<IoReply, Fail> {
    let regular = FileKind::Regular.code() as i64;
    let row: Option<Row> = conn
        .exec_first(
            "SELECT count(*), coalesce(sum(CASE WHEN kind = ? THEN size ELSE 0 END), 0) FROM inodes",
            (regular,),
        )
        .await
        .map_err(|e| classify(server, e, true))?;
    let values = row.map(Row::unwrap).unwrap_or_default();
    let files = values.first().and_then(value_i128);
    let bytes = values.get(1).and_then(value_i128);
    match (files, bytes) {
        // SQLite's integer sum fails beyond i64; so does ours, for the same answer.
        (Some(_), Some(b)) if b > i64::MAX as i128 => Err(Fail::Reply(IoError::new(
            IoErrorKind::Other,
            format!("{server}: table inodes: integer overflow in usage"),
        ))),
        (Some(f), Some(b)) if f >= 0 && b >= 0 => Ok(IoReply::Usage { files: f as u64, bytes: b as u64 }),
        _ => Err(Fail::Reply(IoError::new(
            IoErrorKind::Corrupt,
            format!("{server}: table inodes: negative sizes (usage {bytes:?})"),
        ))),
    }
}

/// Applies a transaction: all or nothing.
async fn max_fence(conn: &mut Conn, server: &str) -> Result<u64, Fail> {
    let v: Option<Value> =
        conn.query_first("SELECT coalesce(max(fence), 0) FROM inodes").await.map_err(|e| classify(server, e, true))?;
    Ok(v.as_ref().and_then(value_i64).unwrap_or(0).max(0) as u64)
}

async fn commit(
    conn: &mut Conn,
    server: &str,
    txn: &Txn,
    fence: Option<Fence>,
    marker: Option<Marker<'_>>,
) -> Result<(), Fail> {
    if txn.ops.is_empty() {
        // Nothing to change; and every earlier commit is already durable (see the module docs).
        return Ok(());
    }
    // A broken connection is found here, before anything was committed: safe to retry. The marker
    // goes in the same round trip (its name is hex, its number an integer). A server error after
    // the transaction started leaves it open: the connection goes.
    let begin = match marker {
        Some(m) => format!("START TRANSACTION; UPDATE counters SET value = {} WHERE name = '{}'", m.seq, m.name),
        None => "START TRANSACTION".to_string(),
    };
    conn.query_drop(begin).await.map_err(|e| match classify(server, e, true) {
        Fail::Reply(e) => Fail::ReplyAndReset(e),
        other => other,
    })?;
    for op in &txn.ops {
        if let Err(fail) = apply_op(conn, server, op, fence).await {
            let fail = scrub(fail, txn);
            return Err(match fail {
                Fail::Lost { message, .. } | Fail::InDoubt { message } => {
                    // The server rolls back what a dead connection left open; repeating the
                    // transaction on a new connection is safe (nothing was committed).
                    Fail::Lost { message, retry: true }
                }
                Fail::Reply(e) | Fail::ReplyAndReset(e) => match conn.query_drop("ROLLBACK").await {
                    Ok(()) => Fail::Reply(e),
                    // The connection died; the server rolls back what it left open.
                    Err(_) => Fail::ReplyAndReset(e),
                },
            });
        }
    }
    match conn.query_drop("COMMIT").await {
        Ok(()) => Ok(()),
        // Lost in flight: the transaction may or may not have committed. Never retried.
        Err(e) => Err(match scrub(classify(server, e, false), txn) {
            Fail::Lost { message, .. } => Fail::InDoubt { message },
            other => other,
        }),
    }
}

async fn apply_op(conn: &mut Conn, server: &str, op: &TxnOp, fence: Option<Fence>) -> Result<(), Fail> {
    let conflict = |msg: String| Fail::Reply(IoError::new(IoErrorKind::Conflict, format!("{server}: {msg}")));
    let err = |e| classify(server, e, true);
    match op {
        TxnOp::InsertInode(row) => {
            let params = encode_inode(server, row)?;
            match conn.exec_drop(SQL_INSERT_INODE, params).await {
                Err(e) if is_duplicate(&e) => Err(conflict(format!("table inodes: inode {} already exists", row.ino))),
                r => r.map_err(err),
            }
        }
        TxnOp::UpdateInode { row, expect_version } => {
            let mut params = encode_inode(server, row)?;
            let expect = to_i64(server, *expect_version, "version")?;
            // The fence applies to its own inode only; token 0 is no check (no leases).
            let fence = Fence { ino: row.ino, token: Fence::token_for(fence, row.ino) };
            let token = to_i64(server, fence.token, "fencing token")?;
            // SET columns are all but the first (ino), which moves to the WHERE clause.
            let ino = params.remove(0);
            if token != 0 {
                params.push(token.into());
            }
            params.push(ino.clone());
            params.push(expect.into());
            if token != 0 {
                params.push(token.into());
            }
            let sql = if token == 0 { SQL_UPDATE_INODE } else { SQL_UPDATE_INODE_FENCED };
            conn.exec_drop(sql, params).await.map_err(err)?;
            let matched = conn.affected_rows();
            if matched == 0 && token != 0 {
                let stored: Option<(Value, Value)> = conn
                    .exec_first("SELECT version, fence FROM inodes WHERE ino = ?", (ino,))
                    .await
                    .map_err(err)?;
                let stored = stored.and_then(|(v, f)| Some((value_i64(&v)?, value_i64(&f)?)));
                if let Some((version, stored)) = stored.filter(|&(v, f)| v == expect && f > token) {
                    return Err(conflict(fence.refusal(version, stored)));
                }
            }
            if matched == 0 {
                return Err(conflict(format!(
                    "table inodes: inode {} is not at version {expect_version} (changed or deleted)",
                    row.ino
                )));
            }
            Ok(())
        }
        TxnOp::DeleteInode { ino } => {
            let key = to_i64(server, *ino, "ino")?;
            // Deleting an inode that is already gone is not an error: there is no version to
            // check, and a second clean-up of the same orphan must not fail.
            conn.exec_drop("DELETE FROM xattrs WHERE ino = ?", (key,)).await.map_err(err)?;
            conn.exec_drop("DELETE FROM inodes WHERE ino = ?", (key,)).await.map_err(err)?;
            Ok(())
        }
        TxnOp::InsertDentry(d) => {
            let pos = to_i64(server, d.pos, "pos")?;
            let parent = to_i64(server, d.parent, "parent")?;
            let ino = to_i64(server, d.ino, "ino")?;
            let params: Vec<Value> = vec![pos.into(), parent.into(), d.name.clone().into(), ino.into()];
            match conn.exec_drop("INSERT INTO dentries (pos, parent, name, ino) VALUES (?, ?, ?, ?)", params).await {
                Err(e) if is_duplicate(&e) => Err(conflict(format!(
                    "table dentries: entry {:?} in directory {} (or position {}) already exists",
                    String::from_utf8_lossy(&d.name),
                    d.parent,
                    d.pos
                ))),
                r => r.map_err(err),
            }
        }
        TxnOp::DeleteDentry { parent, name, ino } => {
            let p = to_i64(server, *parent, "parent")?;
            let i = to_i64(server, *ino, "ino")?;
            let params: Vec<Value> = vec![p.into(), name.clone().into(), i.into()];
            conn.exec_drop("DELETE FROM dentries WHERE parent = ? AND name = ? AND ino = ?", params)
                .await
                .map_err(err)?;
            if conn.affected_rows() == 0 {
                return Err(conflict(format!(
                    "table dentries: no entry {:?} -> inode {ino} in directory {parent}",
                    String::from_utf8_lossy(name)
                )));
            }
            Ok(())
        }
        TxnOp::SetXattr { ino, name, value } => {
            let key = to_i64(server, *ino, "ino")?;
            let params: Vec<Value> = vec![key.into(), name.clone().into(), value.to_vec().into()];
            conn.exec_drop(
                "INSERT INTO xattrs (ino, name, value) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
                params,
            )
            .await
            .map_err(err)
        }
        TxnOp::RemoveXattr { ino, name } => {
            let key = to_i64(server, *ino, "ino")?;
            // Removing an absent xattr is not an error here: the core decides ENODATA from what
            // it loaded, and the op carries no version to check.
            let params: Vec<Value> = vec![key.into(), name.clone().into()];
            conn.exec_drop("DELETE FROM xattrs WHERE ino = ? AND name = ?", params).await.map_err(err)
        }
    }
}

/// An inode row as statement parameters, in [`INODE_COLS`] order.
fn encode_inode(server: &str, row: &InodeRow) -> Result<Vec<Value>, IoError> {
    let ino = to_i64(server, row.ino, "ino")?;
    let size = to_i64(server, row.size, "size")?;
    let version = to_i64(server, row.version, "version")?;
    Ok(vec![
        ino.into(),
        (row.kind.code() as i64).into(),
        (row.perm as i64).into(),
        (row.uid as i64).into(),
        (row.gid as i64).into(),
        (row.nlink as i64).into(),
        size.into(),
        row.atime.sec.into(),
        (row.atime.nsec as i64).into(),
        row.mtime.sec.into(),
        (row.mtime.nsec as i64).into(),
        row.ctime.sec.into(),
        (row.ctime.nsec as i64).into(),
        (row.rdev as i64).into(),
        version.into(),
        row.object.as_ref().map_or(Value::NULL, |o| Value::Bytes(o.0.as_bytes().to_vec())),
        row.target.as_ref().map_or(Value::NULL, |t| Value::Bytes(t.clone())),
    ])
}

/// Decodes the [`INODE_COLS`] starting at column `base`. Never panics on a bad row.
fn decode_inode(server: &str, r: &[Value], base: usize) -> Result<InodeRow, IoError> {
    let col = |i: usize| r.get(base + i).unwrap_or(&Value::NULL);
    // Name the inode in errors if at least its number is readable.
    let ino_shown = value_i64(col(0)).map_or_else(|| "?".to_string(), |v| v.to_string());
    let bad = |name: &str, detail: &str| {
        IoError::new(IoErrorKind::Corrupt, format!("{server}: table inodes, ino {ino_shown}: bad {name}{detail}"))
    };
    let int = |i: usize, name: &str| -> Result<i64, IoError> { value_i64(col(i)).ok_or_else(|| bad(name, "")) };
    let ranged = |i: usize, name: &str, max: i64| -> Result<i64, IoError> {
        let v = int(i, name)?;
        if (0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(bad(name, &format!(" ({v})")))
        }
    };
    let time = |i: usize, name: &str| -> Result<Timespec, IoError> {
        let sec = int(i, name)?;
        let nsec = ranged(i + 1, name, 999_999_999)?;
        Ok(Timespec { sec, nsec: nsec as u32 })
    };
    let blob = |i: usize, name: &str| -> Result<Option<Vec<u8>>, IoError> {
        match col(i) {
            Value::NULL => Ok(None),
            Value::Bytes(b) => Ok(Some(b.clone())),
            _ => Err(bad(name, "")),
        }
    };
    let u32max = u32::MAX as i64;
    let kind_code = int(1, "kind")?;
    let kind = u8::try_from(kind_code)
        .ok()
        .and_then(FileKind::from_code)
        .ok_or_else(|| bad("kind", &format!(" (unknown code {kind_code})")))?;
    let object = match blob(15, "object")? {
        None => None,
        Some(b) => Some(ObjectId(String::from_utf8(b).map_err(|_| bad("object", ""))?)),
    };
    Ok(InodeRow {
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
        object,
        target: blob(16, "target")?,
    })
}

/// Adds the xattr in columns `base` (name) and `base + 1` (value) of a joined row, if any.
fn add_xattr(
    server: &str,
    ino: u64,
    r: &[Value],
    base: usize,
    into: &mut BTreeMap<Vec<u8>, Bytes>,
) -> Result<(), IoError> {
    let bad = |col: &str| IoError::new(IoErrorKind::Corrupt, format!("{server}: table xattrs, ino {ino}: bad {col}"));
    match (r.get(base), r.get(base + 1)) {
        (None | Some(Value::NULL), _) => Ok(()),
        (Some(name), value) => {
            let name = value_bytes(name).ok_or_else(|| bad("name"))?;
            let value = value.and_then(value_bytes).ok_or_else(|| bad("value"))?;
            into.insert(name.to_vec(), Bytes::copy_from_slice(value));
            Ok(())
        }
    }
}

pub(crate) fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Also reads DECIMAL results (sums), which come as text.
fn value_i128(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::UInt(u) => Some(*u as i128),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn value_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

fn to_i64(server: &str, v: u64, what: &str) -> Result<i64, IoError> {
    i64::try_from(v)
        .map_err(|_| IoError::new(IoErrorKind::Other, format!("{server}: {what} {v} does not fit the database")))
}

/// The error's message without the driver's nested "Input/output error: " prefixes.
fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => format!("I/O error: {io}"),
        other => other.to_string(),
    }
}

/// ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME: a unique key (inode, position, name) is taken.
fn is_duplicate(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1062 || s.code == 1586)
}

/// Maps a failure to what the request answers. `retry`: whether repeating the request after a lost
/// connection is safe at this point.
fn classify(server: &str, e: mysql_async::Error, retry: bool) -> Fail {
    match e {
        mysql_async::Error::Server(s) => {
            let kind = match s.code {
                // The server is going away or killed us: the connection is gone.
                1053 | 1927 | 4031 => {
                    return Fail::Lost { message: format!("{} (MySQL error {})", s.message, s.code), retry }
                }
                1062 | 1586 => IoErrorKind::Conflict,
                // ER_LOCK_DEADLOCK: the server rolled our transaction back so another could go on;
                // for us that is someone else changing the rows first.
                1213 => IoErrorKind::Conflict,
                // ER_LOCK_WAIT_TIMEOUT
                1205 => IoErrorKind::Timeout,
                // ER_DISK_FULL, ER_RECORD_FILE_FULL
                1021 | 1114 => IoErrorKind::NoSpace,
                _ => IoErrorKind::Other,
            };
            Fail::Reply(IoError::new(kind, format!("{server}: {} (MySQL error {})", s.message, s.code)))
        }
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => Fail::Lost { message: describe(&e), retry },
        other => Fail::ReplyAndReset(IoError::new(IoErrorKind::Other, format!("{server}: {other}"))),
    }
}

/// Replaces every object id of `txn` in the message by its fingerprint: the server quotes values
/// in some errors, and an id is a secret.
fn scrub(fail: Fail, txn: &Txn) -> Fail {
    let clean = |mut msg: String| {
        for op in &txn.ops {
            if let TxnOp::InsertInode(row) | TxnOp::UpdateInode { row, .. } = op {
                if let Some(o) = &row.object {
                    if !o.0.is_empty() && msg.contains(&o.0) {
                        msg = msg.replace(&o.0, &o.fingerprint());
                    }
                }
            }
        }
        msg
    };
    match fail {
        Fail::Reply(e) => Fail::Reply(IoError::new(e.kind, clean(e.message))),
        Fail::ReplyAndReset(e) => Fail::ReplyAndReset(IoError::new(e.kind, clean(e.message))),
        Fail::Lost { message, retry } => Fail::Lost { message: clean(message), retry },
        Fail::InDoubt { message } => Fail::InDoubt { message: clean(message) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_and_errors_hide_the_password() {
        let cfg = MysqlConfig { password: "hunter2-secret".into(), ..MysqlConfig::default() };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
        assert_eq!(cfg.server(), "localhost:3306/truckeefs");
        let v6 = MysqlConfig { host: "::1".into(), ..MysqlConfig::default() };
        assert_eq!(v6.server(), "[::1]:3306/truckeefs");
    }

    #[test]
    fn database_names_are_checked() {
        for good in ["truckeefs", "a", "db_1", "x-y$z"] {
            let cfg = MysqlConfig { db: good.into(), ..MysqlConfig::default() };
            assert!(check_db_name(&cfg).is_ok(), "{good}");
        }
        for bad in ["", "a`b", "a b", "a;drop", &"x".repeat(65), "é"] {
            let cfg = MysqlConfig { db: bad.into(), ..MysqlConfig::default() };
            assert!(check_db_name(&cfg).is_err(), "{bad}");
            let err = MysqlMeta::open(&cfg).expect_err("refused before connecting");
            assert!(matches!(err, MysqlOpenError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn values_decode_or_are_corrupt() {
        assert_eq!(value_i64(&Value::Int(-5)), Some(-5));
        assert_eq!(value_i64(&Value::UInt(7)), Some(7));
        assert_eq!(value_i64(&Value::UInt(u64::MAX)), None);
        assert_eq!(value_i64(&Value::Bytes(b"42".to_vec())), Some(42));
        assert_eq!(value_i64(&Value::NULL), None);
        assert_eq!(value_i128(&Value::Bytes(b"18446744073709551616".to_vec())), Some(1 << 64));
        let mut row = encode_inode(
            "s",
            &InodeRow {
                ino: 5,
                kind: FileKind::Regular,
                perm: 0o644,
                uid: 1,
                gid: 2,
                nlink: 1,
                size: 3,
                atime: Timespec { sec: 1, nsec: 2 },
                mtime: Timespec { sec: -1, nsec: 999_999_999 },
                ctime: Timespec { sec: 0, nsec: 0 },
                rdev: 0,
                version: 9,
                object: Some(ObjectId("URI:CHK:secret".into())),
                target: None,
            },
        )
        .unwrap();
        let back = decode_inode("s", &row, 0).unwrap();
        assert_eq!(back.object, Some(ObjectId("URI:CHK:secret".into())));
        assert_eq!(back.mtime, Timespec { sec: -1, nsec: 999_999_999 });
        row[15] = Value::Bytes(vec![0xff, 0x00]);
        let err = decode_inode("s", &row, 0).unwrap_err();
        assert_eq!(err.kind, IoErrorKind::Corrupt);
        assert!(err.message.contains("ino 5") && err.message.contains("object"), "{}", err.message);
        row[15] = Value::NULL;
        row[1] = Value::Int(42);
        assert_eq!(decode_inode("s", &row, 0).unwrap_err().kind, IoErrorKind::Corrupt);
        assert_eq!(decode_inode("s", &row[..3], 0).unwrap_err().kind, IoErrorKind::Corrupt);
    }

    #[test]
    fn scrub_replaces_object_ids() {
        let mut row = InodeRow {
            ino: 5,
            kind: FileKind::Regular,
            perm: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: Timespec { sec: 0, nsec: 0 },
            mtime: Timespec { sec: 0, nsec: 0 },
            ctime: Timespec { sec: 0, nsec: 0 },
            rdev: 0,
            version: 1,
            object: None,
            target: None,
        };
        row.object = Some(ObjectId("URI:CHK:abcdef".into()));
        let txn = Txn { ops: vec![TxnOp::InsertInode(row.clone())], durable: false };
        let fail = scrub(Fail::Reply(IoError::new(IoErrorKind::Other, "value 'URI:CHK:abcdef' is bad")), &txn);
        let Fail::Reply(e) = fail else { panic!() };
        assert!(!e.message.contains("URI:CHK"), "{}", e.message);
        assert!(e.message.contains(&row.object.unwrap().fingerprint()));
    }
}
