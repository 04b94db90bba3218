//! The edge's clients: `mytunneld ctl` and `mytunnel http` as the bench runs them.

use super::*;

impl Edge {
    /// `mytunneld --env-file <env> ctl <words>` (as root unless `as_user`).
    pub fn ctl_command(&self, words: &[&str], as_user: bool) -> Command {
        let mut command = mytunneld_command(&self.path("mytunneld"), &self.env_file(), None, "ctl");
        command
            .args(words)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if as_user {
            command.uid(self.user.uid).gid(self.user.gid);
        }
        command
    }

    /// Runs one ctl command; its JSON and the time from spawn to exit (stdout read).
    pub fn ctl(&self, words: &[&str], as_user: bool) -> Result<(Value, Duration)> {
        let mut command = self.ctl_command(words, as_user);
        let started = Instant::now();
        let output = command
            .output()
            .map_err(|e| format!("cannot run {}: {e}", describe(&command)))?;
        let elapsed = started.elapsed();
        let json = ctl_json(&command, &output)?;
        Ok((json, elapsed))
    }

    /// The ssh options of the tunnel user for this edge's sshd.
    pub fn ssh_options(&self) -> Result<Vec<String>> {
        let sshd = self
            .sshd
            .as_ref()
            .ok_or("this edge was started without sshd")?;
        let mut options = sshd.client_options(&self.key(), &self.path("known_hosts"));
        options.push("BatchMode=yes".to_owned());
        Ok(options)
    }

    /// The ssh destination of the tunnel user.
    pub fn destination(&self) -> String {
        format!("{USER}@127.0.0.1")
    }

    /// `mytunnel http <port> --edge … [extra]`, as root with HOME and TMPDIR in the edge.
    pub fn mytunnel_http(&self, local_port: u16, extra: &[&str]) -> Result<Command> {
        let port = local_port.to_string();
        let destination = self.destination();
        let mut args = vec!["http", port.as_str()];
        args.extend(extra);
        args.extend(["--edge", destination.as_str()]);
        Ok(client_command(
            &self.binaries.mytunnel,
            &args,
            &self.ssh_options()?,
            &self.path("home"),
            &self.path("tmp"),
        ))
    }
}
