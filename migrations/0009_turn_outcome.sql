-- 0009_turn_outcome.sql - what became of a turn, asked by its id, and a
-- stop that is true whichever chatd runs the turn.
--
-- A client resuming a turn (code 16) must be told how it ended even when
-- its last frame never reached Redis (a stall, a dropped connection, the
-- chatd that ran it killed right after its commit): the ledger row a
-- stored turn writes names the turn, so "was turn T stored?" is one
-- index probe, and error 29 (Turn Interrupted) is sent only when it was
-- not. It also says how many deltas the turn streamed, so a resumer given
-- the end from here knows whether it missed any.
alter table usage_ledger add column turn_id uuid,
                         add column turn_deltas integer; -- type 7 frames it streamed
create index usage_ledger_turn on usage_ledger (turn_id) where turn_id is not null;

-- A stop (code 8) from another connection or chatd marks the running
-- turn's lease, and the statement that stores the turn reads the mark
-- under the same row lock: a stop acknowledged before the store is stored
-- as stopped (the reply ends " [stopped]"); one that comes after finds no
-- lease and is answered error 23. So `stopped: true` never comes before a
-- full reply, however the two race across instances.
alter table turn_leases add column stopped boolean not null default false;
