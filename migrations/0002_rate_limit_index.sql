-- 0002_rate_limit_index.sql - a cheap count of a user's recent chat turns.
--
-- Rate-limit counters live in Redis, which may be flushed at any moment; a
-- missing counter is re-seeded from the user's user-role messages since the
-- window started (pg.c, PG_TURNS_SINCE). Without this index that count
-- reads every message of every session of the user; with it, one short
-- range per session. Partial: only user rows, the ones counted, are indexed,
-- so assistant and file rows cost nothing extra on insert.
--
-- Migrations run in a transaction, so this is a plain (locking) CREATE
-- INDEX. On a large existing chat_messages, create it by hand first with
--   create index concurrently chat_messages_user_turns
--       on chat_messages (session_id, created_at) where role = 'user';
-- and this file then finds it and does nothing.
create index if not exists chat_messages_user_turns
    on chat_messages (session_id, created_at) where role = 'user';
