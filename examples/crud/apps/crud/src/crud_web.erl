%% @doc inets httpd callback: the REST API (see README.md).
%%
%%   GET    /items        200, a JSON array of items
%%   POST   /items        201, Location: /items/<id>, the item with its id
%%   GET    /items/<id>   200 | 404
%%   PUT    /items/<id>   200 | 404 (the body replaces the item)
%%   DELETE /items/<id>   204 | 404
%%   GET    /metrics      200, JSON (or ?format=prometheus)
%%
%% An item is any JSON object; "id" in a request body is ignored. A body
%% that is not a JSON object gets 400, a method a path does not take 405,
%% and every error a JSON body {"error": "..."}.
-module(crud_web).

-export([do/1]).

-include_lib("inets/include/httpd.hrl").

do(#mod{method = Method, request_uri = Uri, entity_body = Body}) ->
    crud_metrics:request(Method),
    {Path, Query} = case string:split(Uri, "?") of
                        [P, Q] -> {P, Q};
                        [P] -> {P, ""}
                    end,
    try
        route(Method, string:lexemes(Path, "/"), Query, Body)
    catch
        Class:Reason:Stack ->
            logger:error("crud: ~s ~s: ~p:~p ~p", [Method, Uri, Class, Reason, Stack]),
            err(500, <<"internal error">>)
    end.

route("GET", [], _, _) ->
    json(200, #{<<"service">> => <<"crud">>, <<"node">> => atom_to_binary(node()),
                <<"resources">> => [<<"/items">>, <<"/metrics">>]});
route("GET", ["items"], _, _) ->
    json(200, [item(Id, B) || {Id, B} <- crud_db:list()]);
route("POST", ["items"], _, Body) ->
    with_object(Body, fun(Obj) ->
                              {ok, Id} = crud_db:create(Obj),
                              json(201, [{location, "/items/" ++ integer_to_list(Id)}], item(Id, Obj))
                      end);
route(_, ["items"], _, _) ->
    not_allowed("GET, POST");
route(Method, ["items", IdText], _, Body) ->
    case id(IdText) of
        error -> err(404, <<"no such item">>);
        Id -> item_route(Method, Id, Body)
    end;
route("GET", ["metrics"], Query, _) ->
    case lists:member({"format", "prometheus"}, uri_string:dissect_query(Query)) of
        true -> reply(200, "text/plain; version=0.0.4", [], crud_metrics:prometheus());
        false -> json(200, crud_metrics:snapshot())
    end;
route(_, ["metrics"], _, _) ->
    not_allowed("GET");
route(_, _, _, _) ->
    err(404, <<"not found">>).

item_route("GET", Id, _) ->
    case crud_db:get(Id) of
        {ok, Obj} -> json(200, item(Id, Obj));
        not_found -> err(404, <<"no such item">>)
    end;
item_route("PUT", Id, Body) ->
    with_object(Body, fun(Obj) ->
                              case crud_db:update(Id, Obj) of
                                  ok -> json(200, item(Id, Obj));
                                  not_found -> err(404, <<"no such item">>)
                              end
                      end);
item_route("DELETE", Id, _) ->
    case crud_db:delete(Id) of
        ok -> reply(204, "application/json", [], <<>>);
        not_found -> err(404, <<"no such item">>)
    end;
item_route(_, _, _) ->
    not_allowed("GET, PUT, DELETE").

%% The body must be a JSON object; its "id", if any, is not the client's to set.
with_object(Body, Fun) ->
    try jiffy:decode(iolist_to_binary(Body), [return_maps]) of
        Obj when is_map(Obj) -> Fun(maps:remove(<<"id">>, Obj));
        _ -> err(400, <<"the body must be a JSON object">>)
    catch
        %% jiffy 1.x raises {Position, Reason}; older ones threw {error, _}.
        error:{Pos, Why} when is_integer(Pos) ->
            err(400, iolist_to_binary(io_lib:format("invalid JSON at byte ~b: ~0p", [Pos, Why])));
        throw:{error, Why} ->
            err(400, iolist_to_binary(io_lib:format("invalid JSON: ~0p", [Why])))
    end.

item(Id, Obj) -> Obj#{<<"id">> => Id}.

id(Text) ->
    case string:to_integer(Text) of
        {Id, ""} when Id > 0 -> Id;
        _ -> error
    end.

not_allowed(Allow) ->
    json(405, [{allow, Allow}], #{<<"error">> => <<"method not allowed">>}).

err(Code, Message) ->
    json(Code, #{<<"error">> => Message}).

json(Code, Term) ->
    json(Code, [], Term).

json(Code, Headers, Term) ->
    reply(Code, "application/json", Headers, [jiffy:encode(Term), "\n"]).

reply(Code, Type, Headers, Body) ->
    crud_metrics:response(Code),
    Bin = iolist_to_binary(Body),
    Head = [{code, Code},
            {content_type, Type},
            {content_length, integer_to_list(byte_size(Bin))} | Headers],
    {break, [{response, {response, Head, [Bin]}}]}.
