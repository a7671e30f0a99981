//! A real server in this process on 127.0.0.1:0, with a tenant, an app
//! holding every role (`admin_app`, and `client` logged in as it) and an
//! enrollment token; apps with chosen roles, in-process agents, another
//! node of the same cluster, a stop and a restart on the same address and
//! data.

use reach_client::{Client, LibraryUpload};
use reach_proto::api::{Command, MachineAction};
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, Device, request, wait_for};
use crate::{Config, SharedState, admin};

/// A server running in this process, stopped when dropped.
pub struct TestServer {
    /// Its base URL (`http://127.0.0.1:port`, or https).
    pub url: String,
    /// Its state, for looking behind the API.
    pub state: SharedState,
    /// The test tenant.
    pub tenant_id: String,
    /// An enrollment token of the test tenant.
    pub enrollment_token: String,
    /// The app holding every role, with its secret.
    pub admin_app: admin::NewApp,
    /// Logged in as `admin_app`.
    pub client: Client,
    /// The CA agents and clients must trust when the server speaks HTTPS.
    pub ca_file: Option<std::path::PathBuf>,
    serving: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    /// Its data directory's parent.
    pub dir: tempfile::TempDir,
}

/// Serves `state` on `listener` until the returned token is cancelled.
fn serve(
    state: SharedState,
    listener: tokio::net::TcpListener,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handle = tokio::spawn(crate::serve(state, listener, async move {
        stop.cancelled().await
    }));
    (shutdown, handle)
}

