//! `reach`: the command-line tool for analysts and automation. It talks to
//! reach-server only through the public API (reach-client), prints tables
//! for people and `--json` for scripts, and exits 0 on success, 1 when an
//! action or request failed, and 2 on usage errors.

mod batch;
mod credentials;
mod follow;
mod output;
mod respond;
mod run;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use reach_client::{Client, LibraryUpload, UploadBody};

#[derive(Parser)]
#[command(
    name = "reach",
    version,
    about = "Reach live response from the command line"
)]
pub(crate) struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Print text from the server exactly as received. Without it, control
    /// characters (terminal escapes) in script output, comments, names and
    /// errors are shown as escapes like \x1b, so that they cannot drive the
    /// terminal.
    #[arg(long, global = true)]
    raw: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Save the server URL and client credentials (file mode 0600).
    Login {
        #[arg(long, env = "REACH_SERVER")]
        server: String,
        #[arg(long = "tenant", env = "REACH_TENANT_ID")]
        tenant_id: String,
        #[arg(long, env = "REACH_CLIENT_ID")]
        client_id: String,
        /// The client secret; read from standard input when not given.
        #[arg(long, env = "REACH_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
        /// Trust only this CA (PEM) for the server's certificate.
        #[arg(long, env = "REACH_CA_FILE")]
        ca_file: Option<String>,
    },
    /// List machines (or tag one: `reach machines tag ID --add T`).
    Machines {
        #[command(subcommand)]
        command: Option<MachinesCommand>,
    },
    /// Manage the live response library.
    Library {
        #[command(subcommand)]
        command: LibraryCommand,
    },
    /// Run live response commands on a machine (by id or computer name), or
    /// on many in one batch (--machines, --tag, --filter, --all).
    Run(run::RunArgs),
    /// Isolate machines: each loses its network but its Reach servers
    /// (and DNS, DHCP) until released; live response keeps working.
    Isolate(respond::IsolateArgs),
    /// Release isolated machines.
    Release(respond::RespondArgs),
    /// Offboard machines: each is revoked, and its agent deletes its
    /// credential and stops (asks first, or --yes).
    Offboard(respond::RespondArgs),
    /// Collect the investigation package (a zip of forensic data) of
    /// machines; `reach result ID 0 -o package.zip` fetches it.
    Collect(respond::RespondArgs),
    /// Kill every process running the executable with this SHA-1 and move
    /// that executable into the agent's quarantine (`reach-agent
    /// restore-quarantine` puts it back). Files of installed packages are
    /// refused; copies not running are not searched.
    Quarantine(respond::QuarantineArgs),
    /// List batches, newest first.
    Batches,
    /// Show a batch, or cancel, pause, resume it, or fetch its results.
    Batch(batch::BatchArgs),
    /// List live response actions, newest first.
    Actions {
        #[arg(long)]
        machine: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        top: u32,
    },
    /// Show one action with its commands.
    Action { id: String },
    /// Cancel an action; a running script is killed.
    Cancel {
        id: String,
        #[arg(long, default_value = "Cancelled with the reach CLI")]
        comment: String,
    },
    /// A script's output so far (stdout to stdout, stderr to stderr), or
    /// with --follow as it comes until the script ends (Ctrl-C asks
    /// whether to cancel).
    Output {
        id: String,
        /// The command's index in the action.
        #[arg(default_value_t = 0)]
        index: u32,
        #[arg(long)]
        follow: bool,
    },
    /// Download a command's result (a script transcript, or a collected file un-gzipped).
    Result {
        id: String,
        index: u32,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Keep a collected file gzip-compressed, as the API serves it.
        #[arg(long)]
        gzip: bool,
    },
}

#[derive(Subcommand)]
enum MachinesCommand {
    /// Add or remove one tag of a machine (by id or computer name); device
    /// groups are tag rules, so this can move it between groups.
    Tag {
        id: String,
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        add: Option<String>,
        #[arg(long)]
        remove: Option<String>,
    },
}

#[derive(Subcommand)]
enum LibraryCommand {
    /// Upload a file or script.
    Upload {
        file: PathBuf,
        /// Name in the library (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        parameters_description: Option<String>,
        #[arg(long)]
        has_parameters: bool,
        /// Replace a library file of the same name.
        #[arg(long = "override")]
        override_if_exists: bool,
        /// The file's Ed25519 signature, as `reach library sign` prints it.
        #[arg(long)]
        signature: Option<String>,
    },
    /// Make an Ed25519 signing key pair: the private key goes to --out (mode
    /// 0600; keep it offline), the public key is printed for agents'
    /// `trusted_keys` and the server's `library_trusted_keys`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a file offline with a private key; prints the signature to
    /// upload with it (`reach library upload FILE --signature SIG`).
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
        /// The library name it will have (default: the file's name); the
        /// signature holds only under this name.
        #[arg(long)]
        name: Option<String>,
        /// What agents may do with it: put, run or both (default: both for
        /// a script, .sh .bash .py .ps1; put for anything else).
        #[arg(long = "use")]
        uses: Option<String>,
    },
    /// List library files.
    List,
    /// Delete a library file.
    Rm { name: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let run_matches = matches.subcommand_matches("run").cloned();
    match dispatch(cli, run_matches).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", text::clean(&format!("{err:#}")));
            ExitCode::from(1)
        }
    }
}

