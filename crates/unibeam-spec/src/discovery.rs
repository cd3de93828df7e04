//! The guest's DNS discovery loop, as one `-eval` expression the BEAM runs
//! at boot: no code in the app, as with the static mesh keeper.
//!
//! Every `interval_s` it asks for the A records of the name, connects to
//! `<basename>@<ip>` for each new address, and disconnects nodes whose
//! address vanished. It says on the console when the name has no
//! addresses (and that it keeps asking), when the set changes, and every
//! nodeup/nodedown it sees.

use crate::bootspec::DnsDiscovery;

/// Letters, digits, '-', '_' and '.' only: the values go into Erlang
/// string literals, so nothing else may pass (the host checks them first;
/// this is the second line).
fn literal(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect()
}

impl DnsDiscovery {
    /// The expression `-eval` gets; one argv element, never via a shell.
    pub(crate) fn poller(&self) -> String {
        let name = literal(&self.name);
        let base = literal(&self.basename);
        let options = match self.nameserver {
            Some(ns) => {
                let [a, b, c, d] = ns.octets();
                format!("[{{nameservers, [{{{{{a},{b},{c},{d}}}, 53}}]}}]")
            }
            None => "[]".into(),
        };
        let secs = self.interval_s.max(1);
        format!(
            "spawn(fun() -> ok = net_kernel:monitor_nodes(true), \
             Say = fun(F, A) -> io:format(\"unibeam: discovery dns:{name}: \" ++ F ++ \"~n\", A) end, \
             Wait = fun W(Until) -> receive \
               {{nodeup, N}} -> Say(\"nodeup ~s\", [N]), W(Until); \
               {{nodedown, N}} -> Say(\"nodedown ~s\", [N]), W(Until) \
               after max(0, Until - erlang:monotonic_time(millisecond)) -> ok end end, \
             Poll = fun P(Known, Before) -> \
               Ips = lists:usort(inet_res:lookup(\"{name}\", in, a, {options}, 2000)), \
               Nodes = [list_to_atom(\"{base}@\" ++ inet:ntoa(Ip)) || Ip <- Ips] -- [node()], \
               case Ips of \
                 Before -> ok; \
                 [] -> Say(\"no A records; asking again every {secs} s\", []); \
                 _ -> Say(\"~b address(es): ~p\", [length(Ips), Nodes]) end, \
               [begin Say(\"~s left DNS; disconnecting\", [N]), erlang:disconnect_node(N) end \
                || N <- Known, not lists:member(N, Nodes)], \
               [net_kernel:connect_node(N) || N <- Nodes, not lists:member(N, nodes())], \
               Wait(erlang:monotonic_time(millisecond) + {ms}), \
               P(Nodes, Ips) end, \
             Poll([], none) end), ok",
            ms = u64::from(secs) * 1000,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poller_asks_the_given_server_and_names_nodes_by_address() {
        let d = DnsDiscovery {
            name: "web.mh.test".into(),
            basename: "web".into(),
            nameserver: Some("10.88.0.53".parse().unwrap()),
            interval_s: 2,
        };
        let e = d.poller();
        assert!(
            e.contains(
                r#"inet_res:lookup("web.mh.test", in, a, [{nameservers, [{{10,88,0,53}, 53}]}], 2000)"#
            ),
            "{e}"
        );
        assert!(e.contains(r#"list_to_atom("web@" ++ inet:ntoa(Ip))"#), "{e}");
        assert!(e.contains("+ 2000)"), "{e}");
        let hostile = DnsDiscovery {
            name: "x\"), os:cmd(\"rm".into(),
            ..d
        };
        assert!(
            !hostile.poller().contains("os:cmd(\""),
            "quotes never reach the expression"
        );
    }
}
