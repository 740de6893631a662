//! The aysfs client configuration (`truckeefs ays mount -c client.toml`), as the design writes it:
//!
//! ```toml
//! [main]
//! id = "aUniqueIdForThisClient"
//! [[cache.local]]
//! port = 6379
//! expiration = 48
//! [[cache.grid]]
//! url = "http://192.168.2.1:8080"
//! [[ays.stor]]
//! name = "jumpscale"
//! url = "https://files.jumpscale.org:8080/files"
//! "cache.expiration" = 0
//! [[mount_files]]
//! name = "mongodb"
//! path = "/opt/jumpscale7/apps/mongodb"
//! "ays.id" = "jumpscale|mongodb(10.1.888)"
//! "stor.name" = "jumpscale"
//! [[debug]]
//! name = "kdsdebug"
//! "redis.addr" = "127.0.0.1"
//! "redis.port" = 6380
//! ```
//!
//! Dotted keys may be written quoted (`"ays.id"`) or bare (`ays.id`, which TOML reads as a
//! nested table): both mean the same. Every error is one line naming the file, the section and
//! the key. Two liberties of the design's own example that TOML does not allow are read with a
//! warning: a bare word as a value (`name=mongodb`) and backslashes that are not TOML escapes in
//! a basic string (`".*\.py"`).
//!
//! Beyond the design: `[main] platform` (default: the first mount's `platform`), `[main]
//! cache_dir` (the blob cache directory) and `[main] cache_size_mb` (its bound, default 1024).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Value;
use truckeefs_runtime_smol::ays::proto;

#[derive(Clone, Debug, PartialEq)]
pub struct LocalCache {
    pub port: u16,
    pub expiration: u64,
}

#[derive(Clone, PartialEq)]
pub struct Grid {
    pub url: String,
    pub login: String,
    pub passwd: String,
}

#[derive(Clone, PartialEq)]
pub struct Stor {
    pub name: String,
    pub url: String,
    pub login: String,
    pub secret: String,
    pub expiration: u64,
}

#[derive(Clone, PartialEq)]
pub struct Debug {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub passwd: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    /// `mount_files[0]`, `mount_config[1]`: for messages.
    pub section: String,
    pub name: String,
    pub path: PathBuf,
    pub platform: String,
    pub ays_id: String,
    pub repoid: String,
    pub stor: Option<String>,
    pub debug: Option<String>,
    pub debug_filter: Vec<String>,
    pub dedupe_domain: String,
    pub prefetch: bool,
    /// The directory of the tree shown at `path` (`remote`; `/` for the whole tree).
    pub remote: String,
    /// The mount's table as written, announced to the grid caches.
    pub table: serde_json::Value,
}

#[derive(Clone, PartialEq)]
pub struct ClientConfig {
    pub id: String,
    pub platform: String,
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub local: Option<LocalCache>,
    pub grids: Vec<Grid>,
    pub stores: Vec<Stor>,
    pub mounts: Vec<Mount>,
    pub debugs: Vec<Debug>,
    /// Notes about liberties taken while reading the file (see the module doc).
    pub warnings: Vec<String>,
}

impl ClientConfig {
    pub fn stor(&self, name: &str) -> Option<&Stor> {
        self.stores.iter().find(|s| s.name == name)
    }

    pub fn debug(&self, name: &str) -> Option<&Debug> {
        self.debugs.iter().find(|d| d.name == name)
    }
}

/// Reads and validates the configuration file.
pub fn load(file: &Path) -> Result<ClientConfig, String> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{shown}: {e}"))?;
    parse(&text).map_err(|e| format!("{shown}: {e}"))
}

