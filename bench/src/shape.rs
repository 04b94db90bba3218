//! What a client runs on the wire, observed rather than assumed: the command lines of its
//! ssh processes and the SSH connections sshd holds for it. The report names each path's
//! hops from this, so it stays true whichever client was built.

use std::path::Path;

use mytunnel_test_support::cmdline;

use crate::proctable::{established_to, listens_on_tcp, ProcTable};

/// A client's ssh processes and the SSH connections at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The arguments (after the program name) of each ssh process.
    pub ssh: Vec<Vec<String>>,
    /// Established TCP connections to the edge's sshd port.
    pub connections: usize,
    /// Whether the client process listens on TCP: its relay, where the forward ends
    /// before the app.
    pub relay: bool,
}

/// How the client carries its forward, read from its ssh command lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A process per forward: `ssh -N -R`.
    ForwardProcess,
    /// Requested over the mux of one interactive (`-t`) master connection.
    InteractiveMux,
    /// Requested over the mux of a master connection with no terminal.
    Mux,
    /// No ssh process of the client was seen.
    Unknown,
}

impl Observed {
    /// The ssh processes below `roots` (the client) and every ssh process whose command
    /// line names `key` (a master that daemonized has left the client's tree), with the
    /// connections to `sshd_port`.
    pub fn of(roots: &[i32], key: &Path, sshd_port: u16) -> Observed {
        let table = ProcTable::snapshot();
        let mut pids = table.named_with_argument("ssh", &key.to_string_lossy());
        pids.extend(
            table
                .trees(roots)
                .into_iter()
                .filter(|pid| table.name(*pid) == "ssh"),
        );
        Observed {
            ssh: pids
                .into_iter()
                .map(|pid| cmdline(pid).into_iter().skip(1).collect())
                .filter(|args: &Vec<String>| !is_mux_command(args))
                .collect(),
            connections: established_to(sshd_port),
            relay: roots.iter().any(|pid| listens_on_tcp(*pid)),
        }
    }

    /// How the forward is carried.
    pub fn carrier(&self) -> Carrier {
        if self.ssh.iter().any(|args| has_flag(args, 'R')) {
            Carrier::ForwardProcess
        } else if let Some(master) = self.ssh.iter().find(|args| is_master(args)) {
            if has_flag(master, 't') {
                Carrier::InteractiveMux
            } else {
                Carrier::Mux
            }
        } else {
            Carrier::Unknown
        }
    }

    /// How the client carries the forward.
    pub fn carrier_text(&self) -> &'static str {
        match self.carrier() {
            Carrier::ForwardProcess => "ssh -N -R (a process and a connection per forward)",
            Carrier::InteractiveMux => "ssh (one interactive connection, forward over its mux)",
            Carrier::Mux => "ssh (one connection, forward over its mux)",
            Carrier::Unknown => "ssh",
        }
    }

    /// The client's hops in a path description: ssh, then its local end when it has one
    /// (the HTTP proxy, or with `--raw` the byte relay: either is a loopback listener).
    pub fn hop(&self) -> String {
        if self.relay {
            format!(
                "{} → the client's local end (a loopback listener in its process: its HTTP \
                 proxy, or with `--raw` its byte relay)",
                self.carrier_text()
            )
        } else {
            self.carrier_text().to_owned()
        }
    }

    /// `2 ssh processes, 2 SSH connections`.
    pub fn summary(&self) -> String {
        format!(
            "{} ssh process{}, {} SSH connection{}",
            self.ssh.len(),
            if self.ssh.len() == 1 { "" } else { "es" },
            self.connections,
            if self.connections == 1 { "" } else { "s" }
        )
    }

    /// The cipher list one of its ssh command lines gives (`-o Ciphers=…` or `-c …`; ssh
    /// keeps the first it reads), if any.
    pub fn ciphers(&self) -> Option<String> {
        self.ssh.iter().find_map(|args| cipher_value(args))
    }
}

