//! A blocking QMP connection on top of the `qapi` crate, with a timeout on
//! every wait.

use crate::qemu::PowerButton;
use qapi::qmp;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum QmpError {
    /// The socket's last refusal is the source.
    #[error("{}: QMP socket did not accept a connection within {waited:?}", path.display())]
    Connect {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: io::Error,
    },
    /// The socket's error, or QEMU's answer to `command`, is the source.
    #[error("QMP {command}")]
    Command {
        command: &'static str,
        #[source]
        source: io::Error,
    },
}

impl QmpError {
    /// `command` failed: on the socket, or QEMU refused it.
    fn command(command: &'static str) -> impl FnOnce(qapi::ExecuteError) -> QmpError {
        move |e| QmpError::Command {
            command,
            // Not the ExecuteError itself, which shows its source's text as
            // its own: a chain would print it twice.
            source: match e {
                qapi::ExecuteError::Io(e) => e,
                qapi::ExecuteError::Qapi(e) => e.into(),
            },
        }
    }
}

type Stream = qapi::Stream<BufReader<UnixStream>, UnixStream>;

pub struct Qmp {
    inner: qapi::Qmp<Stream>,
}

impl Qmp {
    /// Connects, retrying while QEMU creates the socket, and negotiates
    /// capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                // Short: a restore waits on this, and every 20 ms showed
                // in a warm start of under half a second.
                Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        waited: timeout,
                        source,
                    })
                }
            }
        };
        let setup = |source| QmpError::Command {
            command: "connect",
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        let reader = BufReader::new(stream.try_clone().map_err(setup)?);
        let mut inner = qapi::Qmp::new(qapi::Stream::new(reader, stream));
        inner.handshake().map_err(QmpError::command("qmp_capabilities"))?;
        Ok(Qmp { inner })
    }

    /// Presses the guest's power button; the guest decides how to stop.
    pub fn press_power_button(&mut self, button: PowerButton) -> Result<(), QmpError> {
        match button {
            PowerButton::Acpi => self.system_powerdown(),
            PowerButton::VirtioKey => self.press_power_key(),
        }
    }

    /// A press and a release of the power key of the virtio keyboard
    /// [`crate::qemu::POWER_KEY_DEVICE`].
    fn press_power_key(&mut self) -> Result<(), QmpError> {
        let key = |down| {
            qmp::InputEvent::key(qmp::InputKeyEventWrapper {
                data: qmp::InputKeyEvent {
                    down,
                    key: qmp::KeyValue::qcode(qmp::QKeyCodeWrapper {
                        data: qmp::QKeyCode::power,
                    }),
                },
            })
        };
        // Naming the device fails without a display ("not bound to a
        // QemuConsole"); unnamed, the event goes to the active keyboard,
        // and the virtio keyboard activates itself once its driver binds.
        let command = qmp::input_send_event {
            device: None,
            head: None,
            events: vec![key(true), key(false)],
        };
        self.inner
            .execute(&command)
            .map(drop)
            .map_err(QmpError::command("input-send-event"))
    }

    fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.inner
            .execute(&qmp::system_powerdown {})
            .map(drop)
            .map_err(QmpError::command("system_powerdown"))
    }

    /// Pauses the guest's vCPUs (and with them its clocks).
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.inner
            .execute(&qmp::stop {})
            .map(drop)
            .map_err(QmpError::command("stop"))
    }

    /// Lets a paused guest run again.
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.inner
            .execute(&qmp::cont {})
            .map(drop)
            .map_err(QmpError::command("cont"))
    }

    /// Whether the guest is paused with its state whole: after `stop`, or
    /// once an incoming migration has loaded (QEMU keeps a guest saved
    /// while paused paused).
    pub fn paused(&mut self) -> Result<bool, QmpError> {
        let status = self
            .inner
            .execute(&qmp::query_status {})
            .map_err(QmpError::command("query-status"))?;
        Ok(matches!(status.status, qmp::RunState::paused))
    }

    /// Saves the guest's state to `uri` (QEMU's `exec:` migration) and
    /// waits until it is written whole, or fails. The bandwidth cap is
    /// lifted: QEMU's default paces a save for a network, not a pipe.
    pub fn save(&mut self, uri: &str, timeout: Duration) -> Result<(), QmpError> {
        let unlimited = qmp::MigrateSetParameters {
            max_bandwidth: Some(u64::from(u32::MAX)),
            ..Default::default()
        };
        self.inner
            .execute(&qmp::migrate_set_parameters(unlimited))
            .map_err(QmpError::command("migrate-set-parameters"))?;
        let migrate = qmp::migrate {
            uri: Some(uri.to_string()),
            channels: None,
            detach: None,
            resume: None,
        };
        self.inner
            .execute(&migrate)
            .map_err(QmpError::command("migrate"))?;
        let start = Instant::now();
        loop {
            let info = self
                .inner
                .execute(&qmp::query_migrate {})
                .map_err(QmpError::command("query-migrate"))?;
            match info.status {
                Some(qmp::MigrationStatus::completed) => return Ok(()),
                Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                    let why = info.error_desc.unwrap_or_else(|| "QEMU gave no reason".into());
                    return Err(QmpError::Command {
                        command: "migrate",
                        source: io::Error::other(why),
                    });
                }
                _ if start.elapsed() > timeout => {
                    return Err(QmpError::Command {
                        command: "migrate",
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("not done after {timeout:?}"),
                        ),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Whether a save leaves out guest RAM that lives in a shared file
    /// (QEMU's `x-ignore-shared`), and a load expects it left out: set on
    /// both ends of a `run --snapshot` save, whose RAM is kept as a file
    /// (ramfile.rs), and cleared for `suspend`, whose stream holds it all.
    pub fn ignore_shared_ram(&mut self, on: bool) -> Result<(), QmpError> {
        let capability = qmp::MigrationCapabilityStatus {
            capability: qmp::MigrationCapability::x_ignore_shared,
            state: on,
        };
        self.inner
            .execute(&qmp::migrate_set_capabilities {
                capabilities: vec![capability],
            })
            .map(drop)
            .map_err(QmpError::command("migrate-set-capabilities"))
    }

    /// Starts loading a state from `uri` into a QEMU started with
    /// `-incoming defer`.
    pub fn load(&mut self, uri: &str) -> Result<(), QmpError> {
        let command = qmp::migrate_incoming {
            uri: Some(uri.to_string()),
            channels: None,
            exit_on_error: None,
        };
        self.inner
            .execute(&command)
            .map(drop)
            .map_err(QmpError::command("migrate-incoming"))
    }

    /// Presses and releases `key` on the guest's keyboard: how the host
    /// tells init that the guest was saved or restored (see
    /// `unibeam_spec::snapshot_keys`).
    pub fn press(&mut self, key: qmp::QKeyCode) -> Result<(), QmpError> {
        let command = qmp::send_key {
            keys: vec![qmp::KeyValue::qcode(qmp::QKeyCodeWrapper { data: key })],
            hold_time: None,
        };
        self.inner
            .execute(&command)
            .map(drop)
            .map_err(QmpError::command("send-key"))
    }

    /// Asks QEMU to exit at once.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.inner
            .execute(&qmp::quit {})
            .map(drop)
            .map_err(QmpError::command("quit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_socket_nobody_listens_on_is_named_with_the_os_error_as_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let err = Qmp::connect(&path, Duration::from_millis(50))
            .err()
            .expect("no QEMU");
        let shown = err.to_string();
        assert!(
            shown.contains("qmp.sock") && shown.contains("did not accept"),
            "{shown}"
        );
        let cause = err.source().expect("the last refusal is the source").to_string();
        assert!(cause.contains("No such file"), "{cause}");
        assert!(!shown.contains(&cause), "the cause is not repeated: {shown}");
    }

    #[test]
    fn qemus_refusal_is_the_source_once() {
        let refused = qapi::ExecuteError::Qapi(qapi::Error {
            class: qapi::ErrorClass::GenericError,
            desc: "not bound to a QemuConsole".into(),
            id: None,
        });
        let err = QmpError::command("input-send-event")(refused);
        assert_eq!(err.to_string(), "QMP input-send-event");
        assert_eq!(
            crate::error_chain(&err),
            "QMP input-send-event: not bound to a QemuConsole"
        );
    }
}
