//! `cargo run --release -p truckeefs-runtime-sim -- --seeds N [--steps S] [--hosts H] [--first SEED]`
//!
//! Runs seeds `first..first+N` and stops at the first failure, printing the command that
//! reproduces it. `--seed N` (or `TRUCKEEFS_SEED=N`) runs one seed; with `--trace-hash` its trace
//! hash is the last line printed.

use std::process::ExitCode;
use std::time::Instant;
use truckeefs_runtime_sim::{run, Options};

struct Args {
    seeds: u64,
    first: u64,
    steps: u64,
    hosts: u64,
    single: Option<u64>,
    trace_hash: bool,
    verbose: bool,
    sequential: bool,
    no_faults: bool,
    strict: bool,
    tail: usize,
    quiet: bool,
    stats: bool,
}

const USAGE: &str = "usage: truckeefs-runtime-sim [--seeds N] [--first SEED] [--steps S] [--hosts H] \
[--seed N] [--trace-hash] [--verbose] [--sequential] [--no-faults] [--strict-errno] [--tail N] [--quiet] [--stats]";

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        seeds: 1,
        first: 0,
        steps: 200,
        hosts: 1,
        single: None,
        trace_hash: false,
        verbose: false,
        sequential: false,
        no_faults: false,
        strict: false,
        tail: 40,
        quiet: false,
        stats: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("seeds") => a.seeds = p.value()?.parse()?,
            Long("first") => a.first = p.value()?.parse()?,
            Long("steps") => a.steps = p.value()?.parse()?,
            Long("hosts") => a.hosts = p.value()?.parse()?,
            Long("seed") => a.single = Some(p.value()?.parse()?),
            Long("trace-hash") => a.trace_hash = true,
            Long("verbose") | Short('v') => a.verbose = true,
            Long("sequential") => a.sequential = true,
            Long("no-faults") => a.no_faults = true,
            Long("strict-errno") => a.strict = true,
            Long("tail") => a.tail = p.value()?.parse()?,
            Long("quiet") | Short('q') => a.quiet = true,
            Long("stats") => a.stats = true,
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if a.single.is_none() {
        if let Ok(s) = std::env::var("TRUCKEEFS_SEED") {
            let seed = s.trim().parse().map_err(|_| lexopt::Error::from(format!("TRUCKEEFS_SEED={s:?} is not a number")))?;
            a.single = Some(seed);
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.hosts == 0 {
        eprintln!("error: --hosts 0: at least one host is needed");
        return ExitCode::from(2);
    }
    let (first, count) = match args.single {
        Some(s) => (s, 1),
        None => (args.first, args.seeds),
    };
    let started = Instant::now();
    let (mut ops, mut faults, mut leaked, mut last_hash) = (0u64, 0u64, 0usize, 0u64);
    let mut divergences: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut histogram: std::collections::BTreeMap<&'static str, (u64, u64)> = Default::default();
    let mut batches: std::collections::BTreeMap<usize, u64> = Default::default();
    for seed in first..first.saturating_add(count) {
        let mut opts = Options::new(seed, args.steps);
        opts.verbose = args.verbose;
        opts.trace_tail = args.tail;
        opts.faults = !args.no_faults;
        opts.strict = args.strict;
        opts.hosts = args.hosts as usize;
        if args.sequential {
            opts.concurrency = 1;
        }
        let result = std::panic::catch_unwind(|| run(opts));
        match result {
            Ok(Ok(stats)) => {
                ops += stats.ops;
                faults += stats.faults;
                leaked += stats.leaked_objects;
                last_hash = stats.trace_hash;
                for (k, (ok, err)) in stats.histogram {
                    let e = histogram.entry(k).or_default();
                    e.0 += ok;
                    e.1 += err;
                }
                for (k, n) in stats.batches {
                    *batches.entry(k).or_default() += n;
                }
                for (k, n) in stats.divergences {
                    let e = divergences.entry(k).or_insert((0, seed));
                    e.0 += n;
                }
                if args.single.is_some() && !args.quiet {
                    println!(
                        "seed {seed}: steps={} ops={} ios={} faults={} crashes={} leaked_objects={}\n  {}",
                        stats.steps, stats.ops, stats.ios, stats.faults, stats.crashes, stats.leaked_objects, stats.profile
                    );
                }
            }
            Ok(Err(failure)) => {
                println!("FAILED {failure}");
                println!(
                    "seeds={} ops={ops} faults={faults} failures=1 ops_per_sec={:.0}",
                    seed - first + 1,
                    ops as f64 / started.elapsed().as_secs_f64()
                );
                return ExitCode::FAILURE;
            }
            Err(_) => {
                // Panics of the core are caught inside the run; this is one of the simulator.
                let mut o = Options::new(seed, args.steps);
                o.concurrency = if args.sequential { 1 } else { o.concurrency };
                o.faults = !args.no_faults;
                o.strict = args.strict;
                o.hosts = args.hosts as usize;
                println!("FAILED seed {seed}: the simulator panicked (message above); rerun with --verbose for the trace");
                println!(
                    "reproduce: TRUCKEEFS_SEED={seed} cargo run --release -p truckeefs-runtime-sim -- --seed {seed} --steps {}{}",
                    args.steps,
                    o.flags()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if args.stats {
        for (k, (ok, err)) in &histogram {
            println!("{k:>16}: {ok:>8} ok {err:>8} errors");
        }
        println!("requests in flight per step: {batches:?}");
    }
    if !args.quiet {
        for (k, (n, seed)) in &divergences {
            println!("kernel-filtered divergence (x{n}, first in seed {seed}): {k}");
        }
    }
    println!(
        "seeds={count} ops={ops} faults={faults} failures=0 ops_per_sec={:.0}{}",
        ops as f64 / secs.max(1e-9),
        if leaked > 0 { format!(" leaked_objects={leaked}") } else { String::new() }
    );
    if args.trace_hash {
        println!("trace_hash={last_hash:016x}");
    }
    ExitCode::SUCCESS
}
