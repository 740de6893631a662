//! The syntax of configuration values. Every parser takes the text as given (from a file, the
//! environment or a flag) and answers with the typed value or a message that says what was
//! expected; the caller adds the key and the source. Messages quote the text, so secrets never
//! pass through here except [`check_dircap`], which never quotes it.

use std::time::Duration;

/// The longest duration accepted anywhere: a hundred years, so that no later arithmetic on an
/// `Instant` overflows.
const SECONDS_MAX: f64 = 100.0 * 365.0 * 86400.0;

/// `true`, `yes`, `on`, `1` and `false`, `no`, `off`, `0`, in any case.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true/false, yes/no, on/off, 1/0)")),
    }
}

/// A size in bytes: a number (a fraction is allowed with a unit) and an optional unit, in any
/// case, with or without a space: `k`, `m`, `g`, `t` are powers of 1000 (`kb`... also); `kib`,
/// `mib`, `gib`, `tib` are powers of 1024; `b` or nothing is bytes. The result is rounded down
/// to a whole byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a size (bytes, or a number with k, m, g, t (powers of 1000) or kib, mib, gib, tib (powers of 1024))")
    };
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim_start() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u64.pow(2),
        "g" | "gb" => 1000u64.pow(3),
        "t" | "tb" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let too_big = || format!("{text:?} is too large (at most {} bytes)", u64::MAX);
    match number.split_once('.') {
        None => {
            let n: u64 = number.parse().map_err(|_| too_big())?;
            n.checked_mul(multiplier).ok_or_else(too_big)
        }
        Some((whole, fraction)) => {
            if fraction.contains('.') {
                return Err(bad());
            }
            // Exact decimal arithmetic: 1.5g is 1,500,000,000 bytes, not a float's neighbour.
            let whole: u64 = whole.parse().map_err(|_| too_big())?;
            let digits = fraction.len().min(18);
            let scale = 10u128.pow(digits as u32);
            let frac: u128 = fraction[..digits].parse().map_err(|_| bad())?;
            let total = (whole as u128) * (multiplier as u128) + frac * (multiplier as u128) / scale;
            u64::try_from(total).map_err(|_| too_big())
        }
    }
}

/// A duration in seconds: a non-negative number, fractions allowed, an optional `s`.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let t = t.strip_suffix('s').unwrap_or(t).trim_end();
    let bad = || format!("{text:?} is not a number of seconds");
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let secs: f64 = t.parse().map_err(|_| bad())?;
    if secs > SECONDS_MAX {
        return Err(format!("{text:?} is too long (at most {SECONDS_MAX} seconds)"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// [`parse_seconds`], or `inf` (also `infinity`, `.inf`, `never`) for no limit (`None`).
pub fn parse_seconds_or_inf(text: &str) -> Result<Option<Duration>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "inf" | "infinity" | ".inf" | "never" => Ok(None),
        _ => parse_seconds(text).map(Some).map_err(|e| format!("{e}, nor inf")),
    }
}

/// A TCP port, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port number (1-65535)")),
    }
}

/// An integer within `min..=max`.
pub fn parse_int(text: &str, min: i64, max: i64) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("{text:?} is out of range ({min} to {max})")),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address (more than one `:`) is a host
/// without a port. The host comes back without brackets.
pub fn parse_host(text: &str) -> Result<(String, Option<u16>), String> {
    let t = text.trim();
    let bad = |why: &str| format!("{text:?} is not a host name or host:port ({why})");
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
        if v6.is_empty() || !v6.contains(':') {
            return Err(bad("brackets hold an IPv6 address"));
        }
        match after {
            "" => (v6, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return Err(bad("unexpected text after ']'")),
            },
        }
    } else {
        match t.matches(':').count() {
            0 => (t, None),
            1 => {
                let (h, p) = t.split_once(':').unwrap_or((t, ""));
                (h, Some(p))
            }
            _ => (t, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
        return Err(bad("a host name has no spaces, '/' or '@'"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).map_err(|_| bad("the port is a number from 1 to 65535"))?),
    };
    Ok((host.to_string(), port))
}

/// The gateway URL: `http://` or `https://`, a host, no credentials (`auth_token` carries
/// those, masked), no query. A trailing `/` is dropped.
pub fn parse_url(text: &str) -> Result<String, String> {
    let t = text.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| "the gateway URL starts with http:// or https://".to_string())?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        // Not quoted: the text holds a password.
        return Err("the gateway URL must not carry credentials (user:password@); use auth_token".into());
    }
    if authority.is_empty() {
        return Err(format!("{t:?} has no host"));
    }
    if t.contains('?') || t.contains('#') || t.chars().any(char::is_whitespace) {
        return Err(format!("{t:?} is not a plain gateway URL (no spaces, query or fragment)"));
    }
    Ok(t.trim_end_matches('/').to_string())
}

