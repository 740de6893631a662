//! Where a cache server keeps what it serves: metadata trees (`md:$ays_id`), blobs
//! (`files:$domain`) and what its clients announced (clients, stores, mounts).
//!
//! Two backends behind [`Store`]:
//! - [`EmbeddedStore`] (the default), in one data directory:
//!   - `ays.sqlite`: tables `md` (ays_id, path, parent, files JSON), `ays_clients`,
//!     `ays_stors`, `ays_mounts`;
//!   - `blobs/{domain or _}/{ab}/{cd}/{md5}`: one file per blob, fanned out by the first four
//!     hex digits of its md5, written as a temporary file in `tmp/`, fsynced, then renamed;
//!   - `tmp/`: temporary files (emptied when the server starts).
//! - [`RedisStore`]: the hashes `md:$ays_id` and `files:$domain` exactly as the protocol names
//!   them, and the registry under `ays:` (`ays:clients`, `ays:stors`, `ays:mounts:$clientid`).
//!
//! Expiry: what a cache keeps because it fetched it from a store (a tree or a blob) is recorded
//! with that store's name and the time it was last fetched or served ([`Kept`],
//! [`FetchRecord`]); the server's sweep deletes it once it was not used for the store's
//! announced expiration (`cache.expiration`, hours, 0 = never; the longest announced wins). What
//! was put into the store (published, or written back by a client) has no record and stays.
//!
//! Names from URLs are only ever database keys: the only file names built from request input
//! are a validated domain (see [`proto::is_valid_domain`]) and a validated md5.

use super::proto::{self, ClientAnnounce, DirFiles, MdAnswer, StorAnnounce, Tree};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::NamedTempFile;

/// A failure of the backing storage; the message never holds a password.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError(format!("embedded store database: {e}"))
}

fn io_err(what: &Path, e: io::Error) -> StoreError {
    StoreError(format!("{}: {e}", what.display()))
}

fn redis_err(e: redis::RedisError) -> StoreError {
    // A RedisError names the command and the server's reply, never the connection URL.
    StoreError(format!("redis: {e}"))
}

/// A blob to answer with.
pub enum BlobData {
    /// An open file and its length (embedded store, spooled fetches).
    File(File, u64),
    /// Bytes in memory (Redis).
    Bytes(Vec<u8>),
}

