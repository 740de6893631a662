//! Replies of the Tahoe-LAFS web API (`t=json` of a node, the welcome page, a check, the status
//! page) and the caps inside them come from a server: no bytes may panic the parsers, no error
//! message may carry a value (a value may be a capability), and no parsed node may show a cap
//! in its `Debug` form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use truckeefs_runtime_smol::{tahoe, tahoe_json};

fn no_cap_in(message: &str) {
    assert!(!message.contains("URI:"), "an error message quotes a value: {message}");
}

fn check_node(node: &tahoe_json::NodeInfo) {
    let shown = format!("{node:?}");
    for cap in [&node.rw_uri, &node.ro_uri, &node.verify_uri].into_iter().flatten() {
        assert!(cap.0.len() < 16 || !shown.contains(&cap.0), "Debug of a node shows a cap");
        if node.kind != tahoe_json::NodeKind::Unknown {
            assert!(tahoe_json::looks_like_cap(&cap.0), "a file or directory cap that does not look like one");
        }
    }
    for child in node.children.iter().flat_map(|c| c.values()) {
        assert!(child.children.is_none(), "a child entry with children");
        check_node(child);
    }
}

fuzz_target!(|data: &[u8]| {
    match tahoe_json::parse_node(data) {
        Ok(node) => check_node(&node),
        Err(e) => no_cap_in(&e.message),
    }
    if let Err(e) = tahoe_json::parse_welcome(data) {
        no_cap_in(&e.message);
    }
    if let Err(e) = tahoe_json::parse_check(data) {
        no_cap_in(&e.message);
    }
    if let Err(e) = tahoe_json::parse_status_active(data) {
        no_cap_in(&e.message);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tahoe_json::looks_like_cap(text);
        // Error texts from the gateway are redacted before they are logged.
        let redacted = tahoe::redact_caps(text).to_ascii_lowercase();
        assert!(!redacted.contains("uri:") && !redacted.contains("uri%3a"), "a cap survived redact_caps");
    }
});
