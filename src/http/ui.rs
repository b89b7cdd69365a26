//! The web page at `/ui/`: its files (plain HTML, CSS and JavaScript embedded in the binary,
//! served without a token), the login and logout, and `/ui/api/<path>`, where the page reaches
//! the API's routes with its session cookie instead of a token.

use hyper::header::{HeaderValue, CACHE_CONTROL, LOCATION, SET_COOKIE};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::json;

use crate::http::answer::Answer;
use crate::http::error::ApiError;
use crate::http::session::require_page_header;
use crate::http::{request, Services};

/// What a path under `/ui` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ui<'a> {
    Page(Page),
    /// `/ui/api/<path>`: the API route of `/<path>` (given with its `/`), by cookie.
    Api(&'a str),
}

/// A path of the page itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/ui`: redirected to `/ui/`.
    Root,
    File(&'static Asset),
    /// `/ui/session`: the login.
    Session,
    /// `/ui/logout`
    Logout,
    /// Any other path under `/ui/`.
    Missing,
}

/// One embedded file of the page.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

static ASSETS: [Asset; 3] = [
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/app.js"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("ui/style.css"),
    },
];

/// The page's own scripts and styles only, never framed, no forms sent anywhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// What `path` is when it is under `/ui`; `None` for every other path.
pub fn route(path: &str) -> Option<Ui<'_>> {
    if path.starts_with("/ui/api/") {
        return Some(Ui::Api(&path["/ui/api".len()..]));
    }
    let page = match path {
        "/ui" => Page::Root,
        "/ui/session" => Page::Session,
        "/ui/logout" => Page::Logout,
        _ if path.starts_with("/ui/") => ASSETS
            .iter()
            .find(|asset| asset.path == path)
            .map_or(Page::Missing, Page::File),
        _ => return None,
    };
    Some(Ui::Page(page))
}

impl Page {
    /// The route pattern the request's log line names.
    pub fn pattern(self) -> &'static str {
        match self {
            Page::Root => "ui",
            Page::File(asset) => asset.path,
            Page::Session => "ui/session",
            Page::Logout => "ui/logout",
            Page::Missing => "(none)",
        }
    }

    /// Answers `method` with `headers` on this path.
    pub fn answer(
        self,
        services: &Services,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Answer, ApiError> {
        let secure = services.settings.public_url.starts_with("https://");
        match self {
            Page::Missing => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "No such page: the web page is at /ui/.",
            )),
            Page::Root => {
                only(Method::GET, method)?;
                Ok(Answer::empty(StatusCode::PERMANENT_REDIRECT)
                    .header(LOCATION, HeaderValue::from_static("ui/")))
            }
            Page::File(asset) => {
                only(Method::GET, method)?;
                Ok(
                    Answer::bytes(StatusCode::OK, asset.content_type, asset.body)
                        .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
                        .header(
                            "Content-Security-Policy",
                            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                        )
                        .header(
                            "X-Content-Type-Options",
                            HeaderValue::from_static("nosniff"),
                        )
                        .header("Referrer-Policy", HeaderValue::from_static("no-referrer")),
                )
            }
            // The token comes in the API's token header, which a page of another site cannot
            // send without a CORS preflight: no other site can log anybody in.
            Page::Session => {
                only(Method::POST, method)?;
                let token = request::authenticate(&services.settings, headers)?;
                let body = json!({"token": {"id": token.id, "description": token.description}});
                let cookie = services.sessions.open(token, secure);
                Ok(Answer::ok(&body).header(SET_COOKIE, cookie))
            }
            Page::Logout => {
                only(Method::POST, method)?;
                require_page_header(headers)?;
                let cookie = services.sessions.close(headers, secure);
                Ok(Answer::empty(StatusCode::NO_CONTENT).header(SET_COOKIE, cookie))
            }
        }
    }
}

/// 405 unless `method` is `allowed`.
fn only(allowed: Method, method: &Method) -> Result<(), ApiError> {
    match *method == allowed {
        true => Ok(()),
        false => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} is not allowed here; use {allowed}."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_ui() {
        let page = |path| {
            route(path).map(|ui| match ui {
                Ui::Page(page) => page.pattern(),
                Ui::Api(rest) => rest,
            })
        };
        assert_eq!(page("/ui"), Some("ui"));
        assert_eq!(page("/ui/"), Some("/ui/"));
        assert_eq!(page("/ui/style.css"), Some("/ui/style.css"));
        assert_eq!(page("/ui/session"), Some("ui/session"));
        assert_eq!(page("/ui/api/jobs/3"), Some("/jobs/3"));
        assert_eq!(page("/ui/apix"), Some("(none)"));
        assert_eq!(page("/ui/nothing"), Some("(none)"));
        assert_eq!(page("/uix"), None);
        assert_eq!(page("/jobs"), None);
    }
}
