//! Container sizes and hardening against the real engine: each container type's memory and CPUs
//! (inspected, and read from inside), their precedence, the host's caps, no privilege gain
//! through a setuid binary, the process limit against a fork bomb, and the `no-internet`
//! network's routes.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use common::{
    assert_error, cleanup, id, Options, TestDaemon, COMPONENT, FIXTURE_IMAGE, FIXTURE_TAG,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The fixture on the engine's default bridge network.
const BRIDGE: &str = "keboola.ex-bridge";
/// The fixture on the `no-internet` network.
const NO_INTERNET: &str = "keboola.ex-no-internet";
/// The fixture with room for a thousand processes.
const FORKS: &str = "keboola.ex-forks";
/// The fixture with 256m, for the host's memory cap.
const BIG: &str = "keboola.ex-big";
/// The fixture's binary as a setuid-root entrypoint, hardened and relaxed.
const SETUID: &str = "keboola.ex-setuid";
const SETUID_RELAXED: &str = "keboola.ex-setuid-relaxed";
const SETUID_IMAGE: &str = "local/jobq-setuid-test";
/// The fixture with a read-only root file system and a tmpfs `/tmp`.
const READ_ONLY: &str = "keboola.ex-read-only";
/// The fixture as the image's own user (root), with its capabilities.
const ROOT: &str = "keboola.ex-root";

/// The cgroup files (v1, then v2) that say a container's memory, CPU quota and process limit.
const MEMORY_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "/sys/fs/cgroup/memory.max",
];
const CPU_FILES: [&str; 3] = [
    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
    "/sys/fs/cgroup/cpu.max",
];
const PIDS_FILES: [&str; 2] = ["/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"];

fn tables(image_tag: &str) -> String {
    let fixture = format!("image = \"{FIXTURE_IMAGE}\"\ntag = \"{FIXTURE_TAG}\"");
    format!(
        "[[components]]\nid = \"{BRIDGE}\"\n{fixture}\nnetwork = \"bridge\"\n\
         [[components]]\nid = \"{FORKS}\"\n{fixture}\nnetwork = \"none\"\nmemory = \"1g\"\n\
         [[components]]\nid = \"{BIG}\"\n{fixture}\nnetwork = \"none\"\n\
         [[components]]\nid = \"{SETUID}\"\nimage = \"{SETUID_IMAGE}\"\ntag = \"{image_tag}\"\n\
         network = \"none\"\n\
         [[components]]\nid = \"{SETUID_RELAXED}\"\nimage = \"{SETUID_IMAGE}\"\n\
         tag = \"{image_tag}\"\nnetwork = \"none\"\nno_new_privileges = false\n\
         drop_capabilities = false\n\
         [[components]]\nid = \"{READ_ONLY}\"\n{fixture}\nnetwork = \"none\"\n\
         read_only_rootfs = true\ntmp_size = \"16m\"\n\
         [[components]]\nid = \"{ROOT}\"\n{fixture}\nnetwork = \"none\"\n\
         container_root_user = true\n"
    )
}

/// A daemon with the components above and the `top` settings.
async fn daemon(options: Options, top: &str) -> TestDaemon {
    TestDaemon::start_with(options, top, &tables("1")).await
}

fn engine() -> Docker {
    Docker::connect_with_local_defaults().expect("a Docker client")
}

/// The files the fixture read (`read_files`), by path, from the job's events.
async fn files_read(t: &TestDaemon, id: &str) -> HashMap<String, String> {
    t.messages(id)
        .await
        .iter()
        .filter_map(|message| {
            let (path, text) = message.strip_prefix("read ")?.split_once(": ")?;
            let text: Value = serde_json::from_str(text).ok()?;
            Some((path.to_string(), text.as_str()?.to_string()))
        })
        .collect()
}

/// The first of `paths` that the fixture could read, trimmed.
fn first_readable(files: &HashMap<String, String>, paths: &[&str]) -> (String, String) {
    paths
        .iter()
        .find_map(|path| {
            let text = files.get(*path)?;
            (!text.starts_with("error: ")).then(|| (path.to_string(), text.trim().to_string()))
        })
        .unwrap_or_else(|| panic!("none of {paths:?} was readable: {files:?}"))
}

