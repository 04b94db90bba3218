//! The shared master: one ControlMaster per transport, driven by the native mux.

use super::*;

pub(super) async fn launch_master(config: &SshConfig) -> Result<Master, TransportError> {
    let dir = private_dir().map_err(|e| {
        TransportError::Unreachable(format!(
            "cannot create a private directory for the ssh control socket: {e}"
        ))
    })?;
    let socket = dir.path().join("master");
    let log = dir.path().join("log");
    let stderr_path = dir.path().join("stderr");
    let stderr_file = std::fs::File::create(&stderr_path).map_err(|e| {
        TransportError::Unreachable(format!("cannot create {}: {e}", stderr_path.display()))
    })?;
    tracing::debug!(destination = %config.destination, socket = %socket.display(), "launching ssh master");
    let mut command = tokio::process::Command::new(&config.ssh_bin);
    command
        .args(master_args(config, &socket, &log))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file))
        .kill_on_drop(true);
    let diagnostics = || {
        let mut text = log_tail(&log);
        let stderr = log_tail(&stderr_path);
        if !stderr.is_empty() {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(&stderr);
        }
        text
    };
    let status = match tokio::time::timeout(config.ctl_timeout(), command.status()).await {
        Err(_) => {
            return Err(TransportError::Unreachable(format!(
                "ssh did not connect to {} within {}s{}",
                config.destination,
                config.ctl_timeout().as_secs(),
                with_tail("ssh said", &diagnostics()),
            )))
        }
        Ok(Err(e)) => return Err(spawn_error(&config.ssh_bin, &e)),
        Ok(Ok(status)) => status,
    };
    if !status.success() {
        return Err(TransportError::Unreachable(format!(
            "ssh to {} failed ({status}){}",
            config.destination,
            with_tail("ssh said", &diagnostics()),
        )));
    }
    let session = openssh::Session::resume_mux(
        socket.clone().into_boxed_path(),
        Some(log.clone().into_boxed_path()),
    );
    Ok(Master {
        socket,
        log,
        session,
        dir,
    })
}

/// A fresh 0700 directory under `$XDG_RUNTIME_DIR` (when set and writable) or the system
/// temporary directory. Refuses to go on unless the mode really is 0700.
pub(super) fn private_dir() -> std::io::Result<TempDir> {
    let make = |base: &Path| {
        tempfile::Builder::new()
            .prefix("mytunnel-ssh-")
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(base)
    };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir());
    let dir = match runtime.map(|base| make(&base)) {
        Some(Ok(dir)) => dir,
        _ => make(&std::env::temp_dir())?,
    };
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o700))?;
    let mode = std::fs::symlink_metadata(dir.path())?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        return Err(std::io::Error::other(format!(
            "{} has mode {mode:o}, not 700",
            dir.path().display()
        )));
    }
    Ok(dir)
}

/// `-M -S <socket> -f -N -o ControlPersist=yes -o BatchMode=yes -o ConnectTimeout=N
/// -E <log> [-o extra…] -- <destination>`
pub(super) fn master_args(config: &SshConfig, socket: &Path, log: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-M".into(),
        "-S".into(),
        socket.into(),
        "-f".into(),
        "-N".into(),
        "-o".into(),
        "ControlPersist=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        connect_timeout_option(config.connect_timeout).into(),
        "-E".into(),
        log.into(),
    ];
    args.extend(extra_option_args(config).into_iter().map(OsString::from));
    args.push("--".into());
    args.push(config.destination.clone().into());
    args
}

/// `-S <socket> -O exit -- <destination>`
pub(super) fn exit_args(socket: &Path, destination: &str) -> Vec<OsString> {
    vec![
        "-S".into(),
        socket.into(),
        "-O".into(),
        "exit".into(),
        "--".into(),
        destination.into(),
    ]
}

pub(super) fn map_mux_error(e: &openssh::Error, master_log: &str) -> TransportError {
    let text = error_chain(e);
    match e {
        // The remote program could not run (exit 127: not installed or not in PATH).
        openssh::Error::Remote(_) => {
            TransportError::Malformed(format!("the edge could not run the remote command: {text}"))
        }
        openssh::Error::InvalidCommand => {
            TransportError::Malformed(format!("the command cannot be sent: {text}"))
        }
        _ => TransportError::Unreachable(format!(
            "the shared ssh connection failed: {text}{}",
            with_tail("ssh log", master_log)
        )),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
