//! The debug overlay of a mount (`debug = "name"`, `debug_filter = [regex, ...]`): paths under
//! the mount point that match one of the regexes (anchored at both ends, against the path with
//! its leading slash, e.g. `/lib/x.py`) are writable; what is written goes to the named debug
//! Redis: `debug:paths:$mount` (field: path, value `"<md5>,<size>"`), `debug:files:$mount`
//! (field: md5, value: the bytes) and `debug:log:$mount` (RPUSH of `[epoch, "path", "md5"]`).
//! Reads of matching paths look in `debug:paths:$mount` first.

use crate::ays::value::{json_string, Md5};
use regex::Regex;

#[derive(Clone, Debug)]
pub struct Overlay {
    mount: String,
    filters: Vec<Regex>,
}

impl Overlay {
    /// `mount`: the mount's name (in the key names). A pattern that is not a regex is an error
    /// naming it.
    pub fn new(mount: &str, filters: &[String]) -> Result<Overlay, String> {
        let filters = filters
            .iter()
            .map(|f| Regex::new(&format!("^(?:{f})$")).map_err(|e| format!("debug_filter {f:?} is not a regex: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Overlay { mount: mount.to_string(), filters })
    }

    /// Whether `path` (under the mount point, with its leading slash) is in the overlay.
    pub fn matches(&self, path: &str) -> bool {
        self.filters.iter().any(|r| r.is_match(path))
    }

    pub fn paths_key(&self) -> String {
        format!("debug:paths:{}", self.mount)
    }

    pub fn files_key(&self) -> String {
        format!("debug:files:{}", self.mount)
    }

    pub fn log_key(&self) -> String {
        format!("debug:log:{}", self.mount)
    }

    /// One transaction-log entry: `[epoch, "path", "md5"]`.
    pub fn log_entry(epoch: i64, path: &str, md5: Md5) -> String {
        format!("[{epoch}, {}, {}]", json_string(path), json_string(&md5.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_anchor_and_keys() {
        let o = Overlay::new("mongodb", &[r".*\.py".into(), r".*\.hrd".into()]).unwrap();
        assert!(o.matches("/lib/x.py"));
        assert!(o.matches("/a.hrd"));
        assert!(!o.matches("/x.pyc"));
        assert!(!o.matches("/bin/tool"));
        assert_eq!(o.paths_key(), "debug:paths:mongodb");
        assert_eq!(o.files_key(), "debug:files:mongodb");
        assert_eq!(o.log_key(), "debug:log:mongodb");
        let m = Md5::parse("39fcbe8882373fe8296a7121f7f5b860").unwrap();
        let e = Overlay::log_entry(12, "/a \"b\".py", m);
        assert_eq!(e, r#"[12, "/a \"b\".py", "39fcbe8882373fe8296a7121f7f5b860"]"#);
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v[1], "/a \"b\".py");
        assert!(Overlay::new("m", &["(".into()]).unwrap_err().contains("\"(\""));
        assert!(!Overlay::new("m", &[]).unwrap().matches("/x"));
    }
}
