//! The agent protocol: JSON messages on the agent's one WebSocket, plus the
//! bodies of the agent's HTTP calls (enrolment). File bytes never travel in
//! these messages; they stream over separate HTTP requests.

use serde::{Deserialize, Serialize};

/// What an agent tells the server about its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// The computer name (reported, never an identity: the server's machine id is).
    pub hostname: String,
    /// Defender-style platform name: `Linux`, `macOS`, `Windows10`, ...
    pub os_platform: String,
    /// The operating system's version.
    pub os_version: String,
    /// `64-bit` or `32-bit`.
    pub os_architecture: String,
    /// The agent's version.
    pub agent_version: String,
    /// The device's own addresses (loopback excluded), as it sees them.
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
}

/// One address of a device's network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    /// The address.
    pub ip_address: String,
    /// `aa:bb:cc:dd:ee:ff` where the OS tells it.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Interface name (`eth0`).
    #[serde(default)]
    pub interface: Option<String>,
}

/// `POST /agent/v1/enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token an operator created (`reach-server enrollment-token create`).
    pub enrollment_token: String,
    /// The device the agent runs on.
    pub info: MachineInfo,
}

/// The answer to an enrollment: the machine's identity and its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The machine's id (40 hex characters), chosen by the server.
    pub machine_id: String,
    /// Secret the agent presents as `Authorization: Bearer <machine_id>.<secret>`.
    pub credential: String,
}

/// Identifies one command: (action id, index). Delivery is idempotent on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandRef {
    /// The action's id.
    pub action_id: String,
    /// The command's position in the action, from 0.
    pub index: u32,
}

/// A command the server asks the agent to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Which command.
    #[serde(flatten)]
    pub command: CommandRef,
    /// The agent kills the command after this many seconds.
    pub timeout_secs: u64,
    /// GetFile uploads the file in chunks of this many (uncompressed) bytes.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: u64,
    /// What to do.
    pub work: Work,
    /// PutFile and RunScript: the library file itself (base64), when it is
    /// small enough to travel in this message; the agent checks it against
    /// `work`'s SHA-256 (and signature) exactly as a downloaded one, and
    /// downloads the file when this is absent. Agents before this field
    /// ignore it and download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_payload: Option<String>,
}

/// 8 MiB.
pub fn default_chunk_bytes() -> u64 {
    8 * 1024 * 1024
}

/// One stored chunk of a GetFile result: a deflate segment of `raw_size`
/// bytes of the file (raw deflate ended by a sync flush, no final block).
/// In order, between `gzip_frame::HEADER` and `gzip_frame::tail`, the
/// segments are the gzip result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// The chunk's number, from 0.
    pub n: u32,
    /// Bytes of the file the chunk holds (before compression).
    pub raw_size: u64,
    /// CRC-32 (gzip's) of the chunk's bytes in the file. The whole file's
    /// SHA-256 at `complete` is what proves the bytes; per chunk, the size
    /// and CRC-32 catch a broken segment at once and tell an agent resuming
    /// whether the server holds the bytes it has now.
    #[serde(default)]
    pub raw_crc32: Option<u32>,
    /// Hex SHA-256 of the chunk's bytes, or empty. Optional (a third SHA-256
    /// pass over every byte); checked when sent.
    #[serde(default)]
    pub raw_sha256: String,
    /// Bytes of the stored segment.
    pub stored_size: u64,
    /// Hex SHA-256 of the stored segment, or empty: the server checks a
    /// segment by its decompressed bytes, so the agent need not hash it; a
    /// hash sent is checked too.
    #[serde(default)]
    pub stored_sha256: String,
}

/// `POST .../complete`: the whole file, for the server to check
/// before the result becomes visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteChunks {
    /// How many chunks the file was sent in.
    pub chunks: u32,
    /// The whole file's size in bytes.
    pub raw_size: u64,
    /// Hex SHA-256 of the whole file.
    pub raw_sha256: String,
}

