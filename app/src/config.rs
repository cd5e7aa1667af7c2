//! The appliance's configuration file, read through the kernel's file API
//! when the command line names one (`config=/etc/rtedge.conf`): `key=value`
//! lines, `#` comments and blank lines ignored. Keys:
//!
//! - `modules=all|none|name,name,...` — the modules loaded at boot;
//! - `file=/path` — the file `kmore` reads at load;
//! - `tasklet_disable_at=N` — the period on which `tasklet-disable`
//!   disables its tasklet;
//! - `rtalloc_period_ms=M` — the period of `rtalloc`'s RT thread.
//!
//! The kernel command line wins over the file for every key.

use alloc::string::String;
use alloc::vec::Vec;

use rtedge_kernel::files;
use rtedge_kernel::thread::Mutex;

/// Keys the file may set.
pub const KEYS: [&str; 4] = ["modules", "file", "tasklet_disable_at", "rtalloc_period_ms"];
/// Largest configuration file read.
const MAX_SIZE: usize = 16 * 1024;

static SETTINGS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Why a line was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// No `=` in the line.
    NotKeyValue(usize),
    /// A key this appliance does not know.
    UnknownKey(usize, String),
}

impl core::fmt::Display for LineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LineError::NotKeyValue(line) => write!(f, "line {line}: not key=value"),
            LineError::UnknownKey(line, key) => write!(f, "line {line}: unknown key '{key}'"),
        }
    }
}

/// Parses the file's text: the settings and the lines that were skipped.
pub fn parse(text: &str) -> (Vec<(String, String)>, Vec<LineError>) {
    let mut settings = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            errors.push(LineError::NotKeyValue(number));
            continue;
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        if !KEYS.contains(&key) {
            errors.push(LineError::UnknownKey(number, String::from(key)));
            continue;
        }
        settings.retain(|(existing, _): &(String, String)| existing != key);
        settings.push((String::from(key), String::from(value)));
    }
    (settings, errors)
}

/// Reads the configuration file `path`; problems are logged and the
/// lines that parse are used.
pub fn load(path: &str) {
    let bytes = match files::read_to_vec(path, MAX_SIZE) {
        Ok(bytes) => bytes,
        Err(error) => {
            log::warn!("config: {error}; using the defaults");
            return;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let (settings, errors) = parse(&text);
    for error in &errors {
        log::warn!("config: {path}: {error} (ignored)");
    }
    log::info!("config: {} settings from {path}", settings.len());
    *SETTINGS.lock() = settings;
}

/// The value the configuration file gave `key`.
pub fn get(key: &str) -> Option<String> {
    SETTINGS.lock().iter().find(|(existing, _)| existing == key).map(|(_, value)| value.clone())
}
