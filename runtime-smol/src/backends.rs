//! Where a mount keeps metadata and file data: the embedded SQLite database and local object
//! directory by default, or MySQL/MariaDB and a Tahoe-LAFS grid.

use crate::meta_mysql::{MysqlConfig, MysqlMeta};
use crate::meta_sqlite::SqliteMeta;
use crate::objects::{self, ObjectDir};
use crate::staging::{ObjectReader, ObjectSource, Staging};
use crate::tahoe::{self, StorageStrategy, TahoeClient};
use crate::block_cache::{BlockCache, BlockCacheConfig, Fetch, StreamFetch};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use truckeefs_core::{Ino, IoError, IoReply, IoResult, MetaRequest, ObjectId, StoreRequest};

/// The fencing token of an upload lease, attached by the driver to the commit of the uploaded
/// object (see `coord::UploadLease`). A metadata store applies the update of inode `ino` in that
/// commit only if the row's `fence` column is at most `token`, and then sets it to `token`
/// (`... WHERE ino = ? AND version = ? AND fence <= ?`); otherwise the commit fails with
/// `Conflict`: a host with a later lease committed first. Token 0 (no coordination server, hence
/// no leases) is no check: the store runs its plain update, which leaves the column alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub ino: Ino,
    pub token: u64,
}

impl Fence {
    /// The token a commit's update of inode `ino` is checked against: 0 (none) unless `fence` is
    /// for that inode.
    pub(crate) fn token_for(fence: Option<Fence>, ino: Ino) -> u64 {
        fence.filter(|f| f.ino == ino).map_or(0, |f| f.token)
    }

    /// The message of a fenced update refused although the row is at the version it expected:
    /// `stored` is the row's later token.
    pub(crate) fn refusal(self, version: i64, stored: i64) -> String {
        format!(
            "table inodes: inode {} at version {version} was committed under fencing token {stored}, \
             later than this upload's {} (another host's upload lease came after this one)",
            self.ino, self.token
        )
    }
}

/// The metadata store a mount uses.
#[derive(Debug)]
pub enum MetaBackend {
    /// `meta.sqlite` in the data directory.
    Embedded,
    Mysql(MysqlConfig),
}

/// The object store a mount uses.
// Made once per mount and moved once: the size of the Tahoe variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum StoreBackend {
    /// `objects/` in the data directory.
    Local,
    /// A Tahoe-LAFS grid: file objects linked under `rootcap` as `strategy` says; reads go
    /// through the block cache in the cache directory.
    Tahoe {
        client: TahoeClient,
        rootcap: ObjectId,
        strategy: StorageStrategy,
        cache: BlockCacheConfig,
        /// Trim the block cache this often (`cache_maintenance`, every `sleep`); `None`: only as
        /// it fills past its limit.
        maintenance: Option<std::time::Duration>,
    },
}

impl fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreBackend::Local => f.write_str("Local"),
            StoreBackend::Tahoe { client, rootcap, strategy, cache, .. } => f
                .debug_struct("Tahoe")
                .field("client", client)
                .field("rootcap", rootcap) // ObjectId prints a fingerprint only
                .field("strategy", strategy)
                .field("cache", cache)
                .finish(),
        }
    }
}

/// Both choices, and the coordination server of hosts sharing them; the default is the
/// embedded pair on one host.
#[derive(Debug)]
pub struct Backends {
    pub meta: MetaBackend,
    pub store: StoreBackend,
    pub coordination: Option<crate::coord::CoordConfig>,
}

impl Default for Backends {
    fn default() -> Self {
        Backends { meta: MetaBackend::Embedded, store: StoreBackend::Local, coordination: None }
    }
}

/// An open metadata store.
pub(crate) enum MetaStore {
    Sqlite(SqliteMeta),
    Mysql(MysqlMeta),
}

impl MetaStore {
    pub(crate) fn execute(&mut self, req: &MetaRequest) -> IoResult {
        self.execute_fenced(req, None)
    }

