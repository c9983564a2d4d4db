//! Feeds arbitrary bytes to the ClientHello sniffer and the Postgres probe: neither may
//! panic, and a complete hello must stay complete when more bytes follow it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = l4::sniff::client_hello(data);
    if let Ok(Some(hello)) = &whole {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(
            l4::sniff::client_hello(&longer).as_ref(),
            Ok(&Some(hello.clone()))
        );
    }
    if let Some(&first) = data.first() {
        assert_eq!(
            whole != Err(l4::sniff::SniffError::NotTls),
            l4::sniff::looks_like_tls(first)
        );
    }
    let _ = l4::sniff::postgres_ssl_request(data);
});
