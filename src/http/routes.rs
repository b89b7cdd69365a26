//! The route table: every method, path pattern and handler of the API in one place. A path that
//! a pattern matches with another method answers 405, a path no pattern matches 404. The
//! health routes, which need no token, are a table of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use hyper::{Method, StatusCode};

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::query::JOB_FILTERS;
use crate::http::request::{Params, Request};
use crate::http::{
    actions, configurations, encrypt, health, jobs, notifications, schedules, storage, stream,
    Services,
};

/// What a handler's future gives.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Answer, ApiError>> + Send + 'a>>;

/// An `async fn(&Services, Request) -> Result<Answer, ApiError>`, boxed by `to!`.
pub type Handler = for<'a> fn(&'a Services, Request) -> Reply<'a>;

/// A handler function as a `Handler`, with its name (`jobs::create`).
macro_rules! to {
    ($handler:path) => {{
        fn boxed(services: &Services, request: Request) -> Reply<'_> {
            Box::pin($handler(services, request))
        }
        (boxed as Handler, stringify!($handler))
    }};
}

/// One row of the table.
pub struct Route {
    pub method: Method,
    /// Segments of the path (without the leading `/`); `{name}` matches any one segment.
    pub pattern: String,
    pub handler: Handler,
    /// The handler's name, `module::function`: the operation id in `/openapi.json`, its module
    /// the operation's tag.
    pub name: &'static str,
    /// The query parameters the handler reads, for `/openapi.json` (empty: none documented).
    pub query: &'static [&'static str],
}

/// Every route of the API, in table order.
pub fn all() -> &'static [Route] {
    &ROUTES
}

/// Every route, built once.
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(table);

