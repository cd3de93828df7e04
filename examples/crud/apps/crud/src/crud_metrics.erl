%% @doc Request counters (an OTP `counters' array in persistent_term: no
%% process owns them, every request process bumps them directly).
-module(crud_metrics).

-export([init/0, request/1, response/1, snapshot/0, prometheus/0]).

-define(KEY, {?MODULE, counters}).
-define(METHODS, ["GET", "POST", "PUT", "DELETE", "other"]).
-define(CLASSES, ["2xx", "3xx", "4xx", "5xx"]).

init() ->
    persistent_term:put({?MODULE, started}, erlang:monotonic_time(millisecond)),
    persistent_term:put(?KEY, counters:new(length(?METHODS) + length(?CLASSES), [write_concurrency])).

request(Method) ->
    counters:add(persistent_term:get(?KEY), index(method(Method), ?METHODS), 1).

response(Code) ->
    Class = integer_to_list(Code div 100) ++ "xx",
    case lists:member(Class, ?CLASSES) of
        true -> counters:add(persistent_term:get(?KEY), length(?METHODS) + index(Class, ?CLASSES), 1);
        false -> ok
    end.

%% A map for the JSON body of GET /metrics.
snapshot() ->
    C = persistent_term:get(?KEY),
    Methods = [{list_to_binary(M), counters:get(C, I)} || {I, M} <- numbered(?METHODS)],
    Classes = [{list_to_binary(K), counters:get(C, length(?METHODS) + I)} || {I, K} <- numbered(?CLASSES)],
    Started = persistent_term:get({?MODULE, started}),
    #{<<"requests">> => maps:from_list(Methods),
      <<"requests_total">> => lists:sum([N || {_, N} <- Methods]),
      <<"responses">> => maps:from_list(Classes),
      <<"items">> => crud_db:count(),
      <<"memory_bytes">> => erlang:memory(total),
      <<"processes">> => erlang:system_info(process_count),
      <<"uptime_seconds">> => (erlang:monotonic_time(millisecond) - Started) / 1000,
      <<"node">> => atom_to_binary(node())}.

%% The same figures in Prometheus' text format (GET /metrics?format=prometheus).
prometheus() ->
    #{<<"requests">> := Methods, <<"responses">> := Classes, <<"items">> := Items,
      <<"memory_bytes">> := Mem, <<"uptime_seconds">> := Up} = snapshot(),
    ["# TYPE crud_requests_total counter\n",
     [io_lib:format("crud_requests_total{method=\"~s\"} ~b~n", [M, N]) || {M, N} <- lists:sort(maps:to_list(Methods))],
     "# TYPE crud_responses_total counter\n",
     [io_lib:format("crud_responses_total{class=\"~s\"} ~b~n", [K, N]) || {K, N} <- lists:sort(maps:to_list(Classes))],
     "# TYPE crud_items gauge\n", io_lib:format("crud_items ~b~n", [Items]),
     "# TYPE crud_memory_bytes gauge\n", io_lib:format("crud_memory_bytes ~b~n", [Mem]),
     "# TYPE crud_uptime_seconds gauge\n", io_lib:format("crud_uptime_seconds ~.3f~n", [float(Up)])].

method(M) ->
    case lists:member(M, ?METHODS) of
        true -> M;
        false -> "other"
    end.

index(X, List) -> index(X, List, 1).
index(X, [X | _], I) -> I;
index(X, [_ | T], I) -> index(X, T, I + 1).

numbered(List) -> lists:zip(lists:seq(1, length(List)), List).
