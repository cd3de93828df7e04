%% @doc inets httpd callback: the notes HTTP API (see README.md).
-module(notes_web).

-export([do/1]).

-include_lib("inets/include/httpd.hrl").

-define(MIB, 1048576).

do(#mod{method = Method, request_uri = Uri, entity_body = Body}) ->
    {Path, Query} = case string:split(Uri, "?") of
                        [P, Q] -> {P, uri_string:dissect_query(Q)};
                        [P] -> {P, []}
                    end,
    route(Method, Path, Query, Body).

route("GET", "/", _, _) ->
    {ok, Host} = inet:gethostname(),
    reply(200, io_lib:format("notes on ~s (node ~s)~n", [Host, node()]));
route("POST", "/notes", _, Body) ->
    %% httpd hands the body over as a list of bytes.
    case notes_store:add(iolist_to_binary(Body)) of
        {ok, Id} -> reply(201, [integer_to_list(Id), "\n"]);
        Error -> error_reply(Error)
    end;
route("GET", "/notes", _, _) ->
    case notes_store:all() of
        {ok, Recs} -> reply(200, [[integer_to_list(Id), " ", B, "\n"] || {Id, B} <- Recs]);
        Error -> error_reply(Error)
    end;
route("GET", "/notes/count", _, _) ->
    case notes_store:count() of
        {ok, N} -> reply(200, [integer_to_list(N), "\n"]);
        Error -> error_reply(Error)
    end;
route("POST", "/fill", Query, _) when is_list(Query) ->
    case catch list_to_integer(proplists:get_value("mb", Query, "")) of
        MB when is_integer(MB), MB >= 0 ->
            case fill(MB) of
                ok -> reply(200, "filled\n");
                Error -> error_reply(Error)
            end;
        _ ->
            reply(400, "usage: POST /fill?mb=N\n")
    end;
route(_, _, _, _) ->
    reply(404, "not found\n").

%% A test's way to fill the volume: N MiB of zeros in a new file, fsynced.
%% Runs in the request's process, not the store, so notes are not blocked.
fill(MB) ->
    Name = io_lib:format("fill-~b-~b.bin", [os:system_time(microsecond),
                                           erlang:unique_integer([positive])]),
    Path = filename:join(notes_app:dir(), Name),
    case file:open(Path, [write, exclusive, raw, binary]) of
        {ok, Fd} ->
            Result = fill(Fd, MB, binary:copy(<<0>>, ?MIB)),
            _ = file:close(Fd),
            Result;
        Error ->
            Error
    end.

fill(Fd, 0, _Chunk) ->
    file:sync(Fd);
fill(Fd, N, Chunk) ->
    case file:write(Fd, Chunk) of
        ok -> fill(Fd, N - 1, Chunk);
        Error -> Error
    end.

%% enospc can come bare or wrapped (disk_log says {file_error, Path, enospc}).
error_reply(Error) ->
    Text = io_lib:format("error: ~0p~n", [Error]),
    case has_enospc(Error) of
        true -> reply(507, ["insufficient storage\n", Text]);
        false -> reply(500, Text)
    end.

has_enospc(enospc) -> true;
has_enospc(T) when is_tuple(T) -> has_enospc(tuple_to_list(T));
has_enospc(L) when is_list(L) -> lists:any(fun has_enospc/1, L);
has_enospc(_) -> false.

reply(Code, Body) ->
    Bin = iolist_to_binary(Body),
    Head = [{code, Code},
            {content_type, "text/plain"},
            {content_length, integer_to_list(byte_size(Bin))}],
    {break, [{response, {response, Head, [Bin]}}]}.
