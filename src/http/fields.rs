//! Keboola's lenient request fields, read one way for every route: a JSON body, a form body or
//! the query string; ids as strings or numbers, `[]` for `{}`, `true`/`1`/`"1"` for yes.

use hyper::header::CONTENT_TYPE;
use hyper::HeaderMap;
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::query::Query;

/// The fields of a request: a JSON object, or a form as the public API's clients send it (an
/// `application/x-www-form-urlencoded` body, the query string, multipart fields).
pub struct Fields {
    source: Source,
    /// How errors name a field: "Field" in bodies, "Parameter" in query strings.
    noun: &'static str,
}

enum Source {
    Json(Map<String, Value>),
    Form(Query),
}

impl Fields {
    /// A body's fields: a form when its Content-Type says so, else a JSON object; an empty body
    /// has no fields.
    pub fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Fields, ApiError> {
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let fields = |source| Fields {
            source,
            noun: "Field",
        };
        if content_type.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("The form body is not valid UTF-8."))?;
            return Ok(fields(Source::Form(Query::parse(Some(text)))));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(fields(Source::Json(Map::new())));
        }
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(fields(Source::Json(map))),
            Ok(_) => Err(ApiError::bad_request(
                "The request body must be a JSON object.",
            )),
            Err(error) => Err(ApiError::bad_request(format!(
                "The request body is not valid JSON: {error}; send JSON, or a form with \
                 Content-Type application/x-www-form-urlencoded."
            ))),
        }
    }

    /// Query-string parameters (or multipart fields, which read the same).
    pub fn from_query(query: Query) -> Fields {
        Fields {
            source: Source::Form(query),
            noun: "Parameter",
        }
    }

    /// The field's value (JSON `null` is absent); a form field given several times is a list.
    fn get(&self, field: &str) -> Option<Value> {
        match &self.source {
            Source::Json(map) => map.get(field).filter(|v| !v.is_null()).cloned(),
            Source::Form(form) => match form.all(field) {
                [] => None,
                [one] => Some(Value::String(one.clone())),
                many => Some(json!(many)),
            },
        }
    }

    /// `"{noun} "{field}" must be {expected}, {given} given."`
    fn wrong(&self, field: &str, expected: &str, given: &Value) -> ApiError {
        ApiError::bad_request(format!(
            "{} \"{field}\" must be {expected}, {given} given.",
            self.noun
        ))
    }

    /// A string (an empty one included).
    pub fn text(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.wrong(field, "a string", &other)),
        }
    }

    /// A string that is more than white space.
    pub fn required_text(&self, field: &str) -> Result<String, ApiError> {
        self.text(field)?
            .filter(|text| !text.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{} \"{field}\" is required.", self.noun)))
    }

    /// An id: a string or a number, both meaning the same id; an empty string is none.
    pub fn id(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(other) => Err(self.wrong(field, "a string or a number", &other)),
        }
    }

    /// An id the client chooses: letters, digits, `.`, `_` and `-` (it becomes a path segment).
    pub fn chosen_id(&self, field: &str) -> Result<Option<String>, ApiError> {
        let id = self.id(field)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        match id {
            Some(id) if !id.chars().all(allowed) => Err(self.wrong(
                field,
                "made of letters, digits, '.', '_' and '-'",
                &json!(id),
            )),
            id => Ok(id),
        }
    }

    /// `true`/`false`, `1`/`0`, or as forms send them: `"true"`, `"false"`, `"1"`, `"0"`, `""`.
    pub fn flag(&self, field: &str) -> Result<Option<bool>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let flag = match &value {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) => match number.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(text) => match text.trim() {
                "true" | "1" => Some(true),
                "false" | "0" | "" => Some(false),
                _ => None,
            },
            _ => None,
        };
        flag.map(Some)
            .ok_or_else(|| self.wrong(field, "true or false (or 1, 0)", &value))
    }

    /// A JSON object, given as one or as JSON text (forms can only send text); `[]` and `""`
    /// mean `{}`.
    pub fn object(&self, field: &str) -> Result<Option<Value>, ApiError> {
        let value = match self.get(field) {
            None => return Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => json!({}),
            Some(Value::String(text)) => serde_json::from_str(&text).map_err(|error| {
                ApiError::bad_request(format!(
                    "{} \"{field}\" is not valid JSON: {error}.",
                    self.noun
                ))
            })?,
            Some(value) => value,
        };
        match value {
            Value::Object(_) => Ok(Some(value)),
            Value::Array(items) if items.is_empty() => Ok(Some(json!({}))),
            other => Err(self.wrong(field, "a JSON object", &other)),
        }
    }

    /// A list of ids or names: a JSON array of strings or numbers, or in forms
    /// `field[]=a&field[]=b` or `field=a,b`. Empty items name nothing and are left out.
    pub fn list(&self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let items: Vec<String> = match (&self.source, &value) {
            (Source::Form(form), _) => form
                .all(field)
                .iter()
                .flat_map(|value| value.split(','))
                .map(|item| item.trim().to_string())
                .collect(),
            (Source::Json(_), Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    Value::Number(number) => Ok(number.to_string()),
                    _ => Err(self.wrong(field, "an array of strings", &value)),
                })
                .collect::<Result<_, _>>()?,
            (Source::Json(_), _) => return Err(self.wrong(field, "an array of strings", &value)),
        };
        Ok(Some(items.into_iter().filter(|i| !i.is_empty()).collect()))
    }

    /// Every value given for `field`, as given: a form's repeated field, or a JSON array's
    /// strings (a lone string is one value).
    pub fn values(&self, field: &str) -> Result<Vec<String>, ApiError> {
        match (&self.source, self.get(field)) {
            (_, None) => Ok(Vec::new()),
            (Source::Form(form), Some(_)) => Ok(form.all(field).to_vec()),
            (Source::Json(_), Some(Value::String(text))) => Ok(vec![text]),
            (Source::Json(_), Some(Value::Array(items))) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    Value::Number(number) => Ok(number.to_string()),
                    other => Err(self.wrong(field, "an array of strings", other)),
                })
                .collect(),
            (Source::Json(_), Some(other)) => Err(self.wrong(field, "an array of strings", &other)),
        }
    }

    /// A non-negative number of seconds, as a number or a numeric string.
    pub fn seconds(&self, field: &str) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let seconds = match &value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        };
        seconds
            .map(Some)
            .ok_or_else(|| self.wrong(field, "a non-negative number of seconds", &value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn form(text: &str) -> Fields {
        let headers = HeaderMap::from_iter([(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        )]);
        Fields::from_body(&headers, text.as_bytes()).expect("a form")
    }

    fn json_fields(value: Value) -> Fields {
        Fields::from_body(&HeaderMap::new(), value.to_string().as_bytes()).expect("an object")
    }

    fn query(text: &str) -> Fields {
        Fields::from_query(Query::parse(Some(text)))
    }

    #[test]
    fn forms_and_json_read_the_same() {
        let from_form = form(
            "name=n&isDisabled=1&configuration=%7B%22parameters%22%3A%7B%22a%22%3A1%7D%7D&state=&id=7",
        );
        let from_json = json_fields(json!({
            "name": "n",
            "isDisabled": true,
            "configuration": {"parameters": {"a": 1}},
            "state": [],
            "id": 7,
        }));
        for fields in [from_form, from_json] {
            assert_eq!(fields.text("name").unwrap().as_deref(), Some("n"));
            assert_eq!(fields.flag("isDisabled").unwrap(), Some(true));
            assert_eq!(
                fields.object("configuration").unwrap(),
                Some(json!({"parameters": {"a": 1}}))
            );
            assert_eq!(fields.object("state").unwrap(), Some(json!({})));
            assert_eq!(fields.id("id").unwrap().as_deref(), Some("7"));
            assert_eq!(fields.text("description").unwrap(), None);
        }
        let fields = json_fields(json!({"configuration": "{\"parameters\": {}}"}));
        assert_eq!(
            fields.object("configuration").unwrap(),
            Some(json!({"parameters": {}}))
        );
    }

    #[test]
    fn flags_and_lists() {
        for (text, flag) in [
            ("true", true),
            ("1", true),
            ("false", false),
            ("0", false),
            ("", false),
        ] {
            assert_eq!(query(&format!("f={text}")).flag("f").unwrap(), Some(flag));
        }
        assert_eq!(query("").flag("f").unwrap(), None);
        let sorted = ["b".to_string(), "a".to_string()];
        for fields in [
            form("order[]=b&order[]=a"),
            form("order=b,a"),
            query("order=b,%20a"),
            query("order[]=b,&order[]=a"),
            json_fields(json!({"order": ["b", "a", ""]})),
        ] {
            assert_eq!(fields.list("order").unwrap().as_deref(), Some(&sorted[..]));
        }
        assert_eq!(
            query("v[]=a,b&v[]=c").values("v").unwrap(),
            ["a,b".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let bad = [
            (
                form("isDisabled=maybe").flag("isDisabled").err(),
                "isDisabled",
            ),
            (
                form("c=%7Bnope").object("c").err(),
                "\"c\" is not valid JSON",
            ),
            (json_fields(json!({"c": 5})).object("c").err(), "\"c\""),
            (json_fields(json!({"c": "[1]"})).object("c").err(), "\"c\""),
            (json_fields(json!({"n": ["x"]})).text("n").err(), "\"n\""),
            (json_fields(json!({"n": 5})).text("n").err(), "5 given"),
            (json_fields(json!({"l": "1"})).list("l").err(), "\"l\""),
            (json_fields(json!({"s": -1})).seconds("s").err(), "\"s\""),
            (form("id=a/b").chosen_id("id").err(), "\"a/b\" given"),
            (
                query("force=maybe").flag("force").err(),
                "Parameter \"force\"",
            ),
        ];
        for (error, part) in bad {
            let error = error.expect("refused");
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(error.message.contains(part), "{}", error.message);
        }
        for body in ["[1]", "{\"a\""] {
            assert!(Fields::from_body(&HeaderMap::new(), body.as_bytes()).is_err());
        }
        assert!(json_fields(json!({})).required_text("name").is_err());
        assert_eq!(
            Fields::from_body(&HeaderMap::new(), b" ")
                .unwrap()
                .text("x")
                .unwrap(),
            None
        );
    }
}
