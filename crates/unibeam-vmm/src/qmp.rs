//! A blocking QMP connection on top of the `qapi` crate, with a timeout on
//! every wait.

use crate::qemu::PowerButton;
use qapi::qmp;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum QmpError {
    #[error("{path}: QMP socket did not accept a connection within {waited:?}")]
    Connect { path: PathBuf, waited: Duration },
    #[error("QMP {command}: {detail}")]
    Command { command: &'static str, detail: String },
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
                Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        waited: timeout,
                    })
                }
            }
        };
        let setup = |e: std::io::Error| QmpError::Command {
            command: "connect",
            detail: e.to_string(),
        };
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        let reader = BufReader::new(stream.try_clone().map_err(setup)?);
        let mut inner = qapi::Qmp::new(qapi::Stream::new(reader, stream));
        inner.handshake().map_err(|e| QmpError::Command {
            command: "qmp_capabilities",
            detail: e.to_string(),
        })?;
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
            .map_err(|e| QmpError::Command {
                command: "input-send-event",
                detail: e.to_string(),
            })
    }

    fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.inner
            .execute(&qmp::system_powerdown {})
            .map(drop)
            .map_err(|e| QmpError::Command {
                command: "system_powerdown",
                detail: e.to_string(),
            })
    }

    /// Asks QEMU to exit at once.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.inner
            .execute(&qmp::quit {})
            .map(drop)
            .map_err(|e| QmpError::Command {
                command: "quit",
                detail: e.to_string(),
            })
    }
}
