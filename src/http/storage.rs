//! The Storage API's buckets, tables and files, served from jobq's local Storage.
//!
//! Uploads (a new table, an import into a table, a file) send the data as the raw body (any
//! content type but multipart; parameters in the query string), or as `multipart/form-data` the
//! way the public API's clients do: the data in a `data` or `file` part, parameters as fields or
//! in the query string. Bodies are limited by `max_body_bytes`. A bucket is made by the first
//! table created in it. DELETE answers 204 without a body.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::http::query::Query;
use crate::http::render;
use crate::model::{parse_time, StoredFile, Table};
use crate::settings::Settings;
use crate::storage::{Export, LoadRequest, LoadSource, Operator, RowFilter, Storage, StorageError};
use crate::store::StoreError;

/// What the table and file routes work with.
pub struct Context<'a> {
    pub storage: &'a Storage,
    pub settings: &'a Settings,
    pub query: &'a Query,
    /// The query string's parameters, read leniently.
    pub params: &'a Fields,
}

/// Answers a request whose path starts with `v2/storage/buckets`, `v2/storage/tables` or
/// `v2/storage/files`: 404 for an unknown path, 405 for a method the path does not take.
pub async fn route(
    context: &Context<'_>,
    parts: &Parts,
    segments: &[&str],
    body: Incoming,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let target = Target::parse(segments).ok_or_else(|| super::route_not_found(parts))?;
    let upload = match parts.method {
        Method::POST => Some(Upload::read(parts, body, context.settings.max_body_bytes).await?),
        _ => None,
    };
    tokio::task::block_in_place(|| answer(context, parts, target, upload))
}

