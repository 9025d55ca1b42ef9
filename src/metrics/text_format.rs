//! The Prometheus text exposition format (version 0.0.4), written for the TCP and the
//! UDP server's counters alike.

use std::fmt::Write as _;

/// A metric's type, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

/// Writes the Prometheus text exposition format (version 0.0.4): each metric's `# HELP`
/// and `# TYPE` lines, then its samples. The TCP server's counters and the UDP
/// server's are both written with it, so a scrape reads as one.
#[derive(Debug)]
pub struct TextFormat {
    out: String,
}

impl TextFormat {
    /// An empty exposition with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> TextFormat {
        TextFormat {
            out: String::with_capacity(bytes),
        }
    }

    /// A metric with one sample, without labels.
    pub fn single(&mut self, name: &str, kind: MetricType, help: &str, value: u64) {
        self.header(name, kind, help);
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A metric with one sample per value of its one label.
    pub fn by_label<'a>(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.header(name, kind, help);
        for (value_of_label, value) in samples {
            let shown = escape_label(value_of_label);
            let _ = writeln!(self.out, "{name}{{{label}=\"{shown}\"}} {value}");
        }
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, kind: MetricType, help: &str) {
        let kind = match kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}

/// A label's value as the text format writes it: backslash, double quote and line feed
/// escaped, so that no value can end its sample's line or quotes early.
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_escapes_label_values() {
        let mut out = TextFormat::with_capacity(0);
        out.by_label(
            "m",
            MetricType::Counter,
            "Help.",
            "l",
            [("plain", 1), ("a\\b\"c\nd", 2)],
        );
        assert_eq!(
            out.finish(),
            "# HELP m Help.\n# TYPE m counter\nm{l=\"plain\"} 1\nm{l=\"a\\\\b\\\"c\\nd\"} 2\n"
        );
    }
}