async fn client() -> anyhow::Result<Client> {
    let creds = credentials::Credentials::load()?;
    let client = creds
        .client()?
        .login(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await
        .with_context(|| format!("signing in to {}", creds.server))?;
    Ok(client)
}

async fn dispatch(cli: Cli, run_matches: Option<clap::ArgMatches>) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    text::set_raw(cli.raw);
    match cli.command {
        Command::Login {
            server,
            tenant_id,
            client_id,
            client_secret,
            ca_file,
        } => {
            let client_secret = match client_secret {
                Some(secret) => secret,
                None => {
                    eprint!("client secret: ");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim().to_string()
                }
            };
            let creds = credentials::Credentials {
                server,
                tenant_id,
                client_id,
                client_secret,
                ca_file,
            };
            creds
                .client()?
                .request_token(&creds.tenant_id, &creds.client_id, &creds.client_secret)
                .await
                .context("the server refused these credentials")?;
            let path = creds.save()?;
            println!("Signed in; credentials saved in {}", path.display());
        }
        Command::Machines { command: None } => {
            let machines = client().await?.machines(&[]).await?;
            output::machines(&machines.value, json)?;
        }
        Command::Machines {
            command: Some(MachinesCommand::Tag { id, add, remove }),
        } => {
            let (tag, adding) = match (add, remove) {
                (Some(tag), _) => (tag, true),
                (None, Some(tag)) => (tag, false),
                (None, None) => anyhow::bail!("give --add TAG or --remove TAG"),
            };
            let machine = client().await?.tag_machine(&id, &tag, adding).await?;
            output::machine_tags(&machine, json)?;
        }
        Command::Library { command } => library(command, json).await?,
        Command::Isolate(args) => {
            let response = respond::Response::Isolate {
                selective: args.selective,
            };
            return respond::respond(&client().await?, response, args.targets, json).await;
        }
        Command::Release(args) => {
            let response = respond::Response::Release;
            return respond::respond(&client().await?, response, args, json).await;
        }
        Command::Offboard(args) => {
            let response = respond::Response::Offboard;
            return respond::respond(&client().await?, response, args, json).await;
        }
        Command::Collect(args) => {
            let response = respond::Response::Collect;
            return respond::respond(&client().await?, response, args, json).await;
        }
        Command::Quarantine(args) => {
            let response = respond::Response::Quarantine { sha1: args.sha1 };
            return respond::respond(&client().await?, response, args.targets, json).await;
        }
        Command::Batches => return batch::list(&client().await?, json).await,
        Command::Batch(args) => return batch::batch(&client().await?, args, json).await,
        Command::Run(args) => {
            let matches = run_matches.context("run arguments")?;
            return run::run(&client().await?, args, &matches, json).await;
        }
        Command::Actions {
            machine,
            status,
            top,
        } => {
            let mut filters = Vec::new();
            if let Some(machine) = machine {
                filters.push(format!("machineId eq '{}'", machine.replace('\'', "''")));
            }
            if let Some(status) = status {
                filters.push(format!("status eq '{}'", status.replace('\'', "''")));
            }
            let filter = filters.join(" and ");
            let top = top.to_string();
            let mut query = vec![("$top", top.as_str())];
            if !filter.is_empty() {
                query.push(("$filter", filter.as_str()));
            }
            let actions = client().await?.actions(&query).await?;
            output::actions(&actions.value, json)?;
        }
        Command::Action { id } => {
            let action = client().await?.action(&id).await?;
            output::action(&action, json)?;
        }
        Command::Cancel { id, comment } => {
            let action = client().await?.cancel(&id, &comment).await?;
            output::action(&action, json)?;
        }
        Command::Output { id, index, follow } => {
            return run::output(&client().await?, &id, index, follow, json).await;
        }
        Command::Result {
            id,
            index,
            output,
            gzip,
        } => {
            let client = client().await?;
            run::save_result(&client, &id, index, output.as_deref(), gzip).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn library(command: LibraryCommand, json: bool) -> anyhow::Result<()> {
    use reach_client::signing;
    match command {
        // Keys and signatures are made offline, without the server.
        LibraryCommand::Keygen { out } => {
            if out.exists() {
                anyhow::bail!("{} exists; not overwriting a key", out.display());
            }
            let (private, public) = signing::generate()?;
            reach_client::private_file::write_private(&out, private.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{public}");
            eprintln!(
                "private key written to {} (keep it offline); the public key above goes into agents' trusted_keys",
                out.display()
            );
        }
        LibraryCommand::Sign {
            key,
            file,
            name,
            uses,
        } => {
            let private = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let sha256 = signing::sha256_file(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let name = match name {
                Some(name) => name,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the file has no UTF-8 name; give --name")?
                    .to_string(),
            };
            let uses = match uses {
                Some(text) => signing::Uses::parse(&text)
                    .with_context(|| format!("--use {text}: use put, run or both"))?,
                None => signing::Uses::default_for(&name),
            };
            println!("{}", signing::sign(&private, &sha256, &name, uses)?);
        }
        LibraryCommand::Upload {
            file,
            name,
            description,
            parameters_description,
            has_parameters,
            override_if_exists,
            signature,
        } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the file has no usable name; give --name")?
                    .to_string(),
            };
            let opened = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("opening {}", file.display()))?;
            let len = opened.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::new(opened);
            let upload = LibraryUpload {
                file_name: name,
                body: UploadBody::Stream(reach_client::reqwest::Body::wrap_stream(stream), len),
                description,
                parameters_description,
                has_parameters,
                override_if_exists,
                signature,
            };
            let stored = client().await?.upload_library_file(upload).await?;
            output::library(std::slice::from_ref(&stored), json)?;
        }
        LibraryCommand::List => output::library(&client().await?.library().await?.value, json)?,
        LibraryCommand::Rm { name } => {
            client().await?.delete_library_file(&name).await?;
            println!("deleted {}", text::clean(&name));
        }
    }
    Ok(())
}
