-- 0010_tree.sql - the conversation as a tree (codes 17 edit, 18
-- regenerate, 19 switch, 20 fork).
--
-- Each message has a parent: the message before it on its path, none
-- (null) for a first message. Messages with the same parent are
-- alternatives ("siblings"), ordered by seq. The database keeps the tree
-- whole whatever order concurrent turns commit in: a parent is a message
-- of the same session (the foreign key), older than its child (the check:
-- so no cycle can ever form), and never deleted under a child (messages go
-- only with their session).
--
-- Existing sessions become a single path: every message's parent is the
-- one before it. This rewrites chat_messages once; on a large table, run
-- it at a quiet time.
alter table chat_messages add column parent_seq bigint;
update chat_messages set parent_seq = seq - 1 where seq > 0;
alter table chat_messages
    add constraint chat_messages_parent
        foreign key (session_id, parent_seq) references chat_messages (session_id, seq)
        on delete cascade,
    add constraint chat_messages_parent_older check (parent_seq < seq);

-- An insert that names no parent appends to the session in seq order, as
-- every insert did before this migration, and when it continues the
-- active path the path goes on to it: admins' and tests' plain SQL keeps
-- its meaning. chatd names every parent; it writes -1 for "none", a first
-- message or an alternative to one, which becomes null here.
create function chat_messages_parent_default() returns trigger language plpgsql as $$
begin
    if new.parent_seq is null and new.seq > 0 then
        new.parent_seq := new.seq - 1;
        update chat_sessions set active_leaf = new.seq
         where session_id = new.session_id and active_leaf = new.seq - 1;
    elsif new.parent_seq = -1 then
        new.parent_seq := null;
    end if;
    return new;
end $$;
create trigger chat_messages_parent_default before insert on chat_messages
    for each row execute function chat_messages_parent_default();

-- A place's alternatives, in order: siblings and a message's index among
-- them (code 9), the children walked down by a switch (code 19). A first
-- message's place is -1 (a btree finds "= -1" where it cannot "is null").
create index chat_messages_children on chat_messages (session_id, coalesce(parent_seq, -1), seq);

-- The running summary belongs to a path, not to a session: each stored
-- turn writes the summary of its path on its assistant message, and the
-- summary a turn is given is the one on the nearest assistant message of
-- the path it continues. An edit never sees another branch's summary.
-- chat_sessions.summary stays: the summary of the session's latest turn.
alter table chat_messages add column summary text;
update chat_messages m set summary = s.summary
  from chat_sessions s
 where m.session_id = s.session_id and s.summary <> ''
   and m.seq = (select max(a.seq) from chat_messages a
                 where a.session_id = s.session_id and a.role = 'assistant');

-- The session's active leaf: the active path runs from its first message
-- to this one. Null: the newest message (next_seq - 1), which is what
-- every session written before this migration, or by plain SQL, shows.
alter table chat_sessions add column active_leaf bigint;

-- Rate-limit counters are re-seeded from the ledger's turns now (an
-- answer regenerated adds no user message, yet it is a turn), so the
-- index of 0002 has nothing left to serve.
drop index if exists chat_messages_user_turns;