impl TestServer {
    /// Starts a server on a fresh data directory, its sweeper quick and
    /// its rate limits raised so that tests may poll.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like `start`, with `configure` applied to the configuration last.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_inner(configure, false, "127.0.0.1", &[]).await
    }

    /// A server speaking HTTPS with a certificate from its own dev CA.
    pub async fn start_tls() -> Self {
        Self::start_inner(|_| {}, true, "127.0.0.1", &[]).await
    }

    /// A server speaking HTTPS on `address` (one a test made, on a veth
    /// pair into a network namespace), its certificate also naming
    /// `names`, with `configure` applied last.
    pub async fn start_tls_on(
        address: &str,
        names: &[&str],
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_inner(configure, true, address, names).await
    }

    async fn start_inner(
        configure: impl FnOnce(&mut Config),
        tls: bool,
        address: &str,
        names: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("server"),
            ..Config::default()
        };
        config.live_response.sweep_interval_ms = 50;
        config.limits.run_live_response_per_minute = 1000;
        config.limits.batches_per_minute = 1000;
        config.limits.api_per_minute = 10_000;
        config.limits.api_per_hour = 100_000;
        // Every test client calls from 127.0.0.1.
        config.limits.token_per_minute_per_address = 100_000;
        config.limits.sign_in_per_minute_per_address = 100_000;
        config.limits.enroll_per_minute_per_address = 100_000;
        config.limits.download_per_minute_per_address = 100_000;
        configure(&mut config);
        let ca_file = tls.then(|| {
            let mut sans = vec![address.to_string()];
            sans.extend(names.iter().map(|n| n.to_string()));
            let pki = crate::tls::dev_pki(&dir.path().join("tls"), &sans).unwrap();
            config.tls.cert_path = pki.cert_path.display().to_string();
            config.tls.key_path = pki.key_path.display().to_string();
            pki.ca_path
        });
        let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let state = crate::open(config).await.unwrap();
        let serving = Some(serve(state.clone(), listener));
        let tenant = admin::create_tenant(state.store.as_ref(), "test")
            .await
            .unwrap();
        let enrollment_token =
            admin::create_enrollment_token(state.store.as_ref(), &tenant.id, None, None)
                .await
                .unwrap();
        let admin_app = admin::create_app(
            state.store.as_ref(),
            &tenant.id,
            "everything",
            reach_proto::api::roles::ALL
                .iter()
                .map(|r| r.to_string())
                .collect(),
        )
        .await
        .unwrap();
        let mut server = Self {
            url: url.clone(),
            state,
            tenant_id: tenant.id,
            enrollment_token,
            client: Client::new(&url),
            admin_app: admin_app.clone(),
            ca_file,
            serving,
            dir,
        };
        server.client = server.login(&admin_app).await;
        server
    }

    /// A client logged in as a new app holding `roles`.
    pub async fn app(&self, name: &str, roles: &[&str]) -> Client {
        let app = admin::create_app(
            self.state.store.as_ref(),
            &self.tenant_id,
            name,
            roles.iter().map(|r| r.to_string()).collect(),
        )
        .await
        .unwrap();
        self.login(&app).await
    }

    /// A client logged in as `app`.
    pub async fn login(&self, app: &admin::NewApp) -> Client {
        let client = match &self.ca_file {
            Some(ca) => Client::with_tls(
                &self.url,
                reach_agent::tls::client_config(Some(ca)).unwrap(),
            ),
            None => Client::new(&self.url),
        };
        client
            .login(&self.tenant_id, &app.client_id, &app.client_secret)
            .await
            .unwrap()
    }

    /// Enrolls a device without running its agent (an offline machine).
    pub async fn enroll(&self, _label: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let config = self.agent_config(dir.path());
        let state = reach_agent::enroll(&self.url, &self.enrollment_token, &config)
            .await
            .unwrap();
        Device {
            machine_id: state.machine_id,
            dir,
            agent: None,
        }
    }

    /// Enrolls a device and runs its agent until the device is connected.
    pub async fn agent(&self) -> Device {
        let mut device = self.enroll("agent").await;
        self.connect(&mut device).await;
        device
    }

    /// The agent config of a device kept in `dir`, trusting this server.
    /// Isolation is off (an in-process agent runs on the machine running
    /// the tests, which is never isolated): a test that isolates gives
    /// `nft_command` an `ip netns exec` of a namespace it made.
    pub fn agent_config(&self, dir: &std::path::Path) -> reach_agent::Config {
        reach_agent::Config {
            state_path: dir.join("state.json"),
            work_dir: Some(dir.join("work")),
            ca_file: self.ca_file.clone(),
            reconnect_min_ms: 50,
            reconnect_max_ms: 500,
            nft_command: Vec::new(),
            ..reach_agent::Config::default()
        }
    }

    /// Starts the device's agent and waits until the server sees it.
    pub async fn connect(&self, device: &mut Device) {
        let config = self.agent_config(device.dir.path());
        self.connect_with(device, config).await;
    }

    /// Starts the device's agent with `config` and waits until this server sees it.
    pub async fn connect_with(&self, device: &mut Device, config: reach_agent::Config) {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(reach_agent::run(config, shutdown.clone()));
        device.agent = Some((shutdown, handle));
        tokio::time::timeout(DEADLINE, self.state.hub.wait_connected(&device.machine_id))
            .await
            .expect("the agent connects");
    }

    /// Uploads `bytes` to the library as `name`.
    pub async fn upload(&self, name: &str, bytes: &[u8]) {
        self.client
            .upload_library_file(LibraryUpload::bytes(name, bytes.to_vec()))
            .await
            .unwrap();
    }

    /// Polls the action until `done` holds, failing after the deadline.
    pub async fn wait_until(
        &self,
        id: &str,
        done: impl Fn(&MachineAction) -> bool,
    ) -> MachineAction {
        wait_for(&format!("action {id} reaching the state"), async || {
            let action = self.client.action(id).await.unwrap();
            done(&action).then_some(action)
        })
        .await
    }

    /// Waits until the action is final.
    pub async fn wait_final(&self, id: &str) -> MachineAction {
        super::wait_final(&self.client, id).await
    }

    /// Runs commands on a machine and waits for the action to end.
    pub async fn run(&self, machine_id: &str, commands: Vec<Command>) -> MachineAction {
        let created = self
            .client
            .run_live_response(machine_id, &request(commands, "test"))
            .await
            .unwrap();
        self.wait_final(&created.id).await
    }

    /// GETs `path` with the client's token and returns status and body.
    pub async fn get_raw(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Downloads a command's result through a fresh link, without Authorization.
    pub async fn result(&self, action_id: &str, index: u32) -> Vec<u8> {
        let url = self.client.download_link(action_id, index).await.unwrap();
        self.client
            .download(&url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }
}

impl TestServer {
    /// Another node of the same cluster: this server's configuration (its
    /// database and object store URLs) with its own data directory and
    /// address, sharing its tenant, enrollment token and caller's token.
    pub async fn another_node(&self) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("server"),
            ..self.state.config.clone()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = crate::open(config).await.unwrap();
        let serving = Some(serve(state.clone(), listener));
        TestServer {
            client: Client::new(&url).with_token(self.client.token().unwrap()),
            url,
            state,
            tenant_id: self.tenant_id.clone(),
            enrollment_token: self.enrollment_token.clone(),
            admin_app: self.admin_app.clone(),
            ca_file: None,
            serving,
            dir,
        }
    }

    /// Stops serving (agents lose their connection) and waits until it has.
    pub async fn stop(&mut self) {
        if let Some((shutdown, handle)) = self.serving.take() {
            shutdown.cancel();
            handle.await.unwrap().unwrap();
        }
    }

    /// Starts a new server process-equivalent on the same address and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let addr = self.url.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        self.state = crate::open(self.state.config.clone()).await.unwrap();
        self.serving = Some(serve(self.state.clone(), listener));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.serving {
            shutdown.cancel();
        }
    }
}
