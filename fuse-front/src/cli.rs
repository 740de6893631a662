//! Command-line parsing (lexopt). Every error is one line naming the argument.

use fuser::MountOption;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub const TTL_DEFAULT: Duration = Duration::from_secs(10);

pub const HELP: &str = "\
truckeefs - a POSIX filesystem whose data lives in a Tahoe-LAFS grid (or a local object directory)

Usage:
  truckeefs mount [OPTIONS] MOUNTPOINT     mount in the foreground until unmounted
  truckeefs ays serve|publish|mount ...    aysfs: cache server, publisher, read-only mounts
                                           ('truckeefs ays --help')
  truckeefs --help | --version

Mount options:
  --data-dir DIR     metadata database and object directory
                     (default: $XDG_DATA_HOME/truckeefs, else ~/.local/share/truckeefs)
  --cache-dir DIR    staging area and journal of unsaved data
                     (default: $XDG_CACHE_HOME/truckeefs, else ~/.cache/truckeefs)
  -c, --config FILE  configuration file (YAML or JSON); see README.md
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
uploads are finished before the process exits.
";

pub enum Command {
    Help,
    Version,
    Mount(MountArgs),
    Ays(crate::ays_cmd::AysCommand),
}

pub struct MountArgs {
    pub mountpoint: PathBuf,
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

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut sub: Option<String> = None;
    let mut mountpoint = None;
    let mut data_dir = None;
    let mut cache_dir = None;
    let mut config_file: Option<PathBuf> = None;
    let mut opts: Vec<String> = Vec::new();
    let mut verbose = 0u8;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('v') | Long("verbose") => verbose = verbose.saturating_add(1),
            Long("data-dir") => data_dir = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            Long("cache-dir") => cache_dir = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            Short('c') | Long("config") => config_file = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?)),
            Short('o') => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.into_string().map_err(|_| "-o: options must be UTF-8".to_string())?;
                opts.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
            }
            Value(v) if sub.is_none() => {
                let v = v.into_string().map_err(|_| "unknown command".to_string())?;
                if v == "ays" {
                    let rest = p.raw_args().map_err(|e| e.to_string())?.collect();
                    return crate::ays_cmd::parse(rest, verbose).map(Command::Ays);
                }
                if v != "mount" {
                    return Err(format!("unknown command '{v}'"));
                }
                sub = Some(v);
            }
            Value(v) if mountpoint.is_none() => mountpoint = Some(PathBuf::from(v)),
            Value(v) => return Err(format!("unexpected argument '{}'", v.to_string_lossy())),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if sub.is_none() {
        return Err("no command given".into());
    }
    let mountpoint = mountpoint.ok_or("mount: missing MOUNTPOINT")?;
    let mut args = MountArgs {
        mountpoint,
        data_dir: data_dir.unwrap_or_else(|| default_dir("XDG_DATA_HOME", ".local/share")),
        cache_dir: cache_dir.unwrap_or_else(|| default_dir("XDG_CACHE_HOME", ".cache")),
        mount_options: Vec::new(),
        permissions: None,
        core: truckeefs_core::Config::default(),
        ttl: TTL_DEFAULT,
        verbose,
    };
    if let Some(file) = config_file {
        crate::cli::apply_config_file(&file, &mut args)?;
    }
    for o in opts {
        apply_option(&o, &mut args)?;
    }
    Ok(Command::Mount(args))
}

fn default_dir(var: &str, under_home: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v).join("truckeefs"),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
            home.join(under_home).join("truckeefs")
        }
    }
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

/// The configuration file: a YAML (or JSON) mapping. Only the keys the embedded mode uses are
/// accepted here; an unknown key is an error naming it and the file.
pub fn apply_config_file(file: &std::path::Path, a: &mut MountArgs) -> Result<(), String> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{shown}: {e}"))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{shown}: not valid YAML: {e}"))?;
    let map = match doc {
        serde_yaml_ng::Value::Mapping(m) => m,
        serde_yaml_ng::Value::Null => return Ok(()),
        _ => return Err(format!("{shown}: expected a mapping of keys to values")),
    };
    for (k, v) in map {
        let key = k.as_str().ok_or_else(|| format!("{shown}: a key is not a string"))?.to_string();
        let text = match &v {
            serde_yaml_ng::Value::String(s) => s.clone(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::Bool(b) => b.to_string(),
            _ => return Err(format!("{shown}: key {key}: expected a string, number or boolean")),
        };
        match key.as_str() {
            "cache_dir" => a.cache_dir = PathBuf::from(text),
            "data_dir" => a.data_dir = PathBuf::from(text),
            "mount" => a.mountpoint = PathBuf::from(text),
            "upload_delay" => a.core.upload_delay = seconds(&key, &text)?,
            _ => {
                return Err(format!(
                    "{shown}: key {key}: not supported by this build (the embedded mode knows cache_dir, data_dir, mount, upload_delay)"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
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
        assert!(parse_str(&["frobnicate"]).err().unwrap().contains("frobnicate"));
    }
}
