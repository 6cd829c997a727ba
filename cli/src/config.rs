//! Settings of the `weft` command, from four layers, each over the one
//! before: built-in defaults, `weft.toml` (`--config`, else `WEFT_CONFIG`,
//! else `weft/weft.toml` under the user's config directory when it exists),
//! `WEFT_*` variables, then flags. Every value is checked when it is read
//! in, and an error names the key and where it came from; unknown keys in a
//! file are errors that name the key and the file. `weft config show`
//! prints the effective values and the source of each.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
pub use weft_gpu::units::parse_duration;
use weft_gpu::units::{parse_bool, parse_size};

/// What a setting holds, which says how its text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Bytes: `8GiB`, `500MB`, `4096`.
    Size,
    /// A duration: `30s`, `500ms`, `2m`, or bare seconds.
    Duration,
    /// A switch: `true`/`false` and the like.
    Switch,
    /// A whole number (empty: chosen from the machine).
    Count,
    /// A fraction of a limit, between 0 and 1.
    Fraction,
    /// `text` or `json`.
    LogFormat,
    /// Any text (an address, a path, a log filter); empty is unset.
    Text,
}

/// One setting: its key in `weft.toml` (`section.name`), the variable that
/// sets it, what it holds, its default and what it does.
struct Key {
    name: &'static str,
    env: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
}

const fn key(name: &'static str, env: &'static str, kind: Kind, default: &'static str, help: &'static str) -> Key {
    Key {
        name,
        env,
        kind,
        default,
        help,
    }
}

