-- 0013_lifecycle.sql - data that leaves when it should (temporary chats,
-- retention, erasure) and money that never overspends (budgets reserved
-- before the agent is called).

-- ------------------------------------------------------------ temporary
-- A temporary chat (code 3 with temporary: true) is deleted
-- TEMPORARY_CHAT_HOURS after its last turn (updated_at, which each stored
-- turn moves on); code 25 makes it an ordinary session. Code 1 without a
-- filter, search and the jsonl export leave such sessions out.
alter table chat_sessions add column temporary boolean not null default false;
create index chat_sessions_temporary on chat_sessions (updated_at) where temporary;

-- Keeping a temporary chat puts it in the user's list: cached lists hear
-- of it like of a rename.
drop trigger chat_sessions_cache_update on chat_sessions;
create trigger chat_sessions_cache_update after update on chat_sessions for each row
    when (old.session_name is distinct from new.session_name
          or old.user_id is distinct from new.user_id
          or old.created_at is distinct from new.created_at
          or old.temporary <> new.temporary)
    execute function chatd_notify_user();

-- ------------------------------------------------------------ retention
-- RETENTION_DAYS applies to every user whose retention_days is null;
-- 0 keeps for ever. Sessions whose last turn (updated_at) is older are
-- deleted by the sweeper, pinned ones never.
alter table user_data add column retention_days int check (retention_days >= 0);
create index chat_sessions_last_activity on chat_sessions (updated_at)
    where not pinned and not temporary;

