//! The web page's sessions: a token given once to `POST /ui/session` becomes an opaque random
//! session id in an `HttpOnly; SameSite=Strict` cookie, kept in memory with an expiry (a restart
//! asks for the token again). The token itself never reaches the page's script, a URL or the
//! browser's storage.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, COOKIE};
use hyper::{HeaderMap, StatusCode};

use crate::http::error::ApiError;
use crate::settings::Token;

/// The cookie's name.
pub const COOKIE_NAME: &str = "jobq_session";
/// The header every state-changing request of the page carries: a page of another site cannot
/// send it without a CORS preflight, which jobq never answers.
pub const PAGE_HEADER: &str = "X-Jobq-Page";
/// How long a session lasts after the login.
const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// The cookie's path: the page and its API (`/ui/api/...`), nothing else.
const COOKIE_PATH: &str = "/ui";

/// The open sessions.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

struct Session {
    token: Token,
    expires: Instant,
}

impl Sessions {
    /// Opens a session for `token`: the `Set-Cookie` value carrying its new id. The cookie is
    /// `Secure` when the daemon is reached over https (`public_url`).
    pub fn open(&self, token: Token, secure: bool) -> HeaderValue {
        let id: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, session| session.expires > now);
        open.insert(
            id.clone(),
            Session {
                token,
                expires: now + LIFETIME,
            },
        );
        cookie(&id, LIFETIME.as_secs(), secure)
    }

    /// The token of the session whose cookie `headers` carry; 401 when there is none, or it
    /// expired or was closed.
    pub fn token(&self, headers: &HeaderMap) -> Result<Token, ApiError> {
        let expired = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "No session: log in on the page with an API token.",
            )
        };
        let id = session_id(headers).ok_or_else(expired)?;
        let open = self.lock();
        match open.get(&id) {
            Some(session) if session.expires > Instant::now() => Ok(session.token.clone()),
            _ => Err(expired()),
        }
    }

    /// Closes the session whose cookie `headers` carry (if any): the `Set-Cookie` value that
    /// removes the cookie.
    pub fn close(&self, headers: &HeaderMap, secure: bool) -> HeaderValue {
        if let Some(id) = session_id(headers) {
            self.lock().remove(&id);
        }
        cookie("", 0, secure)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// 403 unless `headers` carry `PAGE_HEADER`: what a state-changing request by cookie needs.
pub fn require_page_header(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.contains_key(PAGE_HEADER) {
        true => Ok(()),
        false => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("A request that changes something must carry the {PAGE_HEADER} header."),
        )),
    }
}

/// The session cookie with `value`, lasting `max_age` seconds (0 removes it).
fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{COOKIE_NAME}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).expect("a cookie of hex digits is a valid header")
}

/// The session id of the request's cookie.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            id: "7".into(),
            description: "test".into(),
            token: "secret".into(),
        }
    }

    fn with_cookie(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_session_opens_and_closes() {
        let sessions = Sessions::default();
        let set = sessions.open(token(), false);
        let text = set.to_str().unwrap();
        let id = text
            .strip_prefix("jobq_session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        assert_eq!(id.len(), 64);
        assert!(!text.contains("secret"));
        assert_eq!(
            &text[text.find(';').unwrap()..],
            "; Path=/ui; Max-Age=28800; HttpOnly; SameSite=Strict"
        );
        let headers = with_cookie(&set);
        assert_eq!(sessions.token(&headers).unwrap().id, "7");
        let removed = sessions.close(&headers, true);
        assert_eq!(
            removed.to_str().unwrap(),
            "jobq_session=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(sessions.token(&headers).unwrap_err().status, 401);
        assert_eq!(sessions.token(&HeaderMap::new()).unwrap_err().status, 401);
    }

    #[test]
    fn two_sessions_have_different_ids() {
        let sessions = Sessions::default();
        assert_ne!(sessions.open(token(), false), sessions.open(token(), false));
    }

    #[test]
    fn changes_need_the_page_header() {
        assert_eq!(
            require_page_header(&HeaderMap::new()).unwrap_err().status,
            403
        );
        let mut headers = HeaderMap::new();
        headers.insert(PAGE_HEADER, HeaderValue::from_static("1"));
        assert!(require_page_header(&headers).is_ok());
    }
}
