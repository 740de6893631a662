//! One seed, one run: the same seed gives the same trace hash, in this process and in another
//! (where every hash map of the core gets different random keys).

use std::process::Command;
use truckeefs_runtime_sim::{run, Options};

fn hash(seed: u64, steps: u64, concurrency: usize) -> u64 {
    let mut opts = Options::new(seed, steps);
    opts.concurrency = concurrency;
    match run(opts) {
        Ok(stats) => stats.trace_hash,
        Err(f) => panic!("{f}"),
    }
}

#[test]
fn same_seed_same_trace() {
    for seed in [0, 1, 2, 3, 17, 226, 648] {
        assert_eq!(hash(seed, 120, 4), hash(seed, 120, 4), "seed {seed}");
        assert_eq!(hash(seed, 60, 1), hash(seed, 60, 1), "seed {seed}, sequential");
    }
}

#[test]
fn different_seeds_differ() {
    let hashes: std::collections::BTreeSet<u64> = (0..8).map(|s| hash(s, 40, 4)).collect();
    assert_eq!(hashes.len(), 8);
}

#[test]
fn same_trace_in_another_process() {
    let exe = env!("CARGO_BIN_EXE_truckeefs-runtime-sim");
    // (Seed 61 has the other writer pick a file, once from a hash map's order.)
    for seed in [5, 40, 61, 716] {
        let out = |()| {
            let o = Command::new(exe)
                .args(["--seed", &seed.to_string(), "--steps", "200", "--trace-hash", "--quiet"])
                .env_remove("TRUCKEEFS_SEED")
                .output()
                .expect("run the simulator");
            assert!(o.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&o.stdout));
            let text = String::from_utf8(o.stdout).unwrap();
            let last = text.lines().last().unwrap_or_default().to_string();
            assert!(last.starts_with("trace_hash="), "last line: {last:?}");
            last
        };
        let a = out(());
        assert_eq!(a, out(()), "seed {seed}");
        assert_eq!(a, format!("trace_hash={:016x}", hash(seed, 200, 4)), "seed {seed}: process vs library");
    }
}

#[test]
fn env_var_selects_one_seed() {
    let exe = env!("CARGO_BIN_EXE_truckeefs-runtime-sim");
    let o = Command::new(exe).args(["--steps", "30", "--trace-hash", "--quiet"]).env("TRUCKEEFS_SEED", "9").output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("seeds=1 "), "{text}");
    assert_eq!(text.lines().last().unwrap(), format!("trace_hash={:016x}", hash(9, 30, 4)));
}

#[test]
fn zero_hosts_is_refused_clearly() {
    let exe = env!("CARGO_BIN_EXE_truckeefs-runtime-sim");
    let o = Command::new(exe).args(["--hosts", "0", "--seeds", "1"]).env_remove("TRUCKEEFS_SEED").output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least one host"));
}

/// Several hosts on one clock: the same seed gives the same trace, in this process and in
/// another, and the hosts' interleaving makes different seeds differ.
#[test]
fn several_hosts_same_seed_same_trace() {
    let multi = |seed: u64| {
        let mut opts = Options::new(seed, 150);
        opts.hosts = 3;
        match run(opts) {
            Ok(stats) => stats.trace_hash,
            Err(f) => panic!("{f}"),
        }
    };
    for seed in [0, 3, 46, 151] {
        assert_eq!(multi(seed), multi(seed), "seed {seed}, 3 hosts");
    }
    assert_ne!(multi(0), multi(1));
    assert_ne!(multi(0), hash(0, 150, 4), "3 hosts and 1 host run differently");
    let exe = env!("CARGO_BIN_EXE_truckeefs-runtime-sim");
    let o = Command::new(exe)
        .args(["--seed", "46", "--steps", "150", "--hosts", "3", "--trace-hash", "--quiet"])
        .env_remove("TRUCKEEFS_SEED")
        .output()
        .expect("run the simulator");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().last().unwrap(), format!("trace_hash={:016x}", multi(46)), "process vs library");
}
