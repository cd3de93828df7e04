%% @doc One TCP connection: an HTTP/1.1 request (OTP's `http_bin' packet
%% parser), then either the page, an error, or the websocket upgrade and
%% the frames that follow (RFC 6455, parsed and built by cowlib's cow_ws).
%%
%% No extension is negotiated, so a frame with a reserved bit set is a
%% protocol error. Client frames must be masked. A frame, or a message
%% joined from fragments, longer than max_frame_size is refused with close
%% code 1009; invalid UTF-8 in a text message gets 1007; a binary message
%% gets 1003 (this is a text chat).
-module(chat_conn).

-export([start_link/1, init/1]).

-define(ROOM, room).
-define(RECV_TIMEOUT, 30000).
-define(MAX_HEADERS, 100).
%% A websocket without any traffic for this long is closed (1001).
-define(IDLE_TIMEOUT, 600000).

start_link(MaxFrame) ->
    {ok, proc_lib:spawn_link(?MODULE, init, [MaxFrame])}.

init(MaxFrame) ->
    receive
        {go, Sock} -> request(Sock, MaxFrame)
    after 10000 ->
        exit(no_socket)
    end.

%% HTTP

request(Sock, MaxFrame) ->
    ok = inet:setopts(Sock, [{packet, http_bin}, {packet_size, 16384}]),
    case gen_tcp:recv(Sock, 0, ?RECV_TIMEOUT) of
        {ok, {http_request, Method, {abs_path, Target}, _Vsn}} ->
            case headers(Sock, #{}, 0) of
                {ok, Headers} ->
                    [Path | _] = binary:split(Target, <<"?">>),
                    route(Method, Path, Headers, Sock, MaxFrame);
                {error, _} ->
                    respond(Sock, 400, <<"bad request\n">>)
            end;
        {ok, _Other} ->
            respond(Sock, 400, <<"bad request\n">>);
        {error, _} ->
            gen_tcp:close(Sock)
    end.

headers(_Sock, _Acc, N) when N > ?MAX_HEADERS ->
    {error, too_many_headers};
headers(Sock, Acc, N) ->
    case gen_tcp:recv(Sock, 0, ?RECV_TIMEOUT) of
        {ok, {http_header, _, Name, _, Value}} ->
            Key = string:lowercase(header_name(Name)),
            %% Repeated headers are joined as RFC 7230 allows for lists.
            Acc1 = maps:update_with(Key, fun(Old) -> <<Old/binary, ", ", Value/binary>> end,
                                    Value, Acc),
            headers(Sock, Acc1, N + 1);
        {ok, http_eoh} ->
            {ok, Acc};
        {ok, Other} ->
            {error, Other};
        {error, _} = Error ->
            Error
    end.

header_name(Name) when is_atom(Name) -> atom_to_binary(Name);
header_name(Name) -> Name.

route('GET', <<"/">>, _Headers, Sock, _MaxFrame) ->
    respond(Sock, 200, <<"text/html; charset=utf-8">>, chat_page:html());
route('GET', <<"/ws">>, Headers, Sock, MaxFrame) ->
    case handshake(Headers) of
        {ok, Accept} ->
            ok = gen_tcp:send(Sock, [<<"HTTP/1.1 101 Switching Protocols\r\n"
                                       "Upgrade: websocket\r\n"
                                       "Connection: Upgrade\r\n"
                                       "Sec-WebSocket-Accept: ">>, Accept, <<"\r\n\r\n">>]),
            websocket(Sock, MaxFrame);
        {error, Why} ->
            respond(Sock, 400, [<<"websocket upgrade refused: ">>, Why, <<"\n">>])
    end;
route(_Method, Path, _Headers, Sock, _MaxFrame) when Path =:= <<"/">>; Path =:= <<"/ws">> ->
    respond(Sock, 405, <<"method not allowed\n">>);
route(_Method, _Path, _Headers, Sock, _MaxFrame) ->
    respond(Sock, 404, <<"not found\n">>).

%% RFC 6455 4.2.1: Connection has the token upgrade, Upgrade has
%% websocket, Sec-WebSocket-Version is 13 and there is a key.
handshake(Headers) ->
    Get = fun(Name) -> maps:get(Name, Headers, <<>>) end,
    try
        case {Get(<<"connection">>), Get(<<"upgrade">>),
              Get(<<"sec-websocket-version">>), Get(<<"sec-websocket-key">>)} of
            {<<>>, _, _, _} -> {error, <<"no Connection: upgrade">>};
            {_, <<>>, _, _} -> {error, <<"no Upgrade: websocket">>};
            {Conn, Upgrade, Version, Key} ->
                case {lists:member(<<"upgrade">>, cow_http_hd:parse_connection(Conn)),
                      lists:member(<<"websocket">>, cow_http_hd:parse_upgrade(Upgrade)),
                      Version, Key} of
                    {false, _, _, _} -> {error, <<"no Connection: upgrade">>};
                    {_, false, _, _} -> {error, <<"no Upgrade: websocket">>};
                    {_, _, V, _} when V =/= <<"13">> -> {error, <<"Sec-WebSocket-Version must be 13">>};
                    {_, _, _, <<>>} -> {error, <<"no Sec-WebSocket-Key">>};
                    {_, _, _, _} -> {ok, cow_ws:encode_key(Key)}
                end
        end
    catch
        _:_ -> {error, <<"malformed upgrade headers">>}
    end.

respond(Sock, Code, Body) ->
    respond(Sock, Code, <<"text/plain; charset=utf-8">>, Body).

respond(Sock, Code, Type, Body) ->
    Bin = iolist_to_binary(Body),
    _ = gen_tcp:send(Sock, [<<"HTTP/1.1 ">>, integer_to_binary(Code), <<" ">>, reason(Code),
                            <<"\r\nContent-Type: ">>, Type,
                            <<"\r\nContent-Length: ">>, integer_to_binary(byte_size(Bin)),
                            <<"\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n">>, Bin]),
    gen_tcp:close(Sock).

reason(200) -> <<"OK">>;
reason(400) -> <<"Bad Request">>;
reason(404) -> <<"Not Found">>;
reason(405) -> <<"Method Not Allowed">>.

%% Websocket

websocket(Sock, MaxFrame) ->
    ok = inet:setopts(Sock, [{packet, raw}, {active, once}]),
    ok = pg:join(chat, ?ROOM, self()),
    loop(#{sock => Sock, max => MaxFrame, buf => <<>>,
           %% The message being joined from fragments: cow_ws's fragment
           %% state, the payloads so far (reversed), their size, UTF-8 state.
           frag => undefined, parts => [], size => 0, utf8 => 0}).

loop(#{sock := Sock} = S) ->
    receive
        {tcp, Sock, Data} ->
            #{buf := Buf} = S,
            S1 = frames(S#{buf := <<Buf/binary, Data/binary>>}),
            ok = inet:setopts(Sock, [{active, once}]),
            loop(S1);
        {tcp_closed, Sock} ->
            exit(normal);
        {tcp_error, Sock, _} ->
            exit(normal);
        {chat, Text} ->
            send(S, {text, Text}),
            loop(S)
    after ?IDLE_TIMEOUT ->
        close(S, 1001)
    end.

%% Handles every complete frame in the buffer; returns the state with
%% what is left of it.
frames(#{buf := Buf, frag := Frag, max := Max} = S) ->
    case cow_ws:parse_header(Buf, #{}, Frag) of
        more ->
            S;
        error ->
            close(S, 1002);
        {_Type, _Frag1, _Rsv, _Len, undefined, _Rest} ->
            close(S, 1002);                         % clients must mask
        {_Type, _Frag1, _Rsv, Len, _Mask, _Rest} when Len > Max ->
            close(S, 1009);
        {_Type, _Frag1, _Rsv, Len, _Mask, Rest} when byte_size(Rest) < Len ->
            S;                                      % wait for the whole payload
        {Type, Frag1, Rsv, Len, Mask, Rest} ->
            <<Masked:Len/binary, Next/binary>> = Rest,
            Utf8 = case Type of fragment -> maps:get(utf8, S); _ -> 0 end,
            case cow_ws:parse_payload(Masked, Mask, Utf8, 0, Type, Len, Frag1, #{}, Rsv) of
                {ok, Payload, Utf8a, <<>>} ->
                    frames(frame(Type, Frag1, Payload, Utf8a, S#{buf := Next}));
                {ok, Code, Payload, _, <<>>} when Type =:= close ->
                    send(S, {close, Code, Payload}),
                    closed(S);
                {error, badencoding} ->
                    close(S, 1007);
                _ ->
                    close(S, 1002)
            end
    end.

frame(text, _, Text, 0, S) ->
    broadcast(Text),
    S;
frame(text, _, _, _, S) ->
    close(S, 1007);
frame(binary, _, _, _, S) ->
    close(S, 1003);
frame(ping, _, Payload, _, S) ->
    send(S, {pong, Payload}),
    S;
frame(pong, _, _, _, S) ->
    S;
frame(close, _, _, _, S) ->
    %% A close without a code: answer with none either (RFC 6455 5.5.1).
    send(S, close),
    closed(S);
frame(fragment, {Fin, Kind, _} = Frag, Payload, Utf8, #{parts := Parts, size := Size, max := Max} = S) ->
    Size1 = Size + byte_size(Payload),
    if
        Size1 > Max ->
            close(S, 1009);
        Fin =:= nofin ->
            S#{frag := Frag, parts := [Payload | Parts], size := Size1, utf8 := Utf8};
        Kind =:= binary ->
            close(S, 1003);
        Utf8 =/= 0 ->
            close(S, 1007);                         % a message ending mid-character
        true ->
            broadcast(iolist_to_binary(lists:reverse([Payload | Parts]))),
            S#{frag := undefined, parts := [], size := 0, utf8 := 0}
    end.

broadcast(Text) ->
    [Pid ! {chat, Text} || Pid <- pg:get_members(chat, ?ROOM)],
    ok.

send(#{sock := Sock}, Frame) ->
    _ = gen_tcp:send(Sock, cow_ws:frame(Frame, #{})),
    ok.

%% Sends a close frame with Code and ends the connection.
close(S, Code) ->
    send(S, {close, Code, <<>>}),
    closed(S).

closed(#{sock := Sock}) ->
    _ = gen_tcp:close(Sock),
    exit(normal).
