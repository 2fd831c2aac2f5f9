-- 0016_search_prefix.sql - a message is searched by its first 100,000
-- characters.
--
-- PostgreSQL refuses a tsvector whose lexemes and positions pass 1 MB
-- ("string is too long for tsvector"), and chat_messages.search is a
-- stored generated column, computed by the INSERT itself: a message of
-- more than about 1 MB of distinct words (a reply holding a dump or a table
-- of hashes; a user's message where MAX_CHAT_MESSAGE_BYTES allows up to
-- 16 MiB) made the turn's whole store fail, its reply lost. A character
-- of text costs at most about 7.5 bytes of tsvector (hyphenated words of
-- 4-byte letters, each indexed whole and in parts, are the worst case
-- measured), so 100,000 characters stay under 0.8 MB whatever they hold;
-- a longer message is stored whole and searched by its beginning
-- (tests/integration/test_history.py LongMessages).
--
-- Re-creating a stored generated column rewrites the table and rebuilds
-- its index (PostgreSQL 15 cannot change a generation expression in
-- place): on a large chat_messages, run this at a quiet time.
do $$
declare cfg text := (select config::text from chatd_search);
begin
    alter table chat_messages drop column search; -- and its index
    execute format('alter table chat_messages add column search tsvector'
                   ' generated always as (to_tsvector(%L::regconfig, left(content, 100000))) stored',
                   cfg);
end $$;

create index chat_messages_search on chat_messages using gin (search);