/// What to do. Library files are identified by name and the sha256 recorded
/// when the action was submitted; the agent refuses bytes that do not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Work {
    /// Copies a library file onto the device.
    PutFile {
        /// The library file's name (the name it is put under, in the work directory).
        file_name: String,
        /// Hex SHA-256 of the file as recorded at submission.
        sha256: String,
        /// Ed25519 signature (base64) of the library file, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Runs a library script and records its transcript.
    RunScript {
        /// The library script's name.
        script_name: String,
        /// Hex SHA-256 of the script as recorded at submission.
        sha256: String,
        /// The arguments, split like a shell would and never given to one.
        args: Option<String>,
        /// Ed25519 signature (base64) of the script, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Collects a file from the device.
    GetFile {
        /// The file's full path on the device.
        path: String,
    },
    /// Cuts the device off the network except its servers, DNS, DHCP and
    /// `allow`, proves a server is still reachable (else undoes it), and
    /// keeps it so across restarts until `Unisolate`.
    Isolate {
        /// `Selective` isolation (else `Full`): `allow` is then the
        /// server's `[isolation] selective_allow`.
        #[serde(default)]
        selective: bool,
        /// More destinations to keep reachable, as `destination::Destination`
        /// parses them.
        #[serde(default)]
        allow: Vec<String>,
    },
    /// Removes isolation (succeeds on a device that is not isolated).
    Unisolate,
    /// The device leaves Reach: the agent releases isolation and reports;
    /// the server then revokes the machine, and the agent, refused with
    /// 410 at its next connection, deletes its credential and stops.
    Offboard,
    /// Kills the processes whose executable has this SHA-1 and quarantines
    /// those executables; the report is the command's result (JSON).
    StopAndQuarantineFile {
        /// Hex SHA-1 (40 digits, lower case) of the executable.
        sha1: String,
    },
    /// Collects the investigation package (a zip) and sends it as a
    /// GetFile sends a file, but each chunk is the zip's bytes themselves
    /// (no deflate segment): the result is the zip, served as it is.
    CollectInvestigationPackage,
}

impl Work {
    /// The `type` word this work has on the wire: what an agent's
    /// `capabilities` list.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::PutFile { .. } => "PutFile",
            Work::RunScript { .. } => "RunScript",
            Work::GetFile { .. } => "GetFile",
            Work::Isolate { .. } => "Isolate",
            Work::Unisolate => "Unisolate",
            Work::Offboard => "Offboard",
            Work::StopAndQuarantineFile { .. } => "StopAndQuarantineFile",
            Work::CollectInvestigationPackage => "CollectInvestigationPackage",
        }
    }

    /// A response action's work (isolate, release): it runs beside live
    /// response, not behind it. A server hands an agent at most one
    /// command of each side at a time, so an isolation never waits for a
    /// long script.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Work::Isolate { .. }
                | Work::Unisolate
                | Work::Offboard
                | Work::StopAndQuarantineFile { .. }
        )
    }
}

/// What every agent runs, also those whose Hello lists no `capabilities`.
pub const BASE_CAPABILITIES: [&str; 3] = ["PutFile", "RunScript", "GetFile"];

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    /// First message after the agent's Hello.
    Welcome {
        /// The machine's id, as the server knows it.
        machine_id: String,
        /// Seconds between the agent's heartbeats.
        heartbeat_secs: u64,
        /// The largest result (bytes, before base64) the agent may send
        /// inside `Finished` instead of uploading it; 0 (servers before this
        /// field): upload every result.
        #[serde(default)]
        inline_result_bytes: u64,
        /// The largest `Output` text (bytes) the server takes while a
        /// RunScript runs; 0 (servers before this field, or live output
        /// turned off): send none, because such a server closes the
        /// connection on a message it does not know.
        #[serde(default)]
        live_output_bytes: u64,
    },
    /// Run this command (the agent answers with `Finished` once it ends).
    Run(Assignment),
    /// Stop the running command of this action, killing its whole process tree.
    Cancel {
        /// The action whose running command to stop.
        action_id: String,
    },
    /// The server recorded this command's `Finished` (or had already): the
    /// agent may forget it.
    Ack(CommandRef),
}

/// How a command ended on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome")]
pub enum Outcome {
    /// The command ran. A RunScript or GetFile result has already been uploaded.
    Completed {
        /// GetFile: hex SHA-256 of the collected file as it was on the device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// PutFile: where the file now is on the device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// The command did not run or did not end well.
    Failed {
        /// Why, for the analyst.
        errors: Vec<String>,
        /// True when the command was killed for running past its timeout.
        #[serde(default)]
        timed_out: bool,
    },
}

/// Which output of a script a live `Output` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`: the SSE event name and the stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AgentMessage {
    /// First message on every connection. `running` lists the commands the
    /// agent still holds from before the connection (re)started: executing,
    /// queued, or finished with a result not yet delivered. The server fails
    /// any command it believes is running that is not in this list, unless
    /// it was handed to this same agent process (`instance`), which then
    /// never received it: the server hands it out again.
    Hello {
        /// The device, as it is now.
        info: MachineInfo,
        /// The commands the agent still holds.
        running: Vec<CommandRef>,
        /// Random id of this agent process, new at every start.
        #[serde(default)]
        instance: String,
        /// The `Work` types this agent runs (`Work::kind`). Agents before
        /// this field send none and run `BASE_CAPABILITIES`: the server
        /// never sends them other work, which they could not parse.
        #[serde(default)]
        capabilities: Vec<String>,
        /// Whether the device is isolated now, as the agent's own record
        /// says (None: an agent that does not know isolation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isolated: Option<bool>,
    },
    /// Sent every `heartbeat_secs`: the device is still there.
    Heartbeat,
    /// `Finished` below is sent until the server answers `Ack`; repeating it
    /// is harmless.
    Finished {
        /// Which command.
        #[serde(flatten)]
        command: CommandRef,
        /// How it ended.
        #[serde(flatten)]
        outcome: Outcome,
        /// A RunScript's result (the transcript's bytes, base64) when it is
        /// at most the `inline_result_bytes` of this connection's `Welcome`:
        /// it then travels here instead of in an upload before this message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// Output of the running RunScript as it is produced (only when the
    /// connection's `Welcome` set `live_output_bytes`). The texts of one
    /// stream, in `offset` order, are exactly the start of that stream in
    /// the transcript `Finished` brings: each ends on a whole UTF-8
    /// character, and invalid bytes are replaced as the transcript replaces
    /// them. An extra: a chunk lost with a connection is in the transcript.
    Output {
        /// Which command.
        #[serde(flatten)]
        command: CommandRef,
        /// stdout or stderr.
        stream: Stream,
        /// Where `text` starts in that stream (bytes of its UTF-8 text).
        offset: u64,
        /// The output, newlines included.
        text: String,
    },
}

/// Room kept in an agent's message for everything but an inline result:
/// a server advertises at most what fits in its message limit less this,
/// and an agent sends a result inline only when the rest of its `Finished`
/// message is smaller.
pub const FINISHED_ROOM: usize = 16 * 1024;

/// Paths of the agent-facing HTTP endpoints.
pub mod paths {
    /// `POST`: enroll with a token (`EnrollRequest` → `EnrollResponse`).
    pub const ENROLL: &str = "/agent/v1/enroll";
    /// `GET`, upgraded to the agent's WebSocket.
    pub const CONNECT: &str = "/agent/v1/connect";

