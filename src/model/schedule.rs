//! Schedules: the definition a `keboola.scheduler` configuration holds (checked), the activated
//! schedule with its next fire time and recent executions, and when a cron expression fires next
//! in its time zone (DST included), as a pure function of the time it is asked after.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::job::Mode;

/// The component whose configurations are schedules; jobq keeps them itself.
pub const SCHEDULER: &str = "keboola.scheduler";

/// The token description of every job a schedule creates, as the public Scheduler has it.
pub const SCHEDULER_TOKEN_DESCRIPTION: &str = "[_internal] Scheduler";

/// How many recent executions a schedule keeps (`executions` of its API object).
pub const MAX_EXECUTIONS: usize = 20;

/// What a `keboola.scheduler` configuration says: when, and what to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDefinition {
    /// Five fields: minute, hour, day of month, month, day of week.
    pub cron_tab: String,
    /// An IANA name (`Europe/Prague`, `UTC`) or an offset (`+0100`, `-05:30`).
    pub timezone: String,
    /// `state: enabled`; a disabled schedule stays activated and never fires.
    pub enabled: bool,
    pub target: Target,
}

/// The job a schedule creates at each fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub component_id: String,
    pub configuration_id: String,
    pub configuration_row_ids: Vec<String>,
    pub mode: Mode,
    /// The image tag; empty: the component's.
    pub tag: String,
}

/// An activated schedule: the definition of the pinned configuration version, and when it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: u64,
    /// The token that activated it; its jobs carry this token id.
    pub token_id: String,
    /// The `keboola.scheduler` configuration.
    pub configuration_id: String,
    /// The version of that configuration this schedule runs, until activated again.
    pub configuration_version_id: u64,
    pub definition: ScheduleDefinition,
    /// The next instant it fires (Unix microseconds); `None` when disabled.
    pub next_fire: Option<i64>,
    /// The most recent fires, oldest first, at most `MAX_EXECUTIONS`.
    pub executions: Vec<Execution>,
}

/// One fire: the job it created and the instant it was due (Unix microseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub job_id: u64,
    pub execution_time: i64,
}

/// Why a `keboola.scheduler` configuration cannot be activated; `field` is its dot path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSchedule {
    pub field: &'static str,
    pub message: String,
}

