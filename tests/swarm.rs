//! The Docker Swarm the swarm executor's tests run on: three nodes that come up `Ready` with the
//! fixture images and the shared folder, and leave nothing behind.

mod common;

use std::path::Path;

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use common::binary::Served;
use common::receivers::TestCa;
use common::registry::{Mode, Registry, RegistryImage};
use common::shell::SHELL_IMAGE;
use common::swarm::{services_of_instance, Extras, Swarm, LABEL_SWARM, NODES};
use common::{id, scenarios, Options, TestDaemon, COMPONENT, FIXTURE_IMAGE, FIXTURE_TAG};
use futures_util::StreamExt;
use jobq::settings::SwarmTls;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_comes_up_with_three_ready_nodes_and_goes_without_a_trace() {
    let swarm = Swarm::start().await;
    let mut ready = swarm.ready_nodes().await;
    ready.sort();
    assert_eq!(ready, ["node0", "node1", "node2"]);
    let manager = swarm.engine(0).inspect_swarm().await.unwrap();
    assert!(manager.id.is_some(), "{manager:?}");
    let marker = swarm.shared().join("seen-by-every-node");
    std::fs::write(&marker, "shared").unwrap();
    for index in 0..NODES {
        let engine = swarm.engine(index);
        let image = engine
            .inspect_image(&format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}"))
            .await;
        assert!(
            image.is_ok(),
            "node{index} lacks the fixture image: {image:?}"
        );
        let info = engine.info().await.unwrap();
        let state = info.swarm.and_then(|swarm| swarm.local_node_state);
        assert_eq!(state.map(|state| state.to_string()), Some("active".into()));
        let seen = node_reads(&swarm.nodes()[index].name, &marker).await;
        assert_eq!(seen, "shared", "node{index} does not see the shared folder");
    }
    let label = format!("{LABEL_SWARM}={}", swarm.id());
    drop(swarm);
    assert!(!marker.exists());
    let host = bollard::Docker::connect_with_local_defaults().unwrap();
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let containers = host
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert_eq!(containers.len(), 0, "{containers:?}");
    let networks = host
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert_eq!(networks.len(), 0, "{networks:?}");
}

/// What the node container `node` reads at `path` (`cat` run in the node itself).
async fn node_reads(node: &str, path: &Path) -> String {
    node_runs(node, &["cat", &path.display().to_string()]).await
}

