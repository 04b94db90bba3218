//! The command runners: one per subcommand, each returning the exit code.

use std::net::SocketAddr;

use mytunnel_client::inspect::{ExchangeLog, Inspector};
use mytunnel_client::profile::TunnelProfile;
use mytunnel_client::upstream::Scheme;
use mytunnel_client::ProxyMode;

use super::*;

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

/// The tunnel's options: the flags, over the `[tunnels.<TARGET>]` profile when TARGET is
/// not a target but names one (whose edge then applies unless `--edge` names one).
fn tunnel_options(args: &HttpArgs, edge: &mut EdgeBuilder) -> Result<TunnelProfile, TunnelError> {
    let profile = match args.target.parse::<Upstream>() {
        Ok(_) => TunnelProfile {
            target: args.target.clone(),
            ..TunnelProfile::default()
        },
        Err(e) => match edge.tunnel_profile(&args.target)? {
            Some(profile) => profile,
            None => return Err(TunnelError::Upstream(e)),
        },
    };
    if let (Some(profile_edge), None) = (&profile.edge, &args.edge.edge) {
        *edge = edge.clone().edge(profile_edge.clone());
    }
    let options = TunnelProfile {
        name: args.name.clone().or(profile.name),
        host_header: args.host_header.clone().or(profile.host_header),
        upstream_insecure: args.upstream_insecure || profile.upstream_insecure,
        ..profile
    };
    if args.upstream_insecure {
        let upstream: Upstream = options.target.parse()?;
        if upstream.scheme() != Scheme::Https {
            return Err(TunnelError::InvalidOptions(format!(
                "--upstream-insecure is for an https:// target, and {upstream} is plain HTTP: \
                 leave it out, or target https://{}",
                upstream.authority()
            )));
        }
    }
    Ok(options)
}

