%% @doc Starts the counter's supervision tree, then the HTTP listener.
-module(cluster_app).

-behaviour(application).

-export([start/2, prep_stop/1, stop/1]).

start(_StartType, _StartArgs) ->
    Port = port(),
    {ok, Sup} = cluster_sup:start_link(),
    {ok, Httpd} = inets:start(httpd, [{port, Port},
                                      {bind_address, any},
                                      {ipfamily, inet},
                                      {server_name, "cluster"},
                                      {server_root, "/tmp"},
                                      {document_root, "/tmp"},
                                      {modules, [cluster_web]}]),
    io:format("cluster: listening on port ~b~n", [Port]),
    {ok, Sup, Httpd}.

prep_stop(Httpd) ->
    _ = inets:stop(httpd, Httpd),
    Httpd.

stop(_Httpd) ->
    ok.

%% $PORT when set (so that several nodes can share one host), otherwise
%% the application environment (8080).
port() ->
    case os:getenv("PORT") of
        false ->
            {ok, Port} = application:get_env(cluster, port),
            Port;
        Text ->
            list_to_integer(string:trim(Text))
    end.
