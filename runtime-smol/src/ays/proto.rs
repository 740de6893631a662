//! The formats of `docs/ays-protocol.md`, shared by the cache server, the publisher and the
//! client: metadata values (`"<md5>,<size>[,x]"`), trees (`md:$ays_id`), names and paths, URL
//! segments, the JSON bodies, and builders for every route's URL.
//!
//! Everything here is pure (no I/O) and never panics on outside input: each parser returns a
//! [`ProtoError`] whose message names what was wrong.

pub use super::md5sum::Md5Hasher;
use super::md5sum;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};

/// Length of an md5 in hex: 32 lowercase hex digits.
pub const MD5_HEX_LEN: usize = 32;
/// The largest blob a store accepts or a cache fetches.
pub const BLOB_SIZE_MAX: u64 = 1 << 30;
/// The largest JSON body (a whole metadata tree, an announcement) accepted or fetched.
pub const JSON_SIZE_MAX: u64 = 64 << 20;
/// Longest file or directory name, in bytes.
pub const NAME_LEN_MAX: usize = 255;
/// Longest dedupe domain name, in bytes.
pub const DOMAIN_LEN_MAX: usize = 64;
/// Longest key (ays_id, client id, mount name, store name), in bytes.
pub const KEY_LEN_MAX: usize = 1024;
/// How the empty dedupe domain is written in a URL.
pub const EMPTY_DOMAIN_SEGMENT: &str = "_";

/// A malformed input; the message says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtoError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// md5

/// True for exactly 32 lowercase hex digits.
pub fn is_md5_hex(s: &str) -> bool {
    s.len() == MD5_HEX_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The md5 of `data` in lowercase hex.
pub fn md5_hex(data: &[u8]) -> String {
    hex(&md5sum::md5_of(data))
}

/// Reads `r` to its end; returns its md5 in lowercase hex and its length.
pub fn md5_hex_of_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Md5Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((h.finish_hex()?, len))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Metadata values, names, paths, trees

/// One file of a directory listing: the parsed value `"<md5>,<size>[,x]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// 32 lowercase hex digits.
    pub md5: String,
    pub size: u64,
    /// The value carried the third field `x`: mode 0755 instead of 0644.
    pub executable: bool,
}

impl FileEntry {
    /// Parses a metadata value. Strict: the md5 is 32 lowercase hex digits, the size plain
    /// decimal digits, the optional third field exactly `x`, nothing else.
    pub fn parse(value: &str) -> Result<FileEntry, ProtoError> {
        // One parser for the format: the core's (the client uses it too).
        let m = truckeefs_core::ays::value::FileMeta::parse(value).map_err(ProtoError)?;
        Ok(FileEntry { md5: m.md5.hex(), size: m.size, executable: m.executable })
    }

    /// The metadata value: `"<md5>,<size>"` or `"<md5>,<size>,x"`.
    pub fn value(&self) -> String {
        if self.executable {
            format!("{},{},x", self.md5, self.size)
        } else {
            format!("{},{}", self.md5, self.size)
        }
    }

    /// The permission bits the file is shown with: 0o755 or 0o644.
    pub fn mode(&self) -> u32 {
        if self.executable {
            0o755
        } else {
            0o644
        }
    }
}

/// One field's value of an `md:` hash: file name to metadata value.
pub type DirFiles = BTreeMap<String, String>;
/// A whole `md:$ays_id` hash: directory path (`/`, `/a/b`) to its files.
pub type Tree = BTreeMap<String, DirFiles>;

/// A file or directory name: 1..=255 bytes, no `/`, no NUL, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), ProtoError> {
    if name.is_empty() || name.len() > NAME_LEN_MAX || name == "." || name == ".." || name.contains(['/', '\0']) {
        return err(format!("{name:?} is not a valid file name"));
    }
    Ok(())
}

/// A directory path: `/`, or `/` followed by valid names joined by `/` (no trailing slash).
pub fn validate_dir_path(path: &str) -> Result<(), ProtoError> {
    if path == "/" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return err(format!("directory path {path:?} does not start with '/'"));
    };
    for name in rest.split('/') {
        validate_name(name).map_err(|_| ProtoError(format!("directory path {path:?} has an invalid component")))?;
    }
    Ok(())
}

