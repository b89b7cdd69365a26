//! A running container's events, stored by a thread of its own in batches (group commit): one
//! store transaction per batch, ids in the order the events were given.
//!
//! A batch commits without fsync (`Durability::None`) unless it is the first a second after the
//! last durable one, a flush or a closing log; the writer commits durably before it idles or
//! ends with a commit that is not. A crash thus loses at most the last second of events, which
//! a re-attached run reads again from the container's log (it resumes after the stored lines).

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
/// The longest time a commit stays not durable.
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// Events given and not yet stored beyond which `event` waits for the writer. Half of it
/// (or of `QUEUED_BYTES`) is where an attached reader waits for room (`has_room`): a burst of
/// 100,000 short lines fits, about 13 MiB.
const QUEUED_EVENTS: usize = 1 << 18;
/// Bytes of messages given and not yet stored beyond which `event` waits for the writer.
const QUEUED_BYTES: usize = 64 << 20;

/// The handle of one job's writer thread; dropping it stores what is left and ends the thread.
pub(super) struct EventWriter {
    job_id: u64,
    entries: Option<Sender<Entry>>,
    queue: Arc<Queued>,
    thread: Option<JoinHandle<()>>,
}

/// What is given and not yet stored; `event` waits on `stored` while it is over the limits.
#[derive(Default)]
struct Queued {
    events: AtomicUsize,
    bytes: AtomicUsize,
    lock: Mutex<()>,
    stored: Condvar,
}

impl Queued {
    /// Whether more than a `part`th of either limit is queued (`1`: over the limit).
    fn over(&self, part: usize) -> bool {
        self.events.load(Ordering::Acquire) * part > QUEUED_EVENTS
            || self.bytes.load(Ordering::Acquire) * part > QUEUED_BYTES
    }

