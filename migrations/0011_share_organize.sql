-- 0011_share_organize.sql - organizing chats (code 24: pinned, archived,
-- tags) and share links (codes 21..23, GET /s/<id>).
--
-- Organizing is three columns of the session. Tags are kept as the user
-- wrote them and compared case-insensitively; chatd writes at most one of
-- each (by lower()), the check keeps plain SQL within the same bound.
alter table chat_sessions
    add column pinned   boolean not null default false,
    add column archived boolean not null default false,
    add column tags     text[]  not null default '{}',
    add constraint chat_sessions_tags_max check (cardinality(tags) <= 20);

-- Code 1 with a filter: a user's sessions, pinned first, then newest.
create index chat_sessions_user_pinned
    on chat_sessions (user_id, archived, pinned desc, created_at desc, session_id);

-- A share link is a snapshot without a copy: messages never change once
-- stored (an edit or a new answer is a new message beside the old one),
-- so the path from the first message to leaf_seq is the chat as it was
-- when the link was made, whatever comes after. The name is copied, as
-- it was. A link goes with its session, and with the message it ends at.
-- Revoking deletes the row: a revoked link and one never made are the
-- same 404.
create table share_links (
    share_id     text primary key,
    user_id      uuid not null references user_data(user_id) on delete cascade,
    session_id   uuid not null references chat_sessions(session_id) on delete cascade,
    leaf_seq     bigint not null,
    title        text not null,
    created_at   timestamptz not null default clock_timestamp(),
    expires_at   timestamptz,
    max_views    integer check (max_views > 0),
    views        integer not null default 0,
    last_view_at timestamptz,
    foreign key (session_id, leaf_seq) references chat_messages (session_id, seq)
        on delete cascade
);
create index share_links_user on share_links (user_id, created_at desc);
create index share_links_session on share_links (session_id);
