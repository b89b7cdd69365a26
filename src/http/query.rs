//! Query strings: the three array encodings, and the job listing filters.

use std::collections::BTreeMap;

use crate::http::error::ApiError;
use crate::model::{parse_time, JobQuery, JobType, Mode, SortKey, Status, TimeRange};

/// A parsed query string: each name (with `[]` / `[N]` removed) and its values in order.
#[derive(Debug, Clone, Default)]
pub struct Query {
    values: BTreeMap<String, Vec<String>>,
}

impl Query {
    /// Accepts `x[]=a&x[]=b`, `x[0]=a&x[1]=b` and `x=a&x=b` alike.
    pub fn parse(text: Option<&str>) -> Query {
        let mut query = Query::default();
        for (key, value) in form_urlencoded::parse(text.unwrap_or("").as_bytes()) {
            query.add(&key, value.into_owned());
        }
        query
    }

    /// Adds a value of `key` (`x`, `x[]` or `x[N]`) after those it has.
    pub fn add(&mut self, key: &str, value: String) {
        let name = match key.find('[') {
            Some(open) if key.ends_with(']') => &key[..open],
            _ => key,
        };
        self.values.entry(name.to_string()).or_default().push(value);
    }

    /// Every value given for `name` (an empty list when absent).
    pub fn all(&self, name: &str) -> &[String] {
        #[cfg(test)]
        tests::READ.with(|read| read.borrow_mut().insert(name.to_string()));
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Values of `name` and of its alias together.
    pub fn all_of(&self, name: &str, alias: &str) -> Vec<String> {
        [self.all(name), self.all(alias)].concat()
    }

    /// The last value given for `name`.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.all(name).last().map(String::as_str)
    }

    /// A non-negative integer parameter, or a 400 naming it.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.one(name)
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "Parameter \"{name}\" must be a non-negative integer, \"{text}\" given."
                    ))
                })
            })
            .transpose()
    }
}

/// The query parameters `job_query` reads (`[]` forms and `From`/`To` suffixes included), as
/// `/openapi.json` documents them.
pub const JOB_FILTERS: &[&str] = &[
    "id",
    "runId",
    "branchId",
    "tokenId",
    "tokenDescription",
    "componentId",
    "component",
    "configId",
    "config",
    "configRowIds",
    "mode",
    "status",
    "type",
    "parentRunId",
    "createdTimeFrom",
    "createdTimeTo",
    "startTimeFrom",
    "startTimeTo",
    "endTimeFrom",
    "endTimeTo",
    "durationSecondsFrom",
    "durationSecondsTo",
    "offset",
    "limit",
    "sortBy",
    "sortOrder",
];

/// The filters of `GET /search/jobs` (and `GET /jobs`) as docs/queue.md (Listing jobs) lists them.
pub fn job_query(query: &Query) -> Result<JobQuery, ApiError> {
    let parse_each = |name: &str, values: &[String], parse: &dyn Fn(&str) -> bool| {
        values.iter().find(|v| !parse(v)).map_or(Ok(()), |bad| {
            Err(ApiError::bad_request(format!(
                "Parameter \"{name}\" has an invalid value \"{bad}\"."
            )))
        })
    };
    parse_each("status", query.all("status"), &|v| {
        Status::parse(v).is_some()
    })?;
    parse_each("mode", query.all("mode"), &|v| Mode::parse(v).is_some())?;
    parse_each("id", query.all("id"), &|v| v.parse::<u64>().is_ok())?;

    let limit = query
        .number("limit")?
        .unwrap_or(JobQuery::DEFAULT_LIMIT as u64) as usize;
    if limit == 0 || limit > JobQuery::MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "Parameter \"limit\" must be between 1 and {}, {limit} given.",
            JobQuery::MAX_LIMIT
        )));
    }
    let sort_by = match query.one("sortBy") {
        None => SortKey::Id,
        Some(name) => SortKey::parse(name).ok_or_else(|| {
            let known: Vec<&str> = SortKey::NAMES.iter().map(|(n, _)| *n).collect();
            ApiError::bad_request(format!(
                "Parameter \"sortBy\" must be one of {}, \"{name}\" given.",
                known.join(", ")
            ))
        })?,
    };
    let descending = match query.one("sortOrder") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Parameter \"sortOrder\" must be asc or desc, \"{other}\" given."
            )))
        }
    };
    let job_type = match query.one("type") {
        None => None,
        Some(text) => Some(
            [
                JobType::Standard,
                JobType::Container,
                JobType::OrchestrationContainer,
                JobType::PhaseContainer,
            ]
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Parameter \"type\" has an invalid value \"{text}\"."
                ))
            })?,
        ),
    };
    Ok(JobQuery {
        ids: query
            .all("id")
            .iter()
            .filter_map(|v| v.parse().ok())
            .collect(),
        run_ids: query.all("runId").to_vec(),
        branch_ids: query.all("branchId").to_vec(),
        token_ids: query.all("tokenId").to_vec(),
        token_descriptions: query.all("tokenDescription").to_vec(),
        component_ids: query.all_of("componentId", "component"),
        config_ids: query.all_of("configId", "config"),
        config_row_ids: query.all("configRowIds").to_vec(),
        modes: query
            .all("mode")
            .iter()
            .filter_map(|v| Mode::parse(v))
            .collect(),
        statuses: query
            .all("status")
            .iter()
            .filter_map(|v| Status::parse(v))
            .collect(),
        job_type,
        parent_run_id: query.one("parentRunId").map(str::to_string),
        created_time: time_range(query, "createdTime")?,
        start_time: time_range(query, "startTime")?,
        end_time: time_range(query, "endTime")?,
        duration_from: query.number("durationSecondsFrom")?.map(|n| n as i64),
        duration_to: query.number("durationSecondsTo")?.map(|n| n as i64),
        sort_by,
        descending,
        offset: query.number("offset")?.unwrap_or(0) as usize,
        limit,
    })
}