/// Polls the job's events until one starts with `prefix`; that message.
async fn wait_for_prefix(t: &TestDaemon, id: &str, prefix: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(message) = t
            .messages(id)
            .await
            .into_iter()
            .find(|m| m.starts_with(prefix))
        {
            return message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never logged a line starting with \"{prefix}\""
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cpu_count(cpus: f64) -> f64 {
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    cpus.min(cores)
}

/// What the container's cgroup files say: (memory bytes, nano CPUs, process limit).
fn cgroup_limits(files: &HashMap<String, String>) -> (i64, i64, String) {
    let (_, memory) = first_readable(files, &MEMORY_FILES);
    let (path, cpu) = first_readable(files, &CPU_FILES);
    let nano = if path.ends_with("cpu.max") {
        let (quota, period) = cpu.split_once(' ').expect("quota and period");
        quota.parse::<i64>().unwrap() * 1_000_000_000 / period.parse::<i64>().unwrap()
    } else {
        let (_, period) = first_readable(files, &CPU_FILES[1..2]);
        cpu.parse::<i64>().unwrap() * 1_000_000_000 / period.parse::<i64>().unwrap()
    };
    let (_, pids) = first_readable(files, &PIDS_FILES);
    (memory.parse().expect("a memory limit"), nano, pids)
}

/// A memory limit as the kernel keeps it: whole pages of 4 KiB.
fn in_pages(bytes: i64) -> i64 {
    bytes / 4096 * 4096
}

fn all_limit_files() -> Vec<&'static str> {
    [&MEMORY_FILES[..], &CPU_FILES[..], &PIDS_FILES[..]].concat()
}

#[tokio::test]
async fn each_container_type_gets_its_memory_cpus_and_the_hardening() {
    let t = daemon(Options::default(), "").await;
    let docker = engine();
    // COMPONENT has 128m.
    for (kind, memory, cpus) in [
        ("xsmall", 64_000_000, 1.0),
        ("small", 128_000_000, 2.0),
        ("medium", 256_000_000, 4.0),
        ("large", 908_000_000, 14.0),
    ] {
        let job = t
            .submit(json!({
                "component": COMPONENT,
                "backend": {"containerType": kind},
                "configData": {"parameters": {
                    "read_files": all_limit_files(),
                    "print_parallelism": true,
                    "sleep": 60,
                }},
            }))
            .await;
        assert_eq!(job["backend"], json!({"containerType": kind}));
        let id = id(&job);
        let parallelism = wait_for_prefix(&t, &id, "available_parallelism ").await;
        let nano_cpus = (cpu_count(cpus) * 1e9).round() as i64;

        let containers = t.containers_of_job(&id).await;
        assert_eq!(containers.len(), 1, "{containers:?}");
        let host = docker
            .inspect_container(&containers[0], None)
            .await
            .expect("the running container")
            .host_config
            .expect("a host config");
        assert_eq!(host.memory, Some(memory), "{kind}");
        assert_eq!(host.memory_swap, Some(memory), "{kind}");
        assert_eq!(host.nano_cpus, Some(nano_cpus), "{kind}");
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.pids_limit, Some(1024));
        assert_eq!(host.readonly_rootfs, Some(false));

        let files = files_read(&t, &id).await;
        assert_eq!(
            cgroup_limits(&files),
            (in_pages(memory), nano_cpus, "1024".to_string()),
            "{kind}"
        );
        assert_eq!(
            parallelism,
            format!("available_parallelism {}", cpu_count(cpus).ceil())
        );
        t.kill(&id).await;
        assert_eq!(t.wait_finished(&id).await["status"], "terminated");
    }
}

