//! `GET /openapi.json`: the OpenAPI 3.0 document of the API jobq serves, built from the route
//! table the server dispatches on, so that the document and the server cannot drift apart.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use crate::http::answer::Answer;
use crate::http::routes::{self, Route};
use crate::http::TOKEN_HEADER;

/// The answer of `GET /openapi.json`.
pub fn answer() -> Answer {
    Answer::json(StatusCode::OK, &DOCUMENT)
}

/// The document, built once.
static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

fn document() -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes::all() {
        paths
            .entry(format!("/{}", route.pattern))
            .or_default()
            .insert(route.method.as_str().to_lowercase(), operation(route));
    }
    for (pattern, _) in routes::PUBLIC {
        let public = json!({
            "operationId": pattern.replace('/', "."),
            "tags": ["operations"],
            "security": [],
            "responses": responses(),
        });
        paths
            .entry(format!("/{pattern}"))
            .or_default()
            .insert("get".to_string(), public);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "jobq",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Keboola Job Queue API (and the Storage, Scheduler, Notifications and \
                sync-action routes jobq serves beside it), as one jobq daemon serves it. See \
                docs/queue.md in the repository for how jobq answers each route.",
        },
        "security": [{"ApiKeyAuth": []}],
        "components": {
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER},
            },
        },
        "paths": paths,
    })
}

/// One operation: its id and tag from the handler's name, its path and query parameters.
fn operation(route: &Route) -> Value {
    let (module, _) = route.name.split_once("::").unwrap_or(("api", route.name));
    let path_parameters = route
        .pattern
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| parameter(name, "path", true));
    let query_parameters = route
        .query
        .iter()
        .map(|name| parameter(name, "query", false));
    json!({
        "operationId": route.name.replace("::", "."),
        "tags": [module],
        "parameters": path_parameters.chain(query_parameters).collect::<Vec<_>>(),
        "responses": responses(),
    })
}

fn parameter(name: &str, location: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": {"type": "string"}})
}

fn responses() -> Value {
    json!({
        "2XX": {"description": "Success: the body is JSON, as docs/queue.md describes."},
        "default": {
            "description": "An error: {\"error\", \"code\", \"status\": \"error\", \"exceptionId\"}.",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_one_operation() {
        let document = document();
        let count: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|operations| operations.as_object().unwrap().len())
            .sum();
        assert_eq!(count, routes::all().len() + routes::PUBLIC.len());
        let create = &document["paths"]["/jobs/{id}/kill"]["post"];
        assert_eq!(create["operationId"], "jobs.kill");
        assert_eq!(create["parameters"][0]["name"], "id");
        assert_eq!(
            document["paths"]["/health/ready"]["get"]["security"],
            json!([])
        );
    }
}
