%% @doc The supervision tree:
%%
%%   chat_sup (rest_for_one)
%%     pg scope `chat'     who is connected (a member per websocket)
%%     chat_conn_sup       simple_one_for_one, one temporary child per TCP connection
%%     chat_acceptor       owns the listen socket, hands each socket to a new child
%%
%% A connection process that crashes takes nothing else with it: it is a
%% temporary child, not restarted, and pg forgets it when it dies.
-module(chat_sup).

-behaviour(supervisor).

-export([start_link/2, init/1]).

start_link(Port, MaxFrame) ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, {top, Port, MaxFrame}).

init({top, Port, MaxFrame}) ->
    Flags = #{strategy => rest_for_one, intensity => 5, period => 10},
    Children =
        [#{id => pg, start => {pg, start_link, [chat]}},
         #{id => chat_conn_sup,
           start => {supervisor, start_link, [{local, chat_conn_sup}, ?MODULE, {conns, MaxFrame}]},
           type => supervisor},
         #{id => chat_acceptor, start => {chat_acceptor, start_link, [Port]}}],
    {ok, {Flags, Children}};
init({conns, MaxFrame}) ->
    %% Intensity 0 would not matter: temporary children are never restarted.
    Flags = #{strategy => simple_one_for_one, intensity => 10, period => 1},
    Conn = #{id => chat_conn,
             start => {chat_conn, start_link, [MaxFrame]},
             restart => temporary,
             shutdown => brutal_kill},
    {ok, {Flags, [Conn]}}.