pub(super) async fn run_http(args: HttpArgs) -> ExitCode {
    // Usage errors (bad target, name, no edge) before any ssh call: exit 2.
    // A tunnel of its own: the edge connects after the local probe, and ends with it.
    let mut edge = args.edge.builder();
    let options = match tunnel_options(&args, &mut edge) {
        Ok(options) => options,
        Err(e) => return report(&e),
    };
    let mut builder = match options.tunnel(edge.clone()) {
        Ok(builder) => builder,
        Err(e) => return report(&e),
    };
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
    let traffic = &args.traffic;
    if traffic.raw {
        builder = builder.proxy_mode(ProxyMode::Tcp);
    }
    let log = traffic.inspect.map(|_| {
        ExchangeLog::new(ExchangeLimits {
            max_exchanges: traffic.inspect_keep,
            max_body_bytes: traffic.inspect_body,
            ..ExchangeLimits::DEFAULT
        })
    });
    if let Some(log) = &log {
        builder = builder.exchange_log(log.clone());
    }
    if let Err(e) = builder.validate() {
        return report(&e);
    }
    let destination = match edge.resolve() {
        Ok(edge) => edge.destinations.first().to_owned(),
        Err(e) => return report(&e),
    };
    // The inspector's port before anything is allocated: a busy one costs no lease.
    let inspector = match (traffic.inspect, log) {
        (Some(addr), Some(log)) => match bind_inspector(addr, log) {
            Ok(inspector) => Some(inspector),
            Err(code) => return code,
        },
        _ => None,
    };
    let status = Status::new();
    // The handlers before anything is printed: a Ctrl-C as soon as the URL shows must
    // release the lease, not kill the process with the default action.
    let shutdown = stop_requested();
    tokio::pin!(shutdown);
    status.transient(&format!("connecting to {destination}…"));
    let opened = tokio::select! {
        opened = builder.open() => opened,
        () = &mut shutdown => {
            // A lease allocated by then expires after its TTL.
            status.line("cancelled");
            return ExitCode::from(130);
        }
    };
    let mut tunnel = match opened {
        Ok(tunnel) => tunnel,
        Err(e) => {
            status.line("");
            return report(&e);
        }
    };
    let mut events = tunnel.events();
    // Events of the opening (probe warnings, edges passed over) go to stderr first.
    while let Some(event) = events.try_next() {
        if let TunnelEvent::ProbeWarning { .. } | TunnelEvent::EdgeMoved { .. } = event {
            status.line(&event.to_string());
        }
    }
    status.line(&format_forwarding(
        tunnel.url(),
        tunnel.upstream(),
        tunnel.app_address(),
    ));
    if let Some(inspector) = &inspector {
        status.line(&inspector_line(inspector.local_addr()));
    }
    let opened = if traffic.json {
        format_opened_json(tunnel.url(), tunnel.lease().lease_id.as_str())
    } else {
        format_opened(tunnel.url(), tunnel.lease().lease_id.as_str())
    };
    status.output(&opened);

    loop {
        tokio::select! {
            () = &mut shutdown => {
                status.transient("releasing the lease…");
                if let Some(inspector) = inspector {
                    inspector.close().await;
                }
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
            event = events.next() => match event {
                Some(event @ (TunnelEvent::Reconnecting { .. } | TunnelEvent::Lost { .. })) => {
                    status.transient(&event.to_string());
                }
                Some(TunnelEvent::Request(summary)) => {
                    if !traffic.quiet {
                        status.output(&if traffic.json {
                            format_request_json(&summary)
                        } else {
                            format_request(&summary)
                        });
                    }
                }
                Some(TunnelEvent::Missed { count }) => {
                    if !traffic.quiet {
                        status.line(&format!(
                            "{count} events not shown: the request log fell behind"
                        ));
                    }
                }
                Some(TunnelEvent::Renewed { .. }) => {}
                Some(event) => status.line(&event.to_string()),
                None => {
                    return match tunnel.closed().await {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => report(&e),
                    };
                }
            },
        }
    }
}

/// Binds the inspector: the address given, or the first free one of 127.0.0.1:4040–4049.
/// A failure is reported here (exit 1).
fn bind_inspector(addr: InspectAddr, log: ExchangeLog) -> Result<Inspector, ExitCode> {
    let candidates: Vec<SocketAddr> = match addr {
        InspectAddr::Given(addr) => vec![addr],
        InspectAddr::Default => (0..INSPECT_PORTS)
            .map(|n| {
                let mut addr = Inspector::DEFAULT_ADDR;
                addr.set_port(addr.port().saturating_add(n));
                addr
            })
            .collect(),
    };
    let mut last = None;
    for candidate in &candidates {
        match Inspector::bind(*candidate, log.clone()) {
            Ok(inspector) => return Ok(inspector),
            Err(e) => last = Some(e),
        }
    }
    let tried = match candidates.as_slice() {
        [one] => one.to_string(),
        [first, .., last] => format!("{first} to {last}"),
        [] => String::new(),
    };
    let reason = last.map_or_else(String::new, |e| format!(": {e}"));
    let diagnostic =
        miette::MietteDiagnostic::new(format!("cannot serve the inspector on {tried}{reason}"))
            .with_code("inspector_unavailable")
            .with_help("pass a free port, e.g. --inspect 4050, or leave --inspect out");
    eprintln!("{:?}", miette::Report::new(diagnostic));
    Err(ExitCode::from(1))
}

/// The status line naming the inspector's page, and who can reach it.
fn inspector_line(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() {
        format!("inspector: http://{addr} (this machine only)")
    } else {
        format!(
            "inspector: http://{addr} — warning: reachable from other machines; anyone who \
             reaches it sees your requests and their bodies and can replay them"
        )
    }
}

/// Installs the SIGINT and SIGTERM handlers now and resolves on the first signal; never
/// without handlers.
pub(super) fn stop_requested() -> impl std::future::Future<Output = ()> {
    let stop = crate::shutdown::shutdown_signal();
    async move {
        match stop {
            Ok(stop) => {
                stop.await;
            }
            Err(_) => std::future::pending().await,
        }
    }
}

pub(super) async fn connect(edge: &EdgeArgs) -> Result<Edge, ExitCode> {
    let builder = edge.builder();
    if let Err(e) = builder.resolve() {
        return Err(report(&e));
    }
    builder.connect().await.map_err(|e| report(&e))
}

pub(super) async fn run_ls(args: LsArgs) -> ExitCode {
    let client = match connect(&args.edge).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let scope = if args.all {
        ListScope::All
    } else {
        ListScope::Own
    };
    let listed = client.list(scope).await;
    client.close().await;
    match listed {
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
pub(super) enum Verb {
    Stop,
    Rm,
}

pub(super) async fn run_stop(args: RefArgs, verb: Verb) -> ExitCode {
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
    let code = match verb {
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
    };
    client.close().await;
    code
}

pub(super) async fn run_doctor_command(args: DoctorArgs) -> ExitCode {
    let checks = run_doctor(&args.edge.builder(), args.app.as_ref()).await;
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
