%% @doc inets httpd callback: GET / names the app and the node's host.
-module(hello_web).

-export([do/1]).

-include_lib("inets/include/httpd.hrl").

do(#mod{method = "GET", request_uri = "/"}) ->
    {ok, Host} = inet:gethostname(),
    Body = io_lib:format("hello from ~s on ~s (node ~s, otp ~s)~n~s",
                         [hello, Host, node(), erlang:system_info(otp_release),
                          greeting()]),
    reply(200, Body);
do(#mod{}) ->
    reply(404, "not found\n").

%% GREETING from the environment (`unibeam run -e GREETING=...`), if set.
greeting() ->
    case os:getenv("GREETING") of
        false -> "";
        Text -> ["greeting: ", Text, "\n"]
    end.

reply(Code, Body) ->
    Bin = iolist_to_binary(Body),
    Head = [{code, Code},
            {content_type, "text/plain"},
            {content_length, integer_to_list(byte_size(Bin))}],
    {break, [{response, {response, Head, [Bin]}}]}.
