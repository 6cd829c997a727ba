//! Where the `weft` command's logs go: stderr, as text (coloured on a
//! terminal) or one JSON object per line, filtered by `log.level`.

use anyhow::{Result, anyhow};
use tracing_subscriber::EnvFilter;

use crate::config::Settings;

/// Installs the logger the settings ask for (`log.level`, `log.format`).
pub fn install(settings: &Settings) -> Result<()> {
    use std::io::IsTerminal;
    let level = settings.get("log.level").unwrap_or_else(|| "warn".into());
    let filter = EnvFilter::try_new(&level).map_err(|e| anyhow!("log.level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A logger set already (a test harness) stays.
    let _ = match settings.get("log.format").as_deref() {
        Some("json") => builder.json().try_init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    Ok(())
}
