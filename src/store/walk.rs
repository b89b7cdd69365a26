//! Listings by walking the indexes in id order: each index a query's filters name gives a
//! stream of ascending (or descending) job ids, several keys of one index are merged (k-way),
//! several indexes intersected (merge join); jobs are loaded only from the stream, and a
//! listing sorted by id stops as soon as its page is full.
//!
//! The multimap indexes keep each key's ids sorted, which is what makes the streams cheap. An
//! index joins the intersection only when it is at most `JOIN_RATIO` times the smallest one
//! (walking index entries costs about a hundredth of loading a job); the filters left out, and
//! those without an index (token, mode, type, row ids, start and end times, duration, and
//! created time beside another index), are checked on each loaded job. A query whose every
//! filter is an intersected index skips its `offset` without loading the skipped jobs.
//!
//! Sorted by another key than id, a listing reads every job its stream names and keeps the best
//! `offset + limit`: its time grows with the number of matches, its memory with the page.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;

use redb::{
    MultimapValue, ReadOnlyMultimapTable, ReadOnlyTable, ReadTransaction, ReadableMultimapTable,
};

use super::tables::*;
use super::{dangling, distinct, load_job, Fail};
use crate::model::{Job, JobQuery, SortKey};

/// An index joins the intersection when it names at most this many times the ids of the
/// smallest one; a larger one is cheaper checked on the jobs loaded.
const JOIN_RATIO: u64 = 64;
/// A created-time range as the only indexed filter is read whole from its index when it
/// holds at most this many jobs; a larger one is checked on each job walked in id order.
#[cfg(not(test))]
const CREATED_RANGE_CAP: usize = 50_000;
/// Small in tests, so their stores take both ways.
#[cfg(test)]
const CREATED_RANGE_CAP: usize = 200;

/// Job ids in the walk's order, each once.
type Ids = Box<dyn Iterator<Item = Result<u64, Fail>>>;