/// The largest data preview, in rows.
const MAX_PREVIEW_ROWS: u64 = 1000;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target<'a> {
    Buckets,
    Bucket(&'a str),
    BucketTables(&'a str),
    Tables,
    Table(&'a str),
    Preview(&'a str),
    Import(&'a str),
    Files,
    File(&'a str),
    Download(&'a str),
}

impl<'a> Target<'a> {
    fn parse(segments: &[&'a str]) -> Option<Target<'a>> {
        Some(match *segments {
            ["v2", "storage", "buckets"] => Target::Buckets,
            ["v2", "storage", "buckets", id] => Target::Bucket(id),
            ["v2", "storage", "buckets", id, "tables"] => Target::BucketTables(id),
            ["v2", "storage", "tables"] => Target::Tables,
            ["v2", "storage", "tables", id] => Target::Table(id),
            ["v2", "storage", "tables", id, "data-preview"] => Target::Preview(id),
            ["v2", "storage", "tables", id, "import"] => Target::Import(id),
            ["v2", "storage", "files"] => Target::Files,
            ["v2", "storage", "files", id] => Target::File(id),
            ["v2", "storage", "files", id, "download"] => Target::Download(id),
            _ => return None,
        })
    }
}

fn answer(
    context: &Context<'_>,
    parts: &Parts,
    target: Target<'_>,
    upload: Option<Upload>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let storage = context.storage;
    let query = context.query;
    let json = |status, value: Value| Ok(super::json_response(status, &value));
    let upload = || upload.ok_or_else(|| super::method_not_allowed(parts));
    match (&parts.method, target) {
        (&Method::GET, Target::Buckets) => {
            let buckets = context.bucket_objects()?;
            json(StatusCode::OK, buckets.into_values().collect())
        }
        (&Method::GET, Target::Bucket(id)) => {
            storage.bucket(id)?.ok_or_else(|| bucket_not_found(id))?;
            let mut buckets = context.bucket_objects()?;
            let bucket = buckets.remove(id).ok_or_else(|| bucket_not_found(id))?;
            json(StatusCode::OK, bucket)
        }
        (&Method::DELETE, Target::Bucket(id)) => {
            if !storage.delete_bucket(id, context.params.flag("force")?.unwrap_or(false))? {
                return Err(bucket_not_found(id));
            }
            Ok(no_content())
        }
        (&Method::GET, Target::BucketTables(id)) => {
            if storage.bucket(id)?.is_none() {
                return Err(bucket_not_found(id));
            }
            json(
                StatusCode::OK,
                context.table_objects(&storage.tables(Some(id))?)?,
            )
        }
        (&Method::POST, Target::BucketTables(bucket)) => create_table(context, bucket, upload()?),
        (&Method::GET, Target::Tables) => json(
            StatusCode::OK,
            context.table_objects(&storage.tables(None)?)?,
        ),
        (&Method::GET, Target::Table(id)) => {
            let table = storage.table(id)?.ok_or_else(|| table_not_found(id))?;
            json(StatusCode::OK, context.table_object(&table)?)
        }
        (&Method::DELETE, Target::Table(id)) => {
            if !storage.delete_table(id)? {
                return Err(table_not_found(id));
            }
            Ok(no_content())
        }
        (&Method::GET, Target::Preview(id)) => preview(context, id),
        (&Method::POST, Target::Import(id)) => import(context, id, upload()?),
        (&Method::GET, Target::Files) => {
            let files = storage.files(&context.params.values("tags")?)?;
            let offset = query.number("offset")?.unwrap_or(0) as usize;
            let limit = query.number("limit")?.unwrap_or(100) as usize;
            let public_url = &context.settings.public_url;
            let listed = files
                .iter()
                .skip(offset)
                .take(limit)
                .map(|file| render::file(file, public_url));
            json(StatusCode::OK, listed.collect())
        }
        (&Method::POST, Target::Files) => upload_file(context, upload()?),
        (&Method::GET, Target::File(id)) => {
            let file = context.file(id)?;
            json(
                StatusCode::OK,
                render::file(&file, &context.settings.public_url),
            )
        }
        (&Method::GET, Target::Download(id)) => {
            let file = context.file(id)?;
            let path = storage.file_path(&file);
            let content = std::fs::read(&path).map_err(|source| StorageError::Io {
                action: "reading",
                path,
                source,
            })?;
            let mut response = body_response(
                StatusCode::OK,
                "application/octet-stream",
                Bytes::from(content),
            );
            let disposition = format!("attachment; filename=\"{}\"", file.name);
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                response.headers_mut().insert(CONTENT_DISPOSITION, value);
            }
            Ok(response)
        }
        _ => Err(super::method_not_allowed(parts)),
    }
}

/// `POST /v2/storage/buckets/{bucket}/tables`: `name` (required), `primaryKey`, `delimiter`,
/// `enclosure`; the data's first line is its header. 201 and the table.
fn create_table(
    context: &Context<'_>,
    bucket: &str,
    upload: Upload,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let name = upload.params.text("name")?.unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Parameter \"name\" is required: the name of the new table.",
        ));
    }
    let id = format!("{bucket}.{name}");
    if context.storage.table(&id)?.is_some() {
        return Err(ApiError::bad_request(format!(
            "Table \"{id}\" already exists; import into it with POST /v2/storage/tables/{id}/import, \
             or delete it first."
        ))
        .with_code("storage.tables.alreadyExists"));
    }
    load(context, &upload.load_request(&id)?, StatusCode::CREATED)
}

/// `POST /v2/storage/tables/{id}/import`: into an existing table; `incremental`, `primaryKey`
/// (the table's, when given), `delimiter`, `enclosure`, `deleteWhereColumn`,
/// `deleteWhereValues[]`, `deleteWhereOperator` (`eq`, `ne`). 200 and the table.
fn import(
    context: &Context<'_>,
    id: &str,
    upload: Upload,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if context.storage.table(id)?.is_none() {
        return Err(table_not_found(id));
    }
    let params = &upload.params;
    let delete_where = match params.text("deleteWhereColumn")?.filter(|c| !c.is_empty()) {
        Some(column) => Some(RowFilter {
            column,
            values: params.values("deleteWhereValues")?,
            operator: operator(params, "deleteWhereOperator")?,
        }),
        None => None,
    };
    let request = LoadRequest {
        incremental: params.flag("incremental")?.unwrap_or(false),
        delete_where,
        ..upload.load_request(id)?
    };
    load(context, &request, StatusCode::OK)
}

/// Loads `request`, answering `status` and the table.
fn load(
    context: &Context<'_>,
    request: &LoadRequest,
    status: StatusCode,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let table = context.storage.load(request)?;
    Ok(super::json_response(status, &context.table_object(&table)?))
}

/// `GET /v2/storage/tables/{id}/data-preview`: CSV with a header; `columns`, `whereColumn`,
/// `whereValues[]`, `whereOperator`, `changedSince`, `limit` (100 by default, at most 1000).
fn preview(context: &Context<'_>, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let params = context.params;
    let filter = match params.text("whereColumn")?.filter(|c| !c.is_empty()) {
        Some(column) => Some(RowFilter {
            column,
            values: params.values("whereValues")?,
            operator: operator(params, "whereOperator")?,
        }),
        None => None,
    };
    let changed_since = match params.text("changedSince")?.filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => Some(time(&text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Parameter \"changedSince\" must be a Unix timestamp or a time like \
                 2024-01-31T08:00:00+00:00 or \"-1 day\", \"{text}\" given."
            ))
        })?),
    };
    let export = Export {
        columns: params.list("columns")?.unwrap_or_default(),
        filter,
        limit: Some(context.query.number("limit")?.unwrap_or(100).min(MAX_PREVIEW_ROWS)),
        changed_since,
    };
    let mut csv = Vec::new();
    context.storage.export(id, &export, &mut csv)?;
    Ok(body_response(
        StatusCode::OK,
        "text/csv; charset=utf-8",
        Bytes::from(csv),
    ))
}

