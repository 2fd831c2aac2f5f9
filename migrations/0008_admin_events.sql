-- 0008_admin_events.sql - an admin's SQL sends the user's events at once.
--
-- chatd publishes the events of what it does itself (work/events.c). What
-- an admin does with plain SQL (or any program that is not chatd: its
-- connections say application_name=chatd) is announced here, at commit,
-- on NOTIFY chatd_admin, which every chatd LISTENs to and delivers to its
-- own subscribed connections: a user's models or balance changed, a
-- session inserted, renamed or deleted.
create function chatd_notify_admin() returns trigger language plpgsql as $$
declare
    ev json;
begin
    if current_setting('application_name', true) = 'chatd' then
        return null;
    end if;
    if tg_table_name = 'user_data' then
        if old.models is distinct from new.models then
            perform pg_notify('chatd_admin', json_build_object(
                'user_id', new.user_id, 'kind', 'models')::text);
        end if;
        if old.balance is distinct from new.balance then
            perform pg_notify('chatd_admin', json_build_object(
                'user_id', new.user_id, 'kind', 'balance', 'balance', new.balance)::text);
        end if;
        return null;
    end if;
    if tg_op = 'INSERT' then
        ev := json_build_object('user_id', new.user_id, 'kind', 'session_created',
                                'session_id', new.session_id, 'session_name', new.session_name);
    elsif tg_op = 'DELETE' then
        ev := json_build_object('user_id', old.user_id, 'kind', 'session_deleted',
                                'session_id', old.session_id);
    elsif old.session_name is distinct from new.session_name then
        ev := json_build_object('user_id', new.user_id, 'kind', 'session_renamed',
                                'session_id', new.session_id, 'session_name', new.session_name);
    end if;
    if ev is not null and octet_length(ev::text) < 7900 then
        perform pg_notify('chatd_admin', ev::text);
    end if;
    return null;
end $$;

create trigger user_data_admin_events after update on user_data for each row
    when (old.models is distinct from new.models or old.balance is distinct from new.balance)
    execute function chatd_notify_admin();
create trigger chat_sessions_admin_events after insert or delete or update of session_name
    on chat_sessions for each row execute function chatd_notify_admin();