-- Files and Redis copies outlive their rows unless someone removes them:
-- every deleted file row, however it was deleted (code 4, retention, an
-- admin's DELETE, erasure), and every deleted session queue what the
-- sweeper of any chatd then removes from PUBLIC_DIR and Redis.
create table erasure_queue (
    item_id    bigint generated always as identity primary key,
    kind       text not null check (kind in ('file', 'session', 'user')),
    name       text not null,
    queued_at  timestamptz not null default clock_timestamp()
);

create function chatd_queue_erasure() returns trigger language plpgsql as $$
begin
    -- tg_argv: the kind, and the column of the deleted row that names it
    insert into erasure_queue (kind, name) values (tg_argv[0], to_jsonb(old) ->> tg_argv[1]);
    return null;
end $$;
create trigger uploaded_files_erase after delete on uploaded_files for each row
    execute function chatd_queue_erasure('file', 'stored_name');
create trigger chat_sessions_erase after delete on chat_sessions for each row
    execute function chatd_queue_erasure('session', 'session_id');
create trigger user_data_erase after delete on user_data for each row
    execute function chatd_queue_erasure('user', 'user_id');

-- ------------------------------------------------------------- erasure
-- The ledger stays for accounting when its user goes: the identity is
-- removed (user_id set null by the key; erasure also forgets the session
-- and turn) and only content-free fields remain.
alter table usage_ledger alter column user_id drop not null,
                         alter column session_id drop not null,
                         drop constraint usage_ledger_user_id_fkey,
                         add constraint usage_ledger_user_id_fkey foreign key (user_id)
                             references user_data(user_id) on delete set null;

create or replace view usage_daily as
select l.user_id,
       coalesce(u.username, '(erased)') as username,
       l.model_name,
       (l.created_at at time zone 'UTC')::date as day,
       count(*) filter (where l.kind = 'turn') as turns,
       sum(l.cost) as spent,
       sum(l.prompt_tokens) as prompt_tokens,
       sum(l.completion_tokens) as completion_tokens
  from usage_ledger l left join user_data u using (user_id)
 group by l.user_id, u.username, l.model_name, (l.created_at at time zone 'UTC')::date;

-- Everything of a user, everywhere chatd put it: every row goes with the
-- user (each table's key cascades), the ledger keeps its amounts without
-- the identity, and the triggers above queue the files on disk and the
-- Redis keys, which every chatd's sweeper removes (`chatd erase-user`
-- removes them at once). Returns the number of sessions erased; 0 rows:
-- no such user.
--   select chatd_erase_user('6f1c...');
create function chatd_erase_user(p_user uuid) returns bigint language plpgsql as $$
declare
    n bigint;
begin
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

-- -------------------------------------------------------------- budgets
-- Caps are monthly (UTC calendar months), set by admins in SQL:
--   update user_data set monthly_cap = 20 where username = 'Ann';
--   insert into user_model_caps values ('<user>', 4, 5);     -- gpt-4-turbo
--   insert into user_groups values ('research', 200);
--   insert into user_group_members values ('research', '<user>');
-- and a personal cap the user sets with code 26 (the lower one binds).
alter table user_data add column monthly_cap numeric check (monthly_cap >= 0),
                      add column personal_cap numeric check (personal_cap >= 0);
create table user_model_caps (
    user_id     uuid not null references user_data(user_id) on delete cascade,
    model_id    int not null references model_details(model_id) on delete cascade,
    monthly_cap numeric not null check (monthly_cap >= 0),
    primary key (user_id, model_id)
);
create table user_groups (
    group_name  text primary key,
    monthly_cap numeric not null check (monthly_cap >= 0)
);
create table user_group_members (
    group_name text not null references user_groups(group_name)
                   on delete cascade on update cascade,
    user_id    uuid not null references user_data(user_id) on delete cascade,
    primary key (user_id, group_name)
);
create index user_group_members_group on user_group_members (group_name, user_id);

-- The most one call can cost: the model's prices times its context length
-- and output limit, unless an admin sets max_turn_cost. chatd never
-- charges a call more than it reserved.
alter table model_details
    add column max_output_tokens int not null default 4096 check (max_output_tokens > 0),
    add column max_turn_cost numeric check (max_turn_cost >= 0);

-- A reservation (hold): money set aside for a call that runs, against the
-- balance and every cap, taken with the turn's lease and renewed with it;
-- one row per answer (slot) of a turn. The turn's store deletes it in the
-- statement that charges the real cost; a failed turn's lease drop
-- deletes it; a chatd that dies leaves it to run out (until).
create table budget_holds (
    hold_id  uuid not null,
    slot     int not null,
    user_id  uuid not null references user_data(user_id) on delete cascade,
    model_id int not null,
    amount   numeric not null check (amount >= 0),
    until    timestamptz not null,
    primary key (hold_id, slot)
);
create index budget_holds_user on budget_holds (user_id, until) include (model_id, amount);

-- What a charge reserved, and what the agent reported above it (never
-- charged: the reservation is the most a call is charged).
alter table usage_ledger add column reserved numeric,
                         add column written_off numeric not null default 0;

-- The start of the current UTC month.
create function chatd_month_start() returns timestamptz language sql stable as $$
    select date_trunc('month', clock_timestamp(), 'UTC')
$$;

-- Every cap that binds p_user now, with what is spent this month and
-- what live holds set aside: scope 'user' (the admin's and the personal
-- cap, the lower), 'model' (one per capped model), 'group'.
create function chatd_caps(p_user uuid)
    returns table (scope text, name text, model_id int, cap numeric, spent numeric,
                   reserved numeric)
    language sql stable as $$
    with u as (select monthly_cap, personal_cap from user_data where user_id = p_user),
         mine as (select model_name, cost from usage_ledger
                   where user_id = p_user and created_at >= chatd_month_start()),
         held as (select model_id, amount from budget_holds
                   where user_id = p_user and until > clock_timestamp())
    select 'user', case when u.personal_cap is not null
                             and (u.monthly_cap is null or u.personal_cap < u.monthly_cap)
                        then 'personal' else 'admin' end, null::int,
           least(u.monthly_cap, u.personal_cap),
           coalesce((select sum(cost) from mine), 0),
           coalesce((select sum(amount) from held), 0)
      from u where coalesce(u.monthly_cap, u.personal_cap) is not null
    union all
    select 'model', m.model_name, c.model_id, c.monthly_cap,
           coalesce((select sum(cost) from mine where mine.model_name = m.model_name), 0),
           coalesce((select sum(amount) from held where held.model_id = c.model_id), 0)
      from user_model_caps c join model_details m using (model_id)
     where c.user_id = p_user
    union all
    select 'group', g.group_name, null, g.monthly_cap,
           coalesce((select sum(l.cost) from user_group_members o
                       join usage_ledger l on l.user_id = o.user_id
                                          and l.created_at >= chatd_month_start()
                      where o.group_name = g.group_name), 0),
           coalesce((select sum(h.amount) from user_group_members o
                       join budget_holds h on h.user_id = o.user_id
                                          and h.until > clock_timestamp()
                      where o.group_name = g.group_name), 0)
      from user_group_members gm join user_groups g using (group_name)
     where gm.user_id = p_user
$$;

-- Reserves, for hold p_hold, p_calls calls of each model in p_models
-- (slot i for the i-th) against the balance and every cap of p_user, for
-- p_seconds; a call of at most p_in_tokens in and p_out_tokens out when
-- the caller knows less than the model's limits (a title: its text is
-- known; null: the limits). Each call reserves the most it can cost, or its share of
-- what is left when less (then it is charged at most that). Under
-- advisory locks of the user and of each of their groups, taken in one
-- order, so that reservations of one user, or of one group, are made one
-- at a time, and each sees the ones before (every statement of a function
-- reads a fresh snapshot). refused: null, or the cap that is used up ('balance',
-- 'user', 'model:<name>', 'group:<name>'), with resets the moment it
-- resets (null for the balance).
create function chatd_reserve(p_user uuid, p_hold uuid, p_models int[], p_calls int,
                              p_seconds int, p_in_tokens int, p_out_tokens int,
                              out amounts numeric[], out refused text,
                              out resets timestamptz)
    language plpgsql as $$
declare
    n int := coalesce(array_length(p_models, 1), 0);
    fulls numeric[];
    bal numeric;
    capped boolean;
    grouped boolean;
    c record;
    lim numeric[];
    what text[];
    mid int[];
    i int;
    j int;
    k int;
    rest int;
    amt numeric;
    bind int;
