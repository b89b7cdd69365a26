//! A minimal Docker Registry (HTTP API v2) on 127.0.0.1:<port>, which the real engine pulls from
//! (it pulls from loopback registries without TLS), or on another address of this host (a test
//! swarm's network, whose engines are told to pull from it without TLS): `/v2/`, manifests by tag and by digest,
//! blobs, GET and HEAD, with their Content-Type and Docker-Content-Digest. Its images are the
//! fixture image as the engine exports it (`docker save`), turned into a schema 2 manifest,
//! its config and gzipped layer blobs, plus one layer of its own per pushed image, so every
//! pull downloads something new. It may require basic auth or answer 500 to everything. It
//! keeps the requests it answered (with who asked and the answer's status), and when dropped removes from the engine every image it
//! served (by tag and by digest: only its own repositories).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bollard::query_parameters::RemoveImageOptionsBuilder;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Bytes of the layer each pushed image gets of its own: enough for a few progress reports.
const OWN_LAYER_BYTES: usize = 4 << 20;

/// How the registry answers.
#[derive(Clone, Debug)]
pub enum Mode {
    Open,
    /// Every request needs these credentials (`WWW-Authenticate: Basic` otherwise).
    Basic {
        username: String,
        password: String,
    },
    /// Every request is answered 500.
    Failing,
}

/// An image as a registry stores it: its config and layers (gzipped), with its manifest.
#[derive(Clone)]
pub struct RegistryImage {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

impl RegistryImage {
    /// The fixture image (`FIXTURE_IMAGE:FIXTURE_TAG`, built first) as the engine exports it,
    /// with one more layer holding `marker` and random bytes: an image no engine has yet.
    pub async fn fixture(marker: &str) -> RegistryImage {
        super::fixture_image(None).await;
        let docker = bollard::Docker::connect_with_local_defaults()
            .expect("a Docker client")
            .negotiate_version()
            .await
            .expect("the engine answers");
        let reference = format!("{}:{}", super::FIXTURE_IMAGE, super::FIXTURE_TAG);
        let mut saved = Vec::new();
        let mut stream = docker.export_image(&reference);
        while let Some(chunk) = stream.next().await {
            saved.extend_from_slice(&chunk.expect("the engine exports the fixture image"));
        }
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let mut archive = tar::Archive::new(saved.as_slice());
        for entry in archive.entries().expect("a docker save archive") {
            let mut entry = entry.expect("an archive entry");
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config: Value =
            serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
        let layers: Vec<Vec<u8>> = manifest[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|layer| files[layer.as_str().unwrap()].clone())
            .collect();
        let mut image = RegistryImage {
            config: Vec::new(),
            layers: Vec::new(),
        };
        let mut config = config;
        for layer in &layers {
            image.layers.push(gzip(layer));
        }
        let own = own_layer(marker);
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(digest(&own)));
        if let Some(history) = config["history"].as_array_mut() {
            history.push(json!({"created": "2026-01-01T00:00:00Z", "created_by": marker}));
        }
        image.layers.push(gzip(&own));
        image.config = serde_json::to_vec(&config).unwrap();
        image
    }

    /// The schema 2 manifest of the image.
    pub fn manifest(&self) -> Vec<u8> {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|layer| json!({"mediaType": LAYER_TYPE, "size": layer.len(), "digest": digest(layer)}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": self.config.len(), "digest": digest(&self.config)},
            "layers": layers,
        }))
        .unwrap()
    }

    /// `sha256:<hex>` of the manifest: the digest the engine records in `RepoDigests`.
    pub fn manifest_digest(&self) -> String {
        digest(&self.manifest())
    }

    /// `sha256:<hex>` of the image's own (last) layer blob.
    pub fn own_layer_digest(&self) -> String {
        digest(self.layers.last().unwrap())
    }
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Bytes>,
    /// By (repository, tag or digest): the manifest's digest and bytes.
    manifests: HashMap<(String, String), (String, Bytes)>,
    /// Every pushed (repository, tag) and (repository, digest), to remove from the engine.
    references: Vec<String>,
    /// Every request answered.
    requests: Vec<Answered>,
}

/// A request the registry answered.
struct Answered {
    from: IpAddr,
    /// `METHOD path`.
    request: String,
    status: u16,
}

