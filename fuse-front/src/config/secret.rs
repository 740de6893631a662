//! Secrets of the configuration (`rootcap`, `sql_pass`, `auth_token`) and keeping them out of
//! `ps`.
//!
//! A [`Secret`] prints only a fingerprint. A secret given as a flag (`--rootcap CAP`) would be
//! readable by every user in `/proc/PID/cmdline` for as long as the mount runs, so
//! [`hide_secret_flags`] runs first thing in `main`: it re-executes the binary without those
//! flags and with their values in the environment (`/proc/PID/environ` is readable only by the
//! same user and root), under names the loader reads back as flags ([`moved_flag_env`]).

use std::ffi::OsString;
use std::fmt;

/// A password, token or capability. `Debug` and `Display` print `secret#` and eight hex digits
/// of a 64-bit FNV-1a hash of the value, the hash of `truckeefs_core::ObjectId::fingerprint`: a
/// rootcap's digits match those of the `obj#` fingerprints in the Tahoe client's log lines.
/// A fingerprint tells two values apart and cannot be turned back into a long random value such
/// as a cap; it can confirm a guess of a short password, like any hash without a salt.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the code that hands it to a server and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.0.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("secret#{:08x}", (h >> 32) as u32)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// The keys whose values are secrets; each also has a `KEY_file` form.
pub const SECRET_KEYS: [&str; 3] = ["rootcap", "sql_pass", "auth_token"];

/// The environment variable that carries the value of the flag `--KEY` across the re-execution.
/// The loader takes it as that flag (source "flag --KEY"), not as an ordinary environment value.
pub fn moved_flag_env(key: &str) -> String {
    format!("TRUCKEEFS_FLAG_{}", key.to_ascii_uppercase())
}

/// The arguments kept, and the secret flags' values moved (the flag's key, its value).
pub type SecretSplit = (Vec<OsString>, Vec<(String, OsString)>);

/// Splits the command line into the arguments to keep and the secret flags' values to move into
/// the environment: `--rootcap VALUE` and `--rootcap=VALUE` (likewise `--sql-pass`,
/// `--auth-token`), up to a `--`, wherever they are (a command that does not take them, such as
/// `ays`, reports them from the environment). `None` when there is nothing to move, including for
/// a flag without its value (the parser reports that). `args` excludes the program name.
pub fn split_secret_flags(args: &[OsString]) -> Option<SecretSplit> {
    let mut keep = Vec::with_capacity(args.len());
    let mut moved = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(text) = arg.to_str() else {
            keep.push(arg.clone());
            i += 1;
            continue;
        };
        if text == "--" {
            keep.extend_from_slice(&args[i..]);
            break;
        }
        let secret = SECRET_KEYS.iter().find_map(|key| {
            let flag = format!("--{}", key.replace('_', "-"));
            if text == flag {
                Some((key, None))
            } else {
                text.strip_prefix(&flag).and_then(|rest| rest.strip_prefix('=')).map(|v| (key, Some(OsString::from(v))))
            }
        });
        match secret {
            Some((key, Some(value))) => {
                moved.push((moved_flag_env(key), value));
                i += 1;
            }
            Some((key, None)) if i + 1 < args.len() => {
                moved.push((moved_flag_env(key), args[i + 1].clone()));
                i += 2;
            }
            _ => {
                keep.push(arg.clone());
                i += 1;
            }
        }
    }
    if moved.is_empty() {
        None
    } else {
        Some((keep, moved))
    }
}

/// Re-executes this program without its secret flags (see the module documentation). Returns
/// `Ok` when there is nothing to hide; on success it does not return. Call it before any thread
/// starts. The error never contains a value.
pub fn hide_secret_flags() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut all = std::env::args_os();
    let argv0 = all.next().unwrap_or_else(|| OsString::from("truckeefs"));
    let args: Vec<OsString> = all.collect();
    let Some((keep, moved)) = split_secret_flags(&args) else { return Ok(()) };
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0(argv0).args(keep);
    for (name, value) in moved {
        cmd.env(name, value);
    }
    let e = cmd.exec();
    Err(format!(
        "cannot re-execute /proc/self/exe to hide a secret flag from ps ({e}); set it in the environment or a *_file key instead (see README.md, Configuration)"
    ))
}

/// Removes the variables [`hide_secret_flags`] set, once the configuration has read them, so
/// that no process this one starts inherits them, and overwrites their values where
/// `/proc/PID/environ` (`ps e`) reads them: the environment block the process started with,
/// which removing a variable leaves as it was. Call it before any thread starts: changing the
/// environment races with threads that read it.
pub fn forget_moved_flags() {
    extern "C" {
        static environ: *const *mut libc::c_char;
    }
    let names: Vec<String> = SECRET_KEYS.iter().map(|key| format!("{}=", moved_flag_env(key))).collect();
    // SAFETY: `environ` is the C library's NULL-terminated array of NUL-terminated strings, not
    // changed by another thread (none runs yet); each value is overwritten within its own
    // length, NUL kept.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if let Some(name) = names.iter().find(|n| text.starts_with(n.as_bytes())) {
                std::ptr::write_bytes((*entry).add(name.len()), b'*', text.len() - name.len());
            }
            entry = entry.add(1);
        }
    }
    for key in SECRET_KEYS {
        std::env::remove_var(moved_flag_env(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn debug_and_display_show_only_a_fingerprint() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), s.fingerprint());
        assert_eq!(format!("{s:?}"), s.fingerprint());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert!(s.fingerprint().starts_with("secret#") && s.fingerprint().len() == 15);
        assert_ne!(s.fingerprint(), Secret::new("hunter3").fingerprint());
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn same_digits_as_the_object_fingerprint() {
        let cap = "URI:DIR2:aaaa:bbbb";
        let obj = truckeefs_core::ObjectId(cap.into()).fingerprint();
        assert_eq!(obj.trim_start_matches("obj#"), Secret::new(cap).fingerprint().trim_start_matches("secret#"));
    }

    #[test]
    fn secret_flags_move_to_the_environment() {
        let (keep, moved) =
            split_secret_flags(&os(&["config", "--rootcap", "URI:X", "--sql-pass=pw", "--sql-host", "db", "--auth-token", "t"]))
                .unwrap();
        assert_eq!(keep, os(&["config", "--sql-host", "db"]));
        assert_eq!(
            moved,
            vec![
                ("TRUCKEEFS_FLAG_ROOTCAP".to_string(), OsString::from("URI:X")),
                ("TRUCKEEFS_FLAG_SQL_PASS".to_string(), OsString::from("pw")),
                ("TRUCKEEFS_FLAG_AUTH_TOKEN".to_string(), OsString::from("t")),
            ]
        );
    }

    #[test]
    fn nothing_to_move() {
        assert_eq!(split_secret_flags(&os(&["mount", "--rootcap-file", "/f", "/mnt"])), None);
        // Without its value the flag stays, for the parser to report.
        assert_eq!(split_secret_flags(&os(&["config", "--rootcap"])), None);
        assert_eq!(split_secret_flags(&os(&["mount", "--", "--rootcap", "x"])), None);
    }
}