/// `POST /v2/storage/files`: the content with `name` (else the part's file name) and `tags[]`.
/// 201 and the file.
fn upload_file(context: &Context<'_>, upload: Upload) -> Result<Response<Full<Bytes>>, ApiError> {
    let name = upload
        .params
        .text("name")?
        .filter(|n| !n.is_empty())
        .or(upload.file_name)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Parameter \"name\" is required: the file's name (or send a \"file\" part with a \
                 file name).",
            )
        })?;
    let file =
        context
            .storage
            .upload_file(&name, &upload.params.values("tags")?, upload.data.as_ref())?;
    Ok(super::json_response(
        StatusCode::CREATED,
        &render::file(&file, &context.settings.public_url),
    ))
}

impl Context<'_> {
    /// Every bucket's object by id, with the sizes and row counts of its tables.
    fn bucket_objects(&self) -> Result<BTreeMap<String, Value>, ApiError> {
        let tables = self.storage.tables(None)?;
        let branch = &self.settings.project.default_branch_id;
        let mut objects = BTreeMap::new();
        for bucket in self.storage.buckets()? {
            let own: Vec<&Table> = tables
                .iter()
                .filter(|t| t.bucket_id() == bucket.id)
                .collect();
            let object = render::bucket(&bucket, &own, &self.settings.public_url, branch);
            objects.insert(bucket.id, object);
        }
        Ok(objects)
    }

    fn table_objects(&self, tables: &[Table]) -> Result<Value, ApiError> {
        let mut buckets = self.bucket_objects()?;
        let objects = tables.iter().map(|table| {
            let bucket = buckets.entry(table.bucket_id().to_string()).or_default();
            render::table(table, bucket.clone(), &self.settings.public_url)
        });
        Ok(objects.collect())
    }

    fn table_object(&self, table: &Table) -> Result<Value, ApiError> {
        let mut objects = self.table_objects(std::slice::from_ref(table))?;
        Ok(objects[0].take())
    }

    fn file(&self, id: &str) -> Result<StoredFile, ApiError> {
        let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("File {id} not found"));
        let id = id.parse::<u64>().map_err(|_| not_found())?;
        self.storage.file(id)?.ok_or_else(not_found)
    }
}

/// An upload's data and parameters (the query string's and multipart fields together).
struct Upload {
    params: Fields,
    data: Bytes,
    /// The file name of the multipart data part.
    file_name: Option<String>,
}

