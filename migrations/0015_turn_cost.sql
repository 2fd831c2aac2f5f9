-- 0015_turn_cost.sql - a turn's statements at the cost of what they
-- write (issue 26).
--
-- Measured with pgbench on chatd's own lease + store statements, 32
-- clients of 32 users, fsync on: 695 tx/s; without the NOTIFY of a
-- released lease, 919; without the two PL/pgSQL trigger calls every turn
-- made for nothing, 1,401 (docs/BENCHMARKS.md, issue 26). Nothing here
-- changes what any statement means.

-- 1. A released lease is announced only when a turn waits for it.
--
-- NOTIFY takes one lock for the whole database at commit and holds it
-- while the commit is flushed: every turn's store announced its lease's
-- release, so the stores of all sessions committed one after another,
-- never together in one flush. Only a turn parked on another chatd's lease
-- needs the news: taking a held lease now marks the row (waiters), and
-- the release is announced only for a marked row. A parked turn that
-- misses it (the lease ran out and another turn took it) is put back on
-- the pool by its chatd's once-a-second sweep, as before.
alter table turn_leases add column waiters boolean not null default false;

drop trigger turn_leases_released on turn_leases;
create trigger turn_leases_released after delete on turn_leases
    for each row when (old.waiters)
    execute function chatd_notify_turn_released();

-- 2. Triggers that had nothing to do for chatd's own writes are not
-- called for them: a trigger's WHEN is an expression the executor
-- evaluates in place, where calling a PL/pgSQL function costs a function
-- call, its memory context and its plan's checks for every row.
--
-- The admin events (0008) are for writes that are not chatd's.
drop trigger user_data_admin_events on user_data;
create trigger user_data_admin_events after update on user_data for each row
    when ((old.models is distinct from new.models or old.balance is distinct from new.balance)
          and current_setting('application_name', true) is distinct from 'chatd')
    execute function chatd_notify_admin();
-- A message inserted with a real parent keeps it (0010): chatd names the
-- parent of every message it writes, -1 only for a first message.
drop trigger chat_messages_parent_default on chat_messages;
create trigger chat_messages_parent_default before insert on chat_messages
    for each row when (new.parent_seq is null or new.parent_seq = -1)
    execute function chat_messages_parent_default();

-- The lease (0013's function, one change): a turn that finds the lease
-- held marks it, so that its release is announced (1. above).
create or replace function chatd_lease_take(p_user uuid, p_session uuid, p_turn uuid,
                                            p_seconds int, p_new boolean, p_models int[],
                                            p_calls int,
                                            out next_seq bigint, out taken boolean,
                                            out is_users boolean, out leaf bigint,
                                            out amounts numeric[], out refused text,
                                            out resets timestamptz)
    language plpgsql as $$
declare
    r record;
    holder uuid;
    now_ts timestamptz;
begin
    -- The lease and the reservation are coordination, not data: the
    -- commit need not wait for the disk (and the user's row lock, which
    -- reservations of one user queue on, is not held across a flush). A
    -- crash that loses them loses nothing: the turn's store is fenced on
    -- the lease, so a turn whose lease is gone is neither stored nor
    -- charged, and the store's own commit waits for the disk, WAL before
    -- it included.
    perform set_config('synchronous_commit', 'off', true);
    -- A locking read: when the previous turn is storing, it waits for
    -- that commit and then reads the row as committed.
    select s.next_seq, coalesce(s.active_leaf, s.next_seq - 1) as leaf into r
      from chat_sessions s where s.user_id = p_user and s.session_id = p_session
       for key share;
    is_users := p_new or r.next_seq is not null;
    next_seq := coalesce(r.next_seq, 0);
    leaf := coalesce(r.leaf, -1);
    taken := false;
    if not is_users then
        return;
    end if;
    -- Taken when there is none or it ran out; else left as it is but
    -- marked as waited for, in the same statement (under the row's lock,
    -- so a release cannot slip between finding it held and marking it).
    now_ts := clock_timestamp();
    insert into turn_leases as t (session_id, user_id, turn_id, lease_until)
    values (p_session, p_user, p_turn, now_ts + p_seconds * interval '1 second')
    on conflict (session_id) do update
       set user_id = case when t.lease_until < now_ts
                          then excluded.user_id else t.user_id end,
           turn_id = case when t.lease_until < now_ts
                          then excluded.turn_id else t.turn_id end,
           stopped = t.stopped and t.lease_until >= now_ts,
           waiters = t.lease_until >= now_ts,
           lease_until = case when t.lease_until < now_ts
                              then excluded.lease_until else t.lease_until end
    returning t.turn_id into holder;
    taken := holder = p_turn;
    if not taken or p_models is null then
        return;
    end if;
    select x.amounts, x.refused, x.resets into amounts, refused, resets
      from chatd_reserve(p_user, p_turn, p_models, p_calls, p_seconds, null, null) x;
    if refused is not null then
        taken := false;
        delete from turn_leases where session_id = p_session and turn_id = p_turn;
    end if;
end $$;

-- 3. Erasing a user (0013) takes the user's locks in a turn's order.
--
-- A store deletes its budget hold, then updates the user's balance; the
-- erasure locked the user's row first and then, deleting it, cascaded to
-- the holds: with a turn storing at that moment, each waited for the
-- other, and PostgreSQL aborted one of them (a deadlock; test_lifecycle's
-- Erasure saw it with a title's charge in flight). Now the erasure first
-- takes the user's budget lock (no new reservation can start), deletes
-- the user's holds (waiting for a store that holds one to commit), and
-- only then locks the user's row.
create or replace function chatd_erase_user(p_user uuid) returns bigint language plpgsql as $$
declare
    n bigint;
begin
    perform pg_advisory_xact_lock(hashtextextended('chatd budget user ' || p_user, 0));
    delete from budget_holds where user_id = p_user;
    perform 1 from user_data where user_id = p_user for update;
    if not found then
        return null;
    end if;
    select count(*) into n from chat_sessions where user_id = p_user;
    update usage_ledger set user_id = null, session_id = null, turn_id = null
     where user_id = p_user;
    delete from user_data where user_id = p_user;
    return n;
end $$;
