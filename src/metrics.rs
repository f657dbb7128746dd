//! The Prometheus text exposition format (0.0.4), written in one place: the
//! server's and the coordinator's `/metrics` pages both go through [`Exposition`].
//!
//! ```
//! use dportage::metrics::{Exposition, Histogram};
//! let mut page = Exposition::new();
//! page.gauge("queue_depth", "Requests waiting.").sample(&[], 3u64);
//! let mut jobs = page.counter("jobs_total", "Jobs finished, by result.");
//! jobs.sample(&[("result", "ok")], 7u64);
//! let latency = Histogram::from_bucket_counts(&[0.1, 1.0], &[4, 1, 0], 0.9);
//! page.histogram("latency_seconds", "Time to answer.").sample(&[], &latency);
//! assert!(page.finish().contains("latency_seconds_bucket{le=\"+Inf\"} 5\n"));
//! ```

use std::fmt;

/// A page of metric families, each a HELP line, a TYPE line and its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// What a family's TYPE line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn keyword(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: a count, or a measurement such as seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write_float(f, v),
        }
    }
}

/// Rust prints floats without exponents (`0.0005`, `300`), which the format
/// accepts; only the non-finite values need the format's own spelling.
fn write_float(f: &mut impl fmt::Write, v: f64) -> fmt::Result {
    if v.is_nan() {
        f.write_str("NaN")
    } else if v == f64::INFINITY {
        f.write_str("+Inf")
    } else if v == f64::NEG_INFINITY {
        f.write_str("-Inf")
    } else {
        write!(f, "{v}")
    }
}

/// A histogram's state as the format wants it: cumulative bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram<'a> {
    /// Upper bounds of the buckets, increasing, without `+Inf`.
    pub bounds: &'a [f64],
    /// Observations at or below each bound (as many as `bounds`).
    pub cumulative: Vec<u64>,
    /// All observations: the `+Inf` bucket and `_count`.
    pub count: u64,
    /// Sum of all observations.
    pub sum: f64,
}

impl<'a> Histogram<'a> {
    /// From counts per bucket: one for each bound (observations above the
    /// previous bound and at or below this one), then the observations above
    /// the last bound.
    pub fn from_bucket_counts(bounds: &'a [f64], per_bucket: &[u64], sum: f64) -> Self {
        debug_assert_eq!(
            per_bucket.len(),
            bounds.len() + 1,
            "one count per bound, plus overflow"
        );
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(bounds.len());
        for (i, n) in per_bucket.iter().enumerate() {
            running += n;
            if i < bounds.len() {
                cumulative.push(running);
            }
        }
        Histogram {
            bounds,
            cumulative,
            count: running,
            sum,
        }
    }
}

/// The samples of one counter or gauge family, written after its HELP and TYPE lines.
#[derive(Debug)]
pub struct Family<'p> {
    page: &'p mut Exposition,
    name: &'p str,
}

/// The samples of one histogram family.
#[derive(Debug)]
pub struct HistogramFamily<'p> {
    page: &'p mut Exposition,
    name: &'p str,
}

impl Exposition {
    pub fn new() -> Self {
        Self {
            text: String::with_capacity(4096),
        }
    }

    /// Start a counter family; add its samples to the returned handle.
    pub fn counter<'p>(&'p mut self, name: &'p str, help: &str) -> Family<'p> {
        self.header(name, Kind::Counter, help);
        Family { page: self, name }
    }

    /// Start a gauge family; add its samples to the returned handle.
    pub fn gauge<'p>(&'p mut self, name: &'p str, help: &str) -> Family<'p> {
        self.header(name, Kind::Gauge, help);
        Family { page: self, name }
    }

    /// Start a histogram family; add its samples to the returned handle.
    pub fn histogram<'p>(&'p mut self, name: &'p str, help: &str) -> HistogramFamily<'p> {
        self.header(name, Kind::Histogram, help);
        HistogramFamily { page: self, name }
    }

    /// The page's text.
    pub fn finish(self) -> String {
        self.text
    }

    fn header(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(is_metric_name(name), "bad metric name {name:?}");
        self.text.push_str("# HELP ");
        self.text.push_str(name);
        self.text.push(' ');
        escape_into(&mut self.text, help, false);
        self.text.push_str("\n# TYPE ");
        self.text.push_str(name);
        self.text.push(' ');
        self.text.push_str(kind.keyword());
        self.text.push('\n');
    }

    /// `NAME{LABELS,extra} VALUE`, where `extra` is the `le` label of a bucket.
    fn sample_line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<f64>,
        value: Value,
    ) {
        use fmt::Write as _;
        self.text.push_str(name);
        self.text.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(label), "bad label name {label:?}");
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_into(&mut self.text, value, true);
                self.text.push('"');
            }
            if let Some(bound) = le {
                if !labels.is_empty() {
                    self.text.push(',');
                }
                self.text.push_str("le=\"");
                // Writing to a String cannot fail.
                let _ = write_float(&mut self.text, bound);
                self.text.push('"');
            }
            self.text.push('}');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, " {value}");
    }
}

