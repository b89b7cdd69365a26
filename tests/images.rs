//! Images from registries, pulled for real: the engine pulls from the test registry
//! (`common::registry`) on 127.0.0.1; progress events, `result.images` digests, digest pinning,
//! credentials, a failing and an unreachable registry, one pull shared by concurrent jobs, and
//! the start-up check of `jobq serve`.

mod common;

use common::binary::{self, Served};
use common::registry::{Mode, Registry, RegistryImage};
use common::{Options, TestDaemon};
use serde_json::{json, Value};

/// A repository name no other test (or run) uses, so each test removes only its own images.
fn repository(test: &str) -> String {
    format!("jobq-test/{test}-{:08x}", rand::random::<u32>())
}

/// A `[[components]]` entry pulling `host/repository:tag`, pinned to `digest` when given.
fn component(id: &str, host: &str, repository: &str, tag: &str, digest: Option<&str>) -> String {
    let digest = digest.map_or(String::new(), |d| format!(", digest = \"{d}\""));
    format!(
        "[[components]]\nid = \"{id}\"\nnetwork = \"none\"\n\
         definition = {{ type = \"registry\", uri = \"{host}/{repository}\", tag = \"{tag}\"{digest} }}\n"
    )
}

/// Events of the job that tell about pulls.
async fn pull_messages(t: &TestDaemon, id: &str) -> Vec<String> {
    t.messages(id)
        .await
        .into_iter()
        .filter(|m| m.contains("image \"") || m.starts_with("Digest "))
        .collect()
}

