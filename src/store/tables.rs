//! The redb tables of the job store: one typed definition per table, and the keys of `meta`.

use redb::{MultimapTableDefinition, TableDefinition};

/// Store-wide values by name: the schema version and the last ids handed out by the sequences.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` key: the layout version of the tables below.
pub(super) const META_SCHEMA_VERSION: &str = "schema_version";
/// `meta` key: the last job id handed out (0 before the first job).
/// Random id of this store, labelling its containers.
pub(super) const META_INSTANCE_ID: &str = "instance_id";
pub(super) const META_LAST_JOB_ID: &str = "last_job_id";
/// `meta` key: the last event id handed out (0 before the first event).
pub(super) const META_LAST_EVENT_ID: &str = "last_event_id";

/// The table layout this code reads and writes.
pub(super) const SCHEMA_VERSION: u64 = 1;

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
