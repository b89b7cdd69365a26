//! Notifications: project subscriptions (event, filters on the event payload, recipient,
//! expiry) checked, the public event payloads of an ended job, and deliveries with their
//! attempts and retry schedule (backoff for 24 hours, never again after a 2xx).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::job::{Job, JobType};
use super::status::Status;
use super::time::{format_time, parse_time_at};

/// The event names of the public Notifications API.
pub const EVENT_TYPES: [&str; 8] = [
    "job-failed",
    "job-succeeded",
    "job-succeeded-with-warning",
    "job-processing-long",
    "phase-job-failed",
    "phase-job-succeeded",
    "phase-job-succeeded-with-warning",
    "phase-job-processing-long",
];

/// How long a delivery is retried after its event.
pub const RETRY_PERIOD_MICROS: i64 = 24 * 3600 * 1_000_000;

/// How long one attempt to deliver may take: a webhook's answer, an SMTP exchange
/// (Keboola's own notifications wait 5 s).
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a delivery to an email recipient records when jobq has no SMTP server to send it.
pub const NO_SMTP: &str =
    "not sent: no [smtp] settings; add an [smtp] table to jobq's settings to send email";

/// A project subscription: which event, the filters its payload must pass, who gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: u64,
    pub event: String,
    pub filters: Vec<Filter>,
    pub recipient: Recipient,
    /// Unix microseconds; past it the subscription gets no new deliveries.
    pub expires_at: Option<i64>,
    pub created: i64,
}

/// One filter: the payload's value at the dot path `field` compared with `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub field: String,
    pub operator: String,
    #[serde(with = "super::job::json_text")]
    pub value: Value,
}

/// Who gets a notification: a subscription's recipient, or one of a flow's notification task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub channel: Channel,
    /// The webhook's URL or the email address.
    pub address: String,
}

/// How a notification leaves jobq. Stored as its name (`webhook`, `email`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Channel {
    /// A JSON `POST` to an `http://` or `https://` URL.
    Webhook,
    /// A plain-text email through the `[smtp]` server.
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }

    /// Whether `address` is one this channel can deliver to: an `http(s)://` URL for a
    /// webhook, something with an `@` for email.
    pub fn takes(self, address: &str) -> bool {
        match self {
            Channel::Webhook => address.starts_with("http://") || address.starts_with("https://"),
            Channel::Email => address.contains('@'),
        }
    }
}

impl From<Channel> for String {
    fn from(channel: Channel) -> String {
        channel.as_str().to_string()
    }
}

impl TryFrom<String> for Channel {
    type Error = String;

    fn try_from(name: String) -> Result<Channel, String> {
        match name.as_str() {
            "webhook" => Ok(Channel::Webhook),
            "email" => Ok(Channel::Email),
            _ => Err(format!("unknown channel \"{name}\"")),
        }
    }
}

/// Why a subscription request was refused; `field` names the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSubscription {
    pub field: &'static str,
    pub message: String,
}

/// One event for one subscription, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub subscription_id: u64,
    pub event_type: String,
    /// The body sent: the event payload with `eventType`.
    #[serde(with = "super::job::json_text")]
    pub payload: Value,
    pub recipient: Recipient,
    pub created: i64,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (Unix microseconds), while `Pending`.
    pub next_attempt: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// A 2xx answered: never sent again.
    Delivered,
    /// No 2xx within the retry period.
    Failed,
    /// Recorded only: jobq has no way to send it (email without SMTP settings).
    NotSent,
}

/// One try: when, and the answer's status code or the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub time: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

