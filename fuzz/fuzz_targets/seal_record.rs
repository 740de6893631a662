//! The staging journal record is read from disk at every start: no bytes may panic the parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = truckeefs_runtime_smol::staging::parse_seal(data, 7) {
        assert!(record.mtime.nsec < 1_000_000_000 && record.ctime.nsec < 1_000_000_000);
    }
});
