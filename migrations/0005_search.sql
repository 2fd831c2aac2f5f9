-- 0005_search.sql - full-text search over a user's messages and session
-- names (code 11), inside PostgreSQL: a stored tsvector on each, with a GIN
-- index. The text-search configuration is SEARCH_LANGUAGE (chatd passes it
-- as chatd.search_language; default 'simple', which matches words of any
-- language as they are written). It is kept in chatd_search, and the query
-- reads it from there, so the index and the query always use the same one;
-- changing SEARCH_LANGUAGE later needs these columns rebuilt.
--
-- Adding a stored generated column rewrites the table: on a large
-- chat_messages, run this at a quiet time.
create table chatd_search (config regconfig not null);
insert into chatd_search
    values (coalesce(nullif(current_setting('chatd.search_language', true), ''), 'simple')::regconfig);

do $$
declare cfg text := (select config::text from chatd_search);
begin
    execute format('alter table chat_messages add column search tsvector'
                   ' generated always as (to_tsvector(%L::regconfig, content)) stored', cfg);
    execute format('alter table chat_sessions add column name_search tsvector'
                   ' generated always as (to_tsvector(%L::regconfig, session_name)) stored', cfg);
end $$;

create index chat_messages_search on chat_messages using gin (search);
create index chat_sessions_name_search on chat_sessions using gin (name_search);
