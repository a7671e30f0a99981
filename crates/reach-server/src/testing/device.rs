//! A device under test: an enrolled machine in its own directory whose
//! agent runs in this process (started and stopped by `TestServer`), and
//! the agent WebSocket driven by hand, for tests that speak the protocol
//! as a hostile device would.

use tokio_util::sync::CancellationToken;

/// An agent's WebSocket, driven by hand.
pub type AgentSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the agent WebSocket as the device holding `bearer`; sends nothing.
pub async fn agent_socket(server: &str, bearer: &str) -> AgentSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/agent/v1/connect", server.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The agent credential an enrolled device holds (for a raw protocol peer).
pub fn bearer(device: &Device) -> String {
    reach_agent::State::load(&device.dir.path().join("state.json"))
        .unwrap()
        .bearer()
}

/// An enrolled machine, with its agent running in this process or not.
pub struct Device {
    /// Its machine id.
    pub machine_id: String,
    /// Its directory: state file and work directory.
    pub dir: tempfile::TempDir,
    pub(super) agent: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

impl Device {
    /// Where its agent puts files and runs scripts.
    pub fn work_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("work")
    }

    /// Whether the agent started for it has ended by itself (offboarded).
    pub fn agent_ended(&self) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|(_, handle)| handle.is_finished())
    }

    /// Stops the agent and waits for it to end.
    pub async fn stop(&mut self) {
        if let Some((shutdown, handle)) = self.agent.take() {
            shutdown.cancel();
            handle.await.unwrap().unwrap();
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.agent {
            shutdown.cancel();
        }
    }
}
