//! Dashboards and alerts as code stay true to what the relay exports. A dashboard that names a
//! metric the relay does not export (a typo, a renamed family, a counter without `_total`)
//! shows an empty panel and nobody notices until it is needed; an alert on it never fires.
//!
//! - `dashboards/grafana/image-relay.json`: every PromQL `expr` of every panel and every
//!   template-variable query must name series that a live scrape of the relay has, with the
//!   labels the query matches or groups by; every `image_relay_*` family must have a panel.
//! - `terraform/modules/image-relay/monitoring/`: the Cloud Monitoring dashboard's PromQL
//!   panels (the same metrics through Managed Service for Prometheus) and the replication
//!   objective's alert query are held to the same scrape; its Cloud Run, Pub/Sub and
//!   logs-based panels, and every `metric.type` any alert policy of the module filters on, must
//!   name a metric type the module defines or one of Google's listed below, with labels and
//!   aligners that fit that type.
//!
//! The scrape comes from the real service in process: a copy, a hold by the signature gate, an
//! ignored and a malformed delivery, so that every family has samples (and their labels can be
//! checked; the exposition leaves a family without series out altogether), plus one
//! `image-relay serve` reloading its rule file, the only way to count a reload. The
//! checks themselves are tested against a scrape written out here
//! (`the_checks_report_what_the_relay_does_not_export`), so a check that can no longer fail
//! fails there.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::app::App;
use common::cosign::CosignKey;
use common::service::{Form, Service, deliver, notification};
use common::wait::eventually;
use common::*;
use serde_json::Value;
use tokio::sync::OnceCell;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const GRAFANA: &str = "dashboards/grafana/image-relay.json";
const MODULE: &str = "terraform/modules/image-relay";
const TF_DASHBOARD: &str = "terraform/modules/image-relay/monitoring/dashboard.json.tftpl";
const TF_SLO_QUERY: &str = "terraform/modules/image-relay/monitoring/replication-slo.promql.tftpl";
const TF_BUCKETS: &str =
    "terraform/modules/image-relay/monitoring/replication-latency-buckets.json";

// ---------------------------------------------------------------------------------------------
// The exposition: families (from `# TYPE`), the series of each and the label names they carry.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Family {
    kind: String,
    /// Series name (`image_relay_events_total`, `..._bucket`) to the label names seen on it.
    series: BTreeMap<String, BTreeSet<String>>,
    /// `le` values of a histogram's buckets, as exposed.
    le: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

/// The series names a family of `kind` exposes: its name plus one of these (OpenMetrics 1.0).
/// A counter is never queried by its family name: `image_relay_events` has no samples.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        // gauge, stateset, unknown
        _ => &[""],
    }
}

impl Exposition {
    fn parse(text: &str) -> Result<Exposition, String> {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("bad TYPE line: {line}"))?;
                e.families.entry(name.to_owned()).or_default().kind = kind.trim().to_owned();
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let labels = if line[name_end..].starts_with('{') {
                let close = closing(line, name_end, '{', '}')
                    .ok_or_else(|| format!("unclosed labels: {line}"))?;
                parse_sample_labels(&line[name_end + 1..close])
                    .map_err(|err| format!("{err}: {line}"))?
            } else {
                Vec::new()
            };
            let family = e
                .family_of(name)
                .ok_or_else(|| format!("sample of no declared family: {line}"))?;
            let f = e.families.get_mut(&family).unwrap();
            let seen = f.series.entry(name.to_owned()).or_default();
            for (k, v) in labels {
                if k == "le" && name.ends_with("_bucket") {
                    f.le.insert(v.clone());
                }
                seen.insert(k);
            }
        }
        Ok(e)
    }

    /// The family a series name belongs to, by the suffixes its kind allows.
    fn family_of(&self, series: &str) -> Option<String> {
        self.families.iter().find_map(|(name, f)| {
            let rest = series.strip_prefix(name.as_str())?;
            suffixes(&f.kind).contains(&rest).then(|| name.clone())
        })
    }

    /// Label names on `series`: `Err` says why the series is not there to query.
    fn labels_of(&self, series: &str) -> Result<&BTreeSet<String>, String> {
        let Some(family) = self.family_of(series) else {
            // Families whose name starts like the series', to point at the likely typo.
            let near: Vec<&str> = self
                .families
                .keys()
                .map(String::as_str)
                .filter(|f| {
                    let common = f.chars().zip(series.chars()).take_while(|(a, b)| a == b);
                    common.count() >= "image_relay_".len() + 3
                })
                .collect();
            if let Some(f) = self.families.get(series) {
                let names: Vec<String> = suffixes(&f.kind)
                    .iter()
                    .map(|s| format!("{series}{s}"))
                    .collect();
                return Err(format!(
                    "`{series}` is not exported: it is a {} family, whose series are {names:?}",
                    f.kind
                ));
            }
            return Err(format!(
                "`{series}` is not exported (similar families: {near:?})"
            ));
        };
        let f = &self.families[&family];
        f.series.get(series).ok_or_else(|| {
            format!(
                "`{series}` (family `{family}`, {}) has no sample in the scrape: the test's deliveries do not populate it",
                f.kind
            )
        })
    }
}

/// The index of the `close` matching the `open` at `at`, skipping quoted strings.
fn closing(s: &str, at: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip_while(|(i, _)| *i < at) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `a="x",b="y\"z"` of an exposition line: names and unescaped values.
fn parse_sample_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!("bad label `{name}`"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => value.push(chars.next().ok_or("dangling escape")?),
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        }
        out.push((name.trim().to_owned(), value));
    }
}

// ---------------------------------------------------------------------------------------------
// PromQL: which series a query selects, with which label matchers, grouped by which labels.
// Not a parser of the whole language: a lexer that knows enough to tell a metric name from a
// function, an aggregation, a keyword, a label, a duration, a string and a Grafana variable.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    /// Label names of its matchers (`{rule=~"$rule"}`).
    labels: Vec<String>,
}

