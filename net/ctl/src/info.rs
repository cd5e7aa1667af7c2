//! `INFO` text (`# Section` headers, `key:value` lines) and the one-screen
//! summary `rtctl status` makes of it.

use serde_json::{Map, Value as Json};

use crate::format;

/// `INFO` parsed: sections in order, each with its fields in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Info {
    /// `(section name in lower case, [(key, value)])`.
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl Info {
    /// Parses `INFO` text. Fields before any header go to section `""`.
    pub fn parse(text: &str) -> Info {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r').trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('#') {
                sections.push((name.trim().to_ascii_lowercase(), Vec::new()));
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if sections.is_empty() {
                sections.push((String::new(), Vec::new()));
            }
            if let Some((_, fields)) = sections.last_mut() {
                fields.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Info { sections }
    }

    /// The first value of the first key among `keys` present in any section
    /// (servers name the same figure differently; the first name wins).
    pub fn find(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|wanted| {
            self.sections.iter().flat_map(|(_, fields)| fields.iter()).find(|(key, _)| key == wanted).map(|(_, value)| value.as_str())
        })
    }

    /// Like [`Info::find`], as an integer.
    pub fn integer(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|key| self.find(&[key]).and_then(|value| value.parse().ok()))
    }

    /// `{"server": {"key": value, ...}, ...}`; numbers become JSON numbers.
    pub fn to_json(&self) -> Json {
        let mut object = Map::new();
        for (name, fields) in &self.sections {
            let section = fields.iter().map(|(key, value)| (key.clone(), typed(value))).collect::<Map<_, _>>();
            object.insert(name.clone(), Json::Object(section));
        }
        Json::Object(object)
    }

    /// Server uptime in nanoseconds, as precise as the server gives it.
    pub fn uptime_ns(&self) -> Option<i64> {
        self.integer(&["uptime_ns"])
            .or_else(|| self.integer(&["uptime_ms"]).map(|ms| ms.saturating_mul(1_000_000)))
            .or_else(|| self.integer(&["uptime_in_seconds", "uptime_s"]).map(|seconds| seconds.saturating_mul(1_000_000_000)))
    }

    /// The figures `status` and `top` show.
    pub fn summary(&self) -> Summary {
        Summary {
            version: self.find(&["rtedge_version", "version", "redis_version"]).map(str::to_owned),
            uptime_ns: self.uptime_ns(),
            boot_path: self.find(&["boot_path", "boot", "boot_protocol"]).map(str::to_owned),
            hypervisor: self.find(&["hypervisor", "machine"]).map(str::to_owned),
            cpus: self.integer(&["cpus", "cpu_count", "online_cpus", "ncpus"]),
            heap_used: self.integer(&["heap_used", "heap_used_bytes", "used_memory"]),
            heap_total: self.integer(&["heap_total", "heap_size", "heap_total_bytes", "total_system_memory"]),
            threads: self.integer(&["threads", "thread_count", "threads_total"]),
            clients: self.integer(&["connected_clients", "clients"]),
        }
    }
}

/// An `INFO` value as JSON: integer, float, or string.
fn typed(value: &str) -> Json {
    if let Ok(number) = value.parse::<i64>() {
        return Json::from(number);
    }
    if value.contains('.')
        && let Ok(number) = value.parse::<f64>()
        && let Some(number) = serde_json::Number::from_f64(number)
    {
        return Json::Number(number);
    }
    Json::String(value.to_owned())
}

/// What `status` shows. Figures the server does not report stay `None`
/// and print as `-`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// rtedge version.
    pub version: Option<String>,
    /// Time since boot.
    pub uptime_ns: Option<i64>,
    /// How the image booted (`pvh`, `hermit`, ...).
    pub boot_path: Option<String>,
    /// The hypervisor, if reported.
    pub hypervisor: Option<String>,
    /// Online CPUs.
    pub cpus: Option<i64>,
    /// Heap bytes in use.
    pub heap_used: Option<i64>,
    /// Heap bytes in all.
    pub heap_total: Option<i64>,
    /// Threads.
    pub threads: Option<i64>,
    /// Connected control-plane clients.
    pub clients: Option<i64>,
}

impl Summary {
    /// `1.2 MiB / 16.0 MiB (7.5%)`, or what part of it is known.
    pub fn heap(&self) -> String {
        match (self.heap_used, self.heap_total) {
            (Some(used), Some(total)) if total > 0 => {
                format!("{} / {} ({:.1}%)", format::bytes(used), format::bytes(total), used as f64 * 100.0 / total as f64)
            }
            (Some(used), _) => format::bytes(used),
            _ => "-".into(),
        }
    }

    /// `1h 02m 03s`.
    pub fn uptime(&self) -> String {
        self.uptime_ns.map_or_else(|| "-".into(), |ns| format::uptime(ns / 1_000_000_000))
    }

    /// The `status` screen.
    pub fn render(&self) -> String {
        let dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
        let boot = match (&self.boot_path, &self.hypervisor) {
            (Some(path), Some(hypervisor)) => Some(format!("{path} ({hypervisor})")),
            (Some(path), None) => Some(path.clone()),
            (None, Some(hypervisor)) => Some(format!("- ({hypervisor})")),
            (None, None) => None,
        };
        let lines = [
            ("version", dash(self.version.clone())),
            ("uptime", self.uptime()),
            ("boot path", dash(boot)),
            ("CPUs", dash(self.cpus.map(|n| n.to_string()))),
            ("heap", self.heap()),
            ("threads", dash(self.threads.map(|n| n.to_string()))),
            ("clients", dash(self.clients.map(|n| n.to_string()))),
        ];
        let mut out = String::new();
        for (label, value) in lines {
            out.push_str(&format!("{label:<11}{value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# Server\r\nrtedge_version:0.1.0\r\nuptime_in_seconds:3723\r\nboot_path:pvh\r\n\r\n# CPU\r\ncpus:2\r\nload:0.25\r\n# Memory\r\nheap_used:1048576\r\nheap_total:16777216\r\n";

    #[test]
    fn sections_and_fields_keep_their_order() {
        let info = Info::parse(TEXT);
        let names: Vec<&str> = info.sections.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["server", "cpu", "memory"]);
        assert_eq!(info.find(&["missing", "boot_path"]), Some("pvh"));
        assert_eq!(
            info.to_json().to_string(),
            r#"{"server":{"rtedge_version":"0.1.0","uptime_in_seconds":3723,"boot_path":"pvh"},"cpu":{"cpus":2,"load":0.25},"memory":{"heap_used":1048576,"heap_total":16777216}}"#
        );
    }

    #[test]
    fn the_summary_shows_dashes_for_unknown_figures() {
        let text = Info::parse(TEXT).summary().render();
        assert_eq!(
            text,
            "version    0.1.0\nuptime     1h 02m 03s\nboot path  pvh\nCPUs       2\nheap       1.0 MiB / 16.0 MiB (6.2%)\nthreads    -\nclients    -\n"
        );
    }
}
