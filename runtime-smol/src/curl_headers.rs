//! What the header callback of libcurl's easy interface (used on the calling thread for aysfs
//! blob GETs and Tahoe read streams) sees: one raw header line at a time.

/// The status code if `line` is a status line (`HTTP/1.1 206 Partial Content`), which starts
/// each response and each interim one; 0 for a status line without a valid code.
pub(crate) fn status_code(line: &[u8]) -> Option<u16> {
    // The code ends at a space, or at the line's end when there is no reason phrase.
    let mut words = line.strip_prefix(b"HTTP/")?.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let code = words.nth(1)?;
    Some(std::str::from_utf8(code).ok().and_then(|c| c.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(status_code(b"HTTP/1.1 206 Partial Content\r\n"), Some(206));
        assert_eq!(status_code(b"HTTP/2 200\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.1 2x6 Odd\r\n"), Some(0));
        assert_eq!(status_code(b"HTTP/1.1\r\n"), None);
        assert_eq!(status_code(b"Content-Range: bytes 0-4/5\r\n"), None);
    }
}
