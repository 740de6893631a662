//! The production runtime of TruckeeFS: drives the pure core with real stores.
//!
//! - [`ays`]: the aysfs cache server, store and publisher (`truckeefs ays serve|publish`);
//! - [`backends`]: the choice of metadata and object store;
//! - [`coord`]: coordination between hosts (Redis publish/subscribe of changes);
//! - [`driver`]: the thread that owns the core and performs its effects;
//! - [`meta_mysql`]: the shared metadata store (MySQL/MariaDB);
//! - [`meta_sqlite`]: the embedded metadata store (SQLite);
//! - `mirror`: the Tahoe tree kept in line with the metadata (MIRROR);
//! - [`objects`]: the local object directory, the default object store;
//! - [`staging`]: the staging area and journal of dirty file data;
//! - [`tahoe`]: the Tahoe-LAFS web API client and object store ([`tahoe_json`]: its JSON replies).

pub mod ays;
pub mod backends;
pub mod block_cache;
pub mod coord;
mod curl_easy;
pub mod driver;
pub mod meta_mysql;
pub mod meta_presence;
pub mod meta_sqlite;
mod mirror;
pub mod objects;
pub mod staging;
pub mod tahoe;
pub mod tahoe_json;

pub use backends::{Backends, MetaBackend, StoreBackend};
pub use driver::{MountDirs, Runtime, Sink, StartError};
