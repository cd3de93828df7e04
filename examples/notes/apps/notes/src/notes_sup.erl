%% @doc Top supervisor: restarts the store if it ever dies.
-module(notes_sup).

-behaviour(supervisor).

-export([start_link/1, init/1]).

start_link(Dir) ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, Dir).

init(Dir) ->
    SupFlags = #{strategy => one_for_one, intensity => 5, period => 10},
    Store = #{id => notes_store,
              start => {notes_store, start_link, [Dir]},
              shutdown => 5000},
    {ok, {SupFlags, [Store]}}.