/// Runs a job of `component` and asserts it failed with an application error; its message.
async fn failed_pull(t: &TestDaemon, component: &str) -> (String, String) {
    let job = t
        .run(json!({"component": component, "configData": {"parameters": {}}}))
        .await;
    assert_eq!(job["status"], "error", "{job:#}");
    assert_eq!(job["result"]["error"]["type"], "application", "{job:#}");
    let message = job["result"]["message"].as_str().unwrap().to_string();
    (common::id(&job), message)
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_is_pulled_once_with_progress_and_its_digest_in_the_result() {
    let registry = Registry::start(Mode::Open).await;
    let host = registry.host();
    let repo = repository("pull");
    let image = RegistryImage::fixture(&repo).await;
    let digest = registry.push(&repo, "1.0", &image);
    let t = TestDaemon::start_with(
        Options::default(),
        "",
        &component("test.pulled", &host, &repo, "1.0", None),
    )
    .await;

    let job = t
        .run(json!({"component": "test.pulled", "configData": {"parameters": {}}}))
        .await;
    assert_eq!(job["status"], "success", "{job:#}");
    let id = common::id(&job);
    let reference = format!("{host}/{repo}:1.0");
    let messages = pull_messages(&t, &id).await;
    assert_eq!(
        messages.first().map(String::as_str),
        Some(format!("Pulling image \"{reference}\" from {host}.").as_str()),
        "{messages:#?}"
    );
    let progress: Vec<u32> = messages
        .iter()
        .filter_map(|m| m.strip_prefix(&format!("Pulling image \"{reference}\" ... ")))
        .map(|percent| percent.trim_end_matches('%').parse().unwrap())
        .collect();
    assert!(
        !progress.is_empty() && progress.len() <= 3,
        "a few progress events: {messages:#?}"
    );
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert!(
        progress.iter().all(|p| (25..=100).contains(p)),
        "{progress:?}"
    );
    let pulled = format!("Pulled image \"{reference}\" (digests: {host}/{repo}@{digest}).");
    assert_eq!(messages.last(), Some(&pulled), "{messages:#?}");
    assert_eq!(messages.len(), progress.len() + 2, "{messages:#?}");
    // As the platform prints it: without the registry host.
    assert_eq!(
        job["result"]["images"],
        json!([[{"id": format!("{repo}:1.0"), "digests": [format!("{repo}@{digest}")]}]])
    );
    let layer = format!("GET /v2/{repo}/blobs/{}", image.own_layer_digest());
    assert_eq!(registry.count(&layer), 1);

    // Present now and not pinned: the next job pulls nothing.
    let again = t
        .run(json!({"component": "test.pulled", "configData": {"parameters": {}}}))
        .await;
    assert_eq!(again["status"], "success", "{again:#}");
    assert_eq!(
        pull_messages(&t, &common::id(&again)).await,
        Vec::<String>::new()
    );
    assert_eq!(again["result"]["images"], job["result"]["images"]);
    assert_eq!(registry.count(&layer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pinned_digest_pulls_the_newer_image_pushed_under_the_same_tag() {
    let registry = Registry::start(Mode::Open).await;
    let host = registry.host();
    let repo = repository("digest");
    let first = RegistryImage::fixture(&format!("{repo} first")).await;
    let second = RegistryImage::fixture(&format!("{repo} second")).await;
    assert_ne!(first.manifest_digest(), second.manifest_digest());
    let first_digest = registry.push(&repo, "stable", &first);
    let tables = [
        component("test.unpinned", &host, &repo, "stable", None),
        component(
            "test.pinned",
            &host,
            &repo,
            "stable",
            Some(hex(&second.manifest_digest())),
        ),
    ]
    .concat();
    let t = TestDaemon::start_with(Options::default(), "", &tables).await;
    let run = |component: &str| json!({"component": component, "configData": {"parameters": {}}});

    let job = t.run(run("test.unpinned")).await;
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(
        job["result"]["images"][0][0]["digests"],
        json!([format!("{repo}@{first_digest}")])
    );

    let second_digest = registry.push(&repo, "stable", &second);
    // Without a digest the local image is used as it is.
    let unpinned = t.run(run("test.unpinned")).await;
    assert_eq!(
        pull_messages(&t, &common::id(&unpinned)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        unpinned["result"]["images"][0][0]["digests"],
        json!([format!("{repo}@{first_digest}")])
    );

    // The pinned digest is not among the local image's: the newer image is pulled.
    let pinned = t.run(run("test.pinned")).await;
    assert_eq!(pinned["status"], "success", "{pinned:#}");
    let messages = pull_messages(&t, &common::id(&pinned)).await;
    assert_eq!(
        messages[0],
        format!(
            "Digest \"{}\" for image \"{host}/{repo}:stable\" not found locally; pulling it.",
            hex(&second_digest)
        )
    );
    assert_eq!(
        pinned["result"]["images"][0][0]["digests"],
        json!([format!("{repo}@{second_digest}")])
    );
    assert_eq!(
        registry.count(&format!(
            "GET /v2/{repo}/blobs/{}",
            second.own_layer_digest()
        )),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_credentials_come_from_the_settings_and_stay_hidden() {
    let password = "s3cret-registry-password";
    let mode = Mode::Basic {
        username: "puller".into(),
        password: password.into(),
    };
    let right = Registry::start(mode.clone()).await;
    let wrong = Registry::start(mode).await;
    let repo = repository("auth");
    let image = RegistryImage::fixture(&repo).await;
    right.push(&repo, "1", &image);
    wrong.push(&repo, "1", &image);
    // The right credentials through a Docker client's config.json, the wrong ones inline.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("puller:{password}"),
    );
    let auths = json!({"auths": {format!("http://{}", right.host()): {"auth": auth}}});
    std::fs::write(&config, auths.to_string()).unwrap();
    let tables = format!(
        "{}{}[[registries]]\nhost = \"{}\"\ndocker_config = \"{}\"\n\
         [[registries]]\nhost = \"{}\"\nusername = \"puller\"\npassword = \"not-{password}\"\n",
        component("test.right", &right.host(), &repo, "1", None),
        component("test.wrong", &wrong.host(), &repo, "1", None),
        right.host(),
        config.display(),
        wrong.host(),
    );
    let t = TestDaemon::start_with(Options::default(), "", &tables).await;

    let (refused, message) = failed_pull(&t, "test.wrong").await;
    let reference = format!("{}/{repo}:1", wrong.host());
    assert!(
        message.starts_with(&format!("Cannot pull image \"{reference}\": ")),
        "{message}"
    );
    assert!(message.contains("unauthorized"), "{message}");

    let pulled = t
        .run(json!({"component": "test.right", "configData": {"parameters": {}}}))
        .await;
    assert_eq!(pulled["status"], "success", "{pulled:#}");
    let authorized = right
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /v2/") && r.contains("/blobs/"))
        .count();
    assert!(authorized >= 1, "{:?}", right.requests());

    for id in [refused, common::id(&pulled)] {
        let job = t.job(&id).await;
        assert!(!job.to_string().contains(password), "{job:#}");
        let events = t.events(&id).await;
        assert!(
            !Value::from(events.clone()).to_string().contains(password),
            "{events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_that_fails_or_cannot_be_reached_fails_the_job_naming_image_and_answer() {
    let failing = Registry::start(Mode::Failing).await;
    let repo = repository("failing");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = closed.local_addr().unwrap().to_string();
    drop(closed);
    let tables = [
        component("test.failing", &failing.host(), &repo, "1", None),
        component("test.unreachable", &unreachable, &repo, "1", None),
    ]
    .concat();
    let t = TestDaemon::start_with(Options::default(), "", &tables).await;

    let (_, message) = failed_pull(&t, "test.failing").await;
    let prefix = format!("Cannot pull image \"{}/{repo}:1\": ", failing.host());
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.contains("500 Internal Server Error"), "{message}");
    assert!(!failing.requests().is_empty());

    let (_, message) = failed_pull(&t, "test.unreachable").await;
    let prefix = format!(
        "Cannot pull image \"{unreachable}/{repo}:1\": the registry {unreachable} is unreachable: "
    );
    assert!(message.starts_with(&prefix), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_wait_for_registry_an_unreachable_registry_keeps_the_job_created() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = closed.local_addr().unwrap().to_string();
    drop(closed);
    let repo = repository("waiting");
    let t = TestDaemon::start_with(
        Options::default(),
        "wait_for_registry = true",
        &component("test.unreachable", &unreachable, &repo, "1", None),
    )
    .await;
    let job = t.create("test.unreachable", json!({})).await;
    let id = common::id(&job);
    let expected = format!(
        "Cannot pull image \"{unreachable}/{repo}:1\": the registry {unreachable} is unreachable: "
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let waits = "The job stays created and tries again (wait_for_registry).";
    while !t.messages(&id).await.iter().any(|m| m.ends_with(waits)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            t.messages(&id).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // It went on trying for a while (`processing` only during each try): not finished, back
    // in created, told once.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let job = t.wait_status(&id, "created").await;
    assert_eq!(job["isFinished"], false, "{job:#}");
    let told: Vec<String> = t
        .messages(&id)
        .await
        .into_iter()
        .filter(|m| m.starts_with(&expected))
        .collect();
    assert_eq!(told.len(), 1, "{told:#?}");
    assert!(t.kill(&id).await.status < 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_jobs_needing_a_missing_image_share_one_pull() {
    let registry = Registry::start(Mode::Open).await;
    let repo = repository("shared");
    let image = RegistryImage::fixture(&repo).await;
    registry.push(&repo, "1", &image);
    let t = TestDaemon::start_with(
        Options::default(),
        "",
        &component("test.shared", &registry.host(), &repo, "1", None),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(common::id(&t.create("test.shared", json!({})).await));
    }
    for id in &ids {
        let job = t.wait_finished(id).await;
        assert_eq!(job["status"], "success", "{job:#}");
    }
    let layer = format!("GET /v2/{repo}/blobs/{}", image.own_layer_digest());
    assert_eq!(registry.count(&layer), 1, "{:#?}", registry.requests());
    let manifests = registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/manifests/"))
        .count();
    assert!(manifests <= 3, "{:#?}", registry.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_says_at_start_which_images_are_missing_and_how_they_are_obtained() {
    common::fixture_image(None).await;
    let registry = Registry::start(Mode::Open).await;
    let repo = repository("startup");
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default();
    let path = binary::settings_file(dir.path(), &options);
    let tables = format!(
        "{}[[components]]\nid = \"test.local-missing\"\nimage = \"local/jobq-test-missing\"\n\
         tag = \"{}\"\n[[registries]]\nhost = \"{}\"\nusername = \"u\"\npassword = \"pw-never-logged\"\n",
        component("test.remote", &registry.host(), &repo, "2", None),
        rand::random::<u32>(),
        registry.host(),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n{tables}")).unwrap();
    let log = dir.path().join("serve.log");
    let mut served = Served::start(&path, &log, &[]).expect("jobq serve starts");
    let remote = format!(
        "image missing from the Docker engine: it will be pulled from {} when a job needs it",
        registry.host()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(served.log().contains(&remote) && served.log().contains("test.local-missing")) {
        assert!(std::time::Instant::now() < deadline, "{}", served.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = served.log();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {text}"))
            .to_string()
    };
    let remote_line = line(&remote);
    assert!(remote_line.contains("WARN"), "{remote_line}");
    assert!(
        remote_line.contains(&format!("{}/{repo}:2", registry.host())),
        "{remote_line}"
    );
    let local_line = line("test.local-missing");
    assert!(local_line.contains("WARN"), "{local_line}");
    assert!(
        local_line.contains(
            "jobq cannot obtain it (a local image): its jobs will fail until it is built or loaded"
        ),
        "{local_line}"
    );
    // The registered fixture is there: no warning names it.
    assert!(
        !text.contains(&format!("image={}:", common::FIXTURE_IMAGE)),
        "{text}"
    );
    assert!(!text.contains("pw-never-logged"), "{text}");
    assert!(served.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_token_gives_the_component_the_job_token_and_url() {
    let tables = format!(
        "[[components]]\nid = \"test.token\"\nimage = \"{}\"\ntag = \"{}\"\nnetwork = \"none\"\n\
         forward_token = true\n",
        common::FIXTURE_IMAGE,
        common::FIXTURE_TAG
    );
    let t = TestDaemon::start_with(Options::default(), "", &tables).await;
    let forwarded = t
        .run(json!({"component": "test.token", "configData": {"parameters": {}}}))
        .await;
    assert_eq!(forwarded["status"], "success", "{forwarded:#}");
    let env = &t.echo(&common::id(&forwarded))["env"];
    assert_eq!(env["KBC_TOKEN"], common::TOKEN);
    let url = env["KBC_URL"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let plain = t
        .run(json!({"component": common::COMPONENT, "configData": {"parameters": {}}}))
        .await;
    let env = &t.echo(&common::id(&plain))["env"];
    assert_eq!(env.get("KBC_TOKEN"), None);
    assert_eq!(env.get("KBC_URL"), None);
}