    /// [`MetaStore::execute`], with the fencing token of an upload lease checked by a commit.
    pub(crate) fn execute_fenced(&mut self, req: &MetaRequest, fence: Option<Fence>) -> IoResult {
        match self {
            MetaStore::Sqlite(m) => m.execute_fenced(req, fence),
            MetaStore::Mysql(m) => m.execute_fenced(req, fence),
        }
    }

    /// Whether the last request was a transaction that failed with its outcome unknown: it may
    /// have committed. (SQLite always knows.)
    pub(crate) fn last_in_doubt(&self) -> bool {
        match self {
            MetaStore::Sqlite(_) => false,
            MetaStore::Mysql(m) => m.last_in_doubt(),
        }
    }

    /// The highest fencing token any inode row holds (0 if none).
    pub(crate) fn max_fence(&mut self) -> Result<u64, IoError> {
        match self {
            MetaStore::Sqlite(m) => m.max_fence(),
            MetaStore::Mysql(m) => m.max_fence(),
        }
    }

    /// Every entry naming `ino`, as `(parent, name)`.
    pub(crate) fn names(&mut self, ino: u64) -> Result<Vec<(u64, Vec<u8>)>, IoError> {
        match self {
            MetaStore::Sqlite(m) => m.names(ino),
            MetaStore::Mysql(m) => m.names(ino),
        }
    }

    /// For `status`: which store, never a password.
    pub(crate) fn describe(&self) -> String {
        match self {
            MetaStore::Sqlite(_) => "embedded SQLite".into(),
            MetaStore::Mysql(m) => match m.claim_text() {
                Some(claim) => format!("MySQL/MariaDB {} (claimed: {claim})", m.server()),
                None => format!("MySQL/MariaDB {}", m.server()),
            },
        }
    }
}

/// An open object store.
pub(crate) enum ObjectStore {
    Local(ObjectDir),
    Tahoe { client: Arc<TahoeClient>, rootcap: ObjectId, strategy: StorageStrategy, blocks: Arc<BlockCache> },
}

impl ObjectStore {
    pub(crate) fn execute(&self, staging: &Staging, req: &StoreRequest) -> IoResult {
        match self {
            ObjectStore::Local(dir) => objects::execute_store(dir, staging, req),
            ObjectStore::Tahoe { client, rootcap, strategy, blocks } => match req {
                StoreRequest::Read { object, offset, len } => blocks.read(object, *offset, *len).map(IoReply::Data),
                _ => tahoe::execute_store(client, staging, rootcap, *strategy, req),
            },
        }
    }
}

impl ObjectStore {
    /// For `status`: which store, never a capability.
    pub(crate) fn describe(&self) -> String {
        match self {
            ObjectStore::Local(dir) => format!("local directory {}", dir.dir().display()),
            ObjectStore::Tahoe { client, rootcap, strategy, .. } => {
                format!("Tahoe-LAFS at {}, rootcap {}, {strategy:?}", client.gateway(), rootcap.fingerprint())
            }
        }
    }

    /// The gateway and rootcap when the Tahoe tree mirrors the mount (MIRROR).
    pub(crate) fn mirrored(&self) -> Option<(Arc<TahoeClient>, ObjectId)> {
        match self {
            ObjectStore::Tahoe { client, rootcap, strategy: StorageStrategy::Mirror, .. } => {
                Some((client.clone(), rootcap.clone()))
            }
            _ => None,
        }
    }

    /// Uploads in flight with their progress (a remote store's).
    pub(crate) fn uploads_in_flight(&self) -> Vec<tahoe::UploadStatus> {
        match self {
            ObjectStore::Local(_) => Vec::new(),
            ObjectStore::Tahoe { client, .. } => client.uploads_in_flight(),
        }
    }

    /// Bytes in the block cache and its limit (0 = none), for a remote store.
    pub(crate) fn cache_usage(&self) -> Option<(u64, u64)> {
        match self {
            ObjectStore::Local(_) => None,
            ObjectStore::Tahoe { blocks, .. } => Some((blocks.size(), blocks.max_bytes())),
        }
    }
}