impl Subscription {
    /// A `POST /project-subscriptions` body checked into a subscription (id 0), made at `now`.
    pub fn parse(body: &Value, now: i64) -> Result<Subscription, InvalidSubscription> {
        let invalid = |field: &'static str, message: String| InvalidSubscription { field, message };
        let event = body
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !EVENT_TYPES.contains(&event) {
            return Err(invalid(
                "event",
                format!(
                    "Invalid event type \"{event}\", valid types are: \"{}\".",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        let filters =
            match body.get("filters") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(filters)) => {
                    filters.iter().map(parse_filter).collect::<Result<_, _>>()?
                }
                Some(_) => return Err(invalid(
                    "filters",
                    "Field \"filters\" must be a list of {\"field\", \"operator\"?, \"value\"}."
                        .into(),
                )),
            };
        let recipient = body.get("recipient").unwrap_or(&Value::Null);
        let channel = recipient.get("channel").and_then(Value::as_str);
        let text = |key: &str| {
            recipient
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        };
        let recipient = match channel {
            Some("webhook") => {
                let url = text("url").or_else(|| text("address")).unwrap_or_default();
                if !Channel::Webhook.takes(url) {
                    return Err(invalid(
                        "recipient.url",
                        format!("Field \"recipient.url\" must be an http:// or https:// URL; \"{url}\" given."),
                    ));
                }
                Recipient {
                    channel: Channel::Webhook,
                    address: url.to_string(),
                }
            }
            Some("email") => {
                let address = text("address").unwrap_or_default();
                if !Channel::Email.takes(address) {
                    return Err(invalid(
                        "recipient.address",
                        format!("Field \"recipient.address\" must be an email address; \"{address}\" given."),
                    ));
                }
                Recipient {
                    channel: Channel::Email,
                    address: address.to_string(),
                }
            }
            _ => {
                return Err(invalid(
                    "recipient.channel",
                    "Field \"recipient.channel\" must be \"webhook\" (with \"url\") or \"email\" \
                     (with \"address\")."
                        .into(),
                ))
            }
        };
        let expires_at = match body.get("expiresAt") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(parse_expiry(text, now).ok_or_else(|| {
                invalid(
                    "expiresAt",
                    format!("Field \"expiresAt\" must be a time like \"2030-01-07 14:00:00+01:00\" or relative like \"+24 hours\"; \"{text}\" given."),
                )
            })?),
            Some(other) => {
                return Err(invalid(
                    "expiresAt",
                    format!("Field \"expiresAt\" must be a string; {other} given."),
                ))
            }
        };
        Ok(Subscription {
            id: 0,
            event: event.to_string(),
            filters,
            recipient,
            expires_at,
            created: now,
        })
    }

    /// Whether an `event` with `payload` at `now` goes to this subscription: same event, not
    /// expired, every filter passes.
    pub fn wants(&self, event: &str, payload: &Value, now: i64) -> bool {
        self.event == event
            && self.expires_at.is_none_or(|at| now < at)
            && self.filters.iter().all(|filter| filter.passes(payload))
    }
}

impl Filter {
    /// Whether the payload's value at `field` compares with `value` as `operator` says; a
    /// missing value passes only `!=`. Numbers (or numeric text) compare as numbers, anything
    /// else as text.
    pub fn passes(&self, payload: &Value) -> bool {
        let found = self
            .field
            .split('.')
            .try_fold(payload, |value, key| value.get(key));
        let Some(found) = found else {
            return self.operator == "!=";
        };
        let number = |value: &Value| match value {
            Value::Number(n) => n.as_f64(),
            Value::String(text) => text.parse::<f64>().ok(),
            _ => None,
        };
        let text = |value: &Value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let ordering = match (number(found), number(&self.value)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(text(found).cmp(&text(&self.value))),
        };
        let Some(ordering) = ordering else {
            return false;
        };
        use std::cmp::Ordering::*;
        match self.operator.as_str() {
            "==" => ordering == Equal,
            "!=" => ordering != Equal,
            ">" => ordering == Greater,
            "<" => ordering == Less,
            ">=" => ordering != Less,
            "<=" => ordering != Greater,
            _ => false,
        }
    }
}

impl Delivery {
    /// A new delivery of `payload` (with `eventType` added) to `subscription`, due at `now`.
    pub fn new(subscription: &Subscription, event: &str, payload: &Value, now: i64) -> Delivery {
        let mut payload = payload.clone();
        payload["eventType"] = json!(event);
        Delivery {
            id: 0,
            subscription_id: subscription.id,
            event_type: event.to_string(),
            payload,
            recipient: subscription.recipient.clone(),
            created: now,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt: now,
        }
    }

