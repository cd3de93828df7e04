//! The BEAM's side of a snapshot, as one `-eval` expression run where the
//! apps-started marker is otherwise printed (after every application has
//! started).
//!
//! Reseeding the kernel's pool (init, thaw.rs) is not enough for clones:
//! OpenSSL's generator in the BEAM (behind `crypto:strong_rand_bytes/1`)
//! was seeded before the snapshot and lives in the saved memory, so two
//! restores would draw the same bytes. Only code in the BEAM can reseed
//! it, and it must do so before any application code runs again. So the
//! expression first suspends every other process, then prints the marker
//! (init stops the BEAM and the host saves), then waits for init's word
//! in [`THAW_FILE`]:
//! - empty: this is the VM that was saved, or the host never answered;
//!   nothing to reseed;
//! - fresh host bytes: a restored copy; `crypto:rand_seed/1` reseeds
//!   OpenSSL's primary generator with them (and fresh kernel entropy),
//!   and every per-thread generator follows it at its next draw.
//!
//! The mesh keeper and DNS discovery start after this expression (see
//! launch.rs), so a snapshot holds none of their connections. Any that the
//! application made itself a restored copy drops once its processes run
//! again (`disconnect_node` asks `net_kernel`): they were made in another
//! life, and their peers know nothing of them (waiting for the tick to
//! find out would take `net_ticktime`).
//!
//! Before any of that, it loads every module of every started
//! application, as an embedded-mode boot would have. A release that runs
//! in interactive mode (rebar3's and mix's default) loads modules on first
//! use, and under TCG the first load after a restore is dear: QEMU must
//! translate the BEAM's loader and JIT afresh. hello's first HTTP request
//! loaded 9 modules, 0.2 s of a 0.5 s warm start; with them in the
//! snapshot a restored copy answers as fast as a resumed one. Modules
//! that do not load (another platform's, a missing NIF) are left as they
//! are: their app would fail the same way on first use.
//!
//! Then it resumes every process it suspended. Only BIFs, `prim_file`
//! (preloaded) and an already loaded `crypto` are called: with the code
//! server suspended, loading a module would hang.

/// Written by init when the BEAM may go on; see the module doc.
pub const THAW_FILE: &str = "/tmp/unibeam/thaw";

/// Should init never write [`THAW_FILE`], the BEAM goes on after this many
/// 2 ms waits (a minute or more, like init's own limit). A count, not a
/// deadline: the clock jumps on a restore, and the BEAM counts only while
/// it runs, never while it is stopped for the save.
const WAIT_ROUNDS: u32 = 30_000;

/// The expression `-eval` gets; one argv element, never via a shell.
pub(crate) fn quiesce_for_snapshot() -> String {
    // erts_* are the runtime's own system processes (code purger, dirty
    // signal handlers): suspending them could block the suspensions.
    format!(
        "begin \
         _ = [catch code:ensure_modules_loaded(Ms) || {{A, _, _}} <- application:which_applications(), \
              {{ok, Ms}} <- [application:get_key(A, modules)]], \
         Self = self(), \
         Hold = fun(P) -> P =/= Self andalso \
           case erlang:process_info(P, registered_name) of \
             {{registered_name, N}} -> case atom_to_binary(N) of <<\"erts_\", _/binary>> -> false; _ -> true end; \
             _ -> true end end, \
         Suspend = fun S(Held) -> \
           case [P || P <- erlang:processes(), not maps:is_key(P, Held), Hold(P)] of \
             [] -> Held; \
             New -> S(maps:merge(Held, maps:from_list([{{P, catch erlang:suspend_process(P)}} || P <- New]))) end end, \
         Held = Suspend(#{{}}), \
         Restored = try \
           erlang:display([unibeam_apps_started]), \
           Word = fun W(0) -> <<>>; W(N) -> case prim_file:read_file(\"{THAW_FILE}\") of \
             {{ok, B}} -> B; _ -> receive after 2 -> W(N - 1) end end end, \
           case Word({WAIT_ROUNDS}) of \
             <<>> -> false; \
             Fresh -> case erlang:module_loaded(crypto) of \
               true -> catch crypto:rand_seed(Fresh); false -> ok end, \
               true end \
         after \
           [catch erlang:resume_process(P) || {{P, true}} <- maps:to_list(Held)] \
         end, \
         case Restored of \
           true -> spawn(fun() -> [catch erlang:disconnect_node(N) || N <- nodes(connected)] end); \
           false -> ok end, \
         ok end"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beam::RUN_DIR;

    #[test]
    fn the_expression_waits_for_inits_file_and_prints_the_marker() {
        let e = quiesce_for_snapshot();
        if let Some(path) = std::env::var_os("UNIBEAM_DUMP_QUIESCE") {
            std::fs::write(path, &e).unwrap();
        }
        assert!(e.contains(r#"prim_file:read_file("/tmp/unibeam/thaw")"#), "{e}");
        assert!(e.contains("erlang:display([unibeam_apps_started])"), "{e}");
        assert!(e.find("suspend_process").unwrap() < e.find("display").unwrap());
        assert!(
            e.find("ensure_modules_loaded").unwrap() < e.find("suspend_process").unwrap(),
            "modules load while the code server runs: {e}"
        );
        assert!(e.contains("crypto:rand_seed(Fresh)"), "{e}");
        assert!(e.contains("resume_process"), "{e}");
        assert_eq!(e.matches("begin").count(), 1);
        assert!(THAW_FILE.starts_with(RUN_DIR), "init makes RUN_DIR");
    }
}
