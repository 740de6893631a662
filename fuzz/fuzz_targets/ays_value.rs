//! aysfs metadata comes from stores and caches: `md:` field values (`"<md5>,<size>[,x]"`),
//! directory listings, whole trees, the cache's metadata answers, recorded fetch times and
//! mount sub-paths. No bytes may panic a parser, and what parses must round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use truckeefs_core::ays::expiry;
use truckeefs_core::ays::value::{self, FileMeta, Md5};
use truckeefs_runtime_smol::ays::proto;

fuzz_target!(|data: &[u8]| {
    let _ = value::parse_dir_files(data);
    if let Ok((Some(listings), _)) = value::parse_tree_json(data, "/") {
        for (path, listing) in &listings {
            assert!(value::valid_dir_path(path), "an invalid directory path kept: {path:?}");
            assert!(listing.files.keys().all(|n| value::valid_name(n)), "an invalid file name kept");
        }
    }
    if let Ok((listing, _)) = value::parse_md_answer(data) {
        assert!(listing.files.keys().all(|n| value::valid_name(n)), "an invalid file name kept");
    }
    if let Ok(tree) = proto::parse_tree(data) {
        assert!(proto::validate_tree(&tree).is_ok());
    }
    let _ = proto::MdAnswer::parse(data);
    let _ = expiry::parse_atime(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let meta = FileMeta::parse(text);
    if let Ok(m) = meta {
        assert_eq!(FileMeta::parse(&m.value()), Ok(m), "FileMeta does not round-trip");
    }
    // The cache server's parser is the core's.
    assert_eq!(proto::FileEntry::parse(text).is_ok(), meta.is_ok());
    if let Some(md5) = Md5::parse(text) {
        assert_eq!(md5.hex(), text, "Md5 does not round-trip");
    }
    if let Some(p) = value::normalize_dir_path(text) {
        assert!(value::valid_dir_path(&p), "normalize_dir_path gave an invalid path: {p:?}");
    }
    assert_eq!(value::valid_dir_path(text), proto::validate_dir_path(text).is_ok());
    if let Some((parent, name)) = value::split_parent(text) {
        let _ = value::child_path(parent, name);
    }
    let _ = proto::parse_dir_files(text);
});