impl ObjectSource for ObjectStore {
    fn open_object(&self, id: &ObjectId) -> Result<ObjectReader<'_>, IoError> {
        match self {
            ObjectStore::Local(dir) => dir.open_object(id),
            ObjectStore::Tahoe { blocks, .. } => blocks.open_object(id),
        }
    }
}

/// A file written again is copied into the staging area from the blocks the cache holds, then
/// the rest of its object in one streamed request.
impl ObjectSource for BlockCache {
    fn open_object(&self, id: &ObjectId) -> Result<ObjectReader<'_>, IoError> {
        let id = id.clone();
        let push = move |size: u64, sink: &mut dyn FnMut(&[u8]) -> bool| self.copy_out(&id, size, sink);
        Ok(ObjectReader::Stream(Box::new(push)))
    }
}

/// The embedded stores belong to this mount alone (it holds the data directory's lock), and no
/// upload runs yet: an object no inode row names is garbage, left by a crash between an upload
/// and its commit (the staged copy is uploaded again) or during a deletion. It goes now, so a
/// crash costs no space for good. Not with a metadata server: other hosts' uploads may be under
/// way there.
fn remove_unreferenced(meta: &mut SqliteMeta, objects: &ObjectDir) {
    match meta.referenced_objects() {
        Ok(keep) => {
            let (count, bytes) = objects.remove_unreferenced(&keep);
            if count > 0 {
                tracing::info!(
                    "{}: removed {count} objects ({bytes} bytes) that no file refers to, left by an interrupted upload or deletion",
                    objects.dir().display()
                );
            }
        }
        Err(e) => tracing::warn!("not looking for objects no file refers to: {e}"),
    }
}

/// Opens what `backends` names. Errors are one line naming the store.
pub(crate) fn open(
    backends: Backends,
    data_dir: &Path,
    cache_dir: &Path,
) -> Result<(MetaStore, ObjectStore), crate::StartError> {
    use crate::StartError;
    let shared = backends.coordination.is_some();
    let mut meta = match backends.meta {
        MetaBackend::Embedded => MetaStore::Sqlite(SqliteMeta::open(&data_dir.join("meta.sqlite"))?),
        MetaBackend::Mysql(config) => {
            let mut meta = MysqlMeta::open(&config).map_err(|e| StartError::Backend(e.to_string()))?;
            // Hosts without a coordination server take turns (see `meta_presence`).
            meta.claim(&config, shared).map_err(StartError::Backend)?;
            MetaStore::Mysql(meta)
        }
    };
    let store = match backends.store {
        StoreBackend::Local => {
            let dir = data_dir.join("objects");
            let objects =
                ObjectDir::open(&dir).map_err(|source| StartError::Dir { path: dir.display().to_string(), source })?;
            if let MetaStore::Sqlite(meta) = &mut meta {
                remove_unreferenced(meta, &objects);
            }
            ObjectStore::Local(objects)
        }
        StoreBackend::Tahoe { client, rootcap, strategy, cache, maintenance } => {
            // The rootcap must name a directory the gateway can reach: say so now, not at the
            // first upload.
            client.stat(&rootcap).map_err(|e| {
                StartError::Backend(format!("rootcap {}: {}", rootcap.fingerprint(), tahoe::redact_caps(&e.to_string())))
            })?;
            let client = Arc::new(client);
            let fetcher = client.clone();
            let fetch: Arc<Fetch> = Arc::new(move |object, offset, len| fetcher.read_range(object, offset, len));
            let streamer = client.clone();
            let stream: Arc<StreamFetch> = Arc::new(move |object, offset, len, piece_len, piece| {
                streamer.read_stream(object, offset, len, piece_len, piece)
            });
            let blocks = Arc::new(BlockCache::new(&cache_dir.join("blocks"), cache, fetch).with_stream(stream));
            if let Some(every) = maintenance {
                blocks.maintain(every);
            }
            ObjectStore::Tahoe { client, rootcap, strategy, blocks }
        }
    };
    Ok((meta, store))
}
