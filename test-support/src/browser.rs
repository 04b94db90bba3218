//! A real headless Chromium driven through WebDriver: the distribution's `chromedriver`
//! on a loopback port it picks, and a [`fantoccini`] client of it.
//!
//! Waits poll (every 50 ms, up to a timeout); nothing sleeps for a fixed time.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use fantoccini;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::process::{kill_all, Below};

/// How often the waits here look again.
const POLL: Duration = Duration::from_millis(50);

/// How long chromedriver may take to say which port it listens on.
const DRIVER_START: Duration = Duration::from_secs(20);

/// What to install when a browser binary is missing.
const INSTALL: &str = "`cargo xtask ci` installs it (apt-get install chromium chromium-driver)";

/// The Chromium binary: `$MYTUNNEL_CHROMIUM_BIN`, else `/usr/bin/chromium`, else
/// `chromium` on `PATH`.
pub fn chromium_binary() -> Result<PathBuf, String> {
    binary("MYTUNNEL_CHROMIUM_BIN", "chromium")
}

/// The chromedriver binary: `$MYTUNNEL_CHROMEDRIVER_BIN`, else `/usr/bin/chromedriver`,
/// else `chromedriver` on `PATH`.
pub fn chromedriver_binary() -> Result<PathBuf, String> {
    binary("MYTUNNEL_CHROMEDRIVER_BIN", "chromedriver")
}

fn binary(variable: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} is not installed: {INSTALL}"))
}

/// A headless Chromium session: `chromedriver --port=0` (it reports the port it got) and a
/// WebDriver client connected to it. [`close`](Browser::close) ends the session and the
/// driver; dropping it kills chromedriver and every process below it (the browser) by pid.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    // The browser's profile and chromedriver's log, removed when the session ends.
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (run as root: no sandbox, no
    /// `/dev/shm`), a 1280x800 window. A session that does not start is tried again with a
    /// fresh chromedriver, three times in all; the error then has chromedriver's log.
    pub async fn start() -> Result<Browser, String> {
        let chromium = chromium_binary()?;
        let chromedriver = chromedriver_binary()?;
        let mut failures = Vec::new();
        for _attempt in 0..3 {
            match Self::try_start(&chromium, &chromedriver).await {
                Ok(browser) => return Ok(browser),
                Err(e) => failures.push(e),
            }
        }
        Err(failures.join("\n---\n"))
    }

    async fn try_start(chromium: &Path, chromedriver: &Path) -> Result<Browser, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("chromedriver.log");
        // Waiting for its port blocks: not on the runtime's threads.
        let (binary, log_path) = (chromedriver.to_owned(), log.clone());
        let (mut driver, port) =
            tokio::task::spawn_blocking(move || start_driver(&binary, &log_path))
                .await
                .map_err(|e| format!("starting chromedriver: {e}"))??;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", dir.path().join("profile").display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            kill_all(&mut driver, Below::Everything);
            return Err("capabilities are not an object".to_owned());
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connected = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => Ok(Browser {
                client,
                driver,
                _dir: dir,
            }),
            Err(e) => {
                kill_all(&mut driver, Below::Everything);
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(format!(
                    "no Chromium session through {}: {e}; the end of its log:\n{}",
                    chromedriver.display(),
                    tail.join("\n")
                ))
            }
        }
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.client
            .goto(url)
            .await
            .map_err(|e| format!("opening {url}: {e}"))
    }

    /// The first element matching the CSS selector `css`, once there is one (at most
    /// `timeout`).
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element, String> {
        self.client
            .wait()
            .at_most(timeout)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| format!("no element `{css}` within {timeout:?}: {e}"))
    }

    /// The first element matching `css` whose text contains `text`, once there is one
    /// (at most `timeout`); the error names the texts last seen.
    pub async fn wait_for_text(
        &self,
        css: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Element, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let elements = self
                .client
                .find_all(Locator::Css(css))
                .await
                .map_err(|e| e.to_string())?;
            let mut seen = Vec::new();
            for element in elements {
                // An element replaced while it is read is looked for again.
                let Ok(content) = element.text().await else {
                    continue;
                };
                if content.contains(text) {
                    return Ok(element);
                }
                seen.push(content);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no `{css}` with text {text:?} within {timeout:?}; seen: {seen:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` in the page (a function body: `return …;`) and returns its result.
    pub async fn run(&self, script: &str) -> Result<serde_json::Value, String> {
        self.client
            .execute(script, Vec::new())
            .await
            .map_err(|e| format!("script failed: {e}"))
    }

    /// Saves a PNG screenshot of the window to `path` (its directory is created).
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("screenshot: {e}"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Ends the session (the browser quits), then stops chromedriver.
    pub async fn close(mut self) -> Result<(), String> {
        let ended = self.client.clone().close().await;
        kill_all(&mut self.driver, Below::Everything);
        ended.map_err(|e| format!("ending the session: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_all(&mut self.driver, Below::Everything);
    }
}

/// Polls `check` every 50 ms until it returns `Some`, an error, or `timeout` passes.
pub async fn until<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("not within {timeout:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts `chromedriver --port=0`, its log in `log`, and reads the port it reports from its output (the rest
/// of which is drained on a thread of its own until it exits).
fn start_driver(chromedriver: &Path, log: &Path) -> Result<(Child, u16), String> {
    let mut driver = Command::new(chromedriver)
        .arg("--port=0")
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", chromedriver.display()))?;
    let Some(stdout) = driver.stdout.take() else {
        kill_all(&mut driver, Below::Everything);
        return Err("chromedriver has no output to read".to_owned());
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(port) = reported_port(&line) {
                    sent = tx.send(Ok(port)).is_ok();
                } else {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(DRIVER_START) {
        Ok(Ok(port)) => Ok((driver, port)),
        Ok(Err(output)) => {
            kill_all(&mut driver, Below::Everything);
            Err(format!(
                "chromedriver exited without a port; its output:\n{output}"
            ))
        }
        Err(_) => {
            kill_all(&mut driver, Below::Everything);
            Err(format!(
                "chromedriver reported no port within {DRIVER_START:?}"
            ))
        }
    }
}

/// The port in chromedriver's `ChromeDriver was started successfully on port 38497.`
fn reported_port(line: &str) -> Option<u16> {
    let (_, after) = line.split_once("started successfully on port ")?;
    after.trim().trim_end_matches('.').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_port_is_read_from_chromedriver_output() {
        assert_eq!(
            reported_port("ChromeDriver was started successfully on port 38497."),
            Some(38497)
        );
        assert_eq!(
            reported_port("Starting ChromeDriver 156.0 (abc) on port 0"),
            None
        );
    }
}
