//! `truckeefs`: the command line.

mod ays_cmd;
mod ays_mount;
mod cli;
mod config;
mod fuse;
mod selftest;
mod stores;
mod unmount;

use cli::{Command, MountArgs, Permissions};
use std::time::Duration;
use fuser::MountOption;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use truckeefs_runtime_smol::{MountDirs, Runtime};

fn main() -> ExitCode {
    // Before anything else (and before any thread): a secret flag must not stay in `ps`.
    if let Err(e) = config::hide_secret_flags() {
        eprintln!("truckeefs: {e}");
        return ExitCode::from(2);
    }
    let parsed = cli::parse(std::env::args_os().skip(1));
    config::forget_moved_flags();
    let cmd = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("truckeefs: {}", e.message);
            if e.usage {
                eprintln!("Try 'truckeefs --help'.");
            }
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Config(loaded) => {
            print!("{}", loaded.render());
            ExitCode::SUCCESS
        }
        Command::Help => {
            print!("{}", cli::HELP);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("truckeefs {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Ays(cmd) => ays_cmd::run(cmd),
        Command::Check(loaded, verbose) => {
            init_logging(verbose);
            selftest::check(&loaded.settings, verbose, mount)
        }
        Command::Status(dir) => match status(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("truckeefs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Mount(args) => {
            init_logging(args.verbose);
            match mount(args) {
                Ok(()) => ExitCode::SUCCESS,
                // One line: the log goes to the same stderr.
                Err(e) => {
                    eprintln!("truckeefs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // isahc warns of each failed request on its own; the error that follows names it.
        0 => "warn,truckeefs=info,truckeefs_runtime_smol=info,fuser::mnt=off,isahc=error",
        1 => "info,truckeefs=debug,truckeefs_runtime_smol=debug,truckeefs_core=debug,fuser::mnt=off",
        _ => "debug,truckeefs=trace,truckeefs_runtime_smol=trace,truckeefs_core=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Checks that give one clear line instead of a kernel errno; the mountpoint's absolute path.
fn preflight(mountpoint: &Path) -> Result<std::path::PathBuf, String> {
    let shown = mountpoint.display();
    match std::fs::metadata(mountpoint) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("mountpoint {shown} does not exist; create it with mkdir first"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(format!(
                "mountpoint {shown} is a dead mount (transport endpoint is not connected); run 'fusermount3 -u {shown}' first"
            ))
        }
        Err(e) => return Err(format!("mountpoint {shown}: {e}")),
        Ok(m) if !m.is_dir() => return Err(format!("mountpoint {shown} is not a directory")),
        Ok(_) => {}
    }
    let canonical = std::fs::canonicalize(mountpoint).map_err(|e| format!("mountpoint {shown}: {e}"))?;
    if is_mount_point(&canonical) {
        return Err(format!("mountpoint {shown} is busy: something is already mounted there; unmount it first"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse kernel module (modprobe fuse), or pass the device into the container".into());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && which("fusermount3").is_none() {
        return Err("fusermount3 was not found: install the fuse3 package".into());
    }
    Ok(canonical)
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|mp| unescape_mountinfo(mp) == want))
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.exists())
}

fn mount(args: MountArgs) -> Result<(), String> {
    // (Its absolute path, for the unmount: see `unmount`.)
    let mount_path = preflight(&args.mountpoint)?;
    let dirs = MountDirs {
        data_dir: args.data_dir.clone(),
        cache_dir: args.cache_dir.clone(),
        staging_limit: args.settings.staging_size,
    };
    // Permissions: a mount others may use (allow_other, allow_root) gets the kernel's checks; a
    // private one is checked by the core, which saves a request per create or unlink (see
    // truckeefs_core::perm).
    let shared = args.mount_options.iter().any(|o| matches!(o, MountOption::AllowOther | MountOption::AllowRoot));
    let core_checks = match args.permissions {
        Some(Permissions::Kernel) => false,
        Some(Permissions::Core) => true,
        None => !shared,
    };
    // Core checks on a shared mount: the kernel must not answer a path walk from its caches.
    let ttl = if core_checks && shared { Duration::ZERO } else { args.ttl };
    let replies = fuse::Replies::new(ttl);
    let mut core = args.core.clone();
    core.check_permissions = core_checks;
    let multi_host = stores::shared(&args.settings);
    core.multi_host = multi_host;
    // With a coordination server the hosts list their open files there: a file another host
    // has open outlives its unlink until that host closes it.
    core.shared_opens = multi_host && args.settings.redis_host.is_some();
    // FUSE requests carry no supplementary groups. A private mount's callers are its owner, whose
    // groups this process has; on a shared mount only the caller's primary group counts.
    core.groups = if core_checks && !shared { supplementary_groups() } else { Vec::new() };
    selftest::before_mount(&args.settings, args.verbose)?;
    let runtime = Runtime::start(&dirs, stores::backends(&args.settings)?, core, Box::new(fuse::ReplySink(replies.clone())))
        .map_err(|e| e.to_string())?;
    let shutdown: fuse::ShutdownResult = Arc::new(Mutex::new(None));
    let fs = fuse::FuseFs::new(runtime, replies.clone(), shutdown.clone(), multi_host);

    let mut options = vec![
        MountOption::FSName("truckeefs".into()),
        MountOption::Subtype("truckeefs".into()),
    ];
    if !core_checks {
        options.push(MountOption::DefaultPermissions);
    }
    options.extend(args.mount_options.iter().cloned());
    let mut session = fuser::Session::new(fs, &args.mountpoint, &options)
        .map_err(|e| format!("cannot mount {}: {e}", args.mountpoint.display()))?;
    replies.set_notifier(session.notifier());
    let functionality = selftest::after_mount(&args.settings, &mount_path, args.verbose);
    tracing::info!(
        mountpoint = %args.mountpoint.display(),
        data_dir = %args.data_dir.display(),
        cache_dir = %args.cache_dir.display(),
        "mounted"
    );

    // SIGTERM, SIGINT and SIGHUP unmount (lazily: open files keep being served until they are
    // closed), then the session ends and every pending upload is finished.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        let mut arriving = signals.forever();
        if let Some(sig) = arriving.next() {
            tracing::info!(signal = sig, "unmounting");
            if let Err(e) = unmount::lazy(&mount_path) {
                tracing::error!("{e}");
            }
        }
        for sig in arriving {
            tracing::info!(signal = sig, "unmounting already: the session ends once the files open on it are closed");
        }
    });

    let run = session.run();
    // Dropping the session calls `destroy`, which waits for the uploads.
    drop(session);
    signal_handle.close();
    functionality.finish()?;
    run.map_err(|e| format!("FUSE session failed: {e}"))?;
    let result = shutdown.lock().unwrap_or_else(|e| e.into_inner()).take();
    match result {
        Some(r) => r,
        None => Ok(()),
    }
}

/// `truckeefs status MOUNTPOINT`: prints the root directory's status attribute.
fn status(dir: &Path) -> Result<(), String> {
    let name = std::ffi::CString::new(truckeefs_runtime_smol::driver::STATUS_XATTR).expect("no NUL in the name");
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: the path contains a NUL byte", dir.display()))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: both strings are NUL-terminated; the buffer holds `buf.len()` bytes.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => format!("{}: not a truckeefs mount", dir.display()),
            _ => format!("{}: {e}", dir.display()),
        });
    }
    buf.truncate(n as usize);
    print!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// This process's supplementary groups: those of every caller of a private mount.
fn supplementary_groups() -> Vec<u32> {
    // SAFETY: getgroups with a zero size only counts; the second call fills at most `n` entries
    // of a buffer that holds `n`.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(got.max(0) as usize);
    groups
}
