//! Where a Weft process's logs go: stderr, as text (coloured on a
//! terminal) or one JSON object per line, filtered by a `tracing` filter
//! such as `info` or `warn,weft_runtime=debug`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable text, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to stderr with `filter` in `format`. A process that has a logger
/// already (a test harness, an earlier call) keeps it. A malformed filter
/// is an error that quotes it.
pub fn install(filter: &str, format: Format) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Json => builder.json().try_init(),
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    Ok(())
}

/// The filter of the `WEFT_LOG` variable, else `default`.
pub fn filter_from_env(default: &str) -> String {
    std::env::var("WEFT_LOG").unwrap_or_else(|_| default.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_filter_is_named() {
        let error = install("weft=[", Format::Text).unwrap_err();
        assert!(error.contains("\"weft=[\""), "{error}");
    }
}
