//! Any WebSocket text frame from an agent: decoding answers Ok or an error,
//! never panics; what decodes encodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reach_proto::agent::AgentMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<AgentMessage>(data) {
        let again = serde_json::to_string(&message).expect("encoding a decoded message");
        let back: AgentMessage = serde_json::from_str(&again).expect("decoding it again");
        assert_eq!(back, message);
    }
});
