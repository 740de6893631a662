//! Parsers of the Tahoe-LAFS web API's JSON replies (`t=json` of a file or directory, the welcome
//! page `/?t=json`, `t=check&output=JSON`, `/status/?t=json`) into typed structs.
//!
//! The reply text is parsed by `serde_json` into a value and then walked field by field against
//! what `docs/frontends/webapi.rst` (Tahoe-LAFS 1.20) documents. Anything else — bad syntax, a
//! missing or mistyped documented field, an unknown node type — is a [`JsonError`], never a
//! panic. Fields Tahoe may add later are ignored.
//!
//! Capabilities found in a reply are held as [`ObjectId`]s, whose `Debug` and `Display` print
//! only a fingerprint; error messages name fields, never values (a value may be a capability).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use truckeefs_core::ObjectId;

/// A reply that is not what the web API documents. The message names the field, never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
}

impl JsonError {
    fn new(message: impl Into<String>) -> JsonError {
        JsonError { message: message.into() }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JsonError {}

type JResult<T> = Result<T, JsonError>;

/// What a node is, from the first element of a `t=json` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `"filenode"`: an immutable (CHK, LIT) or mutable (SDMF, MDMF) file.
    File,
    /// `"dirnode"`: a directory.
    Dir,
    /// `"unknown"`: a cap of a format the gateway does not know (or not a cap at all).
    Unknown,
}

/// The key of the link metadata that marks a link the MIRROR layout made (and may remove).
pub const MIRROR_TAG: &str = "truckeefs";

/// The link metadata Tahoe keeps on a directory entry (`metadata.tahoe`), in seconds since the
/// epoch.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LinkTimes {
    pub created: Option<f64>,
    pub modified: Option<f64>,
}

/// One node as `t=json` describes it: the object itself, or a child entry of a directory.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub kind: NodeKind,
    /// The write cap (mutable files and directories, with write access only).
    pub rw_uri: Option<ObjectId>,
    /// The read cap.
    pub ro_uri: Option<ObjectId>,
    pub verify_uri: Option<ObjectId>,
    /// Absent when unknown.
    pub mutable: Option<bool>,
    /// `CHK`, `SDMF`, `MDMF`; absent for some directories and unknown nodes.
    pub format: Option<String>,
    /// File size in bytes; absent for directories, unknown nodes and some mutable children.
    pub size: Option<u64>,
    /// Present when the node was reached through a directory (a child entry or `DIRCAP/NAME`).
    pub link: Option<LinkTimes>,
    /// The link carries the metadata key [`MIRROR_TAG`]: the MIRROR layout made it.
    pub mirrored: bool,
    /// A directory's entries, when the reply is about the directory itself.
    pub children: Option<BTreeMap<String, NodeInfo>>,
}

impl NodeInfo {
    /// The strongest cap of the node: the write cap if present, else the read cap.
    pub fn cap(&self) -> Option<&ObjectId> {
        self.rw_uri.as_ref().or(self.ro_uri.as_ref())
    }

    /// Whether `cap` is this node's write or read cap.
    pub fn has_cap(&self, cap: &ObjectId) -> bool {
        self.rw_uri.as_ref() == Some(cap) || self.ro_uri.as_ref() == Some(cap)
    }
}

/// Parses the reply of `GET /uri/$CAP?t=json` (or `/uri/$DIRCAP/NAME?t=json`).
pub fn parse_node(text: &[u8]) -> JResult<NodeInfo> {
    let value = parse_value(text)?;
    node_from_value(&value, "the reply", true)
}

fn parse_value(text: &[u8]) -> JResult<Value> {
    serde_json::from_slice(text).map_err(|e| {
        // serde_json's messages may quote the input; build our own from its classification.
        let what = match e.classify() {
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected JSON data",
            serde_json::error::Category::Io => "unreadable JSON",
        };
        JsonError::new(format!("{what} at line {} column {}", e.line(), e.column()))
    })
}