impl Upload {
    async fn read(parts: &Parts, body: Incoming, limit: usize) -> Result<Upload, ApiError> {
        let body = super::read_body(body, &parts.headers, limit).await?;
        let query = parts.uri.query().unwrap_or("");
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("multipart/form-data") {
            return Ok(Upload {
                params: Fields::from_query(Query::parse(Some(query))),
                data: body,
                file_name: None,
            });
        }
        let unreadable = |error: multer::Error| {
            ApiError::bad_request(format!("The multipart body cannot be read: {error}."))
        };
        let boundary = multer::parse_boundary(content_type).map_err(unreadable)?;
        let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut fields = Vec::new();
        let mut data = None;
        let mut file_name = None;
        while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "data" || name == "file" {
                file_name = field.file_name().map(str::to_string);
                data = Some(field.bytes().await.map_err(unreadable)?);
            } else {
                fields.push((name, field.text().await.map_err(unreadable)?));
            }
        }
        let data = data.ok_or_else(|| {
            ApiError::bad_request(
                "The multipart body has no \"data\" (or \"file\") part with the content.",
            )
        })?;
        let params = form_urlencoded::Serializer::for_suffix(query.to_string(), 0)
            .extend_pairs(fields)
            .finish();
        Ok(Upload {
            params: Fields::from_query(Query::parse(Some(&params))),
            data,
            file_name,
        })
    }

    /// A full load of the upload into `table_id`, with its `primaryKey`, `delimiter` and
    /// `enclosure`.
    fn load_request(&self, table_id: &str) -> Result<LoadRequest, ApiError> {
        let params = &self.params;
        let character = |name: &str, default: char| -> Result<Option<char>, ApiError> {
            let Some(text) = params.text(name)? else {
                return Ok(Some(default));
            };
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (None, _) => Ok(None),
                (Some(c), None) => Ok(Some(c)),
                _ => Err(ApiError::bad_request(format!(
                    "Parameter \"{name}\" must be one character, \"{text}\" given."
                ))),
            }
        };
        let delimiter = character("delimiter", ',')?.ok_or_else(|| {
            ApiError::bad_request("Parameter \"delimiter\" must be one character, none given.")
        })?;
        Ok(LoadRequest {
            delimiter,
            enclosure: character("enclosure", '"')?,
            primary_key: params.list("primaryKey")?.unwrap_or_default(),
            ..LoadRequest::new(table_id, LoadSource::Bytes(self.data.clone()))
        })
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        let message = error.to_string();
        match error {
            StorageError::BucketNotFound { .. } | StorageError::TableNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, message)
            }
            StorageError::Store(StoreError::BucketNotEmpty { .. }) => {
                ApiError::bad_request(message).with_code("storage.buckets.notEmpty")
            }
            StorageError::Store(StoreError::StorageTableChanged { .. }) => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            StorageError::Io { .. }
            | StorageError::Export(_)
            | StorageError::Corrupt { .. }
            | StorageError::Store(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
            _ => ApiError::bad_request(message),
        }
    }
}

fn bucket_not_found(id: &str) -> ApiError {
    StorageError::BucketNotFound { id: id.to_string() }.into()
}

fn table_not_found(id: &str) -> ApiError {
    StorageError::TableNotFound { id: id.to_string() }.into()
}

/// `eq` (the default) or `ne`.
fn operator(params: &Fields, name: &str) -> Result<Operator, ApiError> {
    let text = params.text(name)?.unwrap_or_else(|| "eq".to_string());
    Operator::parse(&text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Parameter \"{name}\" must be eq or ne, \"{text}\" given."
        ))
    })
}

/// A Unix timestamp in seconds, or what `parse_time` reads; Unix microseconds.
fn time(text: &str) -> Option<i64> {
    match text.parse::<i64>() {
        Ok(seconds) => seconds.checked_mul(1_000_000),
        Err(_) => parse_time(text),
    }
}

fn body_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn no_content() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_targets() {
        let parse = |path: &'static str| {
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            Target::parse(&segments)
        };
        let cases = [
            ("/v2/storage/buckets", Some(Target::Buckets)),
            ("/v2/storage/buckets/in.c-a", Some(Target::Bucket("in.c-a"))),
            (
                "/v2/storage/buckets/in.c-a/tables",
                Some(Target::BucketTables("in.c-a")),
            ),
            ("/v2/storage/tables", Some(Target::Tables)),
            (
                "/v2/storage/tables/in.c-a.t",
                Some(Target::Table("in.c-a.t")),
            ),
            (
                "/v2/storage/tables/in.c-a.t/data-preview",
                Some(Target::Preview("in.c-a.t")),
            ),
            (
                "/v2/storage/tables/in.c-a.t/import",
                Some(Target::Import("in.c-a.t")),
            ),
            ("/v2/storage/files", Some(Target::Files)),
            ("/v2/storage/files/3", Some(Target::File("3"))),
            ("/v2/storage/files/3/download", Some(Target::Download("3"))),
            ("/v2/storage/files/3/content", None),
            ("/v2/storage/tables/a/b/c", None),
        ];
        for (path, expected) in cases {
            assert_eq!(parse(path), expected, "{path}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(time("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(
            time("2024-01-02T00:00:00+00:00"),
            Some(1_704_153_600_000_000)
        );
        assert_eq!(time("soon"), None);
    }
}