/// Every setting there is.
const KEYS: &[Key] = &[
    key(
        "scheduler.listen",
        "WEFT_SCHEDULER_LISTEN",
        Kind::Text,
        "tcp://0.0.0.0:8786",
        "address `weft scheduler` listens on",
    ),
    key(
        "scheduler.heartbeat-timeout",
        "WEFT_SCHEDULER_HEARTBEAT_TIMEOUT",
        Kind::Duration,
        "10s",
        "a worker silent this long is declared dead",
    ),
    key(
        "scheduler.balance-interval",
        "WEFT_SCHEDULER_BALANCE_INTERVAL",
        Kind::Duration,
        "100ms",
        "how often idle workers steal queued tasks",
    ),
    key(
        "local.listen",
        "WEFT_LOCAL_LISTEN",
        Kind::Text,
        "tcp://127.0.0.1:8786",
        "address of the scheduler `weft local` starts",
    ),
    key(
        "dashboard.enabled",
        "WEFT_DASHBOARD_ENABLED",
        Kind::Switch,
        "true",
        "serve the dashboard beside the scheduler",
    ),
    key(
        "dashboard.address",
        "WEFT_DASHBOARD_ADDRESS",
        Kind::Text,
        "",
        "HOST:PORT of the dashboard (empty: :8787, or a free port when taken)",
    ),
    key(
        "worker.nthreads",
        "WEFT_WORKER_NTHREADS",
        Kind::Count,
        "",
        "compute threads per worker (empty: every core)",
    ),
    key(
        "worker.memory-limit",
        "WEFT_WORKER_MEMORY_LIMIT",
        Kind::Size,
        "",
        "memory for results (empty: the machine's memory; 0: no limit)",
    ),
    key(
        "worker.memory-target",
        "WEFT_WORKER_MEMORY_TARGET",
        Kind::Fraction,
        "0.6",
        "past this share of the limit, results spill to disk",
    ),
    key(
        "worker.memory-spill",
        "WEFT_WORKER_MEMORY_SPILL",
        Kind::Fraction,
        "0.7",
        "past this share of the process's memory, results spill",
    ),
    key(
        "worker.memory-pause",
        "WEFT_WORKER_MEMORY_PAUSE",
        Kind::Fraction,
        "0.8",
        "past this share, the worker takes no new tasks",
    ),
    key(
        "worker.memory-terminate",
        "WEFT_WORKER_MEMORY_TERMINATE",
        Kind::Fraction,
        "0.95",
        "past this share, the worker restarts",
    ),
    key(
        "worker.device-memory-limit",
        "WEFT_WORKER_DEVICE_MEMORY_LIMIT",
        Kind::Size,
        "",
        "device memory for results (empty: 80% of the GPU's)",
    ),
    key(
        "worker.spill-dir",
        "WEFT_WORKER_SPILL_DIR",
        Kind::Text,
        "",
        "where results spill (empty: the system's temporary directory)",
    ),
    key(
        "worker.listen",
        "WEFT_WORKER_LISTEN",
        Kind::Text,
        "",
        "address a worker serves results on (empty: every interface, any port)",
    ),
    key(
        "worker.contact-address",
        "WEFT_WORKER_CONTACT_ADDRESS",
        Kind::Text,
        "",
        "address given to peers instead of the one found",
    ),
    key(
        "worker.dashboard",
        "WEFT_WORKER_DASHBOARD",
        Kind::Switch,
        "true",
        "serve the worker's own status page and /metrics",
    ),
    key(
        "worker.dashboard-address",
        "WEFT_WORKER_DASHBOARD_ADDRESS",
        Kind::Text,
        "",
        "HOST:PORT of the worker's page (empty: a free port on the host it listens on)",
    ),
    key(
        "worker.heartbeat",
        "WEFT_WORKER_HEARTBEAT",
        Kind::Duration,
        "1s",
        "how often a worker reports to the scheduler",
    ),
    key(
        "worker.reconnect-timeout",
        "WEFT_WORKER_RECONNECT_TIMEOUT",
        Kind::Duration,
        "60s",
        "a worker gives up when the scheduler stays away this long",
    ),
    key(
        "transport.connect-timeout",
        "WEFT_TRANSPORT_CONNECT_TIMEOUT",
        Kind::Duration,
        "30s",
        "how long one connection attempt may take",
    ),
    key(
        "transport.handshake-timeout",
        "WEFT_TRANSPORT_HANDSHAKE_TIMEOUT",
        Kind::Duration,
        "10s",
        "how long the handshake of a new connection may take",
    ),
    key(
        "transport.io-timeout",
        "WEFT_TRANSPORT_IO_TIMEOUT",
        Kind::Duration,
        "60s",
        "a connection that moves nothing this long is closed",
    ),
    key(
        "transport.max-frame",
        "WEFT_TRANSPORT_MAX_FRAME",
        Kind::Size,
        "8GiB",
        "largest frame accepted",
    ),
    key(
        "transport.max-message",
        "WEFT_TRANSPORT_MAX_MESSAGE",
        Kind::Size,
        "16GiB",
        "largest message accepted (header and frames)",
    ),
    key(
        "transport.max-connections",
        "WEFT_TRANSPORT_MAX_CONNECTIONS",
        Kind::Count,
        "4096",
        "connections a listener keeps at once",
    ),
    key(
        "transport.same-host-shm",
        "WEFT_SAME_HOST_SHM",
        Kind::Switch,
        "true",
        "peers on one host map large host frames through shared memory",
    ),
    key(
        "security.tls-ca-file",
        "WEFT_SECURITY_TLS_CA_FILE",
        Kind::Text,
        "",
        "CA certificate (PEM); with it, TLS is mutual",
    ),
    key(
        "security.tls-cert",
        "WEFT_SECURITY_TLS_CERT",
        Kind::Text,
        "",
        "this node's certificate (PEM)",
    ),
    key(
        "security.tls-key",
        "WEFT_SECURITY_TLS_KEY",
        Kind::Text,
        "",
        "the private key of tls-cert (PEM)",
    ),
    key(
        "security.token-file",
        "WEFT_SECURITY_TOKEN_FILE",
        Kind::Text,
        "",
        "file holding the cluster's shared secret (else WEFT_TOKEN)",
    ),
    key(
        "log.level",
        "WEFT_LOG",
        Kind::Text,
        "warn,weft=info",
        "log filter, such as `info` or `warn,weft_runtime=debug`",
    ),
    key(
        "log.format",
        "WEFT_LOG_FORMAT",
        Kind::LogFormat,
        "text",
        "`text`, or `json` for one JSON object per line",
    ),
];

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built in.
    Default,
    /// A `weft.toml`.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Env(name) => write!(f, "${name}"),
            Source::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// The effective settings, each with its source.
pub struct Settings {
    values: BTreeMap<&'static str, (String, Source)>,
}

fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn check(key: &Key, text: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return match key.kind {
            Kind::Duration | Kind::Switch | Kind::Fraction | Kind::LogFormat => Err("is empty".into()),
            Kind::Size | Kind::Count | Kind::Text => Ok(()),
        };
    }
    match key.kind {
        Kind::Size => parse_size(text).map(drop),
        Kind::Duration => parse_duration(text).map(drop),
        Kind::Switch => parse_bool(text).map(drop),
        Kind::Count => text
            .parse::<usize>()
            .map(drop)
            .map_err(|_| format!("{text:?} is not a whole number")),
        Kind::Fraction => match text.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Ok(()),
            _ => Err(format!("{text:?} is not a fraction between 0 and 1")),
        },
        Kind::LogFormat => match text {
            "text" | "json" => Ok(()),
            _ => Err(format!("{text:?} is not a log format; use text or json")),
        },
        Kind::Text => Ok(()),
    }
}

