//! A `unibeam dashboard` of a test's own, on a free loopback port, in the
//! test's state directory; stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Dashboard {
    child: Child,
    /// `http://127.0.0.1:PORT/?token=TOKEN`, as it printed it.
    pub url: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub token: String,
}

impl Dashboard {
    /// Starts one with `XDG_STATE_HOME=state_home` (and `env`), listening
    /// on 127.0.0.1 on any free port; waits for it to print its URL.
    pub fn start(state_home: &Path, env: &[(&str, &str)]) -> Dashboard {
        let mut child = Command::new(crate::unibeam())
            .args(["dashboard", "--listen", "127.0.0.1:0"])
            .env("XDG_STATE_HOME", state_home)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unibeam dashboard starts");
        let mut first = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first).unwrap();
        // The rest goes to the test's output.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("dashboard printed no URL: {first:?}"))
            .to_string();
        let (base, token) = url.split_once("/?token=").expect("URL with its token");
        Dashboard {
            base: base.to_string(),
            token: token.to_string(),
            url,
            child,
        }
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
    }

    /// `method path` with the token in the header (and `body` as JSON);
    /// the status and the body, whatever the status.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let request = Self::agent()
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        answer(match body {
            Some(b) => request.set("Content-Type", "application/json").send_string(b),
            None => request.call(),
        })
    }

    /// `method path` with no token at all.
    pub fn call_without_token(&self, method: &str, path: &str) -> (u16, String) {
        answer(
            Self::agent()
                .request(method, &format!("{}{path}", self.base))
                .call(),
        )
    }

    /// GET `path` as JSON, which must answer 200.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("no answer from the dashboard: {e}"),
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