#[derive(Debug, Default, PartialEq)]
struct Query {
    selectors: Vec<Selector>,
    /// Labels of `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left (...)`.
    grouping: Vec<String>,
}

const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const OTHER_KEYWORDS: &[&str] = &[
    "bool", "and", "or", "unless", "offset", "inf", "nan", "atan2",
];
/// Aggregation operators, which may be followed by `by (...)` before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_promql(expr: &str) -> Result<Query, String> {
    let s: Vec<char> = expr.chars().collect();
    let text = |from: usize, to: usize| s[from..to].iter().collect::<String>();
    let next_non_ws = |mut i: usize| {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let mut q = Query::default();
    // The selector a `{` right after it would belong to.
    let mut open: Option<usize> = None;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&s, i)?;
            open = None;
        } else if c == '[' {
            // A range or subquery: durations and Grafana variables only.
            let end = (i..s.len()).find(|&j| s[j] == ']').ok_or("unclosed [")?;
            i = end + 1;
            open = None;
        } else if c == '{' {
            let byte_at: usize = s[..i].iter().map(|c| c.len_utf8()).sum();
            let close = closing(expr, byte_at, '{', '}').ok_or("unclosed {")?;
            let inner = &expr[byte_at + 1..close];
            let labels = parse_matchers(inner)?;
            let Some(k) = open else {
                return Err(format!(
                    "`{{{inner}}}` selects no metric by name: name it, so that it can be checked"
                ));
            };
            q.selectors[k].labels.extend(labels);
            i = expr[..=close].chars().count();
            open = None;
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if s.get(i) == Some(&'{') {
                i = (i..s.len()).find(|&j| s[j] == '}').ok_or("unclosed ${")? + 1;
            } else {
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
            }
            open = None;
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`0.99`, `1e3`, `5m`).
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
            open = None;
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let word = text(start, i);
            let lower = word.to_ascii_lowercase();
            let after = next_non_ws(i);
            open = None;
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if s.get(after) == Some(&'(') {
                    let end = (after..s.len())
                        .find(|&j| s[j] == ')')
                        .ok_or("unclosed (")?;
                    for l in text(after + 1, end).split(',') {
                        let l = l.trim();
                        if !l.is_empty() {
                            q.grouping.push(l.to_owned());
                        }
                    }
                    i = end + 1;
                }
            } else if OTHER_KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || s.get(after) == Some(&'(')
            {
                // A keyword, an aggregation or a function: not a series.
            } else {
                q.selectors.push(Selector {
                    metric: word,
                    labels: Vec::new(),
                });
                open = Some(q.selectors.len() - 1);
            }
        } else {
            if !c.is_whitespace() {
                open = None;
            }
            i += 1;
        }
    }
    Ok(q)
}

/// The index just past the string literal that opens at `at`.
fn skip_string(s: &[char], at: usize) -> Result<usize, String> {
    let q = s[at];
    let mut i = at + 1;
    while i < s.len() {
        if s[i] == '\\' && q != '`' {
            i += 2;
            continue;
        }
        if s[i] == q {
            return Ok(i + 1);
        }
        i += 1;
    }
    Err("unterminated string".into())
}

/// Label names of `rule=~"$rule", outcome!="done"`.
fn parse_matchers(inner: &str) -> Result<Vec<String>, String> {
    let s: Vec<char> = inner.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    loop {
        while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
            i += 1;
        }
        if i == s.len() {
            return Ok(names);
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        let name: String = s[start..i].iter().collect();
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < s.len() && "=!~".contains(s[i]) {
            i += 1;
        }
        let op: String = s[op_start..i].iter().collect();
        if name.is_empty() || !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
            return Err(format!("bad label matcher in {{{inner}}}"));
        }
        if name == "__name__" {
            return Err("a metric chosen by {__name__=...} cannot be checked: name it".into());
        }
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        if i == s.len() || !"\"'`".contains(s[i]) {
            return Err(format!("label `{name}` without a quoted value"));
        }
        i = skip_string(&s, i)?;
        names.push(name);
    }
}