/// Parses and validates a configuration text.
pub fn parse(text: &str) -> Result<ClientConfig, String> {
    let (doc, warnings) = match text.parse::<toml::Table>() {
        Ok(t) => (t, Vec::new()),
        Err(strict) => match repair(text) {
            Some((fixed, notes)) if !notes.is_empty() => match fixed.parse::<toml::Table>() {
                Ok(t) => (t, notes),
                Err(_) => return Err(toml_error(&strict)),
            },
            _ => return Err(toml_error(&strict)),
        },
    };
    let mut top = Section::new("the top level".into(), flatten(&doc));
    let main = top.take_table("main")?;
    let mut main = Section::new("[main]".into(), main);
    let id = main.req_str("id")?;
    proto::validate_key("id", &id).map_err(|e| main.err("id", &e.0))?;
    let platform = main.opt_str("platform")?;
    let cache_dir = main.opt_str("cache_dir")?;
    let cache_size_mb = main.opt_u64("cache_size_mb")?.unwrap_or(1024);
    if cache_size_mb == 0 {
        return Err(main.err("cache_size_mb", "must be at least 1"));
    }
    main.done()?;

    let locals = top.take_tables("cache.local")?;
    if locals.len() > 1 {
        return Err("[[cache.local]]: only one local cache is supported".into());
    }
    let mut local = None;
    for t in locals {
        let mut s = Section::new("[[cache.local]]".into(), t);
        let port = s.opt_port("port")?;
        let expiration = s.opt_u64("expiration")?.unwrap_or(0);
        s.done()?;
        // The design: "if port not specified ... do not use".
        local = port.map(|port| LocalCache { port, expiration });
    }

    let mut grids = Vec::new();
    for (i, t) in top.take_tables("cache.grid")?.into_iter().enumerate() {
        let mut s = Section::new(format!("cache.grid[{i}]"), t);
        let url = s.req_url("url")?;
        let login = s.opt_str("login")?;
        let passwd = s.opt_str("passwd")?;
        s.done()?;
        grids.push(Grid { url, login, passwd });
    }

    let mut stores: Vec<Stor> = Vec::new();
    for (i, t) in top.take_tables("ays.stor")?.into_iter().enumerate() {
        let mut s = Section::new(format!("ays.stor[{i}]"), t);
        let name = s.req_str("name")?;
        proto::validate_key("name", &name).map_err(|e| s.err("name", &e.0))?;
        if stores.iter().any(|o| o.name == name) {
            return Err(s.err("name", &format!("{name:?} is used by another [[ays.stor]]")));
        }
        let url = s.req_url("url")?;
        let login = s.opt_str("login")?;
        let secret = s.opt_str("secret")?;
        let expiration = s.opt_u64("cache.expiration")?.unwrap_or(0);
        s.done()?;
        stores.push(Stor { name, url, login, secret, expiration });
    }

    let mut debugs: Vec<Debug> = Vec::new();
    for (i, t) in top.take_tables("debug")?.into_iter().enumerate() {
        let mut s = Section::new(format!("debug[{i}]"), t);
        let name = s.req_str("name")?;
        if debugs.iter().any(|o| o.name == name) {
            return Err(s.err("name", &format!("{name:?} is used by another [[debug]]")));
        }
        let addr = s.opt_str("redis.addr")?;
        let addr = if addr.is_empty() { "127.0.0.1".to_string() } else { addr };
        let port = s.opt_port("redis.port")?.ok_or_else(|| s.err("redis.port", "missing"))?;
        let passwd = s.opt_str("redis.passwd")?;
        s.done()?;
        debugs.push(Debug { name, addr, port, passwd });
    }

    let mut mounts: Vec<Mount> = Vec::new();
    for kind in ["mount_files", "mount_config"] {
        let raw_tables = raw_array(&doc, kind);
        for (i, t) in top.take_tables(kind)?.into_iter().enumerate() {
            let section = format!("{kind}[{i}]");
            let mut s = Section::new(section.clone(), t);
            let path = s.req_str("path")?;
            if !path.starts_with('/') {
                return Err(s.err("path", &format!("{path:?} is not an absolute path")));
            }
            let path = PathBuf::from(path);
            let name = match s.opt_str("name")? {
                n if !n.is_empty() => n,
                _ => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into()),
            };
            proto::validate_key("name", &name).map_err(|e| s.err("name", &e.0))?;
            let platform = s.opt_str("platform")?;
            let ays_id = s.req_str("ays.id")?;
            proto::validate_key("ays.id", &ays_id).map_err(|e| s.err("ays.id", &e.0))?;
            let repoid = s.opt_str("ays.repoid")?;
            let stor = match s.opt_str("stor.name")? {
                n if n.is_empty() => None,
                n if stores.iter().any(|st| st.name == n) => Some(n),
                n => return Err(s.err("stor.name", &format!("{n:?}: no [[ays.stor]] has that name"))),
            };
            let debug = match s.opt_str("debug")? {
                n if n.is_empty() => None,
                n if debugs.iter().any(|d| d.name == n) => Some(n),
                n => return Err(s.err("debug", &format!("{n:?}: no [[debug]] has that name"))),
            };
            let debug_filter = s.opt_str_list("debug_filter")?;
            for f in &debug_filter {
                if let Err(e) = regex_check(f) {
                    return Err(s.err("debug_filter", &format!("{f:?} is not a regex: {e}")));
                }
            }
            let dedupe_domain = s.opt_str("dedupe_domain")?;
            if !proto::is_valid_domain(&dedupe_domain) {
                return Err(s.err("dedupe_domain", &format!("{dedupe_domain:?}: letters, digits, '.', '_' and '-' only, at most 64")));
            }
            let prefetch = s.opt_flag("prefetch")?;
            let remote_raw = s.opt_str("remote")?;
            let remote = truckeefs_core::ays::value::normalize_dir_path(&remote_raw)
                .ok_or_else(|| s.err("remote", &format!("{remote_raw:?} is not a directory path")))?;
            s.done()?;
            if mounts.iter().any(|m| m.path == path) {
                return Err(s.err("path", &format!("{} is mounted twice", path.display())));
            }
            if mounts.iter().any(|m| m.name == name) {
                return Err(s.err("name", &format!("{name:?} is the name of another mount; set a different name")));
            }
            if local.is_none() && grids.is_empty() && stor.is_none() {
                return Err(s.err("stor.name", "missing, and there is no [[cache.local]] or [[cache.grid]] to read from"));
            }
            let table = raw_tables.get(i).map(|t| serde_json::to_value(t).unwrap_or_default()).unwrap_or_default();
            mounts.push(Mount {
                section,
                name,
                path,
                platform,
                ays_id,
                repoid,
                stor,
                debug,
                debug_filter,
                dedupe_domain,
                prefetch,
                remote,
                table,
            });
        }
    }
    top.done()?;
    if mounts.is_empty() {
        return Err("no [[mount_files]] or [[mount_config]]: nothing to mount".into());
    }
    let platform = if !platform.is_empty() {
        platform
    } else {
        mounts.iter().map(|m| m.platform.clone()).find(|p| !p.is_empty()).unwrap_or_else(|| format!("linux-{}", std::env::consts::ARCH))
    };
    let cache_dir = if cache_dir.is_empty() { default_cache_dir() } else { PathBuf::from(cache_dir) };
    Ok(ClientConfig {
        id,
        platform,
        cache_dir,
        cache_size: cache_size_mb.saturating_mul(1 << 20),
        local,
        grids,
        stores,
        mounts,
        debugs,
        warnings,
    })
}

