//! An https reverse proxy on 127.0.0.1 that serves a daemon under a base path, as an on-prem
//! install behind nginx or a load balancer would: TLS with a certificate of a test CA, the base
//! path stripped, answers streamed back as they arrive.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::receivers::TestCa;

/// The proxy's task (stopped when dropped) and its URL.
pub struct TlsProxy {
    /// `https://127.0.0.1:<port><base>`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Serves `upstream` at `https://127.0.0.1:<port><base>` with a certificate of `ca`; a path
    /// outside `base` is 404.
    pub async fn start(ca: &TestCa, base: &'static str, upstream: SocketAddr) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}{base}", listener.local_addr().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return; // a client that does not trust the certificate
                    };
                    let service =
                        hyper::service::service_fn(move |request| forward(request, base, upstream));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsProxy { url, task }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `request` without `base` in its path, sent to `upstream`; its answer with the body still
/// arriving.
async fn forward(
    request: hyper::Request<Incoming>,
    base: &str,
    upstream: SocketAddr,
) -> Result<hyper::Response<Incoming>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(rest) = path_and_query.strip_prefix(base) else {
        panic!("the proxy serves only {base}, not {path_and_query}");
    };
    parts.uri = if rest.is_empty() { "/" } else { rest }.parse().unwrap();
    let stream = TcpStream::connect(upstream).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    sender
        .send_request(hyper::Request::from_parts(parts, body))
        .await
}
