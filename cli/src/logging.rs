//! Where the `weft` command's logs go: stderr, as text (coloured on a
//! terminal) or one JSON object per line, filtered by `log.level`.

use anyhow::{Result, anyhow};
use weft::logging::{self, Format};

use crate::config::Settings;

/// Installs the logger the settings ask for (`log.level`, `log.format`).
pub fn install(settings: &Settings) -> Result<()> {
    let level = settings.get("log.level").unwrap_or_else(|| "warn".into());
    let format = match settings.get("log.format").as_deref() {
        Some("json") => Format::Json,
        _ => Format::Text,
    };
    logging::install(&level, format).map_err(|e| anyhow!("log.level: {e}"))
}
