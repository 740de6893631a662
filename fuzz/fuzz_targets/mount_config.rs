//! The mount configuration (`truckeefs mount -c FILE`, YAML or JSON) is a file a user writes:
//! no text may panic its loader (the YAML parse, the keys, every value parser, the checks across
//! keys). The module lives in the binary crate `fuse-front`, so it is compiled here from its
//! source files; the input goes through `load` exactly as a `-c` file does, with an empty
//! environment and no flags.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

// An inline module with a path, so that `config.rs`'s own `mod secret; mod value;` resolve to
// `fuse-front/src/config/` as they do in the binary.
#[allow(dead_code, unused_imports)]
#[path = "../../fuse-front/src"]
mod front {
    pub mod config;
}

use front::config::{load, Env, Inputs};

/// One scratch file per fuzzing process: `load` reads the configuration from a path. It is
/// removed after each input, since libFuzzer ends the process without running destructors.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("truckeefs-fuzz-mount-config-{}.yaml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let env = Env::default();
    let _ = load(&Inputs { file: Some(path), env: &env, flags: &[] });
    let _ = std::fs::remove_file(path);
});
