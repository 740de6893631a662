//! The pure parsers of aysfs metadata (`docs/ays-protocol.md`): md5 digests, file values
//! `"<md5>,<size>[,x]"`, directory listings (a JSON object of name to value), whole trees
//! (`md:$ays_id` as a JSON object of directory path to listing) and the grid cache's per-directory
//! answer `{"files": {...}, "dirs": [...]}`.
//!
//! Nothing here panics on outside input: every parser returns an error message naming what was
//! wrong. Values are kept raw (as received) next to their parsed form, so a listing written back
//! into a faster layer is byte-for-byte what was read.

use std::collections::BTreeMap;
use std::fmt;

/// The longest file name, in bytes.
pub const NAME_LEN_MAX: usize = 255;

/// An md5 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Md5(pub [u8; 16]);

/// The md5 of the empty content: an empty file needs no blob.
pub const EMPTY_MD5: Md5 =
    Md5([0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e]);

impl Md5 {
    /// Exactly 32 lowercase hex digits (the protocol's form).
    pub fn parse(s: &str) -> Option<Md5> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks(2).enumerate() {
            out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Some(Md5(out))
    }

    /// 32 lowercase hex digits.
    pub fn hex(&self) -> String {
        const D: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(D[(b >> 4) as usize] as char);
            s.push(D[(b & 15) as usize] as char);
        }
        s
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Debug for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Display for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// One file of a listing: the parsed value `"<md5>,<size>[,x]"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub md5: Md5,
    pub size: u64,
    /// Third field `x`: shown with mode 0755 instead of 0644.
    pub executable: bool,
}

impl FileMeta {
    /// Parses a metadata value strictly: 32 lowercase hex digits, a decimal size, an optional
    /// third field that is exactly `x`.
    pub fn parse(value: &str) -> Result<FileMeta, String> {
        let mut parts = value.split(',');
        let md5 = parts.next().unwrap_or_default();
        let Some(size) = parts.next() else {
            return Err(format!("metadata value {value:?} is not \"<md5>,<size>[,x]\""));
        };
        let executable = match parts.next() {
            None => false,
            Some("x") => true,
            Some(other) => return Err(format!("metadata value {value:?}: third field {other:?} is not \"x\"")),
        };
        if parts.next().is_some() {
            return Err(format!("metadata value {value:?} has too many fields"));
        }
        let md5 = Md5::parse(md5).ok_or_else(|| format!("metadata value {value:?}: {md5:?} is not an md5"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("metadata value {value:?}: size {size:?} is not a decimal number"));
        }
        let size = size.parse().map_err(|_| format!("metadata value {value:?}: size out of range"))?;
        Ok(FileMeta { md5, size, executable })
    }

    /// The value as stored: `"<md5>,<size>"` or `"<md5>,<size>,x"`.
    pub fn value(&self) -> String {
        if self.executable {
            format!("{},{},x", self.md5, self.size)
        } else {
            format!("{},{}", self.md5, self.size)
        }
    }

    /// Permission bits: 0o755 or 0o644.
    pub fn perm(&self) -> u16 {
        if self.executable {
            0o755
        } else {
            0o644
        }
    }
}

/// A file or directory name: 1..=255 bytes, no `/` or NUL, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= NAME_LEN_MAX && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// A directory path: `/`, or `/` followed by valid names joined by `/`.
pub fn valid_dir_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    match path.strip_prefix('/') {
        Some(rest) => rest.split('/').all(valid_name),
        None => false,
    }
}

/// `/` + `a` = `/a`; `/a` + `b` = `/a/b`.
pub fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent directory and last name of `path`; `None` for the root.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some((if i == 0 { "/" } else { &path[..i] }, &path[i + 1..]))
}

/// Normalises a `remote` sub-path of a mount (`cfg`, `/cfg/`, ``) into a directory path
/// (`/cfg`, `/`). `None` if a component is not a valid name.
pub fn normalize_dir_path(p: &str) -> Option<String> {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|n| !valid_name(n)) {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// One directory of a tree as read from a layer: raw file values by name (kept as received so
/// they can be written back exactly), the names of its subdirectories, and why it is unusable
/// if its listing was malformed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DirListing {
    pub files: BTreeMap<String, String>,
    pub dirs: Vec<String>,
    /// The listing could not be parsed: lookups and readdir in this directory give EIO.
    pub broken: Option<String>,
}

impl DirListing {
    /// The listing as stored in an `md:` field: a JSON object of name to value.
    pub fn files_json(&self) -> String {
        serde_json::to_string(&self.files).unwrap_or_else(|_| "{}".into())
    }
}