impl ScheduleDefinition {
    /// The definition in a `keboola.scheduler` configuration's `configuration`, checked: a valid
    /// five-field cron expression, a known time zone, a target with a component and a
    /// configuration, a known mode.
    pub fn parse(configuration: &Value) -> Result<ScheduleDefinition, InvalidSchedule> {
        let invalid = |field: &'static str, message: String| InvalidSchedule { field, message };
        let text =
            |field: &'static str, value: Option<&Value>| -> Result<String, InvalidSchedule> {
                match value {
                    Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
                    Some(Value::Number(number)) => Ok(number.to_string()),
                    None | Some(Value::Null) => Err(invalid(
                        field,
                        format!("Field \"{field}\" is required in the schedule's configuration."),
                    )),
                    Some(other) => Err(invalid(
                        field,
                        format!("Field \"{field}\" must be a non-empty string; {other} given."),
                    )),
                }
            };
        let schedule = configuration.get("schedule");
        let cron_tab = text("schedule.cronTab", schedule.and_then(|s| s.get("cronTab")))?;
        parse_cron(&cron_tab).map_err(|message| invalid("schedule.cronTab", message))?;
        let timezone = match schedule.and_then(|s| s.get("timezone")) {
            None | Some(Value::Null) => "UTC".to_string(),
            given => text("schedule.timezone", given)?,
        };
        Zone::parse(&timezone).map_err(|message| invalid("schedule.timezone", message))?;
        let enabled = match schedule.and_then(|s| s.get("state")) {
            None | Some(Value::Null) => true,
            Some(Value::String(state)) if state == "enabled" => true,
            Some(Value::String(state)) if state == "disabled" => false,
            Some(other) => {
                return Err(invalid(
                    "schedule.state",
                    format!("Field \"schedule.state\" must be enabled or disabled; {other} given."),
                ))
            }
        };
        let Some(target) = configuration.get("target").filter(|t| t.is_object()) else {
            return Err(invalid(
                "target",
                "Field \"target\" (an object with componentId, configurationId and mode) is \
                 required in the schedule's configuration."
                    .to_string(),
            ));
        };
        let component_id = text("target.componentId", target.get("componentId"))?;
        let configuration_id = text("target.configurationId", target.get("configurationId"))?;
        let configuration_row_ids = match target.get("configurationRowIds") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|id| text("target.configurationRowIds", Some(id)))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(
                    "target.configurationRowIds",
                    format!("Field \"target.configurationRowIds\" must be a list of row ids; {other} given."),
                ))
            }
        };
        let mode = match target.get("mode") {
            None | Some(Value::Null) => Mode::Run,
            Some(Value::String(mode)) => Mode::parse(mode).ok_or_else(|| {
                invalid(
                    "target.mode",
                    format!(
                        "Field \"target.mode\" must be run, forceRun or debug; \"{mode}\" given."
                    ),
                )
            })?,
            Some(other) => {
                return Err(invalid(
                    "target.mode",
                    format!("Field \"target.mode\" must be run, forceRun or debug; {other} given."),
                ))
            }
        };
        let tag = match target.get("tag") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(tag)) => tag.clone(),
            Some(other) => {
                return Err(invalid(
                    "target.tag",
                    format!("Field \"target.tag\" must be a string; {other} given."),
                ))
            }
        };
        Ok(ScheduleDefinition {
            cron_tab,
            timezone,
            enabled,
            target: Target {
                component_id,
                configuration_id,
                configuration_row_ids,
                mode,
                tag,
            },
        })
    }

    /// The first instant strictly after `after` (Unix microseconds) at which the schedule
    /// fires, in its time zone; `None` when it is disabled or never fires again. A wall-clock
    /// time a spring-forward skips fires at the first instant after the gap; one a fall-back
    /// repeats fires once, at its first occurrence (an every-minute or every-hour field fires
    /// on both).
    pub fn next_fire(&self, after: i64) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        let cron = parse_cron(&self.cron_tab).ok()?;
        let after = DateTime::<Utc>::from_timestamp_micros(after)?;
        match Zone::parse(&self.timezone).ok()? {
            Zone::Named(zone) => next_in(&cron, &after.with_timezone(&zone)),
            Zone::Fixed(offset) => next_in(&cron, &after.with_timezone(&offset)),
        }
    }
}

impl Schedule {
    /// Records a fire of `due` that created `job_id`, keeping the last `MAX_EXECUTIONS`.
    pub fn record_execution(&mut self, job_id: u64, due: i64) {
        self.executions.push(Execution {
            job_id,
            execution_time: due,
        });
        let excess = self.executions.len().saturating_sub(MAX_EXECUTIONS);
        self.executions.drain(..excess);
    }
}

/// The next match of `cron` strictly after `after`, as Unix microseconds.
fn next_in<Z: TimeZone>(cron: &Cron, after: &DateTime<Z>) -> Option<i64>
where
    DateTime<Z>: croner::CronDateTime,
{
    let next = cron.find_next_occurrence(after, false).ok()?;
    Some(next.timestamp_micros())
}

