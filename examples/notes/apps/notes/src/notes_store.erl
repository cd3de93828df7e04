%% @doc Owns the disk_log and serialises every write to it.
%%
%% A note is acknowledged only after disk_log:sync/1 (an fsync) returned
%% ok. Errors (enospc, a missing or read-only dir...) are returned to the
%% caller, never raised: the store must outlive a full volume.
-module(notes_store).

-behaviour(gen_server).

-export([start_link/1, add/1, all/0, count/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(LOG, notes_log).
%% fsync on a busy disk can be slow; 5 s (the default) is too short.
-define(TIMEOUT, 60000).

start_link(Dir) ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, Dir, []).

add(Body) when is_binary(Body) -> gen_server:call(?MODULE, {add, Body}, ?TIMEOUT).
all() -> gen_server:call(?MODULE, all, ?TIMEOUT).
count() -> gen_server:call(?MODULE, count, ?TIMEOUT).

init(Dir) ->
    %% disk_log links to its owner: trap exits so a dying log marks the
    %% log closed instead of killing the store (and terminate/2 runs).
    process_flag(trap_exit, true),
    Path = filename:join(Dir, "notes.LOG"),
    S0 = #{path => Path, open => false, count => 0, next => 1},
    case open(S0) of
        {ok, #{count := N} = S} ->
            logger:notice("notes: ~b records in ~s", [N, Path]),
            {ok, S};
        {error, Reason} ->
            %% Still start: the listener answers, writes report the error.
            logger:error("notes: cannot open ~s: ~0p", [Path, Reason]),
            {ok, S0}
    end.

handle_call({add, Body}, _From, S0) ->
    case ensure_open(S0) of
        {ok, #{path := Path, next := Id, count := N} = S} ->
            %% Every acknowledged record was synced, so the file's size now
            %% is exactly where the good records end.
            Good = filelib:file_size(Path),
            case write({Id, Body}) of
                ok -> {reply, {ok, Id}, S#{next := Id + 1, count := N + 1}};
                Error -> {reply, Error, undo(Good, S)}
            end;
        Error ->
            {reply, Error, S0}
    end;
handle_call(all, _From, S0) ->
    case ensure_open(S0) of
        {ok, S} ->
            case fold(fun(Rec, Acc) -> [Rec | Acc] end, []) of
                {ok, Recs} -> {reply, {ok, lists:reverse(Recs)}, S};
                Error -> {reply, Error, close(S)}
            end;
        Error ->
            {reply, Error, S0}
    end;
handle_call(count, _From, S0) ->
    case ensure_open(S0) of
        {ok, #{count := N} = S} -> {reply, {ok, N}, S};
        Error -> {reply, Error, S0}
    end.

handle_cast(_Msg, S) ->
    {noreply, S}.

handle_info({'EXIT', _Pid, _Reason}, S) ->
    {noreply, S#{open := false}};
handle_info(_Msg, S) ->
    {noreply, S}.

terminate(_Reason, S) ->
    _ = close(S),
    ok.

%% internal functions

ensure_open(#{open := true} = S) -> {ok, S};
ensure_open(S) -> open(S).

%% Opens the log (repairing a torn tail) and scans it so ids continue.
open(#{path := Path} = S) ->
    Opts = [{name, ?LOG}, {file, Path}, {type, halt}, {format, internal},
            {repair, true}],
    case catch disk_log:open(Opts) of
        {ok, ?LOG} ->
            scan(S);
        {repaired, ?LOG, {recovered, Rec}, {badbytes, Bad}} ->
            logger:warning("notes: repaired ~s: ~p records kept, ~p bad bytes dropped",
                           [Path, Rec, Bad]),
            scan(S);
        {error, _} = Error ->
            Error;
        Other ->
            {error, Other}
    end.

scan(S) ->
    case fold(fun({Id, _}, {N, Max}) -> {N + 1, max(Id, Max)} end, {0, 0}) of
        {ok, {N, Max}} -> {ok, S#{open := true, count := N, next := Max + 1}};
        Error -> close(S), Error
    end.

close(S) ->
    _ = (catch disk_log:close(?LOG)),
    S#{open := false}.

%% After a failed write (enospc mid-record) the file can end in a torn
%% record that disk_log:close/1 then marks as cleanly closed, so the next
%% open would not repair it and every read would fail (corrupt_log_file).
%% Cutting the file back to its last synced size needs no free space; the
%% next call reopens and rescans it.
undo(Good, #{path := Path} = S) ->
    S1 = close(S),
    case file:open(Path, [read, write, raw, binary]) of
        {ok, Fd} ->
            _ = file:position(Fd, Good),
            _ = file:truncate(Fd),
            _ = file:sync(Fd),
            _ = file:close(Fd);
        _ ->
            ok
    end,
    S1.

%% disk_log:sync/1 fsyncs the file; only its ok makes a note durable.
write(Rec) ->
    try disk_log:log(?LOG, Rec) of
        ok -> disk_log:sync(?LOG);
        Error -> Error
    catch
        Class:Reason -> {error, {Class, Reason}}
    end.

fold(Fun, Acc) ->
    fold(Fun, Acc, start).

fold(Fun, Acc, Cont) ->
    case catch disk_log:chunk(?LOG, Cont) of
        eof -> {ok, Acc};
        {error, _} = Error -> Error;
        {Cont1, Terms} when is_list(Terms) -> fold(Fun, lists:foldl(Fun, Acc, Terms), Cont1);
        {Cont1, Terms, _Bad} -> fold(Fun, lists:foldl(Fun, Acc, Terms), Cont1);
        Other -> {error, Other}
    end.