#[tokio::test]
async fn the_job_backend_wins_over_config_data_over_the_stored_runtime() {
    let t = daemon(Options::default(), "").await;
    let parameters = json!({"read_files": MEMORY_FILES});
    let stored = t
        .post(
            &format!("/v2/storage/components/{COMPONENT}/configs"),
            &json!({
                "configurationId": "sized",
                "name": "sized",
                "configuration": {
                    "parameters": parameters,
                    "runtime": {"backend": {"containerType": "xsmall"}},
                },
            }),
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.json());
    let config_data = json!({
        "parameters": parameters,
        "runtime": {"backend": {"containerType": "medium"}},
    });
    for (body, kind, memory) in [
        (json!({"config": "sized"}), "xsmall", 64_000_000),
        (
            json!({"config": "sized", "configData": config_data}),
            "medium",
            256_000_000,
        ),
        (
            json!({"config": "sized", "configData": config_data,
                   "backend": {"containerType": "large"}}),
            "large",
            908_000_000,
        ),
    ] {
        let mut body = body;
        body["component"] = json!(COMPONENT);
        let job = t.run(body).await;
        assert_eq!(job["status"], "success", "{job:#}");
        assert_eq!(job["backend"]["containerType"], kind);
        let files = files_read(&t, &id(&job)).await;
        assert_eq!(
            first_readable(&files, &MEMORY_FILES).1,
            in_pages(memory).to_string()
        );
    }
}

#[tokio::test]
async fn a_type_over_the_host_caps_or_unknown_is_refused_naming_it() {
    let top = "max_container_memory = \"1g\"\nmax_container_cpus = 4";
    let t = daemon(Options::without_docker(), top).await;
    let create = |component: &str, kind: &str| json!({"component": component, "backend": {"containerType": kind}, "configData": {}});
    assert_error(
        &t.post("/jobs", &create(BIG, "large")).await,
        400,
        &format!(
            "Backend container type \"large\" gives component \"{BIG}\" 1817m of memory, more \
             than this host allows (max_container_memory = 1g); choose a smaller type."
        ),
        json!({}),
    );
    assert_error(
        &t.post("/jobs", &create(COMPONENT, "large")).await,
        400,
        "Backend container type \"large\" asks for 14 CPUs, more than this host allows \
         (max_container_cpus = 4); choose a smaller type.",
        json!({}),
    );
    assert_error(
        &t.post("/jobs", &create(COMPONENT, "huge")).await,
        400,
        "Backend container type \"huge\" is unknown; use \"xsmall\", \"small\", \"medium\" or \
         \"large\".",
        json!({}),
    );
    // An orchestration's backend reaches its tasks, so it is checked as it is created.
    let orchestration = json!({"component": "keboola.orchestrator", "configData": {},
                               "backend": {"containerType": "huge"}});
    assert_error(
        &t.post("/jobs", &orchestration).await,
        400,
        "Backend container type \"huge\" is unknown; use \"xsmall\", \"small\", \"medium\" or \
         \"large\".",
        json!({}),
    );
    let fits = t.submit(create(BIG, "medium")).await;
    assert_eq!(fits["backend"], json!({"containerType": "medium"}));
}

/// A tar archive of `entries` (name, mode, data), owned by root.
fn tar_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, mode, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Builds `SETUID_IMAGE:<tag>`: the fixture image whose `/fixture` is the fixture's binary
/// owned by root with the setuid bit; removed again when the guard drops. (`COPY` drops the
/// setuid bit on Docker 20.10; `ADD` of a tar archive keeps it.)
async fn setuid_image(tag: &str) -> ImageGuard {
    let layer = tar_of(&[("fixture", 0o4755, jobq::runner::image::FIXTURE_BINARY)]);
    let dockerfile = format!("FROM {FIXTURE_IMAGE}:{FIXTURE_TAG}\nADD fixture.tar /\n");
    let context = tar_of(&[
        ("Dockerfile", 0o644, dockerfile.as_bytes()),
        ("fixture.tar", 0o644, &layer),
    ]);
    let reference = format!("{SETUID_IMAGE}:{tag}");
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&reference)
        .rm(true)
        .forcerm(true)
        .build();
    let docker = engine();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.expect("the setuid image builds");
        assert!(info.error_detail.is_none(), "{info:?}");
    }
    ImageGuard(reference)
}

struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let reference = self.0.clone();
        cleanup(move || async move {
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            engine()
                .remove_image(&reference, Some(options), None)
                .await
                .ok()?;
            Some(())
        });
    }
}