/// A tree (or the part of one below a mount's root): directory path to listing.
pub type Listings = BTreeMap<String, DirListing>;

/// Parses one `md:` field value: a JSON object of name to string. Names that are not valid are
/// dropped (and counted in the returned warnings); a value that is not a string is kept as its
/// JSON text, so that opening that file gives EIO naming it.
pub fn parse_dir_files(json: &[u8]) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("directory listing is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = v else {
        return Err("directory listing is not a JSON object".into());
    };
    let mut files = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, value) in map {
        if !valid_name(&name) {
            warnings.push(format!("file name {name:?} is not valid; skipped"));
            continue;
        }
        let raw = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        files.insert(name, raw);
    }
    Ok((files, warnings))
}

/// Parses a whole tree (the `GET S/md/{ays_id}` body, or the fields of an `md:` hash as pairs)
/// and keeps the part at and below `root`. `Ok(None)`: `root` is not a directory of it.
/// Directories whose parent is missing are unreachable and dropped with a warning.
pub fn listings_from_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    root: &str,
) -> (Option<Listings>, Vec<String>) {
    let mut out: Listings = BTreeMap::new();
    let mut warnings = Vec::new();
    for (path, value) in fields {
        if !valid_dir_path(path) {
            warnings.push(format!("directory path {path:?} is not valid; skipped"));
            continue;
        }
        if !(path == root || root == "/" || path.starts_with(&format!("{root}/"))) {
            continue;
        }
        let listing = match parse_dir_files(value) {
            Ok((files, w)) => {
                warnings.extend(w.into_iter().map(|w| format!("directory {path:?}: {w}")));
                DirListing { files, dirs: Vec::new(), broken: None }
            }
            Err(e) => DirListing { broken: Some(format!("directory {path:?}: {e}")), ..Default::default() },
        };
        out.insert(path.to_string(), listing);
    }
    if !out.contains_key(root) {
        return (None, warnings);
    }
    // Subdirectories: the fields one level below. Drop fields whose parent is not a field.
    let paths: Vec<String> = out.keys().cloned().collect();
    for p in &paths {
        if p == root {
            continue;
        }
        let Some((parent, name)) = split_parent(p) else { continue };
        if out.contains_key(parent) {
            if let Some(l) = out.get_mut(parent) {
                l.dirs.push(name.to_string());
            }
        } else {
            warnings.push(format!("directory {p:?} has no parent directory field; skipped"));
        }
    }
    // Remove the unreachable ones (a missing ancestor anywhere up to the root).
    let reachable: Vec<String> = out
        .keys()
        .filter(|p| {
            let mut cur = p.as_str();
            while cur != root {
                match split_parent(cur) {
                    Some((parent, _)) if out.contains_key(parent) => cur = parent,
                    _ => return false,
                }
            }
            true
        })
        .cloned()
        .collect();
    out.retain(|p, _| reachable.contains(p));
    (Some(out), warnings)
}

/// Parses the body of `GET S/md/{ays_id}`: `{"/": {...}, "/a": {...}}`.
pub fn parse_tree_json(body: &[u8], root: &str) -> Result<(Option<Listings>, Vec<String>), String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("metadata tree is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = v else {
        return Err("metadata tree is not a JSON object".into());
    };
    let texts: Vec<(String, String)> = map.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    Ok(listings_from_fields(texts.iter().map(|(k, v)| (k.as_str(), v.as_bytes())), root))
}

/// Parses the body of the grid cache's `GET /md/{clientid}/{mountname}/{path}`:
/// `{"files": {name: value}, "dirs": [names]}`.
pub fn parse_md_answer(body: &[u8]) -> Result<(DirListing, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("metadata answer is not JSON: {e}"))?;
    let serde_json::Value::Object(mut map) = v else {
        return Err("metadata answer is not a JSON object".into());
    };
    let files = map.remove("files").unwrap_or(serde_json::Value::Object(Default::default()));
    let (files, mut warnings) = parse_dir_files(files.to_string().as_bytes())?;
    let mut dirs = Vec::new();
    match map.remove("dirs") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(a)) => {
            for d in a {
                match d {
                    serde_json::Value::String(s) if valid_name(&s) => dirs.push(s),
                    other => warnings.push(format!("subdirectory {other} is not a valid name; skipped")),
                }
            }
        }
        Some(_) => return Err("metadata answer: \"dirs\" is not an array".into()),
    }
    dirs.sort();
    dirs.dedup();
    Ok((DirListing { files, dirs, broken: None }, warnings))
}