    /// Records that jobq has no way to send it (`why`, like `NO_SMTP`), as an attempt at `now`
    /// without an answer: it leaves the outbox as not sent.
    pub fn record_unsendable(&mut self, now: i64, why: &str) {
        self.attempts.push(Attempt {
            time: now,
            status_code: None,
            error: Some(why.to_string()),
        });
        self.state = DeliveryState::NotSent;
    }

    /// The subject and text of its email: what happened to which job, its status and error
    /// message, and where to read it.
    pub fn email(&self) -> (String, String) {
        let payload = &self.payload;
        let text = |pointer: &str| payload.pointer(pointer).and_then(Value::as_str);
        let job_id = text("/job/id").unwrap_or_default();
        let component = text("/job/component/id").unwrap_or_default();
        let what = match text("/job/configuration/name") {
            Some(name) => format!("{component} \"{name}\""),
            None => component.to_string(),
        };
        let happened = match self
            .event_type
            .trim_start_matches("phase-job-")
            .trim_start_matches("job-")
        {
            "failed" => "failed",
            "succeeded" => "succeeded",
            "succeeded-with-warning" => "succeeded with a warning",
            _ => "is running longer than usual",
        };
        let phase = match text("/phase/name").or_else(|| text("/phase/id")) {
            Some(phase) => format!(", phase \"{phase}\""),
            None => String::new(),
        };
        let project = text("/project/name").unwrap_or_default();
        let subject = format!("[{project}] Job {job_id} {happened}: {what}{phase}");
        let mut body = format!(
            "Job {job_id} ({what}{phase}) {happened}.\n\nEvent: {}\nJob: {}\n",
            self.event_type,
            text("/job/url").unwrap_or_default()
        );
        for (label, pointer) in [
            ("Started", "/job/startTime"),
            ("Ended", "/job/endTime"),
            ("Error", "/errorMessage"),
        ] {
            if let Some(value) = text(pointer).filter(|v| !v.is_empty()) {
                body.push_str(&format!("{label}: {value}\n"));
            }
        }
        if let Some(seconds) = payload["currentDuration"].as_f64() {
            let average = payload["averageDuration"].as_f64().unwrap_or_default();
            body.push_str(&format!(
                "Running for {seconds:.0} s; its configuration's average is {average:.0} s.\n"
            ));
        }
        body.push_str(&format!(
            "Project: {project} ({})\nBranch: {}\n",
            text("/project/id").unwrap_or_default(),
            text("/branch/id").unwrap_or_default()
        ));
        (subject, body)
    }

    /// Records an attempt at `now` that got `answer` (a status code, or an error): a 2xx
    /// (an SMTP server's 250 too) delivers it for good; otherwise the next attempt comes after a backoff (1 s, doubling,
    /// at most 10 minutes), unless the retry period since the event has passed.
    pub fn record_attempt(&mut self, now: i64, answer: Result<u16, String>) {
        let (status_code, error) = match answer {
            Ok(code) => (Some(code), None),
            Err(error) => (None, Some(error)),
        };
        self.attempts.push(Attempt {
            time: now,
            status_code,
            error,
        });
        if status_code.is_some_and(|code| (200..300).contains(&code)) {
            self.state = DeliveryState::Delivered;
            return;
        }
        let exponent = (self.attempts.len() as u32 - 1).min(10);
        let backoff = (1_000_000i64 << exponent).min(600 * 1_000_000);
        if now + backoff - self.created > RETRY_PERIOD_MICROS {
            self.state = DeliveryState::Failed;
        } else {
            self.next_attempt = now + backoff;
        }
    }
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::NotSent => "notSent",
        }
    }
}

/// The event an ended job raises, if any: `job-*` for a job of its own (a root job or a
/// flow's task), `phase-job-*` for a flow's phase; `success`, `warning` and `error` only.
pub fn ended_event(job: &Job) -> Option<String> {
    let outcome = match job.status {
        Status::Success => "succeeded",
        Status::Warning => "succeeded-with-warning",
        Status::Error => "failed",
        _ => return None,
    };
    Some(format!("{}{outcome}", event_prefix(job)?))
}

