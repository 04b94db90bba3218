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

/// The user's extra options as `-o` pairs: they come before ours, and ssh keeps the first
/// value it gets for an option, so theirs win.
pub(super) fn extra_option_args(config: &SshConfig) -> Vec<String> {
    config
        .extra_options
        .iter()
        .flat_map(|o| ["-o".to_owned(), o.clone()])
        .collect()
}

/// The user's extra options, then the cipher preference (if any).
fn option_args(config: &SshConfig, program: &SshProgram) -> Vec<String> {
    let mut args = extra_option_args(config);
    if let Some(cipher) = &program.cipher {
        args.push("-o".to_owned());
        args.push(cipher.clone());
    }
    args
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

/// `<flags…> -o <option>… -o ConnectTimeout=N [-o extra…] [-o Ciphers=…]`: how a
/// command line of an ssh of its own (no shared connection) begins.
fn one_shot_args(
    flags: &[&str],
    options: &[&str],
    config: &SshConfig,
    program: &SshProgram,
) -> Vec<String> {
    let mut args: Vec<String> = flags.iter().map(|flag| (*flag).to_owned()).collect();
    let options = options.iter().map(|option| (*option).to_owned());
    for option in options.chain([connect_timeout_option(config.connect_timeout)]) {
        args.push("-o".to_owned());
        args.push(option);
    }
    args.extend(option_args(config, program));
    args
}

/// The one remote command string of a per-command ctl call, POSIX-quoted.
pub(super) fn remote_command(config: &SshConfig, request: &CtlRequest) -> String {
    let mut words = vec![config.remote_bin.clone()];
    words.extend(ctl_words(config, request));
    shell_words::join(words)
}

/// `-T -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=N
/// [-o extra…] [-o Ciphers=…] -- <destination> <remote command>`
pub(super) fn per_command_args(
    config: &SshConfig,
    program: &SshProgram,
    request: &CtlRequest,
) -> Vec<String> {
    let mut args = one_shot_args(
        &["-T"],
        &["BatchMode=yes", "ControlMaster=no", "ControlPath=none"],
        config,
        program,
    );
    args.push("--".to_owned());
    args.push(config.destination.clone());
    args.push(remote_command(config, request));
    args
}

/// `-N -T -v -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none
/// -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o ConnectTimeout=N
/// [-o extra…] [-o Ciphers=…] -R <edge bind>:127.0.0.1:<local> -- <destination>`
pub(super) fn forward_args(
    config: &SshConfig,
    program: &SshProgram,
    spec: &ForwardSpec,
) -> Vec<String> {
    let mut args = one_shot_args(
        &["-N", "-T", "-v"],
        &[
            "ExitOnForwardFailure=yes",
            "ControlMaster=no",
            "ControlPath=none",
            "BatchMode=yes",
            "ServerAliveInterval=10",
            "ServerAliveCountMax=3",
        ],
        config,
        program,
    );
    args.push("-R".to_owned());
    // `127.0.0.1:PORT:…` or `/path/to.sock:…`: the bind target is already in ssh's form.
    args.push(format!("{}:127.0.0.1:{}", spec.edge_bind, spec.local_port));
    args.push("--".to_owned());
    args.push(config.destination.clone());
    args
}

/// `-tt -M -S <socket> -o ControlPersist=no -o BatchMode=yes -o ServerAliveInterval=10
/// -o ServerAliveCountMax=3 -o ConnectTimeout=N -E <log> [-o extra…] [-o Ciphers=…]
/// -- <destination>`: a pty (`-T` instead for [`Terminal::None`]) and no command, so the
/// gate holds the session. `ControlPersist=no` overrides a user's `ControlPersist yes`,
/// which would fork ssh into the background, away from its guard.
pub(super) fn master_args(
    config: &SshConfig,
    program: &SshProgram,
    terminal: Terminal,
    socket: &Path,
    log: &Path,
) -> Vec<OsString> {
    let tty = match terminal {
        Terminal::Pty => "-tt",
        Terminal::None => "-T",
    };
    let mut args: Vec<OsString> = vec![
        tty.into(),
        "-M".into(),
        "-S".into(),
        socket.into(),
        "-o".into(),
        "ControlPersist=no".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "ServerAliveInterval=10".into(),
        "-o".into(),
        "ServerAliveCountMax=3".into(),
        "-o".into(),
        connect_timeout_option(config.connect_timeout).into(),
        "-E".into(),
        log.into(),
    ];
    args.extend(option_args(config, program).into_iter().map(OsString::from));
    args.push("--".into());
    args.push(config.destination.clone().into());
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
