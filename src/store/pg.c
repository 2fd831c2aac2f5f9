/* pg.c - the prepared statements of chatd and the connection they run on.
 *
 * JSON that goes to the client is built by PostgreSQL itself (json_agg,
 * json_build_object) where a reply is a list: the server streams one text
 * value back and chatd never walks rows to re-encode them.
 *
 * Longer than most files (about 930 lines), nearly all of it SQL: every
 * statement chatd runs is in the one table below, with what it costs, so
 * that a reviewer (and scripts/pg_statement.py, which the benchmark and
 * the tests read them with) finds all of chatd's SQL in one place. */
#include "store/pg.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/metrics.h"

/* The first line of libpq's error message, for a "%.*s" in a log line. */
#define PG_ERRMSG(conn) (int)strcspn(PQerrorMessage(conn), "\n"), PQerrorMessage(conn)

/* The snapshot a statement read in, for a copy that goes to Redis: see
 * inval.h for how it is checked. */
#define PG_SNAPSHOT_COLS                                                                           \
    "pg_snapshot_xmin(pg_current_snapshot())::text, pg_snapshot_xmax(pg_current_snapshot())::text"

/* A path of the conversation tree (migration 0010), walked from the
 * message start of session $2 up through its parents, one index probe of
 * the (session_id, seq) key per message, while go (over p, the message
 * below, and m) holds: what it costs depends on how far it walks, never on
 * the session's size or its branches. depth is 1 at start; n counts
 * what counts ("1" for every message, or only those of a page). */
#define PG_PATH(start, n, go)                                                                      \
    "path(seq, parent_seq, role, content, summary, created_at, depth, n) as ("                     \
    "  select m.seq, m.parent_seq, m.role, m.content, m.summary, m.created_at, 1, " n              \
    "    from chat_messages m where m.session_id = $2::uuid and m.seq = " start "  union all"      \
    "  select m.seq, m.parent_seq, m.role, m.content, m.summary, m.created_at, p.depth + 1,"       \
    "         p.n + " n                                                                            \
    "    from path p join chat_messages m on m.session_id = $2::uuid and m.seq = p.parent_seq"     \
    "   where " go ")"

/* The session's active leaf: null (a session written before migration
 * 0010, or by plain SQL) is its newest message. */
#define PG_LEAF "coalesce(active_leaf, next_seq - 1)"

/* The walks of the statements below, named so that each statement reads
 * as one string: from the active leaf (s.leaf) to the first message (code
 * 2, an export's path); from
 * message $4 (a turn's context: a few steps, for the summary); from
 * message $3 (a fork, and the files it copies); code 9's, from $3's
 * parent b (or the leaf), counting only what is before $3, one more than
 * a page. */
#define PG_PATH_ALL PG_PATH("(select leaf from s)", "1", "true")
#define PG_PATH_CTX                                                                                \
    PG_PATH("$4::bigint and exists (select 1 from s)", "1", "p.depth < greatest($3::int, 3)")
#define PG_PATH_TO_SEQ(src) PG_PATH("$3::bigint and exists (select 1 from " src ")", "1", "true")
#define PG_PATH_PAGE                                                                               \
    PG_PATH("case when exists (select 1 from b) then (select parent_seq from b)"                   \
            " else (select leaf from s) end and exists (select 1 from s)",                         \
            "(m.seq < coalesce($3::bigint, 9223372036854775807))::int", "p.n <= $4::int")

/* Code 11's "tag:", "is:pinned", "is:archived" on a session s; never a
 * temporary chat. */
#define PG_SEARCH_SCOPE                                                                            \
    "not s.temporary and ($5::text is null or exists (select 1 from unnest(s.tags) t"              \
    "                             where lower(t) = lower($5::text)))"                              \
    " and ($6::boolean is null or s.pinned = $6::boolean)"                                         \
    " and ($7::boolean is null or s.archived = $7::boolean)"

/* A share link (l) can be viewed: not expired, views left. It still shows
 * what its last view showed (its files, a fork from it) for a while after
 * that view, so a page opened with the last view is not left broken. */
#define PG_SHARE_OPEN                                                                              \
    "((l.expires_at is null or l.expires_at > clock_timestamp())"                                  \
    " and (l.max_views is null or l.views < l.max_views))"
#define PG_SHARE_SHOWN                                                                             \
    "(l.expires_at is null or l.expires_at > clock_timestamp())"                                   \
    " and (l.max_views is null or l.views < l.max_views"                                           \
    "      or l.last_view_at > clock_timestamp() - interval '10 minutes')"
/* A link's snapshot: the path up from its message (l.leaf_seq). */
#define PG_SHARE_PATH                                                                              \
    "path(seq, parent_seq, role, content, created_at) as ("                                        \
    "  select m.seq, m.parent_seq, m.role, m.content, m.created_at"                                \
    "    from l join chat_messages m on m.session_id = l.session_id and m.seq = l.leaf_seq"        \
    "  union all"                                                                                  \
    "  select m.seq, m.parent_seq, m.role, m.content, m.created_at"                                \
    "    from path p, l join chat_messages m on m.session_id = l.session_id"                       \
    "   where m.seq = p.parent_seq)"

/* A session's last activity (updated_at) moves on with a stored turn
 * only once it is PG_ACTIVITY_STEP old. The column is indexed (the
 * sweeper's order, migration 0013), and an update that changes an
 * indexed column cannot be a heap-only one: it inserts into every index
 * of the row, the name's GIN index among them, where the next_seq and
 * active_leaf a turn moves are indexed by none. Left as it is, the update
 * stays on its page and writes no index (docs/BENCHMARKS.md, issue 26).
 * The sweeps subtract the step, so that a session goes at most one step
 * late and never early. */
#define PG_ACTIVITY_STEP "interval '1 minute'"
#define PG_ACTIVITY_MOVED                                                                          \
    "case when updated_at < clock_timestamp() - " PG_ACTIVITY_STEP " then clock_timestamp()"       \
    " else updated_at end"

/* Which sessions s (of user u) the sweeper deletes, and `chatd retention
 * --dry-run` lists: one text for both, so that the list is the sweep's.
 * Temporary chats whose last turn is older than $1 hours, sessions older
 * than their user's retention ($2 days for users without their own; 0:
 * for ever), pinned ones never, as of now plus $3 seconds (a test's
 * clock); the last turn is updated_at less PG_ACTIVITY_STEP. */
#define PG_TEMPORARY_DUE                                                                           \
    "s.temporary and $1::float8 > 0"                                                               \
    " and s.updated_at < clock_timestamp() + $3::float8 * interval '1 second'"                     \
    "                    - $1::float8 * interval '1 hour' - " PG_ACTIVITY_STEP
#define PG_RETENTION_DUE                                                                           \
    "not s.pinned and not s.temporary and coalesce(u.retention_days, $2::int) > 0"                 \
    " and s.updated_at < clock_timestamp() + $3::float8 * interval '1 second'"                     \
    "                    - coalesce(u.retention_days, $2::int) * interval '1 day'"                 \
    "                    - " PG_ACTIVITY_STEP

/* What both turn-store statements do once s (the session, returning the
 * base seq) has run; found is the "session found" column, reply_marked
 * the parameter that says the reply carries the stop marker already. The
 * assistant's text gets the marker when a stop from elsewhere marked the
 * lease (d.stopped, db_turn_stop) and it does not have it; the last
 * column says so. The ledger row names the turn and how many deltas it
 * streamed (deltas), which db_turn_outcome reads. The messages are a
 * chain: the first of them hangs under parent (-1: none), each next one
 * under the one before; first is the first of the three rows inserted (1
 * for a regenerated answer, whose question is stored already), and the
 * assistant's row carries the summary of its path. The columns are
 * evaluated left to right, and that is the order the steps run in: the
 * user's row (every turn of the user charges it) is locked last, so it is
 * held for the commit only, not while the messages are indexed. $23 is
 * the client's name for the turn (null: none): its row in client_turns
 * makes a second store of that name fail (migration 0014). */
#define PG_TURN_STORE_TAIL(found, reply_marked, deltas, parent, first, slot)                       \
    "     m as (insert into chat_messages (session_id, seq, parent_seq, role, content, summary)"   \
    "           select $2::uuid, s.base + v.i - " first ","                                        \
    "                  case when v.i = " first " then " parent " else s.base + v.i - " first       \
    " - 1"                                                                                         \
    "                  end,"                                                                       \
    "                  v.role, v.content, case when v.role = 'assistant' then $8::text end"        \
    "             from s, (values (0, 'user', $5::text),"                                          \
    "                             (1, 'assistant',"                                                \
    "                              case when coalesce((select stopped from d), false)"             \
    "                                        and not " reply_marked "::boolean"                    \
    "                                   then case when $6::text = '' then '[stopped]'"             \
    "                                             else $6::text || ' [stopped]' end"               \
    "                                   else $6::text end),"                                       \
    "                             (2, 'file', $7::text)) v(i, role, content)"                      \
    "            where v.i >= " first " and v.i < " first " + $4::int"                             \
    "           returning 1),"                                                                     \
    "     hd as (delete from budget_holds"                                                         \
    "             where hold_id = $3::uuid and slot = " slot "::int and exists (select 1 from s)"  \
    "            returning amount, until > clock_timestamp() as live),"                            \
    "     ch as (select r.raw, h.amount,"                                                          \
    "                   case when h.amount is null then r.raw"                                     \
    "                        when h.live then least(r.raw, h.amount) else 0 end as cost"           \
    "              from (select coalesce($12::numeric,"                                            \
    "                                    (select trim_scale((coalesce($14::bigint, 0)"             \
    "                                                          * mo.input_price_per_1k"            \
    "                                                        + coalesce($15::bigint, 0)"           \
    "                                                          * mo.output_price_per_1k) / 1000)"  \
    "                                       from model_details mo where mo.model_id = $10::int),"  \
    "                                    0) + $13::numeric as raw) r"                              \
    "              left join hd h on true),"                                                       \
    "     e as (insert into usage_ledger (user_id, session_id, seq, kind, model_id,"               \
    "                                     model_name, cost, prompt_tokens,"                        \
    "                                     completion_tokens, estimated, turn_id, turn_deltas,"     \
    "                                     reserved, written_off, turn_slot)"                       \
    "           select $1::uuid, $2::uuid, s.base + 1 - " first ", $9, $10::int, $11, ch.cost,"    \
    "                  $14::bigint, $15::bigint, $16::boolean, $3::uuid, " deltas "::int,"         \
    "                  ch.amount, ch.raw - ch.cost, " slot "::int"                                 \
    "             from s, ch"                                                                      \
    "           returning cost),"                                                                  \
    "     ct as (insert into client_turns (user_id, client_turn_id, session_id, turn_id, base, n," \
    "                                      answer_seq, parent_seq)"                                \
    "           select $1::uuid, $23, $2::uuid, $3::uuid, s.base, $4::int,"                        \
    "                  s.base + 1 - " first ", nullif(" parent ", -1)"                             \
    "             from s where $23::text is not null),"                                            \
    "     b as (update user_data set balance = balance - (select cost from e)"                     \
    "            where user_id = $1::uuid and exists (select 1 from e)"                            \
    "           returning balance)"                                                                \
    " select " found ", exists (select 1 from d), (select base from s),"                           \
    "        (select count(*) from m), (select balance from b), pg_current_xact_id()::text,"       \
    "        coalesce((select stopped from d), false) and not " reply_marked "::boolean"

