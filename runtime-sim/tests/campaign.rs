//! A short campaign: random operations with faults and crashes, checked against the model, with
//! a liveness phase at the end of every seed. `cargo run --release -p truckeefs-runtime-sim --
//! --seeds 500` runs a longer one.

use truckeefs_runtime_sim::{run, Options, Stats};

fn campaign(seeds: std::ops::Range<u64>, steps: u64, tweak: impl Fn(&mut Options)) -> Vec<Stats> {
    seeds
        .map(|seed| {
            let mut opts = Options::new(seed, steps);
            tweak(&mut opts);
            run(opts).unwrap_or_else(|f| panic!("{f}"))
        })
        .collect()
}

/// `TRUCKEEFS_SEED=N cargo test -p truckeefs-runtime-sim --test campaign one_seed_from_the_environment`
/// runs one seed (200 steps, or `TRUCKEEFS_STEPS`) in the test harness.
#[test]
fn one_seed_from_the_environment() {
    let Some(seed) = std::env::var("TRUCKEEFS_SEED").ok().and_then(|s| s.trim().parse().ok()) else { return };
    let steps = std::env::var("TRUCKEEFS_STEPS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(200);
    campaign(seed..seed + 1, steps, |_| {});
}

#[test]
fn fifty_seeds_with_faults_and_crashes() {
    let stats = campaign(0..50, 100, |_| {});
    let ops: u64 = stats.iter().map(|s| s.ops).sum();
    let faults: u64 = stats.iter().map(|s| s.faults).sum();
    let crashes: u64 = stats.iter().map(|s| s.crashes).sum();
    eprintln!("seeds=50 ops={ops} faults={faults} crashes={crashes}");
    assert!(ops > 10_000, "too few requests: {ops}");
    assert!(faults > 0 && crashes > 0, "the campaign injected no faults or crashes");
    // Namespace changes whose transaction was applied and answered with a failure: checked as
    // made (`Harness::checked`).
    let lost: u64 = stats.iter().filter_map(|s| s.histogram.get("answer lost, change made")).map(|(n, _)| n).sum();
    assert!(lost > 0, "no namespace change lost its answer");
}

#[test]
fn twenty_seeds_sequential_without_faults() {
    let stats = campaign(100..120, 150, |o| {
        o.concurrency = 1;
        o.faults = false;
    });
    // Without crashes nothing is lost to garbage either.
    assert_eq!(stats.iter().map(|s| s.leaked_objects).sum::<usize>(), 0);
}

#[test]
fn requests_run_concurrently_and_every_kind_succeeds() {
    let stats = campaign(200..230, 150, |_| {});
    let batches: u64 = stats.iter().map(|s| s.batches.iter().filter(|(n, _)| **n > 1).map(|(_, c)| c).sum::<u64>()).sum();
    assert!(batches > 100, "too few steps with concurrent requests: {batches}");
    let mut ok = std::collections::BTreeMap::new();
    for s in &stats {
        for (k, (good, _)) in &s.histogram {
            *ok.entry(*k).or_insert(0u64) += good;
        }
    }
    for kind in [
        "create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename", "open", "read", "write", "flush",
        "fsync", "release", "truncate", "setattr", "setxattr", "getxattr", "listxattr", "removexattr", "readlink",
        "readdir", "lookup", "getattr", "access", "statfs", "fallocate", "copy_file_range", "getlk", "setlk", "setlkw",
        "getlk (held)", "setlkw (slept)",
    ] {
        assert!(ok.get(kind).copied().unwrap_or(0) > 0, "no successful {kind}: {ok:?}");
    }
}

/// Several hosts share the stores (`--hosts 3`): twenty seeds with faults, crashes of one host,
/// lost leases, delayed invalidations, cut subscriptions (messages lost, then a resync) and time
/// jumps, each ending in the liveness phase.
#[test]
fn twenty_seeds_on_three_hosts() {
    let stats = campaign(0..20, 200, |o| o.hosts = 3);
    let ops: u64 = stats.iter().map(|s| s.ops).sum();
    let crashes: u64 = stats.iter().map(|s| s.crashes).sum();
    assert!(ops > 10_000, "too few requests: {ops}");
    assert!(crashes > 0, "no host crashed in twenty seeds");
    let count = |s: &Stats, what: &str| -> u64 {
        let after = s.profile.split(&format!(" {what} ")).nth(1).unwrap_or_default();
        after.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let resyncs: u64 = stats.iter().map(|s| count(s, "resyncs")).sum();
    let lost: u64 = stats.iter().map(|s| count(s, "lost")).sum();
    assert!(resyncs > 0 && lost > 0, "no subscription was cut in twenty seeds (resyncs {resyncs}, lost {lost})");
    let collections: u64 = stats.iter().map(|s| count(s, "collections")).sum();
    assert!(collections > 0, "no host collected a dead host's orphans in twenty seeds");
    let resolved: u64 = stats.iter().map(|s| count(s, "resolved")).sum();
    assert!(resolved > 0, "no two hosts wrote one file at once in twenty seeds");
}

/// Several hosts: creates, mkdirs, unlinks, rmdirs and renames whose transaction was applied and
/// answered with a failure are taken as made (`Mh::made_anyway`); the hosts agree on the names
/// all the same.
#[test]
fn namespace_changes_that_lost_their_answer_on_three_hosts() {
    let stats = campaign(20..60, 200, |o| o.hosts = 3);
    let made: u64 = stats.iter().filter_map(|s| s.histogram.get("answer lost, change made")).map(|(n, _)| n).sum();
    assert!(made > 0, "no namespace change lost its answer in forty seeds");
}
