//! Plain data shared by every part of jobq: jobs and their statuses, events, stored
//! configurations, Storage records and times. A leaf: it imports nothing else of the crate.

mod condition;
mod configuration;
mod event;
mod flow;
mod job;
mod notification;
mod orchestration;
mod result;
mod schedule;
mod status;
mod storage;
mod time;

pub use configuration::{
    deep_merge, placeholders, replace_placeholders, Branch, Configuration, Row,
};
pub use event::{Event, EventSource, EventType, NewEvent};
pub use flow::{
    document, notified, step, Flow, FlowRun, FlowTask, Stage, Step, TaskJobFacts, TaskKind,
    TaskNote, FLOW,
};
pub(crate) use job::json_text;
pub use job::{
    Behavior, DesiredStatus, InvalidParallelism, Job, JobQuery, JobType, Mode, OnError,
    Parallelism, RunId, SortKey, TimeRange,
};
pub use notification::{
    ended_event, event_payload, phase_of, processing_long_event, processing_long_payload, Attempt,
    Channel, Delivery, DeliveryState, Filter, InvalidSubscription, Recipient, Subscription,
    ATTEMPT_TIMEOUT, EVENT_TYPES, NO_SMTP,
};
pub use orchestration::{
    orchestration_outcome, phase_outcome, phase_start, Orchestration, OrchestrationError, Phase,
    PhaseStart, Task, TaskJob, MAX_NESTING, ORCHESTRATOR,
};
pub use result::{ErrorKind, JobResult, MappedTables, ResultError, UserError, Variable};
pub use schedule::{
    Execution, InvalidSchedule, Schedule, ScheduleDefinition, Target, MAX_EXECUTIONS, SCHEDULER,
    SCHEDULER_TOKEN_DESCRIPTION,
};
pub use status::{transition, Status, TransitionForbidden};
pub use storage::{Bucket, StoredFile, Table};
pub use time::{format_time, now_micros, parse_time};
