//! Metrics of a host, in the Prometheus (OpenMetrics) text format, from the
//! `prometheus-client` crate; [`serve`] answers scrapes over HTTP (`charm-host agent` and
//! `run` with `--metrics-addr HOST:PORT`).
//!
//! ```no_run
//! # async fn example(host: charm_host::Host) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! tokio::spawn(charm_host::metrics::serve(listener, host.metrics().clone()));
//! // curl http://127.0.0.1:9464/metrics
//! # Ok(()) }
//! ```
//!
//! Every name has the prefix `charm_host_`. Per unit (labels `app`, `unit`), read when
//! scraped from the units whose agents run in this process:
//! - `unit_leader`: 1 while the unit holds leadership guaranteed for the window (what
//!   `is-leader` answers), else 0;
//! - `unit_term`: the term it holds, 0 while it holds none;
//! - `unit_guarantee_remaining_seconds`: how long its guarantee has left (0 without one);
//! - `unit_leader_services_running`: its leader-only services running;
//! - `unit_store_healthy`: 1 while its claims reach the store, 0 while they fail;
//! - `unit_leader_settings_version`: the version of its application's leader settings, as
//!   it last saw it.
//!
//! Per process: `units` (agents running) and `store_healthy` (1 while no unit's claims fail).
//!
//! Counted as they happen: `hooks_total` (`app`, `unit`, `hook`, `outcome` = `ok` or
//! `error`), `hook_duration_seconds` (histogram; `app`, `hook`), `lease_claim_duration_seconds`
//! (histogram of each claim's round trip to the store; `app`, `kind` = `claim` for a unit
//! without a tenure, `renew` for an extension) and `lease_claim_failures_total` (`app`,
//! `unit`, `kind`: the store failed or did not answer; a refusal is not a failure).
//!
//! Invariants: a scrape reads only memory (no store calls, no locks held across an await:
//! the settings version comes from a receiver each agent subscribed when it started),
//! so it answers however slow the store is; recording a hook or a claim is a few atomic
//! operations on the unit's task. The HTTP server answers `GET /metrics` only, serves at
//! most [`MAX_CONNECTIONS`] connections at once and gives each [`CONNECTION_DEADLINE`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit as MetricUnit};

use crate::events::{Event, EventKind};
use crate::names::UnitName;
use crate::unit::Unit;

/// The prefix of every metric's name.
pub const PREFIX: &str = "charm_host";

