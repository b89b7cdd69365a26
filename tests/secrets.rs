//! `POST /encrypt` as a client sees it, and its ciphertexts checked with the daemon's key file.
//! No Docker engine needed.

mod common;

use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use common::{assert_error, Options, TestDaemon, COMPONENT, SMALL_COMPONENT};
use hyper::Method;
use jobq::cli::client::Answer;
use jobq::secrets::{Scope, Secrets, KEY_FILE};
use serde_json::{json, Value};

const PROJECT: &str = "123";

impl TestDaemon {
    async fn encrypt(&self, query: &str, content_type: &str, body: &str) -> Answer {
        self.send(
            Method::POST,
            &format!("/encrypt{query}"),
            content_type,
            body,
        )
        .await
    }

    /// The daemon's key, read from its data dir as a second process would.
    fn secrets(&self) -> Secrets {
        Secrets::open(self.data_dir.path(), None).expect("the daemon made its key file")
    }
}

fn text(answer: &Answer) -> String {
    String::from_utf8(answer.body.to_vec()).expect("a UTF-8 answer")
}

#[tokio::test]
async fn plain_text_is_encrypted_for_the_scope_the_parameters_choose() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let secrets = t.secrets();
    let config = Scope::Config {
        component: COMPONENT.into(),
        project: PROJECT.into(),
        config: "daily".into(),
    };
    let project = Scope::Project {
        component: COMPONENT.into(),
        project: PROJECT.into(),
    };
    let component = Scope::Component {
        component: COMPONENT.into(),
    };
    let project_wide = Scope::ProjectWide {
        project: PROJECT.into(),
    };
    let cases = [
        (
            format!("?componentId={COMPONENT}&projectId={PROJECT}&configId=daily"),
            "KBC::ConfigSecure::",
            config,
        ),
        (
            format!("?componentId={COMPONENT}&projectId={PROJECT}&configId="),
            "KBC::ProjectSecure::",
            project,
        ),
        (
            format!("?componentId={COMPONENT}"),
            "KBC::ComponentSecure::",
            component,
        ),
        (
            format!("?projectId={PROJECT}"),
            "KBC::ProjectWideSecure::",
            project_wide,
        ),
    ];
    for (query, prefix, scope) in cases {
        let answer = t.encrypt(&query, "text/plain", "pa55-word").await;
        assert_eq!(answer.status, 200, "{query}: {}", text(&answer));
        assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
        let sealed = text(&answer);
        assert!(sealed.starts_with(prefix), "{query}: {sealed}");
        assert!(!sealed.contains("pa55-word"));
        assert_eq!(
            secrets.decrypt_value("#p", &sealed, &scope).unwrap(),
            "pa55-word"
        );

        let again = text(&t.encrypt(&query, "text/plain", "pa55-word").await);
        assert_ne!(again, sealed, "a new nonce each time");
        assert_eq!(
            secrets.decrypt_value("#p", &again, &scope).unwrap(),
            "pa55-word"
        );
        let passed = t
            .encrypt(&query, "text/plain; charset=utf-8", &sealed)
            .await;
        assert_eq!(
            text(&passed),
            sealed,
            "an encrypted value passes through unchanged"
        );
    }
    let key_file = std::fs::metadata(t.data_dir.path().join(KEY_FILE)).unwrap();
    assert_eq!(key_file.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn json_bodies_keep_their_shape_with_every_hash_value_encrypted() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let query = format!("?componentId={COMPONENT}&projectId={PROJECT}");
    let already = text(&t.encrypt(&query, "text/plain", "kept-as-is").await);
    let body = json!({
        "parameters": {
            "user": "admin",
            "#password": "pa55-word",
            "#port": 5432,
            "#empty": "",
            "#already": already,
            "accounts": [{"#token": "t0ken-1", "name": "one"}]
        }
    });
    let answer = t
        .encrypt(&query, "application/json", &body.to_string())
        .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(answer.headers["content-type"], "application/json");
    let encrypted = answer.json();
    let sealed = |value: &Value| value.as_str().unwrap().to_string();
    let p = &encrypted["parameters"];
    for value in [&p["#password"], &p["#port"], &p["accounts"][0]["#token"]] {
        assert!(sealed(value).starts_with("KBC::ProjectSecure::"), "{value}");
    }
    let mut expected = body.clone();
    expected["parameters"]["#password"] = p["#password"].clone();
    expected["parameters"]["#port"] = p["#port"].clone();
    expected["parameters"]["accounts"][0]["#token"] = p["accounts"][0]["#token"].clone();
    assert_eq!(encrypted, expected, "only the # values changed");
    for secret in ["pa55-word", "5432", "t0ken-1"] {
        assert!(!text(&answer).contains(secret), "{secret} answered");
    }

    let mut decrypted = encrypted.clone();
    let mut found = Vec::new();
    let job = Scope::for_job(COMPONENT, PROJECT, Some("daily"));
    t.secrets()
        .decrypt_json(&mut decrypted, &job, &mut found)
        .unwrap();
    let mut plain = body;
    plain["parameters"]["#port"] = json!("5432");
    plain["parameters"]["#already"] = json!("kept-as-is");
    assert_eq!(decrypted, plain);

    let again = t
        .encrypt(&query, "application/json", &encrypted.to_string())
        .await;
    assert_eq!(again.json(), encrypted, "encrypted values pass through");
}

