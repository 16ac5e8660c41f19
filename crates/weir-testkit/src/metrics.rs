//! [`Scrape`]: the Prometheus text format parsed back into samples, so tests assert exact
//! values by name and labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of one scrape, and the `# TYPE` of every family.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(name, value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

impl Scrape {
    /// `GET /metrics` from the control API at `addr`.
    pub fn get(addr: SocketAddr) -> Scrape {
        let r = crate::Client::new(addr)
            .get("/metrics")
            .expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
        Scrape::parse(&r.body)
    }

    /// Parse the text format; panics on a line that is not valid (a test failure).
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape {
            text: text.to_owned(),
            ..Scrape::default()
        };
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let mut it = t.split(' ');
                if let (Some(n), Some(k)) = (it.next(), it.next()) {
                    s.types.insert(n.to_owned(), k.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (
                    n,
                    parse_labels(l.strip_suffix('}').unwrap_or(l))
                        .unwrap_or_else(|| panic!("bad labels in {line:?}")),
                ),
                None => (head, BTreeMap::new()),
            };
            s.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        s
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample named `name` with `labels`; `None` if there is none.
    /// Panics if several match (the labels given do not identify one series).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} series: {found:?}",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// The sum over every sample named `name` with `labels` (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_values_and_types() {
        let s = Scrape::parse(
            "# HELP a_total x\n# TYPE a_total counter\na_total 3\nb{x=\"1\",y=\"q\\\"z\"} 2.5\nc_bucket{le=\"+Inf\"} 4\n",
        );
        assert_eq!(s.types.get("a_total").map(String::as_str), Some("counter"));
        assert_eq!(s.value("a_total", &[]), Some(3.0));
        assert_eq!(s.value("b", &[("y", "q\"z")]), Some(2.5));
        assert_eq!(s.value("c_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(s.value("b", &[("x", "2")]), None);
        assert_eq!(s.sum("b", &[]), 2.5);
    }
}
