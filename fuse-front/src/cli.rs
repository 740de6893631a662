//! Command-line parsing (lexopt). Every error is one line naming the argument.

use crate::config;
use fuser::MountOption;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub const TTL_DEFAULT: Duration = Duration::from_secs(10);

pub const HELP: &str = "\
truckeefs - a POSIX filesystem whose data lives in a Tahoe-LAFS grid (or a local object directory)

Usage:
  truckeefs mount [OPTIONS] [MOUNTPOINT]   mount in the foreground until unmounted (MOUNTPOINT
                                           defaults to the 'mount' key)
  truckeefs config [-c FILE] [--KEY VALUE...]
                                           print the effective configuration: every key, its
                                           value (secrets as fingerprints) and where it came from
  truckeefs check [-c FILE] [--KEY VALUE...]
                                           self-tests: compatibility (Linux, FUSE), integration
                                           (Tahoe, SQL, Redis answer), functionality (mounts on
                                           a temporary mountpoint; README.md, Self-tests)
  truckeefs status MOUNTPOINT              what a mount is doing: data waiting to upload, uploads
                                           in flight, failures being retried, cache use, stores
  truckeefs ays serve|publish|mount ...    aysfs: cache server, publisher, read-only mounts
                                           ('truckeefs ays --help')
  truckeefs --help | --version

Configuration (README.md, section Configuration): built-in defaults, then the file, then the
environment, then flags, each overriding the one before:
  -c, --config FILE  configuration file (YAML or JSON) of KEY: VALUE lines
  --KEY VALUE        any key, with dashes: --rootcap URI:DIR2:..., --sql-host db:3307,
                     --test-functionality false, --cache-size 10GiB, --cache-ttl inf
                     (secret flags --rootcap, --sql-pass, --auth-token are moved out of the
                     command line at start; the environment or --KEY-file is better)
  environment        KEY (as the Python TruckeeFS read it) or TRUCKEEFS_KEY (wins):
                     sql_host=db or TRUCKEEFS_SQL_HOST=db
  --data-dir DIR     metadata database and object directory
                     (default: $XDG_DATA_HOME/truckeefs, else ~/.local/share/truckeefs)
  --cache-dir DIR    staging area and journal of unsaved data
                     (default: $XDG_CACHE_HOME/truckeefs, else ~/.cache/truckeefs)

Mount options:
  -o OPT[,OPT...]    mount options: ro, rw, allow_other, allow_root, auto_unmount, dev, nodev,
                     suid, nosuid, exec, noexec, noatime, atime, sync, async, dirsync,
                     fsname=NAME, attr_timeout=SECS, upload_delay=SECS,
                     fsync=staged (fsync returns once data is sealed in the local staging
                     area instead of committed to the store),
                     permissions=kernel|core (who checks permissions; default: the kernel
                     on a mount shared with allow_other/allow_root, truckeefs on a private
                     one; default_permissions = permissions=kernel)
  -v, --verbose      more logging (repeat for more); RUST_LOG overrides

Unmount with 'fusermount3 -u MOUNTPOINT', 'umount MOUNTPOINT', Ctrl-C or SIGTERM: pending
uploads are finished before the process exits. Ctrl-C and SIGTERM detach the mount at once; files
still open on it keep working until they are closed.
";

pub enum Command {
    Help,
    Version,
    Mount(MountArgs),
    /// `truckeefs config`: print this configuration.
    Config(config::Loaded),
    /// `truckeefs status MOUNTPOINT`: what the mount is doing.
    Status(PathBuf),
    /// `truckeefs check`: the self-tests of this configuration, with the verbosity.
    Check(config::Loaded, u8),
    Ays(crate::ays_cmd::AysCommand),
}

/// Everything `truckeefs mount` needs. `Debug` shows secrets as fingerprints.
#[derive(Debug)]
pub struct MountArgs {
    pub mountpoint: PathBuf,
    /// The effective configuration; `data_dir`, `cache_dir` and `core.upload_delay` below are
    /// taken from it (`-o upload_delay=` overrides the latter).
    pub settings: config::Settings,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub mount_options: Vec<MountOption>,
    /// Who checks permissions: `None` for the default (the kernel on a shared mount, the core on
    /// a private one); `-o default_permissions` is `Some(Kernel)`.
    pub permissions: Option<Permissions>,
    pub core: truckeefs_core::Config,
    pub ttl: Duration,
    pub verbose: u8,
}