impl Family<'_> {
    /// One sample; `labels` are (name, value) pairs, values escaped here.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        self.page
            .sample_line(self.name, "", labels, None, value.into());
        self
    }
}

impl HistogramFamily<'_> {
    /// The `_bucket` lines (with `le`), `_sum` and `_count` of one histogram.
    pub fn sample(&mut self, labels: &[(&str, &str)], h: &Histogram<'_>) -> &mut Self {
        debug_assert!(
            !labels.iter().any(|(l, _)| *l == "le"),
            "`le` is the bucket label"
        );
        debug_assert_eq!(h.bounds.len(), h.cumulative.len());
        for (bound, n) in h.bounds.iter().zip(&h.cumulative) {
            self.page
                .sample_line(self.name, "_bucket", labels, Some(*bound), Value::Int(*n));
        }
        self.page.sample_line(
            self.name,
            "_bucket",
            labels,
            Some(f64::INFINITY),
            Value::Int(h.count),
        );
        self.page
            .sample_line(self.name, "_sum", labels, None, Value::Float(h.sum));
        self.page
            .sample_line(self.name, "_count", labels, None, Value::Int(h.count));
        self
    }
}

/// HELP text escapes `\` and newlines; label values also escape `"`.
fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, and not the reserved `__` prefix.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_without_labels() {
        let mut page = Exposition::new();
        page.counter("a_total", "Things counted.").sample(&[], 3u64);
        page.gauge("b", "A level.").sample(&[], 7usize);
        assert_eq!(
            page.finish(),
            "# HELP a_total Things counted.\n# TYPE a_total counter\na_total 3\n\
             # HELP b A level.\n# TYPE b gauge\nb 7\n"
        );
    }

    #[test]
    fn a_family_without_samples_keeps_its_header() {
        let mut page = Exposition::new();
        page.counter("c_total", "None yet.");
        assert_eq!(
            page.finish(),
            "# HELP c_total None yet.\n# TYPE c_total counter\n"
        );
    }

    #[test]
    fn labels_in_order_and_values_escaped() {
        let mut page = Exposition::new();
        page.counter("req_total", "By route.")
            .sample(&[("endpoint", "hosts"), ("code", "200")], 5u64)
            .sample(&[("path", "a\"b\\c\nd")], 1u64);
        let text = page.finish();
        assert!(text.contains("\nreq_total{endpoint=\"hosts\",code=\"200\"} 5\n"));
        assert!(
            text.contains("\nreq_total{path=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut page = Exposition::new();
        page.gauge("g", "say \"hi\"\\\nbye");
        assert!(page
            .finish()
            .starts_with("# HELP g say \"hi\"\\\\\\nbye\n# TYPE g gauge\n"));
    }

    #[test]
    fn floats_as_the_format_spells_them() {
        let show = |v: f64| Value::Float(v).to_string();
        assert_eq!(show(0.0), "0");
        assert_eq!(show(1.0), "1");
        assert_eq!(show(0.0005), "0.0005");
        assert_eq!(show(1.234567), "1.234567");
        assert_eq!(show(f64::INFINITY), "+Inf");
        assert_eq!(show(f64::NEG_INFINITY), "-Inf");
        assert_eq!(show(f64::NAN), "NaN");
        assert_eq!(Value::from(u64::MAX).to_string(), "18446744073709551615");
    }

    #[test]
    fn histogram_lines_are_cumulative_with_inf_sum_and_count() {
        let bounds = [0.5, 2.0];
        let h = Histogram::from_bucket_counts(&bounds, &[1, 2, 3], 9.25);
        assert_eq!(h.cumulative, vec![1, 3]);
        assert_eq!(h.count, 6);
        let mut page = Exposition::new();
        page.histogram("d_seconds", "Durations.").sample(&[], &h);
        page.histogram("e_seconds", "Labelled.")
            .sample(&[("op", "x")], &h);
        assert_eq!(
            page.finish(),
            "# HELP d_seconds Durations.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{le=\"0.5\"} 1\n\
             d_seconds_bucket{le=\"2\"} 3\n\
             d_seconds_bucket{le=\"+Inf\"} 6\n\
             d_seconds_sum 9.25\n\
             d_seconds_count 6\n\
             # HELP e_seconds Labelled.\n# TYPE e_seconds histogram\n\
             e_seconds_bucket{op=\"x\",le=\"0.5\"} 1\n\
             e_seconds_bucket{op=\"x\",le=\"2\"} 3\n\
             e_seconds_bucket{op=\"x\",le=\"+Inf\"} 6\n\
             e_seconds_sum{op=\"x\"} 9.25\n\
             e_seconds_count{op=\"x\"} 6\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(is_metric_name("dportage_jobs_total"));
        assert!(is_metric_name("ns:rate_5m"));
        assert!(!is_metric_name("9lives"));
        assert!(!is_metric_name("a-b"));
        assert!(!is_metric_name(""));
        assert!(is_label_name("endpoint"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a:b"));
    }
}