/// The whole tree as the body of `PUT S/md/{ays_id}` (each field's value a JSON object).
pub fn tree_json(listings: &Listings) -> String {
    let mut map = serde_json::Map::new();
    for (path, l) in listings {
        if l.broken.is_none() {
            let files: serde_json::Map<String, serde_json::Value> =
                l.files.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            map.insert(path.clone(), serde_json::Value::Object(files));
        }
    }
    serde_json::Value::Object(map).to_string()
}

/// The value of a debug path: `"<md5>,<size>"`, with `,x` for an executable file (as in
/// metadata values), so the mode survives a new mount.
pub fn debug_path_value(md5: Md5, size: u64, executable: bool) -> String {
    if executable {
        format!("{md5},{size},x")
    } else {
        format!("{md5},{size}")
    }
}

/// A JSON string literal (for the debug log entry).
pub fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "39fcbe8882373fe8296a7121f7f5b860";

    #[test]
    fn md5_round_trip() {
        let m = Md5::parse(MD5).unwrap();
        assert_eq!(m.hex(), MD5);
        assert_eq!(EMPTY_MD5.hex(), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(Md5::parse(&MD5.to_uppercase()).is_none());
        assert!(Md5::parse(&MD5[..31]).is_none());
        assert!(Md5::parse("g9fcbe8882373fe8296a7121f7f5b860").is_none());
    }

    #[test]
    fn values_parse_strictly() {
        let f = FileMeta::parse(&format!("{MD5},300000")).unwrap();
        assert_eq!((f.size, f.executable, f.perm()), (300000, false, 0o644));
        let x = FileMeta::parse(&format!("{MD5},5,x")).unwrap();
        assert_eq!((x.size, x.executable, x.perm()), (5, true, 0o755));
        assert_eq!(x.value(), format!("{MD5},5,x"));
        for bad in [
            String::new(),
            MD5.to_string(),
            format!("{},1", MD5.to_uppercase()),
            format!("{MD5},-1"),
            format!("{MD5},1,y"),
            format!("{MD5},1,x,"),
            format!("{MD5},"),
            format!("{MD5}, 1"),
            format!("{MD5},99999999999999999999999"),
            "zz,1".into(),
        ] {
            assert!(FileMeta::parse(&bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn names_and_paths() {
        assert!(valid_name("a b") && !valid_name("") && !valid_name("..") && !valid_name("a/b"));
        assert!(valid_dir_path("/") && valid_dir_path("/a/b") && !valid_dir_path("/a/") && !valid_dir_path("a"));
        assert!(!valid_dir_path("/a/../b"));
        assert_eq!(split_parent("/a/b"), Some(("/a", "b")));
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(normalize_dir_path("cfg/").as_deref(), Some("/cfg"));
        assert_eq!(normalize_dir_path("").as_deref(), Some("/"));
        assert_eq!(normalize_dir_path("a/../b"), None);
    }

    #[test]
    fn tree_from_fields() {
        let v = format!("{{\"tool\": \"{MD5},3\"}}");
        let fields: Vec<(&str, &[u8])> = vec![
            ("/", v.as_bytes()),
            ("/a", b"{}"),
            ("/a/b", b"[1]"),
            ("/x/y", b"{}"),
            ("bad", b"{}"),
        ];
        let (l, warnings) = listings_from_fields(fields.clone(), "/");
        let l = l.unwrap();
        assert_eq!(l["/"].dirs, vec!["a".to_string()]);
        assert_eq!(l["/"].files["tool"], format!("{MD5},3"));
        assert_eq!(l["/a"].dirs, vec!["b".to_string()]);
        assert!(l["/a/b"].broken.is_some());
        assert!(!l.contains_key("/x/y"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let (sub, _) = listings_from_fields(fields.clone(), "/a");
        let sub = sub.unwrap();
        assert_eq!(sub.keys().collect::<Vec<_>>(), vec!["/a", "/a/b"]);
        assert!(listings_from_fields(fields, "/nope").0.is_none());
    }

    #[test]
    fn md_answer() {
        let body = format!("{{\"files\": {{\"f\": \"{MD5},3\", \"../x\": \"{MD5},1\"}}, \"dirs\": [\"d\", \"..\", 3]}}");
        let (l, w) = parse_md_answer(body.as_bytes()).unwrap();
        assert_eq!(l.files.len(), 1);
        assert_eq!(l.dirs, vec!["d".to_string()]);
        assert_eq!(w.len(), 3);
        assert!(parse_md_answer(b"garbage").is_err());
        assert!(parse_md_answer(b"[]").is_err());
        let (t, _) = parse_tree_json(br#"{"/": {"f": "x"}}"#, "/").unwrap();
        assert_eq!(t.unwrap()["/"].files["f"], "x");
        assert!(tree_json(&BTreeMap::new()) == "{}");
    }
}