/// Who checks permissions (`-o permissions=kernel|core`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permissions {
    /// The kernel (FUSE `default_permissions`).
    Kernel,
    /// The core (`truckeefs_core::perm`); on a shared mount the kernel then caches no entries or
    /// attributes, so that every path walk reaches the core.
    Core,
}

/// Why the command line was refused.
pub struct ParseError {
    pub message: String,
    /// A usage mistake, which `--help` explains; otherwise a bad configuration value, which the
    /// one-line message explains.
    pub usage: bool,
}

impl From<String> for ParseError {
    fn from(message: String) -> ParseError {
        ParseError { message, usage: true }
    }
}

impl From<&str> for ParseError {
    fn from(message: &str) -> ParseError {
        ParseError { message: message.to_string(), usage: true }
    }
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ParseError> {
    parse_with_env(args, &config::Env::from_process())
}

/// [`parse`] with the environment given: the configuration reads its keys there.
pub fn parse_with_env(args: impl IntoIterator<Item = OsString>, env: &config::Env) -> Result<Command, ParseError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut sub: Option<String> = None;
    let mut mountpoint = None;
    let mut config_file: Option<PathBuf> = None;
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut verbose = 0u8;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('v') | Long("verbose") => verbose = verbose.saturating_add(1),
            Short('c') | Long("config") => config_file = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            Short('o') => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.into_string().map_err(|_| "-o: options must be UTF-8".to_string())?;
                opts.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
            }
            Long(name) => {
                let name = name.to_string();
                if config::flag_key(&name).is_none() {
                    return Err(format!("--{name}: unknown option (see --help; configuration keys are in README.md, section Configuration)").into());
                }
                let v = p.value().map_err(|e| format!("--{name}: {e}"))?;
                let v = v.into_string().map_err(|_| format!("--{name}: the value must be UTF-8"))?;
                flags.push((name, v));
            }
            Value(v) if sub.is_none() => {
                let v = v.into_string().map_err(|_| "unknown command".to_string())?;
                if v == "ays" {
                    if let Some((key, _)) = env.moved_flags().first() {
                        return Err(format!("--{}: not an option of 'truckeefs ays'", key.replace('_', "-")).into());
                    }
                    let rest = p.raw_args().map_err(|e| e.to_string())?.collect();
                    return crate::ays_cmd::parse(rest, verbose).map(Command::Ays).map_err(ParseError::from);
                }
                if v == "status" {
                    let dir = p.value().map_err(|_| "status: MOUNTPOINT missing".to_string())?;
                    if let Some(extra) = p.next().map_err(|e| e.to_string())? {
                        return Err(format!("status: unexpected argument {}", extra.unexpected()).into());
                    }
                    return Ok(Command::Status(PathBuf::from(dir)));
                }
                if v != "mount" && v != "config" && v != "check" {
                    return Err(format!("unknown command '{v}'").into());
                }
                sub = Some(v);
            }
            Value(v) if mountpoint.is_none() && sub.as_deref() == Some("mount") => mountpoint = Some(PathBuf::from(v)),
            Value(v) => return Err(format!("unexpected argument '{}'", v.to_string_lossy()).into()),
            other => return Err(other.unexpected().to_string().into()),
        }
    }
    let Some(sub) = sub else { return Err("no command given".into()) };
    let loaded = config::load(&config::Inputs { file: config_file.as_deref(), env, flags: &flags })
        .map_err(|message| ParseError { message, usage: false })?;
    if sub == "config" {
        if let Some(o) = opts.first() {
            return Err(format!("-o {o}: mount options belong to 'truckeefs mount'").into());
        }
        return Ok(Command::Config(loaded));
    }
    if sub == "check" {
        if let Some(o) = opts.first() {
            return Err(format!("-o {o}: mount options belong to 'truckeefs mount'").into());
        }
        return Ok(Command::Check(loaded, verbose));
    }
    let settings = loaded.settings;
    let mountpoint = mountpoint
        .or_else(|| settings.mount.clone())
        .ok_or("mount: missing MOUNTPOINT (give it as an argument or set the mount key)")?;
    let core = truckeefs_core::Config { upload_delay: settings.upload_delay, ..Default::default() };
    let mut args = MountArgs {
        mountpoint,
        data_dir: settings.data_dir.clone(),
        cache_dir: settings.cache_dir.clone(),
        settings,
        mount_options: Vec::new(),
        permissions: None,
        core,
        ttl: TTL_DEFAULT,
        verbose,
    };
    for o in opts {
        apply_option(&o, &mut args)?;
    }
    Ok(Command::Mount(args))
}

