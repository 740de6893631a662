//! Self-tests, as the Python TruckeeFS ran them at start (`test_compatibility`,
//! `test_integration`, `test_functionality`), and `truckeefs check`, which runs them on demand.
//!
//! | suite | checks | when |
//! | --- | --- | --- |
//! | compatibility ([`compat`]) | Linux, kernel version, FUSE in the kernel, `/dev/fuse`, `fusermount3` | before mounting |
//! | integration ([`services`]) | the Tahoe gateway answers and sees storage servers; the rootcap is a directory we can write; the SQL server takes our credentials and the database is usable; Redis answers and keeps a key under `redis_prefix` | before mounting |
//! | functionality ([`functional`]) | create, write, fsync, read, stat, mkdir, readdir, rename, copy, ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, unlink, rmdir | right after the mount is up, in a private hidden directory that is removed again; at mount only when the root is empty (a fresh filesystem, as the Python release required) |
//!
//! A failure before mounting stops the mount with one line naming the service; a failed
//! functionality test unmounts. Every check prints one line (`ok`, `FAILED` or `skipped`, the
//! suite, what was checked): to stderr at mount with `-v`, to stdout for `truckeefs check`.
//! No line contains a secret: caps, passwords and tokens appear only as fingerprints.

mod compat;
mod functional;
mod services;

use crate::cli::{MountArgs, TTL_DEFAULT};
use crate::config::Settings;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::thread::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Compatibility,
    Integration,
    Functionality,
}

impl Suite {
    /// The configuration key that turns the suite on or off at mount.
    fn key(self) -> &'static str {
        match self {
            Suite::Compatibility => "test_compatibility",
            Suite::Integration => "test_integration",
            Suite::Functionality => "test_functionality",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Suite::Compatibility => "compatibility",
            Suite::Integration => "integration",
            Suite::Functionality => "functionality",
        })
    }
}

/// Where the lines of a run go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// `truckeefs check`.
    Stdout,
    /// A mount with `-v`.
    Stderr,
    /// A mount without `-v`: only the failure, as the mount's error.
    Quiet,
}

/// The outcome of one suite or more: counts, and the failures' lines.
#[derive(Debug)]
pub struct Report {
    echo: Echo,
    pub passed: usize,
    pub skipped: usize,
    /// `suite: what failed`, one line each.
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(echo: Echo) -> Report {
        Report { echo, passed: 0, skipped: 0, failures: Vec::new() }
    }

    fn line(&self, status: &str, suite: Suite, text: &str) {
        match self.echo {
            Echo::Stdout => println!("{status:<8}{:<14}{text}", suite.to_string()),
            Echo::Stderr => eprintln!("truckeefs: self-test {status:<8}{:<14}{text}", suite.to_string()),
            Echo::Quiet => {}
        }
    }

    pub fn ok(&mut self, suite: Suite, text: impl fmt::Display) {
        self.passed += 1;
        self.line("ok", suite, &one_line(text));
    }

    pub fn failed(&mut self, suite: Suite, text: impl fmt::Display) {
        let text = one_line(text);
        self.line("FAILED", suite, &text);
        self.failures.push(format!("{suite}: {text}"));
    }

    pub fn skip(&mut self, suite: Suite, text: impl fmt::Display) {
        self.skipped += 1;
        self.line("skipped", suite, &one_line(text));
    }

    /// Records `result` (what was checked, or why it failed); true if it passed.
    pub fn check(&mut self, suite: Suite, result: Result<String, String>) -> bool {
        match result {
            Ok(text) => {
                self.ok(suite, text);
                true
            }
            Err(text) => {
                self.failed(suite, text);
                false
            }
        }
    }

    fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.skipped += other.skipped;
        self.failures.extend(other.failures);
    }

    /// The mount's one-line error for the failures of `suite`, if any.
    fn error(&self, suite: Suite) -> Result<(), String> {
        let Some(first) = self.failures.first() else { return Ok(()) };
        let more = match self.failures.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Err(format!(
            "self-test failed: {first}{more}; 'truckeefs check' lists every check, {} false skips them",
            suite.key()
        ))
    }
}

