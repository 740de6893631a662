//! aysfs mounts: read-only, content-addressed trees (`docs/ays-protocol.md`), as pure logic.
//!
//! - [`value`]: parsing of md5 digests, metadata values, listings and trees;
//! - [`tree`]: the read-only tree of one mount (inodes, lookup, readdir, attributes);
//! - [`chain`]: the store-chain policy (order, next layer, write-back);
//! - [`expiry`]: expiration of the local cache layer;
//! - [`overlay`]: the debug overlay (writable paths stored in a debug Redis);
//! - [`machine`]: [`AysCore`], the state machine of one mount, driven like [`crate::Core`]:
//!   kernel requests in, [`AysEffect`]s out (replies, Redis commands, HTTP requests, blob-cache
//!   operations, kernel notices and log lines), completions and timeouts back in.
//!
//! The runtime (`truckeefs_runtime_smol::ays::client`) performs the effects: it owns the Redis
//! connections, the HTTP client (with credentials) and the on-disk blob cache, computes the md5 of
//! every blob it receives and installs into the blob cache only a blob whose md5 is the one asked
//! for; the core decides everything else.

pub mod chain;
pub mod expiry;
pub mod machine;
pub mod overlay;
pub mod tree;
pub mod value;

pub use chain::{Attempt, Fetch, Goods, Layer, LayerNames, Layers};
pub use machine::{AysCore, MountSpec};
pub use value::{FileMeta, Md5};

use crate::op::{KernelNotice, Reply};
use crate::types::{IoId, RequestId};
use bytes::Bytes;

/// Which Redis a command goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedisServer {
    /// The local cache (`[[cache.local]]`).
    Local,
    /// The mount's debug Redis (`[[debug]]` named by the mount's `debug`).
    Debug,
}

/// One argument of a Redis command.
#[derive(Clone, PartialEq, Eq)]
pub enum Arg {
    Bytes(Bytes),
    /// The content of this blob, read by the runtime from its blob cache.
    Blob(Md5),
}

impl std::fmt::Debug for Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arg::Bytes(b) if b.len() <= 64 => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Arg::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Arg::Blob(m) => write!(f, "<blob {m}>"),
        }
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Bytes(Bytes::from(s.into_bytes()))
    }
}

/// One Redis command: its name and arguments (`["HGET", "md:x", "/"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisCmd(pub Vec<Arg>);

impl RedisCmd {
    pub fn new<I: IntoIterator<Item = Arg>>(args: I) -> RedisCmd {
        RedisCmd(args.into_iter().collect())
    }
}

/// Which HTTP server a request goes to (the runtime knows the URL and credentials).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpServer {
    /// The i-th `[[cache.grid]]`.
    Grid(usize),
    /// The mount's `ays.stor`.
    Store,
}

/// A route of `docs/ays-protocol.md`. The runtime builds the URL: cache routes on a grid's URL,
/// store routes on the store's URL, or on `{grid}/stor` when sent to a grid cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /md/{clientid}/{mountname}/{path}?fetch=N`; `dir` is a path in the tree (`/`, `/a`).
    CacheMd { client: String, mount: String, dir: String, fetch: u8 },
    /// `GET /{domain}/{md5}?fetch=N`
    CacheBlob { domain: String, md5: Md5, fetch: u8 },
    /// `GET S/md/{ays_id}`
    StoreMd { ays_id: String },
    /// `GET S/blob/{domain}/{md5}`
    StoreBlob { domain: String, md5: Md5 },
    /// `PUT S/md/{ays_id}` with the whole tree.
    PutStoreMd { ays_id: String, body: Bytes },
    /// `PUT S/blob/{domain}/{md5}` with the blob from the blob cache.
    PutStoreBlob { domain: String, md5: Md5 },
}

/// Operations on the runtime's on-disk blob cache (content-addressed by md5) and on the
/// per-handle scratch copies of files being written through the debug overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOp {
    /// Open blob `md5` for reading under `handle`. Reply: [`AysReply::Present`] with its length,
    /// or `None` if the cache does not have it (nothing is opened then).
    Open { handle: u64, md5: Md5 },
    /// Whether the cache has `md5`. Reply: [`AysReply::Present`].
    Has { md5: Md5 },
    /// Read from what `handle` has open (a blob or a scratch copy). Reply: [`AysReply::Data`].
    Read { handle: u64, offset: u64, len: u32 },
    /// Close what `handle` has open (dropping a scratch copy). Reply: [`AysReply::Done`].
    Close { handle: u64 },
    /// Give `handle` a writable scratch copy of blob `from` (or an empty one), replacing what it
    /// had open. Reply: [`AysReply::Done`].
    Scratch { handle: u64, from: Option<Md5> },
    /// Reply: [`AysReply::Written`].
    Write { handle: u64, offset: u64, data: Bytes },
    /// Reply: [`AysReply::Done`].
    Truncate { handle: u64, size: u64 },
    /// Hash the scratch copy of `handle` and install it in the cache as a blob (the scratch copy
    /// stays open). Reply: [`AysReply::Stored`].
    Commit { handle: u64 },
}

/// An I/O the core asks for. Exactly one completion comes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AysIo {
    /// Commands sent as one pipeline. Reply: [`AysReply::Redis`], one value per command.
    /// With `into_blob`, the last command's value (a bulk string) goes into the blob cache
    /// instead of the reply: its value in the reply is [`RedisValue::Stored`] (or `Nil`), and
    /// the runtime installs it only if its md5 is `into_blob`.
    Redis { server: RedisServer, cmds: Vec<RedisCmd>, into_blob: Option<Md5> },
    /// Reply: [`AysReply::Http`]. With `into_blob`, a 200 body goes into the blob cache as for
    /// Redis (installed only if its md5 matches) and `stored` says what it hashed to.
    Http { server: HttpServer, route: Route, into_blob: Option<Md5> },
    Blob(BlobOp),
}

/// A Redis reply value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisValue {
    Nil,
    Data(Bytes),
    Int(i64),
    Status(String),
    Array(Vec<RedisValue>),
    /// A value that went into the blob cache: the md5 it hashed to and its length.
    Stored { md5: Md5, len: u64 },
}

/// What a completed I/O answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AysReply {
    Redis(Vec<RedisValue>),
    Http { status: u16, body: Bytes, stored: Option<(Md5, u64)> },
    Present(Option<u64>),
    Data(Bytes),
    Written(u32),
    Stored { md5: Md5, len: u64 },
    Done,
}

/// The completion of an I/O: its reply, or an error message (which never holds a secret).
pub type AysResult = Result<AysReply, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// Everything the core asks its runtime to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AysEffect {
    /// Exactly one per request; a positive errno on failure.
    Reply { id: RequestId, result: Result<Reply, i32> },
    Io { io: IoId, request: AysIo },
    Kernel(KernelNotice),
    Log { level: LogLevel, message: String },
}
