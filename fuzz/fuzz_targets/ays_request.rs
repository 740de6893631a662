//! Requests to the aysfs cache server (`truckeefs ays serve`) come from the network: the head
//! parser and framing checks (`http::parse_head`), the body decoder (`Content-Length` or
//! chunked), the decoders the routes apply to path segments and queries, and the parsers of
//! request bodies. No bytes may panic them, and a body read must match its framing.
//!
//! Input: a request as sent on the wire (head, `\r\n\r\n`, body).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use truckeefs_runtime_smol::ays::http::{self, Request};
use truckeefs_runtime_smol::ays::proto::{self, ClientAnnounce, FetchMode, MdAnswer, StorAnnounce};

/// What the routes of `server.rs` decode from the path (see `App::handle`).
fn route(path: &str, query: Option<&str>) {
    let Some(rest) = path.strip_prefix('/') else { return };
    let segs: Vec<&str> = rest.split('/').collect();
    let key = |what: &str, s: &str| proto::decode_segment(s).and_then(|k| proto::validate_key(what, &k).map(|_| k));
    let blob = |domain: &str, md5: &str| {
        let _ = proto::domain_from_segment(domain);
        let _ = proto::is_md5_hex(md5);
    };
    match segs.as_slice() {
        ["stor", "md", id] => drop(key("ays_id", id)),
        ["stor", "blob", domain, md5] => blob(domain, md5),
        ["ays", "client", id] => drop(key("client id", id)),
        ["ays", "stor", name] => drop(key("store name", name)),
        ["ays", "mount", client, mount] => {
            let _ = key("client id", client);
            let _ = key("mount name", mount);
        }
        ["md", client, mount, dir @ ..] => {
            let _ = key("client id", client);
            let _ = key("mount name", mount);
            if let Ok(p) = proto::dir_path_from_segments(dir) {
                assert!(proto::validate_dir_path(&p).is_ok(), "a decoded directory path is not valid: {p:?}");
            }
            let _ = FetchMode::from_query(query);
        }
        [domain, md5] => {
            blob(domain, md5);
            let _ = FetchMode::from_query(query);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(data.len());
    let (head, mut body) = data.split_at(split);
    let head = match http::parse_head(head, 64) {
        Ok(h) => h,
        Err(refusal) => {
            assert!(matches!(refusal.status, 400 | 431), "a refused head answered {}", refusal.status);
            return;
        }
    };
    assert!(!head.path.contains('?'));
    route(&head.path, head.query.as_deref());
    let declared = head.content_length();
    let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
    let mut req = Request::new(head, peer, &mut body);
    let _ = req.header("authorization");
    const LIMIT: u64 = 4096;
    match req.read_body(LIMIT) {
        Ok(b) => {
            assert!(b.len() as u64 <= LIMIT, "a body longer than its bound");
            if let Some(n) = declared {
                assert_eq!(b.len() as u64, n, "a body that is not its Content-Length");
            }
            let _ = proto::parse_tree(&b);
            let _ = MdAnswer::parse(&b);
            let _ = serde_json::from_slice::<ClientAnnounce>(&b);
            if let Ok(a) = serde_json::from_slice::<StorAnnounce>(&b) {
                let _ = a.validate();
            }
        }
        Err(_) => {}
    }
    let _ = req.drain(64 * 1024);
});