/// The content type of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many scrapes [`serve`] answers at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// How long one connection to [`serve`] may last, from accept to close.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    app: String,
    unit: String,
    hook: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookKindLabels {
    app: String,
    hook: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    app: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimFailureLabels {
    app: String,
    unit: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabels {
    app: String,
    unit: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Hook durations: 1 ms to about 65 s.
fn hook_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Claim round trips: 50 µs to about 3 s.
fn claim_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// The metrics of one host: see the module docs.
pub struct Metrics {
    registry: Registry,
    hooks: Family<HookLabels, Counter>,
    hook_duration: Histograms<HookKindLabels>,
    claim_duration: Histograms<ClaimLabels>,
    claim_failures: Family<ClaimFailureLabels, Counter>,
    units: Arc<RunningUnits>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics with nothing recorded and no unit running.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let hooks = Family::<HookLabels, Counter>::default();
        registry.register("hooks", "Hooks run, by hook and outcome", hooks.clone());
        let hook_duration: Histograms<HookKindLabels> = Family::new_with_constructor(hook_buckets);
        registry.register_with_unit("hook_duration", "How long hooks took", MetricUnit::Seconds, hook_duration.clone());
        let claim_duration: Histograms<ClaimLabels> = Family::new_with_constructor(claim_buckets);
        registry.register_with_unit(
            "lease_claim_duration",
            "Round trip of each lease claim or renewal to the store",
            MetricUnit::Seconds,
            claim_duration.clone(),
        );
        let claim_failures = Family::<ClaimFailureLabels, Counter>::default();
        registry.register(
            "lease_claim_failures",
            "Lease claims or renewals the store failed or did not answer",
            claim_failures.clone(),
        );
        let units = Arc::new(RunningUnits::default());
        registry.register_collector(Box::new(units.clone()));
        Self { registry, hooks, hook_duration, claim_duration, claim_failures, units }
    }

    /// The metrics in the OpenMetrics text format, as a scrape answers them.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; a collector's own error would leave it partial.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("cannot encode the metrics: {err}");
        }
        text
    }

    /// Counts a finished hook.
    pub(crate) fn observe(&self, event: &Event) {
        let EventKind::Hook { hook, result, elapsed } = &event.kind else { return };
        let app = event.unit.app().to_string();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        let labels = HookLabels {
            app: app.clone(),
            unit: event.unit.to_string(),
            hook: hook.name().into(),
            outcome: outcome.into(),
        };
        self.hooks.get_or_create(&labels).inc();
        self.hook_duration
            .get_or_create(&HookKindLabels { app, hook: hook.name().into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one claim of `unit` (`renewal`: it held a tenure) that took `elapsed` and
    /// `failed` (the store failed, was lost, or did not answer in time; a refusal because
    /// another unit or incarnation holds the lease is not a failure).
    pub(crate) fn observe_claim(&self, unit: &UnitName, renewal: bool, failed: bool, elapsed: Duration) {
        let kind = if renewal { "renew" } else { "claim" };
        let app = unit.app().to_string();
        self.claim_duration
            .get_or_create(&ClaimLabels { app: app.clone(), kind: kind.into() })
            .observe(elapsed.as_secs_f64());
        if failed {
            self.claim_failures
                .get_or_create(&ClaimFailureLabels { app, unit: unit.to_string(), kind: kind.into() })
                .inc();
        }
    }

    /// Counts `unit`'s agent as running until the returned guard is dropped (when the agent
    /// ends, stopped or killed).
    pub(crate) fn agent_running(&self, unit: &Arc<Unit>) -> AgentRunning {
        // Subscribed here, on the agent's task: a scrape only reads the receiver.
        let settings = unit.leadership().watch_settings();
        let mut units = self.units.lock();
        let count = units.get(unit.name()).map_or(0, |running| running.agents);
        units.insert(
            unit.name().clone(),
            Running { unit: Arc::downgrade(unit), agents: count.saturating_add(1), settings },
        );
        AgentRunning { units: Arc::downgrade(&self.units), unit: unit.name().clone() }
    }
}

/// Keeps a unit counted as running: see [`Metrics::agent_running`].
#[derive(Debug)]
pub(crate) struct AgentRunning {
    units: Weak<RunningUnits>,
    unit: UnitName,
}

impl Drop for AgentRunning {
    fn drop(&mut self) {
        let Some(units) = self.units.upgrade() else { return };
        let mut units = units.lock();
        if let Some(running) = units.get_mut(&self.unit) {
            running.agents = running.agents.saturating_sub(1);
            if running.agents == 0 {
                units.remove(&self.unit);
            }
        }
    }
}

/// The units whose agents run; read at each scrape.
#[derive(Debug, Default)]
struct RunningUnits(Mutex<BTreeMap<UnitName, Running>>);

/// A unit whose agent runs.
#[derive(Debug)]
struct Running {
    unit: Weak<Unit>,
    /// How many of its agents run (a restarted unit's old agent may still be ending).
    agents: u32,
    /// Its application's settings version, as the store last announced it.
    settings: tokio::sync::watch::Receiver<u64>,
}

impl RunningUnits {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<UnitName, Running>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One unit's state as a scrape reads it.
struct UnitReading {
    labels: UnitLabels,
    leader: i64,
    term: i64,
    guarantee_left: f64,
    leader_services: i64,
    store_healthy: i64,
}

impl UnitReading {
    fn of(unit: &Unit) -> Self {
        let leadership = unit.leadership();
        let now = leadership.clock().now();
        let guarantee_left =
            leadership.guarantee_deadline().map_or(Duration::ZERO, |deadline| deadline.saturating_since(now));
        Self {
            labels: UnitLabels { app: unit.name().app().to_string(), unit: unit.name().to_string() },
            leader: i64::from(leadership.is_leader() == Ok(true)),
            term: leadership.held_term().map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
            guarantee_left: guarantee_left.as_secs_f64(),
            leader_services: unit.services().statuses().iter().filter(|s| s.leader_only && s.running).count() as i64,
            store_healthy: i64::from(leadership.store_error().is_none()),
        }
    }
}

/// Encodes one gauge family: `name`, `help`, and a value per label set.
fn gauges<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&MetricUnit>,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one gauge without labels.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for RunningUnits {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (units, settings): (Vec<Arc<Unit>>, Vec<u64>) = self
            .lock()
            .values()
            .filter_map(|running| Some((running.unit.upgrade()?, *running.settings.borrow())))
            .unzip();
        let readings: Vec<UnitReading> = units.iter().map(|unit| UnitReading::of(unit)).collect();
        let per_unit = |value: fn(&UnitReading) -> i64| readings.iter().map(move |r| (r.labels.clone(), value(r)));
        gauges(
            &mut encoder,
            "unit_leader",
            "1 while the unit holds leadership guaranteed for the window",
            None,
            per_unit(|r| r.leader),
        )?;
        gauges(&mut encoder, "unit_term", "The term the unit holds (0: none)", None, per_unit(|r| r.term))?;
        let left = readings.iter().map(|r| (r.labels.clone(), r.guarantee_left));
        gauges(
            &mut encoder,
            "unit_guarantee_remaining",
            "How long the unit's leadership guarantee has left",
            Some(&MetricUnit::Seconds),
            left,
        )?;
        gauges(
            &mut encoder,
            "unit_leader_services_running",
            "Leader-only services running",
            None,
            per_unit(|r| r.leader_services),
        )?;
        gauges(
            &mut encoder,
            "unit_store_healthy",
            "1 while the unit's claims reach the store",
            None,
            per_unit(|r| r.store_healthy),
        )?;
        let versions = readings
            .iter()
            .zip(settings)
            .map(|(r, version)| (r.labels.clone(), i64::try_from(version).unwrap_or(i64::MAX)));
        gauges(
            &mut encoder,
            "unit_leader_settings_version",
            "The version of the leader settings, as the unit last saw it",
            None,
            versions,
        )?;
        gauge(&mut encoder, "units", "Unit agents running in this process", readings.len() as i64)?;
        let healthy = i64::from(readings.iter().all(|r| r.store_healthy == 1));
        gauge(&mut encoder, "store_healthy", "1 while no unit's claims fail", healthy)
    }
}

/// Answers scrapes of `metrics` on `listener` (`GET /metrics`; anything else is 404, or 405
/// for another method) until the task is dropped: at most [`MAX_CONNECTIONS`] at once, each
/// closed after [`CONNECTION_DEADLINE`].
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Owned here: dropping this future (the task's abort) ends every connection with it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait a little instead of spinning.
                tracing::warn!("metrics: cannot accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&metrics, &request);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!("metrics: connection failed: {err}"),
                Err(_) => tracing::debug!("metrics: connection closed after its deadline"),
            }
        });
    }
}

