//! `mytunnel`: arguments, output formats and the command runners. The binary only
//! parses and calls [`run`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use mytunnel_client::doctor::{run_doctor, Check, CheckStatus};
use mytunnel_client::profile::ExplicitEdge;
use mytunnel_client::{EdgeSettings, Multiplexing, Reconnect, Tunnel, TunnelError, TunnelEvent};
use mytunnel_core::printable::printable;
use mytunnel_core::protocol::{LeaseDto, ListScope, Takeover};
use mytunnel_core::settings::Setting;
use mytunnel_core::transport::TransportError;
use mytunnel_core::LeaseRef;

const EXAMPLES: &str = "\
Examples:
  mytunnel http 3000 --edge tunnel@edge.example.com
  mytunnel http 8080 --name portal --ttl 5m
  mytunnel ls
  mytunnel stop portal.tunnel.example.com
  mytunnel doctor --local-port 3000";

/// `mytunnel`: publish a local HTTP port at https://<name>.<your-domain> through your edge.
#[derive(Debug, Parser)]
#[command(
    name = "mytunnel",
    version,
    about = "Publish a local HTTP port at https://<name>.<your-domain> through your own edge",
    disable_version_flag = true,
    after_help = EXAMPLES,
    override_usage = "mytunnel <http|ls|stop|rm|doctor> [args]"
)]
pub struct Cli {
    /// Print the version.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish http://127.0.0.1:<LOCAL_PORT>/ until Ctrl-C
    #[command(
        after_help = "Examples:\n  mytunnel http 3000 --edge tunnel@edge.example.com\n  mytunnel http 3000 --name portal --ttl 10m\n  mytunnel http 3000 --name portal --force   (edge admins: take the name over)"
    )]
    Http(HttpArgs),
    /// List your leases
    Ls(LsArgs),
    /// Release a lease: its URL stops at once and the name is free again
    Stop(RefArgs),
    /// Delete a lease record (releasing it first if active)
    Rm(RefArgs),
    /// Check each step from this machine to a working tunnel
    Doctor(DoctorArgs),
}

/// How to reach the edge (every subcommand).
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// SSH destination (user@host, Host alias, ssh://user@host:port) or profile name [env: MYTUNNEL_EDGE]
    #[arg(long, value_name = "DESTINATION|PROFILE")]
    pub edge: Option<String>,
    /// The ssh client [env: MYTUNNEL_SSH_BIN] [default: ssh]
    #[arg(long, value_name = "PATH")]
    pub ssh_bin: Option<PathBuf>,
    /// Open one SSH connection per control command instead of sharing one
    #[arg(long)]
    pub no_ssh_mux: bool,
    /// mytunneld on the edge [env: MYTUNNEL_REMOTE_BIN] [default: mytunneld]
    #[arg(long, value_name = "PATH")]
    pub remote_bin: Option<String>,
    /// Base domain the URL is expected under (checked, not sent) [env: MYTUNNEL_BASE_DOMAIN]
    #[arg(long, value_name = "DOMAIN")]
    pub base_domain: Option<String>,
    /// Extra ssh option for every ssh run, e.g. --ssh-option Port=2222 (repeatable)
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// The client profile file [default: ~/.config/mytunnel/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Remote daemon overrides.
    #[command(flatten)]
    pub overrides: RemoteOverrides,
}

/// Daemon settings passed to the remote `mytunneld ctl` only when given: the settings
/// table's remote overrides, in table order. The SSH gate refuses them; they serve edges
/// reached without the gate.
#[derive(Debug, Clone, Default)]
pub struct RemoteOverrides {
    given: Vec<(Setting, String)>,
}

/// The settings `mytunnel` offers as remote overrides.
fn remote_override_settings() -> impl Iterator<Item = Setting> {
    Setting::ALL
        .into_iter()
        .filter(|setting| setting.spec().client_override)
}

impl RemoteOverrides {
    /// The given ones, as `(flag, value)`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.given
            .iter()
            .map(|(setting, value)| (setting.flag().to_owned(), value.clone()))
            .collect()
    }
}

