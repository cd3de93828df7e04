%% @doc Starts the store, then the HTTP listener in front of it.
-module(notes_app).

-behaviour(application).

-export([start/2, stop/1, dir/0]).

start(_StartType, _StartArgs) ->
    Dir = dir(),
    Port = port(),
    %% The store never fails to start (a bad data dir is only logged), so
    %% the listener below always comes up and can report write errors.
    {ok, Sup} = notes_sup:start_link(Dir),
    {ok, _Httpd} = inets:start(httpd, [{port, Port},
                                       {bind_address, any},
                                       {server_name, "notes"},
                                       {server_root, "/tmp"},
                                       {document_root, "/tmp"},
                                       {modules, [notes_web]}]),
    logger:notice("notes listening on port ~p", [Port]),
    {ok, Sup}.

stop(_State) ->
    ok.

%% NOTES_DIR (e.g. `unibeam run -e NOTES_DIR=...`, or a temp dir on the
%% host) wins over the app env, whose default is the volume at /data.
dir() ->
    case os:getenv("NOTES_DIR") of
        V when V =:= false; V =:= "" ->
            {ok, Dir} = application:get_env(notes, dir),
            Dir;
        Dir ->
            Dir
    end.

%% NOTES_PORT lets a host test pick a free port without editing sys.config.
port() ->
    case os:getenv("NOTES_PORT") of
        V when V =:= false; V =:= "" ->
            {ok, Port} = application:get_env(notes, port),
            Port;
        Port ->
            list_to_integer(Port)
    end.