/// The config index: (component, config id or "", branch id) -> job ids.
pub(super) type ConfigIndex =
    ReadOnlyMultimapTable<(&'static str, &'static str, &'static str), u64>;

/// Where a walk takes its ids from.
pub(super) struct Stream {
    pub(super) ids: Ids,
    /// Whether every job the stream names passes the query (no check needed to skip it).
    pub(super) exact: bool,
    /// Whether an id may name no job (the query's own ids).
    may_miss: bool,
}

/// The jobs `query` selects, sorted and paged by it.
pub(super) fn search(txn: &ReadTransaction, query: &JobQuery) -> Result<Vec<Job>, Fail> {
    let filters_config = !query.component_ids.is_empty()
        || !query.config_ids.is_empty()
        || !query.branch_ids.is_empty();
    let keys = match filters_config {
        true => Some(config_keys(
            &txn.open_multimap_table(JOBS_BY_CONFIG)?,
            query,
        )?),
        false => None,
    };
    let stream = stream(txn, query, keys)?;
    collect(txn, query, stream)
}

/// Reads the jobs of `stream` that pass `query`, sorted and paged by it.
pub(super) fn collect(
    txn: &ReadTransaction,
    query: &JobQuery,
    stream: Stream,
) -> Result<Vec<Job>, Fail> {
    let jobs = txn.open_table(JOBS)?;
    if query.sort_by != SortKey::Id {
        // Every match is read; only the best `offset + limit` are kept (twice as many between
        // two cuts), so memory follows the page, not the matches.
        let keep = query.offset.saturating_add(query.limit);
        let mut best = Vec::new();
        for id in stream.ids {
            let Some(job) = load(&jobs, id?, stream.may_miss)? else {
                continue;
            };
            if query.matches(&job) {
                best.push(job);
            }
            if best.len() >= keep.saturating_mul(2).max(64) {
                best.sort_by(|a, b| query.order(a, b));
                best.truncate(keep);
            }
        }
        return Ok(query.sort_and_page(best));
    }
    let mut skip = query.offset;
    let mut page = Vec::new();
    for id in stream.ids {
        if page.len() >= query.limit {
            break;
        }
        let id = id?;
        if skip > 0 && stream.exact {
            skip -= 1;
            continue;
        }
        let Some(job) = load(&jobs, id, stream.may_miss)? else {
            continue;
        };
        if !query.matches(&job) {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        page.push(job);
    }
    Ok(page)
}

fn load(
    jobs: &ReadOnlyTable<u64, &'static [u8]>,
    id: u64,
    may_miss: bool,
) -> Result<Option<Job>, Fail> {
    match load_job(jobs, id)? {
        Some(job) => Ok(Some(job)),
        None if may_miss => Ok(None),
        None => Err(dangling(id)),
    }
}

/// The keys of the config index that `query`'s components, configs and branches select
/// (every key when it names none), in key order.
pub(super) fn config_keys(
    index: &ConfigIndex,
    query: &JobQuery,
) -> Result<Vec<(String, String, String)>, Fail> {
    let wanted =
        |wanted: &[String], value: &str| wanted.is_empty() || wanted.iter().any(|w| w == value);
    let mut keys = Vec::new();
    let mut add = |(component, config, branch): (&str, &str, &str)| {
        if wanted(&query.config_ids, config) && wanted(&query.branch_ids, branch) {
            keys.push((
                component.to_string(),
                config.to_string(),
                branch.to_string(),
            ));
        }
    };
    if query.component_ids.is_empty() {
        for entry in index.iter()? {
            add(entry?.0.value());
        }
        return Ok(keys);
    }
    let mut components: Vec<&String> = query.component_ids.iter().collect();
    components.sort();
    components.dedup();
    for component in components {
        for entry in index.range((component.as_str(), "", "")..)? {
            let key = entry?.0;
            let key = key.value();
            if key.0 != component {
                break;
            }
            add(key);
        }
    }
    Ok(keys)
}

/// The stream of `query`: its indexed filters intersected (see the module's doc), `config`
/// the keys of the config index it selects (`None`: it filters no component, config or
/// branch).
pub(super) fn stream(
    txn: &ReadTransaction,
    query: &JobQuery,
    config: Option<Vec<(String, String, String)>>,
) -> Result<Stream, Fail> {
    let descending = query.descending;
    if !query.ids.is_empty() {
        let mut ids = query.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        if descending {
            ids.reverse();
        }
        return Ok(Stream {
            ids: Box::new(ids.into_iter().map(Ok)),
            exact: false,
            may_miss: true,
        });
    }
    // Each indexed filter as (how many ids, its keys' ids).
    let mut indexed: Vec<(u64, Vec<MultimapValue<'static, u64>>)> = Vec::new();
    if !query.run_ids.is_empty() {
        let index = txn.open_multimap_table(JOBS_BY_RUN_ID)?;
        let run_ids: Vec<&str> =
            distinct(&query.run_ids.iter().map(String::as_str).collect::<Vec<_>>());
        let values = run_ids
            .into_iter()
            .map(|run_id| index.get(run_id))
            .collect::<Result<Vec<_>, _>>()?;
        indexed.push(counted(values));
    }
    if !query.statuses.is_empty() {
        let index = txn.open_multimap_table(JOBS_BY_STATUS)?;
        let values = distinct(&query.statuses)
            .into_iter()
            .map(|status| index.get(status.code()))
            .collect::<Result<Vec<_>, _>>()?;
        indexed.push(counted(values));
    }
    if let Some(keys) = config {
        let index = txn.open_multimap_table(JOBS_BY_CONFIG)?;
        let values = keys
            .iter()
            .map(|(component, config, branch)| {
                index.get((component.as_str(), config.as_str(), branch.as_str()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        indexed.push(counted(values));
    }
    if let Some(parent) = &query.parent_run_id {
        let index = txn.open_multimap_table(JOBS_BY_PARENT)?;
        indexed.push(counted(vec![index.get(parent.as_str())?]));
    }
    let unindexed = !query.token_ids.is_empty()
        || !query.token_descriptions.is_empty()
        || !query.config_row_ids.is_empty()
        || !query.modes.is_empty()
        || query.job_type.is_some()
        || query.start_time != Default::default()
        || query.end_time != Default::default()
        || query.duration_from.is_some()
        || query.duration_to.is_some();
    let created = query.created_time;
    let created_bounded = created.from.is_some() || created.to.is_some();
    if indexed.is_empty() {
        if created_bounded {
            if let Some(ids) = created_range(txn, query)? {
                return Ok(Stream {
                    ids: Box::new(ids.into_iter().map(Ok)),
                    exact: !unindexed,
                    may_miss: false,
                });
            }
        }
        return all_jobs(txn, descending, !unindexed && !created_bounded);
    }
    // The smallest first: it leads the merge join.
    indexed.sort_by_key(|(count, _)| *count);
    let least = indexed[0].0;
    let joined = indexed.len();
    let streams: Vec<Ids> = indexed
        .into_iter()
        .filter(|(count, _)| *count <= least.saturating_mul(JOIN_RATIO))
        .map(|(_, values)| union(values, descending))
        .collect();
    let exact = streams.len() == joined && !unindexed && !created_bounded;
    Ok(Stream {
        ids: intersection(streams, descending),
        exact,
        may_miss: false,
    })
}

fn counted(values: Vec<MultimapValue<'static, u64>>) -> (u64, Vec<MultimapValue<'static, u64>>) {
    (values.iter().map(MultimapValue::len).sum(), values)
}

/// Every job id, from the jobs table itself.
fn all_jobs(txn: &ReadTransaction, descending: bool, exact: bool) -> Result<Stream, Fail> {
    let jobs = txn.open_table(JOBS)?;
    let range = jobs.range::<u64>(..)?;
    let ids = range.map(|entry| Ok(entry?.0.value()));
    let ids: Ids = if descending {
        Box::new(ids.rev())
    } else {
        Box::new(ids)
    };
    Ok(Stream {
        ids,
        exact,
        may_miss: false,
    })
}

/// The ids in the query's created-time range, in the walk's order, if there are at most
/// `CREATED_RANGE_CAP` (read from the created-time index); `None` when there are more.
fn created_range(txn: &ReadTransaction, query: &JobQuery) -> Result<Option<Vec<u64>>, Fail> {
    let range = query.created_time;
    let from = range.from.map_or(Bound::Unbounded, Bound::Included);
    let to = range.to.map_or(Bound::Unbounded, Bound::Included);
    if let (Some(from), Some(to)) = (range.from, range.to) {
        if from > to {
            return Ok(Some(Vec::new()));
        }
    }
    let index = txn.open_multimap_table(JOBS_BY_CREATED)?;
    let mut ids = Vec::new();
    for entry in index.range::<i64>((from, to))? {
        let (_, values) = entry?;
        for id in values {
            ids.push(id?.value());
        }
        if ids.len() > CREATED_RANGE_CAP {
            return Ok(None);
        }
    }
    ids.sort_unstable();
    if query.descending {
        ids.reverse();
    }
    Ok(Some(ids))
}

/// The ids of one key, in the walk's order.
fn values(values: MultimapValue<'static, u64>, descending: bool) -> Ids {
    let ids = values.map(|id| Ok(id?.value()));
    if descending {
        Box::new(ids.rev())
    } else {
        Box::new(ids)
    }
}

/// The ids of several keys of one index merged into the walk's order.
pub(super) fn union(keys: Vec<MultimapValue<'static, u64>>, descending: bool) -> Ids {
    let mut streams: Vec<Ids> = keys
        .into_iter()
        .map(|key| values(key, descending))
        .collect();
    if streams.len() == 1 {
        return streams.remove(0);
    }
    Box::new(Union {
        streams,
        heads: BinaryHeap::new(),
        started: false,
        descending,
        last: None,
    })
}

/// A k-way merge of ascending (or descending) streams.
struct Union {
    streams: Vec<Ids>,
    /// The next id of each stream not yet exhausted, as (order key, stream).
    heads: BinaryHeap<(Reverse<u64>, usize)>,
    started: bool,
    descending: bool,
    last: Option<u64>,
}

impl Union {
    /// The heap's key of `id`: the heap pops the greatest, the walk wants its order's first.
    fn key(&self, id: u64) -> Reverse<u64> {
        Reverse(if self.descending { u64::MAX - id } else { id })
    }

    fn pull(&mut self, stream: usize) -> Result<(), Fail> {
        if let Some(id) = self.streams[stream].next() {
            let key = self.key(id?);
            self.heads.push((key, stream));
        }
        Ok(())
    }
}

impl Iterator for Union {
    type Item = Result<u64, Fail>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for stream in 0..self.streams.len() {
                if let Err(fail) = self.pull(stream) {
                    return Some(Err(fail));
                }
            }
        }
        loop {
            let (Reverse(key), stream) = self.heads.pop()?;
            let id = if self.descending { u64::MAX - key } else { key };
            if let Err(fail) = self.pull(stream) {
                return Some(Err(fail));
            }
            if self.last != Some(id) {
                self.last = Some(id);
                return Some(Ok(id));
            }
        }
    }
}

/// The ids every one of `streams` holds, in the walk's order (a merge join).
fn intersection(mut streams: Vec<Ids>, descending: bool) -> Ids {
    if streams.len() == 1 {
        return streams.remove(0);
    }
    Box::new(Intersection {
        streams,
        descending,
    })
}

struct Intersection {
    streams: Vec<Ids>,
    descending: bool,
}

impl Iterator for Intersection {
    type Item = Result<u64, Fail>;

    fn next(&mut self) -> Option<Self::Item> {
        let before = |a: u64, b: u64| if self.descending { a > b } else { a < b };
        let count = self.streams.len();
        let mut target = match self.streams[0].next()? {
            Ok(id) => id,
            Err(fail) => return Some(Err(fail)),
        };
        // How many streams (counted back from `at`) stand at `target`.
        let mut agreeing = 1;
        let mut at = 1;
        while agreeing < count {
            let id = loop {
                match self.streams[at].next()? {
                    Ok(id) if before(id, target) => continue,
                    Ok(id) => break id,
                    Err(fail) => return Some(Err(fail)),
                }
            };
            if id == target {
                agreeing += 1;
            } else {
                target = id;
                agreeing = 1;
            }
            at = (at + 1) % count;
        }
        Some(Ok(target))
    }
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