/* The caps that bind user u now (migration 0013's chatd_caps), as a JSON
 * array: the user's, then per model, then per group, each with what is
 * spent this month, reserved by calls running, and left. */
#define PG_CAPS_JSON(u)                                                                            \
    "coalesce((select json_agg(json_build_object("                                                 \
    "            'scope', c.scope, 'name', c.name, 'cap', c.cap, 'spent', c.spent,"                \
    "            'reserved', c.reserved,"                                                          \
    "            'left', greatest(c.cap - c.spent - c.reserved, 0))"                               \
    "          order by array_position(array['user', 'model', 'group'], c.scope), c.name)"         \
    "        from chatd_caps(" u ") c), '[]')"
/* When the caps reset: the next UTC month. */
#define PG_CAPS_RESET                                                                              \
    "to_char((chatd_month_start() + interval '1 month') at time zone 'UTC',"                       \
    "        'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static const struct {
    const char *name;
    int nparams;
    const char *sql;
} pg_statements[PG_STMT_COUNT] = {
    [PG_USER_GET] = {"user_get", 1,
                     "select username, array_to_json(models)::text, " PG_SNAPSHOT_COLS
                     "  from user_data where user_id = $1::uuid"},
    [PG_USER_MODELS] =
        {"user_models", 1,
         "select coalesce((select json_agg(m.model_name order by m.model_name)"
         "                   from model_details m where m.model_id = any(u.models)), '[]')::text"
         "  from user_data u where u.user_id = $1::uuid"},
    [PG_BALANCE] = {"balance", 1, "select balance from user_data where user_id = $1::uuid"},
    [PG_SESSIONS_LIST] =
        {"sessions_list", 1,
         "select coalesce((select json_agg(json_build_object('session_id', s.session_id,"
         "                                                   'session_name', s.session_name)"
         "                            order by s.created_at desc, s.session_id)"
         "                   from chat_sessions s where s.user_id = u.user_id"
         "                    and not s.temporary), "
         "'[]')::text, " PG_SNAPSHOT_COLS "  from user_data u where u.user_id = $1::uuid"},
    /* Code 1 paged: the page after cursor ($2 created_at in epoch
     * microseconds, $3 session id; null: from the newest) in the list's
     * order, $4 of them, plus whether more follow and the next cursor. A
     * range of chat_sessions_user_created, whatever the list's length. */
    [PG_SESSIONS_PAGE] =
        {"sessions_page", 4,
         "with page as (select s.session_id, s.session_name, s.created_at, s.pinned, s.archived,"
         "                     s.tags from chat_sessions s"
         "               where s.user_id = $1::uuid and not s.temporary"
         "                 and ($2::bigint is null"
         "                      or s.created_at < timestamptz 'epoch' + $2::bigint * interval '1 "
         "microsecond'"
         "                      or (s.created_at = timestamptz 'epoch' + $2::bigint * interval '1 "
         "microsecond'"
         "                          and s.session_id > $3::uuid))"
         "               order by s.created_at desc, s.session_id limit $4::int + 1),"
         "     shown as (select * from page order by created_at desc, session_id limit $4::int)"
         " select (select count(*) from page) > $4::int,"
         "        coalesce((select json_agg(json_build_object('session_id', p.session_id,"
         "                                                    'session_name', p.session_name,"
         "                                                    'pinned', p.pinned,"
         "                                                    'archived', p.archived,"
         "                                                    'tags', p.tags)"
         "                                  order by p.created_at desc, p.session_id) from shown "
         "p),"
         "                 '[]')::text,"
         "        (select ((extract(epoch from created_at - timestamptz 'epoch') * "
         "1000000)::numeric)::bigint"
         "                || ':' || session_id"
         "           from shown order by created_at, session_id desc limit 1)"
         "   from user_data u where u.user_id = $1::uuid"},
    /* Code 2: the active path, first message first, in the shape the
     * existing client reads. */
    [PG_CHATS_GET] =
        {"chats_get", 2,
         "with recursive s as (select " PG_LEAF " as leaf from chat_sessions"
         "                      where user_id = $1::uuid and session_id = $2::uuid),"
         "  " PG_PATH_ALL
         " select coalesce((select json_agg(json_build_object('role', p.role, 'content', p.content)"
         "                                  order by p.seq) from path p), '[]')::text"
         "  from s"},
    [PG_SESSION_DELETE] =
        {"session_delete", 2,
         "delete from chat_sessions s where s.user_id = $1::uuid and s.session_id = $2::uuid"
         " returning coalesce((select json_agg(f.stored_name) from uploaded_files f"
         "                      where f.session_id = s.session_id), '[]')::text,"
         "           pg_current_xact_id()::text"},
    [PG_MODELS_LIST] =
        {"models_list", 0,
         "select coalesce(json_agg(model_name order by model_name), '[]')::text, " PG_SNAPSHOT_COLS
         "  from model_details"},
    /* Who may use what, in one round trip: the user's balance, and the
     * model named by $2 (or, when $2 is null, numbered $3) with whether it
     * is among the user's. No row: no user; null model columns: no such
     * model (or none asked for). */
    /* Every check of a chat turn in one round trip: access's columns,
     * then the session ($4, null for a new one) if it is the user's, and
     * whether file $5 (null for none) was uploaded into it by the user.
     *   -> ..., session name, next_seq (both null: not found), file found */
    [PG_TURN_CHECK] =
        {"turn_check", 5,
         "select u.balance, m.model_id, m.model_name, m.provider, m.context_length,"
         "       m.input_price_per_1k, m.output_price_per_1k, m.model_id = any(u.models),"
         "       s.session_name, s.next_seq,"
         "       exists (select 1 from uploaded_files f"
         "                where f.user_id = u.user_id and f.session_id = $4::uuid"
         "                  and f.stored_name = $5::text)"
         "  from user_data u left join model_details m"
         "    on case when $2::text is not null then m.model_name = $2::text"
         "            else m.model_id = $3::int end"
         "  left join chat_sessions s on s.user_id = u.user_id and s.session_id = $4::uuid"
         " where u.user_id = $1::uuid"},
    /* Codes 17 and 18, every check in one round trip: access's columns
     * for the model named $2 (null: the session's), then session $3 if
     * it is the user's, its message $4 and that message's parent (the
     * question of an answer), and the file the turn of $4 showed: a file
     * entry under $4 itself (an answer), or under an answer to it (a
     * question). Edits and new answers carry it on.
     *   -> ..., session name, next_seq (both null: not found), role, parent
     *      (-1: none), content (all null: no such message), the parent's
     *      role, parent and content, file name (null: none), prompt */
    [PG_BRANCH_CHECK] =
        {"branch_check", 4,
         "select u.balance, mo.model_id, mo.model_name, mo.provider, mo.context_length,"
         "       mo.input_price_per_1k, mo.output_price_per_1k, mo.model_id = any(u.models),"
         "       s.session_name, s.next_seq,"
         "       m.role, coalesce(m.parent_seq, -1), m.content,"
         "       q.role, coalesce(q.parent_seq, -1), q.content,"
         "       case m.role"
         "         when 'assistant' then"
         "           (select f.content from chat_messages f"
         "             where f.session_id = m.session_id and coalesce(f.parent_seq, -1) = m.seq"
         "               and f.role = 'file' order by f.seq desc limit 1)"
         "         when 'user' then"
         "           (select f.content from chat_messages a join chat_messages f"
         "                on f.session_id = a.session_id and coalesce(f.parent_seq, -1) = a.seq"
         "             where a.session_id = m.session_id and coalesce(a.parent_seq, -1) = m.seq"
         "               and a.role = 'assistant' and f.role = 'file'"
         "             order by f.seq desc limit 1)"
         "       end,"
         "       s.session_prompt"
         "  from user_data u"
         "  left join chat_sessions s on s.user_id = u.user_id and s.session_id = $3::uuid"
         "  left join model_details mo"
         "    on case when $2::text is not null then mo.model_name = $2::text"
         "            else mo.model_id = s.model_id end"
         "  left join chat_messages m on m.session_id = s.session_id and m.seq = $4::bigint"
         "  left join chat_messages q on q.session_id = m.session_id and q.seq = m.parent_seq"
         " where u.user_id = $1::uuid"},
    /* Code 19: the active leaf of the user's session $2 becomes the newest
     * message under its message $3 (itself when it has none): a child is
     * always newer than its parent, so the newest message of a subtree is
     * one of its leaves. Under the session row's lock, like a turn's
     * store. Walks $3's subtree through the children index.
     *   -> session found, new leaf (null: no such message), xid */
    [PG_SWITCH] =
        {"switch", 3,
         "with recursive s as (select session_id from chat_sessions"
         "                      where user_id = $1::uuid and session_id = $2::uuid for update),"
         "  sub(seq) as (select m.seq from s join chat_messages m"
         "                 on m.session_id = s.session_id and m.seq = $3::bigint"
         "               union all"
         "               select c.seq from sub join chat_messages c"
         "                 on c.session_id = $2::uuid and coalesce(c.parent_seq, -1) = sub.seq),"
         "  u as (update chat_sessions set active_leaf = (select max(seq) from sub)"
         "         where session_id = $2::uuid and exists (select 1 from sub)"
         "        returning active_leaf)"
         " select exists (select 1 from s), (select active_leaf from u),"
         "        pg_current_xact_id()::text"},
    /* Code 20, first step: the stored names of the files on the path to
     * message $3 of the user's session $2 (no row: no such session; null
     * json: no such message). */
    [PG_FORK_FILES] =
        {"fork_files", 3,
         "with recursive s as (select session_id from chat_sessions"
         "                      where user_id = $1::uuid and session_id = $2::uuid),"
         "  " PG_PATH_TO_SEQ(
             "s") " select case when exists (select 1 from path) then"
                  "          coalesce((select json_agg(p.content order by p.seq) from path p"
                  "                     where p.role = 'file'), '[]')::text end"
                  "   from s"},
    /* Code 20: session $4 of user $8 (the same user, or a viewer of a
     * share link), named $5 (null: "<name> (fork)"), holding a copy of the
     * path from the first message to message $3 of session $2 of user $1, renumbered 0.. as one
     * path, with its summaries; file entries name the copies $7 of the files $6 (new rows, the
     * originals' metadata), so the fork keeps them when the original goes. Foreign keys are checked
     * at the statement's end.
     *   -> source found, messages copied, name, xid */
    [PG_FORK] =
        {"fork", 8,
         "with recursive src as (select session_id, session_name, model_id, session_prompt"
         "                         from chat_sessions"
         "                        where user_id = $1::uuid and session_id = $2::uuid),"
         "  " PG_PATH_TO_SEQ(
             "src") ","
                    "  n as (select row_number() over (order by seq) - 1 as nseq, * from path),"
                    "  ns as (insert into chat_sessions (session_id, user_id, session_name, "
                    "model_id,"
                    "                                    session_prompt, summary, next_seq)"
                    "         select $4::uuid, $8::uuid, coalesce($5, src.session_name || ' "
                    "(fork)'),"
                    "                src.model_id, src.session_prompt,"
                    "                coalesce((select n.summary from n where n.role = 'assistant'"
                    "                           order by n.nseq desc limit 1), ''),"
                    "                (select count(*) from n)"
                    "           from src where exists (select 1 from n)"
                    "         returning session_name),"
                    "  nm as (insert into chat_messages (session_id, seq, parent_seq, role, "
                    "content,"
                    "                                    summary, created_at)"
                    "         select $4::uuid, n.nseq, n.nseq - 1, n.role,"
                    "                case when n.role = 'file'"
                    "                     then coalesce(($7::text[])[array_position($6::text[], "
                    "n.content)],"
                    "                                   n.content)"
                    "                     else n.content end,"
                    "                n.summary, n.created_at"
                    "           from n where exists (select 1 from ns)"
                    "         returning 1),"
                    "  nf as (insert into uploaded_files (session_id, user_id, stored_name, "
                    "original_name,"
                    "                                     content_type, size_bytes)"
                    "         select $4::uuid, $8::uuid, c.new, f.original_name, f.content_type,"
                    "                f.size_bytes"
                    "           from unnest($6::text[], $7::text[]) c(old, new)"
                    "           join uploaded_files f on f.stored_name = c.old and f.session_id = "
                    "$2::uuid"
                    "          where exists (select 1 from ns)"
                    "         returning 1)"
                    " select exists (select 1 from src), (select count(*) from nm),"
                    "        (select session_name from ns), (select count(*) from nf),"
                    "        pg_current_xact_id()::text"},
    [PG_ACCESS] = {"access", 3,
                   "select u.balance, m.model_id, m.model_name, m.provider, m.context_length,"
                   "       m.input_price_per_1k, m.output_price_per_1k, m.model_id = any(u.models)"
                   "  from user_data u left join model_details m"
                   "    on case when $2::text is not null then m.model_name = $2::text"
                   "            else m.model_id = $3::int end"
                   " where u.user_id = $1::uuid"},
    /* A turn's context: the newest $3 messages of the path that ends at
     * message $4 (-1: none), in order, and the summary on the nearest
     * assistant message of that path (each stored turn writes its path's
     * summary there; none, or one written before migration 0010: ""). A
     * turn continues after an assistant (or its file entry), so that one
     * is within three steps. */
    [PG_SESSION_CTX] =
        {"session_ctx", 4,
         "with recursive s as (select model_id, session_name, next_seq from chat_sessions"
         "                      where user_id = $1::uuid and session_id = $2::uuid),"
         "  " PG_PATH_CTX " select s.model_id, s.session_name,"
         "        coalesce((select p.summary from path p where p.role = 'assistant'"
         "                   order by p.depth limit 1), ''),"
         "        coalesce((select json_agg(json_build_object('role', p.role, 'content', p.content)"
         "                                   order by p.seq)"
         "                    from path p where p.depth <= $3::int), '[]')::text,"
         "        s.next_seq"
         "   from s"},
    [PG_SESSION_INSERT] =
        {"session_insert", 5,
         "insert into chat_sessions (session_id, user_id, session_name, model_id, session_prompt)"
         " values ($1::uuid, $2::uuid, $3, $4::int, $5)"},
    /* A turn stored in one statement (one round trip, atomic without a
     * BEGIN): lock the session row, give the lease back (fenced: only if it
     * is still this turn's), advance next_seq and the active leaf, insert
     * the messages, the ledger row and the charge. Each step runs only if
     * the one before did, so a fenced turn or a deleted session writes
     * nothing.
     *   $1 user, $2 session, $3 turn, $4 messages inserted (1..3),
     *   $5 message, $6 reply, $7 file name, $8 summary,
     *   $9 kind, $10 model id, $11 model name, $12 cost (null: estimate),
     *   $13 cost added (the summary's), $14 prompt tokens,
     *   $15 completion tokens, $16 estimated, $17 reply marked, $18 deltas,
     *   $19 parent of the first message (-1: none), $20 first row (0, or 1
     *   for a regenerated answer), $21 keep the lease (one of several
     *   answers side by side, not the last: fenced on the lease all the
     *   same, and the last one gives it back), $22 the answer's slot of
     *   the reservation the lease's turn holds (migration 0013: the charge
     *   is the real cost, at most the amount reserved; a reservation that
     *   ran out was counted by nobody since, and is charged nothing)
     *   -> session found, lease was ours, base seq, messages, balance, xid
     * The lock comes first, as in every statement that touches both rows
     * (lease_take locks the session row too, FOR KEY SHARE, which this
     * FOR UPDATE holds off until the commit: it then reads the new
     * next_seq, never an older one). */
    [PG_TURN_STORE] = {"turn_store", 23,
                       "with l as (select next_seq from chat_sessions"
                       "            where user_id = $1::uuid and session_id = $2::uuid for update),"
                       "     g as (delete from turn_leases"
                       "            where session_id = $2::uuid and turn_id = $3::uuid"
                       "              and exists (select 1 from l) and not $21::boolean"
                       "           returning stopped),"
                       "     k as (select stopped from turn_leases"
                       "            where session_id = $2::uuid and turn_id = $3::uuid"
                       "              and exists (select 1 from l) and $21::boolean for update),"
                       "     d as (select stopped from g union all select stopped from k),"
                       "     s as (update chat_sessions set next_seq = next_seq + $4::int,"
                       "                  active_leaf = next_seq + $4::int - 1, summary = $8,"
                       "                  updated_at = " PG_ACTIVITY_MOVED
                       "            where session_id = $2::uuid and exists (select 1 from d)"
                       "           returning next_seq - $4::int as base)," PG_TURN_STORE_TAIL(
                           "exists (select 1 from l)", "$17", "$18", "$19::bigint", "$20::int",
                           "$22")},
    /* The same for a new session's first turn: the session row is inserted
     * with the messages (foreign keys are checked at the statement's end).
     *   $17 session name, $18 session prompt, $19 reply marked, $20 deltas,
     *   $21 reservation slot, $22 temporary */
    [PG_TURN_STORE_NEW] =
        {"turn_store_new", 23,
         "with d as (delete from turn_leases"
         "            where session_id = $2::uuid and turn_id = $3::uuid returning stopped),"
         "     s as (insert into chat_sessions (session_id, user_id, session_name, model_id,"
         "                                      session_prompt, next_seq, active_leaf, summary,"
         "                                      temporary)"
         "           select $2::uuid, $1::uuid, $17, $10::int, $18, $4::int, $4::int - 1, $8,"
         "                  $22::boolean"
         "             from d"
         "           returning 0::bigint as base)," PG_TURN_STORE_TAIL("true", "$19", "$20",
                                                                       "-1::bigint", "0", "$21")},
    /* With the session row and its lease locked, who holds the lease: a
     * turn stores only while it is still its own (migration 0007). */
    [PG_SESSION_LOCK] =
        {"session_lock", 2,
         "select s.next_seq, coalesce((select l.turn_id::text from turn_leases l"
         "                              where l.session_id = s.session_id for update), '')"
         "  from chat_sessions s"
         " where s.user_id = $1::uuid and s.session_id = $2::uuid for update"},
    /* The session's turn lease for turn $3 ($5: a new session, which has
     * no row yet), when nobody holds it or the holder's ran out, and with
     * it the reservation of one call per model of $6 ($7 calls each, null:
     * none) against the balance and every cap (migration 0013's
     * chatd_lease_take): one round trip.
     *   -> next_seq, taken, the session is the user's, active leaf,
     *      amounts reserved (numeric[] text), refused cap, resets (epoch s) */
    [PG_LEASE_TAKE] = {"lease_take", 7,
                       "select next_seq, taken, is_users, leaf, amounts::text, refused,"
                       "       extract(epoch from resets)::bigint"
                       "  from chatd_lease_take($1::uuid, $2::uuid, $3::uuid, $4::int, $5::boolean,"
                       "                        $6::int[], $7::int)"},
    [PG_RESERVE_DROP] = {"reserve_drop", 1, "delete from budget_holds where hold_id = $1::uuid"},
    /* One answer's part of a reservation for answers side by side. */
    [PG_SLOT_DROP] = {"slot_drop", 2,
                      "delete from budget_holds where hold_id = $1::uuid and slot = $2::int"},
    /* A title's reservation: hold $2 for one call of model $3 of at most
     * $5 tokens in and $6 out.
     *   -> amounts (numeric[] text), refused, resets */
    [PG_RESERVE] = {"reserve", 6,
                    "select amounts::text, refused, extract(epoch from resets)::bigint"
                    "  from chatd_reserve($1::uuid, $2::uuid, array[$3::int], 1, $4::int,"
                    "                     $5::int, $6::int)"},
    /* Who runs a turn on the user's session now (its lease not run out),
     * and the next seq; both null: no such session of the user's. */
    [PG_SESSION_TURN] = {"session_turn", 2,
                         "select (select next_seq from chat_sessions"
                         "         where user_id = $1::uuid and session_id = $2::uuid),"
                         "       (select turn_id::text from turn_leases"
                         "         where session_id = $2::uuid and user_id = $1::uuid"
                         "           and lease_until > clock_timestamp())"},
    /* Code 8 from elsewhere: marks the turn running on the user's
     * session (its lease not run out) as stopped; no row: none runs. */
    [PG_TURN_STOP] = {"turn_stop", 2,
                      "update turn_leases set stopped = true"
                      " where session_id = $2::uuid and user_id = $1::uuid"
                      "   and lease_until > clock_timestamp()"
                      " returning turn_id::text"},
    /* A turn whose lease ran out can no longer be stored: its lease is
     * deleted (waiting, under the row lock, for a store under way). */
    [PG_LEASE_EXPIRE] =
        {"lease_expire", 2,
         "delete from turn_leases"
         " where session_id = $1::uuid and turn_id = $2::uuid and lease_until < clock_timestamp()"},
    /* After that, what became of turn $3 of user $1 on session $2: whether
     * it still holds its lease; if it was stored, its reply and the
     * session's name (null when the session was deleted since). */
    [PG_TURN_OUTCOME] =
        {"turn_outcome", 3,
         "select exists (select 1 from turn_leases where session_id = $2::uuid and turn_id = "
         "$3::uuid),"
         "       l.seq is not null, m.content, s.session_name, coalesce(l.turn_deltas, 0)"
         "  from (select 1) one"
         "  left join usage_ledger l on l.turn_id = $3::uuid and l.session_id = $2::uuid"
         "                          and l.user_id = $1::uuid and l.kind = 'turn'"
         "  left join chat_messages m on m.session_id = l.session_id and m.seq = l.seq"
         "  left join chat_sessions s on s.session_id = l.session_id"},
    [PG_LEASE_DROP] =
        {"lease_drop", 2,
         "with h as (delete from budget_holds where hold_id = $2::uuid)"
         " delete from turn_leases where session_id = $1::uuid and turn_id = $2::uuid"},
    /* Every lease this chatd holds, kept alive in one statement. */
    [PG_LEASE_RENEW] =
        {"lease_renew", 2,
         "with h as (update budget_holds"
         "             set until = clock_timestamp() + $2::int * interval '1 second'"
         "           where hold_id = any($1::uuid[]))"
         " update turn_leases set lease_until = clock_timestamp() + $2::int * interval '1 second'"
         " where turn_id = any($1::uuid[])"},
    /* A charge and its ledger row in one statement, so that the balance
     * is the starting balance minus the ledger at every moment. A cost
     * the agent did not report ($7 null: a stopped turn) is the token
     * estimate at the model's prices, computed here in exact decimals. */
    [PG_CHARGE] =
        {"charge", 12,
         "with hd as (delete from budget_holds where hold_id = $12::uuid"
         "            returning amount, until > clock_timestamp() as live),"
         "     ch as (select r.raw, h.amount,"
         "                   case when h.amount is null then r.raw"
         "                        when h.live then least(r.raw, h.amount) else 0 end as cost"
         "              from (select coalesce($7::numeric,"
         "                                    (select trim_scale((coalesce($9::bigint, 0)"
         "                                                          * m.input_price_per_1k"
         "                                                        + coalesce($10::bigint, 0)"
         "                                                          * m.output_price_per_1k)"
         "                                                       / 1000)"
         "                                       from model_details m where m.model_id = $5::int),"
         "                                    0) + $8::numeric as raw) r"
         "              left join hd h on true),"
         "     e as (insert into usage_ledger (user_id, session_id, seq, kind, model_id,"
         "                                     model_name, cost, prompt_tokens,"
         "                                     completion_tokens, estimated, reserved, written_off)"
         "           select $1::uuid, $2::uuid, $3::bigint, $4, $5::int, $6, ch.cost,"
         "                  $9::bigint, $10::bigint, $11::boolean, ch.amount, ch.raw - ch.cost"
         "             from ch"
         "           returning cost)"
         " update user_data set balance = balance - (select cost from e) where user_id = $1::uuid"
         " returning balance, pg_current_xact_id()::text"},
    [PG_FILE_INSERT] =
        {"file_insert", 6,
         "insert into uploaded_files (session_id, user_id, stored_name, original_name,"
         "                            content_type, size_bytes)"
         " values ($1::uuid, $2::uuid, $3, $4, $5, $6::bigint) returning "
         "pg_current_xact_id()::text"},
    /* A file some stored turn shows (its "file" message holds the stored
     * name) is never deleted by a later failing turn. */
    [PG_FILE_DELETE] =
        {"file_delete", 3,
         "delete from uploaded_files f"
         " where f.user_id = $1::uuid and f.session_id = $2::uuid and f.stored_name = $3"
         "   and not exists (select 1 from chat_messages m"
         "                    where m.session_id = f.session_id and m.role = 'file'"
         "                      and m.content = f.stored_name)"
         " returning f.stored_name"},
    /* The user's chat turns since the start of the rate-limit windows, to
     * re-seed a Redis counter that is missing (a new window, or a flushed
     * Redis): the ledger rows of kind 'turn', one per stored turn (an
     * edit's, and each answer of a regenerate, which adds no user
     * message). One range of the ledger's (user_id, created_at) index,
     * which holds kind, whatever the user's history. */
    [PG_TURNS_SINCE] =
        {"turns_since", 3,
         "select count(*) filter (where l.created_at >= to_timestamp($2::float8)), count(*)"
         "  from usage_ledger l"
         " where l.user_id = $1::uuid and l.kind = 'turn'"
         "   and l.created_at >= to_timestamp($3::float8)"},
    /* Code 9: up to $4 messages of the active path before message $3
     * (the newest when null), newest page first, as one JSON array in
     * ascending seq, with the page's has_more and lowest seq. The walk
     * starts at $3's parent (at the active leaf when $3 is no message, and
     * then skips what is not before it): a page costs $4 + 1 probes of the
     * key, whatever the session's length or branches. Each message says
     * where it hangs (parent_seq), how many alternatives its place has,
     * itself included (siblings, one short range of the children index),
     * which of them it is (sibling_index, 0-based by seq) and, where there
     * are, the seqs of the ones before and after it (prev_sibling,
     * next_sibling: what a "‹ ›" switches to); ratings and
     * file metadata are joined to the page's rows only. */
    [PG_HISTORY_PAGE] =
        {"history_page", 4,
         "with recursive s as (select session_name, " PG_LEAF " as leaf, pinned, archived, tags,"
         "                            temporary"
         "                       from chat_sessions"
         "                      where user_id = $1::uuid and session_id = $2::uuid),"
         "  b as (select m.parent_seq from chat_messages m"
         "         where m.session_id = $2::uuid and m.seq = $3::bigint),"
         "  " PG_PATH_PAGE ","
         "  page as (select * from path where seq < coalesce($3::bigint, 9223372036854775807)),"
         "  shown as (select * from page order by seq desc limit $4::int)"
         " select s.session_name, (select count(*) from page) > $4::int,"
         "        coalesce((select json_agg(jsonb_strip_nulls(jsonb_build_object("
         "                   'seq', p.seq, 'role', p.role, 'content', p.content,"
         "                   'created_at', to_char(p.created_at at time zone 'UTC',"
         "                                         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "                   'rating', fb.rating, 'content_type', f.content_type,"
         "                   'size', f.size_bytes, 'original_name', f.original_name,"
         "                   'prev_sibling', sib.prev, 'next_sibling', sib.next))"
         "                   || jsonb_build_object('parent_seq', p.parent_seq,"
         "                                         'siblings', sib.n, 'sibling_index', sib.i)"
         "                   order by p.seq)"
         "                   from shown p"
         "                   cross join lateral"
         "                     (select count(*) as n, count(*) filter (where c.seq < p.seq) as i,"
         "                             max(c.seq) filter (where c.seq < p.seq) as prev,"
         "                             min(c.seq) filter (where c.seq > p.seq) as next"
         "                        from chat_messages c"
         "                       where c.session_id = $2::uuid"
         "                         and coalesce(c.parent_seq, -1) = coalesce(p.parent_seq, -1)) sib"
         "                   left join message_feedback fb"
         "                     on p.role = 'assistant' and fb.session_id = $2::uuid"
         "                    and fb.seq = p.seq"
         "                   left join uploaded_files f"
         "                     on p.role = 'file' and f.session_id = $2::uuid"
         "                    and f.stored_name = p.content), '[]')::text,"
         "        (select min(seq) from shown),"
         "        json_build_object('pinned', s.pinned, 'archived', s.archived, 'tags', s.tags,"
         "                          'temporary', s.temporary)"
         "          ::text"
         "   from s"},
    [PG_SESSION_RENAME] = {"session_rename", 3,
                           "update chat_sessions set session_name = $3, named_by_user = true,"
                           "       updated_at = clock_timestamp()"
                           " where user_id = $1::uuid and session_id = $2::uuid"
                           " returning pg_current_xact_id()::text"},
    /* The role of message $3 of the user's session: no row, no such
     * session (or someone else's); null, no such message. */
    [PG_MESSAGE_ROLE] =
        {"message_role", 3,
         "select (select m.role from chat_messages m"
         "         where m.session_id = s.session_id and m.seq = $3::bigint)"
         "  from chat_sessions s where s.user_id = $1::uuid and s.session_id = $2::uuid"},
    [PG_FEEDBACK_SET] = {"feedback_set", 5,
                         "insert into message_feedback (session_id, seq, user_id, rating, comment)"
                         " values ($1::uuid, $2::bigint, $3::uuid, $4::smallint, $5)"
                         " on conflict (session_id, seq) do update"
                         "   set rating = excluded.rating, comment = excluded.comment,"
                         "       updated_at = clock_timestamp()"},
    [PG_FEEDBACK_CLEAR] =
        {"feedback_clear", 2,
         "delete from message_feedback where session_id = $1::uuid and seq = $2::bigint"},
    /* Code 11: the user's messages (files aside) and session names that
     * match $2 (websearch_to_tsquery: any user syntax parses), in the
     * sessions that have tag $5, pinned $6 and archived $7 (each null:
     * any); with $2 empty, those sessions themselves. Best first,
     * page $4..$4+$3 (and whether more follow). The configuration is the
     * one the index was built with (chatd_search). ts_headline runs on the
     * page only; the matched words come between U+E000 and U+E001, which
     * are first removed from the text, so no message can forge a mark.
     * Every branch is searched; on_active_path says whether a message is
     * on its session's active path (a session name always is). */
    [PG_SEARCH] =
        {"search", 7,
         "with recursive"
         " q as (select case when $2 <> '' then websearch_to_tsquery(c.config, $2) end as q,"
         "              c.config from chatd_search c),"
         " hits as ("
         "   (select m.session_id, s.session_name, m.seq, m.role, m.content, m.created_at,"
         "           ts_rank(m.search, q.q) as rank"
         "      from q, chat_sessions s join chat_messages m on m.session_id = s.session_id"
         "     where s.user_id = $1::uuid and m.role <> 'file' and m.search @@ q.q"
         "       and " PG_SEARCH_SCOPE ")"
         "   union all"
         "   (select s.session_id, s.session_name, null::bigint, 'session', s.session_name,"
         "           s.created_at, ts_rank(s.name_search, q.q) * 2"
         "      from q, chat_sessions s where s.user_id = $1::uuid and s.name_search @@ q.q"
         "       and " PG_SEARCH_SCOPE ")"
         "   union all"
         "   (select s.session_id, s.session_name, null::bigint, 'session', s.session_name,"
         "           s.created_at, 0"
         "      from chat_sessions s where $2 = '' and s.user_id = $1::uuid"
         "       and " PG_SEARCH_SCOPE ")),"
         " page as (select * from hits order by rank desc, created_at desc, session_id, seq nulls "
         "first"
         "           limit $3::int + 1 offset $4::int),"
         " shown as (select * from page order by rank desc, created_at desc, session_id, seq nulls "
         "first"
         "            limit $3::int),"
         /* each session's active path, walked up from its leaf only as far
          * as its oldest hit on the page */
         " ap(session_id, seq, parent_seq, stop) as ("
         "   select s.session_id, m.seq, m.parent_seq, h.stop"
         "     from (select session_id, min(seq) as stop from shown where seq is not null"
         "            group by session_id) h"
         "     join chat_sessions s on s.session_id = h.session_id"
         "     join chat_messages m on m.session_id = s.session_id"
         "                         and m.seq = coalesce(s.active_leaf, s.next_seq - 1)"
         "   union all"
         "   select ap.session_id, m.seq, m.parent_seq, ap.stop from ap"
         "     join chat_messages m on m.session_id = ap.session_id and m.seq = ap.parent_seq"
         "    where ap.seq > ap.stop)"
         " select (select count(*) from page) > $3::int,"
         "        coalesce((select json_agg(json_build_object("
         "                   'session_id', p.session_id, 'session_name', p.session_name,"
         "                   'seq', p.seq, 'role', p.role,"
         "                   'on_active_path', p.seq is null or exists (select 1 from ap"
         "                        where ap.session_id = p.session_id and ap.seq = p.seq),"
         "                   'snippet', coalesce(ts_headline(q.config, translate(p.content, "
         "U&'\\E000\\E001', ''), q.q,"
         "                       'StartSel=' || U&'\\E000' || ', StopSel=' || U&'\\E001' ||"
         "                       ', MaxFragments=2, MaxWords=18, MinWords=6, FragmentDelimiter=\" "
         "… \"'),"
         "                       translate(p.content, U&'\\E000\\E001', '')),"
         "                   'created_at', to_char(p.created_at at time zone 'UTC',"
         "                                         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"
         "                   order by p.rank desc, p.created_at desc, p.session_id, p.seq nulls "
         "first)"
         "                   from shown p, q), '[]')::text"},
    /* A title replaces the first-turn name only while the user has not
     * named the session (code 10). */
    [PG_TITLE_SET] = {"title_set", 3,
                      "update chat_sessions set session_name = $3"
                      " where user_id = $1::uuid and session_id = $2::uuid and not named_by_user"
                      " returning pg_current_xact_id()::text"},
    /* Code 13: one index range of the user's ledger; sums in numeric. */
    [PG_USAGE] =
        {"usage", 3,
         "with l as (select model_name, kind, cost from usage_ledger"
         "            where user_id = $1::uuid"
         "              and created_at >= coalesce(timestamptz 'epoch' + $2::bigint * interval '1 "
         "microsecond', '-infinity')"
         "              and created_at < coalesce(timestamptz 'epoch' + $3::bigint * interval '1 "
         "microsecond', 'infinity')),"
         "     m as (select model_name, count(*) filter (where kind = 'turn') as turns,"
         "                  sum(cost) as spent from l group by model_name)"
         " select json_build_object("
         "          'user_id', u.user_id, 'balance', u.balance,"
         "          'spent', (select coalesce(sum(spent), 0) from m),"
         "          'turns', (select coalesce(sum(turns), 0) from m)::bigint,"
         "          'by_model', (select coalesce(json_agg(json_build_object("
         "                                 'model', model_name, 'turns', turns, 'spent', spent)"
         "                               order by spent desc, model_name), '[]') from m),"
         "          'caps', " PG_CAPS_JSON(
             "u.user_id") ", 'caps_reset', " PG_CAPS_RESET ")::text"
                          "   from user_data u where u.user_id = $1::uuid"},
    /* GET /export?format=zip: the user's files after stored name $2 (''
     * from the first), $3 of them, as a JSON array. */
    [PG_USER_FILES] =
        {"user_files", 3,
         "select coalesce(json_agg(json_build_object("
         "          'stored_name', f.stored_name, 'original_name', f.original_name,"
         "          'session_id', f.session_id, 'content_type', f.content_type,"
         "          'size', f.size_bytes) order by f.stored_name), '[]')::text"
         "  from (select * from uploaded_files where user_id = $1::uuid and stored_name > $2"
         "         order by stored_name limit $3::int) f"},
    /* Code 26: the user's personal cap ($2, null: none). */
    [PG_BUDGET_SET] = {"budget_set", 2,
                       "update user_data set personal_cap = $2::numeric"
                       " where user_id = $1::uuid returning 1"},
    /* Code 26's answer: the balance, what running calls reserve, the caps
     * (no row: no user). */
    [PG_BUDGET] = {"budget", 1,
                   "select json_build_object("
                   "          'user_id', u.user_id, 'balance', u.balance,"
                   "          'reserved', coalesce((select sum(h.amount) from budget_holds h"
                   "                                 where h.user_id = u.user_id"
                   "                                   and h.until > clock_timestamp()), 0),"
                   "          'monthly_cap', u.monthly_cap, 'personal_cap', u.personal_cap,"
                   "          'caps', " PG_CAPS_JSON(
                       "u.user_id") ", 'caps_reset', " PG_CAPS_RESET ")::text"
                                    "   from user_data u where u.user_id = $1::uuid"},
    /* The sweeper (work/sweep.c), in batches that each hold their locks
     * for one short statement: temporary chats due (PG_TEMPORARY_DUE),
     * then sessions past their retention (PG_RETENTION_DUE), at most $4
     * of each, skipping rows a turn holds (the next sweep takes them).
     *   -> session, user, reason ('temporary' or 'retention') */
    [PG_SWEEP] =
        {"sweep", 4,
         "with v as ((select s.session_id, 'temporary' as reason from chat_sessions s"
         "             where " PG_TEMPORARY_DUE "             order by s.updated_at limit $4::int)"
         "           union all"
         "           (select s.session_id, 'retention' from chat_sessions s"
         "              join user_data u on u.user_id = s.user_id"
         "             where " PG_RETENTION_DUE
         "             order by s.updated_at limit $4::int)),"
         "     k as (select s.session_id, v.reason from chat_sessions s join v using (session_id)"
         "           for update of s skip locked),"
         "     d as (delete from chat_sessions s using k where s.session_id = k.session_id"
         "           returning s.session_id, s.user_id, k.reason)"
         " select session_id::text, user_id::text, reason from d"},
    /* The same, without deleting: what a sweep would delete now
     * (`chatd retention --dry-run`), oldest first.
     *   -> session, user, reason, last activity, name */
    [PG_SWEEP_PLAN] =
        {"sweep_plan", 3,
         "select s.session_id::text, s.user_id::text,"
         "       case when s.temporary then 'temporary' else 'retention' end,"
         "       to_char(s.updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
         "  from chat_sessions s join user_data u on u.user_id = s.user_id"
         " where (" PG_TEMPORARY_DUE ") or (" PG_RETENTION_DUE ")"
         " order by s.updated_at, s.session_id"},
    /* Up to $1 entries of the erasure queue (migration 0013), locked for
     * the transaction that removes them: -> item, kind, name */
    [PG_ERASURE_TAKE] = {"erasure_take", 1,
                         "select item_id, kind, name from erasure_queue"
                         " order by item_id limit $1::int for update skip locked"},
    [PG_ERASURE_DONE] = {"erasure_done", 1,
                         "delete from erasure_queue where item_id = any($1::bigint[])"},
    /* Holds of reservations, and leases, that ran out an hour ago: no
     * store can still settle or use them (migration 0013). A lease is
     * given back by its turn or taken over by the session's next one;
     * this finds those of sessions gone with no next turn, and of a user
     * deleted while the lease was taken (migration 0017). */
    [PG_RUNOUT_PURGE] = {"runout_purge", 0,
                         "with l as (delete from turn_leases"
                         "            where lease_until < clock_timestamp() - interval '1 hour')"
                         " delete from budget_holds"
                         " where until < clock_timestamp() - interval '1 hour'"},
    /* One sweeper at a time across every chatd: a session-level advisory
     * lock on the sweeper's own connection (gone with it if it dies). */
    [PG_SWEEP_LOCK] = {"sweep_lock", 0, "select pg_try_advisory_lock(7413001)"},
    [PG_SWEEP_UNLOCK] = {"sweep_unlock", 0, "select pg_advisory_unlock(7413001)"},
    /* `chatd erase-user`: -> sessions erased (null: no such user) */
    [PG_ERASE_USER] = {"erase_user", 1, "select chatd_erase_user($1::uuid)"},
    /* Code 25: a temporary chat kept (no row: not the user's). */
    [PG_KEEP] = {"keep", 2,
                 "update chat_sessions set temporary = false"
                 " where user_id = $1::uuid and session_id = $2::uuid"
                 " returning pg_current_xact_id()::text"},
    [PG_EXPORT_SESSION] =
        {"export_session", 2,
         "select s.session_name,"
         "       to_char(s.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "       s.session_prompt, coalesce(md.model_name, '')"
         "  from chat_sessions s left join model_details md using (model_id)"
         " where s.user_id = $1::uuid and s.session_id = $2::uuid"},
    /* Oldest first, after the cursor: one forward range of the index. */
    [PG_EXPORT_SESSIONS] =
        {"export_sessions", 4,
         "select s.session_id::text, s.session_name,"
         "       to_char(s.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "       s.session_prompt,"
         "       (extract(epoch from s.created_at) * 1000000)::bigint::text"
         "  from chat_sessions s"
         " where s.user_id = $1::uuid and not s.temporary"
         "   and ($2::bigint is null"
         "        or s.created_at > timestamptz 'epoch' + $2::bigint * interval '1 microsecond'"
         "        or (s.created_at = timestamptz 'epoch' + $2::bigint * interval '1 microsecond'"
         "            and s.session_id < $3::uuid))"
         /* the index (user_id, created_at desc, session_id) read backwards */
         " order by s.created_at, s.session_id desc limit $4::int"},
    /* A page of a session being exported: up to $4 messages of its
     * active path after seq $3, ascending, with ratings, comments and file
     * metadata. The path comes as its runs of consecutive seqs $5 (lo, hi,
     * lo, hi, ...: export_path), each read as one range of the key. */
    [PG_EXPORT_PAGE] =
        {"export_page", 5,
         "with s as (select session_id from chat_sessions"
         "            where user_id = $1::uuid and session_id = $2::uuid),"
         "     a as (select $5::bigint[] as a),"
         "     r as (select a.a[2 * i - 1] as lo, a.a[2 * i] as hi"
         "             from a, generate_series(1, coalesce(array_length(a.a, 1), 0) / 2) i"
         "            where a.a[2 * i] > $3::bigint order by 1 limit $4::int),"
         "     page as (select m.seq, m.role, m.content, m.created_at"
         "                from s, r, lateral (select * from chat_messages c"
         "                                     where c.session_id = s.session_id"
         "                                       and c.seq between greatest(r.lo, $3::bigint + 1) "
         "and r.hi"
         "                                     order by c.seq limit $4::int) m"
         "               order by m.seq limit $4::int)"
         " select coalesce(json_agg(jsonb_strip_nulls(jsonb_build_object("
         "          'seq', p.seq, 'role', p.role, 'content', p.content,"
         "          'created_at', to_char(p.created_at at time zone 'UTC',"
         "                                'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "          'rating', fb.rating, 'comment', nullif(fb.comment, ''),"
         "          'content_type', f.content_type, 'size', f.size_bytes,"
         "          'original_name', f.original_name))"
         "          order by p.seq), '[]')::text,"
         "        max(p.seq)::text"
         "   from page p"
         "   left join message_feedback fb"
         "     on p.role = 'assistant' and fb.session_id = $2::uuid and fb.seq = p.seq"
         "   left join uploaded_files f"
         "     on p.role = 'file' and f.session_id = $2::uuid and f.stored_name = p.content"},
    /* The same of the whole tree, each message naming its parent (null:
     * none): one forward range of the key. */
    [PG_EXPORT_TREE_PAGE] =
        {"export_tree_page", 4,
         "with page as (select m.seq, m.role, m.content, m.created_at, m.parent_seq"
         "                from chat_sessions s join chat_messages m using (session_id)"
         "               where s.user_id = $1::uuid and s.session_id = $2::uuid"
         "                 and m.seq > $3::bigint order by m.seq limit $4::int)"
         " select coalesce(json_agg(jsonb_strip_nulls(jsonb_build_object("
         "          'seq', p.seq, 'role', p.role, 'content', p.content,"
         "          'created_at', to_char(p.created_at at time zone 'UTC',"
         "                                'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "          'rating', fb.rating, 'comment', nullif(fb.comment, ''),"
         "          'content_type', f.content_type, 'size', f.size_bytes,"
         "          'original_name', f.original_name))"
         "          || jsonb_build_object('parent_seq', p.parent_seq) order by p.seq), '[]')::text,"
         "        max(p.seq)::text"
         "   from page p"
         "   left join message_feedback fb"
         "     on p.role = 'assistant' and fb.session_id = $2::uuid and fb.seq = p.seq"
         "   left join uploaded_files f"
         "     on p.role = 'file' and f.session_id = $2::uuid and f.stored_name = p.content"},
    /* The active path of a session being exported, once: its runs of
     * consecutive seqs as one array lo, hi, lo, hi, ... (a run: each
     * message the child of the one before; a linear session is one run,
     * whatever its length), which each page then reads as key ranges. No
     * row: no such session of the user's. */
    [PG_EXPORT_PATH] =
        {"export_path", 2,
         "with recursive s as (select " PG_LEAF " as leaf from chat_sessions"
         "                      where user_id = $1::uuid and session_id = $2::uuid),"
         "  " PG_PATH_ALL ","
         "  g as (select seq, seq - row_number() over (order by seq) as run from path),"
         "  r as (select min(seq) as lo, max(seq) as hi from g group by run)"
         " select coalesce((select array_agg(x order by lo, k)"
         "                    from r, lateral (values (1, lo), (2, hi)) v(k, x)), '{}')::text"
         "   from s"},
    /* Code 24: the fields given ($3 pinned, $4 archived, $5 tags as a JSON
     * array; null: unchanged); tags keep the first of each spelling that
     * lower() makes equal, in the order given.
     *   -> pinned, archived, tags json, xid (no row: not the user's) */
    [PG_ORGANIZE] =
        {"organize", 5,
         "update chat_sessions"
         "   set pinned = coalesce($3::boolean, pinned),"
         "       archived = coalesce($4::boolean, archived),"
         "       tags = case when $5::json is null then tags"
         "              else coalesce((select array_agg(d.t order by d.i)"
         "                               from (select distinct on (lower(u.t)) u.t, u.i"
         "                                       from json_array_elements_text($5::json)"
         "                                            with ordinality u(t, i)"
         "                                      order by lower(u.t), u.i) d), '{}') end"
         " where user_id = $1::uuid and session_id = $2::uuid"
         " returning pinned, archived, array_to_json(tags)::text, pg_current_xact_id()::text"},
    /* Code 1 with a filter: archived $2, pinned $3 (null: either), tag $4
     * (null: any), pinned first, then newest; the cursor ($5 pinned, $6
     * time in us, $7 id) is the last entry of the page before. */
    [PG_SESSIONS_FILTER] =
        {"sessions_filter", 9,
         "with page as (select s.session_id, s.session_name, s.created_at, s.pinned, s.archived,"
         "                     s.tags"
         "                from chat_sessions s"
         "               where s.user_id = $1::uuid and s.archived = $2::boolean"
         "                 and s.temporary = $9::boolean"
         "                 and ($3::boolean is null or s.pinned = $3::boolean)"
         "                 and ($4::text is null"
         "                      or exists (select 1 from unnest(s.tags) t"
         "                                  where lower(t) = lower($4::text)))"
         "                 and ($5::boolean is null or (not s.pinned and $5::boolean)"
         "                      or (s.pinned = $5::boolean"
         "                          and (s.created_at < timestamptz 'epoch' + $6::bigint"
         "                                              * interval '1 microsecond'"
         "                               or (s.created_at = timestamptz 'epoch' + $6::bigint"
         "                                                  * interval '1 microsecond'"
         "                                   and s.session_id > $7::uuid))))"
         "               order by s.pinned desc, s.created_at desc, s.session_id"
         "               limit $8::int + 1),"
         "     shown as (select * from page order by pinned desc, created_at desc, session_id"
         "                limit $8::int)"
         " select (select count(*) from page) > $8::int,"
         "        coalesce((select json_agg(json_build_object("
         "                    'session_id', p.session_id, 'session_name', p.session_name,"
         "                    'pinned', p.pinned, 'archived', p.archived, 'tags', p.tags)"
         "                    order by p.pinned desc, p.created_at desc, p.session_id)"
         "                    from shown p), '[]')::text,"
         "        (select case when pinned then '1:' else '0:' end"
         "                || ((extract(epoch from created_at - timestamptz 'epoch')"
         "                     * 1000000)::numeric)::bigint || ':' || session_id"
         "           from shown order by pinned, created_at, session_id desc limit 1)"
         "   from user_data u where u.user_id = $1::uuid"},
    /* Code 21: link $4 to the path from the first message to message $3
     * (null: the active leaf) of the user's session $2, expiring after $5
     * seconds and $6 views (null: never).
     *   -> session found, link made (false: no such message), expires_at */
    [PG_SHARE_CREATE] =
        {"share_create", 6,
         "with s as (select session_id, session_name, " PG_LEAF " as leaf from chat_sessions"
         "            where user_id = $1::uuid and session_id = $2::uuid),"
         "     m as (select m.seq from s join chat_messages m"
         "             on m.session_id = s.session_id and m.seq = coalesce($3::bigint, s.leaf)),"
         "     ins as (insert into share_links (share_id, user_id, session_id, leaf_seq, title,"
         "                                      expires_at, max_views)"
         "             select $4, $1::uuid, s.session_id, m.seq, s.session_name,"
         "                    clock_timestamp() + $5::bigint * interval '1 second', $6::int"
         "               from s, m"
         "             returning expires_at)"
         " select exists (select 1 from s), exists (select 1 from ins),"
         "        (select to_char(expires_at at time zone 'UTC',"
         "                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from ins)"},
    /* Code 22: the user's links, newest first (no row: no such user). */
    [PG_SHARES_LIST] =
        {"shares_list", 1,
         "select coalesce((select json_agg(json_build_object("
         "          'share_id', l.share_id, 'session_id', l.session_id, 'seq', l.leaf_seq,"
         "          'session_name', l.title, 'views', l.views, 'max_views', l.max_views,"
         "          'created_at', to_char(l.created_at at time zone 'UTC',"
         "                                'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "          'expires_at', to_char(l.expires_at at time zone 'UTC',"
         "                                'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "          'active', " PG_SHARE_OPEN ")"
         "          order by l.created_at desc, l.share_id)"
         "          from share_links l where l.user_id = $1::uuid), '[]')::text"
         "  from user_data u where u.user_id = $1::uuid"},
    /* Code 23 (no row: no such link of the user's). */
    [PG_SHARE_REVOKE] = {"share_revoke", 2,
                         "delete from share_links where user_id = $1::uuid and share_id = $2"
                         " returning 1"},
    /* GET /s/<id>: one view counted, in the same statement that reads the
     * snapshot, so two instances never count one request twice or let a
     * last view be seen twice. -> snapshot json (no row: no live link). */
    [PG_SHARE_VIEW] =
        {"share_view", 1,
         "with recursive l as (update share_links l"
         "                        set views = views + 1, last_view_at = clock_timestamp()"
         "                      where l.share_id = $1 and " PG_SHARE_OPEN
         "                  returning l.session_id, l.leaf_seq, l.title, l.created_at),"
         "  " PG_SHARE_PATH " select json_build_object('title', l.title,"
         "          'shared_at', to_char(l.created_at at time zone 'UTC',"
         "                               'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "          'messages', coalesce((select json_agg(jsonb_strip_nulls(jsonb_build_object("
         "              'role', p.role, 'content', p.content,"
         "              'created_at', to_char(p.created_at at time zone 'UTC',"
         "                                    'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "              'url', case when p.role = 'file'"
         "                          then '/s/' || $1 || '/files/' || p.content end,"
         "              'content_type', f.content_type, 'size', f.size_bytes,"
         "              'original_name', f.original_name)) order by p.seq)"
         "              from path p left join uploaded_files f"
         "                on p.role = 'file' and f.session_id = l.session_id"
         "               and f.stored_name = p.content), '[]'))::text"
         "   from l"},
    /* GET /s/<id>/files/<name>: file $2 is on link $1's snapshot and the
     * link still shows it. -> content type (no row: not served). */
    [PG_SHARE_FILE] =
        {"share_file", 2,
         "with recursive l as (select l.session_id, l.leaf_seq from share_links l"
         "                      where l.share_id = $1 and " PG_SHARE_SHOWN "),"
         "  " PG_SHARE_PATH " select f.content_type from l, path p join uploaded_files f"
         "     on f.stored_name = p.content"
         "  where p.role = 'file' and p.content = $2 and f.session_id = l.session_id limit 1"},
    /* Code 20 from a link: whose session and which message it ends at,
     * while it shows. -> owner, session, seq, the name it was shared
     * under (no row: no live link) */
    [PG_SHARE_SOURCE] = {"share_source", 1,
                         "select l.user_id, l.session_id, l.leaf_seq, l.title from share_links l"
                         " where l.share_id = $1 and " PG_SHARE_SHOWN},
    /* POST /import: the import's row, before its answer. */
    [PG_IMPORT_START] = {"import_start", 4,
                         "insert into imports (import_id, user_id, format, total)"
                         " values ($1::uuid, $2::uuid, $3, $4::int)"},
    /* One imported conversation, whole or not at all: session $2 of user
     * $1 named $3, from $4 (null: none), created at $5 (epoch us, null:
     * now), its messages $6 (a JSON array of {seq, parent_seq (-1: none),
     * role, content, us}) with active leaf $7. A session already imported
     * from $4 is left as it is. The model is the user's first (a session
     * needs one; the next turn names its own).
     *   -> stored (false: imported before), messages, xid */
    [PG_IMPORT_CONVO] =
        {"import_convo", 7,
         "with s as (insert into chat_sessions (session_id, user_id, session_name, model_id,"
         "                                      next_seq, active_leaf, import_source, created_at,"
         "                                      updated_at)"
         "           select $2::uuid, $1::uuid, $3,"
         "                  coalesce(u.models[1], (select min(model_id) from model_details)),"
         "                  json_array_length($6::json), nullif($7::bigint, -1), $4,"
         "                  coalesce(timestamptz 'epoch' + $5::bigint * interval '1 microsecond',"
         "                           clock_timestamp()),"
         "                  clock_timestamp()"
         "             from user_data u where u.user_id = $1::uuid"
         "           on conflict (user_id, import_source) where import_source is not null"
         "           do nothing returning session_id),"
         "     m as (insert into chat_messages (session_id, seq, parent_seq, role, content,"
         "                                      created_at)"
         "           select s.session_id, x.seq, x.parent_seq, x.role, x.content,"
         "                  coalesce(timestamptz 'epoch' + x.us * interval '1 microsecond',"
         "                           clock_timestamp())"
         "             from s, json_to_recordset($6::json)"
         "                     as x(seq bigint, parent_seq bigint, role text, content text, us "
         "bigint)"
         "           returning 1)"
         " select exists (select 1 from s), (select count(*) from m), pg_current_xact_id()::text"},
    /* An import's progress: $2 done, $3 sessions, $4 messages, $5 more
     * skipped entries (JSON array), $6 status, $7 error. */
    [PG_IMPORT_UPDATE] =
        {"import_update", 7,
         "update imports set done = $2::int, sessions = $3::int,"
         "       messages = $4::bigint, skipped = skipped || $5::jsonb,"
         "       status = $6, error = $7,"
         "       finished_at = case when $6 <> 'running' then clock_timestamp() end"
         " where import_id = $1::uuid"},
    /* GET /import/<id>: the user's import (no row: not theirs, or none). */
    [PG_IMPORT_GET] =
        {"import_get", 2,
         "select json_build_object('import_id', import_id, 'status', status, 'format', format,"
         "                         'done', done, 'total', total, 'sessions', sessions,"
         "                         'messages', messages, 'skipped', skipped, 'error', error,"
         "                         'created_at', to_char(created_at at time zone 'UTC',"
         "                                               'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
         "                         'finished_at', to_char(finished_at at time zone 'UTC',"
         "                                                "
         "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text"
         "  from imports where user_id = $1::uuid and import_id = $2::uuid"},
    /* Was answer $2 of turn $1 on session $3 stored? After a store whose
     * commit outcome is unknown (db_turn_stored). The session row is
     * locked first: a store still in flight on this server (its commit
     * waiting for the synchronous standby) holds it, and is waited for,
     * so the answer is final.
     *   -> the answer's seq, its text, the user's balance */
    [PG_TURN_STORED] = {"turn_stored", 3,
                        "select l.seq, m.content, u.balance"
                        "  from (select 1 from chat_sessions where session_id = $3::uuid"
                        "         for update) lk,"
                        "       usage_ledger l"
                        "  join chat_messages m on m.session_id = l.session_id and m.seq = l.seq"
                        "  join user_data u on u.user_id = l.user_id"
                        " where l.turn_id = $1::uuid and l.kind = 'turn'"
                        "   and coalesce(l.turn_slot, 0) = $2::int"},
    /* The turn user $1 named $2, as its reply said (db_client_turn).
     *   -> session_id, session_name, temporary, the answer's text, base,
     *      n, parent_seq (null: none) */
    [PG_CLIENT_TURN] = {"client_turn", 2,
                        "select c.session_id::text, s.session_name, s.temporary, m.content,"
                        "       c.base, c.n, c.parent_seq"
                        "  from client_turns c"
                        "  join chat_sessions s on s.session_id = c.session_id"
                        "  join chat_messages m on m.session_id = c.session_id"
                        "                      and m.seq = c.answer_seq"
                        " where c.user_id = $1::uuid and c.client_turn_id = $2"},
    /* The primary's WAL position now, and whether a standby has replayed
     * up to $1 (on a primary, which prefer-standby may have given: yes). */
    [PG_WAL_LSN] = {"wal_lsn", 0, "select pg_current_wal_lsn()::text"},
    [PG_REPLAYED] = {"replayed", 1,
                     "select coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, true)::text"},
    [PG_PING] = {"ping", 0, "select 1"},
};

/* DB_HOST..DB_NAME as a connection string, values quoted per libpq's
 * rules so a password may hold spaces; caller frees. */
static char *pg_conninfo_parts(const struct config *cfg)
{
    const char *keys[] = {"host", "port", "user", "password", "dbname"};
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->db_port);
    const char *vals[] = {cfg->db_host, port, cfg->db_user, cfg->db_password, cfg->db_name};

    size_t cap = 16;
    for (size_t i = 0; i < 5; i++)
        cap += strlen(keys[i]) + 2 * strlen(vals[i]) + 4;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < 5; i++) {
        p += sprintf(p, "%s='", keys[i]);
        for (const char *v = vals[i]; *v; v++) {
            if (*v == '\'' || *v == '\\')
                *p++ = '\\';
            *p++ = *v;
        }
        *p++ = '\'';
        *p++ = ' ';
    }
    *p = '\0';
    return out;
}

PGconn *pg_connect(const struct config *cfg, enum pg_target target)
{
    const char *url = target == PG_STANDBY ? cfg->database_read_url : cfg->database_url;
    char *parts = NULL;
    if (url[0] == '\0' && (url = parts = pg_conninfo_parts(cfg)) == NULL)
        return NULL;
    /* The string is expanded in place of dbname, after these three: its
     * own setting of any of them wins. The timeout is per host, so a dead
     * host of a multi-host URL costs at most that before the next is
     * tried; and of several hosts, writes go to the one that takes them,
     * reads to a standby if one answers (else to the primary). */
    const char *keys[] = {"connect_timeout", "application_name", "target_session_attrs", "dbname",
                          NULL};
    const char *vals[] = {"5", "chatd", target == PG_STANDBY ? "prefer-standby" : "read-write", url,
                          NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    free(parts);
    return c;
}

const char *pg_where(const PGconn *c)
{
    const char *h = c != NULL ? PQhost(c) : NULL;
    return h != NULL && h[0] != '\0' ? h : "?";
}

/* 25006 read_only_sql_transaction: the server is (now) a standby, as
 * after a switchover to a connection made before it; 57P01..57P03 the
 * server is shutting down or starting. Either way, another connection (to
 * whichever host is primary now) is the cure. */
static int pg_wrong_node(const char *state)
{
    return state != NULL && (strcmp(state, "25006") == 0 || strncmp(state, "57P0", 4) == 0);
}

int pg_needs_reconnect(const PGconn *c, const PGresult *r)
{
    return PQstatus(c) != CONNECTION_OK ||
           pg_wrong_node(r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
}

/* No JIT: PostgreSQL compiles a plan whose estimated cost passes
 * jit_above_cost (on by default), which chatd's statements, each a few
 * lookups of one user's rows, never repay: code 11 over 1,000,000 messages
 * took 28-30 ms (p50) with it and 2.4-5.2 ms without, and its plan took
 * 500 ms to compile once its estimate passed the inlining and optimizing
 * thresholds (docs/BENCHMARKS.md, issue 26). A SET rather than the
 * connection's "options", which poolers such as PgBouncer refuse. */
static int pg_session_setup(struct pg *pg)
{
    metrics_pg_roundtrip();
    PGresult *r = PQexec(pg->conn, "set jit = off");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        metrics_pg_error();
        log_error("event=pg_setup_failed error=\"%.*s\"", PG_ERRMSG(pg->conn));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int pg_prepare_all(struct pg *pg)
{
    if (pg_session_setup(pg) != 0)
        return -1;
    for (int i = 0; i < PG_STMT_COUNT; i++) {
        metrics_pg_roundtrip();
        PGresult *r = PQprepare(pg->conn, pg_statements[i].name, pg_statements[i].sql,
                                pg_statements[i].nparams, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            metrics_pg_error();
            log_error("event=pg_prepare_failed stmt=%s error=\"%.*s\"", pg_statements[i].name,
                      PG_ERRMSG(pg->conn));
        }
        PQclear(r);
        if (!ok)
            return -1;
    }
    pg->prepared = 1;
    return 0;
}

int pg_open(struct pg *pg, const struct config *cfg)
{
    pg->cfg = cfg;
    pg->target = PG_PRIMARY;
    pg->lost = 0;
    pg->generation = 0;
    pg->conn = NULL;
    pg->prepared = 0;
    return pg_ensure(pg);
}

/* A connection the server closed (a restart, an idle timeout) would only
 * show when a statement fails on it, failing that request. An idle
 * connection is sent nothing unprompted but the server's goodbye (chatd
 * never LISTENs), so a readable socket here means it is going: reconnect
 * before sending instead. (Its FATAL message may arrive before the close
 * itself, so waiting for libpq to see the end would race.) Only outside a
 * transaction: inside one, a new connection would silently run the rest
 * outside it, so the caller must see the failure and roll back. */
static int pg_idle_alive(struct pg *pg)
{
    if (PQtransactionStatus(pg->conn) != PQTRANS_IDLE)
        return 1;
    struct pollfd pfd = {.fd = PQsocket(pg->conn), .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return 1;
    log_warn("event=pg_connection_lost host=%s port=%s", pg_where(pg->conn), PQport(pg->conn));
    return 0;
}

/* Server notices as our log lines, instead of libpq's default bare line
 * on stderr. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    log_warn("event=pg_notice msg=\"%.*s\"", (int)strcspn(message, "\n"), message);
}

int pg_ensure(struct pg *pg)
{
    if (pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK && pg->prepared &&
        pg_idle_alive(pg))
        return 0;
    if (pg->conn != NULL) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    pg->prepared = 0;
    if ((pg->conn = pg_connect(pg->cfg, pg->target)) == NULL)
        return -1;
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        metrics_pg_error();
        log_error("event=pg_connect_failed target=%s error=\"%.*s\"",
                  pg->target == PG_STANDBY ? "standby" : "primary", PG_ERRMSG(pg->conn));
        PQfinish(pg->conn);
        pg->conn = NULL;
        return -1;
    }
    PQsetNoticeProcessor(pg->conn, pg_notice, NULL);
    if (pg->generation++ > 0)
        metrics_pg_reconnect();
    return pg_prepare_all(pg);
}

void pg_close(struct pg *pg)
{
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->prepared = 0;
}

/* After a failed statement: a broken connection, or one to a server that
 * is no longer the primary, is replaced on the next use. */
static void pg_after_error(struct pg *pg, const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = r != NULL ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state != NULL ? state : "");
    snprintf(pg->constraint, sizeof(pg->constraint), "%s", cons != NULL ? cons : "");
    if (PQstatus(pg->conn) != CONNECTION_OK || pg_wrong_node(state)) {
        pg->prepared = 0;
        pg->lost = 1;
    }
}

PGresult *pg_exec(struct pg *pg, enum pg_stmt stmt, int nparams, const char *const *params)
{
    if (nparams != pg_statements[stmt].nparams) {
        log_error("event=pg_bad_call stmt=%s nparams=%d", pg_statements[stmt].name, nparams);
        return NULL;
    }
    pg->lost = 0;
    pg->sqlstate[0] = pg->constraint[0] = '\0';
    if (pg_ensure(pg) != 0)
        return NULL;
    metrics_pg_roundtrip();
    PGresult *r =
        PQexecPrepared(pg->conn, pg_statements[stmt].name, nparams, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    metrics_pg_error();
    log_error("event=pg_exec_failed stmt=%s status=%s error=\"%.*s\"", pg_statements[stmt].name,
              PQresStatus(st), PG_ERRMSG(pg->conn));
    pg_after_error(pg, r);
    PQclear(r);
    return NULL;
}

int pg_command(struct pg *pg, const char *sql)
{
    pg->lost = 0;
    if (pg_ensure(pg) != 0)
        return -1;
    metrics_pg_roundtrip();
    PGresult *r = PQexec(pg->conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        metrics_pg_error();
        log_error("event=pg_command_failed sql=\"%s\" error=\"%.*s\"", sql, PG_ERRMSG(pg->conn));
        pg_after_error(pg, r);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

const char *pg_sql(enum pg_stmt stmt) { return pg_statements[stmt].sql; }
