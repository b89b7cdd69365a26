//! Schedules: activation of a `keboola.scheduler` configuration (a stored version pinned),
//! listings, deactivation, and the timer that fires due schedules. Each fire creates an
//! ordinary job of the schedule's target, and advances the schedule's next fire time in the
//! same store transaction: a fire happens at most once for one instant, across crashes too.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{NewJob, Queue, QueueError};
use crate::blocking::blocking;
use crate::error::chain;
use crate::model::{
    now_micros, Schedule, ScheduleDefinition, SCHEDULER, SCHEDULER_TOKEN_DESCRIPTION,
};
use crate::settings::{CatchUp, Token};

/// The longest the timer sleeps without looking at the schedules again.
const TIMER_IDLE: Duration = Duration::from_secs(60);
/// How long the timer waits after a failed pass (a store that refuses writes, say).
const TIMER_RETRY: Duration = Duration::from_secs(2);

impl Queue {
    /// `POST /schedules`: activates the `keboola.scheduler` configuration `configuration_id`
    /// of the default branch at `version` (a stored version of it; its current one when not
    /// given), replacing its previous activation: the schedule runs that version's definition
    /// until activated again. It runs with `token`'s id; its first fire is the first instant
    /// after now its cron expression names.
    pub async fn activate_schedule(
        &self,
        configuration_id: &str,
        version: Option<&str>,
        token: &Token,
    ) -> Result<Schedule, QueueError> {
        let invalid = |field: &'static str, message: String| QueueError::Invalid { field, message };
        let branch = &self.settings.project.default_branch_id;
        let current = blocking(|| {
            self.store
                .configuration(branch, SCHEDULER, configuration_id)
        })?;
        let current = current.ok_or_else(|| QueueError::ConfigurationNotFound {
            component: SCHEDULER.to_string(),
            config: configuration_id.to_string(),
            branch: branch.clone(),
        })?;
        let stored = match version {
            None => current,
            Some(text) => {
                let pinned = match text.trim().parse::<u64>() {
                    Ok(number) => blocking(|| {
                        self.store.configuration_version(
                            branch,
                            SCHEDULER,
                            configuration_id,
                            number,
                        )
                    })?,
                    Err(_) => None,
                };
                pinned.ok_or_else(|| {
                    invalid(
                        "configurationVersionId",
                        format!(
                            "Version \"{text}\" of configuration \"{configuration_id}\" does not \
                             exist; give a version from 1 to {}, or leave \
                             \"configurationVersionId\" out for the current one.",
                            current.version
                        ),
                    )
                })?
            }
        };
        let definition = ScheduleDefinition::parse(&stored.configuration)
            .map_err(|error| invalid(error.field, error.message))?;
        let component = &definition.target.component_id;
        if !self.settings.is_registered(component) || component == SCHEDULER {
            return Err(invalid(
                "target.componentId",
                format!(
                    "Field \"target.componentId\": component \"{component}\" is not registered \
                     in jobq's settings."
                ),
            ));
        }
        let next_fire = definition.next_fire(now_micros());
        let schedule = blocking(|| {
            self.store
                .save_schedule(configuration_id, |id, previous| Schedule {
                    id,
                    token_id: token.id.clone(),
                    configuration_id: configuration_id.to_string(),
                    configuration_version_id: stored.version,
                    definition,
                    next_fire,
                    executions: previous.map(|p| p.executions.clone()).unwrap_or_default(),
                })
        })?;
        tracing::info!(
            schedule_id = schedule.id,
            configuration_id,
            "schedule activated"
        );
        self.schedules_changed.notify_one();
        Ok(schedule)
    }

    /// Every schedule, or those whose target is `component`'s configuration `configuration`.
    pub fn schedules(&self, target: Option<(&str, &str)>) -> Result<Vec<Schedule>, QueueError> {
        let mut schedules = self.store.schedules()?;
        if let Some((component, configuration)) = target {
            schedules.retain(|s| {
                s.definition.target.component_id == component
                    && s.definition.target.configuration_id == configuration
            });
        }
        Ok(schedules)
    }

    pub fn activated_schedule(&self, id: &str) -> Result<Schedule, QueueError> {
        let not_found = || QueueError::ScheduleNotFound { id: id.to_string() };
        let id: u64 = id.parse().map_err(|_| not_found())?;
        self.store.schedule(id)?.ok_or_else(not_found)
    }

