//! `mytunneld`: parse, build config, call one library function, print, exit.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{miette, IntoDiagnostic};
use mytunnel_cli::edge_cli::{self, CtlInvocation, CTL_HELP};
use mytunnel_core::gate::GateDecision;
use mytunnel_core::protocol::ErrorCode;
use mytunnel_edge::authorized_keys;
use mytunnel_edge::config::LogFormat;
use mytunnel_edge::ctl::{self, CtlOutput};
use mytunnel_edge::gate;
use mytunnel_edge::serve::{self, ServeIntervals};

fn main() -> ExitCode {
    mytunnel_cli::diagnostics::install_error_style();
    // A key's forced command, read without clap: a held gate is one process per client
    // session on the edge.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if let Some(env_file) = edge_cli::gate_env_file(&args) {
        return run_gate(&env_file);
    }
    let matches = edge_cli::command().get_matches();
    let env_file = matches
        .get_one::<String>("env-file")
        .map(PathBuf::from)
        .unwrap_or_default();
    // Before any runtime: a held tunnel session is one gate per client session on the edge.
    if let Some(("gate", _)) = matches.subcommand() {
        return run_gate(&env_file);
    }
    // serve answers every ctl on the edge at once: a worker per core.
    let runtime = match runtime(matches.subcommand_name() == Some("serve")) {
        Ok(runtime) => runtime,
        Err(code) => return code,
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
                Ok(CtlInvocation::Run(config, request, warnings)) => {
                    for warning in warnings {
                        eprintln!("{warning}");
                    }
                    runtime.block_on(ctl::run(&config, request))
                }
                Err((error, exit_code)) => CtlOutput {
                    stdout: error.to_envelope_json(),
                    exit_code,
                },
            };
            print_ctl(&output)
        }
        Some(("authorized-keys", sub)) => {
            // The keys force this binary's own gate, wherever it is installed.
            let program = std::env::current_exe().unwrap_or_default();
            let invocation = match edge_cli::parse_authorized_keys(sub, &env_file, &program) {
                Ok(invocation) => invocation,
                Err(e) => {
                    eprintln!("mytunneld authorized-keys: {e}");
                    return ExitCode::from(2);
                }
            };
            let keys = authorized_keys::authorized_keys(
                &invocation.config,
                &invocation.user,
                &invocation.gate,
            );
            match keys {
                Ok(keys) => {
                    for warning in &keys.warnings {
                        eprintln!("mytunneld authorized-keys: {warning}");
                    }
                    print!("{}", keys.stdout);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mytunneld authorized-keys: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(("config", sub)) => match edge_cli::run_config(sub, &env_file) {
            Ok(output) => {
                print!("{}", output.stdout);
                ExitCode::from(output.exit_code)
            }
            Err(e) => {
                eprintln!("mytunneld config: {e}");
                ExitCode::from(2)
            }
        },
        _ => ExitCode::from(2),
    }
}

/// The async runtime: a worker per core for `serve`, one thread for the short-lived
/// commands.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .map_err(|e| {
        eprintln!("mytunneld: cannot start the async runtime: {e}");
        ExitCode::from(2)
    })
}

/// `mytunneld gate`: decided from `SSH_ORIGINAL_COMMAND` alone. A tunnel session is held
/// with no runtime and no configuration (and prints one line); only an allowed ctl request
/// reads the env file and starts a runtime.
fn run_gate(env_file: &Path) -> ExitCode {
    let command =
        std::env::var_os("SSH_ORIGINAL_COMMAND").map(|c| c.to_string_lossy().into_owned());
    match gate::decide(command.as_deref()) {
        Ok(GateDecision::TunnelSession) => {
            gate::hold_session();
            ExitCode::SUCCESS
        }
        Ok(GateDecision::Ctl(request)) => match runtime(false) {
            Ok(runtime) => print_ctl(&runtime.block_on(gate::run_ctl(request, env_file))),
            Err(code) => code,
        },
        Err(refusal) => print_ctl(&CtlOutput::error(&refusal)),
    }
}

fn print_ctl(output: &CtlOutput) -> ExitCode {
    println!("{}", output.stdout);
    ExitCode::from(u8::try_from(output.exit_code).unwrap_or(2))
}

/// How long `serve` waits before trying again to open a database it could not open.
const OPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

async fn run_serve(matches: &clap::ArgMatches, env_file: &Path) -> miette::Result<()> {
    let (config, warnings) = edge_cli::load_config(edge_cli::serve_settings(matches), env_file)
        .map_err(|e| {
            miette!(
                help = "fix the setting, or see `mytunneld serve --help`",
                "{e}"
            )
        })?;
    // Colour only for a person at a terminal: a file or the journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let shutdown = shutdown_signal().await?;
    tokio::pin!(shutdown);
    // A database that cannot be opened yet (locked by another process past the busy
    // timeout, a full disk) is waited for, as a failed pass is: the service keeps running.
    let opened = loop {
        match serve::open(&config).await {
            Ok(opened) => break opened,
            Err(e) if e.code == ErrorCode::DbError => {
                tracing::warn!(error = %e.message, "cannot open the lease database; retrying in {OPEN_RETRY:?}");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(OPEN_RETRY) => {}
                }
            }
            Err(e) => return Err(miette!(help = e.hint.clone(), "{}", e.message)),
        }
    };
    let intervals = ServeIntervals {
        cleanup: config.cleanup_interval,
        reconcile: config.reconcile_interval,
    };
    serve::serve_with_control(opened, intervals, shutdown).await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT, and logs which.
async fn shutdown_signal() -> miette::Result<impl std::future::Future<Output = ()>> {
    let stop = mytunnel_cli::shutdown::shutdown_signal().into_diagnostic()?;
    Ok(async move {
        let signal = stop.await;
        tracing::info!("{}: shutting down", signal.name());
    })
}