begin
    amounts := '{}';
    -- The most each call can cost, before any lock is taken.
    select array_agg(coalesce(m.max_turn_cost,
                              trim_scale((least(coalesce(p_in_tokens, m.context_length),
                                                m.context_length) * m.input_price_per_1k
                                          + least(coalesce(p_out_tokens, m.max_output_tokens),
                                                  m.max_output_tokens) * m.output_price_per_1k)
                                         / 1000 * p_calls), 0) order by x.i)
      into fulls
      from unnest(p_models) with ordinality x(id, i)
      left join model_details m on m.model_id = x.id;
    -- One reservation of the user at a time, and of each of their groups
    -- (in one order): advisory locks, which queue without writing a row
    -- (the store's balance update writes the user's row already). What
    -- follows under them is kept short: for a user without caps, one read
    -- and one insert.
    perform pg_advisory_xact_lock(hashtextextended('chatd budget user ' || p_user, 0));
    -- The balance and the live holds in one snapshot (one statement): a
    -- store that commits meanwhile is seen whole (its charge, its hold
    -- gone) or not at all (its hold, never less than its charge, counted).
    select u.balance - coalesce((select sum(h.amount) from budget_holds h
                                  where h.user_id = p_user and h.until > clock_timestamp()), 0),
           u.monthly_cap is not null or u.personal_cap is not null
           or exists (select 1 from user_model_caps mc where mc.user_id = p_user),
           exists (select 1 from user_group_members gm where gm.user_id = p_user)
      into bal, capped, grouped
      from user_data u where u.user_id = p_user;
    if not found then
        refused := 'user';
        return;
    end if;
    if grouped then
        perform pg_advisory_xact_lock(hashtextextended('chatd budget group ' || group_name, 0))
           from (select group_name from user_group_members where user_id = p_user
                  order by group_name) g;
    end if;
    -- The limits: the balance less every live hold, then every cap.
    lim := array[bal];
    what := array['balance'];
    mid := array[null::int];
    if capped or grouped then
        for c in select * from chatd_caps(p_user) loop
            lim := lim || (c.cap - c.spent - c.reserved);
            what := what || case c.scope when 'user' then 'user'
                                         else c.scope || ':' || c.name end;
            mid := mid || c.model_id;
        end loop;
    end if;
    for i in 1 .. n loop
        amt := fulls[i];
        bind := null;
        for j in 1 .. array_length(lim, 1) loop
            continue when mid[j] is not null and mid[j] <> p_models[i];
            -- What is left is shared with the answers still to come that
            -- the same limit binds (answers side by side, code 18).
            rest := 0;
            for k in i .. n loop
                if mid[j] is null or p_models[k] = mid[j] then
                    rest := rest + 1;
                end if;
            end loop;
            if lim[j] / rest < amt then
                amt := trim_scale(trunc(lim[j] / rest, 12));
                bind := j;
            end if;
        end loop;
        if amt <= 0 and fulls[i] > 0 then
            amounts := '{}';
            refused := what[coalesce(bind, 1)];
            if refused <> 'balance' then
                resets := chatd_month_start() + interval '1 month';
            end if;
            return;
        end if;
        amt := greatest(amt, 0);
        for j in 1 .. array_length(lim, 1) loop
            if mid[j] is null or mid[j] = p_models[i] then
                lim[j] := lim[j] - amt;
            end if;
        end loop;
        amounts := amounts || amt;
    end loop;
    insert into budget_holds (hold_id, slot, user_id, model_id, amount, until)
    select p_hold, x.i - 1, p_user, x.id, amounts[x.i],
           clock_timestamp() + p_seconds * interval '1 second'
      from unnest(p_models) with ordinality x(id, i);
end $$;

-- A turn's lease (0007's lease_take, now a function) and its reservation
-- in one round trip: the session row (FOR KEY SHARE, as before), the
-- lease when nobody holds it or the holder's ran out, and only then the
-- reservation; refused, the lease is given back at once.
--   -> next_seq, taken, the session is the user's, active leaf, amounts,
--      refused, resets
create function chatd_lease_take(p_user uuid, p_session uuid, p_turn uuid, p_seconds int,
                                 p_new boolean, p_models int[], p_calls int,
                                 out next_seq bigint, out taken boolean, out is_users boolean,
                                 out leaf bigint, out amounts numeric[], out refused text,
                                 out resets timestamptz)
    language plpgsql as $$
declare
    r record;
    n bigint;
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
    insert into turn_leases (session_id, user_id, turn_id, lease_until)
    values (p_session, p_user, p_turn, clock_timestamp() + p_seconds * interval '1 second')
    on conflict (session_id) do update
       set user_id = excluded.user_id, turn_id = excluded.turn_id,
           lease_until = excluded.lease_until, stopped = false
     where turn_leases.lease_until < clock_timestamp();
    get diagnostics n = row_count;
    taken := n > 0;
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