    /// `DELETE /schedules/{id}`: deactivates it; its configuration stays in Storage.
    pub fn delete_schedule(&self, id: &str) -> Result<(), QueueError> {
        let schedule = self.activated_schedule(id)?;
        self.store.delete_schedules(|s| s.id == schedule.id)?;
        Ok(())
    }

    /// `DELETE /configurations/{id}`: deactivates every schedule of that `keboola.scheduler`
    /// configuration (none is not an error).
    pub fn delete_schedules_of(&self, configuration_id: &str) -> Result<(), QueueError> {
        self.store
            .delete_schedules(|s| s.configuration_id == configuration_id)?;
        Ok(())
    }

    /// Fires due schedules until `shutdown`: at start, a fire missed while jobq was down
    /// happens once (`schedule_catch_up = "once"`) or not at all (`"skip"`); afterwards each
    /// due fire happens once, when it is due, and creates its job.
    pub(super) async fn run_schedules(self: Arc<Self>, shutdown: CancellationToken) {
        let mut starting = true;
        loop {
            let pause = match blocking(|| self.fire_due(starting)) {
                Ok(pause) => {
                    starting = false;
                    pause
                }
                Err(error) => {
                    tracing::error!(error = %chain(&error), "firing schedules failed; retrying");
                    TIMER_RETRY
                }
            };
            tokio::select! {
                () = self.schedules_changed.notified() => {}
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// One pass of the timer: fires what is due; how long until the next fire.
    fn fire_due(&self, starting: bool) -> Result<Duration, QueueError> {
        let skip_missed = starting && self.settings.schedule_catch_up == CatchUp::Skip;
        let mut earliest: Option<i64> = None;
        for schedule in self.store.schedules()? {
            let Some(due) = schedule.next_fire else {
                continue;
            };
            let now = now_micros();
            let next = if due <= now {
                let next = schedule.definition.next_fire(now);
                self.fire(&schedule, due, next, skip_missed)?;
                next
            } else {
                Some(due)
            };
            earliest = earliest.into_iter().chain(next).min();
        }
        let until = earliest.map_or(TIMER_IDLE, |at| {
            Duration::from_micros((at - now_micros()).max(0) as u64)
        });
        Ok(until.min(TIMER_IDLE))
    }

    /// The fire of `schedule` due at `due`, the next one at `next`: its job is created with the
    /// schedule's token and the scheduler's token description, unless `skip`. A target that
    /// cannot run (its configuration deleted, say) skips the fire with a warning.
    fn fire(
        &self,
        schedule: &Schedule,
        due: i64,
        next: Option<i64>,
        skip: bool,
    ) -> Result<(), QueueError> {
        let target = &schedule.definition.target;
        let request = NewJob {
            component: target.component_id.clone(),
            mode: Some(target.mode),
            config: Some(target.configuration_id.clone()),
            config_row_ids: target.configuration_row_ids.clone(),
            tag: Some(target.tag.clone()).filter(|tag| !tag.is_empty()),
            ..NewJob::default()
        };
        let made = if skip {
            Ok(None)
        } else {
            self.new_jobs(request, &schedule.token_id, SCHEDULER_TOKEN_DESCRIPTION, 1)
                .map(Some)
        };
        let fired = match made {
            Ok(Some((count, make))) => {
                self.store
                    .fire_schedule(schedule.id, due, next, count, make)?
            }
            Ok(None) => self
                .store
                .fire_schedule(schedule.id, due, next, 0, |_| Vec::new())?,
            Err(QueueError::Store(error)) => return Err(error.into()),
            Err(error) => {
                tracing::warn!(
                    schedule_id = schedule.id,
                    error = %chain(&error),
                    "the schedule's target cannot run; this fire is skipped"
                );
                self.store
                    .fire_schedule(schedule.id, due, next, 0, |_| Vec::new())?
            }
        };
        match fired.as_deref() {
            Some([job, ..]) => {
                tracing::info!(schedule_id = schedule.id, job_id = job.id, "schedule fired");
                self.changed();
            }
            Some([]) if skip => {
                tracing::info!(
                    schedule_id = schedule.id,
                    "a fire missed while jobq was down is skipped (schedule_catch_up = \"skip\")"
                );
            }
            _ => {}
        }
        Ok(())
    }
}
