-- 0001_init.sql - users, the model catalogue, sessions, messages, files.
--
-- Admins add users with plain SQL, unchanged from the system chatd replaces:
--   insert into user_data(username, models, balance) VALUES ('Test User', array[4,5,8], 1);
-- so user_id has a default and models is an int[] of model_details ids.

create table user_data (
    user_id    uuid primary key default gen_random_uuid(),
    username   text not null,
    models     int[] not null default '{}',
    balance    double precision not null default 0,
    created_at timestamptz not null default now()
);

create table model_details (
    model_id            int primary key,
    model_name          text not null unique,
    provider            text not null check (provider in ('openai', 'ollama')),
    context_length      int not null check (context_length > 0),
    input_price_per_1k  double precision not null,
    output_price_per_1k double precision not null
);

insert into model_details values
    (0, 'gpt-3.5-turbo-0125',     'openai', 16385,  0.0005, 0.0015),
    (1, 'gpt-3.5-turbo',          'openai', 16385,  0.003,  0.006),
    (2, 'gpt-3.5-turbo-1106',     'openai', 16385,  0.001,  0.002),
    (3, 'gpt-3.5-turbo-instruct', 'openai', 4096,   0.0015, 0.002),
    (4, 'gpt-4-turbo',            'openai', 128000, 0.01,   0.03),
    (5, 'gpt-4-turbo-2024-04-09', 'openai', 128000, 0.01,   0.03),
    (6, 'gpt-4',                  'openai', 8192,   0.03,   0.06),
    (7, 'gpt-4-32k',              'openai', 32768,  0.06,   0.12),
    (8, 'llama3.1:8b',            'ollama', 4096,   0.0015, 0.002);

-- next_seq is the sequence number the next message of the session gets:
-- appending a turn touches this one row and inserts one row per message, so
-- it costs the same in a session of ten messages as in one of ten thousand.
create table chat_sessions (
    session_id     uuid primary key default gen_random_uuid(),
    user_id        uuid not null references user_data(user_id) on delete cascade,
    session_name   text not null,
    model_id       int not null references model_details(model_id),
    session_prompt text not null default '',
    summary        text not null default '',
    next_seq       bigint not null default 0,
    created_at     timestamptz not null default clock_timestamp(),
    updated_at     timestamptz not null default clock_timestamp()
);
create index chat_sessions_user_created on chat_sessions (user_id, created_at desc, session_id);

create table chat_messages (
    session_id uuid not null references chat_sessions(session_id) on delete cascade,
    seq        bigint not null,
    role       text not null check (role in ('user', 'assistant', 'file')),
    content    text not null,
    created_at timestamptz not null default clock_timestamp(),
    primary key (session_id, seq)
);

create table uploaded_files (
    file_id       uuid primary key default gen_random_uuid(),
    session_id    uuid not null references chat_sessions(session_id) on delete cascade,
    user_id       uuid not null references user_data(user_id) on delete cascade,
    stored_name   text not null unique,
    original_name text not null default '',
    content_type  text not null default '',
    size_bytes    bigint not null,
    created_at    timestamptz not null default clock_timestamp()
);
create index uploaded_files_session on uploaded_files (session_id);
