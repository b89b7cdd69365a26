//! Grouped listings (`GET /search/grouped-jobs`) sorted by id and grouped by fields of the
//! config index's key (component, config, branch): the keys the query selects are grouped, and
//! each group is a listing of its own (`walk`), read only until it has its jobs. The cost grows
//! with the number of groups, not of jobs (unless few jobs of a group pass the query's other
//! filters).

use std::collections::BTreeMap;

use super::tables::JOBS_BY_CONFIG;
use super::{walk, Store, StoreError};
use crate::model::{Job, JobQuery, SortKey};

/// Which fields of a job make its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBy {
    pub component: bool,
    pub config: bool,
    pub branch: bool,
}

impl Store {
    /// The jobs `query` selects in groups by `by`: each group's first `per_group` jobs in id
    /// order (`query.descending`), the groups in the order of their first job, at most
    /// `groups` of them. `query`'s sort key, offset and limit are not used.
    pub fn search_groups(
        &self,
        query: &JobQuery,
        by: GroupBy,
        per_group: usize,
        groups: usize,
    ) -> Result<Vec<Vec<Job>>, StoreError> {
        self.read("listing grouped jobs", |txn| {
            let index = txn.open_multimap_table(JOBS_BY_CONFIG)?;
            let mut keyed: BTreeMap<_, Vec<_>> = BTreeMap::new();
            for key in walk::config_keys(&index, query)? {
                let group = (
                    by.component.then(|| key.0.clone()),
                    by.config.then(|| key.1.clone()),
                    by.branch.then(|| key.2.clone()),
                );
                keyed.entry(group).or_default().push(key);
            }
            let mut found = Vec::new();
            for ((component, config, branch), keys) in keyed {
                // The group's own filters, for the jobs the query's ids name.
                let mut query = JobQuery {
                    sort_by: SortKey::Id,
                    offset: 0,
                    limit: per_group,
                    ..query.clone()
                };
                query.component_ids = component.map_or(query.component_ids, |c| vec![c]);
                query.config_ids = config.map_or(query.config_ids, |c| vec![c]);
                query.branch_ids = branch.map_or(query.branch_ids, |b| vec![b]);
                let stream = walk::stream(txn, &query, Some(keys))?;
                let jobs = walk::collect(txn, &query, stream)?;
                if !jobs.is_empty() {
                    found.push(jobs);
                }
            }
            found.sort_by_key(|jobs: &Vec<Job>| jobs[0].id);
            if query.descending {
                found.reverse();
            }
            found.truncate(groups);
            Ok(found)
        })
    }
}
