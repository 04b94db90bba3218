//! The local probe: before allocating anything, `GET http://127.0.0.1:<port>/`.
//!
//! Unreachable → no lease is allocated. An empty body or a status of 400 or more is only
//! a warning: the app may serve its real pages elsewhere.

use std::time::Duration;

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A non-empty answer with a status below 400.
    Healthy {
        /// The HTTP status.
        status: u16,
    },
    /// An answer, but an odd one: worth a warning, not a refusal.
    Suspicious {
        /// What was odd.
        warning: String,
    },
}

/// The local app did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nothing answers on http://127.0.0.1:{port}/ ({detail})")]
pub struct ProbeError {
    /// The port probed.
    pub port: u16,
    /// What failed.
    pub detail: String,
}

impl ProbeError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        format!(
            "start your app on port {} first (e.g. `python3 -m http.server {}`), or check the port number",
            self.port, self.port
        )
    }
}

/// Probes the local app within `timeout`.
pub async fn probe_local(port: u16, timeout: Duration) -> Result<ProbeOutcome, ProbeError> {
    let fail = |detail: String| ProbeError { port, detail };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .map_err(|e| {
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                detail = cause.to_string();
                source = cause.source();
            }
            fail(detail)
        })?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
    if status >= 400 {
        return Ok(ProbeOutcome::Suspicious {
            warning: format!("http://127.0.0.1:{port}/ answered HTTP {status}; publishing anyway"),
        });
    }
    if body.is_empty() {
        return Ok(ProbeOutcome::Suspicious {
            warning: format!("http://127.0.0.1:{port}/ answered HTTP {status} with an empty body; publishing anyway"),
        });
    }
    Ok(ProbeOutcome::Healthy { status })
}
