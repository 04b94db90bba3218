//! The machine and the programs a report names, the day and the commit of a run, and a
//! free port window for a run.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// Today (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    civil_date(i64::try_from(days).unwrap_or(0))
}

/// The date `days` after 1970-01-01, `YYYY-MM-DD` (the proleptic Gregorian calendar).
fn civil_date(days: i64) -> String {
    // Howard Hinnant's days-to-civil: eras of 400 years, from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The commit of the workspace at `root` (`git describe --always --dirty`), if git knows.
pub fn commit(root: &std::path::Path) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// A window of `len` consecutive loopback ports all free now, below the ephemeral range
/// (so outgoing connections do not take them meanwhile).
pub fn port_window(len: u16) -> Result<(u16, u16)> {
    let mut start = 10_000u16;
    while start + len < 32_000 {
        match (start..start + len).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
        {
            None => return Ok((start, start + len - 1)),
            Some(taken) => start = taken + 1,
        }
    }
    Err(format!("no window of {len} free ports in 10000..32000"))
}

pub(super) fn first_line(command: &mut Command) -> String {
    command
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "not found".to_owned())
}

pub(super) fn version_of(program: &str, args: &[&str]) -> String {
    match find_program(program) {
        Some(path) => first_line(Command::new(path).args(args)),
        None => "not installed".to_owned(),
    }
}

/// CPU, cores, RAM, kernel, OS and the versions of every program measured.
pub fn machine() -> Result<Vec<(String, String)>> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let aes = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .map_or("unknown", |flags| {
            if flags.split_whitespace().any(|f| f == "aes") {
                "yes"
            } else {
                "no"
            }
        });
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("unknown")
        .trim_matches('"')
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let wrk = version_of("wrk", &["-v"]);
    let wrk = wrk.split(" [").next().unwrap_or(&wrk).to_owned();
    Ok(vec![
        ("CPU".into(), cpu),
        ("Cores".into(), cores.to_string()),
        (
            "AES instructions (`aes` in the CPU flags)".into(),
            aes.to_owned(),
        ),
        ("RAM".into(), ram),
        ("Kernel".into(), kernel),
        ("OS".into(), os),
        ("Load average at the end (1/5/15 min)".into(), load),
        ("mytunnel".into(), env!("CARGO_PKG_VERSION").to_owned()),
        ("Caddy".into(), version_of("caddy", &["version"])),
        ("OpenSSH".into(), version_of("ssh", &["-V"])),
        ("bore".into(), version_of("bore", &["--version"])),
        ("rathole".into(), rathole_version()),
        ("wrk".into(), wrk),
        (
            "curl".into(),
            version_of("curl", &["--version"])
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ])
}

/// rathole prints its version on a `Build Version:` line.
pub(super) fn rathole_version() -> String {
    let Some(path) = find_program("rathole") else {
        return "not installed".to_owned();
    };
    Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Build Version:"))
                .map(|v| format!("rathole {}", v.trim()))
        })
        .unwrap_or_else(|| "rathole (version unknown)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(59), "1970-03-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_454), "2026-01-01");
        assert_eq!(civil_date(-1), "1969-12-31");
    }
}
