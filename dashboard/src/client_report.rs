//! `client.performance_report(path)`: a performance report of a block of
//! work, recorded by a client over its own connection to the scheduler.
//!
//! The [`Client`] lives in `weft-runtime`, which renders nothing; the
//! renderer lives here. So the call is an extension trait,
//! [`PerformanceReports`], implemented here for [`Client`] (the `weft`
//! facade re-exports it): the runtime records the scheduler's task stream
//! ([`Client::record`]), this crate turns it into the report file.
//!
//! ```text
//! use weft_dashboard::PerformanceReports;
//! let report = client.performance_report("report.html").await?;
//! // ... work ...
//! report.finish().await?; // writes report.html
//! ```

use std::path::{Path, PathBuf};

use weft_runtime::recording::{DEFAULT_MAX_EVENTS, Recording};
use weft_runtime::{Client, RuntimeError};

use crate::report::Report;

/// What can go wrong recording a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The scheduler did not stream its events (it records none: started
    /// without a dashboard), or the connection failed.
    #[error("cannot record a performance report: {0}")]
    Recording(#[from] RuntimeError),
    /// The file could not be written.
    #[error("cannot write the performance report to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Performance reports of blocks of work; see the module docs.
pub trait PerformanceReports {
    /// Starts recording what the cluster does; [`ClientReport::finish`]
    /// writes the report to `path` (one standalone HTML file). Work the
    /// scheduler finished before this call is not in it.
    fn performance_report(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<ClientReport, ReportError>> + Send;
}

impl PerformanceReports for Client {
    fn performance_report(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<ClientReport, ReportError>> + Send {
        let (client, path) = (self.clone(), path.as_ref().to_path_buf());
        async move {
            Ok(ClientReport {
                recording: client.record(DEFAULT_MAX_EVENTS).await?,
                path,
            })
        }
    }
}

/// A report being recorded.
pub struct ClientReport {
    recording: Recording,
    path: PathBuf,
}

impl ClientReport {
    /// Stops recording, writes the report file, and returns the report.
    pub async fn finish(self) -> Result<Report, ReportError> {
        let report = Report::recorded(self.recording.finish().await?);
        report.write(&self.path).map_err(|source| ReportError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(report)
    }
}