/// Tahoe's base32 alphabet (RFC 4648 in lower case, without padding).
const BASE32: &str = "abcdefghijklmnopqrstuvwxyz234567";

/// `len` base32 characters encoding `bits` bits: the unused low bits of the last one are zero.
fn is_base32(s: &str, bits: usize) -> bool {
    let len = bits.div_ceil(5);
    let spare = len * 5 - bits;
    s.len() == len
        && s.chars().all(|c| BASE32.contains(c))
        && s.chars().last().and_then(|c| BASE32.find(c)).is_some_and(|v| v % (1 << spare) == 0)
}

/// A Tahoe-LAFS directory write cap, the only kind a filesystem can write into:
/// `URI:DIR2:<writekey>:<fingerprint>` (SDMF) or `URI:DIR2-MDMF:<writekey>:<fingerprint>`
/// (MDMF), with a 128-bit writekey and a 256-bit fingerprint in base32, as in Tahoe's
/// `allmydata/uri.py`. The message never contains the cap; it names only its kind.
pub fn check_dircap(cap: &str) -> Result<(), String> {
    const WRITE: [&str; 2] = ["URI:DIR2:", "URI:DIR2-MDMF:"];
    const READ_ONLY: [&str; 4] = ["URI:DIR2-RO:", "URI:DIR2-MDMF-RO:", "URI:DIR2-CHK:", "URI:DIR2-LIT:"];
    const EXPECTED: &str = "expected a directory write cap, URI:DIR2:... or URI:DIR2-MDMF:... ('tahoe create-alias' or 'tahoe mkdir' makes one)";
    if let Some(kind) = READ_ONLY.iter().find(|p| cap.starts_with(*p)) {
        return Err(format!("a read-only directory cap ({}...); {EXPECTED}", kind.trim_end_matches(':')));
    }
    let Some((prefix, body)) = WRITE.iter().find_map(|p| cap.strip_prefix(p).map(|b| (*p, b))) else {
        let kind = if cap.starts_with("URI:") { "a Tahoe cap, but not of a directory that can be written" } else { "not a Tahoe cap" };
        return Err(format!("{kind}; {EXPECTED}"));
    };
    let mut parts = body.split(':');
    let key_and_fingerprint = matches!((parts.next(), parts.next()),
        (Some(key), Some(fp)) if is_base32(key, 128) && is_base32(fp, 256));
    // MDMF caps of Tahoe 1.9 carry extension fields after the fingerprint (`:3:131073`).
    let rest_ok = match prefix {
        "URI:DIR2-MDMF:" => parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        _ => parts.next().is_none(),
    };
    let ok = key_and_fingerprint && rest_ok;
    if !ok {
        return Err(format!("malformed directory cap (wrong length or characters after the prefix); {EXPECTED}"));
    }
    Ok(())
}

