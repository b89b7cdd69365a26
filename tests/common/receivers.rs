//! Receivers of notifications on 127.0.0.1: a webhook receiver (a hyper server, plain HTTP or
//! TLS with a certificate of a test CA made by rcgen) that keeps every JSON body it got, and an
//! SMTP sink (a few lines of tokio) that keeps every message it accepted.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// What a test server received, and the server's task (stopped when dropped).
pub struct Inbox<T> {
    received: Arc<Mutex<Vec<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone> Inbox<T> {
    /// Runs the server `serve` makes of the list it fills.
    fn start<F>(serve: impl FnOnce(Arc<Mutex<Vec<T>>>) -> F) -> Inbox<T>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(Arc::clone(&received)));
        Inbox { received, task }
    }

    /// Everything received so far, in order.
    pub fn all(&self) -> Vec<T> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) for `count` items, then a second more for any extra one.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.all().len() < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.all()
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A webhook receiver: every JSON body it got, answered 200.
pub struct Receiver {
    /// Where it listens: `http://` or `https://127.0.0.1:<port>/hook`.
    pub url: String,
    inbox: Inbox<Value>,
}

impl std::ops::Deref for Receiver {
    type Target = Inbox<Value>;

    fn deref(&self) -> &Inbox<Value> {
        &self.inbox
    }
}

/// A test CA and a server certificate for 127.0.0.1 it signed; it signs more on demand.
pub struct TestCa {
    /// The CA's certificate (PEM): what `trusted_ca_file` holds to trust the receiver.
    pub ca_pem: String,
    /// The TLS settings of a server with the certificate for 127.0.0.1.
    pub server: Arc<rustls::ServerConfig>,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        // Each CA a name of its own: a verifier tells them apart by name before the signature.
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let name = format!("jobq test CA {}", MADE.fetch_add(1, Ordering::Relaxed));
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let (leaf, key) = leaf(&issuer, "127.0.0.1");
        let private_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], private_key)
            .unwrap();
        TestCa {
            ca_pem: issuer.pem(),
            server: Arc::new(server),
            issuer,
        }
    }

    /// A certificate this CA signed for `name` (a host name or an IP address: a server's, or
    /// any for a client's) and its private key, both PEM.
    pub fn issue(&self, name: &str) -> (String, String) {
        let (leaf, key) = leaf(&self.issuer, name);
        (leaf.pem(), key.serialize_pem())
    }
}

/// A certificate `issuer` signed for `name`, with its new key.
fn leaf(
    issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    name: &str,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    (leaf, key)
}

impl Receiver {
    /// A plain HTTP receiver on `listener`.
    pub async fn start(listener: TcpListener) -> Receiver {
        Receiver::serve(listener, None)
    }

    /// An HTTPS receiver on a new port, with a certificate of `ca`.
    pub async fn start_tls(ca: &TestCa) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener, Some(Arc::clone(&ca.server)))
    }

    fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let inbox = Inbox::start(|bodies| async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let bodies = Arc::clone(&bodies);
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let bodies = Arc::clone(&bodies);
                        async move {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            bodies
                                .lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap());
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                        }
                    });
                let http = hyper::server::conn::http1::Builder::new();
                match &acceptor {
                    None => {
                        tokio::spawn(http.serve_connection(TokioIo::new(stream), service));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            // A client that does not trust the certificate hangs up here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        });
                    }
                }
            }
        });
        Receiver { url, inbox }
    }
}

/// One message an SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after DATA (headers and body), dot-stuffing undone.
    pub data: String,
}

impl Mail {
    /// The value of header `name` (the first one, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    /// The body after the headers.
    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }
}

/// An SMTP server without TLS or login that accepts every message (250) and keeps it.
pub struct SmtpSink {
    pub port: u16,
    inbox: Inbox<Mail>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inbox = Inbox::start(|mails| async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, Arc::clone(&mails)));
            }
        });
        SmtpSink { port, inbox }
    }
}

impl std::ops::Deref for SmtpSink {
    type Target = Inbox<Mail>;

    fn deref(&self) -> &Inbox<Mail> {
        &self.inbox
    }
}

/// One SMTP session (RFC 5321's commands a client sends without TLS or login).
async fn session(stream: tokio::net::TcpStream, mails: Arc<Mutex<Vec<Mail>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let answer: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("RSET") || upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = command[10..].trim().trim_matches(['<', '>']).to_string();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_string());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mails.lock().unwrap().push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
            });
            b"250 accepted\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 not implemented\r\n"
        };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}
