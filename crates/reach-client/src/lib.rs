//! Typed async client for Reach: `Client` speaks the Defender-compatible API
//! (token, machines, live response, machine actions, library, downloads) and
//! `AgentClient` the agent's HTTP endpoints (enrolment, payload download,
//! result upload), and `signing` the Ed25519 signatures of library files.
//! Used by the CLI, the agent, the server and the tests.
//!
//! It never retries on its own and never logs tokens; callers decide.

pub mod agent;
mod batches;
pub mod output;
pub mod private_file;
mod response;
mod retry;
pub mod signing;
pub mod tls;

use reach_proto::api::{
    AuditLogEntry, CancelRequest, Collection, ErrorEnvelope, LibraryFile, Machine, MachineAction,
    MachineTagRequest, RunLiveResponseRequest, StringValue, TokenResponse,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

pub use agent::AgentClient;
/// The HTTP client library underneath, for streaming bodies.
pub use reqwest;
pub use retry::{SERVER_ERROR_TRIES, patiently};

/// What a call can end with, other than its answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// Defender's error code (`ResourceNotFound`, ...).
        code: String,
        /// What went wrong, in words.
        message: String,
        /// The request's id (a GUID) the server logged the error under.
        target: String,
        /// Seconds, from `Retry-After` on 429.
        retry_after: Option<u64>,
    },
    /// The server answered with something that is not Reach's envelope.
    #[error("unexpected response {status}: {body}")]
    Unexpected {
        /// The HTTP status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
    /// The request could not be made or its answer read.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server's answer broke the protocol (a malformed event).
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } | Self::Unexpected { status, .. } => Some(*status),
            Self::Http(err) => err.status(),
            Self::Io(_) | Self::Protocol(_) => None,
        }
    }

    /// The error code of the server's envelope, if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client call's result.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Turns a non-success response into `ClientError::Api`.
pub async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorEnvelope>(&body) {
        Ok(envelope) => Err(ClientError::Api {
            status,
            code: envelope.error.code,
            message: envelope.error.message,
            target: envelope.error.target,
            retry_after,
        }),
        Err(_) => Err(ClientError::Unexpected { status, body }),
    }
}

async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    Ok(check(response).await?.json().await?)
}

