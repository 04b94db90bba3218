//! `mytunnel`: arguments (here), output formats (`output.rs`), the status line
//! (`status.rs`) and the command runners (`run.rs`). The binary only parses and calls
//! [`run`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use mytunnel_client::doctor::{run_doctor, Check, CheckStatus};
use mytunnel_client::inspect::ExchangeLimits;
use mytunnel_client::profile::ProfileError;
use mytunnel_client::{
    Edge, EdgeBuilder, Multiplexing, Reconnect, TunnelError, TunnelEvent, Upstream,
};
use mytunnel_core::printable::printable;
use mytunnel_core::protocol::{LeaseDto, ListScope, Takeover};
use mytunnel_core::settings::Setting;
use mytunnel_core::transport::TransportError;
use mytunnel_core::LeaseRef;

mod output;
mod run;
mod status;

pub use output::*;
pub use run::run;
use status::*;

const EXAMPLES: &str = "\
Examples:
  mytunnel http 3000 --edge tunnel@edge.example.com
  mytunnel http 8080 --name portal --ttl 5m
  mytunnel ls
  mytunnel stop portal.tunnel.example.com
  mytunnel doctor --app 3000";

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
    /// Publish the app at <TARGET> until Ctrl-C
    #[command(after_help = HTTP_EXAMPLES)]
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
#[command(next_help_heading = "Edge")]
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
    /// The SDK's edge builder, with the flags given.
    pub fn builder(&self) -> EdgeBuilder {
        let mut builder = Edge::builder().multiplexing(if self.no_ssh_mux {
            Multiplexing::PerCommand
        } else {
            Multiplexing::Shared
        });
        if let Some(edge) = &self.edge {
            builder = builder.edge(edge.clone());
        }
        if let Some(path) = &self.ssh_bin {
            builder = builder.ssh_bin(path.clone());
        }
        if let Some(path) = &self.remote_bin {
            builder = builder.remote_bin(path.clone());
        }
        if let Some(domain) = &self.base_domain {
            builder = builder.base_domain(domain.clone());
        }
        for option in &self.ssh_options {
            builder = builder.ssh_option(option.clone());
        }
        if let Some(path) = &self.config {
            builder = builder.config_path(path.clone());
        }
        for (flag, value) in self.overrides.pairs() {
            builder = builder.remote_override(flag, value);
        }
        builder
    }
}

const HTTP_EXAMPLES: &str = "\
Targets:
  3000                        localhost:3000 (127.0.0.1 or ::1, whichever answers)
  localhost:5173              a host and port
  127.0.0.2:8080, [::1]:3000  an IP address (IPv6 in brackets)
  http://devbox.lan:8080      a URL: http:// or https://
  https://localhost:8443      an app that serves HTTPS itself
  shop                        the [tunnels.shop] profile of ~/.config/mytunnel/config.toml

Examples:
  mytunnel http 3000 --edge tunnel@edge.example.com
  mytunnel http 3000 --name portal --ttl 10m
  mytunnel http localhost:5173 --host-header rewrite   (the app sees Host: localhost:5173)
  mytunnel http https://localhost:8443 --upstream-insecure   (self-signed certificate)
  mytunnel http 3000 --inspect              (requests at http://127.0.0.1:4040)
  mytunnel http 3000 --json | jq .          (one JSON object per request)
  mytunnel http 3000 --name portal --force   (edge admins: take the name over)";

/// `mytunnel http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Where the app listens, or a tunnel profile's name (the help says the forms).
    #[arg(
        help = "Where your app listens: a port, host:port, [v6]:port, or http:// or https:// URL \
                (see the targets below); or the name of a [tunnels.NAME] profile in the config file"
    )]
    pub target: String,
    /// The Host header your app sees: `rewrite` for the host it listens on (e.g.
    /// localhost:3000), or a host of your choice [default: the public host].
    /// X-Forwarded-Host and X-Forwarded-Proto always carry the public host and https
    #[arg(long, value_name = "rewrite|HOST", conflicts_with = "raw")]
    pub host_header: Option<String>,
    /// For an https:// target: accept any certificate, e.g. a self-signed one. The link to
    /// the app stays encrypted but its certificate is not checked: use it only for an app
    /// on this machine
    #[arg(long)]
    pub upstream_insecure: bool,
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
    /// What is printed while the tunnel runs.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// How to reach the edge.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// How many ports `--inspect` alone tries, from the SDK's `Inspector::DEFAULT_ADDR`