/// The first `-c LIST`, `-cLIST`, `-o Ciphers=LIST` or `-oCiphers=LIST` in `args`.
fn cipher_value(args: &[String]) -> Option<String> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            return None;
        }
        let (flag, rest) = match word.strip_prefix('-') {
            Some(rest) if rest.starts_with('c') || rest.starts_with('o') => rest.split_at(1),
            _ => continue,
        };
        let value = if rest.is_empty() {
            words.next().cloned()
        } else {
            Some(rest.to_owned())
        };
        match (flag, value) {
            ("c", Some(list)) => return Some(list),
            ("o", Some(option)) => {
                if let Some((k, v)) = option.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("Ciphers") {
                        return Some(v.trim().to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// `-o Key=value` (or `-oKey=value`) in `args`, case-insensitive on the key as ssh is.
fn option_value(args: &[String], key: &str) -> Option<String> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let option = if word == "-o" {
            words.next().map(String::as_str)
        } else {
            word.strip_prefix("-o")
        };
        if let Some((k, v)) = option.and_then(|o| o.split_once('=')) {
            if k.trim().eq_ignore_ascii_case(key) {
                return Some(v.trim().to_owned());
            }
        }
    }
    None
}

/// Whether a cluster of short flags (`-NT`, `-tt`, `-R`, `-R127.0.0.1:…`) in `args` holds
/// `flag`. Words after `-o`, `-S`, `-E` … are values, not flags.
fn has_flag(args: &[String], flag: char) -> bool {
    // ssh's flags that take a value: their value may be the next word.
    const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            return false;
        }
        let Some(cluster) = word.strip_prefix('-') else {
            continue;
        };
        for (i, c) in cluster.char_indices() {
            if c == flag {
                return true;
            }
            if WITH_VALUE.contains(c) {
                // The rest of the word, or else the next word, is its value.
                if cluster.len() == i + c.len_utf8() {
                    words.next();
                }
                break;
            }
        }
    }
    false
}

/// A master: `-M`, or `-o ControlMaster=yes|auto|…` other than `no`.
fn is_master(args: &[String]) -> bool {
    has_flag(args, 'M')
        || option_value(args, "ControlMaster").is_some_and(|v| !v.eq_ignore_ascii_case("no"))
}

/// A mux client asking a master something (`-O check`, `-O exit`): not a connection.
fn is_mux_command(args: &[String]) -> bool {
    has_flag(args, 'O')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn reads_how_a_forward_is_carried() {
        let plain = Observed {
            ssh: vec![
                words("-M -S /t/master -f -N -o ControlPersist=yes -o Port=2222 -- u@h"),
                words("-v -N -T -o ExitOnForwardFailure=yes -R /s/x.sock:127.0.0.1:3000 -- u@h"),
            ],
            connections: 2,
            relay: false,
        };
        assert_eq!(plain.carrier(), Carrier::ForwardProcess);
        assert_eq!(plain.summary(), "2 ssh processes, 2 SSH connections");
        let interactive = Observed {
            ssh: vec![words(
                "-tt -M -S /t/m -o Ciphers=aes128-gcm@openssh.com -- u@h",
            )],
            connections: 1,
            relay: true,
        };
        assert_eq!(interactive.carrier(), Carrier::InteractiveMux);
        assert_eq!(
            interactive.hop(),
            "ssh (one interactive connection, forward over its mux) → the client's local end (a \
             loopback listener in its process: its HTTP proxy, or with `--raw` its byte relay)"
        );
        assert_eq!(
            interactive.ciphers().as_deref(),
            Some("aes128-gcm@openssh.com")
        );
        assert_eq!(interactive.summary(), "1 ssh process, 1 SSH connection");
        let quiet = Observed {
            ssh: vec![words("-N -o ControlMaster=yes -oControlPath=/t/m -- u@h")],
            connections: 1,
            relay: false,
        };
        assert_eq!(quiet.carrier(), Carrier::Mux);
        assert_eq!(quiet.hop(), "ssh (one connection, forward over its mux)");
        assert_eq!(quiet.ciphers(), None);
        assert_eq!(Observed::default().carrier(), Carrier::Unknown);
    }

    #[test]
    fn values_are_not_flags() {
        // `-E /tmp/R` and `-S /x/M` hold an R and an M in values, not flags; `-p 22`.
        assert!(!has_flag(&words("-E /tmp/R -S /x/M -p 22 -- R"), 'R'));
        assert!(!has_flag(&words("-S/x/-M -- u@h"), 'M'));
        assert!(has_flag(&words("-NTR /s:127.0.0.1:1 u@h"), 'R'));
        assert!(has_flag(&words("-R/s:127.0.0.1:1 u@h"), 'R'));
        assert!(is_mux_command(&words("-S /t/m -O exit u@h")));
        assert!(!is_master(&words("-o ControlMaster=no -T u@h")));
        assert_eq!(
            cipher_value(&words(
                "-o Port=1 -c aes128-gcm@openssh.com -o Ciphers=x -- u@h"
            )),
            Some("aes128-gcm@openssh.com".to_owned())
        );
        assert_eq!(
            cipher_value(&words("-oCiphers=y -- u@h")),
            Some("y".to_owned())
        );
        assert_eq!(cipher_value(&words("-N -- u@h -c z")), None);
        assert_eq!(
            option_value(
                &words("-o ciphers=chacha20-poly1305@openssh.com"),
                "Ciphers"
            ),
            Some("chacha20-poly1305@openssh.com".to_owned())
        );
    }
}