/// A client of the `/api` surface for one server and tenant.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Percent-encodes one path segment.
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl Client {
    /// A client trusting the platform's root certificates.
    pub fn new(base: &str) -> Self {
        Self::with_http(base, agent::http_client(None))
    }

    /// A client trusting what `tls` trusts (for example a pinned CA).
    pub fn with_tls(base: &str, tls: rustls::ClientConfig) -> Self {
        Self::with_http(base, agent::http_client(Some(tls)))
    }

    fn with_http(base: &str, http: reqwest::Client) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client underneath (for calls this crate does not wrap).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The same client, calling with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The bearer token it calls with, once logged in.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Gets a token with the client-credentials grant (v2 endpoint).
    pub async fn request_token(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &str,
    ) -> Result<TokenResponse> {
        let response = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.base,
                segment(tenant)
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", "https://api.securitycenter.microsoft.com/.default"),
            ])
            .send()
            .await?;
        json(response).await
    }

    /// Logs in and returns a client that sends the token.
    pub async fn login(self, tenant: &str, client_id: &str, secret: &str) -> Result<Self> {
        let token = self.request_token(tenant, client_id, secret).await?;
        Ok(self.with_token(token.access_token))
    }

    /// A request to `path` (starting with `/`) with the bearer token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `GET /api/machines` with OData options.
    pub async fn machines(&self, odata: &[(&str, &str)]) -> Result<Collection<Machine>> {
        json(
            self.request(Method::GET, "/api/machines")
                .query(odata)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/machines/{id}`.
    pub async fn machine(&self, id: &str) -> Result<Machine> {
        json(
            self.request(Method::GET, &format!("/api/machines/{}", segment(id)))
                .send()
                .await?,
        )
        .await
    }

    /// `POST /api/machines/{id}/tags`: adds (`add`) or removes `tag`.
    pub async fn tag_machine(&self, id: &str, tag: &str, add: bool) -> Result<Machine> {
        let body = MachineTagRequest {
            value: Some(tag.to_string()),
            action: Some(if add { "Add" } else { "Remove" }.into()),
            machine_ids: None,
        };
        let path = format!("/api/machines/{}/tags", segment(id));
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    /// `POST /api/machines/AddOrRemoveTagForMultipleMachines`.
    pub async fn tag_machines(
        &self,
        ids: &[String],
        tag: &str,
        add: bool,
    ) -> Result<Collection<Machine>> {
        let body = MachineTagRequest {
            value: Some(tag.to_string()),
            action: Some(if add { "Add" } else { "Remove" }.into()),
            machine_ids: Some(ids.to_vec()),
        };
        let path = "/api/machines/AddOrRemoveTagForMultipleMachines";
        json(self.request(Method::POST, path).json(&body).send().await?).await
    }

    /// `GET /api/machines/findbytag`: machines carrying `tag` (or, with
    /// `starts_with`, a tag that starts with it).
    pub async fn find_by_tag(&self, tag: &str, starts_with: bool) -> Result<Collection<Machine>> {
        json(
            self.request(Method::GET, "/api/machines/findbytag")
                .query(&[
                    ("tag", tag),
                    (
                        "useStartsWithFilter",
                        if starts_with { "true" } else { "false" },
                    ),
                ])
                .send()
                .await?,
        )
        .await
    }

    /// `POST /api/machines/{id}/runliveresponse`.
    pub async fn run_live_response(
        &self,
        machine: &str,
        request: &RunLiveResponseRequest,
    ) -> Result<MachineAction> {
        let path = format!("/api/machines/{}/runliveresponse", segment(machine));
        json(
            self.request(Method::POST, &path)
                .json(request)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/machineactions/{id}`.
    pub async fn action(&self, id: &str) -> Result<MachineAction> {
        json(
            self.request(Method::GET, &format!("/api/machineactions/{}", segment(id)))
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/machineactions` with OData options.
    pub async fn actions(&self, odata: &[(&str, &str)]) -> Result<Collection<MachineAction>> {
        json(
            self.request(Method::GET, "/api/machineactions")
                .query(odata)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /api/auditlog` (a Reach API; needs the AuditLog.Read role).
    pub async fn audit_log(&self, odata: &[(&str, &str)]) -> Result<Collection<AuditLogEntry>> {
        json(
            self.request(Method::GET, "/api/auditlog")
                .query(odata)
                .send()
                .await?,
        )
        .await
    }

    /// `POST /api/machineactions/{id}/cancel`.
    pub async fn cancel(&self, id: &str, comment: &str) -> Result<MachineAction> {
        let path = format!("/api/machineactions/{}/cancel", segment(id));
        let body = CancelRequest {
            comment: Some(comment.to_string()),
        };
        json(self.request(Method::POST, &path).json(&body).send().await?).await
    }

    /// A fresh download link for command `index`'s result (`GetLiveResponseResultDownloadLink`).
    pub async fn download_link(&self, id: &str, index: u32) -> Result<String> {
        let path = format!(
            "/api/machineactions/{}/GetLiveResponseResultDownloadLink(index={index})",
            segment(id)
        );
        let value: StringValue = json(self.request(Method::GET, &path).send().await?).await?;
        Ok(value.value)
    }

    /// Fetches a download link (no Authorization header, as real clients do).
    pub async fn download(&self, url: &str) -> Result<reqwest::Response> {
        check(self.http.get(url).send().await?).await
    }

    /// `GET /api/libraryfiles`.
    pub async fn library(&self) -> Result<Collection<LibraryFile>> {
        json(
            self.request(Method::GET, "/api/libraryfiles")
                .send()
                .await?,
        )
        .await
    }

    /// Uploads a library file from memory (small files; the CLI streams from disk).
    pub async fn upload_library_file(&self, upload: LibraryUpload) -> Result<LibraryFile> {
        let part = match upload.body {
            UploadBody::Bytes(bytes) => reqwest::multipart::Part::bytes(bytes),
            UploadBody::Stream(body, len) => {
                reqwest::multipart::Part::stream_with_length(body, len)
            }
        }
        .file_name(upload.file_name);
        let mut form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("HasParameters", upload.has_parameters.to_string())
            .text("OverrideIfExists", upload.override_if_exists.to_string());
        if let Some(description) = upload.description {
            form = form.text("Description", description);
        }
        if let Some(parameters) = upload.parameters_description {
            form = form.text("ParametersDescription", parameters);
        }
        if let Some(signature) = upload.signature {
            form = form.text("Signature", signature);
        }
        json(
            self.request(Method::POST, "/api/libraryfiles")
                .multipart(form)
                .send()
                .await?,
        )
        .await
    }

    /// `DELETE /api/libraryfiles/{name}`.
    pub async fn delete_library_file(&self, name: &str) -> Result<()> {
        let path = format!("/api/libraryfiles/{}", segment(name));
        check(self.request(Method::DELETE, &path).send().await?).await?;
        Ok(())
    }
}

/// Bytes of a library upload.
pub enum UploadBody {
    /// The whole file in memory.
    Bytes(Vec<u8>),
    /// A streamed body and its length.
    Stream(reqwest::Body, u64),
}

/// A library file to upload.
pub struct LibraryUpload {
    /// The name it is stored under.
    pub file_name: String,
    /// Its bytes.
    pub body: UploadBody,
    /// What it is for.
    pub description: Option<String>,
    /// How to call it (its arguments).
    pub parameters_description: Option<String>,
    /// Whether the script takes arguments.
    pub has_parameters: bool,
    /// Replace an existing file of that name.
    pub override_if_exists: bool,
    /// Ed25519 signature (base64) of the file, made offline (`signing::sign`).
    pub signature: Option<String>,
}

impl LibraryUpload {
    /// An upload of `bytes` as `file_name`, without description or signature.
    pub fn bytes(file_name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            file_name: file_name.to_string(),
            body: UploadBody::Bytes(bytes.into()),
            description: None,
            parameters_description: None,
            has_parameters: false,
            override_if_exists: false,
            signature: None,
        }
    }
}