/// Grafana's `label_values(SELECTOR, LABEL)`: the selector as a query, and the label.
fn parse_label_values(q: &str) -> Result<(Query, String), String> {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("`{q}`: only label_values(metric{{...}}, label) is checked"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("`{q}`: label_values without a metric cannot be checked"))?;
    let query = parse_promql(selector)?;
    if query.selectors.len() != 1 {
        return Err(format!("`{q}`: want exactly one metric"));
    }
    Ok((query, label.trim().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// The checks: each returns what is wrong, one line each, naming where.
// ---------------------------------------------------------------------------------------------

/// Label names Managed Service for Prometheus adds to every series the Cloud Run sidecar
/// writes: the `prometheus_target` resource labels and the sidecar's default target labels
/// (GoogleCloudPlatform/run-gmp-sidecar, confgenerator: `namespace` is the Cloud Run service).
const GMP_LABELS: &[&str] = &[
    "project_id",
    "location",
    "cluster",
    "namespace",
    "job",
    "instance",
    "instanceId",
    "service_name",
    "revision_name",
    "configuration_name",
];

/// Problems with one PromQL query (`label` = `Some(l)` for a `label_values(..., l)`), `extra`
/// being labels the path from the relay to the query adds.
fn check_query(
    what: &str,
    query: &Query,
    label: Option<&str>,
    scrape: &Exposition,
    extra: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    if query.selectors.is_empty() {
        problems.push(format!("{what}: names no metric"));
    }
    let mut all_labels: BTreeSet<&str> = extra.iter().copied().collect();
    let mut unresolved = false;
    for sel in &query.selectors {
        match scrape.labels_of(&sel.metric) {
            Err(why) => {
                unresolved = true;
                problems.push(format!("{what}: {why}"));
            }
            Ok(have) => {
                all_labels.extend(have.iter().map(String::as_str));
                for l in &sel.labels {
                    if !have.contains(l) && !extra.contains(&l.as_str()) {
                        problems.push(format!(
                            "{what}: `{}` has no label `{l}` (it has {have:?})",
                            sel.metric
                        ));
                    }
                }
            }
        }
    }
    for l in query.grouping.iter().map(String::as_str).chain(label) {
        // Grouping labels are looked up on the query's series: with one missing, say only that.
        if !unresolved && !all_labels.contains(l) {
            problems.push(format!(
                "{what}: groups or lists by `{l}`, which none of its series has"
            ));
        }
    }
    problems
}

fn check_expr(what: &str, expr: &str, scrape: &Exposition, extra: &[&str]) -> Vec<String> {
    match parse_promql(expr) {
        Ok(q) => check_query(what, &q, None, scrape, extra),
        Err(e) => vec![format!("{what}: {e}: {expr}")],
    }
}

/// Every panel of a Grafana dashboard, rows' own panels included.
fn grafana_panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Problems of a Grafana dashboard against a scrape; also every PromQL it holds, for coverage.
fn check_grafana(dash: &Value, scrape: &Exposition) -> (Vec<String>, Vec<Query>) {
    let mut problems = Vec::new();
    let mut queries = Vec::new();
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    match var("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push("no `datasource` variable of type datasource (prometheus)".into()),
    }
    for name in ["rule", "target"] {
        if var(name).is_none_or(|v| v["type"] != "query") {
            problems.push(format!("no `{name}` query variable"));
        }
    }
    for v in &vars {
        let name = v["name"].as_str().unwrap_or("?");
        if v["type"] != "query" {
            continue;
        }
        let text = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        let what = format!("variable `{name}`");
        match parse_label_values(text) {
            Ok((q, label)) => {
                problems.extend(check_query(&what, &q, Some(&label), scrape, &[]));
                queries.push(q);
            }
            Err(e) => problems.push(format!("{what}: {e}")),
        }
        if v["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{what}: not on the ${{datasource}} variable"));
        }
    }
    for p in grafana_panels(dash) {
        let title = p["title"].as_str().unwrap_or("?");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel `{title}`: no query"));
        }
        if p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "panel `{title}`: not on the ${{datasource}} variable"
            ));
        }
        for t in &targets {
            let what = format!("panel `{title}` query {}", t["refId"]);
            let Some(expr) = t["expr"].as_str() else {
                problems.push(format!("{what}: no PromQL `expr`"));
                continue;
            };
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{what}: not on the ${{datasource}} variable"));
            }
            problems.extend(check_expr(&what, expr, scrape, &[]));
            if let Ok(q) = parse_promql(expr) {
                queries.push(q);
            }
        }
    }
    (problems, queries)
}

/// The `le` values exposed by the replication latency histogram, as numbers (no `+Inf`).
fn replication_bounds(scrape: &Exposition) -> Vec<f64> {
    let f = &scrape.families["image_relay_replication_latency_seconds"];
    let mut b: Vec<f64> =
        f.le.iter()
            .filter(|l| *l != "+Inf")
            .map(|l| l.parse().unwrap())
            .collect();
    b.sort_by(f64::total_cmp);
    b
}

// ---------------------------------------------------------------------------------------------
// Cloud Monitoring metric types the module's dashboard and alerts may use.
// ---------------------------------------------------------------------------------------------

struct MetricType {
    name: &'static str,
    resource: &'static str,
    /// GAUGE, DELTA or CUMULATIVE.
    kind: &'static str,
    /// INT64, DOUBLE or DISTRIBUTION.
    value: &'static str,
    labels: &'static [&'static str],
}

/// Google's metric types the module uses, as listed in "Google Cloud metrics"
/// (cloud.google.com/monitoring/api/metrics_gcp, run and pubsub). A type missing here fails the
/// test: add it only after checking its kind, value type and labels there.
const GCP_METRICS: &[MetricType] = &[
    MetricType {
        name: "run.googleapis.com/request_count",
        resource: "cloud_run_revision",
        kind: "DELTA",
        value: "INT64",
        labels: &["response_code", "response_code_class", "route"],
    },
    MetricType {
        name: "run.googleapis.com/request_latencies",
        resource: "cloud_run_revision",
        kind: "DELTA",
        value: "DISTRIBUTION",
        labels: &["response_code", "response_code_class", "route"],
    },
    MetricType {
        name: "run.googleapis.com/container/instance_count",
        resource: "cloud_run_revision",
        kind: "GAUGE",
        value: "INT64",
        labels: &["state", "container_name"],
    },
    MetricType {
        name: "pubsub.googleapis.com/subscription/num_undelivered_messages",
        resource: "pubsub_subscription",
        kind: "GAUGE",
        value: "INT64",
        labels: &[],
    },
    MetricType {
        name: "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
        resource: "pubsub_subscription",
        kind: "GAUGE",
        value: "INT64",
        labels: &[],
    },
    MetricType {
        name: "pubsub.googleapis.com/subscription/dead_letter_message_count",
        resource: "pubsub_subscription",
        kind: "DELTA",
        value: "INT64",
        labels: &[],
    },
    MetricType {
        name: "pubsub.googleapis.com/subscription/push_request_count",
        resource: "pubsub_subscription",
        kind: "DELTA",
        value: "INT64",
        labels: &["response_class", "response_code", "delivery_type"],
    },
];