/// The real, effective, saved and file-system uids of the `Uid:` line of `/proc/self/status`.
fn uids(files: &HashMap<String, String>) -> Vec<u32> {
    let status = &files["/proc/self/status"];
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("a Uid line")
        .split_whitespace()
        .map(|uid| uid.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_setuid_binary_gains_no_privileges() {
    let tag = format!("{}", std::process::id());
    let t = TestDaemon::start_with(Options::default(), "", &tables(&tag)).await;
    let _image = setuid_image(&tag).await;
    let parameters = json!({"read_files": ["/proc/self/status"], "echo": false});
    let hardened = t
        .run(json!({"component": SETUID, "configData": {"parameters": parameters}}))
        .await;
    assert_eq!(hardened["status"], "success", "{hardened:#}");
    let ids = uids(&files_read(&t, &id(&hardened)).await);
    assert_ne!(ids[0], 0, "the container runs as a user, never root");
    assert_eq!(
        ids,
        vec![ids[0]; 4],
        "no-new-privileges leaves the setuid bit without effect"
    );

    // The same image without no-new-privileges: the binary does become root (effective uid 0),
    // so the image is what the check above needs.
    let relaxed = t
        .run(json!({"component": SETUID_RELAXED, "configData": {"parameters": parameters}}))
        .await;
    assert_eq!(relaxed["status"], "success", "{relaxed:#}");
    let ids = uids(&files_read(&t, &id(&relaxed)).await);
    assert_ne!(ids[0], 0);
    assert_eq!(ids[1], 0, "{ids:?}");
}

#[tokio::test]
async fn a_fork_bomb_ends_the_job_with_the_process_limit_and_nothing_else() {
    let t = daemon(Options::default(), "").await;
    let bomb = t
        .run(json!({"component": FORKS, "configData": {"parameters": {"spawn": 5000, "sleep": 120}}}))
        .await;
    assert_eq!(bomb["status"], "error", "{bomb:#}");
    assert_eq!(
        bomb["result"]["message"],
        "Component reached its process limit (1024 processes) and was stopped; a component \
         must not start more processes at once (the component's pids_limit setting)."
    );
    assert_eq!(bomb["result"]["error"]["type"], "user");
    assert!(t.containers_of_job(&id(&bomb)).await.is_empty());
    // The daemon and the engine go on: the next job runs.
    let next = t
        .run(json!({"component": FORKS, "configData": {"parameters": {"print": ["fine"]}}}))
        .await;
    assert_eq!(next["status"], "success", "{next:#}");
}

/// Removes the test's own no-internet network when the test ends.
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        cleanup(move || async move {
            engine().remove_network(&name).await.ok()?;
            Some(())
        });
    }
}

/// The routes of `/proc/net/route`: (destination, gateway) in its little-endian hex.
fn routes(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.get(1)?.to_string(), fields.get(2)?.to_string()))
        })
        .collect()
}

/// An IPv4 address as `/proc/net/route` writes it.
fn route_hex(address: &str) -> String {
    let address: Ipv4Addr = address.parse().expect("an IPv4 address");
    format!("{:08X}", u32::from_le_bytes(address.octets()))
}

#[tokio::test]
async fn a_no_internet_container_has_no_route_out_while_a_bridge_one_has() {
    let network = format!("jobq-test-no-internet-{}", std::process::id());
    let _guard = NetworkGuard(network.clone());
    let fixture = format!("image = \"{FIXTURE_IMAGE}\"\ntag = \"{FIXTURE_TAG}\"");
    let t = TestDaemon::start_with(
        Options::default(),
        &format!("no_internet_network = \"{network}\""),
        &format!(
            "{}[[components]]\nid = \"{NO_INTERNET}\"\n{fixture}\nnetwork = \"no-internet\"\n",
            tables("1")
        ),
    )
    .await;
    let parameters = json!({"read_files": ["/proc/net/route"]});
    let bridge = t
        .run(json!({"component": BRIDGE, "configData": {"parameters": parameters}}))
        .await;
    assert_eq!(bridge["status"], "success", "{bridge:#}");
    let bridge_routes = routes(&files_read(&t, &id(&bridge)).await["/proc/net/route"]);
    assert!(
        bridge_routes
            .iter()
            .any(|(destination, _)| destination == "00000000"),
        "a bridge container has a default route: {bridge_routes:?}"
    );

    let closed = t
        .run(json!({"component": NO_INTERNET, "configData": {"parameters": parameters}}))
        .await;
    assert_eq!(closed["status"], "success", "{closed:#}");
    let closed_routes = routes(&files_read(&t, &id(&closed)).await["/proc/net/route"]);

    // jobq created the network, internal: the engine routes nothing out of its subnet.
    let docker = engine();
    let inspected = docker
        .inspect_network(&network, None)
        .await
        .expect("jobq created it");
    assert_eq!(inspected.internal, Some(true));
    let ipam = &inspected.ipam.expect("IPAM").config.expect("a subnet")[0];
    let (subnet, _) = ipam
        .subnet
        .as_deref()
        .expect("a subnet")
        .split_once('/')
        .unwrap();
    assert!(
        closed_routes
            .iter()
            .any(|(destination, _)| *destination == route_hex(subnet)),
        "the container is on jobq's network: {closed_routes:?}"
    );
    // Engines before API 1.44 (Docker 25) still give a container of an internal network a
    // default route, to a gateway that forwards nothing (moby/moby c761353); later ones none.
    let api: f64 = docker
        .version()
        .await
        .unwrap()
        .api_version
        .unwrap()
        .parse()
        .unwrap();
    let defaults: Vec<&(String, String)> = closed_routes
        .iter()
        .filter(|(destination, _)| destination == "00000000")
        .collect();
    if api >= 1.44 {
        assert!(defaults.is_empty(), "{closed_routes:?}");
    } else {
        let gateway = route_hex(ipam.gateway.as_deref().expect("a gateway"));
        assert!(
            defaults.iter().all(|(_, via)| *via == gateway),
            "only through the internal network's gateway: {closed_routes:?}"
        );
    }
}

