//! The Docker Swarm the swarm executor's tests run on: three nodes that come up `Ready` with the
//! fixture images and the shared folder, and leave nothing behind.

mod common;

use std::path::Path;

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use common::swarm::{Swarm, LABEL_SWARM, NODES};
use common::{FIXTURE_IMAGE, FIXTURE_TAG};
use futures_util::StreamExt;

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
    let label = format!("{LABEL_SWARM}={:x}", std::process::id());
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
    let host = bollard::Docker::connect_with_local_defaults().unwrap();
    let exec = ExecConfig {
        cmd: Some(vec!["cat".into(), path.display().to_string()]),
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
