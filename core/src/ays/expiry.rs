//! Expiration of the local cache layer: a blob (or a tree) not fetched for `expiration` hours is
//! removed from the local cache (0 = never). The last fetch is recorded, in epoch seconds, in the
//! hashes `atime:files:$domain` (field: md5) and `atime:md` (field: ays_id) of the local cache;
//! every fetch from the local cache or write-back into it refreshes it. A sweep (at mount and
//! then periodically) removes what expired. Entries with no record are left alone: they were
//! put there by someone else (a publisher, an operator) who did not ask for expiry.

/// The hash recording the last fetch of each blob of a domain.
pub fn blob_atime_key(domain: &str) -> String {
    format!("atime:files:{domain}")
}

/// The hash recording the last fetch of each tree.
pub const MD_ATIME_KEY: &str = "atime:md";

/// Whether something last fetched at `last` (epoch seconds) has expired at `now` under an
/// expiration of `hours` (0 = never).
pub fn is_expired(last: i64, now: i64, hours: u64) -> bool {
    if hours == 0 {
        return false;
    }
    let limit = hours.saturating_mul(3600).min(i64::MAX as u64) as i64;
    now.saturating_sub(last) > limit
}

/// Parses a recorded fetch time (`None` if it is not a number).
pub fn parse_atime(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// The fields of an atime hash (as returned by HGETALL: field, value, field, value ...) that
/// have expired.
pub fn sweep(pairs: &[Vec<u8>], now: i64, hours: u64) -> Vec<Vec<u8>> {
    if hours == 0 {
        return Vec::new();
    }
    pairs
        .chunks(2)
        .filter(|c| c.len() == 2)
        .filter(|c| parse_atime(&c[1]).is_some_and(|t| is_expired(t, now, hours)))
        .map(|c| c[0].clone())
        .collect()
}

/// How often the sweep runs: a quarter of the expiration, between one minute and one hour.
pub fn sweep_interval_secs(hours: u64) -> u64 {
    (hours.saturating_mul(900)).clamp(60, 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rules() {
        assert!(!is_expired(0, 1_000_000, 0));
        assert!(!is_expired(1000, 1000 + 48 * 3600, 48));
        assert!(is_expired(1000, 1001 + 48 * 3600, 48));
        assert!(!is_expired(i64::MIN, i64::MAX, u64::MAX));
        assert_eq!(parse_atime(b" 12 "), Some(12));
        assert_eq!(parse_atime(b"x"), None);
        let pairs: Vec<Vec<u8>> =
            vec![b"a".to_vec(), b"0".to_vec(), b"b".to_vec(), b"999999".to_vec(), b"c".to_vec(), b"junk".to_vec()];
        assert_eq!(sweep(&pairs, 1_000_000, 1), vec![b"a".to_vec()]);
        assert!(sweep(&pairs, 1_000_000, 0).is_empty());
        assert_eq!(sweep_interval_secs(0), 60);
        assert_eq!(sweep_interval_secs(48), 3600);
        assert_eq!(blob_atime_key("d"), "atime:files:d");
    }
}
