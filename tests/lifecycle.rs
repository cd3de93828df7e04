//! The lifecycle library without the CLI: what the control plane will do.
//! Instances are created, stopped and removed, and a cluster brought up and
//! down, by calling `unibeam_lifecycle` directly. Only the detached monitor
//! is the `unibeam` binary (`UNIBEAM_EXE`), as it is for the CLI.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use unibeam_e2e::{free_port, http_200_within, shared_hello_image, unibeam};
use unibeam_lifecycle::instances::{self, Listed};
use unibeam_lifecycle::{down, logs, paths, up, vm::VmSpec, Quiet};
use unibeam_vmm::state::{Status, Store};

/// One state directory for this binary: the monitor finds the store
/// through `XDG_STATE_HOME`, which is the process's.
fn store() -> Store {
    static STATE: OnceLock<PathBuf> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::env::set_var("XDG_STATE_HOME", &dir);
        std::env::set_var("UNIBEAM_EXE", unibeam());
        dir
    });
    let store = paths::store().expect("a store");
    assert!(store.root.starts_with(state));
    store
}

fn names(store: &Store) -> Vec<String> {
    instances::list(store, true)
        .into_iter()
        .map(|l| match l {
            Listed::Instance(r) => r.name.to_string(),
            Listed::Broken { name, why } => panic!("{name} is broken: {why}"),
        })
        .collect()
}

fn wait_for_http(port: u16) -> String {
    http_200_within(port, "/", Duration::from_secs(120))
}

#[test]
fn an_instance_is_created_stopped_and_removed_through_the_library() {
    let store = store();
    let port = free_port();
    let mut spec = VmSpec::new(shared_hello_image());
    spec.instance.name = Some("lib-hello".into());
    spec.publish = vec![format!("{port}:8080").parse().unwrap()];
    let name = instances::create(&store, &spec, &Quiet).expect("create");
    assert_eq!(name.as_str(), "lib-hello");
    assert!(wait_for_http(port).contains("hello"), "hello answers");
    let record = instances::inspect(&store, &name).unwrap();
    assert_eq!(record["state"], "running", "{record}");
    assert!(names(&store).contains(&"lib-hello".to_string()));

    let err = instances::remove(&store, &name, false).unwrap_err().to_string();
    assert!(err.contains("is running"), "{err}");
    let stopped = instances::stop(&store, &name, Duration::from_secs(60)).expect("stop");
    assert_eq!(stopped.observed_status(), Status::Exited { code: 0 });
    let log = String::from_utf8(logs::read(&store, &name, Some(3)).unwrap()).unwrap();
    assert!(log.lines().count() <= 3 && !log.is_empty(), "{log}");
    assert!(logs::read(&store, &name, Some(0)).unwrap().is_empty());

    instances::remove(&store, &name, false).expect("remove");
    assert!(!store.dir(&name).exists());
    assert!(!names(&store).contains(&"lib-hello".to_string()));
}

#[test]
fn a_bad_setting_is_refused_before_anything_is_created() {
    let store = store();
    let mut spec = VmSpec::new(shared_hello_image());
    spec.instance.name = Some("lib-bad".into());
    spec.instance.node_name = Some("bad name".into());
    let err = instances::create(&store, &spec, &Quiet).unwrap_err().to_string();
    assert!(err.contains("--node-name \"bad name\""), "{err}");
    assert!(!names(&store).contains(&"lib-bad".to_string()));
}

fn cluster_file(dir: &Path, image: &Path, port: u16) -> PathBuf {
    let file = dir.join("unibeam.toml");
    std::fs::write(
        &file,
        format!(
            "[cluster]\nname = \"libc\"\n[services.web]\nimage = \"{}\"\nreplicas = 2\nports = [\"{port}:8080\"]\nrestart = \"no\"\n",
            image.display()
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_cluster_goes_up_and_down_through_the_library() {
    let store = store();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = cluster_file(dir.path(), shared_hello_image(), port);
    let compose = unibeam_cluster::load(&file).expect("the file loads");
    let build = unibeam_lifecycle::images::BuildSettings::default();
    let plan = up::up(&store, &compose, &build, Duration::from_secs(300), &Quiet).expect("up");
    let members: Vec<String> = plan.members.iter().map(|m| m.instance.to_string()).collect();
    assert_eq!(members, ["libc-web-1", "libc-web-2"]);
    for m in &plan.members {
        let record = store.load(&m.instance).unwrap();
        assert_eq!(record.cluster.as_deref(), Some("libc"));
        assert!(
            matches!(record.observed_status(), Status::Running),
            "{:?}",
            record.status
        );
    }
    assert!(wait_for_http(port + 1).contains("hello"), "replica 2 answers");
    // A replica is reachable over its distribution with the cluster's cookie.
    let node = unibeam_lifecycle::remote::rpc(
        &store,
        &plan.members[1].instance,
        unibeam_dist::Lang::Erlang,
        "node()",
        Duration::from_secs(30),
    )
    .expect("rpc on a replica");
    assert_eq!(node, format!("'{}'", plan.members[1].node));
    let again = up::up(&store, &compose, &build, Duration::from_secs(300), &Quiet);
    assert!(again.unwrap_err().to_string().contains("already up"));

    let removed = down::down(&store, "libc", Duration::from_secs(60), &Quiet).expect("down");
    assert_eq!(removed, 2);
    assert!(names(&store).iter().all(|n| !n.starts_with("libc-")));
    assert!(!unibeam_lifecycle::clusters::cluster_dir(&store, "libc").exists());
}