fn node_from_value(value: &Value, what: &str, top: bool) -> JResult<NodeInfo> {
    let pair = value
        .as_array()
        .ok_or_else(|| JsonError::new(format!("{what} is not a [type, properties] list")))?;
    if pair.len() != 2 {
        return Err(JsonError::new(format!("{what} is a list of {} elements, not [type, properties]", pair.len())));
    }
    let kind = match pair[0].as_str() {
        Some("filenode") => NodeKind::File,
        Some("dirnode") => NodeKind::Dir,
        Some("unknown") => NodeKind::Unknown,
        Some(_) => return Err(JsonError::new(format!("{what} has an undocumented node type"))),
        None => return Err(JsonError::new(format!("the node type of {what} is not a string"))),
    };
    let props = pair[1]
        .as_object()
        .ok_or_else(|| JsonError::new(format!("the properties of {what} are not an object")))?;

    let cap_field = |field: &str| -> JResult<Option<ObjectId>> {
        let Some(s) = opt_str(props, field, what)? else { return Ok(None) };
        // A file or directory cap is one the gateway decoded: it must look like one. Unknown
        // nodes carry caps of formats from the future ("ro.", "imm." prefixes, other schemes).
        if kind != NodeKind::Unknown && !looks_like_cap(s) {
            return Err(JsonError::new(format!("`{field}` of {what} is not a capability")));
        }
        Ok(Some(ObjectId(s.to_string())))
    };
    let rw_uri = cap_field("rw_uri")?;
    let ro_uri = cap_field("ro_uri")?;
    let verify_uri = cap_field("verify_uri")?;
    let mutable = match props.get("mutable") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(JsonError::new(format!("`mutable` of {what} is not a boolean"))),
    };
    let format = opt_str(props, "format", what)?.map(str::to_string);
    let size = match props.get("size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| JsonError::new(format!("`size` of {what} is not a byte count")))?),
    };
    let (link, mirrored) = match props.get("metadata") {
        None | Some(Value::Null) => (None, false),
        Some(Value::Object(m)) => (Some(link_times(m, what)?), m.contains_key(MIRROR_TAG)),
        Some(_) => return Err(JsonError::new(format!("`metadata` of {what} is not an object"))),
    };
    let children = match props.get("children") {
        None | Some(Value::Null) => None,
        Some(_) if kind != NodeKind::Dir => {
            return Err(JsonError::new(format!("{what} has `children` but is not a directory")))
        }
        // Child entries do not recurse (webapi.rst): only the directory asked about lists them.
        Some(_) if !top => return Err(JsonError::new(format!("{what} lists children of a child"))),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (name, child) in m {
                if name.is_empty() || name.contains('/') {
                    return Err(JsonError::new("a child entry has an empty name or a name with '/'"));
                }
                out.insert(name.clone(), node_from_value(child, "a child entry", false)?);
            }
            Some(out)
        }
        Some(_) => return Err(JsonError::new(format!("`children` of {what} is not an object"))),
    };
    Ok(NodeInfo { kind, rw_uri, ro_uri, verify_uri, mutable, format, size, link, mirrored, children })
}

fn link_times(m: &Map<String, Value>, what: &str) -> JResult<LinkTimes> {
    let Some(tahoe) = m.get("tahoe") else { return Ok(LinkTimes::default()) };
    let tahoe = tahoe
        .as_object()
        .ok_or_else(|| JsonError::new(format!("`metadata.tahoe` of {what} is not an object")))?;
    let time = |field: &str| -> JResult<Option<f64>> {
        match tahoe.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|t| t.is_finite())
                .map(Some)
                .ok_or_else(|| JsonError::new(format!("`metadata.tahoe.{field}` of {what} is not a number"))),
        }
    };
    Ok(LinkTimes { created: time("linkcrtime")?, modified: time("linkmotime")? })
}

fn opt_str<'a>(props: &'a Map<String, Value>, field: &str, what: &str) -> JResult<Option<&'a str>> {
    match props.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(JsonError::new(format!("`{field}` of {what} is not a string"))),
    }
}

/// Whether `s` has the shape of a Tahoe capability this client sends or accepts: `URI:` then
/// base32 fields, numbers and kind names separated by colons.
pub fn looks_like_cap(s: &str) -> bool {
    s.len() <= 4096
        && s.starts_with("URI:")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
}

/// One storage server as the gateway's welcome page (`GET /?t=json`) lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerInfo {
    pub nodeid: Option<String>,
    pub nickname: Option<String>,
    /// `connected` when usable (other values describe a connection being made or lost).
    pub connection_status: Option<String>,
    /// Bytes the server announces as available, if it does.
    pub available_space: Option<u64>,
}

