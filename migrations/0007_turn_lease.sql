-- 0007_turn_lease.sql - one turn at a time per session, across every chatd.
--
-- A turn on an existing session first takes the session's lease: it sets
-- turn_owner to its own id, with turn_lease_until a few seconds ahead, if
-- nobody holds it or the holder's lease ran out. The chatd running the turn
-- renews the leases it holds every third of TURN_LEASE_SECONDS (one
-- statement for all of them), and the turn's store clears turn_owner in
-- the transaction that stores the turn, checking under the row lock that
-- the lease is still its own (a turn whose lease ran out, because its chatd
-- stalled or died, is not stored). A turn that finds the lease held waits
-- without a thread: it is parked until PostgreSQL announces the release
-- (this trigger) or, for a chatd that died holding it, until the lease
-- runs out.
alter table chat_sessions
    add column turn_owner uuid,
    add column turn_lease_until timestamptz;

create function chatd_notify_turn_released() returns trigger language plpgsql as $$
begin
    perform pg_notify('chatd_turn', new.session_id::text);
    return null;
end $$;

create trigger chat_sessions_turn_released after update of turn_owner on chat_sessions
    for each row when (old.turn_owner is not null and new.turn_owner is null)
    execute function chatd_notify_turn_released();
