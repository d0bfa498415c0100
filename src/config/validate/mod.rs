//! Stage 2: [`RawConfig`] → [`Config`], reporting every problem at once.
//!
//! Each key is checked on its own and problems are collected, never
//! returned early, so one run shows them all. Checks that span services
//! (host-port and public-name clashes, dependencies and their cycles, unit
//! names, capacity) run on whatever parts were valid, with the spans of both
//! sides of a clash. A [`Config`] comes out only when there is no error.

mod across;
mod apps;
mod cluster;
mod nodes;
mod runtime;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use super::parse::Rejected;
use super::raw::{RawConfig, RawService};
use super::spanned::Spanned;
use crate::diagnostic::Diagnostic;
use crate::model::{Config, Service};
use crate::spec::quantity;

/// How long use must stay low before replicas are removed, by default: as
/// Kubernetes' horizontal autoscaler's scale-down stabilization.
pub const DEFAULT_SCALE_IN_AFTER: Duration = Duration::from_secs(300);

/// What stage 2 produced.
#[derive(Debug)]
pub struct Validated {
    /// Present only when there is no error.
    pub config: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
    /// Spans holding secret values written in plain text: never echoed.
    pub redact: Vec<Range<usize>>,
}

/// Validates a raw config; `source` is the text it was read from.
pub fn validate(source: &str, raw: &RawConfig, rejected: &Rejected) -> Validated {
    let mut checker = Checker {
        source,
        rejected,
        public_domain_declared: raw.cluster.as_ref().is_some_and(|c| {
            c.value.public_domain.is_some() || rejected.contains(&c.span, "public-domain")
        }),
        ingress_dns: raw
            .cluster
            .as_ref()
            .and_then(|c| c.value.ingress.as_ref())
            .is_some_and(|i| i.value == "dns"),
        cluster_name: raw
            .cluster
            .as_ref()
            .and_then(|c| c.value.name.as_ref())
            .map_or_else(|| "<cluster>".to_owned(), |n| n.value.clone()),
        diagnostics: Vec::new(),
        redact: Vec::new(),
    };
    let mut cluster = checker.cluster(raw);
    let apps = checker.apps(raw, cluster.as_ref());
    let deployers = checker.deployers(raw);
    if let Some(cluster) = &mut cluster {
        cluster.deployers = deployers;
    }
    let config = match (cluster, apps) {
        (Some(cluster), Some(apps)) if !checker.has_errors() => Some(Config { cluster, apps }),
        _ => None,
    };
    if let Some(config) = &config {
        checker.access_logs_without_load_balancer(raw, config);
    }
    Validated {
        config,
        diagnostics: checker.diagnostics,
        redact: checker.redact,
    }
}

struct Checker<'a> {
    source: &'a str,
    rejected: &'a Rejected,
    /// Whether `[cluster]` names a public zone, valid or not.
    public_domain_declared: bool,
    /// Whether `[cluster]` says `ingress = "dns"`: public names at the
    /// nodes, on host ports, with no load balancer.
    ingress_dns: bool,
    /// The cluster's name as written, for examples in hints.
    cluster_name: String,
    diagnostics: Vec<Diagnostic>,
    redact: Vec<Range<usize>>,
}

/// Names that suggest a secret when they appear in `env`.
const SECRET_WORDS: [&str; 7] = [
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "PRIVATE_KEY",
    "CREDENTIALS",
];

/// One service's pieces, kept for the checks across services.
struct ServiceEntry<'r> {
    app: &'r Spanned<String>,
    name: &'r Spanned<String>,
    raw: &'r RawService,
    model: Option<Service>,
}

impl<'a> Checker<'a> {
    fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// The first line of a span: where a table starts.
    fn header(&self, span: &Range<usize>) -> Range<usize> {
        let start = span.start.min(self.source.len());
        let end = self.source[start..]
            .find('\n')
            .map_or(self.source.len(), |i| start + i)
            .min(span.end.max(start + 1))
            .min(self.source.len());
        start..end
    }

