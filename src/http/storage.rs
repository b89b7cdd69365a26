//! The Storage API's buckets, tables and files, served from jobq's local Storage.
//!
//! Uploads (a new table, an import into a table, a file) send the data as the raw body (any
//! content type but multipart; parameters in the query string), or as `multipart/form-data` the
//! way the public API's clients do: the data in a `data` or `file` part, parameters as fields or
//! in the query string. Bodies are limited by `max_body_bytes`. A bucket is made by the first
//! table created in it. DELETE answers 204 without a body; a file's content is streamed.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::StatusCode;
use serde_json::Value;

use crate::error::chain;
use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::fields::Fields;
use crate::http::request::Request;
use crate::http::{blocking, render, Services};
use crate::model::{parse_time, StoredFile, Table};
use crate::storage::{Export, LoadRequest, LoadSource, Operator, RowFilter, StorageError};
use crate::store::StoreError;

type Reply = Result<Answer, ApiError>;

/// The largest data preview, in rows.
const MAX_PREVIEW_ROWS: u64 = 1000;

/// `GET /v2/storage/buckets`
pub async fn buckets(services: &Services, _request: Request) -> Reply {
    let buckets = blocking(|| bucket_objects(services))?;
    Ok(Answer::ok(&buckets.into_values().collect()))
}

/// `GET /v2/storage/buckets/{id}`
pub async fn bucket(services: &Services, request: Request) -> Reply {
    let id = request.segment("id");
    let bucket = blocking(|| {
        services
            .storage
            .bucket(id)?
            .ok_or_else(|| bucket_not_found(id))?;
        bucket_objects(services)?
            .remove(id)
            .ok_or_else(|| bucket_not_found(id))
    })?;
    Ok(Answer::ok(&bucket))
}

/// `DELETE /v2/storage/buckets/{id}`: only an empty one, unless `force`.
pub async fn delete_bucket(services: &Services, request: Request) -> Reply {
    let id = request.segment("id");
    let force = request.query_fields().flag("force")?.unwrap_or(false);
    blocking(|| match services.storage.delete_bucket(id, force)? {
        true => Ok(()),
        false => Err(bucket_not_found(id)),
    })?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `GET /v2/storage/buckets/{id}/tables`
pub async fn bucket_tables(services: &Services, request: Request) -> Reply {
    let id = request.segment("id");
    let tables = blocking(|| {
        if services.storage.bucket(id)?.is_none() {
            return Err(bucket_not_found(id));
        }
        table_objects(services, &services.storage.tables(Some(id))?)
    })?;
    Ok(Answer::ok(&tables))
}

/// `GET /v2/storage/tables`
pub async fn tables(services: &Services, _request: Request) -> Reply {
    let tables = blocking(|| table_objects(services, &services.storage.tables(None)?))?;
    Ok(Answer::ok(&tables))
}

/// `GET /v2/storage/tables/{id}`
pub async fn table(services: &Services, request: Request) -> Reply {
    let id = request.segment("id");
    let table = blocking(|| {
        let table = services
            .storage
            .table(id)?
            .ok_or_else(|| table_not_found(id))?;
        table_object(services, &table)
    })?;
    Ok(Answer::ok(&table))
}

/// `DELETE /v2/storage/tables/{id}`
pub async fn delete_table(services: &Services, request: Request) -> Reply {
    let id = request.segment("id");
    blocking(|| match services.storage.delete_table(id)? {
        true => Ok(()),
        false => Err(table_not_found(id)),
    })?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// `GET /v2/storage/files`: the files with every tag of `tags[]`; `offset`, `limit` (100).
pub async fn files(services: &Services, request: Request) -> Reply {
    let tags = request.query_fields().values("tags")?;
    let offset = request.query.number("offset")?.unwrap_or(0) as usize;
    let limit = request.query.number("limit")?.unwrap_or(100) as usize;
    let files = blocking(|| services.storage.files(&tags))?;
    let public_url = &services.settings.public_url;
    let listed = files
        .iter()
        .skip(offset)
        .take(limit)
        .map(|file| render::file(file, public_url));
    Ok(Answer::ok(&listed.collect()))
}

/// `GET /v2/storage/files/{id}`
pub async fn file(services: &Services, request: Request) -> Reply {
    let file = blocking(|| stored_file(services, request.segment("id")))?;
    let body = render::file(&file, &services.settings.public_url);
    Ok(Answer::ok(&body))
}

/// `GET /v2/storage/files/{id}/download`: the content, streamed from disk.
pub async fn download(services: &Services, request: Request) -> Reply {
    let file = blocking(|| stored_file(services, request.segment("id")))?;
    let path = services.storage.file_path(&file);
    let answer = Answer::file(&path, "application/octet-stream")
        .await
        .map_err(|source| StorageError::Io {
            action: "reading",
            path,
            source,
        })?;
    let disposition = format!("attachment; filename=\"{}\"", file.name);
    Ok(match HeaderValue::from_str(&disposition) {
        Ok(value) => answer.header(CONTENT_DISPOSITION, value),
        Err(_) => answer,
    })
}

/// `POST /v2/storage/buckets/{id}/tables`: `name` (required), `primaryKey`, `delimiter`,
/// `enclosure`; the data's first line is its header. 201 and the table.
pub async fn create_table(services: &Services, mut request: Request) -> Reply {
    let upload = Upload::read(&mut request).await?;
    let name = upload.params.text("name")?.unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Parameter \"name\" is required: the name of the new table.",
        ));
    }
    let id = format!("{}.{name}", request.segment("id"));
    let load_request = upload.load_request(&id)?;
    blocking(|| {
        if services.storage.table(&id)?.is_some() {
            return Err(ApiError::bad_request(format!(
                "Table \"{id}\" already exists; import into it with POST \
                 /v2/storage/tables/{id}/import, or delete it first."
            ))
            .with_code("storage.tables.alreadyExists"));
        }
        load(services, &load_request, StatusCode::CREATED)
    })
}

