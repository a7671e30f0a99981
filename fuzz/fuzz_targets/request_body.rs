//! Any `runliveresponse` body: decoding and the per-command checks answer
//! Ok or an API error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reach_proto::api::RunLiveResponseRequest;
use reach_server::api::live_response::check_command;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<RunLiveResponseRequest>(data) {
        for (index, command) in request.commands.iter().flatten().enumerate() {
            let _ = check_command(index, command);
        }
    }
});