/// The formats `truckeefs config` prints, which these parsers read back.
pub fn show_seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically valid SDMF directory write cap (not of any real grid).
    pub const CAP: &str = "URI:DIR2:ovjtm4jmq2ghvsxz5sd7bqumya:ylltpw6vsn3yenq2kjdfpxzv3ezmg6w6wy3ud4fv3nbwhmkq3bja";

    #[test]
    fn booleans_in_every_spelling() {
        for t in ["true", "YES", "On", "1", " true "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for t in ["false", "No", "OFF", "0"] {
            assert_eq!(parse_bool(t), Ok(false), "{t}");
        }
        assert!(parse_bool("maybe").unwrap_err().contains("\"maybe\""));
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn sizes_decimal_and_binary() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("10b"), Ok(10));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("2 m"), Ok(2_000_000));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("3g"), Ok(3_000_000_000));
        assert_eq!(parse_size("3gib"), Ok(3 << 30));
        assert_eq!(parse_size("1t"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1.5g"), Ok(1_500_000_000));
        assert_eq!(parse_size("0.5kib"), Ok(512));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        for bad in ["", "k", "-1", "1.", ".5k", "1.2.3k", "10 zb", "1e3", "ten"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("99999999999t").unwrap_err().contains("too large"));
        assert!(parse_size("18446744073709551616").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations_in_seconds_and_inf() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("5s"), Ok(Duration::from_secs(5)));
        for bad in ["", "-1", "1e400", "NaN", "inf", "5m", "1.2.3"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_seconds("99999999999").unwrap_err().contains("too long"));
        assert_eq!(parse_seconds_or_inf("inf"), Ok(None));
        assert_eq!(parse_seconds_or_inf("Infinity"), Ok(None));
        assert_eq!(parse_seconds_or_inf("14400"), Ok(Some(Duration::from_secs(14400))));
        assert!(parse_seconds_or_inf("soon").unwrap_err().contains("nor inf"));
    }

    #[test]
    fn hosts_with_ports_and_ipv6() {
        assert_eq!(parse_host("db"), Ok(("db".into(), None)));
        assert_eq!(parse_host("db:3307"), Ok(("db".into(), Some(3307))));
        assert_eq!(parse_host("10.0.0.1:6380"), Ok(("10.0.0.1".into(), Some(6380))));
        assert_eq!(parse_host("[::1]:3307"), Ok(("::1".into(), Some(3307))));
        assert_eq!(parse_host("[fe80::1]"), Ok(("fe80::1".into(), None)));
        assert_eq!(parse_host("::1"), Ok(("::1".into(), None)));
        for bad in ["", "db:", "db:0", "db:65536", "db:x", ":3306", "[::1", "[::1]x", "[]:1", "a b", "u@db"] {
            assert!(parse_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ports_and_integers() {
        assert_eq!(parse_port("3306"), Ok(3306));
        assert!(parse_port("0").is_err() && parse_port("70000").is_err() && parse_port("x").is_err());
        assert_eq!(parse_int("-20", -20, 19), Ok(-20));
        assert!(parse_int("20", -20, 19).unwrap_err().contains("out of range"));
        assert!(parse_int("1.5", 0, 9).unwrap_err().contains("whole number"));
    }

    #[test]
    fn gateway_urls() {
        assert_eq!(parse_url("http://127.0.0.1:3456/"), Ok("http://127.0.0.1:3456".into()));
        assert_eq!(parse_url("https://gw.example"), Ok("https://gw.example".into()));
        assert!(parse_url("127.0.0.1:3456").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://gw/?t=json").is_err());
        let e = parse_url("http://user:hunter2@gw").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn directory_write_caps_only_and_never_quoted() {
        assert_eq!(check_dircap(CAP), Ok(()));
        let mdmf = CAP.replace("URI:DIR2:", "URI:DIR2-MDMF:");
        assert_eq!(check_dircap(&mdmf), Ok(()));
        assert_eq!(check_dircap(&format!("{mdmf}:3:131073")), Ok(()));
        assert!(check_dircap(&format!("{mdmf}:x")).is_err());
        let ro = CAP.replace("URI:DIR2:", "URI:DIR2-RO:");
        let bad = [
            ro.as_str(),
            "URI:DIR2:abc:def",
            "URI:CHK:ovjtm4jmq2ghvsxz5sd7bqumya:ylltpw6vsn3yenq2kjdfpxzv3ezmg6w6wy3ud4fv3nbwhmkq3bja:1:1:10",
            "hunter2",
            &CAP[..CAP.len() - 1],
            &format!("{CAP}:extra"),
            // The last character of a 128-bit key has two unused bits, which must be zero.
            &CAP.replace("mya:", "myb:"),
        ];
        for cap in bad {
            let e = check_dircap(cap).unwrap_err();
            assert!(!e.contains(&cap[cap.len() - 6..]), "{e}");
            assert!(e.contains("URI:DIR2:..."), "{e}");
        }
        assert!(check_dircap(&ro).unwrap_err().contains("read-only"));
    }
}