impl ServerInfo {
    pub fn is_connected(&self) -> bool {
        self.connection_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("connected"))
    }
}

/// The welcome page of a client node.
#[derive(Clone, Debug, PartialEq)]
pub struct Welcome {
    pub introducer_statuses: Vec<String>,
    pub servers: Vec<ServerInfo>,
}

/// Parses `GET /?t=json`.
pub fn parse_welcome(text: &[u8]) -> JResult<Welcome> {
    let value = parse_value(text)?;
    let top = value.as_object().ok_or_else(|| JsonError::new("the welcome page is not an object"))?;
    let mut introducer_statuses = Vec::new();
    if let Some(intro) = top.get("introducers") {
        let intro = intro.as_object().ok_or_else(|| JsonError::new("`introducers` is not an object"))?;
        if let Some(list) = intro.get("statuses") {
            let list = list.as_array().ok_or_else(|| JsonError::new("`introducers.statuses` is not a list"))?;
            for s in list {
                let s = s.as_str().ok_or_else(|| JsonError::new("an introducer status is not a string"))?;
                introducer_statuses.push(s.to_string());
            }
        }
    }
    let list = top
        .get("servers")
        .ok_or_else(|| JsonError::new("the welcome page has no `servers`"))?
        .as_array()
        .ok_or_else(|| JsonError::new("`servers` is not a list"))?;
    let mut servers = Vec::with_capacity(list.len());
    for s in list {
        let s = s.as_object().ok_or_else(|| JsonError::new("a server entry is not an object"))?;
        let what = "a server entry";
        let available_space = match s.get("available_space") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64().ok_or_else(|| JsonError::new("`available_space` of a server entry is not a byte count"))?,
            ),
        };
        servers.push(ServerInfo {
            nodeid: opt_str(s, "nodeid", what)?.map(str::to_string),
            nickname: opt_str(s, "nickname", what)?.map(str::to_string),
            connection_status: opt_str(s, "connection_status", what)?.map(str::to_string),
            available_space,
        });
    }
    Ok(Welcome { introducer_statuses, servers })
}

/// The result of `POST /uri/$CAP?t=check&output=JSON`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResults {
    pub healthy: bool,
    pub recoverable: bool,
    pub shares_good: u64,
    pub shares_needed: u64,
    pub shares_expected: u64,
}

/// Parses the reply of `t=check&output=JSON`.
pub fn parse_check(text: &[u8]) -> JResult<CheckResults> {
    let value = parse_value(text)?;
    let top = value.as_object().ok_or_else(|| JsonError::new("the check reply is not an object"))?;
    let results = top
        .get("results")
        .and_then(Value::as_object)
        .ok_or_else(|| JsonError::new("the check reply has no `results` object"))?;
    let flag = |field: &str| -> JResult<bool> {
        results
            .get(field)
            .and_then(Value::as_bool)
            .ok_or_else(|| JsonError::new(format!("`results.{field}` of the check reply is not a boolean")))
    };
    let count = |field: &str| -> JResult<u64> {
        results
            .get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| JsonError::new(format!("`results.{field}` of the check reply is not a count")))
    };
    Ok(CheckResults {
        healthy: flag("healthy")?,
        recoverable: flag("recoverable")?,
        shares_good: count("count-shares-good")?,
        shares_needed: count("count-shares-needed")?,
        shares_expected: count("count-shares-expected")?,
    })
}

