//! The command runners: one per subcommand, each returning the exit code.

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

pub(super) async fn run_http(args: HttpArgs) -> ExitCode {
    // A tunnel of its own: the edge connects after the local probe, and ends with it.
    let edge = args.edge.builder();
    let mut builder = edge.clone().http(args.local_port);
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
    // Usage errors (bad name, no edge) before any ssh call: exit 2.
    if let Err(e) = builder.validate() {
        return report(&e);
    }
    let destination = match edge.resolve() {
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
    while let Some(event) = events.try_next() {
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
            event = events.next() => match event {
                Some(event @ (TunnelEvent::Reconnecting { .. } | TunnelEvent::Lost { .. })) => {
                    status.transient(&event.to_string());
                }
                Some(TunnelEvent::Renewed { .. } | TunnelEvent::Missed { .. }) => {}
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

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM; never without signal handlers.
pub(super) async fn shutdown_signal() {
    match crate::shutdown::shutdown_signal() {
        Ok(stop) => {
            stop.await;
        }
        Err(_) => std::future::pending().await,
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
    let checks = run_doctor(&args.edge.builder(), args.local_port).await;
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
