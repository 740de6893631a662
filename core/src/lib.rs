//! The TruckeeFS core: a pure, synchronous state machine of a POSIX filesystem whose metadata
//! lives in a transactional store and whose file data lives in an object store.
//!
//! The core performs no I/O, reads no clock, starts no thread and draws no global randomness.
//! A runtime drives it (`truckeefs-runtime-smol` for real, `truckeefs-runtime-sim` in the
//! simulator):
//!
//! ```text
//! let mut core = Core::new(Config::default(), now);
//! loop {
//!     // 1. feed one input
//!     core.handle_request(now, wall, id, ctx, op);      // a kernel request
//!     core.handle_completion(now, io, result);          // an I/O the core asked for
//!     core.handle_timeout(now);                         // when poll_timeout() has passed
//!     // 2. drain every output
//!     while let Some(effect) = core.poll_effect() {
//!         match effect {
//!             Effect::Reply { id, result } => { /* answer the kernel */ }
//!             Effect::Io { io, request } => { /* perform it; later feed handle_completion */ }
//!             Effect::Kernel(notice) => { /* invalidate the kernel's cache */ }
//!         }
//!     }
//!     // 3. sleep until the next input or core.poll_timeout()
//! }
//! ```
//!
//! Invariants: every request gets exactly one reply; every I/O gets exactly one completion;
//! a reply that acknowledges a change (create, rename, setattr, ...) is sent only after the
//! metadata transaction carrying it has committed; close answers only once the file's data is
//! sealed in the staging area, fsync only once it is committed upstream.

pub mod ays;
pub mod dir;
pub mod io;
pub mod locks;
pub mod machine;
pub mod meta_order;
pub mod op;
pub mod perm;
pub mod testkit;
pub mod types;

pub use io::*;
pub use machine::{Config, Core, Status};
pub use op::*;
pub use types::*;