/// The operations in progress on `GET /status/?t=json` (its `active` list), as canonical text:
/// two snapshots differ exactly when some operation started, ended or made progress.
pub fn parse_status_active(text: &[u8]) -> JResult<String> {
    let value = parse_value(text)?;
    let active = value
        .as_object()
        .and_then(|m| m.get("active"))
        .and_then(Value::as_array)
        .ok_or_else(|| JsonError::new("the status page has no `active` list"))?;
    serde_json::to_string(active).map_err(|_| JsonError::new("the status page's `active` list cannot be re-encoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Replies captured from a Tahoe-LAFS 1.20.0 test grid (1-of-1 encoding, throwaway caps).
    const DIR_CHILDREN: &str = include_str!("../testdata/tahoe/dir_children.json");
    const DIR_EMPTY: &str = include_str!("../testdata/tahoe/dir_empty.json");
    const DIR_READONLY: &str = include_str!("../testdata/tahoe/dir_readonly.json");
    const FILE_CHK: &str = include_str!("../testdata/tahoe/file_chk.json");
    const FILE_MDMF: &str = include_str!("../testdata/tahoe/file_mdmf.json");
    const FILE_LIT: &str = include_str!("../testdata/tahoe/file_lit.json");
    const FILE_CHILD: &str = include_str!("../testdata/tahoe/file_child_with_metadata.json");
    const UNKNOWN_GARBAGE: &str = include_str!("../testdata/tahoe/unknown_garbage.json");
    const UNKNOWN_CHILD: &str = include_str!("../testdata/tahoe/unknown_child.json");
    const WELCOME: &str = include_str!("../testdata/tahoe/welcome.json");
    const CHECK_HEALTHY: &str = include_str!("../testdata/tahoe/check_healthy.json");
    const CHECK_NO_SHARES: &str = include_str!("../testdata/tahoe/check_no_shares.json");
    const STATUS_ACTIVE: &str = include_str!("../testdata/tahoe/status_active.json");

    #[test]
    fn directory_with_every_kind_of_child() {
        let d = parse_node(DIR_CHILDREN.as_bytes()).unwrap();
        assert_eq!(d.kind, NodeKind::Dir);
        assert_eq!(d.mutable, Some(true));
        assert_eq!(d.format, None); // not sent for this directory, although webapi.rst shows it
        assert!(d.rw_uri.as_ref().unwrap().0.starts_with("URI:DIR2:"));
        assert!(d.ro_uri.as_ref().unwrap().0.starts_with("URI:DIR2-RO:"));
        assert!(d.link.is_none());
        let children = d.children.unwrap();
        let names: Vec<&str> = children.keys().map(String::as_str).collect();
        assert_eq!(names, ["17", "empty", "futé", "lit", "mdmf file", "sub"]);

        let chk = &children["17"];
        assert_eq!(chk.kind, NodeKind::File);
        assert_eq!((chk.size, chk.mutable, chk.format.as_deref()), (Some(100_000), Some(false), Some("CHK")));
        assert!(chk.ro_uri.as_ref().unwrap().0.starts_with("URI:CHK:"));
        assert!(chk.rw_uri.is_none());
        let t = chk.link.unwrap();
        assert_eq!(t.created, t.modified);
        assert!(t.created.unwrap() > 1.7e9);

        assert_eq!(children["empty"].ro_uri, Some(ObjectId("URI:LIT:".into())));
        assert_eq!(children["empty"].size, Some(0));
        assert_eq!(children["lit"].ro_uri, Some(ObjectId("URI:LIT:nbswy3dp".into())));

        let mdmf = &children["mdmf file"];
        assert_eq!((mdmf.mutable, mdmf.format.as_deref(), mdmf.size), (Some(true), Some("MDMF"), None));
        assert!(mdmf.rw_uri.as_ref().unwrap().0.starts_with("URI:MDMF:"));
        assert_eq!(mdmf.cap(), mdmf.rw_uri.as_ref());

        let sub = &children["sub"];
        assert_eq!(sub.kind, NodeKind::Dir);
        assert!(sub.children.is_none());

        let fut = &children["futé"];
        assert_eq!(fut.kind, NodeKind::Unknown);
        assert_eq!(fut.ro_uri, Some(ObjectId("ro.x-tahoe-crazy-readonly:1234".into())));
    }

    #[test]
    fn directories_empty_and_read_only() {
        let d = parse_node(DIR_EMPTY.as_bytes()).unwrap();
        assert_eq!(d.kind, NodeKind::Dir);
        assert!(d.children.unwrap().is_empty());
        let ro = parse_node(DIR_READONLY.as_bytes()).unwrap();
        assert!(ro.rw_uri.is_none(), "a read cap gives no write cap");
        assert_eq!(ro.mutable, Some(true));
        assert_eq!(ro.children.unwrap().len(), 6);
    }

    #[test]
    fn files() {
        let f = parse_node(FILE_CHK.as_bytes()).unwrap();
        assert_eq!((f.kind, f.size, f.mutable), (NodeKind::File, Some(100_000), Some(false)));
        assert!(f.verify_uri.unwrap().0.starts_with("URI:CHK-Verifier:"));
        assert!(f.link.is_none());
        let m = parse_node(FILE_MDMF.as_bytes()).unwrap();
        assert_eq!((m.size, m.format.as_deref()), (Some(100_000), Some("MDMF")));
        assert!(m.has_cap(m.rw_uri.as_ref().unwrap()) && m.has_cap(m.ro_uri.as_ref().unwrap()));
        let l = parse_node(FILE_LIT.as_bytes()).unwrap();
        assert_eq!((l.size, l.verify_uri.as_ref()), (Some(5), None));
        let c = parse_node(FILE_CHILD.as_bytes()).unwrap();
        assert!(c.link.unwrap().modified.is_some());
    }

    #[test]
    fn unknown_nodes() {
        let u = parse_node(UNKNOWN_GARBAGE.as_bytes()).unwrap();
        assert_eq!(u.kind, NodeKind::Unknown);
        assert!(u.cap().is_none());
        let c = parse_node(UNKNOWN_CHILD.as_bytes()).unwrap();
        assert_eq!(c.kind, NodeKind::Unknown);
        assert_eq!(c.rw_uri, Some(ObjectId("x-tahoe-crazy:1234".into())));
    }

    #[test]
    fn welcome_page() {
        let w = parse_welcome(WELCOME.as_bytes()).unwrap();
        assert_eq!(w.introducer_statuses.len(), 1);
        assert_eq!(w.servers.len(), 1);
        let s = &w.servers[0];
        assert!(s.is_connected());
        assert_eq!(s.nickname.as_deref(), Some("storage"));
        assert!(s.available_space.unwrap() > 0);
        // A server that announces no space.
        let w = parse_welcome(br#"{"servers":[{"nodeid":"v0-x","connection_status":"Trying to connect","available_space":null}]}"#)
            .unwrap();
        assert!(!w.servers[0].is_connected());
        assert_eq!(w.servers[0].available_space, None);
    }

    #[test]
    fn check_results() {
        let h = parse_check(CHECK_HEALTHY.as_bytes()).unwrap();
        assert_eq!(
            h,
            CheckResults { healthy: true, recoverable: true, shares_good: 1, shares_needed: 1, shares_expected: 1 }
        );
        let n = parse_check(CHECK_NO_SHARES.as_bytes()).unwrap();
        assert!(!n.healthy && !n.recoverable && n.shares_good == 0);
    }

    #[test]
    fn status_active() {
        let a = parse_status_active(STATUS_ACTIVE.as_bytes()).unwrap();
        assert!(a.contains("progress-encode-push"));
        assert_eq!(parse_status_active(br#"{"active": [], "recent": [{"x": 1}]}"#).unwrap(), "[]");
        assert!(parse_status_active(br#"{"recent": []}"#).is_err());
    }

    /// Every malformed reply is an error (never a panic), and no message repeats a value.
    #[test]
    fn malformed_replies_are_errors() {
        let secret = "URI:CHK:secretsecretsecret:abcdefabcdef:1:1:100";
        let bad: Vec<String> = vec![
            String::new(),
            "[".into(),
            "nope".into(),
            "null".into(),
            "{}".into(),
            "[]".into(),
            r#"["filenode"]"#.into(),
            r#"["filenode", {}, 3]"#.into(),
            r#"["symlink", {}]"#.into(),
            r#"[17, {}]"#.into(),
            r#"["filenode", []]"#.into(),
            r#"["filenode", {"size": "12"}]"#.into(),
            r#"["filenode", {"size": -1}]"#.into(),
            r#"["filenode", {"size": 1.5}]"#.into(),
            r#"["filenode", {"mutable": "yes"}]"#.into(),
            r#"["filenode", {"format": 1}]"#.into(),
            format!(r#"["filenode", {{"ro_uri": 5, "x": "{secret}"}}]"#),
            format!(r#"["filenode", {{"size": "{secret}"}}]"#),
            format!(r#"["filenode", {{"ro_uri": "not a cap {secret}"}}]"#),
            r#"["filenode", {"metadata": []}]"#.into(),
            r#"["filenode", {"metadata": {"tahoe": 3}}]"#.into(),
            r#"["filenode", {"metadata": {"tahoe": {"linkcrtime": "x"}}}]"#.into(),
            r#"["filenode", {"children": {}}]"#.into(),
            r#"["dirnode", {"children": []}]"#.into(),
            r#"["dirnode", {"children": {"a": "b"}}]"#.into(),
            r#"["dirnode", {"children": {"a": ["filenode"]}}]"#.into(),
            r#"["dirnode", {"children": {"": ["filenode", {}]}}]"#.into(),
            r#"["dirnode", {"children": {"a/b": ["filenode", {}]}}]"#.into(),
            r#"["dirnode", {"children": {"a": ["dirnode", {"children": {}}]}}]"#.into(),
            format!(r#"["dirnode", {{"children": {{"a": ["filenode", {{"size": "{secret}"}}]}}}}]"#),
            format!(r#"["dirnode", {{"children": {{"a": ["filenode", {{"ro_uri": "{secret}"}}]}}, "rw_uri": 1}}]"#),
            "[\"filenode\", {\"ro_uri\": \"\u{0}\"}]".into(),
            "\u{feff}[\"filenode\", {}]".into(),
            "[\"filenode\", {}] trailing".into(),
            "[".repeat(10_000),
        ];
        for text in &bad {
            let e = parse_node(text.as_bytes()).expect_err(text);
            assert!(!e.message.contains("secret"), "{text}: message repeats a value: {}", e.message);
        }
        // Invalid UTF-8.
        assert!(parse_node(b"[\"filenode\", {\"format\": \"\xff\"}]").is_err());

        for text in ["", "[]", "{}", r#"{"servers": {}}"#, r#"{"servers": [1]}"#, r#"{"servers": [{"available_space": -5}]}"#,
            r#"{"servers": [{"available_space": "1"}]}"#, r#"{"servers": [], "introducers": []}"#,
            r#"{"servers": [], "introducers": {"statuses": [1]}}"#, r#"{"servers": [{"nickname": 3}]}"#]
        {
            assert!(parse_welcome(text.as_bytes()).is_err(), "{text}");
        }
        for text in ["", "{}", r#"{"results": []}"#, r#"{"results": {"healthy": true}}"#,
            r#"{"results": {"healthy": 1, "recoverable": true, "count-shares-good": 1, "count-shares-needed": 1, "count-shares-expected": 1}}"#]
        {
            assert!(parse_check(text.as_bytes()).is_err(), "{text}");
        }
    }

    /// Byte-level mutations of real replies never panic.
    #[test]
    fn mutated_replies_never_panic() {
        for sample in [DIR_CHILDREN, FILE_CHK, WELCOME, CHECK_HEALTHY, STATUS_ACTIVE] {
            let bytes = sample.as_bytes();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for _ in 0..3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut m = bytes.to_vec();
                let at = (x as usize) % m.len();
                match (x >> 32) % 4 {
                    0 => m[at] = (x >> 40) as u8,
                    1 => m.truncate(at),
                    2 => {
                        m.remove(at);
                    }
                    _ => m.insert(at, b"[]{}\",:0"[((x >> 40) % 8) as usize]),
                }
                let _ = parse_node(&m);
                let _ = parse_welcome(&m);
                let _ = parse_check(&m);
                let _ = parse_status_active(&m);
            }
        }
    }

    #[test]
    fn cap_shapes() {
        assert!(looks_like_cap("URI:LIT:"));
        assert!(looks_like_cap("URI:CHK:nac4rhq4xvxkxfr2lrv57f5gaa:fhvmu3edq7e5e25yjwmgpl62f6bq4xf3uzhklyzafxrzbg47bcua:1:1:100000"));
        for bad in ["", "URI", "uri:CHK:x", "URI:CHK:a/b", "URI:CHK:a b", "URI:CHK:a?b", "URI:CHK:%3A", "URI:CHK:\n", "URI:é"] {
            assert!(!looks_like_cap(bad), "{bad:?}");
        }
        assert!(!looks_like_cap(&format!("URI:{}", "a".repeat(5000))));
    }
}