/// A five-field cron expression (lists, ranges, steps, names, day of week 0-7, `L`), parsed by
/// croner; a message naming the problem otherwise.
fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 || text.contains('@') {
        return Err(format!(
            "Field \"schedule.cronTab\" must have five fields (minute hour day-of-month month \
             day-of-week), like \"0 6 * * 1-5\"; \"{text}\" given."
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser.parse(text).map_err(|error| {
        format!("Field \"schedule.cronTab\" is not a valid cron expression (\"{text}\": {error}).")
    })
}

/// A schedule's time zone.
enum Zone {
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

impl Zone {
    /// `UTC`, an IANA name, or an offset `+HHMM`, `+HH:MM`, `+HH` (or `-`).
    fn parse(text: &str) -> Result<Zone, String> {
        if let Some(sign) = text.chars().next().filter(|c| matches!(c, '+' | '-')) {
            let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
            let (hours, minutes) = match digits.len() {
                2 => (digits.as_str(), "0"),
                4 => digits.split_at(2),
                _ => ("", ""),
            };
            let seconds = hours
                .parse::<i32>()
                .ok()
                .zip(minutes.parse::<i32>().ok())
                .filter(|&(h, m)| h <= 14 && m < 60 && digits.bytes().all(|b| b.is_ascii_digit()))
                .map(|(h, m)| (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 });
            return seconds
                .and_then(FixedOffset::east_opt)
                .map(Zone::Fixed)
                .ok_or_else(|| {
                    format!(
                        "Field \"schedule.timezone\" \"{text}\" is not an offset like +0100 or \
                         -05:30."
                    )
                });
        }
        chrono_tz::Tz::from_str(text).map(Zone::Named).map_err(|_| {
            format!(
                "Field \"schedule.timezone\" \"{text}\" is not a known time zone; give an IANA \
                 name like \"Europe/Prague\" or \"UTC\", or an offset like \"+0100\"."
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(cron_tab: &str, timezone: &str) -> ScheduleDefinition {
        ScheduleDefinition::parse(&json!({
            "schedule": {"cronTab": cron_tab, "timezone": timezone, "state": "enabled"},
            "target": {"componentId": "c", "configurationId": "1", "mode": "run"}
        }))
        .expect("a valid definition")
    }

    fn micros(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a time")
            .timestamp_micros()
    }

    fn utc(micros: i64) -> String {
        DateTime::<Utc>::from_timestamp_micros(micros)
            .expect("a time")
            .to_rfc3339()
    }

    /// Every fire after `from` (the injected clock) up to `until`, in UTC.
    fn fires(definition: &ScheduleDefinition, from: &str, until: &str) -> Vec<String> {
        let (mut now, until) = (micros(from), micros(until));
        let mut fired = Vec::new();
        while let Some(next) = definition.next_fire(now).filter(|&next| next <= until) {
            fired.push(utc(next));
            now = next;
        }
        fired
    }

    #[test]
    fn a_daily_0230_runs_once_on_spring_forward_and_once_on_fall_back_days() {
        // Europe/Prague: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
        let daily = definition("30 2 * * *", "Europe/Prague");
        assert_eq!(
            fires(&daily, "2026-03-27T12:00:00Z", "2026-03-31T00:00:00Z"),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST, the gap's end
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
        assert_eq!(
            fires(&daily, "2026-10-23T12:00:00Z", "2026-10-27T00:00:00Z"),
            [
                "2026-10-24T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T00:30:00+00:00", // the first 02:30 (CEST) only, not the second
                "2026-10-26T01:30:00+00:00", // 02:30 CET
            ]
        );
    }

    #[test]
    fn hourly_fields_follow_the_clock_across_dst_in_new_york() {
        // America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        let hourly = definition("0 * * * *", "America/New_York");
        let spring = fires(&hourly, "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z");
        assert_eq!(spring.len(), 23, "a 23-hour day: {spring:?}");
        let fall = fires(&hourly, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z");
        assert_eq!(fall.len(), 25, "a 25-hour day, 01:00 twice: {fall:?}");
        assert!(fall.contains(&"2026-11-01T05:00:00+00:00".to_string()));
        assert!(fall.contains(&"2026-11-01T06:00:00+00:00".to_string()));
    }

    #[test]
    fn time_zones_offsets_lists_ranges_steps_and_names() {
        let cases = [
            // (cron, zone, after, the next fire in UTC)
            (
                "0 9 * * *",
                "UTC",
                "2026-06-01T09:00:00Z",
                "2026-06-02T09:00:00+00:00",
            ),
            (
                "0 9 * * *",
                "Asia/Tokyo",
                "2026-06-01T00:00:00Z",
                "2026-06-02T00:00:00+00:00",
            ),
            (
                "0 9 * * *",
                "+0530",
                "2026-06-01T00:00:00Z",
                "2026-06-01T03:30:00+00:00",
            ),
            (
                "0 9 * * *",
                "-05:00",
                "2026-06-01T00:00:00Z",
                "2026-06-01T14:00:00+00:00",
            ),
            // 2026-06-01 is a Monday.
            (
                "15 8 * * 0",
                "UTC",
                "2026-06-01T00:00:00Z",
                "2026-06-07T08:15:00+00:00",
            ),
            (
                "15 8 * * 7",
                "UTC",
                "2026-06-01T00:00:00Z",
                "2026-06-07T08:15:00+00:00",
            ),
            (
                "15 8 * * SUN",
                "UTC",
                "2026-06-01T00:00:00Z",
                "2026-06-07T08:15:00+00:00",
            ),
            (
                "0 0 1 JAN,jul *",
                "UTC",
                "2026-06-01T00:00:00Z",
                "2026-07-01T00:00:00+00:00",
            ),
            (
                "*/20 10-11 * * MON-FRI",
                "UTC",
                "2026-06-01T10:41:00Z",
                "2026-06-01T11:00:00+00:00",
            ),
            (
                "5,35 * * * *",
                "UTC",
                "2026-06-01T10:06:00Z",
                "2026-06-01T10:35:00+00:00",
            ),
            (
                "0 12 L * *",
                "UTC",
                "2026-06-01T00:00:00Z",
                "2026-06-30T12:00:00+00:00",
            ),
            // Australia/Lord_Howe moves by half an hour (02:00 -> 02:30 on 2026-10-04).
            (
                "15 2 * * *",
                "Australia/Lord_Howe",
                "2026-10-03T12:00:00Z",
                "2026-10-03T15:30:00+00:00",
            ),
        ];
        for (cron, zone, after, expected) in cases {
            let next = definition(cron, zone).next_fire(micros(after)).map(utc);
            assert_eq!(
                next.as_deref(),
                Some(expected),
                "{cron} in {zone} after {after}"
            );
        }
    }

    #[test]
    fn every_minute_fires_at_the_next_whole_minute_strictly_after_the_clock() {
        let every = definition("* * * * *", "UTC");
        let next = every.next_fire(micros("2026-06-01T10:00:00Z")).map(utc);
        assert_eq!(next.as_deref(), Some("2026-06-01T10:01:00+00:00"));
        let next = every.next_fire(micros("2026-06-01T10:00:59.999Z")).map(utc);
        assert_eq!(next.as_deref(), Some("2026-06-01T10:01:00+00:00"));
    }

    #[test]
    fn a_disabled_schedule_never_fires() {
        let mut disabled = definition("* * * * *", "UTC");
        disabled.enabled = false;
        assert_eq!(disabled.next_fire(micros("2026-06-01T10:00:00Z")), None);
    }

    #[test]
    fn invalid_definitions_name_the_field() {
        let target = json!({"componentId": "c", "configurationId": "1"});
        let cases = [
            (
                json!({"schedule": {"cronTab": "61 * * * *"}, "target": target}),
                "schedule.cronTab",
            ),
            (
                json!({"schedule": {"cronTab": "* * * *"}, "target": target}),
                "schedule.cronTab",
            ),
            (
                json!({"schedule": {"cronTab": "0 * * * * *"}, "target": target}),
                "schedule.cronTab",
            ),
            (
                json!({"schedule": {"cronTab": "@daily"}, "target": target}),
                "schedule.cronTab",
            ),
            (
                json!({"schedule": {}, "target": target}),
                "schedule.cronTab",
            ),
            (
                json!({"schedule": {"cronTab": "* * * * *", "timezone": "Mars/Olympus"}, "target": target}),
                "schedule.timezone",
            ),
            (
                json!({"schedule": {"cronTab": "* * * * *", "timezone": "+2500"}, "target": target}),
                "schedule.timezone",
            ),
            (
                json!({"schedule": {"cronTab": "* * * * *", "state": "paused"}, "target": target}),
                "schedule.state",
            ),
            (json!({"schedule": {"cronTab": "* * * * *"}}), "target"),
            (
                json!({"schedule": {"cronTab": "* * * * *"}, "target": {"configurationId": "1"}}),
                "target.componentId",
            ),
            (
                json!({"schedule": {"cronTab": "* * * * *"}, "target": {"componentId": "c"}}),
                "target.configurationId",
            ),
            (
                json!({"schedule": {"cronTab": "* * * * *"}, "target": {"componentId": "c", "configurationId": "1", "mode": "walk"}}),
                "target.mode",
            ),
        ];
        for (configuration, field) in cases {
            let error = ScheduleDefinition::parse(&configuration).expect_err("invalid");
            assert_eq!(error.field, field, "{configuration}: {error}");
            assert!(error.message.contains(field), "{error}");
        }
    }

    #[test]
    fn executions_keep_the_most_recent() {
        let mut schedule = Schedule {
            id: 1,
            token_id: "7".into(),
            configuration_id: "9".into(),
            configuration_version_id: 1,
            definition: definition("* * * * *", "UTC"),
            next_fire: None,
            executions: Vec::new(),
        };
        for job in 1..=25 {
            schedule.record_execution(job, job as i64);
        }
        let kept: Vec<u64> = schedule.executions.iter().map(|e| e.job_id).collect();
        assert_eq!(kept, (6..=25).collect::<Vec<_>>());
    }
}