#[rustfmt::skip] // one route a line
fn table() -> Vec<Route> {
    use Method as M;
    let route = |method: Method, pattern: &str, (handler, name): (Handler, &'static str)| Route {
        method,
        pattern: pattern.to_string(),
        handler,
        name,
        query: &[],
    };
    let search = |pattern: &str| Route {
        query: JOB_FILTERS,
        ..route(M::GET, pattern, to!(jobs::search))
    };
    let mut routes = vec![
        // The Queue API.
        route(M::POST, "jobs", to!(jobs::create)),
        search("jobs"),
        search("search/jobs"),
        route(M::GET, "jobs/{id}", to!(jobs::get)),
        route(M::GET, "jobs/{id}/events/stream", to!(stream::events)),
        route(M::POST, "jobs/{id}/kill", to!(jobs::kill)),
        route(M::GET, "orchestration-rerun-plan/{jobId}", to!(jobs::rerun_plan)),
        route(M::GET, "search/grouped-jobs", to!(jobs::grouped)),
        route(M::GET, "stats/project", to!(jobs::project_stats)),
        route(M::GET, "v2/storage/events", to!(jobs::events)),
        route(M::GET, "v2/storage/tokens/verify", to!(jobs::verify_token)),
        route(M::POST, "encrypt", to!(encrypt::encrypt)),
        route(M::GET, "metrics", to!(health::metrics)),
        route(M::GET, "status", to!(health::status)),
        // Synchronous actions.
        route(M::POST, "actions", to!(actions::run)),
        route(M::GET, "actions", to!(actions::list)),
        // The Scheduler API.
        route(M::POST, "schedules", to!(schedules::activate)),
        route(M::GET, "schedules", to!(schedules::list)),
        route(M::GET, "schedules/{id}", to!(schedules::get)),
        route(M::DELETE, "schedules/{id}", to!(schedules::delete)),
        route(M::DELETE, "configurations/{id}", to!(schedules::delete_of_configuration)),
        // The Notifications API.
        route(M::POST, "project-subscriptions", to!(notifications::subscribe)),
        route(M::GET, "project-subscriptions", to!(notifications::list)),
        route(M::GET, "project-subscriptions/{id}", to!(notifications::get)),
        route(M::DELETE, "project-subscriptions/{id}", to!(notifications::delete)),
        route(M::GET, "project-subscriptions/{id}/deliveries", to!(notifications::deliveries)),
        // Storage: buckets, tables, files.
        route(M::GET, "v2/storage/buckets", to!(storage::buckets)),
        route(M::GET, "v2/storage/buckets/{id}", to!(storage::bucket)),
        route(M::DELETE, "v2/storage/buckets/{id}", to!(storage::delete_bucket)),
        route(M::GET, "v2/storage/buckets/{id}/tables", to!(storage::bucket_tables)),
        route(M::POST, "v2/storage/buckets/{id}/tables", to!(storage::create_table)),
        route(M::GET, "v2/storage/tables", to!(storage::tables)),
        route(M::GET, "v2/storage/tables/{id}", to!(storage::table)),
        route(M::DELETE, "v2/storage/tables/{id}", to!(storage::delete_table)),
        route(M::GET, "v2/storage/tables/{id}/data-preview", to!(storage::preview)),
        route(M::POST, "v2/storage/tables/{id}/import", to!(storage::import)),
        route(M::GET, "v2/storage/files", to!(storage::files)),
        route(M::POST, "v2/storage/files", to!(storage::upload_file)),
        route(M::GET, "v2/storage/files/{id}", to!(storage::file)),
        route(M::GET, "v2/storage/files/{id}/download", to!(storage::download)),
        // Stored configurations: dev branches, then components in the default or a named branch.
        route(M::GET, "v2/storage/dev-branches", to!(configurations::branches)),
        route(M::POST, "v2/storage/dev-branches", to!(configurations::create_branch)),
        route(M::GET, "v2/storage/dev-branches/{id}", to!(configurations::branch)),
        route(M::DELETE, "v2/storage/dev-branches/{id}", to!(configurations::delete_branch)),
    ];
    for branch in ["v2/storage", "v2/storage/branch/{branch}"] {
        let configs = format!("{branch}/components/{{component}}/configs");
        let config = format!("{configs}/{{config}}");
        let rows = format!("{config}/rows");
        let row = format!("{rows}/{{row}}");
        routes.extend([
            route(M::GET, &format!("{branch}/components"), to!(configurations::components)),
            route(M::GET, &configs, to!(configurations::configurations)),
            route(M::POST, &configs, to!(configurations::create_configuration)),
            route(M::GET, &config, to!(configurations::configuration)),
            route(M::PUT, &config, to!(configurations::update_configuration)),
            route(M::DELETE, &config, to!(configurations::delete_configuration)),
            route(M::PUT, &format!("{config}/state"), to!(configurations::set_state)),
            route(M::GET, &rows, to!(configurations::rows)),
            route(M::POST, &rows, to!(configurations::create_row)),
            route(M::GET, &row, to!(configurations::row)),
            route(M::PUT, &row, to!(configurations::update_row)),
            route(M::DELETE, &row, to!(configurations::delete_row)),
            route(M::PUT, &format!("{row}/state"), to!(configurations::set_row_state)),
        ]);
    }
    routes
}

/// A route that needs no token: it answers from the services alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Public {
    Live,
    Ready,
    OpenApi,
}

/// The `GET` routes that need no token, by pattern.
pub const PUBLIC: [(&str, Public); 3] = [
    ("health/live", Public::Live),
    ("health/ready", Public::Ready),
    ("openapi.json", Public::OpenApi),
];

/// The pattern and route of `GET <path>` when it is a public route.
pub fn public(method: &Method, path: &str) -> Option<(&'static str, Public)> {
    let path = path.trim_matches('/');
    PUBLIC
        .iter()
        .find(|(pattern, _)| *method == Method::GET && *pattern == path)
        .copied()
}

/// The route of `method` on `path` and the parameters its pattern matched; 405 when only other
/// methods' patterns match the path, 404 when none does.
pub fn find(method: &Method, path: &str) -> Result<(&'static Route, Params), ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut other_method = false;
    for route in ROUTES.iter() {
        let Some(params) = matches(&route.pattern, &segments) else {
            continue;
        };
        if route.method == *method {
            return Ok((route, params));
        }
        other_method = true;
    }
    Err(if other_method {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} is not allowed on {path}."),
        )
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Route {method} {path} not found."),
        )
    })
}