/// A message from a server might carry line breaks; a check is one line.
fn one_line(text: impl fmt::Display) -> String {
    text.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The echo of a mount's checks.
fn mount_echo(verbose: u8) -> Echo {
    if check_mode() {
        Echo::Stdout
    } else if verbose > 0 {
        Echo::Stderr
    } else {
        Echo::Quiet
    }
}

/// At mount, before anything starts: the compatibility and integration tests the settings ask
/// for. The error is one line naming what failed.
pub fn before_mount(settings: &Settings, verbose: u8) -> Result<(), String> {
    let echo = mount_echo(verbose);
    if settings.test_compatibility {
        let mut r = Report::new(echo);
        compat::run(&mut r);
        r.error(Suite::Compatibility)?;
    }
    if settings.test_integration {
        let mut r = Report::new(echo);
        services::run(settings, &mut r);
        r.error(Suite::Integration)?;
    }
    Ok(())
}

/// The functionality tests of a mount, running beside its FUSE session.
pub struct Functionality {
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// At mount, right after the filesystem is mounted (and before its session runs, so the tests
/// run on a thread of their own): starts the functionality tests if `test_functionality` is on.
/// When they fail, they unmount (`mountpoint`, absolute), and [`Functionality::finish`]
/// returns the error.
pub fn after_mount(settings: &Settings, mountpoint: &Path, verbose: u8) -> Functionality {
    if !settings.test_functionality {
        return Functionality { thread: None };
    }
    let echo = mount_echo(verbose);
    let root = mountpoint.to_path_buf();
    let checking = check_mode();
    let thread = std::thread::Builder::new().name("truckeefs-selftest".into()).spawn(move || {
        let mut r = Report::new(echo);
        functional::run(&root, !checking, &mut r);
        let result = r.error(Suite::Functionality);
        if checking {
            // `truckeefs check` mounted only for these tests.
            if let Ok(mut tally) = CHECK_RUN.lock() {
                if let Some(t) = tally.as_mut() {
                    t.merge(r);
                }
            }
        }
        if result.is_err() || checking {
            tracing::debug!(mountpoint = %root.display(), "self-test done; unmounting");
            if let Err(e) = crate::unmount::lazy(&root) {
                tracing::error!("{e}");
            }
        }
        result
    });
    match thread {
        Ok(t) => Functionality { thread: Some(t) },
        Err(e) => {
            tracing::warn!("functionality self-test not run: cannot start its thread: {e}");
            Functionality { thread: None }
        }
    }
}

impl Functionality {
    /// After the session ended: the tests' error, if they failed.
    pub fn finish(mut self) -> Result<(), String> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err("self-test failed: the functionality tests stopped unexpectedly".into()),
        }
    }
}

/// `Some` while `truckeefs check` runs its functionality tests through a mount: the tally of
/// that mount's tests. Those tests then print to stdout, run even when the root is not empty (they
/// touch only their private directory), and unmount when done.
static CHECK_RUN: Mutex<Option<Report>> = Mutex::new(None);

fn check_mode() -> bool {
    CHECK_RUN.lock().map(|t| t.is_some()).unwrap_or(false)
}

/// `truckeefs check`: compatibility and integration, then functionality through a mount of the
/// configured filesystem on a temporary mountpoint (by `mount`, the very code of
/// `truckeefs mount`). Exit status 0 only if every check passed.
pub fn check(settings: &Settings, verbose: u8, mount: fn(MountArgs) -> Result<(), String>) -> ExitCode {
    let mut r = Report::new(Echo::Stdout);
    compat::run(&mut r);
    let compatible = r.failures.is_empty();
    services::run(settings, &mut r);
    let integrated = r.failures.is_empty();
    if !compatible {
        r.skip(Suite::Functionality, "not run: this system cannot mount the filesystem (see above)");
    } else if !integrated {
        r.skip(Suite::Functionality, "not run: a store the filesystem needs failed (see above)");
    } else {
        functionality_by_mount(settings, verbose, mount, &mut r);
    }
    let total = r.passed + r.failures.len();
    if r.failures.is_empty() {
        println!("all {total} checks passed ({} skipped)", r.skipped);
        ExitCode::SUCCESS
    } else {
        println!("{} of {total} checks FAILED ({} skipped)", r.failures.len(), r.skipped);
        ExitCode::FAILURE
    }
}