/// The path of `name` inside directory `dir` (`/` + `a` = `/a`, `/a` + `b` = `/a/b`).
pub fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent directory of `path`, and the last name; `None` for the root.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some((if i == 0 { "/" } else { &path[..i] }, &path[i + 1..]))
}

/// Parses one field's value (a JSON object of name to `"<md5>,<size>[,x]"`), validating every
/// name and value.
pub fn parse_dir_files(json: &str) -> Result<BTreeMap<String, FileEntry>, ProtoError> {
    let raw: DirFiles =
        serde_json::from_str(json).map_err(|e| ProtoError(format!("directory listing is not a JSON object of strings: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        validate_name(&name)?;
        let entry = FileEntry::parse(&value).map_err(|e| ProtoError(format!("file {name:?}: {e}")))?;
        out.insert(name, entry);
    }
    Ok(out)
}

/// Validates a tree: every path, name and value.
pub fn validate_tree(tree: &Tree) -> Result<(), ProtoError> {
    for (path, files) in tree {
        validate_dir_path(path)?;
        for (name, value) in files {
            validate_name(name).map_err(|e| ProtoError(format!("directory {path:?}: {e}")))?;
            FileEntry::parse(value).map_err(|e| ProtoError(format!("directory {path:?}, file {name:?}: {e}")))?;
        }
    }
    Ok(())
}

/// Parses and validates a whole tree (the body of `GET/PUT S/md/{ays_id}`).
pub fn parse_tree(body: &[u8]) -> Result<Tree, ProtoError> {
    let tree: Tree = serde_json::from_slice(body)
        .map_err(|e| ProtoError(format!("metadata is not a JSON object of directory paths to objects of strings: {e}")))?;
    validate_tree(&tree)?;
    Ok(tree)
}

/// The names of the subdirectories of `dir` among `paths` (the fields one level below it),
/// sorted and without duplicates.
pub fn subdirs<'a>(paths: impl IntoIterator<Item = &'a str>, dir: &str) -> Vec<String> {
    let mut out: Vec<String> = paths
        .into_iter()
        .filter_map(|p| match split_parent(p) {
            Some((parent, name)) if parent == dir => Some(name.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The answer of `GET /md/{clientid}/{mountname}/{path}`: the directory's files and the names of
/// its subdirectories.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MdAnswer {
    pub files: DirFiles,
    pub dirs: Vec<String>,
}

impl MdAnswer {
    /// The answer for directory `dir` of `tree`; `None` when `dir` is not a field of it.
    pub fn from_tree(tree: &Tree, dir: &str) -> Option<MdAnswer> {
        let files = tree.get(dir)?.clone();
        Some(MdAnswer { files, dirs: subdirs(tree.keys().map(String::as_str), dir) })
    }

    /// Parses and validates an answer body (every name and value).
    pub fn parse(body: &[u8]) -> Result<MdAnswer, ProtoError> {
        let a: MdAnswer = serde_json::from_slice(body)
            .map_err(|e| ProtoError(format!("metadata answer is not {{\"files\": {{...}}, \"dirs\": [...]}}: {e}")))?;
        for (name, value) in &a.files {
            validate_name(name)?;
            FileEntry::parse(value).map_err(|e| ProtoError(format!("file {name:?}: {e}")))?;
        }
        for name in &a.dirs {
            validate_name(name)?;
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------------------------
// Announcements (bodies of POST /ays/...)

/// Body of `POST /ays/client/{clientid}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientAnnounce {
    #[serde(default)]
    pub platform: String,
}

/// Body of `POST /ays/stor/{name}`: where a store is and how long its blobs stay cached
/// (hours since the last fetch; 0 = never expire). `login`/`passwd` default to empty (no auth).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorAnnounce {
    pub url: String,
    #[serde(default)]
    pub login: String,
    #[serde(default)]
    pub passwd: String,
    #[serde(default)]
    pub expiration: u64,
}

impl fmt::Debug for StorAnnounce {
    // Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorAnnounce")
            .field("url", &redact_url(&self.url))
            .field("login", &self.login)
            .field("passwd", &if self.passwd.is_empty() { "" } else { "***" })
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl StorAnnounce {
    /// Checks the URL is `http://` or `https://`.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || self.url.len() > KEY_LEN_MAX {
            return err(format!("store url {:?} is not an http:// or https:// URL", redact_url(&self.url)));
        }
        Ok(())
    }
}

/// The longer of two expirations in hours, where 0 means "never expire" and so is the longest.
pub fn longest_expiration(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a.max(b)
    }
}

/// A field of a mount announcement (the mount's TOML table as JSON) by its dotted name, e.g.
/// `"ays.id"`: as TOML parses `ays.id = "..."` (nested: `{"ays": {"id": ...}}`), or a flat key
/// `{"ays.id": ...}`.
pub fn mount_field<'a>(mount: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    if let Some(v) = mount.get(dotted) {
        return Some(v);
    }
    let mut v = mount;
    for part in dotted.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

/// The `ays.id` of a mount announcement.
pub fn mount_ays_id(mount: &serde_json::Value) -> Option<&str> {
    mount_field(mount, "ays.id")?.as_str()
}

/// The `stor.name` of a mount announcement.
pub fn mount_stor_name(mount: &serde_json::Value) -> Option<&str> {
    mount_field(mount, "stor.name")?.as_str()
}

// ---------------------------------------------------------------------------------------------
// Fetch modes

/// The `fetch` query parameter of the cache routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchMode {
    /// 0: answer from the server's own store only.
    Local,
    /// 1 (default): fetch from the store if missing, keep it, answer.
    Fetch,
    /// 2: start that fetch in the background, answer 404 now.
    Background,
    /// 3: fetch and answer without keeping it.
    FetchNoKeep,
}

impl FetchMode {
    pub fn as_u8(self) -> u8 {
        match self {
            FetchMode::Local => 0,
            FetchMode::Fetch => 1,
            FetchMode::Background => 2,
            FetchMode::FetchNoKeep => 3,
        }
    }

    pub fn from_u8(n: u8) -> Option<FetchMode> {
        Some(match n {
            0 => FetchMode::Local,
            1 => FetchMode::Fetch,
            2 => FetchMode::Background,
            3 => FetchMode::FetchNoKeep,
            _ => return None,
        })
    }

    /// From a query string (`fetch=2&...`, without the `?`): the default is [`FetchMode::Fetch`];
    /// other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Result<FetchMode, ProtoError> {
        let mut mode = FetchMode::Fetch;
        for pair in query.unwrap_or_default().split('&') {
            if let Some(v) = pair.strip_prefix("fetch=") {
                mode = v
                    .parse::<u8>()
                    .ok()
                    .and_then(FetchMode::from_u8)
                    .ok_or_else(|| ProtoError(format!("fetch={v}: expected 0, 1, 2 or 3")))?;
            }
        }
        Ok(mode)
    }
}