/// The processing-long event a running job may raise: `job-processing-long` or
/// `phase-job-processing-long` (the same jobs as `ended_event`).
pub fn processing_long_event(job: &Job) -> Option<String> {
    Some(format!("{}processing-long", event_prefix(job)?))
}

/// `job-` for a job of its own (a root job or a flow's task), `phase-job-` for a flow's phase;
/// none for the parts of a job (the rows of a container job).
fn event_prefix(job: &Job) -> Option<&'static str> {
    match job.job_type {
        JobType::PhaseContainer => Some("phase-job-"),
        _ if job.parent_run_id.is_none() || job.orchestration_task_id.is_some() => Some("job-"),
        _ => None,
    }
}

/// The `job-processing-long` payload: the ended-job payload's parts plus `averageDuration`,
/// `currentDuration` (seconds) and `durationOvertimePercentage` (`current / average - 1`),
/// and `uniqueId`, the job's id.
pub fn processing_long_payload(
    event: &str,
    job: &Job,
    public_url: &str,
    configuration_name: Option<&str>,
    average_seconds: f64,
    current_seconds: f64,
) -> Value {
    let mut payload = event_payload(event, job, public_url, configuration_name);
    payload["averageDuration"] = json!(average_seconds);
    payload["currentDuration"] = json!(current_seconds);
    payload["durationOvertimePercentage"] = json!(current_seconds / average_seconds - 1.0);
    payload["uniqueId"] = json!(job.id.to_string());
    payload
}

/// The public payload of `event` about `job` (without `eventType`): `job`, `project`, `branch`,
/// `errorMessage` for a failure or warning, `phase` for a phase job. `configuration_name` is
/// the stored configuration's name, when the job runs one.
pub fn event_payload(
    event: &str,
    job: &Job,
    public_url: &str,
    configuration_name: Option<&str>,
) -> Value {
    let mut job_object = json!({
        "id": job.id.to_string(),
        "url": format!("{public_url}/jobs/{}", job.id),
        "component": {"id": job.component, "name": job.component},
        "tasks": [],
    });
    if let (Some(config), Some(name)) = (&job.config, configuration_name) {
        job_object["configuration"] = json!({"id": config, "name": name});
    }
    if let Some(start) = job.start_time {
        job_object["startTime"] = json!(format_time(start));
    }
    if let Some(end) = job.end_time {
        job_object["endTime"] = json!(format_time(end));
    }
    let mut payload = json!({
        "job": job_object,
        "project": {"id": job.project_id, "name": job.project_name},
        "branch": {"id": job.branch_id},
    });
    if event.ends_with("failed") || event.ends_with("with-warning") {
        payload["errorMessage"] = json!(job.result.message.clone().unwrap_or_default());
    }
    if event.starts_with("phase-") {
        let id = phase_of(job).unwrap_or_default();
        let name = job
            .config_data
            .get("phaseName")
            .cloned()
            .unwrap_or(json!(id));
        payload["phase"] = json!({"id": id, "name": name});
    }
    payload
}

/// The phase a job belongs to: a phase job's own (`configData.phaseId`), a task job's
/// `orchestrationPhaseId`; none for other jobs.
pub fn phase_of(job: &Job) -> Option<&str> {
    match job.job_type {
        JobType::PhaseContainer => job.config_data.get("phaseId").and_then(Value::as_str),
        _ => job.orchestration_phase_id.as_deref(),
    }
}

/// An absolute time (`2023-01-07 14:00:00+01:00`, or what `parse_time` reads) or a relative
/// one (`+24 hours`, `+2 days`) from `now`, as Unix microseconds.
fn parse_expiry(text: &str, now: i64) -> Option<i64> {
    chrono::DateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%:z")
        .map(|time| time.timestamp_micros())
        .ok()
        .or_else(|| parse_time_at(text, now))
}