/// The parameters of `pattern` in `segments`, when it matches them.
fn matches(pattern: &'static str, segments: &[&str]) -> Option<Params> {
    let parts: Vec<&'static str> = pattern.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.into_iter().zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => params.push((name, segment.to_string())),
            None if part == *segment => {}
            None => return None,
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern and parameters `method path` finds, or the error status.
    fn found(method: Method, path: &str) -> Result<(&'static str, Params), u16> {
        find(&method, path)
            .map(|(route, params)| (route.pattern.as_str(), params))
            .map_err(|error| error.status.as_u16())
    }

    fn params(pairs: &[(&'static str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn both_path_shapes_name_the_same_configuration_routes() {
        let cases = [
            (
                "/v2/storage/components",
                "v2/storage/components",
                params(&[]),
            ),
            (
                "/v2/storage/branch/9/components",
                "v2/storage/branch/{branch}/components",
                params(&[("branch", "9")]),
            ),
            (
                "/v2/storage/components/c/configs/7",
                "v2/storage/components/{component}/configs/{config}",
                params(&[("component", "c"), ("config", "7")]),
            ),
            (
                "/v2/storage/branch/9/components/c/configs/7/rows/r",
                "v2/storage/branch/{branch}/components/{component}/configs/{config}/rows/{row}",
                params(&[
                    ("branch", "9"),
                    ("component", "c"),
                    ("config", "7"),
                    ("row", "r"),
                ]),
            ),
        ];
        for (path, pattern, expected) in cases {
            assert_eq!(found(Method::GET, path), Ok((pattern, expected)), "{path}");
        }
        let state = "/v2/storage/branch/9/components/c/configs/7/rows/r/state";
        assert_eq!(
            found(Method::PUT, state).map(|(pattern, _)| pattern),
            Ok("v2/storage/branch/{branch}/components/{component}/configs/{config}/rows/{row}/state")
        );
    }

    #[test]
    fn storage_and_job_routes() {
        for (method, path, pattern) in [
            (Method::GET, "/jobs/3", "jobs/{id}"),
            (Method::GET, "/jobs", "jobs"),
            (Method::POST, "/jobs", "jobs"),
            (Method::POST, "/jobs/3/kill", "jobs/{id}/kill"),
            (Method::GET, "/v2/storage/events", "v2/storage/events"),
            (
                Method::GET,
                "/v2/storage/buckets/in.c-a",
                "v2/storage/buckets/{id}",
            ),
            (
                Method::POST,
                "/v2/storage/tables/in.c-a.t/import",
                "v2/storage/tables/{id}/import",
            ),
            (
                Method::GET,
                "/v2/storage/files/3/download",
                "v2/storage/files/{id}/download",
            ),
            (Method::POST, "/encrypt", "encrypt"),
        ] {
            assert_eq!(found(method, path).map(|(p, _)| p), Ok(pattern), "{path}");
        }
    }

    #[test]
    fn another_method_is_405_and_no_pattern_404() {
        for (method, path) in [
            (Method::DELETE, "/jobs/1"),
            (Method::GET, "/encrypt"),
            (Method::PUT, "/v2/storage/tables/in.c-e.t"),
            (Method::PATCH, "/v2/storage/components/c/configs"),
            (Method::POST, "/v2/storage/components"),
            (Method::GET, "/v2/storage/components/c/configs/7/state"),
            (Method::PUT, "/v2/storage/dev-branches"),
        ] {
            assert_eq!(found(method, path), Err(405), "{path}");
        }
        for path in [
            "/nowhere",
            "/v2/storage/branch/9/dev-branches",
            "/v2/storage/components/c",
            "/v2/storage/components/c/configs/7/versions",
            "/v2/storage/files/3/content",
            "/v2/storage/tables/a/b/c",
        ] {
            assert_eq!(found(Method::GET, path), Err(404), "{path}");
        }
        let message = |method, path| find(&method, path).err().map(|error| error.message);
        assert_eq!(
            message(Method::DELETE, "/jobs/1").as_deref(),
            Some("Method DELETE is not allowed on /jobs/1.")
        );
        assert_eq!(
            message(Method::GET, "/nowhere").as_deref(),
            Some("Route GET /nowhere not found.")
        );
    }
}