/// (127.0.0.1:4040) up.
pub const INSPECT_PORTS: u16 = 10;

/// `mytunnel http`'s request log and inspector.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Requests")]
pub struct TrafficArgs {
    /// Print one JSON object per line on stdout (opened, then one per request) instead of text
    #[arg(long)]
    pub json: bool,
    /// Print no line per request (the URL and status lines stay)
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Serve the request inspector: a page with recent requests, their headers and bodies,
    /// and replay [default address: 127.0.0.1:4040, or the next free port up to 4049]
    #[arg(long, value_name = "[HOST:]PORT", num_args = 0..=1, default_missing_value = "", value_parser = parse_inspect_addr)]
    pub inspect: Option<InspectAddr>,
    /// Requests the inspector keeps (the oldest go first)
    #[arg(long, value_name = "N", default_value_t = ExchangeLimits::DEFAULT.max_exchanges, value_parser = parse_keep, requires = "inspect")]
    pub inspect_keep: usize,
    /// Bytes of each request and response body the inspector keeps, e.g. 64k or 1m
    #[arg(long, value_name = "SIZE", default_value = "64k", value_parser = parse_size, requires = "inspect")]
    pub inspect_body: usize,
    /// Carry bytes only: no request log, no inspector; the fastest path to the app
    #[arg(long, conflicts_with_all = ["inspect", "json"])]
    pub raw: bool,
}

/// Where `--inspect` listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectAddr {
    /// `--inspect` alone: 127.0.0.1:4040, or the next free port up to 4049.
    Default,
    /// `--inspect [HOST:]PORT`.
    Given(std::net::SocketAddr),
}

/// `--inspect`'s value: nothing (the default), a port (on 127.0.0.1) or `HOST:PORT` with
/// an IP address.
pub fn parse_inspect_addr(text: &str) -> Result<InspectAddr, String> {
    if text.is_empty() {
        return Ok(InspectAddr::Default);
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(InspectAddr::Given(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            port,
        ))));
    }
    text.parse().map(InspectAddr::Given).map_err(|_| {
        format!(
            "{} is not a port or an IP address with a port (e.g. 4041, 127.0.0.1:4041, [::1]:4041)",
            printable(text)
        )
    })
}

/// `--inspect-keep`: 1 to 100,000 exchanges.
pub fn parse_keep(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| format!("{} is not a number from 1 to 100000", printable(text)))
}

/// A byte size: a number, optionally followed by k/K/kB/KiB (×1024) or m/M/MB/MiB
/// (×1024²); at most 64 MiB.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{} is not a size (e.g. 65536, 64k, 1m)",
                printable(text)
            ))
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n <= 64 * 1024 * 1024)
        .ok_or_else(|| format!("{} is not a size from 0 to 64m", printable(text)))
}

/// A target, as `mytunnel http` takes it.
fn parse_target(text: &str) -> Result<Upstream, String> {
    text.parse()
        .map_err(|e: mytunnel_client::upstream::UpstreamError| printable(&e.to_string()))
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
    /// Also check the local app at this target (a port, host:port or URL, as for `http`)
    #[arg(long, alias = "local-port", value_name = "TARGET", value_parser = parse_target)]
    pub app: Option<Upstream>,
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
    /// How to reach the edge.
    #[command(flatten)]
    pub edge: EdgeArgs,
}