#[tokio::test]
async fn a_ciphertext_of_one_component_is_rejected_for_another() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let query = format!("?componentId={COMPONENT}&projectId={PROJECT}");
    let sealed = text(&t.encrypt(&query, "text/plain", "pa55-word").await);
    let mut config = json!({"parameters": {"#password": sealed}});
    let other = Scope::for_job(SMALL_COMPONENT, PROJECT, None);
    let error = t
        .secrets()
        .decrypt_json(&mut config, &other, &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "`parameters.#password` cannot be decrypted: its KBC::ProjectSecure:: value was not \
             encrypted for component {SMALL_COMPONENT} in project {PROJECT} (but for another \
             component, project or configuration, or with another key); encrypt it again with \
             POST /encrypt for component {SMALL_COMPONENT} in project {PROJECT}"
        )
    );
}

#[tokio::test]
async fn encrypt_needs_a_token() {
    let t = TestDaemon::start(Options::without_docker()).await;
    for (client, message) in t.clients_without_a_valid_token() {
        let answer = client
            .send(
                Method::POST,
                &format!("/encrypt?componentId={COMPONENT}"),
                &[("Content-Type", "text/plain")],
                Bytes::from("pa55-word"),
            )
            .await
            .unwrap();
        assert_error(&answer, 401, message, json!({}));
    }
}

#[tokio::test]
async fn bad_encrypt_requests_are_400_saying_what_to_send() {
    let t = TestDaemon::start(Options::without_docker()).await;
    let component = format!("?componentId={COMPONENT}");
    let cases = [
        (
            "".to_string(),
            "text/plain",
            "x",
            "Give the query parameters componentId, projectId or both (and configId): they \
             choose whom the value is encrypted for.",
        ),
        (
            "?componentId=&projectId=&configId=".to_string(),
            "text/plain",
            "x",
            "Give the query parameters componentId, projectId or both (and configId): they \
             choose whom the value is encrypted for.",
        ),
        (
            format!("?componentId={COMPONENT}&configId=daily"),
            "text/plain",
            "x",
            "Parameter configId needs componentId and projectId too: a configuration's values \
             are encrypted for all three.",
        ),
        (
            "?componentId=keboola.unknown".to_string(),
            "text/plain",
            "x",
            "Component \"keboola.unknown\" is not registered; give the componentId of one of \
             the [[components]] in the settings.",
        ),
        (
            "?projectId=9".to_string(),
            "text/plain",
            "x",
            "Project \"9\" is not this project; give projectId \"123\".",
        ),
        (
            component.clone(),
            "application/octet-stream",
            "x",
            "Send the value to encrypt as Content-Type text/plain, or a JSON object whose `#` \
             values are to be encrypted as Content-Type application/json.",
        ),
        (
            component.clone(),
            "application/json",
            "{\"#a\": ",
            "The request body is not valid JSON: EOF while parsing a value at line 1 column 7.",
        ),
    ];
    for (query, content_type, body, message) in cases {
        let answer = t.encrypt(&query, content_type, body).await;
        assert_error(&answer, 400, message, json!({}));
    }
    let get = t.get(&format!("/encrypt{component}")).await;
    assert_error(
        &get,
        405,
        "Method GET is not allowed on /encrypt.",
        json!({}),
    );
}
