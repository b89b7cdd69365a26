//! The daemon's Prometheus metrics: counters and histograms that the queue and the HTTP server
//! record as things happen, gauges filled in when scraped. Every label has a bounded set of
//! values (components of the settings, statuses, route patterns, codes): never a job id.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::{ErrorKind, Job, Status};
use crate::runner::outcome::Exit;

/// What `/metrics` answers besides the recorded metrics: values read at the scrape.
pub struct Snapshot {
    /// Jobs in each unfinished status.
    pub jobs: Vec<(Status, u64)>,
    /// Containers this process runs (or follows) now: the slots used.
    pub slots_used: u64,
    pub slots_max: u64,
    pub store_writable: bool,
    pub store_write_failures: u64,
    pub store_writes_refused: u64,
    /// Events the store committed since it opened.
    pub events_written: u64,
    /// `None`: `data_dir` cannot be examined.
    pub data_dir_free_bytes: Option<u64>,
}

/// The metrics of one daemon.
pub struct Metrics {
    registry: Registry,
    jobs_finished: Family<Finished, Counter>,
    job_duration: Family<ComponentStatus, Histogram>,
    queue_wait: Family<Component, Histogram>,
    containers_ended: Family<Reason, Counter>,
    events_written: Counter,
    recovered: Family<Outcome, Counter>,
    requests: Family<Request, Counter>,
    request_duration: Family<Route, Histogram>,
    engine_up: Gauge,
    jobs: Family<JobStatus, Gauge>,
    slots_used: Gauge,
    slots_max: Gauge,
    store_writable: Gauge,
    store_write_failures: Counter,
    store_writes_refused: Counter,
    data_dir_free_bytes: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        // Seconds: 0.1 s to ~4.5 h for jobs, 0.1 ms to ~3 s for requests.
        let job_seconds = || Histogram::new(exponential_buckets(0.1, 3.0, 12));
        let request_seconds = || Histogram::new(exponential_buckets(0.0001, 3.0, 10));
        let mut metrics = Metrics {
            jobs_finished: Family::default(),
            job_duration: Family::new_with_constructor(job_seconds),
            queue_wait: Family::new_with_constructor(job_seconds),
            containers_ended: Family::default(),
            events_written: Counter::default(),
            recovered: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_seconds),
            engine_up: Gauge::default(),
            jobs: Family::default(),
            slots_used: Gauge::default(),
            slots_max: Gauge::default(),
            store_writable: Gauge::default(),
            store_write_failures: Counter::default(),
            store_writes_refused: Counter::default(),
            data_dir_free_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::with_prefix("jobq");
        let m = &metrics;
        let r = &mut registry;
        r.register("jobs", "Jobs in each unfinished status.", m.jobs.clone());
        r.register(
            "jobs_finished",
            "Jobs finished since the daemon started, by component, final status and error type \
             (user, application, killed, none).",
            m.jobs_finished.clone(),
        );
        r.register(
            "job_duration_seconds",
            "Processing time of finished jobs (durationSeconds), by component and final status.",
            m.job_duration.clone(),
        );
        r.register(
            "job_queue_wait_seconds",
            "Time from creation to start of the jobs that started a container, by component.",
            m.queue_wait.clone(),
        );
        r.register(
            "containers_ended",
            "Containers that ended, by how: exit (the component's own exit code), timeout, oom, \
             pids (the process limit reached), killed (the job was killed), lost (gone from the engine).",
            m.containers_ended.clone(),
        );
        r.register(
            "events_written",
            "Job events stored.",
            m.events_written.clone(),
        );
        r.register(
            "recovered_jobs",
            "Jobs found unfinished at start, by what recovery did (reattached, requeued, ended).",
            m.recovered.clone(),
        );
        r.register(
            "http_requests",
            "API requests answered, by method, route pattern and status code.",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer API requests (streamed bodies: to the start of the body), by route.",
            m.request_duration.clone(),
        );
        r.register(
            "engine_up",
            "1 when the Docker engine answered the scheduler's last ping, else 0.",
            m.engine_up.clone(),
        );
        r.register(
            "slots_used",
            "Containers running for jobs.",
            m.slots_used.clone(),
        );
        r.register("slots_max", "max_concurrent_jobs.", m.slots_max.clone());
        r.register(
            "store_writable",
            "1 while the store takes writes, 0 while it refuses them.",
            m.store_writable.clone(),
        );
        r.register(
            "store_write_failures",
            "Store writes that failed in the file system (the store was reopened after each).",
            m.store_write_failures.clone(),
        );
        r.register(
            "store_writes_refused",
            "Store writes refused while data_dir was full or the store was being reopened.",
            m.store_writes_refused.clone(),
        );
        r.register(
            "data_dir_free_bytes",
            "Bytes free for jobq on the file system of data_dir.",
            m.data_dir_free_bytes.clone(),
        );
        metrics.registry = registry;
        metrics
    }

    /// A job started its first container after waiting `wait_seconds` since its creation.
    pub fn job_started(&self, component: &str, wait_seconds: f64) {
        let labels = Component {
            component: component.to_string(),
        };
        self.queue_wait.get_or_create(&labels).observe(wait_seconds);
    }

    /// A job reached its final status.
    pub fn job_finished(&self, job: &Job) {
        let error_type = match (job.status, &job.result.error) {
            (Status::Terminated | Status::Cancelled, _) => "killed",
            (_, Some(error)) if error.kind == ErrorKind::User => "user",
            (_, Some(_)) => "application",
            (_, None) => "none",
        };
        let finished = Finished {
            component: job.component.clone(),
            status: job.status.as_str(),
            error_type,
        };
        self.jobs_finished.get_or_create(&finished).inc();
        let labels = ComponentStatus {
            component: job.component.clone(),
            status: job.status.as_str(),
        };
        let seconds = job.duration_seconds().unwrap_or(0) as f64;
        self.job_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn container_ended(&self, exit: &Exit) {
        let reason = match exit {
            Exit::Code(_) => "exit",
            Exit::TimedOut => "timeout",
            Exit::OutOfMemory => "oom",
            Exit::ProcessLimit => "pids",
            Exit::Terminated => "killed",
            Exit::Lost => "lost",
        };
        let labels = Reason { reason };
        self.containers_ended.get_or_create(&labels).inc();
    }

    /// Recovery at start did `outcome` (reattached, requeued, ended) with one job.
    pub fn recovered(&self, outcome: &'static str) {
        self.recovered.get_or_create(&Outcome { outcome }).inc();
    }

    /// An API request on `route` (its pattern) answered `code` after `seconds`.
    pub fn request(&self, method: &str, route: &str, code: u16, seconds: f64) {
        let labels = Request {
            method: method.to_string(),
            route: route.to_string(),
            code,
        };
        self.requests.get_or_create(&labels).inc();
        let route = Route {
            route: route.to_string(),
        };
        self.request_duration.get_or_create(&route).observe(seconds);
    }

    pub fn engine_answered(&self, up: bool) {
        self.engine_up.set(i64::from(up));
    }

    /// The OpenMetrics text of all metrics, the gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        self.jobs.clear();
        for &(status, count) in &snapshot.jobs {
            let labels = JobStatus {
                status: status.as_str(),
            };
            self.jobs.get_or_create(&labels).set(count as i64);
        }
        // Counters kept elsewhere (the store's): each catches up with its source.
        for (counter, value) in [
            (&self.events_written, snapshot.events_written),
            (&self.store_write_failures, snapshot.store_write_failures),
            (&self.store_writes_refused, snapshot.store_writes_refused),
        ] {
            counter.inc_by(value.saturating_sub(counter.get()));
        }
        self.slots_used.set(snapshot.slots_used as i64);
        self.slots_max.set(snapshot.slots_max as i64);
        self.store_writable.set(i64::from(snapshot.store_writable));
        self.data_dir_free_bytes
            .set(snapshot.data_dir_free_bytes.map_or(-1, |free| free as i64));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finished {
    component: String,
    status: &'static str,
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentStatus {
    component: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Component {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    method: String,
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatus {
    status: &'static str,
}
