//! The agent's HTTP calls: enrolment, downloading a command's library file,
//! and uploading a command's result as a streamed body. The WebSocket lives
//! in reach-agent.

use reach_proto::agent::{
    ChunkInfo, CompleteChunks, EnrollRequest, EnrollResponse, MachineInfo, paths,
};

use crate::{Result, check};

/// An agent's client of its server: enrolment, payloads, results, chunks.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    /// The server in use; the agent moves it to another node on failover.
    base: std::sync::Arc<std::sync::RwLock<String>>,
    credential: String,
}

/// An HTTP client that trusts what `tls` trusts (or the platform's roots).
pub(crate) fn http_client(tls: Option<rustls::ClientConfig>) -> reqwest::Client {
    let mut builder =
        reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10));
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder.build().expect("HTTP client builds")
}

impl AgentClient {
    /// `credential` is `<machine_id>.<secret>`; `tls` sets which servers to trust.
    pub fn new(base: &str, credential: &str, tls: Option<rustls::ClientConfig>) -> Self {
        Self {
            http: http_client(tls),
            base: std::sync::Arc::new(std::sync::RwLock::new(
                base.trim_end_matches('/').to_string(),
            )),
            credential: credential.to_string(),
        }
    }

    /// The server this client (and every clone of it) talks to now.
    pub fn server(&self) -> String {
        self.base.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves this client and every clone of it to another server.
    pub fn set_server(&self, base: &str) {
        *self.base.write().unwrap_or_else(|e| e.into_inner()) =
            base.trim_end_matches('/').to_string();
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server())
    }

    /// `POST /agent/v1/enroll`: exchanges an enrollment token for an identity.
    pub async fn enroll(
        base: &str,
        token: &str,
        info: MachineInfo,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<EnrollResponse> {
        let response = http_client(tls)
            .post(format!("{}{}", base.trim_end_matches('/'), paths::ENROLL))
            .json(&EnrollRequest {
                enrollment_token: token.to_string(),
                info,
            })
            .send()
            .await?;
        Ok(check(response).await?.json().await?)
    }

    /// Chunk `chunk` of the library file of a PutFile or RunScript command.
    pub async fn payload(
        &self,
        action_id: &str,
        index: u32,
        chunk: u32,
    ) -> Result<reqwest::Response> {
        let response = self
            .http
            .get(self.url(&paths::payload(action_id, index, chunk)))
            .bearer_auth(&self.credential)
            .send()
            .await?;
        check(response).await
    }

    /// Uploads a command's result.
    pub async fn upload_result(
        &self,
        action_id: &str,
        index: u32,
        body: reqwest::Body,
    ) -> Result<()> {
        let response = self
            .http
            .put(self.url(&paths::result(action_id, index)))
            .bearer_auth(&self.credential)
            .body(body)
            .send()
            .await?;
        check(response).await?;
        Ok(())
    }

    /// The chunks of a GetFile result the server already holds.
    pub async fn chunks(&self, action_id: &str, index: u32) -> Result<Vec<ChunkInfo>> {
        let response = self
            .http
            .get(self.url(&paths::chunks(action_id, index)))
            .bearer_auth(&self.credential)
            .send()
            .await?;
        Ok(check(response).await?.json().await?)
    }

    /// Uploads chunk `n`: a deflate segment of `raw_size` bytes of the file.
    pub async fn put_chunk(
        &self,
        action_id: &str,
        index: u32,
        chunk: &ChunkInfo,
        member: bytes::Bytes,
    ) -> Result<()> {
        let mut request = self
            .http
            .put(self.url(&paths::chunk(action_id, index, chunk.n)))
            .bearer_auth(&self.credential)
            .header(paths::RAW_SIZE, chunk.raw_size);
        if let Some(crc) = chunk.raw_crc32 {
            request = request.header(paths::RAW_CRC32, format!("{crc:08x}"));
        }
        if !chunk.raw_sha256.is_empty() {
            request = request.header(paths::RAW_SHA256, &chunk.raw_sha256);
        }
        if !chunk.stored_sha256.is_empty() {
            request = request.header(paths::SHA256, &chunk.stored_sha256);
        }
        let response = request.body(member).send().await?;
        check(response).await?;
        Ok(())
    }

    /// Asks the server to check the whole file and publish the result.
    pub async fn complete(&self, action_id: &str, index: u32, body: &CompleteChunks) -> Result<()> {
        let response = self
            .http
            .post(self.url(&paths::complete(action_id, index)))
            .bearer_auth(&self.credential)
            .json(body)
            .send()
            .await?;
        check(response).await?;
        Ok(())
    }

    /// `GET /healthz` of `base` on a connection of its own (never one
    /// kept from before), within `within`: whether that server answers
    /// from here now. What an agent that just isolated its device checks.
    pub async fn probe(
        base: &str,
        tls: Option<rustls::ClientConfig>,
        within: std::time::Duration,
    ) -> Result<()> {
        let response = http_client(tls)
            .get(format!("{}/healthz", base.trim_end_matches('/')))
            .timeout(within)
            .send()
            .await?;
        check(response).await?;
        Ok(())
    }
}