impl BlobData {
    pub fn len(&self) -> u64 {
        match self {
            BlobData::File(_, n) => *n,
            BlobData::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Something a cache keeps because it fetched it from a store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kept {
    Tree(String),
    Blob { domain: String, md5: String },
}

impl Kept {
    /// The record's name: `md:$ays_id` or `files:$domain:$md5` (a domain holds no `:`).
    pub fn record_key(&self) -> String {
        match self {
            Kept::Tree(id) => proto::md_key(id),
            Kept::Blob { domain, md5 } => format!("{}:{md5}", proto::files_key(domain)),
        }
    }

    pub fn from_record_key(key: &str) -> Option<Kept> {
        if let Some(id) = key.strip_prefix("md:") {
            return Some(Kept::Tree(id.to_string()));
        }
        let (domain, md5) = key.strip_prefix("files:")?.rsplit_once(':')?;
        (proto::is_valid_domain(domain) && proto::is_md5_hex(md5))
            .then(|| Kept::Blob { domain: domain.to_string(), md5: md5.to_string() })
    }
}

/// Where a kept item came from and when it was last fetched or served (epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRecord {
    pub stor: String,
    pub at_s: i64,
}

/// A record is rewritten when served only if it is older than this (seconds), so serving a
/// blob again and again costs no write each time; expirations are in hours.
pub const TOUCH_GRANULARITY_S: i64 = 60;

/// The storage of a cache server. Every method is safe to call from many threads at once.
pub trait Store: Send + Sync {
    /// One line for the logs: which backend, where (never a password).
    fn describe(&self) -> String;
    /// A new temporary file for a body or a fetch being received; [`Store::put_blob`] takes it.
    fn spool(&self) -> StoreResult<NamedTempFile>;

    /// True when the tree `ays_id` is known at all.
    fn has_tree(&self, ays_id: &str) -> StoreResult<bool>;
    /// The whole tree as the JSON body of `GET S/md/{ays_id}`.
    fn tree_json(&self, ays_id: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Replaces the tree (already validated).
    fn put_tree(&self, ays_id: &str, tree: &Tree) -> StoreResult<()>;
    /// One directory of a tree, with its subdirectories' names.
    fn dir(&self, ays_id: &str, dir: &str) -> StoreResult<Option<MdAnswer>>;

    /// The length of a blob the store has.
    fn blob_len(&self, domain: &str, md5: &str) -> StoreResult<Option<u64>>;
    fn has_blob(&self, domain: &str, md5: &str) -> StoreResult<bool> {
        Ok(self.blob_len(domain, md5)?.is_some())
    }
    fn blob(&self, domain: &str, md5: &str) -> StoreResult<Option<BlobData>>;
    /// Keeps a blob whose content (the spooled file) was verified to have this md5.
    fn put_blob(&self, domain: &str, md5: &str, file: NamedTempFile) -> StoreResult<()>;

    fn put_client(&self, id: &str, client: &ClientAnnounce) -> StoreResult<()>;
    fn client(&self, id: &str) -> StoreResult<Option<ClientAnnounce>>;
    /// Records a store; if it is already known its expiration becomes the longest of the two
    /// ([`proto::longest_expiration`]). Returns what is now recorded.
    fn put_stor(&self, name: &str, stor: &StorAnnounce) -> StoreResult<StorAnnounce>;
    fn stor(&self, name: &str) -> StoreResult<Option<StorAnnounce>>;
    /// Every known store, by name.
    fn stors(&self) -> StoreResult<Vec<(String, StorAnnounce)>>;
    fn put_mount(&self, client: &str, mount: &str, table: &serde_json::Value) -> StoreResult<()>;
    fn mount(&self, client: &str, mount: &str) -> StoreResult<Option<serde_json::Value>>;

    /// Records that `item`, just kept, was fetched from store `stor` at `now_s`.
    fn record_fetch(&self, item: &Kept, stor: &str, now_s: i64) -> StoreResult<()>;
    /// `item` was served at `now_s`: its record (if it has one) is renewed.
    fn touch(&self, item: &Kept, now_s: i64) -> StoreResult<()>;
    /// Every record.
    fn fetch_records(&self) -> StoreResult<Vec<(Kept, FetchRecord)>>;
    /// Deletes `item` and its record if the record is still older than `cutoff_s` (it was not
    /// served since it was listed). True if it was deleted.
    fn expire(&self, item: &Kept, cutoff_s: i64) -> StoreResult<bool>;
}

/// The metadata value of one directory, as stored: compact JSON.
fn files_json(files: &DirFiles) -> String {
    // Serializing a map of strings cannot fail.
    serde_json::to_string(files).unwrap_or_else(|_| "{}".to_string())
}

fn parse_files(ays_id: &str, dir: &str, json: &str) -> StoreResult<DirFiles> {
    serde_json::from_str(json).map_err(|e| StoreError(format!("tree {ays_id:?} directory {dir:?}: stored value is not valid: {e}")))
}

/// The JSON body of a whole tree from its fields, without reparsing the values.
fn tree_body(fields: impl IntoIterator<Item = (String, String)>) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (path, files)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Serializing a string cannot fail.
        out.push_str(&serde_json::to_string(&path).unwrap_or_default());
        out.push(':');
        out.push_str(&files);
    }
    out.push('}');
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Embedded

/// The default store: SQLite for metadata and the registry, a fanned-out directory for blobs.
pub struct EmbeddedStore {
    dir: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    /// Lock order: `db`, then `registry` is never taken inside it (and vice versa).
    db: Mutex<Connection>,
    /// Serializes read-modify-write of store records.
    registry: Mutex<()>,
    /// Holds the data directory's `flock` for the server's life.
    _lock: File,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS md (
    ays_id TEXT NOT NULL, path TEXT NOT NULL, parent TEXT, files TEXT NOT NULL,
    PRIMARY KEY (ays_id, path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS md_parent ON md (ays_id, parent);
CREATE TABLE IF NOT EXISTS ays_clients (id TEXT PRIMARY KEY, platform TEXT NOT NULL, seen_s INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ays_stors (
    name TEXT PRIMARY KEY, url TEXT NOT NULL, login TEXT NOT NULL, passwd TEXT NOT NULL,
    expiration_h INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ays_mounts (
    client TEXT NOT NULL, mount TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (client, mount));
CREATE TABLE IF NOT EXISTS ays_fetched (item TEXT PRIMARY KEY, stor TEXT NOT NULL, at_s INTEGER NOT NULL);
";

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl EmbeddedStore {
    /// Opens (creating) the store in `dir`. One server at a time: a second one on the same
    /// directory fails with "busy".
    pub fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        // One server per data directory: it alone empties tmp/ and writes the database.
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        // SAFETY: flock on an fd we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError(format!(
                "{} is busy: another 'truckeefs ays serve' uses this data directory",
                dir.display()
            )));
        }
        let db_path = dir.join("ays.sqlite");
        let conn = Connection::open(&db_path).map_err(|e| StoreError(format!("{}: {e}", db_path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sql_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql_err)?;
        conn.execute_batch(SCHEMA).map_err(sql_err)?;
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, e))?;
        // We hold the database's exclusive lock, so no other server uses tmp/: what is there was
        // left by a server that died.
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        Ok(EmbeddedStore { dir: dir.to_path_buf(), blobs, tmp, db: Mutex::new(conn), registry: Mutex::new(()), _lock: lock })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `blobs/{domain or _}/{ab}/{cd}/{md5}`. Callers validated both names; checked again here
    /// because this is the one place request input becomes a file name.
    fn blob_path(&self, domain: &str, md5: &str) -> StoreResult<PathBuf> {
        if !proto::is_valid_domain(domain) || !proto::is_md5_hex(md5) {
            return Err(StoreError(format!("invalid blob name {domain:?}/{md5:?}")));
        }
        let d = if domain.is_empty() { proto::EMPTY_DOMAIN_SEGMENT } else { domain };
        Ok(self.blobs.join(d).join(&md5[..2]).join(&md5[2..4]).join(md5))
    }
}

impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded store in {}", self.dir.display())
    }

    fn spool(&self) -> StoreResult<NamedTempFile> {
        NamedTempFile::new_in(&self.tmp).map_err(|e| io_err(&self.tmp, e))
    }

    fn has_tree(&self, ays_id: &str) -> StoreResult<bool> {
        let db = self.db();
        let n: Option<i64> =
            db.query_row("SELECT 1 FROM md WHERE ays_id = ?1 LIMIT 1", [ays_id], |r| r.get(0)).optional().map_err(sql_err)?;
        Ok(n.is_some())
    }

    fn tree_json(&self, ays_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let db = self.db();
        let mut st = db.prepare_cached("SELECT path, files FROM md WHERE ays_id = ?1 ORDER BY path").map_err(sql_err)?;
        let rows: Vec<(String, String)> = st
            .query_map([ays_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(tree_body(rows)))
    }

    fn put_tree(&self, ays_id: &str, tree: &Tree) -> StoreResult<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(sql_err)?;
        tx.execute("DELETE FROM md WHERE ays_id = ?1", [ays_id]).map_err(sql_err)?;
        {
            let mut st = tx
                .prepare_cached("INSERT INTO md (ays_id, path, parent, files) VALUES (?1, ?2, ?3, ?4)")
                .map_err(sql_err)?;
            for (path, files) in tree {
                let parent = proto::split_parent(path).map(|(p, _)| p);
                st.execute(params![ays_id, path, parent, files_json(files)]).map_err(sql_err)?;
            }
        }
        tx.commit().map_err(sql_err)
    }

    fn dir(&self, ays_id: &str, dir: &str) -> StoreResult<Option<MdAnswer>> {
        let db = self.db();
        let files: Option<String> = db
            .query_row("SELECT files FROM md WHERE ays_id = ?1 AND path = ?2", [ays_id, dir], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        let Some(files) = files else { return Ok(None) };
        let files = parse_files(ays_id, dir, &files)?;
        let mut st = db.prepare_cached("SELECT path FROM md WHERE ays_id = ?1 AND parent = ?2").map_err(sql_err)?;
        let paths: Vec<String> =
            st.query_map([ays_id, dir], |r| r.get(0)).map_err(sql_err)?.collect::<Result<_, _>>().map_err(sql_err)?;
        let dirs = proto::subdirs(paths.iter().map(String::as_str), dir);
        Ok(Some(MdAnswer { files, dirs }))
    }

    fn blob_len(&self, domain: &str, md5: &str) -> StoreResult<Option<u64>> {
        let p = self.blob_path(domain, md5)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(m.is_file().then_some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    fn blob(&self, domain: &str, md5: &str) -> StoreResult<Option<BlobData>> {
        let p = self.blob_path(domain, md5)?;
        match File::open(&p) {
            Ok(f) => {
                let len = f.metadata().map_err(|e| io_err(&p, e))?.len();
                Ok(Some(BlobData::File(f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p, e)),
        }
    }

    fn put_blob(&self, domain: &str, md5: &str, file: NamedTempFile) -> StoreResult<()> {
        let dest = self.blob_path(domain, md5)?;
        file.as_file().sync_all().map_err(|e| io_err(file.path(), e))?;
        let parent = dest.parent().unwrap_or(&self.blobs);
        fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        // rename(2) is atomic: a reader sees the old blob, none, or the whole new one; two
        // writers of the same md5 write the same bytes.
        file.persist(&dest).map_err(|e| io_err(&dest, e.error))?;
        Ok(())
    }

    fn put_client(&self, id: &str, client: &ClientAnnounce) -> StoreResult<()> {
        self.db()
            .execute(
                "INSERT INTO ays_clients (id, platform, seen_s) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET platform = excluded.platform, seen_s = excluded.seen_s",
                params![id, client.platform, now_s()],
            )
            .map_err(sql_err)?;
        Ok(())
    }

    fn client(&self, id: &str) -> StoreResult<Option<ClientAnnounce>> {
        self.db()
            .query_row("SELECT platform FROM ays_clients WHERE id = ?1", [id], |r| Ok(ClientAnnounce { platform: r.get(0)? }))
            .optional()
            .map_err(sql_err)
    }

    fn put_stor(&self, name: &str, stor: &StorAnnounce) -> StoreResult<StorAnnounce> {
        let _serial = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = stor.clone();
        if let Some(old) = self.stor(name)? {
            rec.expiration = proto::longest_expiration(old.expiration, stor.expiration);
        }
        self.db()
            .execute(
                "INSERT OR REPLACE INTO ays_stors (name, url, login, passwd, expiration_h) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, rec.url, rec.login, rec.passwd, rec.expiration as i64],
            )
            .map_err(sql_err)?;
        Ok(rec)
    }

    fn stor(&self, name: &str) -> StoreResult<Option<StorAnnounce>> {
        self.db()
            .query_row("SELECT url, login, passwd, expiration_h FROM ays_stors WHERE name = ?1", [name], |r| {
                Ok(StorAnnounce { url: r.get(0)?, login: r.get(1)?, passwd: r.get(2)?, expiration: r.get::<_, i64>(3)? as u64 })
            })
            .optional()
            .map_err(sql_err)
    }

    fn stors(&self) -> StoreResult<Vec<(String, StorAnnounce)>> {
        let db = self.db();
        let mut st = db
            .prepare_cached("SELECT name, url, login, passwd, expiration_h FROM ays_stors ORDER BY name")
            .map_err(sql_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    StorAnnounce { url: r.get(1)?, login: r.get(2)?, passwd: r.get(3)?, expiration: r.get::<_, i64>(4)? as u64 },
                ))
            })
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        Ok(rows)
    }

    fn put_mount(&self, client: &str, mount: &str, table: &serde_json::Value) -> StoreResult<()> {
        self.db()
            .execute(
                "INSERT OR REPLACE INTO ays_mounts (client, mount, body) VALUES (?1, ?2, ?3)",
                params![client, mount, table.to_string()],
            )
            .map_err(sql_err)?;
        Ok(())
    }

    fn mount(&self, client: &str, mount: &str) -> StoreResult<Option<serde_json::Value>> {
        let body: Option<String> = self
            .db()
            .query_row("SELECT body FROM ays_mounts WHERE client = ?1 AND mount = ?2", [client, mount], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| StoreError(format!("mount {client:?}/{mount:?}: stored value is not JSON: {e}"))))
            .transpose()
    }

    fn record_fetch(&self, item: &Kept, stor: &str, now_s: i64) -> StoreResult<()> {
        self.db()
            .execute("INSERT OR REPLACE INTO ays_fetched (item, stor, at_s) VALUES (?1, ?2, ?3)", params![item.record_key(), stor, now_s])
            .map_err(sql_err)?;
        Ok(())
    }

    fn touch(&self, item: &Kept, now_s: i64) -> StoreResult<()> {
        self.db()
            .prepare_cached("UPDATE ays_fetched SET at_s = ?2 WHERE item = ?1 AND at_s < ?3")
            .and_then(|mut st| st.execute(params![item.record_key(), now_s, now_s - TOUCH_GRANULARITY_S]))
            .map_err(sql_err)?;
        Ok(())
    }

    fn fetch_records(&self) -> StoreResult<Vec<(Kept, FetchRecord)>> {
        let db = self.db();
        let mut st = db.prepare_cached("SELECT item, stor, at_s FROM ays_fetched").map_err(sql_err)?;
        let rows: Vec<(String, String, i64)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(sql_err)?.collect::<Result<_, _>>().map_err(sql_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(item, stor, at_s)| Some((Kept::from_record_key(&item)?, FetchRecord { stor, at_s })))
            .collect())
    }

    fn expire(&self, item: &Kept, cutoff_s: i64) -> StoreResult<bool> {
        let path = match item {
            Kept::Blob { domain, md5 } => Some(self.blob_path(domain, md5)?),
            Kept::Tree(_) => None,
        };
        {
            let mut db = self.db();
            let tx = db.transaction().map_err(sql_err)?;
            let n = tx
                .execute("DELETE FROM ays_fetched WHERE item = ?1 AND at_s < ?2", params![item.record_key(), cutoff_s])
                .map_err(sql_err)?;
            if n == 0 {
                return Ok(false);
            }
            if let Kept::Tree(id) = item {
                tx.execute("DELETE FROM md WHERE ays_id = ?1", [id]).map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)?;
        }
        // A reader that has the blob open keeps its bytes.
        if let Some(p) = path {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p, e)),
            }
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// Registry keys of the Redis backend.
pub const REDIS_CLIENTS_KEY: &str = "ays:clients";
pub const REDIS_STORS_KEY: &str = "ays:stors";
pub const REDIS_MOUNTS_PREFIX: &str = "ays:mounts:";
/// Fetch records: field [`Kept::record_key`], value the epoch seconds of the last fetch or use
/// (`ays:fetched:at`) and the store's name (`ays:fetched:stor`).
pub const REDIS_FETCHED_AT_KEY: &str = "ays:fetched:at";
pub const REDIS_FETCHED_STOR_KEY: &str = "ays:fetched:stor";
/// Renews a record only if it exists and is older than ARGV[3].
const REDIS_TOUCH: &str = "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and \
tonumber(redis.call('HGET', KEYS[1], ARGV[1])) < tonumber(ARGV[3]) then \
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 0";
/// Deletes a record and its item (KEYS[3], field ARGV[3] or the whole key) if it is older than ARGV[2].
const REDIS_EXPIRE: &str = "local t = redis.call('HGET', KEYS[1], ARGV[1]) \
if t and tonumber(t) < tonumber(ARGV[2]) then \
redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[1]) \
if ARGV[3] == '' then redis.call('DEL', KEYS[3]) else redis.call('HDEL', KEYS[3], ARGV[3]) end \
return 1 end return 0";
/// Connections kept open for reuse.
const REDIS_POOL_MAX: usize = 16;
const REDIS_TIMEOUT: Duration = Duration::from_secs(30);

/// The Redis backend: the protocol's hashes as they are, the registry under `ays:`.
pub struct RedisStore {
    client: redis::Client,
    shown: String,
    pool: Mutex<Vec<redis::Connection>>,
    /// Where uploads are spooled: the system's temporary directory, one file per upload, removed
    /// when it is done (no directory of its own, which a killed process would leave behind).
    spool: PathBuf,
    registry: Mutex<()>,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`, `redis+unix:///path?db=N`) once to check it.
    pub fn open(url: &str) -> StoreResult<RedisStore> {
        let shown = proto::redact_url(url);
        let client = redis::Client::open(url).map_err(|e| StoreError(format!("redis URL {shown}: {e}")))?;
        let spool = std::env::temp_dir();
        let store = RedisStore { client, shown, pool: Mutex::new(Vec::new()), spool, registry: Mutex::new(()) };
        store.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped, not reused.
    fn with<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> StoreResult<T> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .map_err(|e| StoreError(format!("redis {}: {e}", self.shown)))?;
                c.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(redis_err)?;
                c.set_write_timeout(Some(REDIS_TIMEOUT)).map_err(redis_err)?;
                c
            }
        };
        let r = f(&mut conn).map_err(redis_err);
        if r.is_ok() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < REDIS_POOL_MAX {
                pool.push(conn);
            }
        }
        r
    }
}

