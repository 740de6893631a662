//! The effective configuration of a mount, from (in rising precedence) built-in defaults, the
//! YAML or JSON file given with `-c FILE`, the environment and command-line flags.
//!
//! The keys are those of the Python TruckeeFS (`rootcap`, `sql_host`, `cache_ttl`, ...; see
//! README.md, section Configuration) plus `data_dir`, `upload_delay`, `redis_prefix` and the
//! `KEY_file` forms of the secrets. Each source names a key its own way:
//!
//! | source | name of `sql_host` | an unknown name |
//! | --- | --- | --- |
//! | file | `sql_host` | an error |
//! | environment | `sql_host` (as the Python release read it), then `TRUCKEEFS_SQL_HOST`, which wins | ignored (other programs' variables share the namespace) |
//! | flag | `--sql-host VALUE` or `--sql-host=VALUE` | an error |
//!
//! [`load`] is a pure function of its [`Inputs`] (the environment comes in as a snapshot), so
//! tests need not touch the process environment. Every error is one line naming the key and its
//! source, and never contains a secret's value.

mod secret;
mod value;

pub use secret::{forget_moved_flags, hide_secret_flags, moved_flag_env, Secret, SECRET_KEYS};

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How files are laid out in the Tahoe grid (`backend_storage_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every file object directly under the rootcap; names and the tree only in SQL.
    Flat,
    /// Tahoe directories mirror the tree, so `tahoe ls` on the rootcap shows it.
    Mirror,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Flat => "FLAT",
            Strategy::Mirror => "MIRROR",
        })
    }
}

/// How new file versions are stored in Tahoe (`tahoe_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TahoeFormat {
    /// Immutable CHK files (LIT for the smallest): a new cap per version. The default.
    Chk,
    /// MDMF mutable files (still one per version, so old versions stay readable until dropped).
    Mdmf,
}

impl fmt::Display for TahoeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TahoeFormat::Chk => "CHK",
            TahoeFormat::Mdmf => "MDMF",
        })
    }
}

/// The typed, validated configuration: one field per key, named as the key. Sizes are bytes,
/// durations `Duration`s; an unset optional key is `None`. `Debug` prints secrets as
/// fingerprints.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The Tahoe directory write cap everything lives under; `None` keeps file data in the local
    /// object directory.
    pub rootcap: Option<Secret>,
    /// The Tahoe web API, without a trailing `/`.
    pub tahoe_url: String,
    /// Bearer token for the gateway.
    pub auth_token: Option<Secret>,
    /// Requests in flight to the gateway at most.
    pub max_connections: u32,
    /// A network operation that makes no progress for this long fails.
    pub net_timeout: Duration,
    pub backend_storage_strategy: Strategy,
    pub tahoe_format: TahoeFormat,
    /// Metadata database and object directory of the embedded mode.
    pub data_dir: PathBuf,
    /// Staging area and cache of file data.
    pub cache_dir: PathBuf,
    /// Whether cached data is pruned by `cache_size` and `cache_ttl`.
    pub cache_maintenance: bool,
    /// Bytes of cached file data kept at most; 0 is no limit.
    pub cache_size: u64,
    /// At most this many bytes of changed files wait in the staging area (0: up to the disk's
    /// free space); past it, writes that grow the staged data fail with ENOSPC.
    pub staging_size: u64,
    /// Cached data unused for this long may be pruned; `None` is never (`inf`).
    pub cache_ttl: Option<Duration>,
    /// A file kept open and written is uploaded after this long without writes.
    pub upload_delay: Duration,
    /// `mysql` or `mariadb`, optionally `+driver` (the Python release's SQLAlchemy prefix; the
    /// driver part is ignored).
    pub sql_engine: String,
    /// Host name or address of the SQL server, without a port or IPv6 brackets.
    pub sql_host: Option<String>,
    /// The SQL port: `sql_port`, or the port given in `sql_host`.
    pub sql_port: u16,
    pub sql_db: Option<String>,
    pub sql_user: Option<String>,
    pub sql_pass: Option<Secret>,
    pub sql_ssl: bool,
    /// Host name or address of the Redis server, without a port or IPv6 brackets.
    pub redis_host: Option<String>,
    /// The Redis port: `redis_port`, or the port given in `redis_host`.
    pub redis_port: u16,
    pub redis_db: u32,
    /// Every Redis key this mount uses starts with it; `reset_redis` deletes only those.
    pub redis_prefix: String,
    /// Leases and process states in Redis expire after this long without renewal.
    pub redis_semaphore_timeout: Duration,
    /// Delete this prefix's Redis keys at start (never FLUSHALL).
    pub reset_redis: bool,
    pub test_compatibility: bool,
    pub test_integration: bool,
    pub test_functionality: bool,
    /// Scheduling priority of background work (-20 to 19).
    pub nice: i32,
    /// Interval of background loops.
    pub sleep: Duration,
    /// Mountpoint used when `truckeefs mount` is given none.
    pub mount: Option<PathBuf>,
}