#[tokio::test]
async fn a_component_may_have_a_read_only_root_a_tmpfs_and_run_as_root() {
    let t = daemon(Options::default(), "").await;
    let mounts = |append_to: &str| {
        json!({"read_files": ["/proc/self/mounts", "/proc/self/status"],
               "append_run_id_to": append_to})
    };
    let written = t
        .run(json!({"component": READ_ONLY, "configData": {"parameters": mounts("/tmp/run-id")}}))
        .await;
    assert_eq!(written["status"], "success", "{written:#}");
    let files = files_read(&t, &id(&written)).await;
    let mount = |point: &str| -> Vec<String> {
        files["/proc/self/mounts"]
            .lines()
            .map(|line| {
                line.split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .find(|fields| fields[1] == point)
            .unwrap_or_else(|| panic!("{point} is mounted: {files:?}"))
    };
    assert!(
        mount("/")[3].split(',').any(|option| option == "ro"),
        "{:?}",
        mount("/")
    );
    let tmp = mount("/tmp");
    assert_eq!(tmp[2], "tmpfs");
    // 16m in whole pages, as the kernel shows it.
    let size = format!("size={}k", 16_000_000_u64.div_ceil(4096) * 4);
    assert!(tmp[3].split(',').any(|option| option == size), "{tmp:?}");
    assert_ne!(uids(&files)[0], 0);
    // Outside /data and /tmp nothing can be written.
    let refused = t
        .run(json!({"component": READ_ONLY, "configData": {"parameters": mounts("/run-id")}}))
        .await;
    assert_eq!(refused["status"], "error", "{refused:#}");

    let root = t
        .run(json!({"component": ROOT, "configData": {"parameters": mounts("/tmp/run-id")}}))
        .await;
    assert_eq!(root["status"], "success", "{root:#}");
    let files = files_read(&t, &id(&root)).await;
    assert_eq!(uids(&files), [0, 0, 0, 0]);
    // Every capability dropped but DAC_OVERRIDE (bit 1), which lets root reach its job folder.
    let effective = files["/proc/self/status"]
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(str::trim);
    assert_eq!(effective, Some("0000000000000002"));
}

#[tokio::test]
async fn a_configuration_runtime_process_timeout_replaces_the_components() {
    let t = daemon(Options::default(), "").await;
    // COMPONENT's own timeout is 60 s.
    let job = t
        .run(json!({"component": COMPONENT, "configData": {
            "parameters": {"sleep": 30},
            "runtime": {"process_timeout": 1},
        }}))
        .await;
    assert_eq!(job["status"], "error", "{job:#}");
    assert_eq!(
        job["result"]["message"],
        format!(
            "Running {FIXTURE_IMAGE}:{FIXTURE_TAG} container exceeded the timeout of 1 seconds."
        )
    );
}