/// [`serve`] on a task of its own, ended when this is dropped.
#[derive(Debug)]
pub struct ServeTask(tokio::task::JoinHandle<()>);

impl ServeTask {
    /// Spawns [`serve`] (inside a tokio runtime).
    pub fn spawn(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> Self {
        Self(tokio::spawn(serve(listener, metrics)))
    }
}

impl Drop for ServeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn answer<B>(metrics: &Metrics, request: &hyper::Request<B>) -> hyper::Response<Body> {
    let reply = |status: hyper::StatusCode, content_type: &str, body: String| {
        let mut response = hyper::Response::new(Body::new(body.into()));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => reply(hyper::StatusCode::OK, CONTENT_TYPE, metrics.encode()),
        (_, "/metrics") => reply(hyper::StatusCode::METHOD_NOT_ALLOWED, text, "only GET\n".into()),
        _ => reply(hyper::StatusCode::NOT_FOUND, text, "metrics are at /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookKind;

    #[test]
    fn names_carry_the_prefix_and_their_unit() {
        let metrics = Metrics::new();
        let unit = UnitName::new("db/0").unwrap();
        let at = std::time::SystemTime::now();
        let hook = EventKind::Hook { hook: HookKind::Install, result: Ok(()), elapsed: Duration::from_millis(3) };
        metrics.observe(&Event::new(at, unit.clone(), None, hook));
        metrics.observe_claim(&unit, true, true, Duration::from_millis(1));
        metrics.observe_claim(&unit, false, false, Duration::ZERO);
        let text = metrics.encode();
        for line in [
            r#"charm_host_hooks_total{app="db",unit="db/0",hook="install",outcome="ok"} 1"#,
            r#"charm_host_hook_duration_seconds_count{app="db",hook="install"} 1"#,
            r#"charm_host_lease_claim_duration_seconds_count{app="db",kind="renew"} 1"#,
            r#"charm_host_lease_claim_failures_total{app="db",unit="db/0",kind="renew"} 1"#,
            "charm_host_units 0",
            "charm_host_store_healthy 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains(r#"failures_total{app="db",unit="db/0",kind="claim"}"#),
            "a refusal is no failure:\n{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
