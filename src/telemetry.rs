//! Logging setup: tracing to stderr, as text or JSON lines.

use tracing_subscriber::EnvFilter;

/// Default filter when `RUST_LOG` is unset: the gateway's own events at info,
/// libraries at warn.
const DEFAULT_FILTER: &str = "info,poem=warn,hyper=warn";

/// Installs the global subscriber. `json` selects JSON lines, for log collectors.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal, so that logs redirected to a file stay plain.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (in tests) fails harmlessly.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
