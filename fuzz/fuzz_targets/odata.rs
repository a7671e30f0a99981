//! Any query string: `Query::parse` answers Ok or an OData error, never
//! panics, and never recurses past its depth limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reach_server::odata::{Query, parse_filter};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Query::parse(Some(text));
        let _ = parse_filter(text);
    }
});