/// `POST /v2/storage/tables/{id}/import`: into an existing table; `incremental`, `primaryKey`
/// (the table's, when given), `delimiter`, `enclosure`, `deleteWhereColumn`,
/// `deleteWhereValues[]`, `deleteWhereOperator` (`eq`, `ne`). 200 and the table.
pub async fn import(services: &Services, mut request: Request) -> Reply {
    let upload = Upload::read(&mut request).await?;
    let id = request.segment("id");
    blocking(|| {
        if services.storage.table(id)?.is_none() {
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
        let load_request = LoadRequest {
            incremental: params.flag("incremental")?.unwrap_or(false),
            delete_where,
            ..upload.load_request(id)?
        };
        load(services, &load_request, StatusCode::OK)
    })
}

/// Loads `request`, answering `status` and the table.
fn load(services: &Services, request: &LoadRequest, status: StatusCode) -> Reply {
    let table = services.storage.load(request)?;
    Ok(Answer::json(status, &table_object(services, &table)?))
}

/// `GET /v2/storage/tables/{id}/data-preview`: CSV with a header; `columns`, `whereColumn`,
/// `whereValues[]`, `whereOperator`, `changedSince`, `limit` (100 by default, at most 1000).
pub async fn preview(services: &Services, request: Request) -> Reply {
    let params = request.query_fields();
    let filter = match params.text("whereColumn")?.filter(|c| !c.is_empty()) {
        Some(column) => Some(RowFilter {
            column,
            values: params.values("whereValues")?,
            operator: operator(&params, "whereOperator")?,
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
    let limit = request.query.number("limit")?.unwrap_or(100);
    let export = Export {
        columns: params.list("columns")?.unwrap_or_default(),
        filter,
        limit: Some(limit.min(MAX_PREVIEW_ROWS)),
        changed_since,
    };
    // At most MAX_PREVIEW_ROWS rows: a preview is answered whole.
    let mut csv = Vec::new();
    blocking(|| {
        services
            .storage
            .export(request.segment("id"), &export, &mut csv)
    })?;
    Ok(Answer::bytes(
        StatusCode::OK,
        "text/csv; charset=utf-8",
        csv,
    ))
}

/// `POST /v2/storage/files`: the content with `name` (else the part's file name) and `tags[]`.
/// 201 and the file.
pub async fn upload_file(services: &Services, mut request: Request) -> Reply {
    let upload = Upload::read(&mut request).await?;
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
    let tags = upload.params.values("tags")?;
    let file = blocking(|| {
        services
            .storage
            .upload_file(&name, &tags, upload.data.as_ref(), upload.data.len() as u64)
    })?;
    let body = render::file(&file, &services.settings.public_url);
    Ok(Answer::json(StatusCode::CREATED, &body))
}

/// Every bucket's object by id, with the sizes and row counts of its tables.
fn bucket_objects(services: &Services) -> Result<BTreeMap<String, Value>, ApiError> {
    let (storage, settings) = (&services.storage, &services.settings);
    let tables = storage.tables(None)?;
    let branch = &settings.project.default_branch_id;
    let mut objects = BTreeMap::new();
    for bucket in storage.buckets()? {
        let own: Vec<&Table> = tables
            .iter()
            .filter(|t| t.bucket_id() == bucket.id)
            .collect();
        let object = render::bucket(&bucket, &own, &settings.public_url, branch);
        objects.insert(bucket.id, object);
    }
    Ok(objects)
}

fn table_objects(services: &Services, tables: &[Table]) -> Result<Value, ApiError> {
    let mut buckets = bucket_objects(services)?;
    let objects = tables.iter().map(|table| {
        let bucket = buckets.entry(table.bucket_id().to_string()).or_default();
        render::table(table, bucket.clone(), &services.settings.public_url)
    });
    Ok(objects.collect())
}

fn table_object(services: &Services, table: &Table) -> Result<Value, ApiError> {
    let mut objects = table_objects(services, std::slice::from_ref(table))?;
    Ok(objects[0].take())
}

fn stored_file(services: &Services, id: &str) -> Result<StoredFile, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("File {id} not found"));
    let id = id.parse::<u64>().map_err(|_| not_found())?;
    services.storage.file(id)?.ok_or_else(not_found)
}

/// An upload's data and parameters (the query string's and multipart fields together).
struct Upload {
    params: Fields,
    data: Bytes,
    /// The file name of the multipart data part.
    file_name: Option<String>,
}

impl Upload {
    /// Reads the request's body: raw data, or a multipart body with its fields.
    async fn read(request: &mut Request) -> Result<Upload, ApiError> {
        let body = request.body().await?;
        let content_type = request.header(CONTENT_TYPE.as_str()).unwrap_or("");
        if !content_type.starts_with("multipart/form-data") {
            return Ok(Upload {
                params: request.query_fields(),
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
        let mut params = request.query.clone();
        for (name, value) in fields {
            params.add(&name, value);
        }
        Ok(Upload {
            params: Fields::from_query(params),
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
        if let StorageError::Store(store) = &error {
            if let Some(fault) = ApiError::host_fault(store) {
                return fault;
            }
        }
        let message = chain(&error);
        match error {
            StorageError::NoSpace { .. } => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
