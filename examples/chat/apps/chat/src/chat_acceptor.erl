%% @doc Owns the listen socket; every accepted socket goes to a new
%% chat_conn under chat_conn_sup, so one connection's crash stays its own.
-module(chat_acceptor).

-export([start_link/1, init/2]).

start_link(Port) ->
    proc_lib:start_link(?MODULE, init, [self(), Port]).

init(Parent, Port) ->
    register(?MODULE, self()),
    Opts = [binary, {packet, raw}, {active, false}, {reuseaddr, true},
            {backlog, 128}, {nodelay, true}],
    case gen_tcp:listen(Port, Opts) of
        {ok, Listen} ->
            proc_lib:init_ack(Parent, {ok, self()}),
            loop(Listen);
        {error, Reason} ->
            proc_lib:init_ack(Parent, {error, {listen, Port, Reason}})
    end.

loop(Listen) ->
    case gen_tcp:accept(Listen) of
        {ok, Sock} ->
            hand_over(Sock),
            loop(Listen);
        {error, closed} ->
            exit(closed);
        {error, Reason} ->
            %% e.g. emfile: log it, breathe, go on accepting.
            logger:warning("chat: accept failed: ~p", [Reason]),
            timer:sleep(100),
            loop(Listen)
    end.

hand_over(Sock) ->
    case supervisor:start_child(chat_conn_sup, []) of
        {ok, Pid} ->
            case gen_tcp:controlling_process(Sock, Pid) of
                ok -> Pid ! {go, Sock};
                {error, _} -> gen_tcp:close(Sock), exit(Pid, kill)
            end;
        Error ->
            logger:warning("chat: cannot start a connection: ~p", [Error]),
            gen_tcp:close(Sock)
    end.
