-- 0004_feedback.sql - ratings of assistant messages (code 12), shown by
-- code 9 and counted in /metrics. One row per rated message; a rating of 0
-- deletes the row. It goes with its message (and so with its session).
create table message_feedback (
    session_id uuid not null,
    seq        bigint not null,
    user_id    uuid not null references user_data(user_id) on delete cascade,
    rating     smallint not null check (rating in (-1, 1)),
    comment    text not null default '',
    created_at timestamptz not null default clock_timestamp(),
    updated_at timestamptz not null default clock_timestamp(),
    primary key (session_id, seq),
    foreign key (session_id, seq) references chat_messages(session_id, seq) on delete cascade
);