fn regex_check(f: &str) -> Result<(), String> {
    truckeefs_core::ays::overlay::Overlay::new("check", &[f.to_string()]).map(|_| ()).map_err(|e| {
        // Keep the regex engine's first line only: the error is one line.
        e.lines().last().unwrap_or_default().trim().to_string()
    })
}

fn default_cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(v) if !v.is_empty() => PathBuf::from(v).join("truckeefs").join("ays"),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache").join("truckeefs").join("ays")
        }
    }
}

fn toml_error(e: &toml::de::Error) -> String {
    let msg = e.message().replace('\n', " ");
    match e.span() {
        Some(_) => {
            let first = e.to_string();
            let loc = first.lines().next().unwrap_or_default().trim().to_string();
            format!("not valid TOML: {loc}: {msg}")
        }
        None => format!("not valid TOML: {msg}"),
    }
}

/// The raw tables of an array of tables (for announcements), before flattening.
fn raw_array(doc: &toml::Table, key: &str) -> Vec<Value> {
    match doc.get(key) {
        Some(Value::Array(a)) => a.clone(),
        Some(t @ Value::Table(_)) => vec![t.clone()],
        _ => Vec::new(),
    }
}

/// Flattens nested tables into dotted keys (`ays = {id = ..}` -> `ays.id`); arrays of tables
/// stay values.
fn flatten(t: &toml::Table) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, Value>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                // `[main]` and `[cache.local]` (a single table) stay tables: sections.
                Value::Table(inner) if !matches!(key.as_str(), "main" | "cache.local" | "cache.grid" | "ays.stor" | "debug" | "mount_files" | "mount_config") => {
                    walk(&key, inner, out)
                }
                _ => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    walk("", t, &mut out);
    out
}

/// One section being read: its keys are taken one by one; what is left is unknown.
struct Section {
    name: String,
    keys: BTreeMap<String, Value>,
}

impl Section {
    fn new(name: String, keys: BTreeMap<String, Value>) -> Section {
        Section { name, keys }
    }

    fn err(&self, key: &str, what: &str) -> String {
        format!("{}: key \"{key}\": {what}", self.name)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.keys.remove(key)
    }

    fn take_table(&mut self, key: &str) -> Result<BTreeMap<String, Value>, String> {
        match self.take(key) {
            None => Err(format!("[{key}]: missing section (it holds the client's id)")),
            Some(Value::Table(t)) => Ok(flatten(&t)),
            Some(_) => Err(self.err(key, "expected a [section]")),
        }
    }