/// The config file to read: `--config`, else `WEFT_CONFIG` (both must
/// exist), else the user's `weft/weft.toml` if there is one.
fn config_file(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<PathBuf>> {
    if let Some(path) = flag {
        anyhow::ensure!(path.exists(), "--config {}: no such file", path.display());
        return Ok(Some(path.to_path_buf()));
    }
    if let Some(path) = env("WEFT_CONFIG").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.exists(), "WEFT_CONFIG={}: no such file", path.display());
        return Ok(Some(path));
    }
    let dir = env("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")));
    Ok(dir.map(|d| d.join("weft").join("weft.toml")).filter(|p| p.exists()))
}

impl Settings {
    /// Defaults, the config file, then the `WEFT_*` variables of this
    /// process.
    pub fn load(config: Option<&Path>) -> Result<Self> {
        Self::load_with(config, &|name| std::env::var(name).ok())
    }

    /// [`load`](Self::load) with the environment given, for tests.
    fn load_with(config: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut values: BTreeMap<&'static str, (String, Source)> = KEYS
            .iter()
            .map(|k| (k.name, (k.default.to_string(), Source::Default)))
            .collect();
        if let Some(path) = config_file(config, env)? {
            for (key, text) in read_file(&path)? {
                values.insert(key.name, (text, Source::File(path.clone())));
            }
        }
        for key in KEYS {
            if let Some(text) = env(key.env) {
                check(key, &text).map_err(|e| anyhow::anyhow!("{}: {e}", key.env))?;
                values.insert(key.name, (text, Source::Env(key.env)));
            }
        }
        Ok(Settings { values })
    }

    /// Sets `key` from a flag, when the flag was given.
    pub fn flag(&mut self, key: &'static str, flag: &str, value: Option<impl ToString>) -> Result<()> {
        let Some(value) = value else { return Ok(()) };
        let text = value.to_string();
        let spec = find(key).with_context(|| format!("no setting {key}"))?;
        check(spec, &text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        self.values.insert(key, (text, Source::Flag(flag.to_string())));
        Ok(())
    }

    fn text(&self, key: &str) -> &str {
        self.values.get(key).map_or("", |(text, _)| text.trim())
    }

    /// A text setting; `None` when empty.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(self.text(key).to_string()).filter(|t| !t.is_empty())
    }

    /// A size setting; `None` when empty.
    pub fn size(&self, key: &str) -> Option<u64> {
        parse_size(self.text(key)).ok()
    }

    /// A whole-number setting; `None` when empty.
    pub fn count(&self, key: &str) -> Option<usize> {
        self.text(key).parse().ok()
    }

    /// A duration setting (checked when it was read in).
    pub fn duration(&self, key: &str) -> Duration {
        parse_duration(self.text(key)).unwrap_or_default()
    }

    /// A fraction setting (checked when it was read in).
    pub fn fraction(&self, key: &str) -> f64 {
        self.text(key).parse().unwrap_or_default()
    }

    /// A switch setting (checked when it was read in).
    pub fn switch(&self, key: &str) -> bool {
        parse_bool(self.text(key)).unwrap_or_default()
    }

    /// `weft config show`: every setting, its value and where it came from.
    pub fn show(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for key in KEYS {
            let (name_section, name) = key.name.split_once('.').unwrap_or(("", key.name));
            if name_section != section {
                section = name_section;
                out.push_str(&format!("{}[{section}]\n", if out.is_empty() { "" } else { "\n" }));
            }
            let (value, source) = &self.values[key.name];
            let shown = format!("{name} = {value:?}");
            out.push_str(&format!("{shown:<48} # {source}; {} ({})\n", key.help, key.env));
        }
        out
    }
}

/// The settings of one file, each checked; unknown keys are errors.
fn read_file(path: &Path) -> Result<Vec<(&'static Key, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut found = Vec::new();
    for (section, entries) in &table {
        let Some(entries) = entries.as_table() else {
            bail!(
                "{}: `{section}` must be inside a section such as [worker] (known keys: {})",
                path.display(),
                known()
            );
        };
        for (name, value) in entries {
            let full = format!("{section}.{name}");
            let Some(key) = find(&full) else {
                bail!("{}: unknown key `{full}` (known keys: {})", path.display(), known());
            };
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!("{}: `{full}` is a {}, not a value", path.display(), other.type_str()),
            };
            check(key, &text).map_err(|e| anyhow::anyhow!("{}: `{full}` {e}", path.display()))?;
            found.push((key, text));
        }
    }
    Ok(found)
}

