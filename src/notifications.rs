//! Notifications: project subscriptions, and the delivery of the outbox the queue fills when
//! jobs end. Each due delivery is sent by a task of its own through `Channels` (a webhook, or
//! an email through the `[smtp]` server) with a timeout, so a slow or dead receiver delays only
//! its own deliveries, never the queue or other recipients.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::blocking::blocking;
use crate::channels::{Channels, Message, SendError};
use crate::error::chain;
use crate::model::{now_micros, phase_of, processing_long_event, processing_long_payload};
use crate::model::{Delivery, InvalidSubscription, Job, JobQuery, Status, Subscription, NO_SMTP};
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// How many recent successful runs make a configuration's average run time.
const AVERAGE_OVER: usize = 20;
/// How often the outbox is looked at for due deliveries (and running jobs for long runs).
const OUTBOX_INTERVAL: Duration = Duration::from_millis(500);

/// Why a subscription request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    #[error(transparent)]
    Invalid(#[from] InvalidSubscription),
    #[error("Subscription \"{id}\" not found; GET /project-subscriptions lists them.")]
    NotFound { id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, NotificationsError>;

/// Subscriptions and their deliveries.
pub struct Notifications {
    store: Arc<Store>,
    settings: Arc<Settings>,
    channels: Arc<Channels>,
    /// Deliveries whose attempt is under way in this process.
    in_flight: Mutex<HashSet<u64>>,
}

impl Notifications {
    pub fn new(
        store: Arc<Store>,
        settings: Arc<Settings>,
        channels: Arc<Channels>,
    ) -> Arc<Notifications> {
        Arc::new(Notifications {
            store,
            settings,
            channels,
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// `POST /project-subscriptions`: the body checked and stored.
    pub fn subscribe(&self, body: &Value) -> Result<Subscription> {
        let subscription = Subscription::parse(body, now_micros())?;
        Ok(self
            .store
            .create_subscription(|id| Subscription { id, ..subscription })?)
    }

    /// Every subscription, or those of `event`.
    pub fn subscriptions(&self, event: Option<&str>) -> Result<Vec<Subscription>> {
        let mut all = self.store.subscriptions()?;
        all.retain(|s| event.is_none_or(|event| s.event == event));
        Ok(all)
    }

    pub fn subscription(&self, id: &str) -> Result<Subscription> {
        let not_found = || NotificationsError::NotFound { id: id.to_string() };
        let number: u64 = id.parse().map_err(|_| not_found())?;
        let all = self.store.subscriptions()?;
        all.into_iter()
            .find(|s| s.id == number)
            .ok_or_else(not_found)
    }

    /// `DELETE /project-subscriptions/{id}`: the subscription and its deliveries.
    pub fn unsubscribe(&self, id: &str) -> Result<()> {
        let subscription = self.subscription(id)?;
        self.store.delete_subscription(subscription.id)?;
        Ok(())
    }

    /// The deliveries of subscription `id`, oldest first.
    pub fn deliveries(&self, id: &str) -> Result<Vec<Delivery>> {
        let subscription = self.subscription(id)?;
        Ok(self.store.deliveries(subscription.id)?)
    }

    /// Sends due deliveries until `shutdown`, each on a task of its own, and looks for jobs
    /// running long. An attempt cut off by the shutdown is made again after the next start.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(error) = blocking(|| self.find_long_runs()) {
                tracing::warn!(error = %chain(&error), "cannot look for jobs running long");
            }
            match blocking(|| self.store.pending_deliveries()) {
                Ok(pending) => {
                    let now = now_micros();
                    for delivery in pending.into_iter().filter(|d| d.next_attempt <= now) {
                        if self.in_flight.lock().unwrap().insert(delivery.id) {
                            tokio::spawn(Arc::clone(&self).attempt(delivery));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "cannot read the notification outbox")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(OUTBOX_INTERVAL) => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Adds a processing-long delivery for each running job (of its own, or a flow's phase)
    /// that runs longer than the average of its configuration's last `AVERAGE_OVER` successful
    /// runs, for each subscription whose filters its payload passes (`durationOvertimePercentage`
    /// is how far past the average it is); once per job and subscription. No history: never.
    fn find_long_runs(&self) -> std::result::Result<(), StoreError> {
        let mut subscriptions = self.store.subscriptions()?;
        subscriptions.retain(|s| s.event.ends_with("processing-long"));
        if subscriptions.is_empty() {
            return Ok(());
        }
        for job in self.store.jobs_with_status(Status::Processing)? {
            let (Some(event), Some(start)) = (processing_long_event(&job), job.start_time) else {
                continue;
            };
            if !subscriptions.iter().any(|s| s.event == event) {
                continue;
            }
            let Some(average) = self.average_run_micros(&job)? else {
                continue;
            };
            let now = now_micros();
            let current = now - start;
            if current <= average {
                continue;
            }
            let name = self.store.configuration_name(&job)?;
            let payload = processing_long_payload(
                &event,
                &job,
                &self.settings.public_url,
                name.as_deref(),
                average as f64 / 1e6,
                current as f64 / 1e6,
            );
            let deliveries = subscriptions
                .iter()
                .filter(|s| s.wants(&event, &payload, now))
                .map(|s| Delivery::new(s, &event, &payload, now))
                .collect();
            self.store.add_long_run_deliveries(job.id, deliveries)?;
        }
        Ok(())
    }

    /// The average run time (microseconds) of the last `AVERAGE_OVER` successful jobs of the
    /// same configuration, type and (for a phase) phase as `job`; none without history.
    fn average_run_micros(&self, job: &Job) -> std::result::Result<Option<i64>, StoreError> {
        let Some(config) = &job.config else {
            return Ok(None);
        };
        let query = JobQuery {
            component_ids: vec![job.component.clone()],
            config_ids: vec![config.clone()],
            branch_ids: vec![job.branch_id.clone()],
            statuses: vec![Status::Success],
            job_type: Some(job.job_type),
            ..JobQuery::default()
        };
        let runs: Vec<i64> = self
            .store
            .search(&query)?
            .iter()
            .filter(|run| phase_of(run) == phase_of(job))
            .filter_map(|run| Some(run.end_time? - run.start_time?))
            .take(AVERAGE_OVER)
            .collect();
        Ok((!runs.is_empty()).then(|| runs.iter().sum::<i64>() / runs.len() as i64))
    }

    /// One attempt of `delivery`, recorded.
    async fn attempt(self: Arc<Self>, mut delivery: Delivery) {
        let (subject, text) = delivery.email();
        let message = Message {
            body: &delivery.payload,
            subject: &subject,
            text: &text,
        };
        let answer = self.channels.send(&delivery.recipient, message).await;
        tracing::info!(
            delivery_id = delivery.id,
            subscription_id = delivery.subscription_id,
            event = %delivery.event_type,
            channel = delivery.recipient.channel.as_str(),
            answer = ?answer,
            "delivery attempted"
        );
        match answer {
            Ok(code) => delivery.record_attempt(now_micros(), Ok(code)),
            Err(SendError::Failed(error)) => delivery.record_attempt(now_micros(), Err(error)),
            Err(SendError::NoSmtp) => delivery.record_unsendable(now_micros(), NO_SMTP),
        }
        if let Err(error) = blocking(|| self.store.save_delivery(&delivery)) {
            tracing::warn!(delivery_id = delivery.id, error = %chain(&error), "cannot record a delivery attempt; it is made again");
        }
        self.in_flight.lock().unwrap().remove(&delivery.id);
    }
}