    fn take_tables(&mut self, key: &str) -> Result<Vec<BTreeMap<String, Value>>, String> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Table(t)) => Ok(vec![flatten(&t)]),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::Table(t) => Ok(flatten(&t)),
                    _ => Err(self.err(key, &format!("expected [[{key}]] sections"))),
                })
                .collect(),
            Some(_) => Err(self.err(key, &format!("expected [[{key}]] sections"))),
        }
    }

    fn req_str(&mut self, key: &str) -> Result<String, String> {
        match self.take(key) {
            None => Err(self.err(key, "missing")),
            Some(Value::String(s)) if s.is_empty() => Err(self.err(key, "is empty")),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(key, &format!("expected a string, found {}", v.type_str()))),
        }
    }

    fn opt_str(&mut self, key: &str) -> Result<String, String> {
        match self.take(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(key, &format!("expected a string, found {}", v.type_str()))),
        }
    }

    fn opt_str_list(&mut self, key: &str) -> Result<Vec<String>, String> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    v => Err(self.err(key, &format!("expected strings, found {}", v.type_str()))),
                })
                .collect(),
            Some(v) => Err(self.err(key, &format!("expected a list of strings, found {}", v.type_str()))),
        }
    }

    fn opt_u64(&mut self, key: &str) -> Result<Option<u64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if i >= 0 => Ok(Some(i as u64)),
            Some(Value::Integer(i)) => Err(self.err(key, &format!("{i} is negative"))),
            Some(v) => Err(self.err(key, &format!("expected a number, found {}", v.type_str()))),
        }
    }

    fn opt_port(&mut self, key: &str) -> Result<Option<u16>, String> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(p) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
            Some(p) => Err(self.err(key, &format!("{p} is not a TCP port"))),
        }
    }

    fn opt_flag(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(b),
            Some(Value::Integer(0)) => Ok(false),
            Some(Value::Integer(1)) => Ok(true),
            Some(v) => Err(self.err(key, &format!("expected 0 or 1, found {v}"))),
        }
    }

    fn req_url(&mut self, key: &str) -> Result<String, String> {
        let url = self.req_str(key)?;
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(self.err(key, &format!("{:?} is not an http:// or https:// URL", proto::redact_url(&url))));
        }
        if url.contains('@') {
            return Err(self.err(key, "put credentials in login/passwd, not in the URL"));
        }
        Ok(url.trim_end_matches('/').to_string())
    }

    /// Fails on the first key nobody took.
    fn done(&self) -> Result<(), String> {
        match self.keys.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!("{}: unknown key \"{k}\"", self.name)),
        }
    }
}

/// Rewrites the two liberties of the design's example (bare-word values, backslashes that are
/// not TOML escapes) into TOML. `None` if nothing needed it.
fn repair(text: &str) -> Option<(String, Vec<String>)> {
    let mut notes = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.lines().enumerate() {
        let mut fixed = line.to_string();
        if let Some(eq) = line.find('=') {
            let (k, rest) = line.split_at(eq);
            let key = k.trim();
            let value = rest[1..].trim();
            let simple_key = !key.is_empty() && !key.starts_with('#') && !key.starts_with('[');
            let bare = value
                .split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let is_word = !bare.is_empty()
                && bare.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && bare.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                && !matches!(bare.as_str(), "true" | "false" | "inf" | "nan");
            if simple_key && is_word {
                fixed = format!("{k}= \"{bare}\"");
                notes.push(format!("line {}: {key} = {bare} is not TOML; read as \"{bare}\"", n + 1));
            } else if simple_key && value.contains('\\') {
                let v = escape_backslashes(&rest[1..]);
                if v != rest[1..] {
                    notes.push(format!("line {}: {key}: backslashes that are not TOML escapes read literally", n + 1));
                    fixed = format!("{k}={v}");
                }
            }
        }
        out.push_str(&fixed);
        out.push('\n');
    }
    Some((out, notes))
}