/// Every key, in the order `truckeefs config` prints them.
pub const KEYS: [&str; 33] = [
    "rootcap",
    "tahoe_url",
    "auth_token",
    "max_connections",
    "net_timeout",
    "backend_storage_strategy",
    "tahoe_format",
    "data_dir",
    "cache_dir",
    "cache_maintenance",
    "cache_size",
    "cache_ttl",
    "staging_size",
    "upload_delay",
    "sql_engine",
    "sql_host",
    "sql_port",
    "sql_db",
    "sql_user",
    "sql_pass",
    "sql_ssl",
    "redis_host",
    "redis_port",
    "redis_db",
    "redis_prefix",
    "redis_semaphore_timeout",
    "reset_redis",
    "test_compatibility",
    "test_integration",
    "test_functionality",
    "nice",
    "sleep",
    "mount",
];

/// Keys that name a file holding a secret (its content, trimmed, is the secret).
pub const FILE_KEYS: [&str; 3] = ["rootcap_file", "sql_pass_file", "auth_token_file"];

/// The key spelled `name` in a file or the environment.
fn key_named(name: &str) -> Option<&'static str> {
    KEYS.iter().chain(FILE_KEYS.iter()).find(|k| **k == name).copied()
}

/// The key of the flag `--name` (`name` without the dashes), if it is one.
pub fn flag_key(name: &str) -> Option<&'static str> {
    KEYS.iter().chain(FILE_KEYS.iter()).find(|k| k.replace('_', "-") == name).copied()
}

