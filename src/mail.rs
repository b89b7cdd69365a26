//! The SMTP client: one notification email through the `[smtp]` server (lettre, rustls), one
//! connection per message, bounded by the attempt timeout. The password is never logged.

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::model::ATTEMPT_TIMEOUT;
use crate::settings::{Smtp, SmtpSecurity};

/// Why the SMTP client cannot be made or a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("setting `smtp.from` \"{from}\" is not a mailbox jobq can send from; give an address like jobq@example.com")]
    From {
        from: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("setting `trusted_ca_file` holds no PEM certificates the SMTP client can use; give a PEM file of CA certificates")]
    TrustedCa {
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot use TLS with the SMTP server {host}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("\"{address}\" is not an email address jobq can send to")]
    To {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("cannot make the email to {address}")]
    Message {
        address: String,
        #[source]
        source: lettre::error::Error,
    },
    #[error("the SMTP server {server} did not take the email to {address} within {seconds} s")]
    Timeout {
        server: String,
        address: String,
        seconds: u64,
    },
    #[error("the SMTP server {server} did not take the email to {address}; check `[smtp]` and that the server accepts mail from jobq")]
    Send {
        server: String,
        address: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// Sends emails through one SMTP server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl Mailer {
    /// A client of the `[smtp]` server, trusting the certificates of `trusted_ca` (PEM) beside
    /// the system's when it uses TLS.
    pub fn new(smtp: &Smtp, trusted_ca: Option<&[u8]>) -> Result<Mailer, MailError> {
        let from = smtp.from.parse().map_err(|source| MailError::From {
            from: smtp.from.clone(),
            source,
        })?;
        let tls = || {
            let mut parameters = TlsParameters::builder(smtp.host.clone());
            if let Some(pem) = trusted_ca {
                let certificate =
                    Certificate::from_pem(pem).map_err(|source| MailError::TrustedCa { source })?;
                parameters = parameters.add_root_certificate(certificate);
            }
            parameters.build().map_err(|source| MailError::Tls {
                host: smtp.host.clone(),
                source,
            })
        };
        let tls = match smtp.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(ATTEMPT_TIMEOUT));
        if let Some((username, password)) = &smtp.login {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            server: format!("{}:{}", smtp.host, smtp.port),
        })
    }

    /// Sends a plain-text email to `address` within the attempt timeout (the whole exchange);
    /// the server's reply code once it took the message (250).
    pub async fn send(&self, address: &str, subject: &str, text: &str) -> Result<u16, MailError> {
        let to: Mailbox = address.parse().map_err(|source| MailError::To {
            address: address.to_string(),
            source,
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_string())
            .map_err(|source| MailError::Message {
                address: address.to_string(),
                source,
            })?;
        let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, self.transport.send(message)).await;
        let sent = sent.map_err(|_| MailError::Timeout {
            server: self.server.clone(),
            address: address.to_string(),
            seconds: ATTEMPT_TIMEOUT.as_secs(),
        })?;
        let response = sent.map_err(|source| MailError::Send {
            server: self.server.clone(),
            address: address.to_string(),
            source,
        })?;
        Ok(u16::from(response.code()))
    }
}