fn functionality_by_mount(settings: &Settings, verbose: u8, mount: fn(MountArgs) -> Result<(), String>, r: &mut Report) {
    let mountpoint = match private_mountpoint() {
        Ok(m) => m,
        Err(e) => return r.failed(Suite::Functionality, e),
    };
    let mut settings = settings.clone();
    settings.test_compatibility = false;
    settings.test_integration = false;
    settings.test_functionality = true;
    let core = truckeefs_core::Config { upload_delay: settings.upload_delay, ..Default::default() };
    let args = MountArgs {
        mountpoint: mountpoint.clone(),
        data_dir: settings.data_dir.clone(),
        cache_dir: settings.cache_dir.clone(),
        settings,
        mount_options: Vec::new(),
        permissions: None,
        core,
        ttl: TTL_DEFAULT,
        verbose,
    };
    if let Ok(mut t) = CHECK_RUN.lock() {
        *t = Some(Report::new(Echo::Stdout));
    }
    let mounted = mount(args);
    let tally = CHECK_RUN.lock().ok().and_then(|mut t| t.take());
    let _ = std::fs::remove_dir(&mountpoint);
    let ran = tally.map(|t| {
        let ran = t.passed + t.skipped + t.failures.len() > 0;
        r.merge(t);
        ran
    });
    match mounted {
        // The tests' own failure is already in the tally.
        Err(_) if ran == Some(true) => {}
        Err(e) => r.failed(Suite::Functionality, format!("cannot mount the configured filesystem to test it: {e}")),
        Ok(()) if ran != Some(true) => r.failed(Suite::Functionality, "the tests did not run"),
        Ok(()) => {}
    }
}

/// A name no one else uses, for a scratch entry (hidden: it starts with a dot).
fn scratch_name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!(".truckeefs-selftest-{}-{nanos:x}", std::process::id())
}

/// A new empty directory only this user can enter, under the temporary directory.
fn private_mountpoint() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("truckeefs-check-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a temporary mountpoint in {}: {e}", base.display())),
        }
    }
    Err(format!("cannot create a temporary mountpoint in {}: every name is taken", base.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_with_env, Command};
    use crate::config::Env;

    #[test]
    fn the_mount_error_is_one_line_naming_the_first_failure() {
        let mut r = Report::new(Echo::Quiet);
        r.ok(Suite::Integration, "tahoe gateway answers");
        assert_eq!(r.error(Suite::Integration), Ok(()));
        r.failed(Suite::Integration, "sql server db:3306/x: access\ndenied");
        r.failed(Suite::Integration, "redis db:6379/0: cannot connect");
        let e = r.error(Suite::Integration).unwrap_err();
        assert!(e.starts_with("self-test failed: integration: sql server db:3306/x: access denied (and 1 more);"), "{e}");
        assert!(e.contains("(and 1 more)") && e.contains("test_integration false"), "{e}");
        assert_eq!((r.passed, r.failures.len()), (1, 2));
    }

    #[test]
    fn check_parses_like_config() {
        let env = Env::from_pairs([("HOME", "/home/u")]);
        let parse = |args: &[&str]| parse_with_env(args.iter().map(std::ffi::OsString::from), &env);
        match parse(&["-v", "check", "--sql-host", "db:3307"]) {
            Ok(Command::Check(loaded, verbose)) => {
                assert_eq!((loaded.settings.sql_host.as_deref(), loaded.settings.sql_port, verbose), (Some("db"), 3307, 1));
            }
            _ => panic!("not a check"),
        }
        assert!(parse(&["check", "/mnt"]).err().unwrap().message.contains("unexpected argument '/mnt'"));
        assert!(parse(&["check", "-o", "ro"]).err().unwrap().message.contains("truckeefs mount"));
    }
}
