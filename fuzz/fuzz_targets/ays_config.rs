//! The aysfs client configuration (`truckeefs ays mount -c client.toml`) is a file a user
//! writes: no text may panic its parser (TOML, the repair of the design's non-TOML liberties,
//! validation). The module lives in the binary crate `fuse-front`, so it is compiled here from
//! its source file.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../fuse-front/src/ays_mount/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::parse(text);
    }
});