impl clap::Args for RemoteOverrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(remote_override_settings().map(|setting| {
            let spec = setting.spec();
            clap::Arg::new(spec.name)
                .long(spec.flag.trim_start_matches('-'))
                .value_name(spec.value_name)
                .help(format!("Remote {}: {}", spec.flag, spec.help))
                .help_heading("Remote overrides (refused by the SSH gate)")
        }))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for RemoteOverrides {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(RemoteOverrides {
            given: remote_override_settings()
                .filter_map(|setting| {
                    matches
                        .get_one::<String>(setting.name())
                        .map(|value| (setting, value.clone()))
                })
                .collect(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl EdgeArgs {
    /// The SDK's edge settings.
    pub fn settings(&self) -> EdgeSettings {
        EdgeSettings {
            explicit: ExplicitEdge {
                edge: self.edge.clone(),
                ssh_bin: self.ssh_bin.clone(),
                remote_bin: self.remote_bin.clone(),
                base_domain: self.base_domain.clone(),
            },
            multiplexing: if self.no_ssh_mux {
                Multiplexing::PerCommand
            } else {
                Multiplexing::Shared
            },
            remote_overrides: self.overrides.pairs(),
            ssh_options: self.ssh_options.clone(),
            config_path: self.config.clone(),
            environment: None,
            transport: None,
        }
    }
}

/// `mytunnel http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The local port your app listens on (http://127.0.0.1:<LOCAL_PORT>/)
    #[arg(value_parser = clap::value_parser!(u16).range(1..=65535))]
    pub local_port: u16,
    /// Publish at https://<NAME>.<base-domain> (default: a generated readable name)
    #[arg(long)]
    pub name: Option<String>,
    /// Accepted for compatibility; the edge takes the owner from your SSH user
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Take the name over from another lease (edge admins only)
    #[arg(long, requires = "name")]
    pub force: bool,
    /// Lease TTL to ask for, e.g. 90s or 5m (clamped to 30s..24h) [default: the edge's, 2m]
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    /// Reconnect when the SSH connection drops (--reconnect=false to exit instead)
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub reconnect: bool,
    /// How to reach the edge.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    mytunnel_core::duration::parse_duration(text).map_err(|e| e.message)
}

/// `mytunnel ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print the lease DTOs as a JSON array
    #[arg(long)]
    pub json: bool,
    /// Everyone's leases (edge admins only)
    #[arg(long)]
    pub all: bool,
    /// How to reach the edge.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// `mytunnel stop` / `rm`.
#[derive(Debug, Args)]
pub struct RefArgs {
    /// lease_…, the host, or the name
    pub lease: String,
    /// Print the answer as JSON
    #[arg(long)]
    pub json: bool,
    /// How to reach the edge.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// `mytunnel doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check the local app on this port
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=65535))]
    pub local_port: Option<u16>,
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
    /// How to reach the edge.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

// ---------------------------------------------------------------------------------------
// Output formats (fixed by the spec)

/// The two lines `http` prints on stdout once the tunnel is up.
pub fn format_opened(url: &str, lease_id: &str) -> String {
    format!("url: {url}\nlease: {lease_id}\n")
}

/// `ls` as aligned text columns, or `no leases`.
pub fn format_ls(leases: &[LeaseDto]) -> String {
    if leases.is_empty() {
        return "no leases\n".to_owned();
    }
    let header = ["LEASE_ID", "HOST", "OWNER", "PORT", "STATE", "EXPIRES_AT"];
    let rows: Vec<[String; 6]> = leases
        .iter()
        .map(|l| {
            [
                l.lease_id.to_string(),
                l.host.clone(),
                l.owner.to_string(),
                // A lease that binds a socket (static route mode) holds no port.
                match l.edge_bind_port {
                    0 => "-".to_owned(),
                    port => port.to_string(),
                },
                l.state.to_string(),
                l.expires_at.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == header.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The line `stop` prints: `released <id> (<tombstoned host>)`.
pub fn format_released(lease: &LeaseDto) -> String {
    format!("released {} ({})\n", lease.lease_id, lease.host)
}

/// The doctor report as text: one line per check.
pub fn format_checks(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let status = match check.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        };
        out.push_str(&format!(
            "{status}  {:<17} {}",
            check.name,
            printable(&check.detail)
        ));
        if !check.hint.is_empty() {
            out.push_str(&format!("\n      hint: {}", printable(&check.hint)));
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Errors

/// Prints an error as a miette diagnostic with its code and hint, and returns the exit
/// code: 2 for usage errors (nothing was sent), 1 for refusals and failures.
fn report(error: &TunnelError) -> ExitCode {
    let mut diagnostic = miette::MietteDiagnostic::new(printable(&error.to_string()))
        .with_help(printable(&error.hint()));
    if let Some(code) = error.code() {
        diagnostic = diagnostic.with_code(code.as_str());
    }
    eprintln!("{:?}", miette::Report::new(diagnostic));
    match error {
        TunnelError::InvalidOptions(_) | TunnelError::Edge(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn report_transport(error: &TransportError) -> ExitCode {
    let (code, hint) = match error {
        TransportError::Refused(api) => (Some(api.code.as_str()), api.hint.clone()),
        TransportError::Unreachable(_) => (
            None,
            "check `ssh <edge>` works with your tunnel key (`mytunnel doctor`)".to_owned(),
        ),
        TransportError::Malformed(_) => (
            None,
            "client and edge may not match: `mytunnel doctor` shows both versions".to_owned(),
        ),
    };
    let mut diagnostic =
        miette::MietteDiagnostic::new(printable(&error.to_string())).with_help(printable(&hint));
    if let Some(code) = code {
        diagnostic = diagnostic.with_code(code);
    }
    eprintln!("{:?}", miette::Report::new(diagnostic));
    ExitCode::from(1)
}

// ---------------------------------------------------------------------------------------
// Runners

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Http(args) => run_http(args).await,
        Command::Ls(args) => run_ls(args).await,
        Command::Stop(args) => run_stop(args, Verb::Stop).await,
        Command::Rm(args) => run_stop(args, Verb::Rm).await,
        Command::Doctor(args) => run_doctor_command(args).await,
    }
}

/// A status line on stderr. On a terminal a transient state (connecting, reconnecting)
/// is one line with a spinner, redrawn in place until the next line replaces it;
/// otherwise every state is a plain line.
#[derive(Debug)]
struct Status {
    terminal: bool,
    spinner: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Status {
    fn new() -> Status {
        Status {
            terminal: std::io::stderr().is_terminal(),
            spinner: std::sync::Mutex::new(None),
        }
    }

    fn stop_spinner(&self) {
        if let Some(task) = self
            .spinner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// A transient state: a spinning line on a terminal, a plain line otherwise.
    fn transient(&self, text: &str) {
        let text = &printable(text);
        self.stop_spinner();
        if !self.terminal {
            let _ = writeln!(std::io::stderr(), "{text}");
            return;
        }
        let text = text.to_owned();
        let task = tokio::spawn(async move {
            for frame in SPINNER.iter().cycle() {
                let mut err = std::io::stderr();
                let _ = write!(err, "\r\x1b[2K{frame} {text}");
                let _ = err.flush();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        *self
            .spinner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// A lasting line (replaces a spinning one).
    fn line(&self, text: &str) {
        let text = &printable(text);
        self.stop_spinner();
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = writeln!(err, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
    }
}

async fn run_http(args: HttpArgs) -> ExitCode {
    let mut builder = Tunnel::http(args.local_port);
    builder = builder.reconnect(if args.reconnect {
        Reconnect::Always
    } else {
        Reconnect::Never
    });
    if let Some(name) = &args.name {
        builder = builder.name(name.clone());
    }
    if let Some(ttl) = args.ttl {
        builder = builder.ttl(ttl);
    }
    if args.force {
        builder = builder.takeover(Takeover::Force);
    }
    let settings = args.edge.settings();
    builder = builder.with_edge_settings(settings);
    // Usage errors (bad name, no edge) before any ssh call: exit 2.
    if let Err(e) = builder.validate() {
        return report(&e);
    }
    let destination = match builder.resolve_edge() {
        Ok(edge) => edge.destination,
        Err(e) => return report(&e),
    };
    let status = Status::new();
    status.transient(&format!("connecting to {destination}…"));
    let mut tunnel = match builder.open().await {
        Ok(tunnel) => tunnel,
        Err(e) => {
            status.line("");
            return report(&e);
        }
    };
    let mut events = tunnel.events();
    // Events of the opening (probe warnings) go to stderr first.
    while let Ok(event) = events.try_recv() {
        if let TunnelEvent::ProbeWarning { .. } = event {
            status.line(&event.to_string());
        }
    }
    status.line(&format!(
        "forwarding {} → http://127.0.0.1:{}",
        tunnel.url(),
        args.local_port
    ));
    print!(
        "{}",
        format_opened(tunnel.url(), tunnel.lease().lease_id.as_str())
    );
    let _ = std::io::stdout().flush();

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                status.transient("releasing the lease…");
                return match tunnel.close().await {
                    Ok(()) => {
                        status.line("released; bye");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        report(&e);
                        ExitCode::from(130)
                    }
                };
            }
            event = events.recv() => match event {
                Ok(event @ (TunnelEvent::Reconnecting { .. } | TunnelEvent::Lost { .. })) => {
                    status.transient(&event.to_string());
                }
                Ok(TunnelEvent::Renewed { .. }) => {}
                Ok(event) => status.line(&event.to_string()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return match tunnel.closed().await {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => report(&e),
                    };
                }
            },
        }
    }
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM; never without signal handlers.
async fn shutdown_signal() {
    match crate::shutdown::shutdown_signal() {
        Ok(stop) => {
            stop.await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn connect(edge: &EdgeArgs) -> Result<mytunnel_client::EdgeClient, ExitCode> {
    let settings = edge.settings();
    if let Err(e) = settings.resolve() {
        return Err(report(&e));
    }
    settings.connect().await.map_err(|e| report(&e))
}

async fn run_ls(args: LsArgs) -> ExitCode {
    let client = match connect(&args.edge).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let scope = if args.all {
        ListScope::All
    } else {
        ListScope::Own
    };
    match client.list(scope).await {
        Ok(leases) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&leases).unwrap_or_else(|_| "[]".into())
                );
            } else {
                print!("{}", format_ls(&leases));
            }
            ExitCode::SUCCESS
        }
        Err(e) => report_transport(&e),
    }
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Stop,
    Rm,
}

async fn run_stop(args: RefArgs, verb: Verb) -> ExitCode {
    let lease: LeaseRef = match args.lease.parse() {
        Ok(lease) => lease,
        Err(e) => {
            return report(&TunnelError::InvalidOptions(e.to_string()));
        }
    };
    let client = match connect(&args.edge).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    match verb {
        Verb::Stop => match client.release(lease).await {
            Ok(released) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&released).unwrap_or_default()
                    );
                } else {
                    print!("{}", format_released(&released));
                }
                ExitCode::SUCCESS
            }
            Err(e) => report_transport(&e),
        },
        Verb::Rm => match client.delete(lease).await {
            Ok(id) => {
                if args.json {
                    println!("{}", serde_json::json!({ "deleted": id }));
                } else {
                    println!("deleted {id}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => report_transport(&e),
        },
    }
}

async fn run_doctor_command(args: DoctorArgs) -> ExitCode {
    let checks = run_doctor(&args.edge.settings(), args.local_port).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_else(|_| "[]".into())
        );
    } else {
        print!("{}", format_checks(&checks));
    }
    if checks.iter().any(|c| c.status == CheckStatus::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
