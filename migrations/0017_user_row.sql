-- 0017_user_row.sql - a user's turns do not lock the user's row for one
-- another (issue 26).
--
-- A foreign key's check locks the row it finds (FOR KEY SHARE). Every
-- turn's lease and budget hold were checked against user_data, in the
-- lease's transaction, while the user's other turns were storing, each
-- of which updates the same row (its balance). Shared locks of several
-- transactions, and a shared lock beside an update, make the row's
-- locker a MultiXact, which every later reader and updater of the row
-- has to open: with 32 turns of one user at once, PostgreSQL spent a
-- fifth of its time in GetMultiXactIdMembers, 3.4 ms of CPU per turn
-- where 32 users' turns cost 0.7 (perf, pgbench on chatd's own lease and
-- store statements; docs/BENCHMARKS.md, issue 26). Both rows live for
-- one turn; nothing needs the check at their insert:
--   - the lease's statement reads the user's session (a continued turn)
--     or the user's row (the reservation), and a lease or hold of a user
--     deleted meanwhile fences nothing of anyone else's (both are keyed
--     by the session and the turn) and runs out;
--   - what the keys' ON DELETE CASCADE did is done by a trigger of
--     user_data, at the same point of the deleting statement (so
--     chatd_erase_user, 0015, still takes its locks in a turn's order),
--     and the leases left by a race run out and are purged with the
--     holds (the sweeper's runout_purge).
alter table turn_leases drop constraint turn_leases_user_id_fkey;
alter table budget_holds drop constraint budget_holds_user_id_fkey;

create function chatd_user_gone() returns trigger language plpgsql as $$
begin
    delete from budget_holds where user_id = old.user_id;
    delete from turn_leases where user_id = old.user_id;
    return null;
end $$;
create trigger user_data_gone after delete on user_data
    for each row execute function chatd_user_gone();
