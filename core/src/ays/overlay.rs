//! The debug overlay of a mount (`debug = "name"`, `debug_filter = [regex, ...]`): paths under
//! the mount point that match one of the regexes (anchored at both ends, against the path with
//! its leading slash, e.g. `/lib/x.py`) are writable; what is written goes to the named debug
//! Redis: `debug:paths:$mount` (field: path, value `"<md5>,<size>"`), `debug:files:$mount`
//! (field: md5, value: the bytes) and `debug:log:$mount` (RPUSH of `[epoch, "path", "md5"]`).
//! Beyond the design, `debug:times:$mount` (field: path, value: the time of the last write,
//! `"<seconds>.<nanoseconds>"` since the epoch) keeps each file's mtime, in a hash of its own so
//! that the design's `"md5,size"` values stay as they are.
//! Reads of matching paths look in `debug:paths:$mount` first.

use crate::ays::value::{json_string, Md5};
use crate::Timespec;
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

    pub fn times_key(&self) -> String {
        format!("debug:times:{}", self.mount)
    }

    /// A `debug:times` value: `"<seconds>.<nanoseconds, 9 digits>"`.
    pub fn time_value(t: Timespec) -> String {
        format!("{}.{:09}", t.sec, t.nsec)
    }

    /// Parses a `debug:times` value (`"<seconds>"` or `"<seconds>.<fraction>"`, at most 9
    /// fraction digits, seconds not negative); `None` if it is not one.
    pub fn parse_time(v: &str) -> Option<Timespec> {
        let (sec, frac) = v.split_once('.').unwrap_or((v, ""));
        let digits = |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(sec) || (!frac.is_empty() && (frac.len() > 9 || !digits(frac))) || v.ends_with('.') {
            return None;
        }
        let sec: i64 = sec.parse().ok()?;
        let nsec: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
        Some(Timespec { sec, nsec })
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

    #[test]
    fn write_times_round_trip_and_reject_garbage() {
        let o = Overlay::new("mongodb", &[]).unwrap();
        assert_eq!(o.times_key(), "debug:times:mongodb");
        let t = Timespec { sec: 1_712_345_678, nsec: 1_234 };
        assert_eq!(Overlay::time_value(t), "1712345678.000001234");
        assert_eq!(Overlay::parse_time(&Overlay::time_value(t)), Some(t));
        assert_eq!(Overlay::parse_time("17"), Some(Timespec { sec: 17, nsec: 0 }));
        assert_eq!(Overlay::parse_time("17.5"), Some(Timespec { sec: 17, nsec: 500_000_000 }));
        for bad in ["", ".", "17.", ".5", "-1", "1e9", "17.1234567890", "x", "1 2", "99999999999999999999"] {
            assert_eq!(Overlay::parse_time(bad), None, "{bad:?}");
        }
    }
}
