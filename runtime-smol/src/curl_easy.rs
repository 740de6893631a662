//! libcurl's easy interface on the calling thread, for the transfers whose bodies must not pass
//! through isahc's agent thread and a pipe (aysfs blob GETs, Tahoe read streams): one handle
//! per thread, and what its header callback sees (one raw header line at a time).

use std::cell::RefCell;

thread_local! {
    static HANDLE: RefCell<Option<curl::easy::Easy>> = const { RefCell::new(None) };
}

/// Runs `transfer` on this thread's handle, which keeps its connections alive between
/// transfers; after a failed transfer the handle goes, so its connection is not reused.
pub(crate) fn with_handle<T, E>(transfer: impl FnOnce(&mut curl::easy::Easy) -> Result<T, E>) -> Result<T, E> {
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let result = transfer(slot.get_or_insert_with(curl::easy::Easy::new));
        if result.is_err() {
            *slot = None;
        }
        result
    })
}

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
