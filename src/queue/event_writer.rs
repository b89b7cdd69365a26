//! A running container's events, stored by a thread of its own in batches (group commit): one
//! store transaction per batch, ids in the order the events were given.

use std::borrow::Cow;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::blocking::blocking;
use crate::model::{now_micros, EventSource, EventType, Job, NewEvent};
use crate::secrets::Redactor;
use crate::store::Store;

/// The most events one transaction stores.
const BATCH_EVENTS: usize = 4096;
/// How long a batch waits for more events after its first one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Events given and not yet stored beyond which `event` waits for the writer.
const QUEUED_EVENTS: usize = 4 * BATCH_EVENTS;

/// The handle of one job's writer thread; dropping it stores what is left and ends the thread.
pub(super) struct EventWriter {
    job_id: u64,
    entries: Option<SyncSender<Entry>>,
    thread: Option<JoinHandle<()>>,
}

enum Entry {
    Event(Pending),
    /// Store everything before, then say so.
    Flush(SyncSender<()>),
    /// Store everything before, then these events in one transaction closing the container's
    /// log, then say so.
    CloseLog {
        container_id: String,
        events: Vec<Pending>,
        done: SyncSender<()>,
    },
}

/// An event as given: its text not yet redacted, its time when it was given.
struct Pending {
    event_type: EventType,
    source: EventSource,
    message: String,
    created: i64,
}

impl EventWriter {
    /// Starts the writer of `job`'s events; each message is redacted by `redactor` before it is
    /// stored.
    pub(super) fn start(store: Arc<Store>, job: &Job, redactor: Option<Arc<Redactor>>) -> Self {
        let (entries, receiver) = mpsc::sync_channel(QUEUED_EVENTS);
        let thread = Thread {
            store,
            redactor,
            job_id: job.id,
            run_id: job.run_id.clone(),
            component: job.component.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("jobq-events-{}", job.id))
            .spawn(move || thread.run(receiver));
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::error!(job_id = job.id, %error, "cannot start the thread that stores a job's events");
                None
            }
        };
        EventWriter {
            job_id: job.id,
            entries: thread.is_some().then_some(entries),
            thread,
        }
    }

    /// Queues an event; waits only while the writer is `QUEUED_EVENTS` behind.
    pub(super) fn event(&self, event_type: EventType, source: EventSource, message: &str) {
        let pending = Pending {
            event_type,
            source,
            message: message.to_string(),
            created: now_micros(),
        };
        self.send(Entry::Event(pending));
    }

    /// Waits until every event queued so far is stored (or failed to be, which is logged).
    pub(super) fn flush(&self) {
        let (done, stored) = mpsc::sync_channel(1);
        if self.send(Entry::Flush(done)) {
            let _ = blocking(|| stored.recv());
        }
    }

    /// Stores `events` after every event queued so far, in one transaction that closes
    /// `container_id`'s log; waits until they are stored.
    pub(super) fn close_log(
        &self,
        container_id: &str,
        events: Vec<(EventType, EventSource, String)>,
    ) {
        let created = now_micros();
        let events = events
            .into_iter()
            .map(|(event_type, source, message)| Pending {
                event_type,
                source,
                message,
                created,
            })
            .collect();
        let (done, stored) = mpsc::sync_channel(1);
        let entry = Entry::CloseLog {
            container_id: container_id.to_string(),
            events,
            done,
        };
        if self.send(entry) {
            let _ = blocking(|| stored.recv());
        }
    }

    /// Whether the entry reached the writer.
    fn send(&self, entry: Entry) -> bool {
        let Some(entries) = &self.entries else {
            tracing::error!(job_id = self.job_id, "an event is lost: the job has no event writer");
            return false;
        };
        let sent = match entries.try_send(entry) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(entry)) => blocking(|| entries.send(entry)).map_err(drop),
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            tracing::error!(job_id = self.job_id, "an event is lost: the job's event writer stopped");
        }
        sent.is_ok()
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // The thread stores what is queued, sees the channel closed, and ends.
        self.entries.take();
        if let Some(thread) = self.thread.take() {
            if blocking(|| thread.join()).is_err() {
                tracing::error!(job_id = self.job_id, "the thread storing a job's events panicked");
            }
        }
    }
}

/// The writer thread's side.
struct Thread {
    store: Arc<Store>,
    redactor: Option<Arc<Redactor>>,
    job_id: u64,
    run_id: String,
    component: String,
}

impl Thread {
    /// Takes entries until the channel closes: a batch starts with the first event waiting and
    /// ends after `BATCH_WINDOW`, at `BATCH_EVENTS`, or at a flush, whichever comes first.
    fn run(self, entries: Receiver<Entry>) {
        let mut batch = Vec::new();
        while let Ok(first) = entries.recv() {
            let deadline = Instant::now() + BATCH_WINDOW;
            let mut next = Some(first);
            while let Some(entry) = next.take() {
                match entry {
                    Entry::Event(event) => batch.push(event),
                    Entry::Flush(done) => {
                        self.store(&mut batch, None);
                        let _ = done.send(());
                        break;
                    }
                    Entry::CloseLog {
                        container_id,
                        mut events,
                        done,
                    } => {
                        self.store(&mut batch, None);
                        self.store(&mut events, Some(&container_id));
                        let _ = done.send(());
                        break;
                    }
                }
                if batch.len() >= BATCH_EVENTS {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                next = match entries.recv_timeout(left) {
                    Ok(entry) => Some(entry),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
                };
            }
            self.store(&mut batch, None);
        }
    }

    /// Stores and empties `batch` in one transaction (closing `close`'s log with it). A failure
    /// is logged: the events are lost, as a single event's would be.
    fn store(&self, batch: &mut Vec<Pending>, close: Option<&str>) {
        if batch.is_empty() && close.is_none() {
            return;
        }
        let messages: Vec<Cow<str>> = batch
            .iter()
            .map(|event| match &self.redactor {
                Some(redactor) if !redactor.is_empty() => Cow::Owned(redactor.redact(&event.message)),
                _ => Cow::Borrowed(event.message.as_str()),
            })
            .collect();
        let events: Vec<NewEvent> = batch
            .iter()
            .zip(&messages)
            .map(|(event, message)| NewEvent {
                job_id: self.job_id,
                event_type: event.event_type,
                source: event.source,
                message,
                run_id: &self.run_id,
                component: &self.component,
                created: event.created,
            })
            .collect();
        let stored = match close {
            None => self.store.add_events(&events),
            Some(container_id) => {
                self.store
                    .add_events_closing_log(&events, self.job_id, container_id)
            }
        };
        if let Err(error) = stored {
            tracing::error!(job_id = self.job_id, events = events.len(), %error, "cannot store events");
        }
        batch.clear();
    }
}
