//! A hidden connection to one node, and expressions evaluated on it.

use erl_dist::term::{Atom, Binary, FixInteger, List, Term};
use erl_rpc::{CallError, RpcClient, RpcClientHandle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DistError {
    #[error("cannot reach the node's distribution port 127.0.0.1:{port}")]
    Connect {
        port: u16,
        #[source]
        source: erl_rpc::ConnectError,
    },
    #[error("TLS to the node's distribution port 127.0.0.1:{port}")]
    Tls {
        port: u16,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("no answer from the node within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the node closed")]
    Closed(#[source] CallError),
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Raised(String),
    #[error("the node answered {what} with {term}, which unibeam cannot read")]
    Unexpected { what: &'static str, term: String },
}

/// Where a node's distribution listens on the host, and its cookie.
#[derive(Clone)]
pub struct Target {
    /// The host port published for the guest's distribution port, on
    /// 127.0.0.1 only.
    pub port: u16,
    pub cookie: String,
    /// Set when the node speaks TLS distribution.
    pub tls: Option<crate::tls::TlsClient>,
}

impl std::fmt::Debug for Target {
    // The cookie is a password: it never reaches a log or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The language of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Erlang,
    Elixir,
}

/// A hidden connection to a node. The node names us (`NAME_ME`), so
/// nothing on the host needs a node name of its own; the guest's name
/// comes back in the handshake.
pub struct Node {
    handle: RpcClientHandle,
    peer: String,
    timeout: Duration,
    /// Expressions already scanned and parsed on this node, by source. The
    /// monitor evaluates one expression every few seconds, and scanning
    /// and parsing it again each time cost an emulated guest more CPU than
    /// evaluating it.
    parsed: Mutex<HashMap<String, Term>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.handle.terminate();
    }
}

/// Runs `future`, or gives up after `limit`.
fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Result<T, DistError> {
    smol::block_on(smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    }))
    .ok_or(DistError::Timeout(limit))
}

impl Node {
    /// Connects to the node behind `target`; each later call may take
    /// `timeout`.
    pub fn connect(target: &Target, timeout: Duration) -> Result<Node, DistError> {
        // The server name's host is only where the TCP connection goes:
        // the distribution handshake never sends it.
        let port = match &target.tls {
            Some(tls) => {
                within(timeout, crate::tls::relay(target.port, tls))?.map_err(|source| DistError::Tls {
                    port: target.port,
                    source,
                })?
            }
            None => target.port,
        };
        let connecting = RpcClient::connect_with_port("unibeam@127.0.0.1", port, &target.cookie);
        let client = within(timeout, connecting)?.map_err(|source| DistError::Connect {
            port: target.port,
            source,
        })?;
        let peer = client.peer_ndoe().name.to_string();
        let handle = client.handle();
        std::thread::spawn(move || {
            // Ends when every handle is dropped or the connection closes.
            let _ = smol::block_on(client.run());
        });
        Ok(Node {
            handle,
            peer,
            timeout,
            parsed: Mutex::new(HashMap::new()),
        })
    }

    /// The node's name, as it knows itself.
    pub fn name(&self) -> &str {
        &self.peer
    }

    /// `module:function(args...)` on the node. An exception it raises is
    /// `Err(Raised)` with its text as the node formats it.
    pub fn call(&self, module: &str, function: &str, args: Vec<Term>) -> Result<Term, DistError> {
        let mut handle = self.handle.clone();
        let call = handle.call(Atom::from(module), Atom::from(function), List::from(args));
        match within(self.timeout, call)? {
            Ok(value) => Ok(value),
            Err(CallError::ErrorResponse { reason }) => {
                Err(DistError::Raised(self.describe_exception(reason)))
            }
            Err(e) => Err(DistError::Closed(e)),
        }
    }

    /// `erpc`'s `{Ref, Class, Reason[, Stack]}` as `class: reason`, on one
    /// line; an Elixir exception as `(Module) message`.
    fn describe_exception(&self, reason: Term) -> String {
        let (class, reason) = match reason {
            Term::Tuple(t) if t.elements.len() >= 3 => {
                let mut e = t.elements.into_iter().skip(1);
                let class = match e.next() {
                    Some(Term::Atom(a)) => Some(a.name),
                    other => other.map(|c| c.to_string()),
                };
                (class, e.next().unwrap_or(List::nil().into()))
            }
            other => (None, other),
        };
        let text = self
            .elixir_exception(&reason)
            .or_else(|| self.pretty(&reason).ok())
            .unwrap_or_else(|| reason.to_string());
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match class {
            Some(class) => format!("{class}: {text}"),
            None => text,
        }
    }

    /// `(RuntimeError) message` for an Elixir exception struct.
    fn elixir_exception(&self, reason: &Term) -> Option<String> {
        let Term::Map(map) = reason else { return None };
        let field = |name: &str| map.map.get(&Term::from(Atom::from(name)));
        let Some(Term::Atom(module)) = field("__struct__") else {
            return None;
        };
        field("__exception__")?;
        let message = self
            .call("Elixir.Exception", "message", vec![reason.clone()])
            .ok()?;
        let Term::Binary(message) = message else {
            return None;
        };
        let module = module.name.trim_start_matches("Elixir.");
        Some(format!("({module}) {}", String::from_utf8_lossy(&message.bytes)))
    }

    /// `term` as the node prints it (`~tp`).
    pub fn pretty(&self, term: &Term) -> Result<String, DistError> {
        let format = List::from(chars("~tp"));
        let args = List::from(vec![term.clone()]);
        let chardata = self.call("io_lib", "format", vec![format.into(), args.into()])?;
        self.text(chardata)
    }

