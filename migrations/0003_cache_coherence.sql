-- 0003_cache_coherence.sql - what lets the Redis copies never contradict
-- PostgreSQL, and the bare file names the existing client links to.
--
-- 1. Every change that a cached copy depends on announces itself at commit
--    with NOTIFY chatd_cache, naming the user ('u:<user_id>:<xid>') or the
--    model catalogue ('m:<xid>') and the writing transaction's id. Each
--    chatd listens (store/inval.c) and, per user, remembers the newest
--    writing transaction it has heard of. A cached copy records the
--    snapshot it was read in (pg_snapshot_xmin / xmax); it is used only if
--    every transaction it may have missed is older than what chatd has
--    heard of. The triggers fire for chatd's own writes and for an admin's
--    plain SQL alike, so an UPDATE of a user's models is seen at once.
--    NOTIFY is sent at commit only: a rolled-back write announces nothing.
--
-- 2. The content of a 'file' message is the bare stored name (what the
--    existing client appends to .../uploads/), not the URL chatd used to
--    store; existing rows are rewritten.

create function chatd_notify_user() returns trigger language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        perform pg_notify('chatd_cache', 'u:' || old.user_id || ':' || pg_current_xact_id());
    end if;
    if tg_op in ('INSERT', 'UPDATE') and (tg_op = 'INSERT' or new.user_id <> old.user_id) then
        perform pg_notify('chatd_cache', 'u:' || new.user_id || ':' || pg_current_xact_id());
    end if;
    return null;
end $$;

-- A user's profile (username, models) and existence. Balance changes (every
-- turn) do not touch any cached copy and announce nothing.
create trigger user_data_cache_update after update on user_data for each row
    when (old.username is distinct from new.username or old.models is distinct from new.models
          or old.user_id is distinct from new.user_id)
    execute function chatd_notify_user();
create trigger user_data_cache_delete after delete on user_data for each row
    execute function chatd_notify_user();

-- A user's session list: sessions created, deleted, renamed or moved. A
-- turn's next_seq / summary update touches no list and announces nothing.
create trigger chat_sessions_cache_insert after insert on chat_sessions for each row
    execute function chatd_notify_user();
create trigger chat_sessions_cache_delete after delete on chat_sessions for each row
    execute function chatd_notify_user();
create trigger chat_sessions_cache_update after update on chat_sessions for each row
    when (old.session_name is distinct from new.session_name
          or old.user_id is distinct from new.user_id
          or old.created_at is distinct from new.created_at)
    execute function chatd_notify_user();

create function chatd_notify_models() returns trigger language plpgsql as $$
begin
    perform pg_notify('chatd_cache', 'm:' || pg_current_xact_id());
    return null;
end $$;

create trigger model_details_cache after insert or update or delete or truncate on model_details
    for each statement execute function chatd_notify_models();

update chat_messages
   set content = substring(content from '/uploads/([^/?#]+)$')
 where role = 'file' and content ~ '/uploads/[^/?#]+$';