impl Store for RedisStore {
    fn describe(&self) -> String {
        format!("redis store at {}", self.shown)
    }

    fn spool(&self) -> StoreResult<NamedTempFile> {
        tempfile::Builder::new().prefix("truckeefs-ays-spool-").tempfile_in(&self.spool).map_err(|e| io_err(&self.spool, e))
    }

    fn has_tree(&self, ays_id: &str) -> StoreResult<bool> {
        self.with(|c| redis::cmd("EXISTS").arg(proto::md_key(ays_id)).query::<bool>(c))
    }

    fn tree_json(&self, ays_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut fields: Vec<(String, String)> = self.with(|c| redis::cmd("HGETALL").arg(proto::md_key(ays_id)).query(c))?;
        if fields.is_empty() {
            return Ok(None);
        }
        fields.sort();
        Ok(Some(tree_body(fields)))
    }

    fn put_tree(&self, ays_id: &str, tree: &Tree) -> StoreResult<()> {
        let key = proto::md_key(ays_id);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        // HSET in slices keeps each command a reasonable size for huge trees.
        let fields: Vec<(String, String)> = tree.iter().map(|(p, f)| (p.clone(), files_json(f))).collect();
        for chunk in fields.chunks(1000) {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&key);
            for (p, f) in chunk {
                cmd.arg(p).arg(f);
            }
            pipe.add_command(cmd).ignore();
        }
        self.with(|c| pipe.query::<()>(c))
    }

    fn dir(&self, ays_id: &str, dir: &str) -> StoreResult<Option<MdAnswer>> {
        let key = proto::md_key(ays_id);
        let files: Option<String> = self.with(|c| redis::cmd("HGET").arg(&key).arg(dir).query(c))?;
        let Some(files) = files else { return Ok(None) };
        let files = parse_files(ays_id, dir, &files)?;
        // The hash has no index by parent: list its fields (one round trip).
        let paths: Vec<String> = self.with(|c| redis::cmd("HKEYS").arg(&key).query(c))?;
        let dirs = proto::subdirs(paths.iter().map(String::as_str), dir);
        Ok(Some(MdAnswer { files, dirs }))
    }

    fn blob_len(&self, domain: &str, md5: &str) -> StoreResult<Option<u64>> {
        let key = proto::files_key(domain);
        let (exists, len): (bool, u64) = self.with(|c| {
            redis::pipe().cmd("HEXISTS").arg(&key).arg(md5).cmd("HSTRLEN").arg(&key).arg(md5).query(c)
        })?;
        Ok(exists.then_some(len))
    }

    fn blob(&self, domain: &str, md5: &str) -> StoreResult<Option<BlobData>> {
        let v: Option<Vec<u8>> = self.with(|c| redis::cmd("HGET").arg(proto::files_key(domain)).arg(md5).query(c))?;
        Ok(v.map(BlobData::Bytes))
    }

    fn put_blob(&self, domain: &str, md5: &str, file: NamedTempFile) -> StoreResult<()> {
        let mut bytes = Vec::new();
        let mut f = file.reopen().map_err(|e| io_err(file.path(), e))?;
        f.read_to_end(&mut bytes).map_err(|e| io_err(file.path(), e))?;
        self.with(|c| redis::cmd("HSET").arg(proto::files_key(domain)).arg(md5).arg(&bytes).query::<()>(c))
    }

    fn put_client(&self, id: &str, client: &ClientAnnounce) -> StoreResult<()> {
        let v = serde_json::json!({"platform": client.platform, "seen_s": now_s()}).to_string();
        self.with(|c| redis::cmd("HSET").arg(REDIS_CLIENTS_KEY).arg(id).arg(v).query::<()>(c))
    }

    fn client(&self, id: &str) -> StoreResult<Option<ClientAnnounce>> {
        let v: Option<String> = self.with(|c| redis::cmd("HGET").arg(REDIS_CLIENTS_KEY).arg(id).query(c))?;
        v.map(|v| serde_json::from_str(&v).map_err(|e| StoreError(format!("{REDIS_CLIENTS_KEY} {id:?}: {e}")))).transpose()
    }

    fn put_stor(&self, name: &str, stor: &StorAnnounce) -> StoreResult<StorAnnounce> {
        let _serial = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = stor.clone();
        if let Some(old) = self.stor(name)? {
            rec.expiration = proto::longest_expiration(old.expiration, stor.expiration);
        }
        // Serializing this struct cannot fail.
        let v = serde_json::to_string(&rec).unwrap_or_default();
        self.with(|c| redis::cmd("HSET").arg(REDIS_STORS_KEY).arg(name).arg(v).query::<()>(c))?;
        Ok(rec)
    }

    fn stor(&self, name: &str) -> StoreResult<Option<StorAnnounce>> {
        let v: Option<String> = self.with(|c| redis::cmd("HGET").arg(REDIS_STORS_KEY).arg(name).query(c))?;
        v.map(|v| serde_json::from_str(&v).map_err(|_| StoreError(format!("{REDIS_STORS_KEY} {name:?}: not a store record"))))
            .transpose()
    }

    fn stors(&self) -> StoreResult<Vec<(String, StorAnnounce)>> {
        let all: Vec<(String, String)> = self.with(|c| redis::cmd("HGETALL").arg(REDIS_STORS_KEY).query(c))?;
        let mut out = Vec::new();
        for (name, v) in all {
            match serde_json::from_str(&v) {
                Ok(s) => out.push((name, s)),
                Err(_) => tracing::warn!(store = %name, "{REDIS_STORS_KEY}: ignoring a malformed store record"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn put_mount(&self, client: &str, mount: &str, table: &serde_json::Value) -> StoreResult<()> {
        let key = format!("{REDIS_MOUNTS_PREFIX}{client}");
        self.with(|c| redis::cmd("HSET").arg(key).arg(mount).arg(table.to_string()).query::<()>(c))
    }

    fn mount(&self, client: &str, mount: &str) -> StoreResult<Option<serde_json::Value>> {
        let key = format!("{REDIS_MOUNTS_PREFIX}{client}");
        let v: Option<String> = self.with(|c| redis::cmd("HGET").arg(&key).arg(mount).query(c))?;
        v.map(|v| serde_json::from_str(&v).map_err(|e| StoreError(format!("{key} {mount:?}: {e}")))).transpose()
    }

    fn record_fetch(&self, item: &Kept, stor: &str, now_s: i64) -> StoreResult<()> {
        let k = item.record_key();
        self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(REDIS_FETCHED_AT_KEY)
                .arg(&k)
                .arg(now_s)
                .ignore()
                .cmd("HSET")
                .arg(REDIS_FETCHED_STOR_KEY)
                .arg(&k)
                .arg(stor)
                .ignore()
                .query::<()>(c)
        })
    }

    fn touch(&self, item: &Kept, now_s: i64) -> StoreResult<()> {
        let k = item.record_key();
        self.with(|c| {
            redis::cmd("EVAL")
                .arg(REDIS_TOUCH)
                .arg(1)
                .arg(REDIS_FETCHED_AT_KEY)
                .arg(&k)
                .arg(now_s)
                .arg(now_s - TOUCH_GRANULARITY_S)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    fn fetch_records(&self) -> StoreResult<Vec<(Kept, FetchRecord)>> {
        let at: Vec<(String, String)> = self.with(|c| redis::cmd("HGETALL").arg(REDIS_FETCHED_AT_KEY).query(c))?;
        let stors: std::collections::HashMap<String, String> =
            self.with(|c| redis::cmd("HGETALL").arg(REDIS_FETCHED_STOR_KEY).query(c))?;
        Ok(at
            .into_iter()
            .filter_map(|(k, t)| {
                let rec = FetchRecord { stor: stors.get(&k)?.clone(), at_s: t.parse().ok()? };
                Some((Kept::from_record_key(&k)?, rec))
            })
            .collect())
    }

    fn expire(&self, item: &Kept, cutoff_s: i64) -> StoreResult<bool> {
        let (key, field) = match item {
            Kept::Tree(id) => (proto::md_key(id), String::new()),
            Kept::Blob { domain, md5 } => (proto::files_key(domain), md5.clone()),
        };
        let n: i64 = self.with(|c| {
            redis::cmd("EVAL")
                .arg(REDIS_EXPIRE)
                .arg(3)
                .arg(REDIS_FETCHED_AT_KEY)
                .arg(REDIS_FETCHED_STOR_KEY)
                .arg(&key)
                .arg(item.record_key())
                .arg(cutoff_s)
                .arg(&field)
                .query(c)
        })?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn embedded_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(d.path()).unwrap();
        let md5 = proto::md5_hex(b"abc");
        let tree: Tree = proto::parse_tree(
            format!(r#"{{"/": {{"f": "{md5},3"}}, "/a": {{}}, "/a/b": {{"g": "{md5},3,x"}}, "/c": {{}}}}"#).as_bytes(),
        )
        .unwrap();
        s.put_tree("t|1", &tree).unwrap();
        assert!(s.has_tree("t|1").unwrap());
        assert!(!s.has_tree("t|2").unwrap());
        let root = s.dir("t|1", "/").unwrap().unwrap();
        assert_eq!(root.dirs, vec!["a", "c"]);
        assert_eq!(root.files.len(), 1);
        assert_eq!(s.dir("t|1", "/a").unwrap().unwrap().dirs, vec!["b"]);
        assert!(s.dir("t|1", "/zz").unwrap().is_none());
        let back = proto::parse_tree(&s.tree_json("t|1").unwrap().unwrap()).unwrap();
        assert_eq!(back, tree);

        let mut f = s.spool().unwrap();
        f.write_all(b"abc").unwrap();
        s.put_blob("", &md5, f).unwrap();
        assert!(s.has_blob("", &md5).unwrap());
        assert!(d.path().join("blobs/_").join(&md5[..2]).join(&md5[2..4]).join(&md5).is_file());
        assert!(s.blob("dom", &md5).unwrap().is_none());
        assert!(s.blob("..", &md5).is_err());

        let st = |e| StorAnnounce { url: "http://x".into(), login: String::new(), passwd: String::new(), expiration: e };
        assert_eq!(s.put_stor("a", &st(48)).unwrap().expiration, 48);
        assert_eq!(s.put_stor("a", &st(24)).unwrap().expiration, 48);
        assert_eq!(s.put_stor("a", &st(0)).unwrap().expiration, 0);
        assert_eq!(s.put_stor("a", &st(100)).unwrap().expiration, 0);
        drop(s);
        // Reopening keeps everything.
        let s = EmbeddedStore::open(d.path()).unwrap();
        assert_eq!(s.stor("a").unwrap().unwrap().expiration, 0);
    }

    #[test]
    fn embedded_expiry_records() {
        let d = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(d.path()).unwrap();
        let md5 = proto::md5_hex(b"abc");
        let mut f = s.spool().unwrap();
        f.write_all(b"abc").unwrap();
        s.put_blob("dom", &md5, f).unwrap();
        let tree: Tree = proto::parse_tree(br#"{"/": {}}"#).unwrap();
        s.put_tree("t|1", &tree).unwrap();
        let blob = Kept::Blob { domain: "dom".into(), md5: md5.clone() };
        let t = Kept::Tree("t|1".into());
        assert_eq!(Kept::from_record_key(&blob.record_key()), Some(blob.clone()));
        assert_eq!(Kept::from_record_key(&t.record_key()), Some(t.clone()));
        assert_eq!(Kept::from_record_key("files:../x:abc"), None);
        // Without a record nothing expires.
        assert!(!s.expire(&blob, 1_000_000).unwrap());
        assert!(s.has_blob("dom", &md5).unwrap());
        s.record_fetch(&blob, "main", 1000).unwrap();
        s.record_fetch(&t, "main", 1000).unwrap();
        // Served within the granularity: not rewritten; later: renewed.
        s.touch(&blob, 1030).unwrap();
        s.touch(&t, 5000).unwrap();
        let mut recs = s.fetch_records().unwrap();
        recs.sort_by_key(|(k, _)| k.record_key());
        assert_eq!(
            recs,
            vec![
                (blob.clone(), FetchRecord { stor: "main".into(), at_s: 1000 }),
                (t.clone(), FetchRecord { stor: "main".into(), at_s: 5000 }),
            ]
        );
        // A cutoff older than the record keeps it.
        assert!(!s.expire(&t, 4000).unwrap());
        assert!(s.expire(&blob, 2000).unwrap());
        assert!(!s.has_blob("dom", &md5).unwrap());
        assert!(s.has_tree("t|1").unwrap());
        assert!(s.expire(&t, 6000).unwrap());
        assert!(!s.has_tree("t|1").unwrap());
        assert!(s.fetch_records().unwrap().is_empty());
    }

    #[test]
    fn a_second_server_on_the_same_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let _s = EmbeddedStore::open(d.path()).unwrap();
        let e = EmbeddedStore::open(d.path()).err().expect("second open succeeded");
        assert!(e.0.contains("busy"), "{e}");
    }
}
