//! `rtctl metrics [PREFIX]`: the Prometheus text the appliance serves on
//! its metrics port (`METRICS` over the control plane), for a quick look
//! without a Prometheus server. A prefix keeps the families whose name
//! starts with it; `--json` turns the samples into objects
//! (`{"name", "labels", "value"}`).

use serde_json::{Map, Value as Json, json};

/// Keeps the families (their HELP/TYPE lines and samples) whose metric
/// name starts with `prefix`.
pub fn filter(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            Some(rest) => rest.split(' ').next().unwrap_or(""),
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        if name.starts_with(prefix) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The samples as JSON objects; comment lines are dropped. Values stay
/// strings where they are not finite numbers (`+Inf`, `NaN`).
pub fn to_json(text: &str) -> Json {
    let samples: Vec<Json> = text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()).filter_map(sample).collect();
    Json::Array(samples)
}

fn sample(line: &str) -> Option<Json> {
    let (series, value) = line.rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Map::new()),
    };
    let value = match value.parse::<f64>() {
        Ok(number) if number.is_finite() => json!(number),
        _ => json!(value),
    };
    Some(json!({ "name": name, "labels": labels, "value": value }))
}

/// `a="x",b="y\"z"` with the format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> Option<Map<String, Json>> {
    let mut labels = Map::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut characters = after.char_indices();
        let end = loop {
            let (index, character) = characters.next()?;
            match character {
                '\\' => match characters.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break index,
                other => value.push(other),
            }
        };
        labels.insert(name.to_string(), Json::String(value));
        rest = after.get(end + 1..)?;
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP rtedge_cpus CPUs online.\n# TYPE rtedge_cpus gauge\nrtedge_cpus 2\n\
# HELP rtedge_thread_releases_total Releases.\n# TYPE rtedge_thread_releases_total counter\n\
rtedge_thread_releases_total{thread=\"a\\\"b\\\\c\\nd\",id=\"7\"} 12\n\
# HELP rtedge_latency_seconds L.\n# TYPE rtedge_latency_seconds histogram\n\
rtedge_latency_seconds_bucket{source=\"x\",le=\"+Inf\"} 3\n";

    #[test]
    fn a_prefix_keeps_whole_families() {
        assert_eq!(
            filter(TEXT, "rtedge_thread"),
            "# HELP rtedge_thread_releases_total Releases.\n# TYPE rtedge_thread_releases_total counter\n\
rtedge_thread_releases_total{thread=\"a\\\"b\\\\c\\nd\",id=\"7\"} 12\n"
        );
        assert_eq!(filter(TEXT, "nothing"), "");
    }

    #[test]
    fn samples_become_json_with_unescaped_labels() {
        let json = to_json(TEXT);
        assert_eq!(json[0], json!({"name": "rtedge_cpus", "labels": {}, "value": 2.0}));
        assert_eq!(json[1]["labels"]["thread"], "a\"b\\c\nd");
        assert_eq!(json[1]["labels"]["id"], "7");
        assert_eq!(json[1]["value"], 12.0);
        assert_eq!(json[2]["labels"]["le"], "+Inf");
        assert_eq!(json[2]["value"], 3.0);
        assert_eq!(json.as_array().map(Vec::len), Some(3));
    }
}