    /// Chardata from the node as a Rust string.
    fn text(&self, chardata: Term) -> Result<String, DistError> {
        match self.call("unicode", "characters_to_binary", vec![chardata])? {
            Term::Binary(b) => Ok(String::from_utf8_lossy(&b.bytes).into_owned()),
            other => Err(DistError::Unexpected {
                what: "unicode:characters_to_binary/1",
                term: other.to_string(),
            }),
        }
    }

    /// Evaluates `expr` on the node; returns its value as the node prints it.
    pub fn eval(&self, lang: Lang, expr: &str) -> Result<String, DistError> {
        match lang {
            Lang::Erlang => {
                let value = self.eval_erlang(expr)?;
                self.pretty(&value)
            }
            Lang::Elixir => {
                let value = self.eval_elixir(expr)?;
                self.inspect_elixir(value)
            }
        }
    }

    /// The value of an Erlang expression (a final `.` is optional).
    pub fn eval_erlang(&self, expr: &str) -> Result<Term, DistError> {
        let exprs = self.parse_erlang(expr)?;
        let evaluated = self.call("erl_eval", "exprs", vec![exprs, List::nil().into()])?;
        match evaluated {
            Term::Tuple(mut t) if t.elements.len() == 3 => Ok(t.elements.swap_remove(1)),
            other => Err(DistError::Unexpected {
                what: "erl_eval:exprs/2",
                term: other.to_string(),
            }),
        }
    }

    /// `expr` as `erl_parse:parse_exprs/1` gives it, parsed by the node
    /// once per connection.
    fn parse_erlang(&self, expr: &str) -> Result<Term, DistError> {
        if let Some(exprs) = self.parsed_cache().get(expr) {
            return Ok(exprs.clone());
        }
        let mut source = expr.trim_end().to_string();
        if !source.ends_with('.') {
            source.push('.');
        }
        let scanned = self.call("erl_scan", "string", vec![List::from(chars(&source)).into()])?;
        let tokens = self.ok_value(scanned, 1, "erl_scan:string/1")?;
        let parsed = self.call("erl_parse", "parse_exprs", vec![tokens])?;
        let exprs = self.ok_value(parsed, 1, "erl_parse:parse_exprs/1")?;
        self.parsed_cache().insert(expr.to_string(), exprs.clone());
        Ok(exprs)
    }

    fn parsed_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Term>> {
        // A panic elsewhere leaves plain data behind.
        self.parsed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Element `at` of an `{ok, ...}` tuple; `{error, {Loc, Mod, Desc}, ...}`
    /// becomes a syntax error in the node's own words.
    fn ok_value(&self, term: Term, at: usize, what: &'static str) -> Result<Term, DistError> {
        let Term::Tuple(mut t) = term else {
            return Err(DistError::Unexpected {
                what,
                term: term.to_string(),
            });
        };
        match t.elements.first() {
            Some(Term::Atom(a)) if a.name == "ok" && t.elements.len() > at => Ok(t.elements.swap_remove(at)),
            Some(Term::Atom(a)) if a.name == "error" && t.elements.len() > 1 => {
                Err(DistError::Syntax(self.error_info(t.elements.swap_remove(1))))
            }
            _ => Err(DistError::Unexpected {
                what,
                term: Term::from(t).to_string(),
            }),
        }
    }

    /// `{Location, Module, Descriptor}` as `Module:format_error/1` says it.
    fn error_info(&self, info: Term) -> String {
        if let Term::Tuple(t) = &info {
            if let [location, Term::Atom(module), descriptor] = t.elements.as_slice() {
                let said = self
                    .call(&module.name, "format_error", vec![descriptor.clone()])
                    .and_then(|chardata| self.text(chardata));
                if let Ok(said) = said {
                    return format!("syntax error at {location}: {said}");
                }
            }
        }
        format!("syntax error: {info}")
    }

    /// The value of an Elixir expression (`Code.eval_string/1`).
    pub fn eval_elixir(&self, expr: &str) -> Result<Term, DistError> {
        let source = Binary::from(expr.as_bytes().to_vec());
        match self.call("Elixir.Code", "eval_string", vec![source.into()])? {
            Term::Tuple(mut t) if t.elements.len() == 2 => Ok(t.elements.swap_remove(0)),
            other => Err(DistError::Unexpected {
                what: "Code.eval_string/1",
                term: other.to_string(),
            }),
        }
    }

    fn inspect_elixir(&self, value: Term) -> Result<String, DistError> {
        match self.call("Elixir.Kernel", "inspect", vec![value])? {
            Term::Binary(b) => Ok(String::from_utf8_lossy(&b.bytes).into_owned()),
            other => Err(DistError::Unexpected {
                what: "Kernel.inspect/1",
                term: other.to_string(),
            }),
        }
    }
}

/// An Erlang string (a list of code points).
fn chars(text: &str) -> Vec<Term> {
    text.chars().map(|c| FixInteger::from(c as i32).into()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_debug_output_never_shows_the_cookie() {
        let target = Target {
            port: 4370,
            cookie: "s3cret-cookie".into(),
            tls: None,
        };
        let shown = format!("{target:?}");
        assert!(shown.contains("4370") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn strings_become_code_point_lists() {
        let list = chars("a\u{e9}");
        assert_eq!(list.len(), 2);
        assert_eq!(list[1], Term::from(FixInteger::from(0xe9)));
    }
}
