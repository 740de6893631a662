//! A deterministic simulator for the TruckeeFS core.
//!
//! One seed drives one simulated host: the pure core from `truckeefs-core`, in-memory stores
//! that behave like the real ones ([`meta`], [`objects`], [`staging`]), virtual time with random
//! latencies ([`sim`]), faults and crashes ([`faults`]), and a harness that plays the kernel and
//! checks every answer against a reference model ([`harness`], [`model`], [`ops`]). With
//! `--hosts H`, several hosts share the stores and a Redis stand-in ([`hosts`], [`redis`],
//! [`orphans`]), checked against a close-to-open model ([`multihost`]).
//!
//! Run many seeds with `cargo run --release -p truckeefs-runtime-sim -- --seeds 500`; a failure
//! prints the command that reproduces it.

pub mod faults;
pub mod harness;
pub mod hosts;
pub mod lost;
pub mod meta;
pub mod model;
pub mod multihost;
pub mod objects;
pub mod ops;
pub mod orphans;
pub mod redis;
pub mod rng;
pub mod script;
pub mod sim;
pub mod staging;
pub mod trace;

pub use harness::{run, Failure, Options, Stats};
