%% @doc The items, in Mnesia disc_copies tables on the volume.
%%
%% First boot: no schema in the mnesia dir yet, so one is created for this
%% node, then mnesia starts and the tables are created. Later boots find
%% both and just wait for the tables to load. A Mnesia schema belongs to
%% a node name (crud@<hostname>): see README.md for what that means here.
-module(crud_db).

-export([open/0, dir/0, list/0, get/1, create/1, update/2, delete/1, count/0]).

-record(item, {id :: pos_integer(), body :: map()}).
%% The last id handed out, so ids are never reused, even after a delete.
-record(crud_seq, {key :: item, last :: non_neg_integer()}).

-define(LOAD_TIMEOUT, 120000).

open() ->
    Dir = dir(),
    ok = application:set_env(mnesia, dir, Dir),
    case filelib:ensure_dir(filename:join(Dir, "schema.DAT")) of
        ok -> ok;
        {error, Why} -> exit({cannot_create, Dir, Why})
    end,
    case filelib:is_regular(filename:join(Dir, "schema.DAT")) of
        true ->
            ok;
        false ->
            ok = mnesia:create_schema([node()]),
            logger:notice("crud: created a Mnesia schema for ~s in ~s", [node(), Dir])
    end,
    ok = mnesia:start(),
    case lists:member(node(), mnesia:table_info(schema, disc_copies)) of
        true ->
            ok;
        false ->
            %% The schema on disk is another node's (the node name changed).
            exit({schema_of_another_node, Dir, mnesia:table_info(schema, disc_copies), node()})
    end,
    ok = table(item, record_info(fields, item)),
    ok = table(crud_seq, record_info(fields, crud_seq)),
    case mnesia:wait_for_tables([item, crud_seq], ?LOAD_TIMEOUT) of
        ok ->
            logger:notice("crud: ~b items in ~s", [count(), Dir]);
        Error ->
            exit({tables_not_loaded, Error})
    end.

table(Name, Fields) ->
    case mnesia:create_table(Name, [{disc_copies, [node()]}, {attributes, Fields}]) of
        {atomic, ok} -> ok;
        {aborted, {already_exists, Name}} -> ok
    end.

%% CRUD_DIR (e.g. a temp dir on the host) wins over mnesia's app env,
%% which sys.config sets to the volume at /data.
dir() ->
    case os:getenv("CRUD_DIR") of
        V when V =:= false; V =:= "" ->
            case application:get_env(mnesia, dir) of
                {ok, Dir} -> Dir;
                undefined -> "/data/mnesia"
            end;
        Dir ->
            Dir
    end.

list() ->
    lists:keysort(1, [{Id, Body} || #item{id = Id, body = Body} <- ets:tab2list(item)]).

get(Id) ->
    case mnesia:dirty_read(item, Id) of
        [#item{body = Body}] -> {ok, Body};
        [] -> not_found
    end.

create(Body) ->
    {atomic, Id} =
        mnesia:transaction(
          fun() ->
                  Last = case mnesia:read(crud_seq, item, write) of
                             [#crud_seq{last = L}] -> L;
                             [] -> 0
                         end,
                  Id = Last + 1,
                  ok = mnesia:write(#crud_seq{key = item, last = Id}),
                  ok = mnesia:write(#item{id = Id, body = Body}),
                  Id
          end),
    {ok, Id}.

update(Id, Body) ->
    {atomic, Result} =
        mnesia:transaction(
          fun() ->
                  case mnesia:read(item, Id, write) of
                      [_] -> mnesia:write(#item{id = Id, body = Body});
                      [] -> not_found
                  end
          end),
    Result.

delete(Id) ->
    {atomic, Result} =
        mnesia:transaction(
          fun() ->
                  case mnesia:read(item, Id, write) of
                      [_] -> mnesia:delete({item, Id});
                      [] -> not_found
                  end
          end),
    Result.

count() ->
    mnesia:table_info(item, size).
