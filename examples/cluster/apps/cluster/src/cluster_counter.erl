%% @doc A grow-only counter (G-counter) shared by every node of the cluster.
%%
%% The state is a map node() => non-negative integer; the counter's value is
%% the sum of the map and two maps merge by taking the larger entry per node.
%% Each node runs one `cluster_counter' that joins the pg group `counter' in
%% the scope `cluster_pg'; that group is how a node finds its peers. The app
%% never connects nodes itself: whoever starts the nodes connects them.
%%
%% An increment bumps this node's entry and then pushes the whole map to
%% every member of the group (this node's included) with synchronous calls,
%% so when it returns every reachable node already answers the new value.
%% When a peer appears (a pg join, or a nodeup) the two nodes exchange maps,
%% so a node that restarts catches up with the others by itself.
-module(cluster_counter).

-behaviour(gen_server).

-export([start_link/0, scope/0, view/0, incr/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SCOPE, cluster_pg).
-define(GROUP, counter).
-define(CALL_TIMEOUT, 5000).

-type counts() :: #{node() => non_neg_integer()}.

%%% API

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

scope() ->
    ?SCOPE.

%% @doc This node, the other nodes with a counter, and the counter's value.
-spec view() -> {node(), [node()], non_neg_integer()}.
view() ->
    view(gen_server:call(?MODULE, get)).

%% @doc Adds one to the counter; returns once every member that answered
%% within 5 s has merged the new state.
-spec incr() -> {node(), [node()], non_neg_integer()}.
incr() ->
    Members = members(),
    %% Pull first: a node that has just restarted may not have caught up
    %% yet, and bumping a stale entry of its own would lose increments.
    Mine = gen_server:call(?MODULE, get),
    Theirs = merge_all(push(Members, Mine)),
    _ = gen_server:call(?MODULE, {merge, Theirs}),
    Bumped = gen_server:call(?MODULE, bump),
    Merged = merge_all([Bumped | push(Members, Bumped)]),
    view(gen_server:call(?MODULE, {merge, Merged})).

%%% gen_server

init([]) ->
    ok = pg:join(?SCOPE, ?GROUP, self()),
    ok = net_kernel:monitor_nodes(true),
    Monitor = monitor_group(),
    %% Nodes connected before we started (the platform connects them
    %% while the kernel boots) count as coming up now.
    [self() ! {nodeup, Node} || Node <- nodes()],
    {ok, #{counts => #{}, monitor => Monitor}}.

handle_call(get, _From, #{counts := Counts} = State) ->
    {reply, Counts, State};
handle_call({merge, Other}, _From, #{counts := Counts} = State) ->
    Merged = merge(Counts, Other),
    {reply, Merged, State#{counts := Merged}};
handle_call(bump, _From, #{counts := Counts} = State) ->
    Bumped = maps:update_with(node(), fun(N) -> N + 1 end, 1, Counts),
    {reply, Bumped, State#{counts := Bumped}};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

%% A peer sent its map: merge it and send the result back.
handle_cast({exchange, From, Other}, #{counts := Counts} = State) ->
    Merged = merge(Counts, Other),
    gen_server:cast(From, {merge, Merged}),
    {noreply, State#{counts := Merged}};
handle_cast({merge, Other}, #{counts := Counts} = State) ->
    {noreply, State#{counts := merge(Counts, Other)}};
handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({nodeup, Node}, State) ->
    io:format("cluster: nodeup ~s~n", [Node]),
    %% The peer's counter may not run yet; then the pg join covers it.
    exchange([{?MODULE, Node}], State),
    {noreply, State};
handle_info({nodedown, Node}, State) ->
    io:format("cluster: nodedown ~s~n", [Node]),
    {noreply, State};
handle_info({Ref, join, ?GROUP, Pids}, #{monitor := Ref} = State) ->
    exchange(remote(Pids), State),
    {noreply, State};
handle_info({Ref, leave, ?GROUP, _Pids}, #{monitor := Ref} = State) ->
    {noreply, State};
handle_info(_Info, State) ->
    {noreply, State}.

%%% Internals

%% pg:monitor/2 exists from OTP 25.1; without it nodeup alone triggers the
%% exchange.
monitor_group() ->
    _ = code:ensure_loaded(pg),
    case erlang:function_exported(pg, monitor, 2) of
        true ->
            {Ref, Pids} = pg:monitor(?SCOPE, ?GROUP),
            self() ! {Ref, join, ?GROUP, Pids},
            Ref;
        false ->
            undefined
    end.

exchange(Dests, #{counts := Counts}) ->
    [gen_server:cast(Dest, {exchange, self(), Counts}) || Dest <- Dests],
    ok.

remote(Pids) ->
    [Pid || Pid <- Pids, node(Pid) =/= node()].

%% Every counter in the group, this node's included.
members() ->
    lists:usort([whereis(?MODULE) | pg:get_members(?SCOPE, ?GROUP)]).

%% Sends {merge, Counts} to every pid at once and waits (5 s in all) for
%% the merged maps that come back; members that fail or time out are left
%% out.
-spec push([pid()], counts()) -> [counts()].
push(Pids, Counts) ->
    Deadline = erlang:monotonic_time(millisecond) + ?CALL_TIMEOUT,
    Requests = [gen_server:send_request(Pid, {merge, Counts}) || Pid <- Pids],
    lists:filtermap(
      fun(Request) ->
              Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
              case gen_server:receive_response(Request, Left) of
                  {reply, Merged} when is_map(Merged) -> {true, Merged};
                  _ -> false
              end
      end, Requests).

-spec merge(counts(), counts()) -> counts().
merge(A, B) ->
    maps:fold(fun(Node, N, Acc) ->
                      maps:update_with(Node, fun(M) -> max(M, N) end, N, Acc)
              end, A, B).

merge_all(Maps) ->
    lists:foldl(fun merge/2, #{}, Maps).

view(Counts) ->
    Nodes = lists:usort([node(Pid) || Pid <- pg:get_members(?SCOPE, ?GROUP)]),
    {node(), Nodes -- [node()], lists:sum(maps:values(Counts))}.
