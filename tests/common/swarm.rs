//! A Docker Swarm of three nodes on this machine, for the tests of the swarm executor.
//!
//! Each node is a container of the host's engine running a Docker engine of its own. Its image
//! is made once from Debian's packages (`debootstrap` of a minimal Debian with `docker.io`,
//! imported into the host's engine) and kept under `NODE_IMAGE`. The nodes sit on an internal
//! network of their own (no route out) with fixed addresses; the first is the manager, the
//! others join it. Every node gets the fixture images and the shell image of the storage probe
//! (nodes cannot pull) and one host folder mounted at the same path, as job folders must be on a
//! real cluster (NFS or similar; `Extras::unshared_node` leaves one node without it). The
//! host reaches each node's engine through a second socket the node serves in a folder mounted
//! from the host. Dropping the swarm removes its nodes (with their engines' data volumes), its
//! network and its folders; the node image stays for the next test. A swarm may also serve its
//! manager's engine on `tcp://` with mutual TLS, and let its nodes pull services' images from a
//! registry on the host's address on the swarm's network (`Extras`).
//!
//! What this host needs of a node container (measured on Docker 20.10, cgroup v1): not
//! `--privileged` (the host's capability bounding set lacks CAP_SYS_RESOURCE, so it fails with
//! "unable to apply caps"), but every other capability, every device, no seccomp, AppArmor or
//! masked system paths, and `/sys` with its cgroup controllers remounted read-write by the
//! node's entry point; `/var/lib/docker` on a volume (overlay2 cannot mount on the container's
//! own overlay file system); `/run` a tmpfs, so a restarted node finds no stale pid files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig, NodeState, SwarmInitRequest, SwarmJoinRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptions,
    ListContainersOptionsBuilder, ListNodesOptions, ListServicesOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::TryStreamExt;

use super::receivers::TestCa;
use super::shell::{shell_image, SHELL_IMAGE};
use super::tools::ensure;
use super::{FIXTURE_IMAGE, FIXTURE_TAG, PROCESSOR_IMAGE, PROCESSOR_TAG};

/// The node image, tagged with the version of its recipe: change the tag with the recipe.
pub const NODE_IMAGE: &str = "local/jobq-swarm-node:2";
/// The label of everything a swarm of the tests creates in the host's engine, with the
/// swarm's own id as its value.
pub const LABEL_SWARM: &str = "jobq.test-swarm";
/// How many nodes a swarm has.
pub const NODES: usize = 3;
/// The folder a node serves its engine's second socket in (mounted from the host).
const NODE_SOCKET_DIR: &str = "/jobq-socket";
/// The port the manager's engine serves mutual TLS on (with `Extras::tls`).
const TLS_PORT: u16 = 2376;
/// How long nodes may take to answer, join and be `Ready`.
const SWARM_LIMIT: Duration = Duration::from_secs(90);

