//! `mytunneld`: parse, build config, call one library function, print, exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{miette, IntoDiagnostic};
use mytunnel_cli::edge_cli::{self, CtlInvocation, CTL_HELP};
use mytunnel_edge::config::LogFormat;
use mytunnel_edge::ctl::{self, CtlOutput};
use mytunnel_edge::gate::{self, GateOutcome};
use mytunnel_edge::serve::{serve, ServeIntervals};

fn main() -> ExitCode {
    let matches = edge_cli::command().get_matches();
    let env_file = matches
        .get_one::<String>("env-file")
        .map(PathBuf::from)
        .unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mytunneld: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match matches.subcommand() {
        Some(("serve", sub)) => match runtime.block_on(run_serve(sub, &env_file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(report) => {
                eprintln!("{report:?}");
                ExitCode::from(2)
            }
        },
        Some(("ctl", sub)) => {
            let words: Vec<String> = sub
                .get_many::<String>("words")
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let output = match edge_cli::parse_ctl(&words, &env_file) {
                Ok(CtlInvocation::Help) => {
                    println!("{CTL_HELP}");
                    return ExitCode::SUCCESS;
                }
                Ok(CtlInvocation::Run(config, request)) => {
                    runtime.block_on(ctl::run(&config, request))
                }
                Err((error, exit_code)) => CtlOutput {
                    stdout: error.to_envelope_json(),
                    exit_code,
                },
            };
            print_ctl(&output)
        }
        Some(("gate", _)) => {
            let command =
                std::env::var_os("SSH_ORIGINAL_COMMAND").map(|c| c.to_string_lossy().into_owned());
            match runtime.block_on(gate::run(command.as_deref(), &env_file)) {
                GateOutcome::SessionClosed => ExitCode::SUCCESS,
                GateOutcome::Ctl(output) => print_ctl(&output),
            }
        }
        _ => ExitCode::from(2),
    }
}

fn print_ctl(output: &CtlOutput) -> ExitCode {
    println!("{}", output.stdout);
    ExitCode::from(u8::try_from(output.exit_code).unwrap_or(2))
}

async fn run_serve(matches: &clap::ArgMatches, env_file: &Path) -> miette::Result<()> {
    let (config, warnings) = edge_cli::load_config(edge_cli::serve_settings(matches), env_file)
        .map_err(|e| {
            miette!(
                help = "fix the setting, or see `mytunneld serve --help`",
                "{e}"
            )
        })?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    if config.base_domain.is_none() {
        tracing::warn!("no base domain configured: allocate will answer base_domain_missing (set MYTUNNEL_BASE_DOMAIN)");
    }
    let service = ctl::open_service(&config)
        .await
        .map_err(|e| miette!(help = e.hint.clone(), "{}", e.message))?;
    let intervals = ServeIntervals {
        cleanup: config.cleanup_interval,
        reconcile: config.reconcile_interval,
    };
    let shutdown = shutdown_signal().await?;
    serve(service, intervals, shutdown).await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() -> miette::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).into_diagnostic()?;
    let mut int = signal(SignalKind::interrupt()).into_diagnostic()?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