    /// `GET`: chunk `chunk` of the library file of a PutFile or RunScript command.
    pub fn payload(action_id: &str, index: u32, chunk: u32) -> String {
        format!("/agent/v1/commands/{action_id}/{index}/payload?chunk={chunk}")
    }

    /// `PUT`: the result of a RunScript command (the JSON transcript).
    pub fn result(action_id: &str, index: u32) -> String {
        format!("/agent/v1/commands/{action_id}/{index}/result")
    }

    /// `GET`: the chunks of a GetFile result the server already holds.
    pub fn chunks(action_id: &str, index: u32) -> String {
        format!("/agent/v1/commands/{action_id}/{index}/chunks")
    }

    /// `PUT`: one chunk (a deflate segment), with the `RAW_SIZE` header, and
    /// `RAW_CRC32` or `RAW_SHA256` or both (of its decompressed bytes), and
    /// optionally `SHA256` (of the segment itself).
    pub fn chunk(action_id: &str, index: u32, n: u32) -> String {
        format!("/agent/v1/commands/{action_id}/{index}/chunks/{n}")
    }

    /// `POST`: all chunks are there; check the whole file and publish it.
    pub fn complete(action_id: &str, index: u32) -> String {
        format!("/agent/v1/commands/{action_id}/{index}/complete")
    }

    /// Headers of a chunk upload (and `SHA256` of a payload chunk).
    pub const RAW_SHA256: &str = "x-reach-raw-sha256";
    /// 8 hex digits.
    pub const RAW_CRC32: &str = "x-reach-raw-crc32";
    /// The decompressed bytes' size.
    pub const RAW_SIZE: &str = "x-reach-raw-size";
    /// Hex SHA-256 of the bytes sent (the segment itself, or a payload chunk).
    pub const SHA256: &str = "x-reach-sha256";
    /// Headers of a payload chunk: the whole file's size and chunk count.
    pub const SIZE: &str = "x-reach-size";
    /// The number of chunks of the whole file.
    pub const CHUNKS: &str = "x-reach-chunks";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agents and servers of different versions meet: a field one side
    /// does not know is absent on the other's messages, and means "as
    /// before" (upload every result).
    #[test]
    fn inline_results_are_optional_on_the_wire() {
        let old_welcome = r#"{"type":"Welcome","machine_id":"m","heartbeat_secs":30}"#;
        let ServerMessage::Welcome {
            inline_result_bytes,
            ..
        } = serde_json::from_str(old_welcome).unwrap()
        else {
            panic!("a Welcome");
        };
        assert_eq!(inline_result_bytes, 0);
        let finished = AgentMessage::Finished {
            command: CommandRef {
                action_id: "a".into(),
                index: 0,
            },
            outcome: Outcome::Completed {
                sha256: None,
                path: None,
            },
            result: None,
        };
        let text = serde_json::to_string(&finished).unwrap();
        assert_eq!(
            text, r#"{"type":"Finished","action_id":"a","index":0,"outcome":"Completed"}"#,
            "without a result, the message older servers know"
        );
        let with = r#"{"type":"Finished","action_id":"a","index":0,"outcome":"Completed","result":"aGk="}"#;
        let AgentMessage::Finished { result, .. } = serde_json::from_str(with).unwrap() else {
            panic!("a Finished");
        };
        assert_eq!(result.as_deref(), Some("aGk="));
    }
}