/// Labels of the monitored resources above (cloud.google.com/monitoring/api/resources).
fn resource_labels(resource: &str) -> &'static [&'static str] {
    match resource {
        "cloud_run_revision" => &[
            "project_id",
            "service_name",
            "revision_name",
            "location",
            "configuration_name",
        ],
        "pubsub_subscription" => &["project_id", "subscription_id"],
        _ => &[],
    }
}

/// A logs-based metric of the module: `resource "google_logging_metric" "NAME"`.
struct LogMetric {
    resource: String,
    kind: String,
    value: String,
    labels: Vec<String>,
}

/// Every `google_logging_metric` of the module's .tf files, with its descriptor.
fn module_log_metrics() -> BTreeMap<String, LogMetric> {
    let block =
        regex::Regex::new(r#"(?m)^resource "google_logging_metric" "([a-z0-9_]+)" \{"#).unwrap();
    let label_key = regex::Regex::new(r#"key\s*=\s*"([a-z_]+)""#).unwrap();
    let resource = regex::Regex::new(r#"resource\.type\s*=\s*"([a-z_]+)""#).unwrap();
    let attr = |body: &str, key: &str| {
        regex::Regex::new(&format!(r#"{key}\s*=\s*"([A-Z0-9_]+)""#))
            .unwrap()
            .captures(body)
            .map(|c| c[1].to_owned())
            .unwrap_or_default()
    };
    let mut out = BTreeMap::new();
    for (_, text) in module_tf_files() {
        for c in block.captures_iter(&text) {
            let start = c.get(0).unwrap().start();
            let body = &text[start..start + closing(&text[start..], 0, '{', '}').unwrap()];
            // The descriptor's own kind and type come before its label blocks (which have a
            // value_type of their own).
            let descriptor = body.split("labels {").next().unwrap();
            out.insert(
                c[1].to_owned(),
                LogMetric {
                    // A logs-based metric is written against the log entries' resource.
                    resource: resource
                        .captures(body)
                        .map(|r| r[1].to_owned())
                        .unwrap_or_default(),
                    kind: attr(descriptor, "metric_kind"),
                    value: attr(descriptor, "value_type"),
                    labels: label_key
                        .captures_iter(body)
                        .map(|l| l[1].to_owned())
                        .collect(),
                },
            );
        }
    }
    out
}

fn module_tf_files() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(repo_file(MODULE))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// What a metric type is, resolved: Google's, or a logs-based metric of the module named by a
/// template placeholder (`logging.googleapis.com/user/${copy_failures_metric}`) or by a
/// Terraform reference (`.../user/${google_logging_metric.copy_failures.name}`).
struct Resolved {
    resource: String,
    kind: String,
    value: String,
    labels: Vec<String>,
}

fn resolve_metric_type(
    name: &str,
    placeholders: &BTreeMap<String, String>,
    logs: &BTreeMap<String, LogMetric>,
) -> Result<Resolved, String> {
    if let Some(user) = name.strip_prefix("logging.googleapis.com/user/") {
        // `${expr}` in HCL; in a rendered template, the sample value of a placeholder.
        let reference = regex::Regex::new(r"^\$\{([a-z0-9_.]+)\}$").unwrap();
        let expr = match reference.captures(user) {
            Some(c) => c[1].to_owned(),
            None => placeholders.get(user).cloned().ok_or_else(|| {
                format!("`{name}`: name a logs-based metric of the module by reference")
            })?,
        };
        let res = regex::Regex::new(r"^google_logging_metric\.([a-z0-9_]+)\.name$").unwrap();
        let id = res
            .captures(&expr)
            .map(|c| c[1].to_owned())
            .ok_or_else(|| format!("`{name}`: `{expr}` is not a google_logging_metric's name"))?;
        let m = logs
            .get(&id)
            .ok_or_else(|| format!("`{name}`: the module defines no google_logging_metric.{id}"))?;
        return Ok(Resolved {
            resource: m.resource.clone(),
            kind: m.kind.clone(),
            value: m.value.clone(),
            labels: m.labels.clone(),
        });
    }
    let m = GCP_METRICS.iter().find(|m| m.name == name).ok_or_else(|| {
        format!("`{name}` is not a metric type this test knows (GCP_METRICS) or the module defines")
    })?;
    Ok(Resolved {
        resource: m.resource.into(),
        kind: m.kind.into(),
        value: m.value.into(),
        labels: m.labels.iter().map(|s| s.to_string()).collect(),
    })
}

/// A Cloud Monitoring filter's `metric.type`, `resource.type` and label references checked
/// against what the metric type has.
fn check_filter(
    what: &str,
    filter: &str,
    placeholders: &BTreeMap<String, String>,
    logs: &BTreeMap<String, LogMetric>,
) -> (Vec<String>, Option<Resolved>) {
    let get = |key: &str| {
        regex::Regex::new(&format!(r#"{key}\s*=\s*"([^"]+)""#))
            .unwrap()
            .captures(filter)
            .map(|c| c[1].to_owned())
    };
    let Some(metric_type) = get(r"metric\.type") else {
        return (
            vec![format!("{what}: filter names no metric.type: {filter}")],
            None,
        );
    };
    let m = match resolve_metric_type(&metric_type, placeholders, logs) {
        Ok(m) => m,
        Err(e) => return (vec![format!("{what}: {e}")], None),
    };
    let mut problems = Vec::new();
    match get(r"resource\.type") {
        Some(r) if r == m.resource => {}
        other => problems.push(format!(
            "{what}: `{metric_type}` is written for resource.type \"{}\", the filter says {other:?}",
            m.resource
        )),
    }
    problems.extend(check_label_refs(what, filter, &m));
    (problems, Some(m))
}

/// `metric.label."x"`, `metric.labels.x`, `resource.label."x"`, `resource.labels.x` in `text`
/// must be labels of the metric type or of its resource.
fn check_label_refs(what: &str, text: &str, m: &Resolved) -> Vec<String> {
    let re = regex::Regex::new(r#"\b(metric|resource)\.labels?\.(?:"([A-Za-z_]+)"|([A-Za-z_]+))"#)
        .unwrap();
    re.captures_iter(text)
        .filter_map(|c| {
            let label = c.get(2).or(c.get(3)).unwrap().as_str();
            let ok = if &c[1] == "metric" {
                m.labels.iter().any(|l| l == label)
            } else {
                resource_labels(&m.resource).contains(&label)
            };
            (!ok).then(|| format!("{what}: {}.label \"{label}\" is not a label of it", &c[1]))
        })
        .collect()
}

/// A per-series aligner must suit the metric's kind and value type, or the API refuses the
/// dashboard (or the alert policy) at apply, which no offline check would otherwise see.
fn check_aligner(what: &str, aligner: &str, m: &Resolved) -> Option<String> {
    let numeric = m.value == "INT64" || m.value == "DOUBLE";
    let distribution = m.value == "DISTRIBUTION";
    let ok = match aligner {
        "ALIGN_NONE" => true,
        "ALIGN_RATE" | "ALIGN_DELTA" => {
            (m.kind == "DELTA" || m.kind == "CUMULATIVE") && (numeric || aligner == "ALIGN_DELTA")
        }
        "ALIGN_SUM" => numeric || distribution,
        "ALIGN_MEAN" | "ALIGN_MIN" | "ALIGN_MAX" | "ALIGN_COUNT" => numeric,
        a if a.starts_with("ALIGN_PERCENTILE_") => distribution,
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "{what}: {aligner} does not apply to a {} {} metric",
            m.kind, m.value
        )
    })
}

/// `templatefile("${path.module}/FILE", { key = expr, ... })` in `tf`: the keys and expressions.
fn templatefile_args(tf: &str, file: &str) -> Option<BTreeMap<String, String>> {
    let call = format!("templatefile(\"${{path.module}}/{file}\", {{");
    let at = tf.find(&call)? + call.len() - 1;
    let end = closing(tf, at, '{', '}')?;
    let kv = regex::Regex::new(r"(?m)^\s*([a-z_]+)\s*=\s*(.+?)\s*$").unwrap();
    Some(
        kv.captures_iter(&tf[at + 1..end])
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
            .collect(),
    )
}

/// Whatever a template interpolates (`${...}`): each must be a name the module passes, since
/// Terraform would evaluate anything else (`${metric.labels.x}`, meant for Cloud Monitoring's
/// legend, must be written `$${...}`, Terraform's escape for a literal `${`).
fn placeholders_in(template: &str) -> BTreeSet<String> {
    regex::Regex::new(r"(^|[^$])\$\{([^}]*)\}")
        .unwrap()
        .captures_iter(template)
        .map(|c| c[2].to_owned())
        .collect()
}

/// Values standing in for the module's placeholders, shaped like what Terraform passes.
fn sample_value(placeholder: &str) -> Option<&'static str> {
    Some(match placeholder {
        "project_id" => "acme-build",
        "service_name" => "image-relay",
        "region" => "europe-west1",
        "delivery_subscription" => "image-relay-push",
        "dead_letter_subscription" => "image-relay-dead-letter",
        "copy_failures_metric" => "image-relay-copy-failures",
        "slo_percent" => "99",
        "slo_within_seconds" => "600",
        "slo_bound" => "512",
        "slo_ratio" => "0.99",
        "slo_window" => "1h",
        _ => return None,
    })
}

/// A module template rendered with sample values, after checking that the module passes every
/// placeholder it uses (Terraform would only say so at plan, which CI cannot run offline).
fn render_module_template(
    path: &str,
    tf_file: &str,
) -> Result<(String, BTreeMap<String, String>), Vec<String>> {
    let file = path.strip_prefix(&format!("{MODULE}/")).unwrap();
    render_template(
        file,
        &read(path),
        tf_file,
        &read(&format!("{MODULE}/{tf_file}")),
    )
}

/// [`render_module_template`] on given texts: `template` is `file`, loaded by `tf_file` = `tf`.
fn render_template(
    file: &str,
    template: &str,
    tf_file: &str,
    tf: &str,
) -> Result<(String, BTreeMap<String, String>), Vec<String>> {
    let Some(args) = templatefile_args(tf, file) else {
        return Err(vec![format!(
            "{tf_file} does not load {file} with templatefile()"
        )]);
    };
    let mut problems = Vec::new();
    if template.replace("%%{", "").contains("%{") {
        problems.push(format!(
            "{file}: `%{{` is a template directive; keep the file plain"
        ));
    }
    let mut rendered = template.replace("$${", "\u{0}");
    for p in placeholders_in(template) {
        if !args.contains_key(&p) {
            problems.push(format!("{file}: ${{{p}}} is not passed by {tf_file}"));
        }
        match sample_value(&p) {
            Some(v) => rendered = rendered.replace(&format!("${{{p}}}"), v),
            None => problems.push(format!("{file}: no sample value for ${{{p}}} in this test")),
        }
    }
    if problems.is_empty() {
        Ok((rendered.replace('\u{0}', "${"), args))
    } else {
        Err(problems)
    }
}

/// Problems of the module's Cloud Monitoring dashboard (and the metric types its alert policies
/// filter on) against the scrape; also the PromQL it holds.
fn check_terraform_dashboard(scrape: &Exposition) -> Vec<String> {
    let (rendered, args) = match render_module_template(TF_DASHBOARD, "dashboard.tf") {
        Ok(r) => r,
        Err(p) => return p,
    };
    let dash: Value = match serde_json::from_str(&rendered) {
        Ok(d) => d,
        Err(e) => return vec![format!("{TF_DASHBOARD}: not JSON once rendered: {e}")],
    };
    let logs = module_log_metrics();
    // What each rendered sample value stands for: the Terraform expression the module passes.
    let passed: BTreeMap<String, String> = args
        .iter()
        .filter_map(|(k, expr)| Some((sample_value(k)?.to_owned(), expr.clone())))
        .collect();
    let mut problems = Vec::new();
    let columns = dash["mosaicLayout"]["columns"].as_i64().unwrap_or(0);
    let tiles = dash["mosaicLayout"]["tiles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if dash["displayName"].as_str().is_none_or(str::is_empty) || tiles.is_empty() {
        problems.push(format!(
            "{TF_DASHBOARD}: want a displayName and mosaicLayout tiles"
        ));
    }
    let mut promql = 0;
    for tile in &tiles {
        let title = tile["widget"]["title"].as_str().unwrap_or("?").to_owned();
        let (x, w) = (
            tile["xPos"].as_i64().unwrap_or(0),
            tile["width"].as_i64().unwrap_or(0),
        );
        if w <= 0 || x + w > columns {
            problems.push(format!(
                "tile `{title}`: x {x} + width {w} outside {columns} columns"
            ));
        }
        let mut queries = Vec::new();
        collect_key(&tile["widget"], "timeSeriesQuery", &mut queries);
        if queries.is_empty() && tile["widget"]["text"].is_null() {
            problems.push(format!("tile `{title}`: no timeSeriesQuery"));
        }
        for (n, tsq) in queries.iter().enumerate() {
            let what = format!("tile `{title}` query {n}");
            if let Some(expr) = tsq["prometheusQuery"].as_str() {
                promql += 1;
                problems.extend(check_expr(&what, expr, scrape, GMP_LABELS));
                if !expr.contains("namespace=\"image-relay\"") {
                    problems.push(format!(
                        "{what}: select the service (namespace=\"${{service_name}}\"): {expr}"
                    ));
                }
            } else if let Some(f) = tsq.get("timeSeriesFilter") {
                let filter = f["filter"].as_str().unwrap_or("");
                let (p, m) = check_filter(&what, filter, &passed, &logs);
                problems.extend(p);
                let Some(m) = m else { continue };
                let agg = &f["aggregation"];
                match agg["perSeriesAligner"].as_str() {
                    Some(a) => problems.extend(check_aligner(&what, a, &m)),
                    None => problems.push(format!("{what}: no perSeriesAligner")),
                }
                for g in agg["groupByFields"].as_array().into_iter().flatten() {
                    problems.extend(check_label_refs(&what, g.as_str().unwrap_or(""), &m));
                }
            } else {
                // MQL (timeSeriesQueryLanguage) or anything else would escape these checks.
                problems.push(format!(
                    "{what}: only timeSeriesFilter and prometheusQuery are checked"
                ));
            }
        }
    }
    if promql == 0 {
        problems.push(format!(
            "{TF_DASHBOARD}: no PromQL tile shows the relay's own metrics"
        ));
    }
    // The alert policies' filters, in HCL (`metric.type=\"...\"`), name real metric types too.
    let hcl_filter = regex::Regex::new(r#"filter\s*=\s*"((?:[^"\\]|\\.)*)""#).unwrap();
    let aligner = regex::Regex::new(r#"per_series_aligner\s*=\s*"([A-Z0-9_]+)""#).unwrap();
    for (file, text) in module_tf_files() {
        for c in hcl_filter.captures_iter(&text) {
            let filter = c[1].replace("\\\"", "\"");
            let (p, m) = check_filter(&file, &filter, &BTreeMap::new(), &logs);
            problems.extend(p);
            // The aligner of the alert condition this filter belongs to.
            let rest = &text[c.get(0).unwrap().end()..];
            if let (Some(m), Some(a)) = (m, aligner.captures(rest)) {
                problems.extend(check_aligner(&file, &a[1], &m));
            }
        }
    }
    problems
}

fn collect_key<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == key {
                    out.push(child);
                } else {
                    collect_key(child, key, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| collect_key(c, key, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The scrape, taken once for the tests of this file.
// ---------------------------------------------------------------------------------------------

static SCRAPE: OnceCell<String> = OnceCell::const_new();

/// `/metrics` of the service in process after a copy, a hold, an ignored and a malformed
/// delivery, and of `image-relay serve` after a reload: every family with samples.
async fn scrape() -> Exposition {
    let text = SCRAPE
        .get_or_init(|| async { with_timeout(90, live_scrape()).await })
        .await;
    Exposition::parse(text).unwrap()
}

async fn live_scrape() -> String {
    let src = Registry::start().await;
    let dst = Registry::start().await;
    let seed = Seeder::for_registry(&src);
    let key = CosignKey::generate();
    let keys = tempfile::tempdir().unwrap();
    let pub_key = key.write_public(keys.path(), "release.pub");
    let (s, d) = (src.host(), dst.host());
    let rules = format!(
        "[[rule]]\nname = \"releases\"\nsource = \"{s}/releases\"\nimages = [\".*\"]\ntags = ['v[0-9.]+']\n\
         targets = [\"{d}/partner\"]\n\n\
         [[rule]]\nname = \"signed\"\nsource = \"{s}/signed\"\nimages = [\".*\"]\ntags = ['v[0-9.]+']\n\
         targets = [\"{d}/signed\"]\nrequire_signature = {{ keys = [{:?}] }}\n\n\
         [registry.\"{s}\"]\nauth = \"none\"\n[registry.\"{d}\"]\nauth = \"none\"\n",
        pub_key.display().to_string()
    );
    let app = App::start(&rules);
    let copied = seed
        .push_random_image("releases/app", Some("v1"), Format::Oci, 71)
        .await;
    let unsigned = seed
        .push_random_image("signed/app", Some("v1"), Format::Oci, 72)
        .await;
    let posts = [
        (
            notification(
                "INSERT",
                &format!("{s}/releases/app"),
                Some(&copied.manifest.digest),
                Some("v1"),
            ),
            "copied",
        ),
        (
            notification(
                "INSERT",
                &format!("{s}/signed/app"),
                Some(&unsigned.manifest.digest),
                Some("v1"),
            ),
            "held",
        ),
    ];
    for (i, (n, want)) in posts.iter().enumerate() {
        let reply = app
            .post(&deliver(Form::PubSubPush, n, &format!("d{i}")))
            .await;
        assert_eq!(
            (reply.status, reply.json()["targets"][0]["outcome"].as_str()),
            (200, Some(*want)),
            "{}",
            reply.text()
        );
    }
    let ignored = notification("INSERT", &format!("{s}/elsewhere/app"), None, Some("v1"));
    assert_eq!(
        app.post(&deliver(Form::EventarcBinary, &ignored, "d3"))
            .await
            .status,
        204
    );
    let malformed = common::service::Delivery {
        headers: vec![],
        body: b"not json".to_vec(),
    };
    assert_eq!(app.post(&malformed).await.status, 400);
    let in_process = app.metrics().await;

    // Reloads are the serving process's (a file watcher and SIGHUP in src/serve.rs): App has
    // neither, so one `serve` reloads its rules once. Rewriting the file rather than sending
    // SIGHUP: the file watcher is in place before `serve` listens, while a SIGHUP that came
    // before its handler was installed would stop the process.
    let svc = Service::start(&rules, &["--push-auth", "none"]).await;
    std::fs::write(&svc.rules, &rules).unwrap();
    let served = eventually(Duration::from_secs(10), "a counted reload", || async {
        let m = svc.metrics().await;
        match counter(&m, "image_relay_rule_reloads_total{result=\"success\"}") {
            Some(n) if n >= 1.0 => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // One text for both: the same binary declares the same families, so their series add up.
    format!("{in_process}{served}")
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_query_of_the_grafana_dashboard_selects_series_the_relay_exports() {
    let scrape = scrape().await;
    let dash: Value = serde_json::from_str(&read(GRAFANA)).expect("the Grafana dashboard is JSON");
    let (mut problems, queries) = check_grafana(&dash, &scrape);

    // Every family the relay exports has a panel: a new metric comes with its panel.
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| &q.selectors)
        .filter_map(|s| scrape.family_of(&s.metric))
        .collect();
    for family in scrape
        .families
        .keys()
        .filter(|f| f.starts_with("image_relay_"))
    {
        if !used.contains(family) {
            problems.push(format!("family `{family}` has no panel"));
        }
    }

    // The objective variable offers only bounds the histogram has: between two bounds it
    // cannot tell on time from late. Its panel matches `le` as "N" or "N.0".
    let le = &scrape.families["image_relay_replication_latency_seconds"].le;
    let objective = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "objective")
        .expect("an objective variable");
    for o in objective["query"].as_str().unwrap().split(',') {
        if !le.contains(o) && !le.contains(&format!("{o}.0")) {
            problems.push(format!(
                "objective {o} s is not a bucket bound (le: {le:?})"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn the_terraform_dashboard_and_replication_objective_query_what_exists() {
    let scrape = scrape().await;
    let mut problems = check_terraform_dashboard(&scrape);

    // The objective's alert query: the same scrape, through the sidecar.
    match render_module_template(TF_SLO_QUERY, "slo.tf") {
        Ok((query, _)) => problems.extend(check_expr(
            "replication objective",
            &query,
            &scrape,
            GMP_LABELS,
        )),
        Err(p) => problems.extend(p),
    }

    // The module picks the objective's bucket bound from this list: it must be the relay's.
    let listed: Vec<f64> = serde_json::from_str(&read(TF_BUCKETS)).unwrap();
    let exposed = replication_bounds(&scrape);
    if listed != exposed {
        problems.push(format!(
            "{TF_BUCKETS} lists {listed:?}, the relay's histogram has {exposed:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks above, on a scrape written out here, so that they are seen failing: each
/// mistake a dashboard can make is reported, and a correct query is not.
#[test]
fn the_checks_report_what_the_relay_does_not_export() {
    let scrape = Exposition::parse(
        "# HELP image_relay_events Deliveries.\n# TYPE image_relay_events counter\n\
         image_relay_events_total{delivery=\"pubsub_push\",action=\"INSERT\",outcome=\"done\"} 1\n\
         # TYPE image_relay_replication_latency_seconds histogram\n\
         image_relay_replication_latency_seconds_sum 1.0\n\
         image_relay_replication_latency_seconds_count 1\n\
         image_relay_replication_latency_seconds_bucket{le=\"0.25\"} 0\n\
         image_relay_replication_latency_seconds_bucket{le=\"+Inf\"} 1\n\
         # TYPE image_relay_copies_in_flight gauge\nimage_relay_copies_in_flight 0\n\
         # TYPE image_relay_rule_reloads counter\n# EOF\n",
    )
    .unwrap();
    let problems = |expr: &str| check_expr("q", expr, &scrape, &[]);

    // Correct: counters with _total, histograms by _bucket/_sum/_count, gauges by name.
    for ok in [
        "sum by (outcome) (rate(image_relay_events_total{outcome!~\"done|ignored\"}[$__rate_interval]))",
        "histogram_quantile(0.99, sum by (le) (rate(image_relay_replication_latency_seconds_bucket[5m])))",
        "sum(rate(image_relay_replication_latency_seconds_sum[1h])) / sum(rate(image_relay_replication_latency_seconds_count[1h]))",
        "sum(image_relay_copies_in_flight) > bool 0",
    ] {
        assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
    }
    // Wrong, each for one reason the report names.
    for (bad, says) in [
        (
            "rate(image_relay_event_total[5m])",
            "`image_relay_event_total` is not exported",
        ),
        (
            "rate(image_relay_events[5m])",
            "a counter family, whose series are [\"image_relay_events_total\"",
        ),
        ("image_relay_copies_in_flight_total", "is not exported"),
        (
            "histogram_quantile(0.5, rate(image_relay_replication_latency_seconds[5m]))",
            "is not exported",
        ),
        (
            "sum(rate(image_relay_events_total{result=\"done\"}[5m]))",
            "has no label `result`",
        ),
        (
            "sum by (rule) (rate(image_relay_events_total[5m]))",
            "groups or lists by `rule`",
        ),
        (
            "increase(image_relay_rule_reloads_total[1h])",
            "has no sample",
        ),
        ("{__name__=~\"image_relay_.*\"}", "cannot be checked"),
        ("vector(1)", "names no metric"),
    ] {
        let p = problems(bad);
        assert!(
            p.iter().any(|l| l.contains(says)),
            "{bad}: want `{says}`, got {p:?}"
        );
    }

    // Grafana: a panel off the datasource variable, and a template variable listing a label
    // its metric lacks.
    let dash: Value = serde_json::from_str(
        r#"{"templating": {"list": [
              {"type": "datasource", "name": "datasource", "query": "prometheus"},
              {"type": "query", "name": "rule", "datasource": {"uid": "${datasource}"},
               "query": {"query": "label_values(image_relay_events_total, rule)"}},
              {"type": "query", "name": "target", "datasource": {"uid": "${datasource}"},
               "query": "label_values(image_relay_events_total{outcome=\"done\"}, delivery)"}]},
            "panels": [{"type": "row", "title": "r", "panels": [
              {"type": "timeseries", "title": "p", "datasource": {"uid": "prom"},
               "targets": [{"refId": "A", "datasource": {"uid": "prom"},
                            "expr": "sum(rate(image_relay_copies_total[5m]))"}]}]}]}"#,
    )
    .unwrap();
    let (p, _) = check_grafana(&dash, &scrape);
    for says in [
        "variable `rule`: groups or lists by `rule`",
        "panel `p`: not on the ${datasource} variable",
        "panel `p` query \"A\": `image_relay_copies_total` is not exported",
    ] {
        assert!(
            p.iter().any(|l| l.contains(says)),
            "want `{says}`, got {p:?}"
        );
    }
    assert!(!p.iter().any(|l| l.contains("variable `target`")), "{p:?}");

    // Cloud Monitoring: an unknown type, a wrong resource, a label the type lacks, an aligner
    // that does not fit, a logs-based metric the module does not define.
    let logs = module_log_metrics();
    let copy_failures = &logs["copy_failures"];
    assert_eq!(
        (
            copy_failures.kind.as_str(),
            copy_failures.value.as_str(),
            copy_failures.resource.as_str(),
            copy_failures.labels.clone()
        ),
        (
            "DELTA",
            "INT64",
            "cloud_run_revision",
            vec!["rule".into(), "target".into()]
        ),
        "monitoring.tf's log metric, as read"
    );
    assert!(
        logs.contains_key("copy_failures"),
        "monitoring.tf's log metric is found"
    );
    let none = BTreeMap::new();
    let filter = |f: &str| check_filter("t", f, &none, &logs).0;
    assert_eq!(
        filter(
            r#"metric.type="run.googleapis.com/request_count" resource.type="cloud_run_revision" resource.label."service_name"="x""#
        ),
        Vec::<String>::new()
    );
    for (bad, says) in [
        (
            r#"metric.type="run.googleapis.com/request_counts" resource.type="cloud_run_revision""#,
            "not a metric type",
        ),
        (
            r#"metric.type="run.googleapis.com/request_count" resource.type="pubsub_subscription""#,
            "written for resource.type",
        ),
        (
            r#"metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" resource.type="pubsub_subscription" resource.label."service_name"="x""#,
            "\"service_name\" is not a label",
        ),
        (
            r#"metric.type="logging.googleapis.com/user/${google_logging_metric.held.name}" resource.type="cloud_run_revision""#,
            "defines no google_logging_metric.held",
        ),
    ] {
        let p = filter(bad);
        assert!(
            p.iter().any(|l| l.contains(says)),
            "{bad}: want `{says}`, got {p:?}"
        );
    }
    let gauge = resolve_metric_type(
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
        &none,
        &logs,
    )
    .unwrap();
    assert!(check_aligner("t", "ALIGN_RATE", &gauge).is_some());
    assert!(check_aligner("t", "ALIGN_PERCENTILE_99", &gauge).is_some());
    assert!(check_aligner("t", "ALIGN_MAX", &gauge).is_none());

    // Templates: whatever Terraform would interpolate must be passed; Cloud Monitoring's own
    // `${...}` must be escaped.
    let tf = "x = templatefile(\"${path.module}/t.tftpl\", {\n  service_name = google_cloud_run_v2_service.relay.name\n})";
    let p = render_template("t.tftpl", r#"{"a": "${metric.labels.x}"}"#, "x.tf", tf).unwrap_err();
    assert!(
        p.iter()
            .any(|l| l.contains("${metric.labels.x} is not passed by x.tf")),
        "{p:?}"
    );
    let p = render_template("t.tftpl", r#"{"a": "${region}"}"#, "x.tf", tf).unwrap_err();
    assert!(
        p.iter().any(|l| l.contains("${region} is not passed")),
        "{p:?}"
    );
    let (ok, _) = render_template(
        "t.tftpl",
        r#"{"a": "$${metric.labels.x}", "b": "${service_name}"}"#,
        "x.tf",
        tf,
    )
    .unwrap();
    assert_eq!(ok, r#"{"a": "${metric.labels.x}", "b": "image-relay"}"#);
    assert!(render_template("t.tftpl", "{}", "x.tf", "x = file(\"t.tftpl\")").is_err());
}