/// A registry serving until dropped.
pub struct Registry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// A registry on 127.0.0.1.
    pub async fn start(mode: Mode) -> Registry {
        Registry::start_on(mode, "127.0.0.1").await
    }

    /// A registry on a port of `address` (one of this host's).
    pub async fn start_on(mode: Mode, address: &str) -> Registry {
        let listener = tokio::net::TcpListener::bind((address, 0))
            .await
            .expect("a port for the test registry");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                let mode = mode.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = answer(&state, &mode, &request);
                        lock(&state).requests.push(Answered {
                            from: peer.ip(),
                            request: format!("{} {}", request.method(), request.uri().path()),
                            status: answer.status().as_u16(),
                        });
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                    // The engine tries TLS first: that connection fails here, then it speaks HTTP.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Registry {
            addr,
            state,
            server,
        }
    }

    /// `<address>:<port>`, the host of this registry's image names.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stores `image` as `repository:tag` (replacing what the tag named); its manifest digest.
    pub fn push(&self, repository: &str, tag: &str, image: &RegistryImage) -> String {
        let manifest = Bytes::from(image.manifest());
        let manifest_digest = digest(&manifest);
        let mut state = self.lock();
        state
            .blobs
            .insert(digest(&image.config), Bytes::from(image.config.clone()));
        for layer in &image.layers {
            state
                .blobs
                .insert(digest(layer), Bytes::from(layer.clone()));
        }
        for reference in [tag, manifest_digest.as_str()] {
            state.manifests.insert(
                (repository.to_string(), reference.to_string()),
                (manifest_digest.clone(), manifest.clone()),
            );
        }
        let host = self.host();
        state.references.push(format!("{host}/{repository}:{tag}"));
        state
            .references
            .push(format!("{host}/{repository}@{manifest_digest}"));
        manifest_digest
    }

    /// How many times `METHOD path` was answered.
    pub fn count(&self, request: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.request == request)
            .count()
    }

    /// Every request answered so far, `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| r.request.clone())
            .collect()
    }

    /// The requests answered so far to `from`, as `METHOD path` and the answer's status.
    pub fn answered_to(&self, from: IpAddr) -> Vec<(String, u16)> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.from == from)
            .map(|r| (r.request.clone(), r.status))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// The images this registry served are removed from the engine (only its own names: each test
/// uses repositories of its own).
impl Drop for Registry {
    fn drop(&mut self) {
        self.server.abort();
        let references = std::mem::take(&mut self.lock().references);
        super::cleanup(move || async move {
            let docker = bollard::Docker::connect_with_local_defaults()
                .ok()?
                .negotiate_version()
                .await
                .ok()?;
            for reference in references {
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(&reference, Some(options), None).await;
            }
            Some(())
        });
    }
}

fn answer(
    state: &Mutex<State>,
    mode: &Mode,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let state = lock(state);
    let reply = |status: StatusCode| {
        Response::builder()
            .status(status)
            .header("Docker-Distribution-API-Version", "registry/2.0")
    };
    let error = |status: StatusCode, code: &str, message: &str| {
        let body = json!({"errors": [{"code": code, "message": message}]}).to_string();
        reply(status)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    match mode {
        Mode::Open => {}
        Mode::Failing => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the test registry fails",
            )
        }
        Mode::Basic { username, password } => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            );
            let given = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if given != Some(expected.as_str()) {
                let mut answer = error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "authentication required",
                );
                answer.headers_mut().insert(
                    "WWW-Authenticate",
                    "Basic realm=\"jobq test registry\"".parse().unwrap(),
                );
                return answer;
            }
        }
    }
    if path == "/v2/" || path == "/v2" {
        return reply(StatusCode::OK)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
    }
    let head = method == hyper::Method::HEAD;
    let found = |content_type: &str, digest: &str, body: Bytes| {
        let length = body.len();
        reply(StatusCode::OK)
            .header("Content-Type", content_type)
            .header("Docker-Content-Digest", digest)
            .header("Content-Length", length)
            .body(Full::new(if head { Bytes::new() } else { body }))
            .unwrap()
    };
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    if let Some((repository, reference)) = rest.rsplit_once("/manifests/") {
        let key = (repository.to_string(), reference.to_string());
        return match state.manifests.get(&key) {
            Some((digest, body)) => found(MANIFEST_TYPE, digest, body.clone()),
            None => error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            ),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match state.blobs.get(digest) {
            Some(body) => found("application/octet-stream", digest, body.clone()),
            None => error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown"),
        };
    }
    error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "not found")
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A layer tar of one file `/jobq-test-layer` holding `marker` and random bytes.
fn own_layer(marker: &str) -> Vec<u8> {
    let mut content = marker.as_bytes().to_vec();
    content.push(b'\n');
    content.extend((0..OWN_LAYER_BYTES).map(|_| rand::random::<u8>()));
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "jobq-test-layer", content.as_slice())
        .unwrap();
    tar.into_inner().unwrap()
}
