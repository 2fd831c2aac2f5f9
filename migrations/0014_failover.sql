-- 0014_failover.sql - a turn's outcome after a failover, and a turn sent
-- again by a client that never heard its answer.
--
-- A store whose commit outcome is unknown (the connection lost at the
-- commit, or the wait for the synchronous standby cut short by a
-- switchover) is looked up by chatd once it has reconnected to whichever
-- server is primary then: the ledger row of a stored turn names the turn
-- (0009) and, since several answers of one turn (code 18 side by side)
-- share its id, the answer's slot.
alter table usage_ledger add column turn_slot smallint;

-- A client may name its turn (code 3/17/18 "client_turn_id"). The row is
-- written by the statement that stores the turn, so a turn sent again with
-- the same name can never be stored (or charged) twice: the second store
-- fails on the key and is answered with the first one's reply, as is a
-- resend that comes after the first was stored.
create table client_turns (
    user_id        uuid not null references user_data(user_id) on delete cascade,
    client_turn_id text not null,
    session_id     uuid not null references chat_sessions(session_id) on delete cascade,
    turn_id        uuid not null,
    base           bigint not null, -- the first message it stored
    n              int not null,    -- how many it stored
    answer_seq     bigint not null, -- the assistant's
    parent_seq     bigint,          -- the first one's parent (codes 17, 18)
    created_at     timestamptz not null default clock_timestamp(),
    primary key (user_id, client_turn_id)
);
create index client_turns_session on client_turns (session_id);
