//! [`TahoeClient::read_stream`], the read-ahead stream of the block cache, on libcurl's easy
//! interface on the calling thread: the body goes from curl's receive buffer straight into the
//! reader's pieces. (Through isahc it would pass through isahc's agent thread and a pipe first:
//! two more copies and thread hand-offs per byte, while the gateway, CPU-bound on the same
//! machine, waits for the processor.) This thread's handle (`curl_easy.rs`) keeps its
//! connection to the gateway alive between streams. Timeouts, permits, the token and messages are as for every other
//! request (see the parent module).

use super::{cap_path, check_cap, check_length, content_range_value, status_error, Op, TahoeClient};
use bytes::Bytes;
use curl::easy::{Easy, List};
use std::cell::Cell;
use truckeefs_core::{IoError, IoErrorKind, ObjectId};

/// libcurl's receive buffer: one `recv` and one write callback per 512 KiB at most, instead of
/// per 16 KiB (its default).
const RECV_BUFFER: usize = 512 << 10;
/// The most of an error reply kept for its message.
const ERROR_TEXT_MAX: usize = 4096;

/// What the write callback makes of the body, once the status is known.
enum Body {
    /// Not decided yet (no body byte seen).
    Start,
    /// Bytes for the reader: `skip` more to drop first (a 200 answering a range from its first
    /// byte), then `left` to hand over in pieces.
    Data { skip: u64, left: u64, buf: Vec<u8> },
    /// An error reply's text.
    Error(Vec<u8>),
    /// Nothing for the reader (a 416's text): received and dropped.
    Ignore,
    /// Done: the reader has had what it asked for, or wants no more; any more bytes end the
    /// transfer.
    Stopped,
    /// Not what the web API documents.
    Corrupt(String),
}

impl TahoeClient {
    /// `len` for [`TahoeClient::read_stream`]: to the end of the object, however long.
    pub const STREAM_TO_END: u64 = u64::MAX / 4;

