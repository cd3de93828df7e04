%% @doc Opens the database (creating it on first boot), then starts the
%% HTTP listener in front of it.
-module(crud_app).

-behaviour(application).

-export([start/2, stop/1]).

start(_StartType, _StartArgs) ->
    ok = crud_metrics:init(),
    ok = crud_db:open(),
    Port = port(),
    {ok, Sup} = crud_sup:start_link(),
    {ok, _Httpd} = inets:start(httpd, [{port, Port},
                                       {bind_address, any},
                                       {server_name, "crud"},
                                       {server_root, "/tmp"},
                                       {document_root, "/tmp"},
                                       {max_body_size, 1048576},
                                       {modules, [crud_web]}]),
    logger:notice("crud listening on port ~p", [Port]),
    {ok, Sup}.

stop(_State) ->
    ok.

%% CRUD_PORT lets a host test pick a free port without editing sys.config.
port() ->
    case os:getenv("CRUD_PORT") of
        V when V =:= false; V =:= "" ->
            {ok, Port} = application:get_env(crud, port),
            Port;
        Port ->
            list_to_integer(Port)
    end.
