%% @doc Top supervisor. Mnesia (its own application) and inets' httpd
%% (under inets) supervise themselves; crud only owns what is here.
-module(crud_sup).

-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, []}}.
