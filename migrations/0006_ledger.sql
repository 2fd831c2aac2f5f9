-- 0006_ledger.sql - money that adds up (code 13), and titles.
--
-- Balances and prices become exact decimals: 10 - 0.000128 - 0.000218 is
-- 9.999654, not 9.99965400000003. Admins' SQL keeps working unchanged
-- (insert ... balance 1; update user_data set balance = balance + 5): a
-- numeric takes integer and decimal literals, and float8 values cast.
alter table user_data alter column balance type numeric using balance::numeric;
alter table model_details
    alter column input_price_per_1k type numeric using input_price_per_1k::numeric,
    alter column output_price_per_1k type numeric using output_price_per_1k::numeric;

-- One row per charge, written in the same statement as the charge itself,
-- so that at every moment a user's balance is their starting balance
-- (plus whatever admins added) minus the sum of their rows. A turn's row
-- carries the assistant message's seq; a title's row the same seq of the
-- session's first turn. session_id has no foreign key: money spent on a
-- session stays spent when the session is deleted.
create table usage_ledger (
    entry_id          bigint generated always as identity primary key,
    user_id           uuid not null references user_data(user_id) on delete cascade,
    session_id        uuid not null,
    seq               bigint not null,
    kind              text not null check (kind in ('turn', 'title')),
    model_id          int,
    model_name        text not null,
    cost              numeric not null check (cost >= 0),
    -- as the agent reported them; null when it did not. estimated: the
    -- turn was stopped before the agent reported a cost, and chatd charged
    -- its own token estimate at the model's prices.
    prompt_tokens     bigint,
    completion_tokens bigint,
    estimated         boolean not null default false,
    created_at        timestamptz not null default clock_timestamp()
);
-- Code 13 (one user, a time range) reads one index range.
create index usage_ledger_user_time on usage_ledger (user_id, created_at)
    include (model_name, kind, cost);

-- For admins: spending per user, model and UTC day.
--   select * from usage_daily where day >= current_date - 7 order by spent desc;
create view usage_daily as
select l.user_id,
       u.username,
       l.model_name,
       (l.created_at at time zone 'UTC')::date as day,
       count(*) filter (where l.kind = 'turn') as turns,
       sum(l.cost) as spent,
       sum(l.prompt_tokens) as prompt_tokens,
       sum(l.completion_tokens) as completion_tokens
  from usage_ledger l join user_data u using (user_id)
 group by l.user_id, u.username, l.model_name, (l.created_at at time zone 'UTC')::date;

-- A title from the agent replaces the 20-character name only while the
-- user has not named the session (code 10 sets this).
alter table chat_sessions add column named_by_user boolean not null default false;
