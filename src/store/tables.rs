//! The redb tables of the job store: one typed definition per table, and the keys of `meta`.

use redb::{MultimapTableDefinition, TableDefinition};

/// Store-wide values by name: the schema version and the last ids handed out by the sequences.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` key: the layout version of the tables below.
pub(super) const META_SCHEMA_VERSION: &str = "schema_version";
/// `meta` key: a random id of this store, labelling its containers.
pub(super) const META_INSTANCE_ID: &str = "instance_id";
/// `meta` key: the last job id handed out (0 before the first job).
pub(super) const META_LAST_JOB_ID: &str = "last_job_id";
/// `meta` key: the last event id handed out (0 before the first event).
pub(super) const META_LAST_EVENT_ID: &str = "last_event_id";
/// How far the event sequence jumps when the store opens after a crash: more events than the
/// commits of one second that were not durable yet can hold (see `Store::open`).
pub(super) const EVENT_IDS_SKIPPED_AFTER_A_CRASH: u64 = 1 << 24;

/// `meta` key: the sum of `Job::duration_seconds` over all stored jobs (`GET /stats/project`),
/// kept by `Indexes` in the transaction that changes a job.
pub(super) const META_DURATION_SUM: &str = "duration_sum";

/// The table layout this code reads and writes: 2 since `meta` keeps `duration_sum` (a store of
/// version 1 gets it computed once, at open).
pub(super) const SCHEMA_VERSION: u64 = 2;

/// Job id -> the job record (see `codec`).
pub(super) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");

/// `Status::code()` -> ids of the jobs in that status.
pub(super) const JOBS_BY_STATUS: MultimapTableDefinition<u8, u64> =
    MultimapTableDefinition::new("jobs_by_status");

/// (component, config id or "", branch id) -> job ids.
pub(super) const JOBS_BY_CONFIG: MultimapTableDefinition<(&str, &str, &str), u64> =
    MultimapTableDefinition::new("jobs_by_config");

/// Parent run id ("" for root jobs) -> job ids.
pub(super) const JOBS_BY_PARENT: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("jobs_by_parent_run_id");

/// Created time (Unix microseconds) -> job ids.
pub(super) const JOBS_BY_CREATED: MultimapTableDefinition<i64, u64> =
    MultimapTableDefinition::new("jobs_by_created_time");

/// Run id -> job ids (one in practice).
pub(super) const JOBS_BY_RUN_ID: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("jobs_by_run_id");

/// (job id, event id) -> the event record (see `codec`).
pub(super) const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");

/// Job id -> the container whose log is closed: every line of it was read and its stored
/// events are final (the lines past `max_events_per_job` were summed up and its last lines
/// stored), so reading its log again after a restart must store nothing more. Written only for
/// containers that printed past the bound; the other logs resume by counting stored lines.
pub(super) const LOGS_CLOSED: TableDefinition<u64, &str> = TableDefinition::new("logs_closed");

/// `meta` key: when the store file was made (Unix microseconds); the default branch's `created`.
pub(super) const META_CREATED_TIME: &str = "created_time";
/// `meta` key: the last id handed out to a configuration, row or dev branch made without one.
pub(super) const META_LAST_CONFIGURATION_ID: &str = "last_configuration_id";

/// Dev branch id -> the branch record (see `codec`). The default branch is not stored.
pub(super) const BRANCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("branches");

/// (branch id, component, configuration id) -> the configuration record, rows inside.
pub(super) const CONFIGURATIONS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("configurations");

/// (branch id, component, configuration id, version) -> the configuration record as it was at
/// that version, for each version a change replaced (the current one is in `CONFIGURATIONS`).
pub(super) const CONFIGURATION_VERSIONS: TableDefinition<(&str, &str, &str, u64), &[u8]> =
    TableDefinition::new("configuration_versions");

/// `meta` key: the last id handed out to a Storage file (0 before the first).
pub(super) const META_LAST_STORAGE_FILE_ID: &str = "last_storage_file_id";
/// `meta` key: records (jobs, events, load ids) retention deleted since the store last measured
/// its free space (see `retention::compact_if_mostly_free`).
pub(super) const META_DELETED_SINCE_MEASURED: &str = "deleted_since_measured";

/// Storage bucket id -> the bucket record (see `codec`).
pub(super) const STORAGE_BUCKETS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("storage_buckets");

/// Storage table id (`<bucket id>.<name>`) -> the table record (see `codec`).
pub(super) const STORAGE_TABLES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("storage_tables");

/// Storage file id -> the file record (see `codec`).
pub(super) const STORAGE_FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("storage_files");

/// Load id -> the Storage table it loaded: a load with an id is applied once, even when a crash
/// makes a job's output mapping run again.
pub(super) const STORAGE_LOADS: TableDefinition<&str, &str> = TableDefinition::new("storage_loads");

/// `meta` key: the last id handed out to a schedule (0 before the first).
pub(super) const META_LAST_SCHEDULE_ID: &str = "last_schedule_id";

/// Schedule id -> the activated schedule record (see `codec`), with its next fire time.
pub(super) const SCHEDULES: TableDefinition<u64, &[u8]> = TableDefinition::new("schedules");

/// `meta` key: the last id handed out to a subscription (0 before the first).
pub(super) const META_LAST_SUBSCRIPTION_ID: &str = "last_subscription_id";
/// `meta` key: the last id handed out to a notification delivery (0 before the first).
pub(super) const META_LAST_DELIVERY_ID: &str = "last_delivery_id";

/// Subscription id -> the project subscription record (see `codec`).
pub(super) const SUBSCRIPTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("subscriptions");

/// (subscription id, delivery id) -> the delivery record with its attempts (see `codec`).
pub(super) const DELIVERIES: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("deliveries");

/// Delivery id -> its subscription id, for the deliveries still to be sent: the outbox.
pub(super) const PENDING_DELIVERIES: TableDefinition<u64, u64> =
    TableDefinition::new("pending_deliveries");

/// (subscription id, job id) -> the delivery id: the processing-long event a running job
/// raised for that subscription, which it raises once.
pub(super) const LONG_RUNS_NOTIFIED: TableDefinition<(u64, u64), u64> =
    TableDefinition::new("long_runs_notified");