    fn add(&self, bytes: usize) {
        self.events.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn remove(&self, events: usize, bytes: usize) {
        self.events.fetch_sub(events, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        drop(self.guard());
        self.stored.notify_all();
    }

    /// Waits while more than the limits are queued.
    fn wait(&self) {
        let waited = self.stored.wait_while(self.guard(), |_| self.over(1));
        drop(waited.unwrap_or_else(|poisoned| poisoned.into_inner()));
    }

    /// Waits at most `patience` while more than half the limits are queued; whether less is.
    fn wait_for_half(&self, patience: Duration) -> bool {
        let waited = self
            .stored
            .wait_timeout_while(self.guard(), patience, |_| self.over(2));
        let (guard, timeout) = waited.unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(guard);
        !timeout.timed_out()
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
        let (entries, receiver) = mpsc::channel();
        let queue = Arc::new(Queued::default());
        let thread = Thread {
            store,
            redactor,
            queue: Arc::clone(&queue),
            job_id: job.id,
            run_id: job.run_id.to_string(),
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
            queue,
            thread,
        }
    }

    /// Queues an event; waits only while the writer is `QUEUED_EVENTS` (or `QUEUED_BYTES`)
    /// behind.
    pub(super) fn event(&self, event_type: EventType, source: EventSource, message: &str) {
        if self.queue.over(1) {
            blocking(|| self.queue.wait());
        }
        let pending = Pending {
            event_type,
            source,
            message: message.to_string(),
            created: now_micros(),
        };
        self.queue.add(pending.message.len());
        if !self.send(Entry::Event(pending)) {
            self.queue.remove(1, message.len());
        }
    }

    /// Whether the writer is less than half way to the limits, where `event` would soon wait;
    /// when it is not, waits at most `patience` for it to get there.
    pub(super) fn has_room(&self, patience: Duration) -> bool {
        !self.queue.over(2) || blocking(|| self.queue.wait_for_half(patience))
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
            tracing::error!(
                job_id = self.job_id,
                "an event is lost: the job has no event writer"
            );
            return false;
        };
        let sent = entries.send(entry).is_ok();
        if !sent {
            tracing::error!(
                job_id = self.job_id,
                "an event is lost: the job's event writer stopped"
            );
        }
        sent
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // The thread stores what is queued, sees the channel closed, and ends.
        self.entries.take();
        if let Some(thread) = self.thread.take() {
            if blocking(|| thread.join()).is_err() {
                tracing::error!(
                    job_id = self.job_id,
                    "the thread storing a job's events panicked"
                );
            }
        }
    }
}

/// The writer thread's side.
struct Thread {
    store: Arc<Store>,
    redactor: Option<Arc<Redactor>>,
    queue: Arc<Queued>,
    job_id: u64,
    run_id: String,
    component: String,
}

impl Thread {
    /// Takes entries until the channel closes: a batch starts with the first event waiting and
    /// ends after `BATCH_WINDOW`, at `BATCH_EVENTS`, or at a flush, whichever comes first.
    fn run(self, entries: Receiver<Entry>) {
        let mut batch = Vec::new();
        let mut durability = Durable::new();
        loop {
            let first = match durability.due() {
                None => entries.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => entries.recv_timeout(due),
            };
            let first = match first {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.store(&mut batch, None, &mut durability);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let deadline = Instant::now() + BATCH_WINDOW;
            let mut next = Some(first);
            while let Some(entry) = next.take() {
                match entry {
                    Entry::Event(event) => batch.push(event),
                    Entry::Flush(done) => {
                        durability.force();
                        self.store(&mut batch, None, &mut durability);
                        let _ = done.send(());
                        break;
                    }
                    Entry::CloseLog {
                        container_id,
                        mut events,
                        done,
                    } => {
                        self.store(&mut batch, None, &mut durability);
                        durability.force();
                        self.store(&mut events, Some(&container_id), &mut durability);
                        let _ = done.send(());
                        break;
                    }
                }
                if batch.len() >= BATCH_EVENTS {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                next = entries.recv_timeout(left).ok();
            }
            self.store(&mut batch, None, &mut durability);
        }
        if durability.due().is_some() {
            durability.force();
            self.store(&mut batch, None, &mut durability);
        }
    }

    /// Stores and empties `batch` in one transaction (closing `close`'s log with it), durably
    /// when `durability` says so; an empty batch commits only to make the ones before durable.
    /// A failure is logged: the events are lost, as a single event's would be.
    fn store(&self, batch: &mut Vec<Pending>, close: Option<&str>, durability: &mut Durable) {
        let durable = durability.now();
        if batch.is_empty() && close.is_none() && !(durable && durability.pending) {
            durability.forced = false;
            return;
        }
        let queued = match close {
            None => Some((batch.len(), batch.iter().map(|e| e.message.len()).sum())),
            // The events of a closing log were never counted as queued.
            Some(_) => None,
        };
        let messages: Vec<Cow<str>> = batch
            .iter()
            .map(|event| match &self.redactor {
                Some(redactor) if !redactor.is_empty() => {
                    Cow::Owned(redactor.redact(&event.message))
                }
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
        let store = || match close {
            None => self.store.add_events(&events, durable),
            Some(container_id) => {
                self.store
                    .add_events_closing_log(&events, self.job_id, container_id)
            }
        };
        let mut stored = store();
        // A fault of the host holds the batch (and, by the queue's bound, the reader) until
        // the store takes writes again: the events are kept, in order.
        while let Err(error) = &stored {
            if !error.is_host_fault() {
                break;
            }
            tracing::warn!(job_id = self.job_id, events = events.len(), %error, "holding events until the store takes writes again");
            while !self.store.wait_writable(Duration::from_secs(60)) {}
            stored = store();
        }
        match stored {
            Ok(_) => durability.committed(durable),
            Err(error) => {
                tracing::error!(job_id = self.job_id, events = events.len(), %error, "cannot store events")
            }
        }
        drop(events);
        batch.clear();
        if let Some((events, bytes)) = queued {
            self.queue.remove(events, bytes);
        }
    }
}

/// When the writer's next commit must be durable.
struct Durable {
    /// When the last durable commit was made (or the writer started).
    last: Instant,
    /// Since then a commit was made that is not durable.
    pending: bool,
    /// The next commit is durable, whenever it comes.
    forced: bool,
}

impl Durable {
    fn new() -> Durable {
        Durable {
            last: Instant::now(),
            pending: false,
            forced: false,
        }
    }

    /// How long until a commit that is not durable must be made durable; `None`: none is.
    fn due(&self) -> Option<Duration> {
        self.pending
            .then(|| DURABLE_EVERY.saturating_sub(self.last.elapsed()))
    }

    fn force(&mut self) {
        self.forced = true;
    }

    /// Whether a commit made now is durable.
    fn now(&self) -> bool {
        self.forced || self.last.elapsed() >= DURABLE_EVERY
    }

    fn committed(&mut self, durable: bool) {
        if durable {
            *self = Durable::new();
        } else {
            self.pending = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;

    fn store_with_job(dir: &tempfile::TempDir) -> (Arc<Store>, Job) {
        let store = Arc::new(Store::open(&dir.path().join("jobq.redb")).unwrap());
        let job = store
            .create_job(|id| Job {
                id,
                run_id: crate::model::RunId::root(id),
                ..Job::example()
            })
            .unwrap();
        (store, job)
    }

    fn oldest_first(store: &Store, job: &Job) -> Vec<Event> {
        let mut events = store.events(job.id, None, 0, usize::MAX).unwrap();
        events.reverse();
        events
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn events_are_stored_in_order_with_consecutive_ids_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = store_with_job(&dir);
        let redactor = Arc::new(Redactor::new(["s3cret-value"]));
        let writer = EventWriter::start(Arc::clone(&store), &job, Some(redactor));
        for i in 0..10_000 {
            writer.event(EventType::Info, EventSource::Stdout, &format!("line {i}"));
        }
        writer.event(EventType::Warn, EventSource::Jobq, "it is s3cret-value");
        writer.flush();
        assert!(writer.has_room(Duration::ZERO));
        let events = oldest_first(&store, &job);
        assert_eq!(events.len(), 10_001);
        for (i, event) in events[..10_000].iter().enumerate() {
            assert_eq!(event.message, format!("line {i}"));
            assert_eq!(event.id, events[0].id + i as u64, "consecutive ids");
            assert_eq!(
                (event.job_id, event.run_id.as_str()),
                (job.id, job.run_id.as_str())
            );
        }
        assert_eq!(events[10_000].message, "it is [hidden]");
        assert_eq!(events[10_000].event_type, EventType::Warn);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_closed_log_is_stored_after_the_events_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = store_with_job(&dir);
        let writer = EventWriter::start(Arc::clone(&store), &job, None);
        writer.event(EventType::Info, EventSource::Stdout, "first");
        let tail = vec![
            (EventType::Warn, EventSource::Jobq, "dropped".to_string()),
            (EventType::Info, EventSource::Stdout, "last".to_string()),
        ];
        writer.close_log("container-1", tail);
        assert!(store.log_closed(job.id, "container-1").unwrap());
        let messages: Vec<String> = oldest_first(&store, &job)
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["first", "dropped", "last"]);
    }

    #[test]
    fn a_commit_is_durable_when_forced_or_a_second_after_the_last_durable_one() {
        let mut durability = Durable::new();
        assert!(!durability.now() && durability.due().is_none());
        durability.committed(false);
        assert!(durability.due().is_some_and(|due| due <= DURABLE_EVERY));
        durability.force();
        assert!(durability.now());
        durability.committed(true);
        assert!(!durability.now() && durability.due().is_none());
        durability.last -= DURABLE_EVERY;
        assert!(durability.now());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_the_writer_stores_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (store, job) = store_with_job(&dir);
        let writer = EventWriter::start(Arc::clone(&store), &job, None);
        for i in 0..100 {
            writer.event(EventType::Info, EventSource::Stdout, &format!("line {i}"));
        }
        drop(writer);
        assert_eq!(
            store.count_events(job.id, EventSource::Stdout).unwrap(),
            100
        );
    }
}
