%% @doc The pg scope first, then the counter that joins a group in it.
-module(cluster_sup).

-behaviour(supervisor).

-export([start_link/0]).
-export([init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    %% rest_for_one: if the scope dies the counter must rejoin a new one.
    SupFlags = #{strategy => rest_for_one,
                 intensity => 5,
                 period => 10},
    Children = [#{id => cluster_pg,
                  start => {pg, start_link, [cluster_counter:scope()]}},
                #{id => cluster_counter,
                  start => {cluster_counter, start_link, []}}],
    {ok, {SupFlags, Children}}.
