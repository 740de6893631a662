//! The production runtime of TruckeeFS: drives the pure core with real stores.
//!
//! - [`ays`]: the aysfs cache server, store and publisher (`truckeefs ays serve|publish`);
//! - [`driver`]: the thread that owns the core and performs its effects;
//! - [`meta_sqlite`]: the embedded metadata store (SQLite);
//! - [`objects`]: the local object directory, the default object store;
//! - [`staging`]: the staging area and journal of dirty file data.

pub mod ays;
pub mod driver;
pub mod meta_sqlite;
pub mod objects;
pub mod staging;

pub use driver::{MountDirs, Runtime, Sink, StartError};