fn time_range(query: &Query, name: &str) -> Result<TimeRange, ApiError> {
    let bound = |suffix: &str| -> Result<Option<i64>, ApiError> {
        let key = format!("{name}{suffix}");
        query
            .one(&key)
            .map(|text| {
                parse_time(text).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Parameter \"{key}\" must be an ISO 8601 time (or a relative one like \"-1 week\"), \"{text}\" given."
                    ))
                })
            })
            .transpose()
    };
    Ok(TimeRange {
        from: bound("From")?,
        to: bound("To")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    thread_local! {
        /// The names `Query::all` was asked for on this thread.
        pub static READ: RefCell<BTreeSet<String>> = RefCell::default();
    }

    #[test]
    fn job_filters_are_the_names_job_query_reads() {
        READ.with(|read| read.borrow_mut().clear());
        job_query(&Query::parse(None)).unwrap();
        let read = READ.with(|read| read.borrow().clone());
        let documented: BTreeSet<String> = JOB_FILTERS.iter().map(|n| n.to_string()).collect();
        assert_eq!(read, documented);
    }

    #[test]
    fn three_array_encodings_mean_the_same() {
        for text in [
            "status[]=error&status[]=success",
            "status[0]=error&status[1]=success",
            "status=error&status=success",
        ] {
            let query = job_query(&Query::parse(Some(text))).unwrap();
            assert_eq!(query.statuses, [Status::Error, Status::Success], "{text}");
        }
    }

    #[test]
    fn aliases_and_defaults() {
        let query = job_query(&Query::parse(Some("component=a&componentId=b&config=7"))).unwrap();
        assert_eq!(query.component_ids, ["b", "a"]);
        assert_eq!(query.config_ids, ["7"]);
        assert_eq!(query.limit, 100);
        assert_eq!(query.offset, 0);
        assert_eq!(query.sort_by, SortKey::Id);
        assert!(query.descending);
    }

    #[test]
    fn parent_run_id_empty_selects_roots() {
        let query = job_query(&Query::parse(Some("parentRunId="))).unwrap();
        assert_eq!(query.parent_run_id.as_deref(), Some(""));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (text, name) in [
            ("limit=501", "limit"),
            ("limit=0", "limit"),
            ("offset=-1", "offset"),
            ("status=done", "status"),
            ("sortBy=color", "sortBy"),
            ("sortOrder=up", "sortOrder"),
            ("createdTimeFrom=whenever", "createdTimeFrom"),
        ] {
            let error = job_query(&Query::parse(Some(text))).unwrap_err();
            assert!(error.message.contains(name), "{text}: {}", error.message);
        }
    }

    #[test]
    fn times_absolute_and_relative() {
        assert_eq!(parse_time("1970-01-01T00:00:01+00:00"), Some(1_000_000));
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000_000));
        let week_ago = parse_time("-1 week").unwrap();
        let also = parse_time("1 week ago").unwrap();
        assert!((week_ago - also).abs() < 1_000_000);
        assert!(week_ago < parse_time("today").unwrap());
        assert_eq!(parse_time("soon"), None);
    }
}
