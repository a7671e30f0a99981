//! Small builders and checks the suites share: a runliveresponse body and
//! its commands, an action's status, Reach's error envelope, and a
//! collected file un-gzipped (which must be exactly one gzip member).

use reach_proto::api::{ActionStatus, Command, CommandType, MachineAction, RunLiveResponseRequest};

/// A runliveresponse body.
pub fn request(commands: Vec<Command>, comment: &str) -> RunLiveResponseRequest {
    RunLiveResponseRequest {
        commands: Some(commands),
        comment: Some(comment.to_string()),
    }
}

/// A RunScript of `name`, with `args` when given.
pub fn run_script(name: &str, args: Option<&str>) -> Command {
    match args {
        Some(args) => Command::new(
            CommandType::RunScript,
            &[("ScriptName", name), ("Args", args)],
        ),
        None => Command::new(CommandType::RunScript, &[("ScriptName", name)]),
    }
}

/// A GetFile of `path`.
pub fn get_file(path: &str) -> Command {
    Command::new(CommandType::GetFile, &[("Path", path)])
}

/// A PutFile of `name`.
pub fn put_file(name: &str) -> Command {
    Command::new(CommandType::PutFile, &[("FileName", name)])
}

/// Fails unless the action is in `status`, showing it.
pub fn assert_status(action: &MachineAction, status: ActionStatus) {
    assert_eq!(action.status, status, "{action:#?}");
}

/// Asserts a response is Reach's error envelope with this status and code.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let body: serde_json::Value = response.json().await.expect("an error envelope");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body}"
    );
    let target = body["error"]["target"].as_str().unwrap();
    assert!(uuid_like(target), "target is a GUID: {body}");
    body
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

/// Decompresses a collected file, which must be exactly one gzip member:
/// the reader stops after the first member, as .NET's GZipStream and
/// Python's `zlib.decompressobj(31)` do, and nothing may follow it.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    decoder.read_to_end(&mut out).unwrap();
    assert!(decoder.into_inner().is_empty(), "more than one gzip member");
    out
}