/// What `command` prints, run in the node container `node` itself.
async fn node_runs(node: &str, command: &[&str]) -> String {
    let host = bollard::Docker::connect_with_local_defaults().unwrap();
    let exec = ExecConfig {
        cmd: Some(command.iter().map(|word| word.to_string()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = host.create_exec(node, exec).await.unwrap();
    let StartExecResults::Attached { mut output, .. } =
        host.start_exec(&exec.id, None).await.unwrap()
    else {
        panic!("the exec in {node} did not attach");
    };
    let mut read = Vec::new();
    while let Some(chunk) = output.next().await {
        match chunk.unwrap() {
            LogOutput::StdOut { message } | LogOutput::StdErr { message } => {
                read.extend_from_slice(&message)
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// A daemon whose jobs run as services of `swarm`.
async fn daemon_on(swarm: &Swarm) -> TestDaemon {
    daemon_with(swarm, "").await
}

/// A daemon whose jobs run as services of `swarm`, with `tables` (`[[components]]` entries)
/// after the harness's settings.
async fn daemon_with(swarm: &Swarm, tables: &str) -> TestDaemon {
    TestDaemon::start_with(on_swarm(swarm), "", tables).await
}

/// The options of a daemon on `swarm`.
fn on_swarm(swarm: &Swarm) -> Options {
    Options {
        docker: common::Docker::Swarm {
            manager: swarm.manager(),
            tls: None,
            shared: swarm.shared(),
        },
        max_concurrent_jobs: 8,
        ..Options::default()
    }
}

/// The scenarios the local tests run too (tests/run_jobs.rs), on one swarm: first those that
/// keep the daemon running, at the same time, then those that restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_keeps_its_promises_on_a_swarm() {
    let swarm = Swarm::start().await;
    let mut t = daemon_on(&swarm).await;
    scenarios::every_ending(&t).await;
    scenarios::reattach_after_a_restart_keeps_every_line_once(&mut t).await;
    scenarios::timeout_after_a_restart_counts_from_the_start(&mut t).await;
    scenarios::a_unit_no_job_owns_is_removed_at_start(&mut t).await;
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_jobs_spread_over_the_three_nodes() {
    let swarm = Swarm::start().await;
    let t = daemon_on(&swarm).await;
    let nodes: std::collections::BTreeSet<String> =
        nodes_of_jobs(&t, COMPONENT, 30).await.into_iter().collect();
    let expected: std::collections::BTreeSet<String> =
        (0..NODES).map(|index| format!("node{index}")).collect();
    assert_eq!(nodes, expected);
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}

/// Runs `count` jobs of `component` (the fixture) at once that print their container's host
/// name, which is its node's: the node of each job, once all succeeded.
async fn nodes_of_jobs(t: &TestDaemon, component: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let parameters = json!({"read_files": ["/etc/hostname"], "sleep": 0.5});
        ids.push(id(&t.create(component, parameters).await));
    }
    let mut nodes = Vec::new();
    for job_id in &ids {
        let job = t.wait_finished(job_id).await;
        assert_eq!(job["status"], "success", "{job}");
        let messages = t.messages(job_id).await;
        let read = messages
            .iter()
            .find_map(|m| m.strip_prefix("read /etc/hostname: "))
            .unwrap_or_else(|| panic!("job {job_id} did not print its host name: {messages:?}"));
        let hostname: String = serde_json::from_str(read).expect("a JSON string");
        nodes.push(hostname.trim().to_string());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_task_and_a_lost_worker_end_their_jobs_naming_the_node() {
    let swarm = Swarm::start().await;
    // Jobs run on the workers only, so a worker can be stopped without the manager.
    swarm.drain(0).await;
    // An image the manager has (so the job starts) and no worker has.
    swarm
        .engine(0)
        .tag_image(
            &format!("{FIXTURE_IMAGE}:{FIXTURE_TAG}"),
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::default()
                    .repo("local/jobq-manager-only")
                    .tag("1")
                    .build(),
            ),
        )
        .await
        .unwrap();
    let t = daemon_with(
        &swarm,
        "[[components]]\nid = \"keboola.manager-only\"\nimage = \"local/jobq-manager-only\"\n\
         tag = \"1\"\nnetwork = \"none\"\n",
    )
    .await;
    let rejected = id(&t.create("keboola.manager-only", json!({})).await);
    let job = t.wait_finished(&rejected).await;
    assert_eq!(job["status"], "error", "{job}");
    let message = job["result"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The swarm node node1 rejected")
            || message.starts_with("The swarm node node2 rejected"),
        "{message}"
    );
    assert!(message.contains("local/jobq-manager-only"), "{message}");

    let lost = id(&t
        .create(
            COMPONENT,
            json!({"print": ["up"], "read_files": ["/etc/hostname"], "sleep": 120}),
        )
        .await);
    let node = loop {
        let messages = t.messages(&lost).await;
        if let Some(read) = messages
            .iter()
            .find(|m| m.starts_with("read /etc/hostname"))
        {
            break if read.contains("node1") { 1 } else { 2 };
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    swarm.stop_node(node).await;
    let job = t.wait_finished(&lost).await;
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["result"]["error"]["type"], "application");
    let message = job["result"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "The swarm node node{node} running the job was lost"
        )),
        "{message}"
    );
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}

/// The manager stops while a job runs on a worker: a new job stays `created` (the executor does
/// not answer, as `/status` says), the daemon restarted meanwhile re-attaches to the running
/// job once the manager is back, and both jobs succeed with all their lines, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_manager_is_away_jobs_stay_created_and_running_ones_are_reattached() {
    let swarm = Swarm::start().await;
    // Jobs run on the workers only, so the manager can stop while one runs.
    swarm.drain(0).await;
    let mut t = daemon_on(&swarm).await;
    let running = id(&t
        .create(
            COMPONENT,
            json!({"print": ["before the outage"], "sleep": 20,
                   "print_after_sleep": ["after the outage"], "append_run_id_to": "/tmp/ran.txt"}),
        )
        .await);
    t.wait_for_message(&running, "before the outage").await;
    swarm.stop_node(0).await;

    let waiting = id(&t.create(COMPONENT, json!({"print": ["ran"]})).await);
    let status = t.get("/status").await.json();
    assert_eq!(status["engine"], json!({"up": false}), "{status}");
    t.restart();
    let status = t.get("/status").await.json();
    assert_eq!(status["engine"], json!({"up": false}), "{status}");
    // A few passes of the scheduler.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let job = t.job(&waiting).await;
    assert_eq!(job["status"], "created", "{job:#}");
    assert_eq!(t.messages(&waiting).await, Vec::<String>::new());
    assert_eq!(t.job(&running).await["status"], "processing");

    swarm.restart_node(0).await;
    let job = t.wait_finished(&waiting).await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert!(t.messages(&waiting).await.contains(&"ran".to_string()));
    let job = t.wait_finished(&running).await;
    let messages = t.messages(&running).await;
    assert_eq!(job["status"], "success", "{job:#} {messages:?}");
    let lines: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains(" the outage"))
        .collect();
    assert_eq!(lines, ["before the outage", "after the outage"]);
    scenarios::assert_ran_once(&t, &running);
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}

/// PEM files of a client of the manager in `dir/<name>-*.pem`: `ca` (the CA jobq trusts the
/// manager's certificate by) and a client certificate `issuer` signed.
fn client_files(dir: &Path, name: &str, ca: &TestCa, issuer: &TestCa) -> SwarmTls {
    let (certificate, key) = issuer.issue("jobq");
    let write = |file: &str, pem: &str| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    SwarmTls {
        ca_file: write("ca.pem", &ca.ca_pem),
        cert_file: write("cert.pem", &certificate),
        key_file: write("key.pem", &key),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_manager_runs_jobs_over_mutual_tls_and_certificates_of_another_ca_keep_them_created()
{
    let ca = TestCa::new();
    let swarm = Swarm::start_with(Extras {
        tls: Some(&ca),
        ..Extras::default()
    })
    .await;
    let files = tempfile::tempdir_in(swarm.shared()).unwrap();
    let manager = swarm.tcp_manager();
    let options = |tls: SwarmTls| Options {
        docker: common::Docker::Swarm {
            manager: manager.clone(),
            tls: Some(tls),
            shared: swarm.shared(),
        },
        ..Options::default()
    };

    let t = TestDaemon::start(options(client_files(files.path(), "ours", &ca, &ca))).await;
    let job = id(&t
        .create(
            COMPONENT,
            json!({"print": ["over TLS"], "read_files": ["/etc/hostname"]}),
        )
        .await);
    let job = t.wait_finished(&job).await;
    assert_eq!(job["status"], "success", "{job}");
    let messages = t.messages(job["id"].as_str().unwrap()).await;
    assert!(messages.contains(&"over TLS".to_string()), "{messages:?}");
    // The test's own look at the manager, through its socket (`units` knows no TLS).
    let instance = t.daemon.as_ref().unwrap().instance_id();
    assert_eq!(services_of_instance(&swarm.manager(), instance).await, []);

    // A client certificate of another CA (the manager refuses it), or a CA that did not sign
    // the manager's certificate (jobq refuses that): jobs stay created, and the log says why,
    // naming the manager and the TLS problem.
    let stranger = TestCa::new();
    let cases = [
        (
            "foreign-client",
            &ca,
            &stranger,
            "received fatal alert: BadCertificate",
        ),
        (
            "foreign-ca",
            &stranger,
            &ca,
            "invalid peer certificate: UnknownIssuer",
        ),
    ];
    for (name, trusted, issuer, problem) in cases {
        let dir = tempfile::tempdir_in(swarm.shared()).unwrap();
        let refused = options(client_files(files.path(), name, trusted, issuer));
        let served = Served::fresh(dir.path(), &refused, "info").await;
        let job = id(&served.create(COMPONENT, json!({})).await);
        let told = format!(
            "jobs stay created until the engine answers error=the swarm manager at {manager} \
             does not answer over TLS; check that its engine listens there with --tlsverify, \
             that `swarm.ca_file` signed its certificate, and that it trusts the CA of \
             `swarm.cert_file`: "
        );
        let started = std::time::Instant::now();
        let line = loop {
            let log = served.log();
            if let Some(line) = log.lines().find(|line| line.contains(&told)) {
                break line.to_string();
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "{name}: no line of the log says why jobs stay created: {log}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert!(line.ends_with(problem), "{name}: {line}");
        assert_eq!(served.job(&job).await["status"], "created", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_pull_a_registry_image_with_the_credentials_of_the_settings() {
    let swarm = Swarm::start_with(Extras {
        pull: true,
        ..Extras::default()
    })
    .await;
    // Jobs run on the workers, which must pull the image themselves.
    swarm.drain(0).await;
    let password = "swarm-registry-password";
    let mode = Mode::Basic {
        username: "puller".into(),
        password: password.into(),
    };
    let right = Registry::start_on(mode.clone(), &swarm.gateway()).await;
    let wrong = Registry::start_on(mode, &swarm.gateway()).await;
    let repo = format!("jobq-test/swarm-{:08x}", rand::random::<u32>());
    let image = RegistryImage::fixture(&repo).await;
    let digest = right.push(&repo, "1", &image);
    wrong.push(&repo, "1", &image);
    let component = |id: &str, host: &str| {
        format!(
            "[[components]]\nid = \"{id}\"\nnetwork = \"none\"\n\
             definition = {{ type = \"registry\", uri = \"{host}/{repo}\", tag = \"1\" }}\n"
        )
    };
    let tables = format!(
        "{}{}[[registries]]\nhost = \"{}\"\nusername = \"puller\"\npassword = \"{password}\"\n\
         [[registries]]\nhost = \"{}\"\nusername = \"puller\"\npassword = \"not-{password}\"\n",
        component("test.right", &right.host()),
        component("test.wrong", &wrong.host()),
        right.host(),
        wrong.host(),
    );
    let t = daemon_with(&swarm, &tables).await;

    let pulled = id(&t
        .create("test.right", json!({"read_files": ["/etc/hostname"]}))
        .await);
    let job = t.wait_finished(&pulled).await;
    assert_eq!(job["status"], "success", "{job}");
    let messages = t.messages(&pulled).await;
    let worker = if messages.contains(&"read /etc/hostname: \"node1\\n\"".to_string()) {
        &swarm.nodes()[1]
    } else {
        assert!(
            messages.contains(&"read /etc/hostname: \"node2\\n\"".to_string()),
            "the job did not run on a worker: {messages:?}"
        );
        &swarm.nodes()[2]
    };
    // The manager pulled the image before the job started (as the Docker executor does), and
    // the worker pulled it again with the credentials the service carried (the registry
    // answers 401 to a request without them).
    let manifest = format!("GET /v2/{repo}/manifests/{digest}");
    let own_layer = format!("GET /v2/{repo}/blobs/{}", image.own_layer_digest());
    for node in [&swarm.nodes()[0], worker] {
        let answered = right.answered_to(node.address.parse().unwrap());
        for request in [&manifest, &own_layer] {
            assert!(
                answered.contains(&(request.clone(), 200)),
                "{} was not answered {request}: {answered:?}",
                node.name
            );
        }
    }

    let refused = id(&t.create("test.wrong", json!({})).await);
    let job = t.wait_finished(&refused).await;
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["result"]["error"]["type"], "application", "{job}");
    let message = job["result"]["message"].as_str().unwrap();
    let reference = format!("{}/{repo}:1", wrong.host());
    assert!(
        message.starts_with(&format!("Cannot pull image \"{reference}\": ")),
        "{message}"
    );
    assert!(message.contains("unauthorized"), "{message}");
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}

/// Starts a daemon on `swarm` keeping its data in `data_dir` with the probe image
/// `probe_image`, which must fail: the error's message and the services left in the swarm.
async fn failed_start(swarm: &Swarm, data_dir: &Path, probe_image: &str) -> (String, usize) {
    let text = common::settings(data_dir, &on_swarm(swarm)).replace(SHELL_IMAGE, probe_image);
    let settings = jobq::settings::Settings::parse(&text).unwrap();
    let started = tokio::task::spawn_blocking(move || jobq::daemon::Daemon::start(settings))
        .await
        .unwrap();
    let error = started.err().expect("the daemon does not start");
    let services = swarm
        .engine(0)
        .list_services(None::<bollard::query_parameters::ListServicesOptions>)
        .await
        .unwrap();
    (error.to_string(), services.len())
}

/// A data dir in the swarm's shared folder.
fn shared_data_dir(swarm: &Swarm) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("jobq-test-")
        .tempdir_in(swarm.shared())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_see_data_dir_stops_the_start_naming_it() {
    let swarm = Swarm::start_with(Extras {
        unshared_node: Some(2),
        ..Extras::default()
    })
    .await;
    let dir = shared_data_dir(&swarm);
    let (message, services) = failed_start(&swarm, dir.path(), SHELL_IMAGE).await;
    let data_dir = dir.path().display();
    assert_eq!(
        message,
        format!(
            "{PROBE_FAILED} {data_dir} (the same shared storage, NFS or similar, mounted at the \
             same path on every node) failed: node2 has no such path (invalid mount config for \
             type \"bind\": bind source path does not exist: {data_dir}/swarm-probe); \
             {PROBE_ADVICE}"
        )
    );
    assert_eq!(services, 0);
    assert!(!Path::new(&format!("{data_dir}/swarm-probe")).exists());

    // The path on node2's own disk: another folder, without the token.
    let node2 = &swarm.nodes()[2].name;
    node_runs(node2, &["mkdir", "-p", &format!("{data_dir}/swarm-probe")]).await;
    let (message, services) = failed_start(&swarm, dir.path(), SHELL_IMAGE).await;
    assert_eq!(
        message,
        format!(
            "{PROBE_FAILED} {data_dir} (the same shared storage, NFS or similar, mounted at the \
             same path on every node) failed: node2 finds no probe token there: its path is \
             another folder, not the shared storage, or the containers' user may not read it; \
             {PROBE_ADVICE}"
        )
    );
    assert_eq!(services, 0);
    assert!(!Path::new(&format!("{data_dir}/swarm-probe")).exists());
}

/// How a failed storage probe's message starts and ends.
const PROBE_FAILED: &str = "the check that every swarm node sees data_dir";
const PROBE_ADVICE: &str =
    "fix these nodes or drain them (`docker node update --availability drain <node>`)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_image_missing_on_nodes_stops_the_start_saying_to_load_it() {
    let swarm = Swarm::start().await;
    let manager_only = "local/jobq-manager-only-shell:1";
    let (repo, tag) = manager_only.split_once(':').unwrap();
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    swarm
        .engine(0)
        .tag_image(SHELL_IMAGE, Some(options))
        .await
        .unwrap();
    let dir = shared_data_dir(&swarm);
    let (message, services) = failed_start(&swarm, dir.path(), manager_only).await;
    let data_dir = dir.path().display();
    let lacks = |node: &str| {
        format!(
            "{node} lacks the probe image {manager_only}; load it on every node or set \
             `swarm.probe_image` to an image every node has (No such image: {manager_only})"
        )
    };
    assert_eq!(
        message,
        format!(
            "{PROBE_FAILED} {data_dir} (the same shared storage, NFS or similar, mounted at the \
             same path on every node) failed: {}; {}; {PROBE_ADVICE}",
            lacks("node1"),
            lacks("node2")
        )
    );
    assert_eq!(services, 0);
    assert!(!Path::new(&format!("{data_dir}/swarm-probe")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_component_runs_only_on_the_nodes_its_constraints_name() {
    let swarm = Swarm::start().await;
    swarm.label_node(2, "jobq", "true").await;
    let t = daemon_with(
        &swarm,
        &format!(
            "[[components]]\nid = \"keboola.ex-placed\"\nimage = \"{FIXTURE_IMAGE}\"\n\
             tag = \"{FIXTURE_TAG}\"\nnetwork = \"none\"\n\
             placement = [\"node.labels.jobq == true\"]\n"
        ),
    )
    .await;
    let nodes = nodes_of_jobs(&t, "keboola.ex-placed", 6).await;
    assert_eq!(nodes, ["node2"; 6]);
    assert_eq!(t.units().await, Vec::<(String, String)>::new());
}
