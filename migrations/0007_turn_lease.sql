-- 0007_turn_lease.sql - one turn at a time per session, across every chatd.
--
-- A turn first takes its session's lease: a row here naming the turn,
-- with lease_until a few seconds ahead, inserted when there is none or
-- taken over when the holder's ran out. A new session has a lease too
-- (it has no chat_sessions row until its first turn is stored), so that a
-- resume or a stop from another tab can find who runs it. The chatd
-- running the turn renews the leases it holds every third of
-- TURN_LEASE_SECONDS (one statement for all of them). The turn's store
-- deletes the row in the transaction that stores the turn, checking under
-- the row lock that the lease is still its own (a turn whose lease ran
-- out, because its chatd stalled or died, is not stored). A turn that
-- finds the lease held waits without a thread: it is parked until
-- PostgreSQL announces the release (the trigger below) or, for a chatd that
-- died holding it, until the lease runs out.
--
-- session_id has no foreign key: a new session's row comes later, in the
-- transaction that deletes the lease.
create table turn_leases (
    session_id  uuid primary key,
    user_id     uuid not null references user_data(user_id) on delete cascade,
    turn_id     uuid not null,
    lease_until timestamptz not null
);
create index turn_leases_turn on turn_leases (turn_id);

create function chatd_notify_turn_released() returns trigger language plpgsql as $$
begin
    perform pg_notify('chatd_turn', old.session_id::text);
    return null;
end $$;

create trigger turn_leases_released after delete on turn_leases
    for each row execute function chatd_notify_turn_released();
