%% @doc The chat application: a supervision tree around one listener.
-module(chat_app).

-behaviour(application).

-export([start/2, stop/1]).

start(_StartType, _StartArgs) ->
    Port = env_int("CHAT_PORT", port),
    MaxFrame = env_int("CHAT_MAX_FRAME_SIZE", max_frame_size),
    {ok, Sup} = chat_sup:start_link(Port, MaxFrame),
    logger:notice("chat listening on port ~p (frames up to ~b bytes)", [Port, MaxFrame]),
    {ok, Sup}.

stop(_State) ->
    ok.

%% An environment variable (e.g. `unibeam run -e CHAT_PORT=...`, or a host
%% test) wins over the app env from sys.config.
env_int(Var, Key) ->
    case os:getenv(Var) of
        V when V =:= false; V =:= "" ->
            {ok, Value} = application:get_env(chat, Key),
            Value;
        V ->
            list_to_integer(V)
    end.
