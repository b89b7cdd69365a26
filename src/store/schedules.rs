//! Activated schedules in the store, and their fires: a fire's job and the advance of the
//! schedule's next fire time are written in one write transaction, so a fire happens once,
//! whatever crash comes before or after its commit.

use redb::{ReadableTable, WriteTransaction};

use super::tables::*;
use super::{codec, insert_jobs, next_in_sequence, Fail, Store, StoreError};
use crate::model::{Job, Schedule};

impl Store {
    /// Stores the schedule `make(id, previous)` returns for the `keboola.scheduler`
    /// configuration `configuration_id`: a configuration has one schedule, so activating it
    /// again replaces the previous one under the same id; a first activation takes the next
    /// id of the schedule sequence. `id` and `configuration_id` are forced.
    pub fn save_schedule(
        &self,
        configuration_id: &str,
        make: impl FnOnce(u64, Option<&Schedule>) -> Schedule,
    ) -> Result<Schedule, StoreError> {
        self.write("activating a schedule", |txn| {
            let previous = all_schedules(txn)?
                .into_iter()
                .find(|s| s.configuration_id == configuration_id);
            let id = match &previous {
                Some(previous) => previous.id,
                None => next_in_sequence(txn, META_LAST_SCHEDULE_ID, "schedule")?,
            };
            let mut schedule = make(id, previous.as_ref());
            schedule.id = id;
            schedule.configuration_id = configuration_id.to_string();
            put(txn, &schedule)?;
            Ok(schedule)
        })
    }

    /// Every activated schedule, in id order.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.read("listing schedules", |txn| {
            decode_all(&txn.open_table(SCHEDULES)?)
        })
    }

    /// The schedule `id`, if activated.
    pub fn schedule(&self, id: u64) -> Result<Option<Schedule>, StoreError> {
        self.read("reading a schedule", |txn| {
            let table = txn.open_table(SCHEDULES)?;
            let record = table.get(id)?;
            Ok(record
                .map(|record| codec::decode_schedule(record.value()))
                .transpose()?)
        })
    }

    /// Deactivates the schedules `which` picks; how many there were.
    pub fn delete_schedules(&self, which: impl Fn(&Schedule) -> bool) -> Result<usize, StoreError> {
        self.write("deleting schedules", |txn| {
            let doomed: Vec<u64> = all_schedules(txn)?
                .into_iter()
                .filter(|s| which(s))
                .map(|s| s.id)
                .collect();
            let mut table = txn.open_table(SCHEDULES)?;
            for id in &doomed {
                table.remove(id)?;
            }
            Ok(doomed.len())
        })
    }

    /// The fire of schedule `id` that was due at `due`, in one write transaction: the `count`
    /// jobs `make(ids)` returns are created (none when `count` is 0: a fire skipped), the first
    /// is recorded as an execution of `due`, and the next fire time becomes `next`. Only when
    /// the stored next fire time still is `due` (compare-and-set): `None` when the schedule was
    /// deleted, re-activated or already fired for `due`, and nothing was written.
    pub fn fire_schedule(
        &self,
        id: u64,
        due: i64,
        next: Option<i64>,
        count: usize,
        make: impl FnOnce(&[u64]) -> Vec<Job>,
    ) -> Result<Option<Vec<Job>>, StoreError> {
        let fired = self.write_or_abort("firing a schedule", |txn| {
            let stored = {
                let table = txn.open_table(SCHEDULES)?;
                let record = table.get(id)?;
                record
                    .map(|record| codec::decode_schedule(record.value()))
                    .transpose()?
            };
            let Some(mut schedule) = stored.filter(|s| s.next_fire == Some(due)) else {
                return Ok(Err(()));
            };
            let jobs = if count == 0 {
                Vec::new()
            } else {
                insert_jobs(txn, count, |ids| Ok(make(ids)))?
            };
            if let Some(first) = jobs.first() {
                schedule.record_execution(first.id, due);
            }
            schedule.next_fire = next;
            put(txn, &schedule)?;
            crate::failpoint::hit(crate::failpoint::SCHEDULE_FIRING);
            Ok(Ok(jobs))
        })?;
        if fired.is_ok() {
            crate::failpoint::hit(crate::failpoint::SCHEDULE_FIRED);
        }
        Ok(fired.ok())
    }
}