fn seconds(key: &str, v: &str) -> Result<Duration, String> {
    let secs: f64 = v.parse().map_err(|_| format!("-o {key}={v}: not a number of seconds"))?;
    if !(0.0..=86400.0 * 365.0).contains(&secs) {
        return Err(format!("-o {key}={v}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn apply_option(o: &str, a: &mut MountArgs) -> Result<(), String> {
    let (key, value) = match o.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (o, None),
    };
    let opt = match (key, value) {
        ("ro", None) => MountOption::RO,
        ("rw", None) => MountOption::RW,
        ("allow_other", None) => MountOption::AllowOther,
        ("allow_root", None) => MountOption::AllowRoot,
        ("auto_unmount", None) => MountOption::AutoUnmount,
        ("default_permissions", None) | ("permissions", Some("kernel")) => {
            a.permissions = Some(Permissions::Kernel);
            return Ok(());
        }
        ("permissions", Some("core")) => {
            a.permissions = Some(Permissions::Core);
            return Ok(());
        }
        ("dev", None) => MountOption::Dev,
        ("nodev", None) => MountOption::NoDev,
        ("suid", None) => MountOption::Suid,
        ("nosuid", None) => MountOption::NoSuid,
        ("exec", None) => MountOption::Exec,
        ("noexec", None) => MountOption::NoExec,
        ("atime", None) => {
            a.core.relatime = true;
            return Ok(());
        }
        ("noatime", None) => {
            a.core.relatime = false;
            return Ok(());
        }
        ("sync", None) => MountOption::Sync,
        ("async", None) => MountOption::Async,
        ("dirsync", None) => MountOption::DirSync,
        ("fsname", Some(v)) => MountOption::FSName(v.to_string()),
        ("attr_timeout", Some(v)) => {
            a.ttl = seconds(key, v)?;
            return Ok(());
        }
        ("upload_delay", Some(v)) => {
            a.core.upload_delay = seconds(key, v)?;
            return Ok(());
        }
        ("fsync", Some("staged")) => {
            a.core.staged_is_durable = true;
            return Ok(());
        }
        ("fsync", Some("store")) => {
            a.core.staged_is_durable = false;
            return Ok(());
        }
        _ => return Err(format!("-o {o}: unknown mount option (see --help)")),
    };
    a.mount_options.push(opt);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dirsync cap of no grid, valid in form.
    const CAP: &str = "URI:DIR2:ovjtm4jmq2ghvsxz5sd7bqumya:ylltpw6vsn3yenq2kjdfpxzv3ezmg6w6wy3ud4fv3nbwhmkq3bja";

    /// Parses with an environment of only `HOME`, so that the caller's does not leak in.
    fn parse_env(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env = config::Env::from_pairs(env.iter().copied().chain([("HOME", "/home/u")]));
        parse_with_env(args.iter().map(OsString::from), &env).map_err(|e| e.message)
    }

    fn parse_str(args: &[&str]) -> Result<Command, String> {
        parse_env(args, &[])
    }

    fn mount_args(args: &[&str], env: &[(&str, &str)]) -> MountArgs {
        match parse_env(args, env) {
            Ok(Command::Mount(m)) => m,
            Ok(_) => panic!("not a mount"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn mount_takes_the_configuration() {
        let m = mount_args(
            &["mount", "--data-dir", "/d", "--sql-host", "db:3307", "--rootcap", CAP, "--test-functionality", "false"],
            &[("TRUCKEEFS_CACHE_DIR", "/c"), ("TRUCKEEFS_UPLOAD_DELAY", "7"), ("TRUCKEEFS_MOUNT", "/mnt/cfg")],
        );
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/cfg"), "the mount key stands in for MOUNTPOINT");
        assert_eq!((m.data_dir.as_path(), m.cache_dir.as_path()), (std::path::Path::new("/d"), std::path::Path::new("/c")));
        assert_eq!(m.settings.data_dir, m.data_dir);
        assert_eq!((m.settings.sql_host.as_deref(), m.settings.sql_port), (Some("db"), 3307));
        assert_eq!(m.core.upload_delay, Duration::from_secs(7));
        assert_eq!(m.settings.rootcap.as_ref().map(config::Secret::expose), Some(CAP));
        let debug = format!("{m:?}");
        assert!(!debug.contains(CAP) && debug.contains("secret#"), "{debug}");
        // An argument beats the mount key, and -o upload_delay the configuration's.
        let m = mount_args(&["mount", "-o", "upload_delay=1", "--upload-delay", "9", "/mnt/arg"], &[("mount", "/mnt/cfg")]);
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/arg"));
        assert_eq!(m.core.upload_delay, Duration::from_secs(1));
    }

    #[test]
    fn config_command() {
        let Ok(Command::Config(l)) = parse_str(&["config", "--cache-size", "1k"]) else { panic!("not config") };
        assert_eq!(l.settings.cache_size, 1000);
        assert!(parse_str(&["-v", "config"]).is_ok(), "options before the command");
        assert!(parse_str(&["config", "/mnt"]).err().unwrap().contains("unexpected argument '/mnt'"));
        assert!(parse_str(&["config", "-o", "ro"]).err().unwrap().contains("truckeefs mount"));
        let e = parse_str(&["config", "--cache-size", "lots"]).err().unwrap();
        assert!(e.starts_with("cache_size from flag --cache-size: "), "{e}");
        let e = parse_str(&["config", "--frobnicate", "1"]).err().unwrap();
        assert!(e.starts_with("--frobnicate: unknown option"), "{e}");
        let e = parse_str(&["config", "--sql-host"]).err().unwrap();
        assert!(e.starts_with("--sql-host: "), "{e}");
        // A secret flag moved out of the command line is not silently dropped by ays.
        let e = parse_env(&["ays", "mount", "-c", "x"], &[("TRUCKEEFS_FLAG_AUTH_TOKEN", "t")]).err().unwrap();
        assert!(e.contains("--auth-token") && !e.contains("=t"), "{e}");
    }

    #[test]
    fn mount_with_defaults() {
        let Ok(Command::Mount(m)) = parse_str(&["mount", "/mnt/x"]) else { panic!("not a mount") };
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/x"));
        assert!(m.data_dir.ends_with("truckeefs"));
    }

    #[test]
    fn options_are_checked() {
        let Ok(Command::Mount(m)) = parse_str(&["mount", "-o", "ro,allow_other,fsync=staged", "/m"]) else {
            panic!("not a mount")
        };
        assert!(m.mount_options.contains(&MountOption::RO));
        assert!(m.core.staged_is_durable);
        let err = parse_str(&["mount", "-o", "bogus", "/m"]).err().unwrap();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn who_checks_permissions() {
        let perms = |o: &str| match parse_str(&["mount", "-o", o, "/m"]) {
            Ok(Command::Mount(m)) => Ok(m.permissions),
            Ok(_) => panic!("not a mount"),
            Err(e) => Err(e),
        };
        assert_eq!(perms("rw"), Ok(None));
        assert_eq!(perms("default_permissions"), Ok(Some(Permissions::Kernel)));
        assert_eq!(perms("permissions=kernel"), Ok(Some(Permissions::Kernel)));
        assert_eq!(perms("allow_other,permissions=core"), Ok(Some(Permissions::Core)));
        assert!(perms("permissions=both").unwrap_err().contains("permissions=both"));
    }

    #[test]
    fn missing_mountpoint_is_an_error() {
        assert!(parse_str(&["mount"]).err().unwrap().contains("MOUNTPOINT"));
        assert!(parse_str(&[]).err().unwrap().contains("no command"));
        assert!(parse_str(&["frobnicate"]).err().unwrap().contains("frobnicate"));
    }
}