// ---------------------------------------------------------------------------------------------
// URL segments and keys

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Decodes one percent-encoded path segment; the result must be UTF-8.
pub fn decode_segment(s: &str) -> Result<String, ProtoError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ProtoError(format!("path segment {s:?} is not percent-encoded UTF-8")))
}

/// A key (ays_id, client id, mount name, store name): 1..=1024 bytes, no control characters.
/// Keys are only ever used as database keys, never as file names.
pub fn validate_key(what: &str, key: &str) -> Result<(), ProtoError> {
    if key.is_empty() || key.len() > KEY_LEN_MAX || key.chars().any(char::is_control) {
        return err(format!("{what} {key:?} is empty, too long or has control characters"));
    }
    Ok(())
}

/// A dedupe domain: empty (the default domain), or 1..=64 of `A-Z a-z 0-9 . _ -` starting with
/// a letter or digit (so it is a safe directory name, and never `_`, `.` or `..`).
pub fn is_valid_domain(domain: &str) -> bool {
    domain.is_empty()
        || (domain.len() <= DOMAIN_LEN_MAX
            && domain.as_bytes()[0].is_ascii_alphanumeric()
            && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

/// The URL segment of a domain: `_` for the empty domain.
pub fn domain_segment(domain: &str) -> String {
    if domain.is_empty() {
        EMPTY_DOMAIN_SEGMENT.to_string()
    } else {
        encode_segment(domain)
    }
}

/// The domain of a (still percent-encoded) URL segment: `_` is the empty domain.
pub fn domain_from_segment(segment: &str) -> Result<String, ProtoError> {
    let d = decode_segment(segment)?;
    if d == EMPTY_DOMAIN_SEGMENT {
        return Ok(String::new());
    }
    if d.is_empty() || !is_valid_domain(&d) {
        return err(format!("{d:?} is not a valid dedupe domain"));
    }
    Ok(d)
}

/// A directory path as written in a URL: without its leading slash, each name percent-encoded
/// (`/a b/c` -> `a%20b/c`; `/` -> ``).
pub fn dir_path_to_url(path: &str) -> String {
    path.trim_start_matches('/').split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

/// The directory path of the (still percent-encoded) URL segments after
/// `/md/{clientid}/{mountname}/`: none (or one empty segment) is the root. Every name is
/// validated, so `..`, `%2e%2e`, `a%2Fb` and empty names are errors.
pub fn dir_path_from_segments(segments: &[&str]) -> Result<String, ProtoError> {
    let segments = match segments {
        [rest @ .., ""] => rest,
        s => s,
    };
    if segments.is_empty() {
        return Ok("/".to_string());
    }
    let mut path = String::new();
    for s in segments {
        let name = decode_segment(s)?;
        validate_name(&name).map_err(|_| ProtoError(format!("{name:?} is not a valid directory name")))?;
        path.push('/');
        path.push_str(&name);
    }
    Ok(path)
}

/// The Redis key of a tree's metadata hash.
pub fn md_key(ays_id: &str) -> String {
    format!("md:{ays_id}")
}

/// The Redis key of a domain's blob hash (`files:` for the empty domain).
pub fn files_key(domain: &str) -> String {
    format!("files:{domain}")
}

/// A URL with any `user:password@` removed, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest.to_string(),
    }
}

/// Builders of every route's URL. `base` is a store's `S` or a cache's URL; a trailing `/` on it
/// is ignored.
pub mod url {
    use super::{dir_path_to_url, domain_segment, encode_segment, FetchMode};

    fn base(b: &str) -> &str {
        b.trim_end_matches('/')
    }

    /// `S/md/{ays_id}`
    pub fn store_md(s: &str, ays_id: &str) -> String {
        format!("{}/md/{}", base(s), encode_segment(ays_id))
    }

    /// `S/blob/{domain}/{md5}`
    pub fn store_blob(s: &str, domain: &str, md5: &str) -> String {
        format!("{}/blob/{}/{}", base(s), domain_segment(domain), encode_segment(md5))
    }

    /// `C/ays/client/{clientid}`
    pub fn cache_client(c: &str, client_id: &str) -> String {
        format!("{}/ays/client/{}", base(c), encode_segment(client_id))
    }

    /// `C/ays/stor/{name}`
    pub fn cache_stor(c: &str, name: &str) -> String {
        format!("{}/ays/stor/{}", base(c), encode_segment(name))
    }

    /// `C/ays/mount/{clientid}/{mountname}`
    pub fn cache_mount(c: &str, client_id: &str, mount: &str) -> String {
        format!("{}/ays/mount/{}/{}", base(c), encode_segment(client_id), encode_segment(mount))
    }

    /// `C/md/{clientid}/{mountname}/{path}?fetch=N`, `dir` a directory path (`/`, `/a/b`).
    pub fn cache_md(c: &str, client_id: &str, mount: &str, dir: &str, fetch: FetchMode) -> String {
        format!(
            "{}/md/{}/{}/{}?fetch={}",
            base(c),
            encode_segment(client_id),
            encode_segment(mount),
            dir_path_to_url(dir),
            fetch.as_u8()
        )
    }

    /// `C/{domain}/{md5}?fetch=N`
    pub fn cache_blob(c: &str, domain: &str, md5: &str, fetch: FetchMode) -> String {
        format!("{}/{}/{}?fetch={}", base(c), domain_segment(domain), encode_segment(md5), fetch.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "39fcbe8882373fe8296a7121f7f5b860";

    #[test]
    fn values_parse_strictly() {
        assert_eq!(FileEntry::parse(&format!("{MD5},300000")).unwrap().size, 300000);
        let x = FileEntry::parse(&format!("{MD5},5,x")).unwrap();
        assert!(x.executable);
        assert_eq!(x.mode(), 0o755);
        assert_eq!(x.value(), format!("{MD5},5,x"));
        for bad in [
            "".to_string(),
            MD5.to_string(),
            format!("{},1", MD5.to_uppercase()),
            format!("{MD5},-1"),
            format!("{MD5},+1"),
            format!("{MD5}, 1"),
            format!("{MD5},1,y"),
            format!("{MD5},1,x,x"),
            format!("{MD5},99999999999999999999999"),
            "abc,1".to_string(),
        ] {
            assert!(FileEntry::parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn md5_of_known_data() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        let (h, n) = md5_hex_of_reader(&b"hello"[..]).unwrap();
        assert_eq!((h.as_str(), n), ("5d41402abc4b2a76b9719d911017c592", 5));
    }

    #[test]
    fn paths_and_names() {
        assert!(validate_dir_path("/").is_ok());
        assert!(validate_dir_path("/a/b").is_ok());
        for bad in ["", "a", "/a/", "//", "/a//b", "/..", "/a/./b"] {
            assert!(validate_dir_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_parent("/a/b"), Some(("/a", "b")));
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(subdirs(["/", "/a", "/a/b", "/c", "/a/b/c"], "/"), vec!["a", "c"]);
        assert_eq!(subdirs(["/", "/a", "/a/b"], "/a"), vec!["b"]);
    }

    #[test]
    fn url_segments_round_trip() {
        let id = "jumpscale|mongodb(10.1.888) é/x";
        assert_eq!(decode_segment(&encode_segment(id)).unwrap(), id);
        assert_eq!(encode_segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(dir_path_to_url("/"), "");
        assert_eq!(dir_path_to_url("/a b/c"), "a%20b/c");
        assert_eq!(dir_path_from_segments(&[]).unwrap(), "/");
        assert_eq!(dir_path_from_segments(&[""]).unwrap(), "/");
        assert_eq!(dir_path_from_segments(&["a%20b", "c"]).unwrap(), "/a b/c");
        for bad in [&["..", "x"][..], &["%2e%2e"], &["a%2Fb"], &["a", "", "b"], &["%00"]] {
            assert!(dir_path_from_segments(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(domain_segment(""), "_");
        assert_eq!(domain_from_segment("_").unwrap(), "");
        assert_eq!(domain_from_segment("jumpscale").unwrap(), "jumpscale");
        for bad in ["..", "%2e%2e", ".x", "a%2Fb", "a/b", "", "-x"] {
            assert!(domain_from_segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expiration_zero_is_longest() {
        assert_eq!(longest_expiration(48, 0), 0);
        assert_eq!(longest_expiration(48, 72), 72);
        assert_eq!(longest_expiration(72, 48), 72);
    }

    #[test]
    fn mount_fields_nested_or_flat() {
        let nested = serde_json::json!({"ays": {"id": "a|b"}, "stor": {"name": "s"}});
        let flat = serde_json::json!({"ays.id": "a|b", "stor.name": "s"});
        for m in [nested, flat] {
            assert_eq!(mount_ays_id(&m), Some("a|b"));
            assert_eq!(mount_stor_name(&m), Some("s"));
        }
    }

    #[test]
    fn fetch_modes() {
        assert_eq!(FetchMode::from_query(None).unwrap(), FetchMode::Fetch);
        assert_eq!(FetchMode::from_query(Some("x=1&fetch=3")).unwrap(), FetchMode::FetchNoKeep);
        assert!(FetchMode::from_query(Some("fetch=4")).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(url::cache_md("http://h:1/", "c", "m", "/", FetchMode::Local), "http://h:1/md/c/m/?fetch=0");
        assert_eq!(url::cache_blob("http://h:1", "", MD5, FetchMode::Background), format!("http://h:1/_/{MD5}?fetch=2"));
        assert_eq!(url::store_md("http://h/stor", "a|b"), "http://h/stor/md/a%7Cb");
        assert_eq!(redact_url("http://u:p@h:1/x@y"), "http://h:1/x@y");
        let s = StorAnnounce { url: "http://h".into(), login: "u".into(), passwd: "secret".into(), expiration: 1 };
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn trees_are_validated() {
        let good = format!(r#"{{"/": {{"f": "{MD5},1"}}, "/d": {{}}}}"#);
        let t = parse_tree(good.as_bytes()).unwrap();
        let a = MdAnswer::from_tree(&t, "/").unwrap();
        assert_eq!(a.dirs, vec!["d"]);
        assert!(parse_tree(br#"{"/": {"f": "nope"}}"#).is_err());
        assert!(parse_tree(br#"{"/../x": {}}"#).is_err());
        assert!(parse_tree(br#"{"/": {"a/b": "x"}}"#).is_err());
    }
}