/// Doubles every backslash inside basic strings ("...") that does not start a TOML escape.
fn escape_backslashes(s: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            in_str = !in_str;
            out.push(c);
        } else if c == '\\' && in_str {
            match chars.get(i + 1) {
                Some('b' | 't' | 'n' | 'f' | 'r' | '"' | '\\' | 'u' | 'U' | 'e') => {
                    out.push(c);
                    out.push(chars[i + 1]);
                    i += 1;
                }
                _ => out.push_str("\\\\"),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[main]
id = "client1"

[[cache.local]]
port = 6379
expiration = 48

[[cache.grid]]
url = "http://127.0.0.1:8080/"
login = ""
passwd = ""

[[ays.stor]]
name = "jumpscale"
url = "https://files.jumpscale.org:8080/files"
login = ""
secret = ""
cache.expiration = 0

[[mount_files]]
name = "mongodb"
path = "/opt/jumpscale7/apps/mongodb"
platform = "ubuntu64"
"ays.id" = "jumpscale|mongodb(10.1.888)"
ays.repoid = ""
"stor.name" = "jumpscale"
debug = "kdsdebug"
debug_filter = ['.*\.py', '.*\.hrd']
dedupe_domain = ""
prefetch = 1

[[mount_config]]
path = "/opt/jumpscale7/apps/mongodb/cfg"
remote = "cfg"
"ays.id" = "jumpscale|mongodb!main"
"ays.repoid" = "1SdY294"
"stor.name" = "jumpscale"

[[debug]]
name = "kdsdebug"
"redis.addr" = "127.0.0.1"
redis.port = 555
redis.passwd = ""
"#;

    #[test]
    fn the_design_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.id, "client1");
        assert_eq!(c.platform, "ubuntu64");
        assert_eq!(c.local, Some(LocalCache { port: 6379, expiration: 48 }));
        assert_eq!(c.grids[0].url, "http://127.0.0.1:8080");
        assert_eq!(c.stores[0].expiration, 0);
        let m = &c.mounts[0];
        assert_eq!((m.name.as_str(), m.ays_id.as_str(), m.prefetch), ("mongodb", "jumpscale|mongodb(10.1.888)", true));
        assert_eq!(m.debug.as_deref(), Some("kdsdebug"));
        assert_eq!(m.debug_filter.len(), 2);
        let cfg = &c.mounts[1];
        assert_eq!((cfg.name.as_str(), cfg.remote.as_str(), cfg.repoid.as_str()), ("cfg", "/cfg", "1SdY294"));
        assert_eq!(c.debugs[0].port, 555);
        assert_eq!(m.table["ays.id"], "jumpscale|mongodb(10.1.888)");
        assert_eq!(m.table["ays"]["repoid"], "");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn the_design_liberties_are_read_with_a_warning() {
        let text = GOOD.replace("name = \"mongodb\"", "name=mongodb").replace("['.*\\.py', '.*\\.hrd']", "[\".*\\.py\",\".*\\.hrd\"]");
        assert!(text.contains("name=mongodb") && text.contains("\".*\\.py\""));
        let c = parse(&text).unwrap();
        assert_eq!(c.mounts[0].name, "mongodb");
        assert_eq!(c.mounts[0].debug_filter, vec![".*\\.py".to_string(), ".*\\.hrd".to_string()]);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            (GOOD.replace("id = \"client1\"", ""), "[main]: key \"id\": missing"),
            (GOOD.replace("port = 6379", "port = 70000"), "[[cache.local]]: key \"port\": 70000 is not a TCP port"),
            (GOOD.replace("http://127.0.0.1:8080/", "ftp://x"), "cache.grid[0]: key \"url\""),
            (GOOD.replace("\"stor.name\" = \"jumpscale\"\ndebug", "\"stor.name\" = \"nope\"\ndebug"), "mount_files[0]: key \"stor.name\": \"nope\""),
            (GOOD.replace("debug = \"kdsdebug\"", "debug = \"x\""), "mount_files[0]: key \"debug\""),
            (GOOD.replace("'.*\\.hrd'", "'('"), "mount_files[0]: key \"debug_filter\": \"(\" is not a regex"),
            (GOOD.replace("prefetch = 1", "prefetch = 2"), "mount_files[0]: key \"prefetch\""),
            (GOOD.replace("prefetch = 1", "prefetchh = 1"), "mount_files[0]: unknown key \"prefetchh\""),
            (GOOD.replace("redis.port = 555", ""), "debug[0]: key \"redis.port\": missing"),
            (GOOD.replace("path = \"/opt/jumpscale7/apps/mongodb\"", "path = \"rel\""), "mount_files[0]: key \"path\""),
            (GOOD.replace("remote = \"cfg\"", "remote = \"../x\""), "mount_config[0]: key \"remote\""),
            (GOOD.replace("dedupe_domain = \"\"", "dedupe_domain = \"a/b\""), "mount_files[0]: key \"dedupe_domain\""),
            ("[main]\nid = \"x\"\n".into(), "nothing to mount"),
            ("[main\n".into(), "not valid TOML"),
        ];
        for (text, want) in cases {
            let e = parse(&text).err().unwrap_or_else(|| panic!("no error for {want}"));
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "{e:?} is not one line");
        }
    }
}
