//! Feeds arbitrary bytes to the PROXY protocol parser: it may not panic, a header never
//! claims more bytes than it was given, and what we encode from a parsed header parses back.
#![no_main]

use l4::proxy_protocol::{ProxyVersion, encode, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, len))) = parse(data) {
        assert!(len <= data.len() && len <= l4::proxy_protocol::MAX_HEADER);
        if let (Some(source), Some(destination)) = (header.source, header.destination) {
            for version in [ProxyVersion::V1, ProxyVersion::V2] {
                let bytes = encode(version, source, destination);
                let (again, used) = parse(&bytes).ok().flatten().expect("our own header parses");
                assert_eq!((again, used), (header, bytes.len()));
            }
        }
    }
});