/// The node's entry point: the remounts the node's engine needs, then `dockerd` under `tini`,
/// serving its usual socket and a second one in `NODE_SOCKET_DIR`, with the container's command
/// as more arguments. The engine uses the images it has for services' tasks without pulling,
/// unless the container's environment sets `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=0`.
const ENTRYPOINT: &str = r#"#!/bin/sh
mount -o remount,rw /sys
mount -o remount,rw /sys/fs/cgroup 2>/dev/null
for controller in /sys/fs/cgroup/*; do
    mount -o remount,bind,rw "$controller" 2>/dev/null
done
rm -f /jobq-socket/docker.sock
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="${DOCKER_SERVICE_PREFER_OFFLINE_IMAGE:-1}"
exec tini -- dockerd -H unix:///var/run/docker.sock -H unix:///jobq-socket/docker.sock "$@"
"#;

/// A running swarm of `NODES` nodes; dropped, it is removed.
pub struct Swarm {
    id: String,
    dir: PathBuf,
    nodes: Vec<Node>,
    network: String,
    /// The first three bytes of the network's addresses (`10.231.7`).
    subnet: String,
    /// Its turn among the swarms of this test process, held until it is removed.
    _turn: tokio::sync::SemaphorePermit<'static>,
}

/// How many swarms a test process runs at once: each is three engines, and more on a machine
/// of two cores slow every node (and each job's start) past what the tests allow.
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// How a test's swarm differs from the usual one.
#[derive(Default)]
pub struct Extras<'a> {
    /// The manager's engine also serves `tcp_manager()` with mutual TLS: a server certificate
    /// of this CA for the manager's address, and clients must show a certificate of it.
    pub tls: Option<&'a TestCa>,
    /// The nodes pull a service's image (with the credentials the service was created with)
    /// from registries at the host's address on the swarm's network (`gateway()`), without
    /// TLS, instead of using only the images they have.
    pub pull: bool,
    /// A node that does not get the shared folder (as a node without the cluster's shared
    /// storage).
    pub unshared_node: Option<usize>,
}

/// One node: its container in the host's engine, its address on the swarm's network, and the
/// host folder with its engine's socket.
pub struct Node {
    pub name: String,
    pub address: String,
    socket_dir: PathBuf,
}

impl Swarm {
    /// Starts a swarm; fails the test, saying why, when this machine cannot run one.
    pub async fn start() -> Swarm {
        Swarm::start_with(Extras::default()).await
    }

    /// Starts a swarm whose nodes also do what `extras` asks.
    pub async fn start_with(extras: Extras<'_>) -> Swarm {
        let turn = TURNS.acquire().await.expect("the swarms' turns stay open");
        let host = host_engine().await;
        node_image(&host).await;
        let dir = tempfile::Builder::new()
            .prefix("jobq-swarm-")
            .tempdir()
            .expect("a temporary folder for the swarm")
            .keep();
        // Unique on the host: the process and its count of swarms.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let count = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{pid:x}-{count}");
        let mut swarm = Swarm {
            network: format!("jobq-swarm-{id}"),
            nodes: Vec::new(),
            dir,
            id,
            subnet: format!("10.231.{}", (pid + count * 97) % 250),
            _turn: turn,
        };
        std::fs::create_dir_all(swarm.shared()).expect("the swarm's shared folder");
        swarm.create_network(&host).await;
        for index in 0..NODES {
            let node = swarm.start_node(&host, index, &extras).await;
            swarm.nodes.push(node);
        }
        swarm.form().await;
        swarm.load_fixture_images(&host).await;
        swarm
    }

    /// The value of its `LABEL_SWARM`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The manager's engine address, for `[swarm] manager`.
    pub fn manager(&self) -> String {
        self.nodes[0].host()
    }

    /// The manager's engine address over mutual TLS (with `Extras::tls`), for `[swarm] manager`.
    pub fn tcp_manager(&self) -> String {
        format!("tcp://{}:{TLS_PORT}", self.nodes[0].address)
    }

    /// The host's address on the swarm's network, which every node reaches.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// The folder every node sees at the same path (job folders go under it).
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The client of node `index`'s engine.
    pub fn engine(&self, index: usize) -> Docker {
        self.nodes[index].engine()
    }

    async fn create_network(&self, host: &Docker) {
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".into()),
            internal: Some(true),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(format!("{}.0/24", self.subnet)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([(LABEL_SWARM.into(), self.id.clone())])),
            ..Default::default()
        };
        host.create_network(request)
            .await
            .unwrap_or_else(|error| panic!("cannot create the swarm's network: {error}"));
    }

    async fn start_node(&self, host: &Docker, index: usize, extras: &Extras<'_>) -> Node {
        let name = format!("jobq-swarm-{}-node{index}", self.id);
        let address = format!("{}.{}", self.subnet, 10 + index);
        let socket_dir = self.dir.join(format!("node{index}"));
        std::fs::create_dir_all(&socket_dir).expect("the node's socket folder");
        let mut arguments = Vec::new();
        let mut env = Vec::new();
        if let (0, Some(ca)) = (index, extras.tls) {
            let (certificate, key) = ca.issue(&address);
            for (file, pem) in [
                ("ca.pem", ca.ca_pem.as_str()),
                ("server.pem", &certificate),
                ("server-key.pem", &key),
            ] {
                std::fs::write(socket_dir.join(file), pem).expect("the manager's TLS files");
            }
            arguments.extend([
                format!("-H=tcp://0.0.0.0:{TLS_PORT}"),
                "--tlsverify".into(),
                format!("--tlscacert={NODE_SOCKET_DIR}/ca.pem"),
                format!("--tlscert={NODE_SOCKET_DIR}/server.pem"),
                format!("--tlskey={NODE_SOCKET_DIR}/server-key.pem"),
            ]);
        }
        if extras.pull {
            arguments.push(format!("--insecure-registry={}.0/24", self.subnet));
            env.push("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=0".to_string());
        }
        let mut binds = vec![format!("{}:{NODE_SOCKET_DIR}", socket_dir.display())];
        if extras.unshared_node != Some(index) {
            let shared = self.shared().display().to_string();
            binds.push(format!("{shared}:{shared}"));
        }
        let host_config = HostConfig {
            cap_add: Some(vec!["ALL".into()]),
            cap_drop: Some(vec!["SYS_RESOURCE".into()]),
            device_cgroup_rules: Some(vec!["a *:* rwm".into()]),
            security_opt: Some(vec![
                "seccomp=unconfined".into(),
                "apparmor=unconfined".into(),
            ]),
            // The API's form of the CLI's `--security-opt systempaths=unconfined`.
            masked_paths: Some(Vec::new()),
            readonly_paths: Some(Vec::new()),
            tmpfs: Some(HashMap::from([("/run".into(), String::new())])),
            binds: Some(binds),
            network_mode: Some(self.network.clone()),
            ..Default::default()
        };
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(address.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(NODE_IMAGE.into()),
            cmd: Some(arguments),
            env: Some(env),
            hostname: Some(format!("node{index}")),
            labels: Some(HashMap::from([(LABEL_SWARM.into(), self.id.clone())])),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.network.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        host.create_container(Some(options), body)
            .await
            .unwrap_or_else(|error| panic!("cannot create the swarm node {name}: {error}"));
        host.start_container(&name, None)
            .await
            .unwrap_or_else(|error| panic!("cannot start the swarm node {name}: {error}"));
        let node = Node {
            name,
            address,
            socket_dir,
        };
        node.wait_for_engine().await;
        node
    }

    /// `swarm init` on the first node, the others join it as workers; waits until every node
    /// is `Ready`.
    async fn form(&self) {
        let manager = self.engine(0);
        let init = SwarmInitRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: Some(self.nodes[0].address.clone()),
            ..Default::default()
        };
        manager
            .init_swarm(init)
            .await
            .unwrap_or_else(|error| panic!("swarm init failed on the first node: {error}"));
        let token = manager
            .inspect_swarm()
            .await
            .expect("the manager describes its swarm")
            .join_tokens
            .and_then(|tokens| tokens.worker)
            .expect("the swarm's worker join token");
        for node in &self.nodes[1..] {
            let join = SwarmJoinRequest {
                listen_addr: Some("0.0.0.0:2377".into()),
                advertise_addr: Some(node.address.clone()),
                remote_addrs: Some(vec![format!("{}:2377", self.nodes[0].address)]),
                join_token: Some(token.clone()),
                ..Default::default()
            };
            node.engine()
                .join_swarm(join)
                .await
                .unwrap_or_else(|error| panic!("{} cannot join the swarm: {error}", node.name));
        }
        let started = Instant::now();
        while self.ready_nodes().await.len() < NODES {
            assert!(
                started.elapsed() < SWARM_LIMIT,
                "the swarm's nodes are not all Ready after {SWARM_LIMIT:?}: {:?}",
                self.ready_nodes().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drains node `index`: the manager places no task on it.
    pub async fn drain(&self, index: usize) {
        self.update_node(index, |spec| {
            spec.availability = Some(bollard::models::NodeSpecAvailabilityEnum::DRAIN);
        })
        .await;
    }

    /// Gives node `index` the node label `key=value` (for placement constraints).
    pub async fn label_node(&self, index: usize, key: &str, value: &str) {
        self.update_node(index, |spec| {
            let labels = spec.labels.get_or_insert_with(HashMap::new);
            labels.insert(key.to_string(), value.to_string());
        })
        .await;
    }

    /// Changes node `index`'s spec through the manager.
    async fn update_node(&self, index: usize, change: impl FnOnce(&mut bollard::models::NodeSpec)) {
        let manager = self.engine(0);
        let hostname = format!("node{index}");
        let node = manager
            .list_nodes(None::<ListNodesOptions>)
            .await
            .expect("the manager lists its nodes")
            .into_iter()
            .find(|node| {
                node.description
                    .as_ref()
                    .and_then(|d| d.hostname.as_deref())
                    == Some(&hostname)
            })
            .expect("the node is in the swarm");
        let mut spec = node.spec.expect("the node's spec");
        change(&mut spec);
        let version = node
            .version
            .and_then(|v| v.index)
            .expect("the node's version");
        let options = bollard::query_parameters::UpdateNodeOptionsBuilder::default()
            .version(version as i64)
            .build();
        manager
            .update_node(&node.id.expect("the node's id"), spec, options)
            .await
            .unwrap_or_else(|error| panic!("cannot update {hostname}: {error}"));
    }

    /// Stops node `index`'s container (its engine and tasks with it), as a worker that fails.
    pub async fn stop_node(&self, index: usize) {
        let host = host_engine().await;
        host.stop_container(
            &self.nodes[index].name,
            None::<bollard::query_parameters::StopContainerOptions>,
        )
        .await
        .unwrap_or_else(|error| panic!("cannot stop node{index}: {error}"));
    }

    /// Starts node `index`'s stopped container again and waits until its engine answers (its
    /// swarm state is on its volume; `/run` is a tmpfs, so no stale pid file stops it).
    pub async fn restart_node(&self, index: usize) {
        let host = host_engine().await;
        host.start_container(
            &self.nodes[index].name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap_or_else(|error| panic!("cannot start node{index} again: {error}"));
        self.nodes[index].wait_for_engine().await;
    }

    /// The host names of the nodes the manager sees `Ready`.
    pub async fn ready_nodes(&self) -> Vec<String> {
        let nodes = self
            .engine(0)
            .list_nodes(None::<ListNodesOptions>)
            .await
            .expect("the manager lists its nodes");
        nodes
            .into_iter()
            .filter(|node| {
                node.status.as_ref().and_then(|status| status.state) == Some(NodeState::READY)
            })
            .filter_map(|node| node.description?.hostname)
            .collect()
    }

    /// Copies the fixture images and the storage probe's shell image from the host's engine
    /// into every node (`docker save` and `docker load`): nodes cannot pull.
    async fn load_fixture_images(&self, host: &Docker) {
        super::fixture_image(None).await;
        shell_image(host).await;
        let images = [
            format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}"),
            format!("{PROCESSOR_IMAGE}:{PROCESSOR_TAG}"),
            SHELL_IMAGE.to_string(),
        ];
        let names: Vec<&str> = images.iter().map(String::as_str).collect();
        let saved: Vec<bytes::Bytes> = host
            .export_images(&names)
            .try_collect()
            .await
            .expect("the host's engine saves the fixture images");
        let saved = bytes::Bytes::from(saved.concat());
        for node in &self.nodes {
            let loaded: Result<Vec<_>, _> = node
                .engine()
                .import_image(
                    ImportImageOptions::default(),
                    bollard::body_full(saved.clone()),
                    None,
                )
                .try_collect()
                .await;
            loaded.unwrap_or_else(|error| {
                panic!("{} cannot load the fixture images: {error}", node.name)
            });
        }
    }
}

impl Node {
    /// `unix://` address of the node's engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket_dir.join("docker.sock").display())
    }

    pub fn engine(&self) -> Docker {
        Docker::connect_with_host(&self.host()).expect("a client of the node's engine")
    }

    async fn wait_for_engine(&self) {
        let started = Instant::now();
        loop {
            // The socket appears once the node's engine listens.
            if let Ok(engine) = Docker::connect_with_host(&self.host()) {
                if engine.ping().await.is_ok() {
                    return;
                }
            }
            assert!(
                started.elapsed() < SWARM_LIMIT,
                "the engine of swarm node {} did not answer within {SWARM_LIMIT:?}; see \
                 `docker logs {}`",
                self.name,
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Swarm {
    /// Removes the swarm's nodes (found by their label: also one that never answered) and its
    /// network.
    fn drop(&mut self) {
        let label = format!("{LABEL_SWARM}={}", self.id);
        let network = self.network.clone();
        super::cleanup(move || async move {
            let host = Docker::connect_with_local_defaults().ok()?;
            let filters = HashMap::from([("label".to_string(), vec![label])]);
            let list = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let nodes = host.list_containers(Some(list)).await.ok()?;
            // `v`: the node's engine data (the `/var/lib/docker` volume) goes with it.
            let options = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            for node in nodes.into_iter().filter_map(|node| node.id) {
                let _ = host.remove_container(&node, Some(options.clone())).await;
            }
            let _ = host.remove_network(&network).await;
            Some(())
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The services of the store `instance` the manager at `manager` has, as (service name, its
/// labels).
pub async fn services_of_instance(
    manager: &str,
    instance: &str,
) -> Vec<(String, HashMap<String, String>)> {
    let engine = Docker::connect_with_host(manager).expect("a client of the manager's engine");
    let label = format!("{}={instance}", jobq::runner::LABEL_INSTANCE);
    let filters = HashMap::from([("label".to_string(), vec![label])]);
    let options = ListServicesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let services = engine
        .list_services(Some(options))
        .await
        .expect("the manager lists its services");
    services
        .into_iter()
        .filter_map(|service| {
            let spec = service.spec?;
            Some((spec.name?, spec.labels?))
        })
        .collect()
}

/// Creates a service of `image` with `labels` and no task (replicated, 0 replicas) through
/// the manager at `manager`: its name.
pub async fn plant_service(manager: &str, image: &str, labels: HashMap<String, String>) -> String {
    let engine = Docker::connect_with_host(manager).expect("a client of the manager's engine");
    let name = format!("jobq-planted-{:08x}", rand::random::<u32>());
    let spec = bollard::models::ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels),
        task_template: Some(bollard::models::TaskSpec {
            container_spec: Some(bollard::models::TaskSpecContainerSpec {
                image: Some(image.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(bollard::models::ServiceSpecMode {
            replicated: Some(bollard::models::ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    engine
        .create_service(spec, None)
        .await
        .expect("the manager creates the planted service");
    name
}

/// The host's engine; fails the test when it does not answer.
async fn host_engine() -> Docker {
    let host = Docker::connect_with_local_defaults().expect("a client of the host's engine");
    if let Err(error) = host.ping().await {
        panic!(
            "The swarm tests run their nodes as containers: they need a running Docker \
             engine, which did not answer ({error}). Start dockerd and run the tests again."
        );
    }
    host
}

/// One build of the node image at a time in a test process.
static NODE_IMAGE_BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure the host's engine has `NODE_IMAGE`: a minimal Debian of the host's release with
/// `docker.io` (its engine, containerd, runc, tini) and the entry point, made by `debootstrap`
/// from the mirror the host's apt uses and imported as an image.
async fn node_image(host: &Docker) {
    let _one = NODE_IMAGE_BUILD.lock().await;
    if host.inspect_image(NODE_IMAGE).await.is_ok() {
        return;
    }
    ensure(&["debootstrap", "--version"], "debootstrap");
    let build = tempfile::Builder::new()
        .prefix("jobq-swarm-node-")
        .tempdir()
        .expect("a temporary folder for the node image");
    let root = build.path().join("root");
    let (release, mirror) = apt_source();
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &release])
        .arg(&root)
        .arg(&mirror));
    // No service starts inside the build (a package's script would try).
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").expect("policy-rc.d");
    executable(&policy);
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).expect("resolv.conf");
    run(Command::new("chroot").arg(&root).args([
        "sh",
        "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
         --no-install-recommends docker.io iproute2 iptables ca-certificates procps",
    ]));
    run(Command::new("chroot").arg(&root).args([
        "sh",
        "-c",
        "apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
         /usr/share/locale/* /usr/sbin/policy-rc.d",
    ]));
    let entrypoint = root.join("usr/local/sbin/jobq-node");
    std::fs::write(&entrypoint, ENTRYPOINT).expect("the node's entry point");
    executable(&entrypoint);
    let tarball = build.path().join("root.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg("."));
    let (repo, tag) = NODE_IMAGE.split_once(':').expect("repository:tag");
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec![
            "ENTRYPOINT [\"/usr/local/sbin/jobq-node\"]".to_string(),
            "VOLUME /var/lib/docker".to_string(),
        ])
        .build();
    let file = tokio::fs::File::open(&tarball)
        .await
        .expect("the node's tarball");
    let body = tokio_util::io::ReaderStream::new(file);
    let imported: Result<Vec<_>, _> = host
        .create_image(Some(options), Some(bollard::body_try_stream(body)), None)
        .try_collect()
        .await;
    imported.unwrap_or_else(|error| panic!("cannot import the swarm node image: {error}"));
}

/// The Debian release and mirror of the host's first apt source (`deb` line or deb822).
fn apt_source() -> (String, String) {
    let mut sources = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in entries.flatten() {
            if entry
                .path()
                .extension()
                .is_some_and(|ext| ext == "sources" || ext == "list")
            {
                sources.push('\n');
                sources.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    let mut uri = None;
    for line in sources.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["deb", found, suite, ..] if found.ends_with("/debian") => {
                return (suite.to_string(), found.to_string())
            }
            ["URIs:", found, ..] => uri = Some(found.to_string()),
            ["Suites:", suite, ..] if uri.as_deref().is_some_and(|u| u.ends_with("/debian")) => {
                return (suite.to_string(), uri.expect("the source's URI"))
            }
            _ => {}
        }
    }
    panic!(
        "the swarm node image is made from the host's Debian mirror, and no apt source names one"
    )
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed while making the swarm node image: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("an executable file");
}