fn parse_filter(filter: &Value) -> Result<Filter, InvalidSubscription> {
    let invalid = |message: String| InvalidSubscription {
        field: "filters",
        message,
    };
    let field = filter
        .get("field")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty());
    let Some(field) = field else {
        return Err(invalid(format!(
            "Each filter needs a \"field\" (a dot path into the event payload); {filter} given."
        )));
    };
    let operator = filter
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("==");
    if !["==", "!=", ">", "<", ">=", "<="].contains(&operator) {
        return Err(invalid(format!(
            "Filter operator \"{operator}\" is not one of ==, !=, >, <, >=, <=."
        )));
    }
    let value = match filter.get("value") {
        Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => value.clone(),
        _ => {
            return Err(invalid(format!(
                "Filter \"{field}\" needs a \"value\" (a string, number or boolean)."
            )))
        }
    };
    Ok(Filter {
        field: field.to_string(),
        operator: operator.to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(body: Value) -> Subscription {
        Subscription::parse(&body, 1_000_000).expect("valid")
    }

    #[test]
    fn filters_compare_dot_paths_as_numbers_or_text_and_all_must_pass() {
        let payload = json!({
            "job": {"component": {"id": "keboola.ex-a"}, "configuration": {"id": "12"}},
            "branch": {"id": "456"},
            "durationOvertimePercentage": 0.8,
        });
        let with = |filters: Value| {
            subscription(json!({"event": "job-failed", "filters": filters,
                                "recipient": {"channel": "webhook", "url": "http://h/x"}}))
        };
        let passes = [
            json!([]),
            json!([{"field": "job.component.id", "value": "keboola.ex-a"}]),
            json!([{"field": "job.configuration.id", "operator": "==", "value": 12}]),
            json!([{"field": "branch.id", "operator": "!=", "value": "1"}]),
            json!([{"field": "durationOvertimePercentage", "operator": ">=", "value": 0.75},
                   {"field": "durationOvertimePercentage", "operator": "<", "value": 1}]),
            json!([{"field": "phase.id", "operator": "!=", "value": "1"}]),
        ];
        for filters in passes {
            assert!(
                with(filters.clone()).wants("job-failed", &payload, 0),
                "{filters}"
            );
        }
        let fails = [
            json!([{"field": "job.component.id", "value": "keboola.ex-b"}]),
            json!([{"field": "job.component.id", "value": "keboola.ex-a"},
                   {"field": "branch.id", "value": "1"}]),
            json!([{"field": "durationOvertimePercentage", "operator": ">", "value": 0.8}]),
            json!([{"field": "durationOvertimePercentage", "operator": "<=", "value": "0.5"}]),
            json!([{"field": "phase.id", "value": "1"}]),
        ];
        for filters in fails {
            assert!(
                !with(filters.clone()).wants("job-failed", &payload, 0),
                "{filters}"
            );
        }
        assert!(!with(json!([])).wants("job-succeeded", &payload, 0));
    }

    #[test]
    fn requests_are_checked_and_expiry_is_relative_or_absolute() {
        let hook = json!({"channel": "webhook", "address": "http://h/x"});
        let relative = subscription(
            json!({"event": "job-succeeded", "recipient": hook, "expiresAt": "+24 hours"}),
        );
        assert_eq!(relative.expires_at, Some(1_000_000 + 24 * 3600 * 1_000_000));
        assert_eq!(relative.recipient.address, "http://h/x");
        assert!(relative.wants("job-succeeded", &json!({}), 2_000_000));
        assert!(!relative.wants("job-succeeded", &json!({}), 1_000_000 + RETRY_PERIOD_MICROS));
        let absolute = subscription(json!({"event": "job-succeeded", "recipient": hook,
                                           "expiresAt": "2030-01-07 14:00:00+01:00"}));
        assert_eq!(absolute.expires_at, Some(1_894_021_200_000_000));
        let cases = [
            (json!({"event": "job-exploded", "recipient": hook}), "event"),
            (
                json!({"event": "job-failed", "recipient": {"channel": "sms"}}),
                "recipient.channel",
            ),
            (
                json!({"event": "job-failed", "recipient": {"channel": "webhook", "url": "ftp://x"}}),
                "recipient.url",
            ),
            (
                json!({"event": "job-failed", "recipient": {"channel": "email", "address": "nobody"}}),
                "recipient.address",
            ),
            (
                json!({"event": "job-failed", "recipient": hook, "filters": [{"value": 1}]}),
                "filters",
            ),
            (
                json!({"event": "job-failed", "recipient": hook, "filters": [{"field": "a", "operator": "~", "value": 1}]}),
                "filters",
            ),
            (
                json!({"event": "job-failed", "recipient": hook, "expiresAt": "soon"}),
                "expiresAt",
            ),
        ];
        for (body, field) in cases {
            let error = Subscription::parse(&body, 0).expect_err("invalid");
            assert_eq!(error.field, field, "{body}: {error}");
        }
    }

    #[test]
    fn a_delivery_backs_off_stops_after_a_2xx_and_gives_up_after_24_hours() {
        let hook = subscription(json!({"event": "job-failed",
                                       "recipient": {"channel": "webhook", "url": "http://h/x"}}));
        let mut delivery = Delivery::new(&hook, "job-failed", &json!({"job": {}}), 0);
        assert_eq!(delivery.payload["eventType"], "job-failed");
        assert_eq!(delivery.state, DeliveryState::Pending);
        delivery.record_attempt(0, Err("connection refused".into()));
        assert_eq!(delivery.next_attempt, 1_000_000);
        delivery.record_attempt(1_000_000, Ok(503));
        assert_eq!(delivery.next_attempt, 3_000_000);
        delivery.record_attempt(3_000_000, Ok(204));
        assert_eq!(delivery.state, DeliveryState::Delivered);
        assert_eq!(delivery.attempts.len(), 3);

        let mut late = Delivery::new(&hook, "job-failed", &json!({}), 0);
        late.record_attempt(RETRY_PERIOD_MICROS - 1_000_000, Ok(500));
        assert_eq!(late.state, DeliveryState::Pending);
        late.record_attempt(RETRY_PERIOD_MICROS - 500_000, Ok(500));
        assert_eq!(late.state, DeliveryState::Failed);

        let email = subscription(json!({"event": "job-failed",
                                        "recipient": {"channel": "email", "address": "a@b.c"}}));
        let mut unsent = Delivery::new(&email, "job-failed", &json!({}), 0);
        assert_eq!(unsent.state, DeliveryState::Pending);
        unsent.record_unsendable(5, NO_SMTP);
        assert_eq!(unsent.state, DeliveryState::NotSent);
        assert_eq!(unsent.attempts[0].error.as_deref(), Some(NO_SMTP));
    }

    #[test]
    fn an_email_says_which_job_did_what() {
        let email = subscription(json!({"event": "phase-job-failed",
                                        "recipient": {"channel": "email", "address": "a@b.c"}}));
        let payload = json!({
            "job": {"id": "42", "url": "http://jobq/jobs/42", "component": {"id": "keboola.orchestrator"},
                    "configuration": {"id": "9", "name": "Nightly"}, "startTime": "2030-01-01T00:00:00+00:00"},
            "project": {"id": "1", "name": "Local"}, "branch": {"id": "1"},
            "phase": {"id": "load", "name": "Load"}, "errorMessage": "Task failed.",
        });
        let (subject, text) = Delivery::new(&email, "phase-job-failed", &payload, 0).email();
        assert_eq!(
            subject,
            "[Local] Job 42 failed: keboola.orchestrator \"Nightly\", phase \"Load\""
        );
        assert_eq!(
            text,
            "Job 42 (keboola.orchestrator \"Nightly\", phase \"Load\") failed.\n\n\
             Event: phase-job-failed\nJob: http://jobq/jobs/42\n\
             Started: 2030-01-01T00:00:00+00:00\nError: Task failed.\n\
             Project: Local (1)\nBranch: 1\n"
        );
    }

    #[test]
    fn ended_jobs_raise_job_or_phase_events() {
        let mut job = Job::example();
        job.status = Status::Error;
        job.parent_run_id = None;
        assert_eq!(ended_event(&job).as_deref(), Some("job-failed"));
        job.status = Status::Warning;
        assert_eq!(
            ended_event(&job).as_deref(),
            Some("job-succeeded-with-warning")
        );
        job.job_type = JobType::PhaseContainer;
        job.status = Status::Success;
        assert_eq!(ended_event(&job).as_deref(), Some("phase-job-succeeded"));
        job.status = Status::Terminated;
        assert_eq!(ended_event(&job), None);
    }
}
