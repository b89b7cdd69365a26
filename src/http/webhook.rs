//! The webhook client (reqwest, rustls): one JSON `POST` to an `http://` or `https://` URL,
//! bounded by the attempt timeout. Certificates are checked against the system's trust store
//! and the CA certificates of `trusted_ca_file`.

use crate::model::ATTEMPT_TIMEOUT;

/// Why the webhook client cannot be made or a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("setting `trusted_ca_file` holds no PEM certificates the webhook client can use; give a PEM file of CA certificates")]
    TrustedCa {
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot make the webhook client")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    #[error("\"{url}\" is not a webhook URL jobq can call; give http(s)://<host>[:<port>]/<path>")]
    Url { url: String },
    #[error("the webhook at {url} did not answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error(
        "cannot connect to the webhook at {url}; check that it listens, and for https that its \
         certificate is valid for the host and issued by a CA the system or `trusted_ca_file` \
         trusts"
    )]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the HTTP exchange with the webhook at {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Calls webhooks; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
}

impl Webhooks {
    /// A client trusting the system's CA certificates and those of `trusted_ca` (PEM).
    pub fn new(trusted_ca: Option<&[u8]>) -> Result<Webhooks, WebhookError> {
        let mut builder = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = trusted_ca {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|source| WebhookError::TrustedCa { source })?;
            builder = builder.tls_certs_merge(certificates);
        }
        let client = builder
            .build()
            .map_err(|source| WebhookError::Client { source })?;
        Ok(Webhooks { client })
    }

    /// POSTs `body` as JSON to `url` and returns the answer's status code, whatever it is; an
    /// error when the URL is not `http(s)://`, the connection (or its TLS) fails or no answer
    /// came within the attempt timeout.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<u16, WebhookError> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        let parsed = parsed.ok_or_else(|| WebhookError::Url {
            url: url.to_string(),
        })?;
        let answer = self.client.post(parsed).json(body).send().await;
        let error = match answer {
            Ok(answer) => return Ok(answer.status().as_u16()),
            Err(error) => error,
        };
        let url = url.to_string();
        Err(if error.is_timeout() {
            WebhookError::Timeout {
                url,
                seconds: ATTEMPT_TIMEOUT.as_secs(),
            }
        } else if error.is_connect() {
            WebhookError::Connect { url, source: error }
        } else {
            WebhookError::Http { url, source: error }
        })
    }
}