    /// Reads `len` bytes from `offset` in one request, handing them to `piece` in pieces of
    /// `piece_len` bytes (the last may be shorter) as they arrive, until `piece` returns false.
    /// Fewer bytes only at the end of the object.
    pub fn read_stream(
        &self,
        cap: &ObjectId,
        offset: u64,
        len: u64,
        piece_len: usize,
        piece: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<(), IoError> {
        let op = Op::new("read", Some(cap));
        check_cap(&op, cap)?;
        if len == 0 {
            return Ok(());
        }
        let _permit = self.permits.acquire();
        // With the object's size known from its cap, a body that ends early or runs on is caught
        // before its last piece reaches the reader: a piece shorter than `piece_len` is the last
        // one, and it must end the object.
        let piece_len = piece_len.max(1);
        let expected = super::immutable_size(&cap.0).map(|size| size.saturating_sub(offset).min(len));
        let (mut handed, mut stopped, mut refused) = (0u64, false, None);
        let mut counted = |p: Bytes| {
            let total = handed + p.len() as u64;
            if expected.is_some_and(|e| total > e || (p.len() < piece_len && total != e)) {
                refused = Some(total);
                return false;
            }
            handed = total;
            stopped = !piece(p);
            !stopped
        };
        crate::curl_easy::with_handle(|easy| self.stream_with(easy, &op, cap, offset, len, piece_len, &mut counted))?;
        match refused {
            Some(got) => check_length(&op, cap, offset, len, got),
            None if stopped => Ok(()),
            None => check_length(&op, cap, offset, len, handed),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn stream_with(
        &self,
        easy: &mut Easy,
        op: &Op<'_>,
        cap: &ObjectId,
        offset: u64,
        len: u64,
        piece_len: usize,
        piece: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<(), IoError> {
        let setup = |e: curl::Error| op.err(IoErrorKind::Other, format_args!("cannot set up the request: {}", e.description()));
        easy.reset();
        easy.signal(false).map_err(setup)?;
        easy.url(&format!("{}{}", self.base, cap_path(cap))).map_err(setup)?;
        easy.get(true).map_err(setup)?;
        easy.follow_location(false).map_err(setup)?;
        // Proxies from the environment are ignored: no cap goes to a proxy.
        easy.noproxy("*").map_err(setup)?;
        easy.tcp_nodelay(true).map_err(setup)?;
        easy.buffer_size(RECV_BUFFER).map_err(setup)?;
        easy.connect_timeout(self.net_timeout).map_err(setup)?;
        easy.low_speed_limit(1).map_err(setup)?;
        easy.low_speed_time(self.stall_timeout()).map_err(setup)?;
        let mut headers = List::new();
        headers.append("Accept: text/plain").map_err(setup)?;
        if let Some(token) = &self.auth {
            let value = token.0.to_str().map_err(|_| op.err(IoErrorKind::Other, "auth_token: not a valid header value"))?;
            headers.append(&format!("Authorization: {value}")).map_err(setup)?;
        }
        easy.http_headers(headers).map_err(setup)?;
        // The whole object: a plain GET, as `curl` would send (the gateway's fastest path).
        if offset > 0 || len < Self::STREAM_TO_END {
            easy.range(&format!("{offset}-{}", offset.saturating_add(len - 1))).map_err(setup)?;
        }

        let status = Cell::new(0u16);
        let content_start = Cell::new(None::<Option<u64>>);
        let mut body = Body::Start;
        let performed = {
            let mut transfer = easy.transfer();
            transfer
                .header_function(|h| {
                    if let Some(code) = crate::curl_easy::status_code(h) {
                        // A new response (or an interim one) begins.
                        status.set(code);
                        content_start.set(None);
                    } else if let Some((name, value)) = std::str::from_utf8(h).ok().and_then(|h| h.split_once(':')) {
                        if name.trim().eq_ignore_ascii_case("content-range") {
                            content_start.set(Some(content_range_value(value).map(|(start, _, _)| start)));
                        }
                    }
                    true
                })
                .map_err(setup)?;
            transfer
                .write_function(|data| {
                    if matches!(body, Body::Start) {
                        body = match status.get() {
                            206 => match content_start.get().flatten() {
                                Some(start) if start == offset => Body::Data { skip: 0, left: len, buf: Vec::with_capacity(piece_len) },
                                Some(start) => Body::Corrupt(format!("asked for bytes from {offset}, got {start}")),
                                None => Body::Corrupt("206 reply without a valid Content-Range".into()),
                            },
                            // The range was ignored: the whole object.
                            200 => Body::Data { skip: offset, left: len, buf: Vec::with_capacity(piece_len) },
                            // Past the end: no bytes.
                            416 => Body::Ignore,
                            _ => Body::Error(Vec::new()),
                        };
                    }
                    Ok(match &mut body {
                        Body::Data { skip, left, buf } => {
                            let mut rest = data;
                            let dropped = (*skip).min(rest.len() as u64) as usize;
                            *skip -= dropped as u64;
                            rest = &rest[dropped..];
                            let mut refused = false;
                            while !rest.is_empty() && *left > 0 && !refused {
                                let room = (piece_len - buf.len()).min(rest.len()).min((*left).min(usize::MAX as u64) as usize);
                                buf.extend_from_slice(&rest[..room]);
                                rest = &rest[room..];
                                *left -= room as u64;
                                if buf.len() == piece_len || *left == 0 {
                                    let full = std::mem::replace(buf, Vec::with_capacity(piece_len));
                                    refused = !piece(Bytes::from(full));
                                }
                            }
                            let done = *left == 0;
                            if refused || (done && !rest.is_empty()) {
                                // Fewer bytes taken than given: libcurl ends the transfer.
                                body = Body::Stopped;
                                0
                            } else {
                                if done {
                                    body = Body::Stopped;
                                }
                                data.len()
                            }
                        }
                        Body::Ignore => data.len(),
                        Body::Error(text) => {
                            let room = ERROR_TEXT_MAX.saturating_sub(text.len()).min(data.len());
                            text.extend_from_slice(&data[..room]);
                            // Enough for the message: the rest is not received.
                            if room < data.len() { 0 } else { data.len() }
                        }
                        Body::Start | Body::Stopped | Body::Corrupt(_) => 0,
                    })
                })
                .map_err(setup)?;
            transfer.perform()
        };
        match body {
            // Stopped on purpose: the transfer's "write error" is ours.
            Body::Stopped => return Ok(()),
            Body::Corrupt(why) => return Err(op.err(IoErrorKind::Corrupt, why)),
            Body::Error(text) => return Err(status_error(op, status.get(), &text)),
            _ => {}
        }
        performed.map_err(|e| self.curl_error(op, &e))?;
        let status = match status.get() {
            0 => easy.response_code().map_err(|e| self.curl_error(op, &e))? as u16,
            s => s,
        };
        match body {
            // A body-less reply: an empty object, or nothing past the end.
            Body::Start if matches!(status, 200 | 206 | 416) => Ok(()),
            Body::Start => Err(status_error(op, status, b"")),
            // The end of the object came first: hand over what is left.
            Body::Data { buf, .. } => {
                if !buf.is_empty() {
                    piece(Bytes::from(buf));
                }
                Ok(())
            }
            // Nothing for the reader (or answered above).
            Body::Ignore | Body::Stopped | Body::Corrupt(_) | Body::Error(_) => Ok(()),
        }
    }

    fn curl_error(&self, op: &Op<'_>, e: &curl::Error) -> IoError {
        if e.is_operation_timedout() {
            op.err(IoErrorKind::Timeout, format_args!("gateway {} sent nothing for {:?}", self.gateway, self.net_timeout))
        } else if e.is_couldnt_connect() || e.is_couldnt_resolve_host() {
            op.err(IoErrorKind::Other, format_args!("gateway {} unreachable: {}", self.gateway, e.description()))
        } else {
            op.err(IoErrorKind::Other, format_args!("gateway {}: {}", self.gateway, e.description()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{client, fake_gateway, reply, CAP};
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// Streams `len` bytes from `offset` in pieces of `piece_len`; the pieces, or the error.
    fn stream(url: &str, offset: u64, len: u64, piece_len: usize) -> Result<Vec<Bytes>, IoError> {
        let mut pieces = Vec::new();
        client(url).read_stream(&ObjectId(CAP.into()), offset, len, piece_len, &mut |b| {
            pieces.push(b);
            true
        })?;
        Ok(pieces)
    }

    fn joined(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn streams_hand_over_what_was_asked_for_in_pieces() {
        let data: Vec<u8> = (0..100u8).collect();
        let url = fake_gateway(vec![
            // The whole object.
            reply("200 OK", &["Content-Length: 100"], &data),
            // A range.
            reply("206 Partial Content", &["Content-Range: bytes 30-39/100", "Content-Length: 10"], &data[30..40]),
            // A range the gateway ignored: the whole object from its first byte.
            reply("200 OK", &["Content-Length: 100"], &data),
            // Past the end.
            reply("416 Requested Range not satisfiable", &["Content-Length: 9"], b"too far!!"),
            // A range running past the end of the object.
            reply("206 Partial Content", &["Content-Range: bytes 95-99/100", "Content-Length: 5"], &data[95..]),
        ]);
        let pieces = stream(&url, 0, TahoeClient::STREAM_TO_END, 7).unwrap();
        assert_eq!(joined(&pieces), data);
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.len() == 7) && pieces.last().unwrap().len() == 2);
        assert_eq!(joined(&stream(&url, 30, 10, 4).unwrap()), &data[30..40]);
        assert_eq!(joined(&stream(&url, 30, 10, 4).unwrap()), &data[30..40]);
        assert!(stream(&url, 100, 10, 4).unwrap().is_empty());
        assert_eq!(joined(&stream(&url, 95, 10, 64).unwrap()), &data[95..]);
    }

    #[test]
    fn a_stream_ends_when_the_reader_wants_no_more() {
        let data = vec![5u8; 1 << 20];
        let url = fake_gateway(vec![reply("200 OK", &[&format!("Content-Length: {}", data.len())], &data)]);
        let mut pieces = 0;
        let cap = ObjectId(CAP.replace(":100", &format!(":{}", data.len())));
        client(&url)
            .read_stream(&cap, 0, TahoeClient::STREAM_TO_END, 1000, &mut |p| {
                assert_eq!(&p[..], &data[..1000]);
                pieces += 1;
                false
            })
            .unwrap();
        assert_eq!(pieces, 1);
    }

    /// A body of other length than the cap's size, under a Content-Length that matches it (a
    /// truncating proxy, another object's bytes): an error, and no piece that would end the
    /// object early reaches the reader (it would be cached as the object's last block).
    #[test]
    fn a_body_of_another_length_than_the_caps_size_is_refused() {
        let data: Vec<u8> = (0..100u8).collect();
        let url = fake_gateway(vec![
            // Cut short inside a piece, from the start and from an offset.
            reply("200 OK", &["Content-Length: 50"], &data[..50]),
            reply("206 Partial Content", &["Content-Range: bytes 30-59/100", "Content-Length: 30"], &data[30..60]),
            // Cut short at a piece's end: every piece whole, the object still short.
            reply("200 OK", &["Content-Length: 40"], &data[..40]),
            // Longer than the object.
            reply("200 OK", &["Content-Length: 120"], &[7u8; 120]),
        ]);
        let mut pieces = Vec::new();
        let e = client(&url)
            .read_stream(&ObjectId(CAP.into()), 0, TahoeClient::STREAM_TO_END, 20, &mut |p| {
                pieces.push(p);
                true
            })
            .unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("50 bytes from offset 0 of an object of 100"), "{e}");
        assert_eq!(joined(&pieces), &data[..40], "only whole pieces of the object's bytes");
        let e = stream(&url, 30, TahoeClient::STREAM_TO_END, 20).unwrap_err();
        assert!(e.message.contains("30 bytes from offset 30"), "{e}");
        let e = stream(&url, 0, TahoeClient::STREAM_TO_END, 20).unwrap_err();
        assert!(e.message.contains("40 bytes from offset 0"), "{e}");
        let e = stream(&url, 0, TahoeClient::STREAM_TO_END, 20).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
    }

    #[test]
    fn streams_refuse_replies_not_as_documented() {
        let url = fake_gateway(vec![
            reply("206 Partial Content", &["Content-Length: 5"], b"abcde"),
            reply("206 Partial Content", &["Content-Range: bytes 3-7/100", "Content-Length: 5"], b"abcde"),
            reply("206 Partial Content", &["Content-Range: bytes 0-4/100", "Content-Length: 9"], b"abc"),
            reply("500 Internal Server Error", &["Content-Length: 30"], b"boom URI:CHK:leak:leak:1:1:100"),
            // An error reply longer than its message needs: not received whole.
            reply("503 Service Unavailable", &["Content-Length: 2000000"], &[b'x'; 2_000_000]),
        ]);
        let fingerprint = ObjectId(CAP.into()).fingerprint();
        for _ in 0..2 {
            let e = stream(&url, 0, 5, 64).unwrap_err();
            assert_eq!(e.kind, IoErrorKind::Corrupt, "{e}");
            assert!(e.message.contains(&fingerprint), "{e}");
        }
        // Shorter than its Content-Length.
        let e = stream(&url, 0, 5, 64).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other, "{e}");
        let e = stream(&url, 0, 5, 64).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other);
        assert!(e.message.contains("HTTP 500: boom <cap>"), "{e}");
        assert!(!e.message.contains("URI:"), "{e}");
        let e = stream(&url, 0, 5, 64).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other);
        assert!(e.message.contains("HTTP 503: xxx"), "{e}");
    }

    #[test]
    fn a_silent_gateway_times_out_and_a_closed_port_fails_fast() {
        let url = fake_gateway(vec![None]);
        let t = Instant::now();
        let e = stream(&url, 0, 10, 64).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = stream(&format!("http://127.0.0.1:{port}"), 0, 10, 64).unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other, "{e}");
        assert!(e.message.contains("unreachable"), "{e}");
    }
}
