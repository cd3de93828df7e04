%% @doc Starts the HTTP listener that the walking-skeleton tests talk to.
-module(hello_app).

-behaviour(application).

-export([start/2, stop/1]).

start(_StartType, _StartArgs) ->
    {ok, Port} = application:get_env(hello, port),
    {ok, Sup} = hello_sup:start_link(),
    %% inets owns the listener; we only hand it our request module.
    {ok, _Httpd} = inets:start(httpd, [{port, Port},
                                       {bind_address, any},
                                       {server_name, "hello"},
                                       {server_root, "/tmp"},
                                       {document_root, "/tmp"},
                                       {modules, [hello_web]}]),
    logger:notice("hello listening on port ~p", [Port]),
    {ok, Sup}.

stop(_State) ->
    %% Printed so a graceful stop can be seen on the console.
    io:format("hello: stop/1 called~n"),
    ok.
