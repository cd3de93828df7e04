//! Erlang terms as JSON, for figures read from a node: atoms and binaries
//! become strings, property lists and maps become objects.

use erl_dist::term::Term;
use serde_json::{Map, Value};

/// `term` as JSON. A list whose elements are all `{atom, Value}` pairs is
/// an object; other lists and tuples are arrays; pids, ports, references
/// and funs are their printed form.
pub fn to_json(term: &Term) -> Value {
    match term {
        Term::Atom(a) => match a.name.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "undefined" | "nil" => Value::Null,
            name => Value::String(name.to_string()),
        },
        Term::FixInteger(i) => Value::from(i.value),
        Term::BigInteger(b) => b
            .to_string()
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| b.to_string().parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(b.to_string())),
        Term::Float(f) => Value::from(f.value),
        Term::Binary(b) => Value::String(String::from_utf8_lossy(&b.bytes).into_owned()),
        Term::ByteList(l) => Value::Array(l.bytes.iter().map(|b| Value::from(*b)).collect()),
        Term::List(l) => list(&l.elements),
        Term::Tuple(t) => Value::Array(t.elements.iter().map(to_json).collect()),
        Term::Map(m) => Value::Object(
            m.map
                .iter()
                .map(|(k, v)| (key(k), to_json(v)))
                .collect::<Map<String, Value>>(),
        ),
        other => Value::String(other.to_string()),
    }
}

fn key(term: &Term) -> String {
    match term {
        Term::Atom(a) => a.name.clone(),
        Term::Binary(b) => String::from_utf8_lossy(&b.bytes).into_owned(),
        other => other.to_string(),
    }
}

fn list(elements: &[Term]) -> Value {
    let pairs: Option<Map<String, Value>> = elements
        .iter()
        .map(|e| match e {
            Term::Tuple(t) if t.elements.len() == 2 && matches!(t.elements[0], Term::Atom(_)) => {
                Some((key(&t.elements[0]), to_json(&t.elements[1])))
            }
            _ => None,
        })
        .collect();
    match pairs {
        Some(object) if !elements.is_empty() => Value::Object(object),
        _ => Value::Array(elements.iter().map(to_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erl_dist::term::{Atom, Binary, FixInteger, List, Tuple};

    fn pair(k: &str, v: Term) -> Term {
        Tuple::from(vec![Atom::from(k).into(), v]).into()
    }

    #[test]
    fn property_lists_become_objects_and_the_rest_arrays() {
        let term: Term = List::from(vec![
            pair("total", FixInteger::from(42).into()),
            pair("name", Binary::from(b"web".to_vec()).into()),
            pair("alive", Atom::from("true").into()),
            pair(
                "queue",
                List::from(vec![FixInteger::from(1).into(), FixInteger::from(2).into()]).into(),
            ),
        ])
        .into();
        assert_eq!(
            to_json(&term),
            serde_json::json!({"total": 42, "name": "web", "alive": true, "queue": [1, 2]})
        );
        assert_eq!(to_json(&List::nil().into()), serde_json::json!([]));
        assert_eq!(to_json(&Atom::from("undefined").into()), Value::Null);
    }
}
