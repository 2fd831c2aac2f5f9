-- 0012_import.sql - importing chats from other products' exports and
-- chatd's own (POST /import).
--
-- An imported session remembers where it came from (format and the
-- export's id of the conversation), once per user: importing the same
-- file again finds each of its conversations already there and creates
-- nothing new.
alter table chat_sessions add column import_source text;
create unique index chat_sessions_import_source on chat_sessions (user_id, import_source)
    where import_source is not null;

-- One row per import: what GET /import/<id> reads, and what the events
-- import_progress and import_finished say.
create table imports (
    import_id   uuid primary key,
    user_id     uuid not null references user_data(user_id) on delete cascade,
    status      text not null default 'running'
                check (status in ('running', 'finished', 'failed')),
    format      text not null default '',
    total       integer,
    done        integer not null default 0,
    sessions    integer not null default 0,
    messages    bigint not null default 0,
    skipped     jsonb not null default '[]',
    error       text,
    created_at  timestamptz not null default clock_timestamp(),
    finished_at timestamptz
);
create index imports_user on imports (user_id, created_at desc);