    /// Reports a missing key unless it was present with a rejected value.
    fn required<'v, T>(
        &mut self,
        value: &'v Option<Spanned<T>>,
        table: &Range<usize>,
        anchor: Range<usize>,
        key: &str,
        place: &str,
        example: &str,
    ) -> Option<&'v Spanned<T>> {
        if value.is_none() && !self.rejected.contains(table, key) {
            self.push(
                Diagnostic::error(format!("missing `{key}` in {place}"))
                    .at(anchor, format!("`{key}` is required here"))
                    .help(format!("add `{example}`")),
            );
        }
        value.as_ref()
    }

    /// Reports `result`'s error at `span`; passes its value on.
    fn check<T>(
        &mut self,
        result: Result<T, String>,
        span: &Range<usize>,
        message: impl FnOnce() -> String,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.push(Diagnostic::error(message()).at(span.clone(), reason));
                None
            }
        }
    }

    /// An integer in `range`, or a diagnostic that names the range.
    fn int_in<T: TryFrom<i64>>(
        &mut self,
        value: &Spanned<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> Option<T> {
        if range.contains(&value.value) {
            T::try_from(value.value).ok()
        } else {
            self.push(Diagnostic::error(format!("{what} is out of range")).at(
                value.span.clone(),
                format!(
                    "{} is not between {} and {}",
                    value.value,
                    range.start(),
                    range.end()
                ),
            ));
            None
        }
    }
}

/// Where to point a whole-cluster capacity problem: the first service.
/// Whether a written duration parses as zero.
fn timeout_is_zero(value: &Spanned<String>) -> bool {
    quantity::duration(&value.value).is_ok_and(|d| d.is_zero())
}

fn cluster_nodes_anchor(entries: &[ServiceEntry<'_>]) -> Range<usize> {
    entries.first().map_or(0..0, |e| e.name.span.clone())
}

/// A dependency edge: from, to, and the span of the `depends-on` entry.
type Edge<'s> = (&'s str, &'s str, Range<usize>);

/// Every elementary cycle reachable in a dependency graph, once each, as the
/// list of its edges (from, to, span), starting at its smallest name.
fn cycles<'s>(edges: &BTreeMap<&'s str, Vec<(&'s str, Range<usize>)>>) -> Vec<Vec<Edge<'s>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'s>(
        node: &'s str,
        edges: &BTreeMap<&'s str, Vec<(&'s str, Range<usize>)>>,
        marks: &mut BTreeMap<&'s str, Mark>,
        stack: &mut Vec<Edge<'s>>,
        found: &mut BTreeMap<Vec<&'s str>, Vec<Edge<'s>>>,
    ) {
        marks.insert(node, Mark::Active);
        for (to, span) in edges.get(node).into_iter().flatten() {
            stack.push((node, to, span.clone()));
            match marks.get(to).copied().unwrap_or(Mark::New) {
                Mark::New => visit(to, edges, marks, stack, found),
                Mark::Active => {
                    let start = stack
                        .iter()
                        .position(|(from, _, _)| from == to)
                        .unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.0)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min);
                    found
                        .entry(cycle.iter().map(|e| e.0).collect())
                        .or_insert(cycle);
                }
                Mark::Done => {}
            }
            stack.pop();
        }
        marks.insert(node, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = BTreeMap::new();
    for node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, Vec<(&'a str, Range<usize>)>> {
        let mut g: BTreeMap<&str, Vec<(&str, Range<usize>)>> = BTreeMap::new();
        for (i, (a, b)) in pairs.iter().enumerate() {
            g.entry(a).or_default().push((b, i..i + 1));
        }
        g
    }

    fn names(cycles: &[Vec<Edge<'_>>]) -> Vec<Vec<String>> {
        cycles
            .iter()
            .map(|c| c.iter().map(|e| e.0.to_owned()).collect())
            .collect()
    }

    #[test]
    fn finds_a_cycle_once_from_its_smallest_member() {
        let g = graph(&[
            ("web", "api"),
            ("api", "worker"),
            ("worker", "web"),
            ("web", "db"),
        ]);
        assert_eq!(names(&cycles(&g)), [["api", "worker", "web"]]);
    }

    #[test]
    fn no_cycle_in_a_dag() {
        let g = graph(&[("web", "api"), ("api", "db"), ("web", "db")]);
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn two_separate_cycles() {
        let g = graph(&[("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")]);
        assert_eq!(names(&cycles(&g)), [["a", "b"], ["c", "d"]]);
    }
}
