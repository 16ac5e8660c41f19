//! Scrape-time exposition: [`Families`] collects samples into Prometheus `MetricFamily`
//! values, in the order families were first declared; [`encode_text`] writes the text format
//! (0.0.4) with the `prometheus` crate's encoder.

use crate::histogram::{HistogramSnapshot, LATENCY_BUCKETS_MS};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::Encoder;
use std::collections::HashMap;

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Samples being gathered for one scrape, grouped by family.
#[derive(Debug)]
pub struct Families {
    prefix: String,
    families: Vec<MetricFamily>,
    by_name: HashMap<&'static str, usize>,
}

fn labels(pairs: Labels<'_>) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = proto::LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

impl Families {
    /// Families whose names all start with `prefix` (`weir_`, `apisix_`).
    pub fn new(prefix: &str) -> Self {
        Families {
            prefix: prefix.to_owned(),
            families: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    /// Declare family `name` (without the prefix) so it keeps its place in the output even
    /// when its samples come later; a family without samples is left out of the output.
    pub fn declare(&mut self, name: &'static str, help: &str, kind: MetricType) -> &mut Self {
        self.family(name, help, kind);
        self
    }

    fn family(&mut self, name: &'static str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let i = *self.by_name.entry(name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(format!("{}{name}", self.prefix));
            f.set_help(help.to_owned());
            f.set_field_type(kind);
            self.families.push(f);
            self.families.len() - 1
        });
        &mut self.families[i]
    }

    pub fn counter(&mut self, name: &'static str, help: &str, l: Labels<'_>, v: u64) {
        let mut c = proto::Counter::default();
        c.set_value(v as f64);
        let mut m = proto::Metric::from_label(labels(l));
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER)
            .mut_metric()
            .push(m);
    }

    pub fn gauge(&mut self, name: &'static str, help: &str, l: Labels<'_>, v: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(v);
        let mut m = proto::Metric::from_label(labels(l));
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE)
            .mut_metric()
            .push(m);
    }

    /// A latency histogram in milliseconds ([`LATENCY_BUCKETS_MS`]).
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &str,
        l: Labels<'_>,
        s: &HistogramSnapshot,
    ) {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS_MS
            .iter()
            .zip(&s.buckets)
            .map(|(&le, &n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        // From the buckets, so `+Inf` (written by the encoder from the count) and `_count`
        // agree with the buckets even when a scrape races an observation.
        h.set_sample_count(s.count());
        h.set_sample_sum(s.sum_us as f64 / 1000.0);
        let mut m = proto::Metric::from_label(labels(l));
        m.set_histogram(h);
        self.family(name, help, MetricType::HISTOGRAM)
            .mut_metric()
            .push(m);
    }

    /// Add families gathered elsewhere (an embedder's `prometheus::Registry`).
    pub fn extend(&mut self, more: Vec<MetricFamily>) {
        self.families.extend(more);
    }

    /// The families that have samples, in declaration order.
    pub fn finish(self) -> Vec<MetricFamily> {
        self.families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// The text exposition format of `families`.
pub fn encode_text(families: &[MetricFamily]) -> String {
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(families, &mut out) {
        // Only an empty family or name fails, which `Families::finish` never yields.
        return format!("# encoding failed: {e}\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Histogram;
    use std::time::Duration;

    #[test]
    fn text_format_in_declaration_order_without_empty_families() {
        let mut f = Families::new("weir_");
        f.declare("http_requests_total", "All requests.", MetricType::COUNTER);
        f.declare("unused", "Never sampled.", MetricType::GAUGE);
        let h = Histogram::default();
        h.observe(Duration::from_micros(1500));
        h.observe(Duration::from_secs(90));
        f.histogram(
            "http_latency",
            "Latency.",
            &[("type", "request")],
            &h.snapshot(),
        );
        f.counter("http_requests_total", "All requests.", &[], 3);
        let text = encode_text(&f.finish());
        let want = "\
# HELP weir_http_requests_total All requests.
# TYPE weir_http_requests_total counter
weir_http_requests_total 3
# HELP weir_http_latency Latency.
# TYPE weir_http_latency histogram
";
        assert!(text.starts_with(want), "{text}");
        assert!(!text.contains("unused"));
        assert!(text.contains("weir_http_latency_bucket{type=\"request\",le=\"1\"} 0\n"));
        assert!(text.contains("weir_http_latency_bucket{type=\"request\",le=\"2\"} 1\n"));
        assert!(text.contains("weir_http_latency_bucket{type=\"request\",le=\"60000\"} 1\n"));
        assert!(text.contains("weir_http_latency_bucket{type=\"request\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("weir_http_latency_sum{type=\"request\"} 90001.5\n"));
        assert!(text.contains("weir_http_latency_count{type=\"request\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut f = Families::new("x_");
        f.counter("c", "h", &[("route", "a\"b\\c\nd")], 1);
        let text = encode_text(&f.finish());
        assert!(text.contains(r#"x_c{route="a\"b\\c\nd"} 1"#), "{text}");
    }
}
