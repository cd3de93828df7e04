%% @doc inets httpd callback: GET / shows the counter, GET or POST /incr
%% adds one to it, anything else is a 404.
-module(cluster_web).

-export([do/1]).

-include_lib("inets/include/httpd.hrl").

do(#mod{method = Method, request_uri = Uri}) ->
    case {Method, path(Uri)} of
        {"GET", "/"} ->
            json(cluster_counter:view());
        {"GET", "/incr"} ->
            json(cluster_counter:incr());
        {"POST", "/incr"} ->
            json(cluster_counter:incr());
        _ ->
            reply(404, "text/plain", "not found\n")
    end.

path(Uri) ->
    hd(string:split(Uri, "?")).

%% {"node":"a@10.0.0.2","nodes":["b@10.0.0.3"],"counter":5}
json({Node, Nodes, Counter}) ->
    Body = ["{\"node\":", string(Node),
            ",\"nodes\":[", lists:join(",", [string(N) || N <- Nodes]), "]",
            ",\"counter\":", integer_to_list(Counter), "}"],
    reply(200, "application/json", Body).

string(Atom) ->
    [$", [escape(C) || C <- atom_to_list(Atom)], $"].

escape($") -> "\\\"";
escape($\\) -> "\\\\";
escape(C) when C < 16#20 -> io_lib:format("\\u~4.16.0b", [C]);
escape(C) -> C.

reply(Code, Type, Body) ->
    Bin = unicode:characters_to_binary(Body),
    Head = [{code, Code},
            {content_type, Type},
            {content_length, integer_to_list(byte_size(Bin))}],
    {break, [{response, {response, Head, [Bin]}}]}.