/// The environment variable names of `key`, in the order they are applied (the last wins).
pub fn env_names(key: &str) -> [String; 2] {
    [key.to_string(), format!("TRUCKEEFS_{}", key.to_ascii_uppercase())]
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    /// The `-c` file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, by name without the leading dashes (`sql-host`).
    Flag(String),
    /// A secret read from the file at `path`, which the key `key` (`sql_pass_file`) named.
    SecretFile { path: PathBuf, key: &'static str, named_by: Box<Source> },
    /// The port part of a host key (`sql_host: db:3307`).
    PortIn { key: &'static str, named_by: Box<Source> },
}

impl Source {
    /// Precedence: a source of a higher rank overrides a lower one.
    fn rank(&self) -> u8 {
        match self {
            Source::Default => 0,
            Source::File(_) => 1,
            Source::Env(_) => 2,
            Source::Flag(_) => 3,
            Source::SecretFile { named_by, .. } | Source::PortIn { named_by, .. } => named_by.rank(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(name) => write!(f, "flag --{name}"),
            Source::SecretFile { path, key, named_by } => write!(f, "file {} ({key} from {named_by})", path.display()),
            Source::PortIn { key, named_by } => write!(f, "port in {key} ({named_by})"),
        }
    }
}

/// A snapshot of the environment. `Debug` shows the names only: values may be secrets.
#[derive(Clone, Default)]
pub struct Env(BTreeMap<OsString, OsString>);

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Env {
    pub fn from_process() -> Env {
        Env(std::env::vars_os().collect())
    }

    #[cfg(test)]
    pub fn from_pairs<K: Into<OsString>, V: Into<OsString>>(pairs: impl IntoIterator<Item = (K, V)>) -> Env {
        Env(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.0.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// The secret flags moved here by [`hide_secret_flags`], as `(flag name, value)`.
    pub fn moved_flags(&self) -> Vec<(&'static str, &OsStr)> {
        SECRET_KEYS.iter().filter_map(|key| self.get(&moved_flag_env(key)).map(|v| (*key, v))).collect()
    }
}

/// What [`load`] reads.
pub struct Inputs<'a> {
    /// `-c FILE`.
    pub file: Option<&'a Path>,
    pub env: &'a Env,
    /// Configuration flags in command-line order, by name without the dashes (`sql-host`); the
    /// later of two wins.
    pub flags: &'a [(String, String)],
}

/// The effective configuration and where each value came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub settings: Settings,
    origins: BTreeMap<&'static str, Source>,
}

impl Loaded {
    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> &Source {
        self.origins.get(key).unwrap_or(&Source::Default)
    }

    /// What `truckeefs config` prints: a header, then one line per key with its value (secrets
    /// as fingerprints) and source.
    pub fn render(&self) -> String {
        let rows: Vec<[String; 3]> =
            KEYS.iter().map(|k| [k.to_string(), show(&self.settings, k), self.source(k).to_string()]).collect();
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0).max("VALUE".len());
        let mut out = format!("{:w0$}  {:w1$}  SOURCE\n", "KEY", "VALUE");
        for [k, v, s] in rows {
            out.push_str(&format!("{k:w0$}  {v:w1$}  {s}\n"));
        }
        out
    }
}

/// The value of `key` as `truckeefs config` prints it; the value parsers read it back (except
/// a secret's fingerprint).
fn show(s: &Settings, key: &str) -> String {
    fn opt<T: fmt::Display>(v: &Option<T>) -> String {
        v.as_ref().map_or_else(|| "(unset)".to_string(), T::to_string)
    }
    let path = |p: &Path| p.display().to_string();
    match key {
        "rootcap" => opt(&s.rootcap),
        "tahoe_url" => s.tahoe_url.clone(),
        "auth_token" => opt(&s.auth_token),
        "max_connections" => s.max_connections.to_string(),
        "net_timeout" => value::show_seconds(s.net_timeout),
        "backend_storage_strategy" => s.backend_storage_strategy.to_string(),
        "tahoe_format" => s.tahoe_format.to_string(),
        "data_dir" => path(&s.data_dir),
        "cache_dir" => path(&s.cache_dir),
        "cache_maintenance" => s.cache_maintenance.to_string(),
        "cache_size" => s.cache_size.to_string(),
        "staging_size" => s.staging_size.to_string(),
        "cache_ttl" => s.cache_ttl.map_or_else(|| "inf".to_string(), value::show_seconds),
        "upload_delay" => value::show_seconds(s.upload_delay),
        "sql_engine" => s.sql_engine.clone(),
        "sql_host" => opt(&s.sql_host),
        "sql_port" => s.sql_port.to_string(),
        "sql_db" => opt(&s.sql_db),
        "sql_user" => opt(&s.sql_user),
        "sql_pass" => opt(&s.sql_pass),
        "sql_ssl" => s.sql_ssl.to_string(),
        "redis_host" => opt(&s.redis_host),
        "redis_port" => s.redis_port.to_string(),
        "redis_db" => s.redis_db.to_string(),
        "redis_prefix" => s.redis_prefix.clone(),
        "redis_semaphore_timeout" => value::show_seconds(s.redis_semaphore_timeout),
        "reset_redis" => s.reset_redis.to_string(),
        "test_compatibility" => s.test_compatibility.to_string(),
        "test_integration" => s.test_integration.to_string(),
        "test_functionality" => s.test_functionality.to_string(),
        "nice" => s.nice.to_string(),
        "sleep" => value::show_seconds(s.sleep),
        "mount" => s.mount.as_deref().map_or_else(|| "(unset)".to_string(), path),
        _ => String::new(),
    }
}

impl Settings {
    /// The built-in defaults. `data_dir` and `cache_dir` follow the XDG base directories of `env`.
    pub fn defaults(env: &Env) -> Settings {
        Settings {
            rootcap: None,
            tahoe_url: "http://127.0.0.1:3456".into(),
            auth_token: None,
            max_connections: 10,
            net_timeout: Duration::from_secs(30),
            backend_storage_strategy: Strategy::Flat,
            tahoe_format: TahoeFormat::Chk,
            data_dir: xdg_dir(env, "XDG_DATA_HOME", ".local/share"),
            cache_dir: xdg_dir(env, "XDG_CACHE_HOME", ".cache"),
            cache_maintenance: true,
            cache_size: 0,
            staging_size: 0,
            cache_ttl: Some(Duration::from_secs(14400)),
            upload_delay: truckeefs_core::Config::default().upload_delay,
            sql_engine: "mysql".into(),
            sql_host: None,
            sql_port: 3306,
            sql_db: None,
            sql_user: None,
            sql_pass: None,
            sql_ssl: false,
            redis_host: None,
            redis_port: 6379,
            redis_db: 0,
            redis_prefix: "truckeefs:".into(),
            redis_semaphore_timeout: Duration::from_secs(1800),
            reset_redis: false,
            test_compatibility: true,
            test_integration: true,
            test_functionality: false,
            nice: 19,
            sleep: Duration::from_secs(60),
            mount: None,
        }
    }
}

/// `$VAR/truckeefs`, else `$HOME/under_home/truckeefs`.
fn xdg_dir(env: &Env, var: &str, under_home: &str) -> PathBuf {
    match env.get(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v).join("truckeefs"),
        _ => {
            let home = env.get("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
            home.join(under_home).join("truckeefs")
        }
    }
}

/// One value given for a key: `None` is an explicitly empty value (YAML `~`, an empty string),
/// which unsets an optional key.
struct Given {
    key: &'static str,
    text: Option<String>,
    source: Source,
}

/// Computes the effective configuration.
pub fn load(inputs: &Inputs<'_>) -> Result<Loaded, String> {
    let mut b = Builder {
        s: Settings::defaults(inputs.env),
        origins: BTreeMap::new(),
        sql_host_port: None,
        redis_host_port: None,
    };
    if let Some(path) = inputs.file {
        b.apply_layer(file_layer(path)?)?;
    }
    b.apply_layer(env_layer(inputs.env)?)?;
    b.apply_layer(flag_layer(inputs.env, inputs.flags)?)?;
    Ok(b.finish())
}

fn file_layer(path: &Path) -> Result<Vec<Given>, String> {
    let source = Source::File(path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{source}: cannot read it: {e}"))?;
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| one_line(&format!("{source}: not valid YAML or JSON: {e}")))?;
    let map = match doc {
        serde_yaml_ng::Value::Mapping(m) => m,
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        _ => return Err(format!("{source}: expected a mapping of keys to values")),
    };
    let mut given = Vec::new();
    for (k, v) in map {
        let Some(name) = k.as_str() else { return Err(format!("{source}: a key is not a string")) };
        let key = key_named(name).ok_or_else(|| unknown_key(name, &source))?;
        let text = match v {
            serde_yaml_ng::Value::Null => None,
            serde_yaml_ng::Value::String(s) => Some(s),
            serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
            serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
            _ => return Err(format!("{key} from {source}: expected a string, number or boolean")),
        };
        given.push(Given { key, text, source: source.clone() });
    }
    Ok(given)
}

fn unknown_key(name: &str, source: &Source) -> String {
    let hint = key_named(&name.to_ascii_lowercase().replace('-', "_")).map(|k| format!("; did you mean {k}?")).unwrap_or_default();
    format!("{name} from {source}: unknown key (the keys are listed in README.md, section Configuration){hint}")
}

fn env_layer(env: &Env) -> Result<Vec<Given>, String> {
    let mut given = Vec::new();
    for key in KEYS.iter().chain(FILE_KEYS.iter()) {
        for name in env_names(key) {
            if let Some(v) = env.get(&name) {
                let source = Source::Env(name);
                let text = utf8(v, key, &source)?;
                given.push(Given { key, text: (!text.is_empty()).then_some(text), source });
            }
        }
    }
    Ok(given)
}

fn flag_layer(env: &Env, flags: &[(String, String)]) -> Result<Vec<Given>, String> {
    let mut given = Vec::new();
    for (key, v) in env.moved_flags() {
        let source = Source::Flag(key.replace('_', "-"));
        let text = utf8(v, key, &source)?;
        given.push(Given { key, text: (!text.is_empty()).then_some(text), source });
    }
    for (name, text) in flags {
        let source = Source::Flag(name.clone());
        let key = flag_key(name).ok_or_else(|| unknown_key(&format!("--{name}"), &source))?;
        given.push(Given { key, text: (!text.is_empty()).then(|| text.clone()), source });
    }
    Ok(given)
}

fn utf8(v: &OsStr, key: &str, source: &Source) -> Result<String, String> {
    v.to_str().map(str::to_string).ok_or_else(|| format!("{key} from {source}: the value is not UTF-8"))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Builder {
    s: Settings,
    origins: BTreeMap<&'static str, Source>,
    /// A port given in `sql_host`, and where.
    sql_host_port: Option<(u16, Source)>,
    redis_host_port: Option<(u16, Source)>,
}

impl Builder {
    fn apply_layer(&mut self, layer: Vec<Given>) -> Result<(), String> {
        // A secret and its file in one source: which one was meant is anyone's guess.
        for secret in SECRET_KEYS {
            let direct = layer.iter().find(|g| g.key == secret);
            let file = layer.iter().find(|g| g.key.strip_suffix("_file") == Some(secret));
            if let (Some(d), Some(f)) = (direct, file) {
                return Err(format!(
                    "{secret} from {} and {} from {}: give one or the other",
                    d.source, f.key, f.source
                ));
            }
        }
        for g in layer {
            self.apply(g)?;
        }
        Ok(())
    }

    fn apply(&mut self, g: Given) -> Result<(), String> {
        let Given { key, text, source } = g;
        if let Some(secret) = key.strip_suffix("_file") {
            let secret = key_named(secret).unwrap_or(key);
            let Some(file) = text else { return self.apply(Given { key: secret, text: None, source }) };
            let path = PathBuf::from(&file);
            let content = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key} from {source}: cannot read {}: {e}", path.display()))?;
            let value = content.trim().to_string();
            if value.is_empty() {
                return Err(format!("{key} from {source}: {} is empty", path.display()));
            }
            let source = Source::SecretFile { path, key, named_by: Box::new(source) };
            return self.apply(Given { key: secret, text: Some(value), source });
        }
        let err = |msg: String| format!("{key} from {source}: {msg}");
        let s = &mut self.s;
        match text {
            None => match key {
                "rootcap" => s.rootcap = None,
                "auth_token" => s.auth_token = None,
                "sql_pass" => s.sql_pass = None,
                "sql_host" => {
                    s.sql_host = None;
                    self.sql_host_port = None;
                }
                "redis_host" => {
                    s.redis_host = None;
                    self.redis_host_port = None;
                }
                "sql_db" => s.sql_db = None,
                "sql_user" => s.sql_user = None,
                "mount" => s.mount = None,
                _ => return Err(err("empty value".into())),
            },
            Some(t) => match key {
                "rootcap" => {
                    let cap = t.trim();
                    value::check_dircap(cap).map_err(err)?;
                    s.rootcap = Some(Secret::new(cap));
                }
                "tahoe_url" => s.tahoe_url = value::parse_url(&t).map_err(err)?,
                "auth_token" => {
                    if t.chars().any(|c| c.is_control() || c == ' ') {
                        return Err(err("a token has no spaces or control characters".into()));
                    }
                    s.auth_token = Some(Secret::new(t));
                }
                "max_connections" => s.max_connections = value::parse_int(&t, 1, 1000).map_err(err)? as u32,
                "net_timeout" => s.net_timeout = positive(value::parse_seconds(&t).map_err(err)?).map_err(err)?,
                "backend_storage_strategy" => {
                    s.backend_storage_strategy = match t.trim().to_ascii_uppercase().as_str() {
                        "FLAT" => Strategy::Flat,
                        "MIRROR" => Strategy::Mirror,
                        _ => return Err(err(format!("{t:?} is neither FLAT nor MIRROR"))),
                    }
                }
                "tahoe_format" => {
                    s.tahoe_format = match t.trim().to_ascii_uppercase().as_str() {
                        "CHK" => TahoeFormat::Chk,
                        "MDMF" => TahoeFormat::Mdmf,
                        _ => return Err(err(format!("{t:?} is neither CHK nor MDMF"))),
                    }
                }
                "data_dir" => s.data_dir = PathBuf::from(t),
                "cache_dir" => s.cache_dir = PathBuf::from(t),
                "cache_maintenance" => s.cache_maintenance = value::parse_bool(&t).map_err(err)?,
                "cache_size" => s.cache_size = value::parse_size(&t).map_err(err)?,
                "staging_size" => s.staging_size = value::parse_size(&t).map_err(err)?,
                "cache_ttl" => s.cache_ttl = value::parse_seconds_or_inf(&t).map_err(err)?,
                "upload_delay" => s.upload_delay = value::parse_seconds(&t).map_err(err)?,
                "sql_engine" => {
                    let engine = t.trim().to_ascii_lowercase();
                    let base = engine.split('+').next().unwrap_or("");
                    if base != "mysql" && base != "mariadb" {
                        return Err(err(format!("{t:?}: only mysql and mariadb (optionally +driver) are supported")));
                    }
                    s.sql_engine = engine;
                }
                "sql_host" => {
                    let (host, port) = value::parse_host(&t).map_err(err)?;
                    s.sql_host = Some(host);
                    self.sql_host_port = port.map(|p| (p, source.clone()));
                }
                "sql_port" => s.sql_port = value::parse_port(&t).map_err(err)?,
                "sql_db" => s.sql_db = Some(name(&t).map_err(err)?),
                "sql_user" => s.sql_user = Some(name(&t).map_err(err)?),
                "sql_pass" => s.sql_pass = Some(Secret::new(t)),
                "sql_ssl" => s.sql_ssl = value::parse_bool(&t).map_err(err)?,
                "redis_host" => {
                    let (host, port) = value::parse_host(&t).map_err(err)?;
                    s.redis_host = Some(host);
                    self.redis_host_port = port.map(|p| (p, source.clone()));
                }
                "redis_port" => s.redis_port = value::parse_port(&t).map_err(err)?,
                "redis_db" => s.redis_db = value::parse_int(&t, 0, u32::MAX as i64).map_err(err)? as u32,
                "redis_prefix" => {
                    if t.is_empty() || t.len() > 100 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
                        return Err(err(format!(
                            "{t:?}: a prefix is 1 to 100 characters without spaces (reset_redis deletes every key under it)"
                        )));
                    }
                    s.redis_prefix = t;
                }
                "redis_semaphore_timeout" => {
                    s.redis_semaphore_timeout = positive(value::parse_seconds(&t).map_err(err)?).map_err(err)?
                }
                "reset_redis" => s.reset_redis = value::parse_bool(&t).map_err(err)?,
                "test_compatibility" => s.test_compatibility = value::parse_bool(&t).map_err(err)?,
                "test_integration" => s.test_integration = value::parse_bool(&t).map_err(err)?,
                "test_functionality" => s.test_functionality = value::parse_bool(&t).map_err(err)?,
                "nice" => s.nice = value::parse_int(&t, -20, 19).map_err(err)? as i32,
                "sleep" => s.sleep = positive(value::parse_seconds(&t).map_err(err)?).map_err(err)?,
                "mount" => s.mount = Some(PathBuf::from(t)),
                _ => return Err(err("unknown key".into())),
            },
        }
        self.origins.insert(key, source);
        Ok(())
    }

    /// A port in a host key overrides the port key unless the port key came from a source of
    /// higher precedence.
    fn finish(mut self) -> Loaded {
        for (host_key, port_key, given) in [
            ("sql_host", "sql_port", self.sql_host_port.take()),
            ("redis_host", "redis_port", self.redis_host_port.take()),
        ] {
            let Some((port, source)) = given else { continue };
            let port_rank = self.origins.get(port_key).map_or(0, Source::rank);
            if source.rank() >= port_rank {
                match port_key {
                    "sql_port" => self.s.sql_port = port,
                    _ => self.s.redis_port = port,
                }
                self.origins.insert(port_key, Source::PortIn { key: host_key, named_by: Box::new(source) });
            }
        }
        Loaded { settings: self.s, origins: self.origins }
    }
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be more than 0 seconds".into())
    } else {
        Ok(d)
    }
}

/// A database or user name: 1 to 64 characters (MySQL's limits), no control characters.
fn name(t: &str) -> Result<String, String> {
    if t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err(format!("{t:?} is not a name (1 to 64 characters)"));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests;