fn all_schedules(txn: &WriteTransaction) -> Result<Vec<Schedule>, Fail> {
    decode_all(&txn.open_table(SCHEDULES)?)
}

fn decode_all(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<Vec<Schedule>, Fail> {
    let mut found = Vec::new();
    for entry in table.iter()? {
        found.push(codec::decode_schedule(entry?.1.value())?);
    }
    Ok(found)
}

fn put(txn: &WriteTransaction, schedule: &Schedule) -> Result<(), Fail> {
    txn.open_table(SCHEDULES)?
        .insert(schedule.id, codec::encode_schedule(schedule)?.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunId, ScheduleDefinition};
    use serde_json::json;

    fn schedule() -> Schedule {
        let definition = ScheduleDefinition::parse(&json!({
            "schedule": {"cronTab": "* * * * *"},
            "target": {"componentId": "c", "configurationId": "1"}
        }))
        .expect("valid");
        Schedule {
            id: 0,
            token_id: "7".into(),
            configuration_id: String::new(),
            configuration_version_id: 1,
            definition,
            next_fire: Some(60_000_000),
            executions: Vec::new(),
        }
    }

    fn job(ids: &[u64]) -> Vec<Job> {
        vec![Job {
            id: ids[0],
            run_id: RunId::root(ids[0]),
            ..Job::example()
        }]
    }

    #[test]
    fn a_fire_creates_its_job_and_advances_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("jobq.redb")).expect("open");
        let saved = store
            .save_schedule("9", |_, previous| {
                assert!(previous.is_none());
                schedule()
            })
            .expect("saved");
        assert_eq!((saved.id, saved.configuration_id.as_str()), (1, "9"));

        let fired = store
            .fire_schedule(1, 60_000_000, Some(120_000_000), 1, job)
            .expect("fired")
            .expect("due");
        assert_eq!(fired.len(), 1);
        // The same instant again (a second pass, a process that read it before): nothing.
        let again = store.fire_schedule(1, 60_000_000, Some(120_000_000), 1, job);
        assert_eq!(again.expect("no error"), None);
        assert_eq!(store.job(2).expect("read"), None);
        let stored = store.schedule(1).expect("read").expect("kept");
        assert_eq!(stored.next_fire, Some(120_000_000));
        assert_eq!(stored.executions.len(), 1);
        assert_eq!(stored.executions[0].job_id, fired[0].id);
        assert_eq!(stored.executions[0].execution_time, 60_000_000);

        // A skipped fire advances without a job or an execution.
        let skipped = store
            .fire_schedule(1, 120_000_000, Some(180_000_000), 0, job)
            .expect("skipped")
            .expect("due");
        assert!(skipped.is_empty());
        let stored = store.schedule(1).expect("read").expect("kept");
        assert_eq!(
            (stored.next_fire, stored.executions.len()),
            (Some(180_000_000), 1)
        );

        // Activating again keeps the id; deleting removes it.
        let again = store
            .save_schedule("9", |id, previous| {
                assert_eq!(previous.map(|p| p.id), Some(id));
                schedule()
            })
            .expect("saved");
        assert_eq!(again.id, 1);
        assert_eq!(store.schedules().expect("list").len(), 1);
        assert_eq!(store.delete_schedules(|s| s.id == 1).expect("deleted"), 1);
        assert_eq!(store.schedule(1).expect("read"), None);
        assert_eq!(
            store
                .fire_schedule(1, 180_000_000, None, 1, job)
                .expect("no error"),
            None
        );
        store.assert_internally_consistent();
    }
}
