//! Argument building for ssh command lines (pure).

use super::*;

/// `ConnectTimeout=N`, N in whole seconds rounded up, at least 1.
pub(super) fn connect_timeout_option(timeout: Duration) -> String {
    let secs = timeout
        .as_secs()
        .saturating_add(u64::from(timeout.subsec_nanos() > 0))
        .max(1);
    format!("ConnectTimeout={secs}")
}

pub(super) fn extra_option_args(config: &SshConfig) -> Vec<String> {
    config
        .extra_options
        .iter()
        .flat_map(|o| ["-o".to_owned(), o.clone()])
        .collect()
}

/// The words after the remote program: `ctl <verb> [flags]` plus the overrides.
pub(super) fn ctl_words(config: &SshConfig, request: &CtlRequest) -> Vec<String> {
    let mut words = request.to_args();
    for (flag, value) in &config.remote_overrides {
        words.push(flag.clone());
        words.push(value.clone());
    }
    words
}

/// The one remote command string of a per-command ctl call, POSIX-quoted.
pub(super) fn remote_command(config: &SshConfig, request: &CtlRequest) -> String {
    let mut words = vec![config.remote_bin.clone()];
    words.extend(ctl_words(config, request));
    shell_words::join(words)
}

/// `-T -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=N
/// [-o extra…] -- <destination> <remote command>`
pub(super) fn per_command_args(config: &SshConfig, request: &CtlRequest) -> Vec<String> {
    let mut args: Vec<String> = [
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(connect_timeout_option(config.connect_timeout));
    args.extend(extra_option_args(config));
    args.push("--".to_owned());
    args.push(config.destination.clone());
    args.push(remote_command(config, request));
    args
}

/// `-N -T -v -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none
/// -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o ConnectTimeout=N
/// [-o extra…] -R 127.0.0.1:<edge>:127.0.0.1:<local> -- <destination>`
pub(super) fn forward_args(config: &SshConfig, spec: &ForwardSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "-N",
        "-T",
        "-v",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(connect_timeout_option(config.connect_timeout));
    args.extend(extra_option_args(config));
    args.push("-R".to_owned());
    // `127.0.0.1:PORT:…` or `/path/to.sock:…`: the bind target is already in ssh's form.
    args.push(format!("{}:127.0.0.1:{}", spec.edge_bind, spec.local_port));
    args.push("--".to_owned());
    args.push(config.destination.clone());
    args
}

/// An empty destination, or one ssh would read as an option, is refused up front.
pub(super) fn check_destination(destination: &str) -> Result<(), TransportError> {
    if destination.trim().is_empty() {
        return Err(TransportError::Unreachable(
            "no ssh destination given".to_owned(),
        ));
    }
    if destination.starts_with('-') || destination.chars().any(char::is_control) {
        return Err(TransportError::Unreachable(format!(
            "{:?} is not an ssh destination",
            clean_text(destination)
        )));
    }
    Ok(())
}
