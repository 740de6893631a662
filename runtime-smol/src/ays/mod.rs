//! aysfs: read-only, content-addressed trees (see `docs/ays-protocol.md` and `docs/ays.md`).
//!
//! - [`proto`]: the shared formats of `docs/ays-protocol.md` (metadata values, URL segments,
//!   JSON bodies, URL builders); the client reuses them;
//! - [`store`]: where a cache server keeps metadata, blobs and what its clients announced
//!   (embedded: SQLite plus a fanned-out blob directory; or Redis);
//! - [`http`]: a small bounded HTTP/1.1 server (one thread per connection, limits, timeouts);
//! - [`server`]: `truckeefs ays serve`, the routes and the four fetch modes;
//! - [`publish`]: `truckeefs ays publish`, uploads a directory tree into a store.

pub mod client;
pub mod http;
pub mod md5sum;
pub mod proto;
pub mod publish;
pub mod server;
pub mod store;
