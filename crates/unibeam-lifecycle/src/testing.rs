//! Tests' shared fixtures: a store in a temporary directory with one
//! instance recorded in it.

use unibeam_vmm::state::{InstanceName, InstanceRecord, Restart, Status, Store};

/// A store holding instance `name` with `status` (no QEMU, no monitor);
/// the directory lives as long as the returned guard.
pub fn store_with(name: &str, status: Status) -> (tempfile::TempDir, Store, InstanceName) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store {
        root: dir.path().join("unibeam/instances"),
    };
    let name = InstanceName::parse(name).unwrap();
    store
        .create(&InstanceRecord {
            name: name.clone(),
            image: "/img".into(),
            release: "hello 0.1.0".into(),
            created: 1,
            started: None,
            ports: vec![],
            accel: "tcg".into(),
            restart: Restart::No,
            restarts: 0,
            status,
            qemu: None,
            monitor: None,
            cluster: None,
            dist: None,
            foreground: false,
        })
        .unwrap();
    (dir, store, name)
}
