//! The mytunnel paths on one edge: time to URL in both client shapes (one SSH connection
//! with its mux, and `--no-ssh-mux`), the data plane through a tunnel opened by the built
//! `mytunnel http` in each shape asked for, and the download again with OpenSSH's own
//! default cipher asked for explicitly.

use std::time::Duration;

use crate::app::App;
use crate::client::{time_to_url, Client, TimeToUrl};
use crate::dataplane::{await_serving, downloads, measure_path, Downloads, LoadPlan, PathResult};
use crate::edge::{Edge, RouteMode};
use crate::procs::Result;
use crate::shape::Observed;

/// The cipher the extra download asks for: OpenSSH's own default.
pub const CHACHA: &str = "Ciphers=chacha20-poly1305@openssh.com";

/// The client's flag for the plain shape.
pub const NO_MUX: &str = "--no-ssh-mux";

/// The client's flag for bytes only (no request log).
pub const RAW: &str = "--raw";

/// How the client carried the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `mytunnel http`: one SSH connection with its mux, the HTTP proxy and its request log.
    Default,
    /// `--no-ssh-mux`: `ssh -T` per command, `ssh -N -R` per tunnel.
    NoMux,
    /// `--raw`: the default connection, bytes relayed without the HTTP proxy.
    Raw,
}

impl Shape {
    /// The client's flags for this shape.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Shape::Default => &[],
            Shape::NoMux => &[NO_MUX],
            Shape::Raw => &[RAW],
        }
    }
}

/// One mytunnel data-plane path.
#[derive(Debug, Clone)]
pub struct MytunnelPath {
    /// How the client carried it.
    pub shape: Shape,
    /// Its ssh processes and connections while it served.
    pub observed: Observed,
    /// What wrk and curl measured.
    pub result: PathResult,
}

/// The download through a tunnel whose client was given a cipher.
#[derive(Debug, Clone)]
pub struct CipherDownload {
    /// The `--ssh-option` given.
    pub option: String,
    /// Its ssh processes and connections while it served.
    pub observed: Observed,
    /// What curl measured.
    pub download: Downloads,
}

/// Everything measured through mytunnel on one edge.
#[derive(Debug, Clone)]
pub struct TunnelRun {
    /// The edge's route mode (empty for a build without modes).
    pub mode: String,
    /// Mux first, then `--no-ssh-mux`.
    pub time_to_url: Vec<TimeToUrl>,
    /// The default shape first, then `--no-ssh-mux` when measured.
    pub paths: Vec<MytunnelPath>,
    /// The download with [`CHACHA`], when measured.
    pub cipher: Option<CipherDownload>,
}

impl TunnelRun {
    /// The path of the default shape (one SSH connection with its mux, the request log on).
    pub fn mux_path(&self) -> Option<&MytunnelPath> {
        self.path(Shape::Default)
    }

    /// The path of `shape`, when measured.
    pub fn path(&self, shape: Shape) -> Option<&MytunnelPath> {
        self.paths.iter().find(|p| p.shape == shape)
    }

    /// Time to URL of one shape.
    pub fn time_to_url(&self, no_mux: bool) -> Option<&TimeToUrl> {
        self.time_to_url.iter().find(|t| t.no_mux == no_mux)
    }
}

/// What to measure on an edge besides time to URL and the default shape's path.
#[derive(Debug, Clone, Copy)]
pub struct Extras {
    /// The `--no-ssh-mux` path.
    pub no_mux_path: bool,
    /// The `--raw` path.
    pub raw_path: bool,
    /// The download with [`CHACHA`].
    pub cipher: bool,
}

/// ` [static]`, or nothing for a build without modes.
pub fn mode_suffix(mode: &str) -> String {
    if mode.is_empty() {
        String::new()
    } else {
        format!(" [{mode}]")
    }
}

/// The label of a mytunnel path: `(c) mytunnel [static]`, `(c) mytunnel --no-ssh-mux [static]`.
pub fn path_label(mode: &str, shape: Shape) -> String {
    let mut label = "(c) mytunnel".to_owned();
    for flag in shape.flags() {
        label.push(' ');
        label.push_str(flag);
    }
    label + &mode_suffix(mode)
}

/// The hops of a mytunnel path as observed.
fn description(mode: &str, observed: &Observed, flags: &[&str]) -> String {
    let front = if mode == RouteMode::Static.as_str() {
        "wrk → Caddy (one wildcard route) → host link → the owner's unix socket"
    } else {
        "wrk → Caddy (a route per lease) → the owner's unix socket"
    };
    let mut command = "mytunnel http".to_owned();
    for flag in flags {
        command.push(' ');
        command.push_str(flag);
    }
    format!(
        "{front} → sshd → {} → app (a tunnel opened by the built `{command}`; {} while it served)",
        observed.hop(),
        observed.summary()
    )
}

/// Opens a client with `flags`, waits until its URL serves, and observes it.
fn serving_client(edge: &Edge, app: &App, flags: &[&str]) -> Result<(Client, Observed)> {
    let client = Client::open(edge, app.port(), flags)?;
    await_serving(edge.http(), &client.host, Duration::from_secs(30))?;
    let observed = client.observe(edge);
    Ok((client, observed))
}

/// Time to URL in both shapes, the default shape's path, and the extras asked for.
pub fn measure(
    edge: &Edge,
    app: &App,
    load: &LoadPlan,
    runs: usize,
    mode: &str,
    extras: Extras,
) -> Result<TunnelRun> {
    let suffix = mode_suffix(mode);
    let time_to_url = vec![
        time_to_url(edge, app.port(), &format!("mux{suffix}"), &[], runs)?,
        time_to_url(
            edge,
            app.port(),
            &format!("{NO_MUX}{suffix}"),
            &[NO_MUX],
            runs,
        )?,
    ];
    let mut shapes = vec![Shape::Default];
    if extras.raw_path {
        shapes.push(Shape::Raw);
    }
    if extras.no_mux_path {
        shapes.push(Shape::NoMux);
    }
    let mut paths = Vec::new();
    for shape in shapes {
        let flags = shape.flags();
        let (client, observed) = serving_client(edge, app, flags)?;
        eprintln!(
            "  {}: {} — {}",
            path_label(mode, shape),
            observed.hop(),
            observed.summary()
        );
        let result = measure_path(
            &path_label(mode, shape),
            &description(mode, &observed, flags),
            edge.http(),
            &client.host,
            load,
        )?;
        client.stop();
        paths.push(MytunnelPath {
            shape,
            observed,
            result,
        });
    }
    let cipher = if extras.cipher {
        let flags = ["--ssh-option", CHACHA];
        let (client, observed) = serving_client(edge, app, &flags)?;
        let download = downloads(
            &format!("{} {CHACHA}", path_label(mode, Shape::Default)),
            edge.http(),
            &client.host,
            load,
        )?;
        client.stop();
        Some(CipherDownload {
            option: CHACHA.to_owned(),
            observed,
            download,
        })
    } else {
        None
    };
    Ok(TunnelRun {
        mode: mode.to_owned(),
        time_to_url,
        paths,
        cipher,
    })
}