fn known() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn layers_override_in_order_and_say_where_each_value_came_from() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("weft.toml");
        std::fs::write(
            &path,
            "[worker]\nmemory-limit = \"8GiB\"\nnthreads = 4\n[scheduler]\nheartbeat-timeout = \"30s\"\n",
        )
        .expect("written");
        let mut s = Settings::load_with(Some(&path), &env(&[("WEFT_WORKER_NTHREADS", "6")])).expect("loads");
        assert_eq!(s.size("worker.memory-limit"), Some(8 << 30));
        assert_eq!(s.count("worker.nthreads"), Some(6), "the variable beats the file");
        assert_eq!(s.duration("scheduler.heartbeat-timeout"), Duration::from_secs(30));
        assert_eq!(s.fraction("worker.memory-pause"), 0.8, "a default");
        s.flag("worker.nthreads", "--nthreads", Some(2)).expect("a flag");
        assert_eq!(s.count("worker.nthreads"), Some(2), "the flag beats both");
        s.flag("worker.spill-dir", "--spill-dir", None::<String>)
            .expect("no flag");
        let shown = s.show();
        assert!(shown.contains("nthreads = \"2\""), "{shown}");
        assert!(shown.contains("# --nthreads"), "{shown}");
        assert!(shown.contains(&format!("# {}", path.display())), "{shown}");
        assert!(shown.contains("# default"), "{shown}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("weft.toml");
        std::fs::write(&path, "[worker]\nmemory-limt = \"8GiB\"\n").expect("written");
        let err = Settings::load_with(Some(&path), &env(&[]))
            .err()
            .expect("an error")
            .to_string();
        assert!(
            err.contains("unknown key `worker.memory-limt`") && err.contains("weft.toml"),
            "{err}"
        );
        std::fs::write(&path, "[worker]\nmemory-pause = 1.5\n").expect("written");
        let err = Settings::load_with(Some(&path), &env(&[]))
            .err()
            .expect("an error")
            .to_string();
        assert!(
            err.contains("worker.memory-pause") && err.contains("between 0 and 1"),
            "{err}"
        );
        std::fs::write(&path, "nthreads = 4\n").expect("written");
        let err = Settings::load_with(Some(&path), &env(&[]))
            .err()
            .expect("an error")
            .to_string();
        assert!(err.contains("inside a section"), "{err}");
        let err = Settings::load_with(None, &env(&[("WEFT_LOG_FORMAT", "xml")]))
            .err()
            .expect("an error");
        assert!(err.to_string().contains("WEFT_LOG_FORMAT"), "{err}");
        let missing = dir.path().join("absent.toml");
        assert!(Settings::load_with(Some(&missing), &env(&[])).is_err());
    }

    #[test]
    fn the_user_config_is_read_only_when_it_exists() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = dir.path().to_str().expect("utf-8").to_string();
        let lookup = move |name: &str| (name == "XDG_CONFIG_HOME").then(|| home.clone());
        let s = Settings::load_with(None, &lookup).expect("no file is fine");
        assert_eq!(s.get("log.format").as_deref(), Some("text"));
        std::fs::create_dir_all(dir.path().join("weft")).expect("a directory");
        std::fs::write(dir.path().join("weft/weft.toml"), "[log]\nformat = \"json\"\n").expect("written");
        let s = Settings::load_with(None, &lookup).expect("loads");
        assert_eq!(s.get("log.format").as_deref(), Some("json"));
    }

    #[test]
    fn the_defaults_are_the_code_defaults() {
        let s = Settings::load_with(None, &env(&[])).expect("loads");
        let transport = weft::transport::Config::default();
        assert_eq!(s.duration("transport.connect-timeout"), transport.connect_timeout);
        assert_eq!(s.duration("transport.handshake-timeout"), transport.handshake_timeout);
        assert_eq!(s.duration("transport.io-timeout"), transport.io_timeout);
        assert_eq!(s.count("transport.max-connections"), Some(transport.max_connections));
        assert_eq!(s.switch("transport.same-host-shm"), transport.shared_memory);
        assert_eq!(s.size("transport.max-frame"), Some(transport.limits.max_frame_bytes));
        assert_eq!(
            s.size("transport.max-message"),
            Some(transport.limits.max_message_bytes)
        );
        let scheduler = weft::SchedulerOptions::new("tcp://x:1");
        assert_eq!(s.duration("scheduler.heartbeat-timeout"), scheduler.heartbeat_timeout);
        assert_eq!(s.duration("scheduler.balance-interval"), scheduler.balance_interval);
        let worker = weft::WorkerOptions::new("tcp://x:1", 1);
        assert_eq!(s.duration("worker.heartbeat"), worker.heartbeat);
        assert_eq!(s.duration("worker.reconnect-timeout"), worker.reconnect_timeout);
        let memory = weft_runtime::store::MemoryConfig::default();
        assert_eq!(s.fraction("worker.memory-target"), memory.target);
        assert_eq!(s.fraction("worker.memory-spill"), memory.spill);
        assert_eq!(s.fraction("worker.memory-pause"), memory.pause);
        assert_eq!(s.fraction("worker.memory-terminate"), memory.terminate);
    }
}
