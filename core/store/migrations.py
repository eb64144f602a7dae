"""Schema history: named migrations, each applied once and recorded in ``migrations``.

A migration is a function of a ``Migrator``: ``m.execute(sql)`` for SQL both backends speak, and
``m.id_column(table)``, ``m.create_index(...)``, ``m.create_unique_index(...)`` and ``m.dialect`` where their DDL
differs. Over 300 lines on purpose: the schema's whole history, in the order it is applied (as simonw/llm keeps
it); a migration is frozen once released, so the file only grows at its end.
"""
from __future__ import annotations

import logging
import unicodedata
from typing import Callable

from core.store.base import Migrator, utcnow

log = logging.getLogger(__name__)
CLASH_MARK = "\x01"  # in a name key: no typed name holds a control character (see core.names.clean_name)


Migration = Callable[[Migrator], None]


def m001_initial(m: Migrator) -> None:
    """The original's model: users, channels, messages (author NULL for the AI)."""
    m.execute(
        f"""CREATE TABLE users (
            {m.id_column("users")},
            name VARCHAR NOT NULL,
            name_key VARCHAR NOT NULL UNIQUE,  -- casefolded name: names are unique ignoring case
            created_at TIMESTAMP NOT NULL)"""
    )
    m.execute(
        f"""CREATE TABLE channels (
            {m.id_column("channels")},
            name VARCHAR NOT NULL,
            name_key VARCHAR NOT NULL UNIQUE,
            created_at TIMESTAMP NOT NULL)"""
    )
    # The id comes from a sequence, so it orders messages strictly even within one millisecond.
    m.execute(
        f"""CREATE TABLE messages (
            {m.id_column("messages")},
            channel_id BIGINT NOT NULL,
            author_id BIGINT,
            content VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL)"""
    )


def m002_ai_replies(m: Migrator) -> None:
    """AI replies as messages with a state, and a job table that schedules them."""
    for column, kind in [
        ("status", "VARCHAR DEFAULT 'complete'"),  # pending | streaming | complete | error
        ("error", "VARCHAR"),  # the readable reason when status = 'error'
        ("updated_at", "TIMESTAMP"),
        ("stopped", "BOOLEAN"),  # a person pressed Stop; the text so far is kept (default set below)
        ("model", "VARCHAR"),
        ("prompt_tokens", "INTEGER"),
        ("completion_tokens", "INTEGER"),
        ("ttft_ms", m.dialect.double),  # time to first token
        ("total_ms", m.dialect.double),
        ("context", "VARCHAR"),  # JSON of exactly what was sent to the model
    ]:
        m.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
    # Not "ADD COLUMN stopped BOOLEAN DEFAULT false": DuckDB 1.5.6 then fails the commit of a table
    # holding rows when another ADD COLUMN follows ("another transaction has altered this table").
    m.execute("ALTER TABLE messages ALTER COLUMN stopped SET DEFAULT false")
    m.execute("UPDATE messages SET stopped = false WHERE stopped IS NULL")
    m.execute("UPDATE messages SET status = 'complete' WHERE status IS NULL")
    m.execute(
        f"""CREATE TABLE ai_jobs (
            {m.id_column("ai_jobs")},
            channel_id BIGINT NOT NULL,
            trigger_id BIGINT NOT NULL,   -- the user message that asked for the reply
            reply_id BIGINT NOT NULL,     -- the AI message being written
            state VARCHAR NOT NULL,       -- pending | running | done
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL,
            claimed_at TIMESTAMP,
            finished_at TIMESTAMP)"""
    )


def m003_channel_settings(m: Migrator) -> None:
    """Per-channel reply policy (every | mention | off) and persona (system prompt)."""
    m.execute("ALTER TABLE channels ADD COLUMN reply_policy VARCHAR DEFAULT 'every'")
    m.execute("ALTER TABLE channels ADD COLUMN persona VARCHAR")
    m.execute("UPDATE channels SET reply_policy = 'every' WHERE reply_policy IS NULL")


def m004_job_leases(m: Migrator) -> None:
    """A lease on each running AI job (several replicas claim jobs), and the indexes Postgres needs."""
    m.execute("ALTER TABLE ai_jobs ADD COLUMN lease_until TIMESTAMP")  # a running job past this is orphaned
    m.execute("ALTER TABLE ai_jobs ADD COLUMN owner VARCHAR")  # which process runs it (for people reading the table)
    m.create_index("messages_channel_newest", "messages", "channel_id, id")  # the 10 newest of a channel
    m.create_index("ai_jobs_state", "ai_jobs", "state, id")  # the claim and the sweep
    m.create_index("ai_jobs_reply", "ai_jobs", "reply_id")  # retry and stop find a reply's jobs


def m005_identities_and_limits(m: Migrator) -> None:
    """Users bound to an OIDC issuer + subject (login mode), and what the rate limits read."""
    m.execute(
        """CREATE TABLE identities (
            issuer VARCHAR NOT NULL,      -- the ID token's iss: subjects are unique only within one provider
            subject VARCHAR NOT NULL,     -- the ID token's sub: stable for a person, unlike a name or an email
            user_id BIGINT NOT NULL UNIQUE,
            email VARCHAR,                -- as the provider last gave it (roles read it)
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (issuer, subject))"""
    )
    m.create_index("messages_author_created", "messages", "author_id, created_at")  # a person's recent sends; AI tokens today
    m.create_index("ai_jobs_created", "ai_jobs", "created_at")  # AI replies in the last hour

def _m007_ignorable(ch: str) -> bool:
    return (unicodedata.category(ch)[0] == "C" or ch in "\u115f\u1160\u3164\uffa0\u2800"
            or ch in "\u034f\u17b4\u17b5" + "".join(map(chr, range(0xFE00, 0xFE10))) or 0xE0100 <= ord(ch) <= 0xE01EF)


def _m007_name_key(name: str) -> str:
    """The name key as migration 007 applied it, frozen here: a later change of the rules gets its own migration."""
    kept = "".join(ch for ch in unicodedata.normalize("NFKC", name) if not _m007_ignorable(ch))
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", kept).casefold())
    return " ".join(folded.split())


def m007_name_keys(m: Migrator) -> None:
    """Names compare in a normalised form (``core.names.name_key`` as it was then: NFKC, case folded, invisible marks dropped).

    Recomputes every stored key. Where two existing names now compare equal, the older keeps the plain key
    and the newer one's key gets a suffix no typed name can produce, so both stay as they are and a third
    cannot be added; each clash is logged.
    """

    for table in ("users", "channels"):
        rows = m.execute(f"SELECT id, name, name_key FROM {table} ORDER BY created_at, id").fetchall()
        holder: dict[str, tuple[int, str]] = {}
        wanted: dict[int, str] = {}
        for row_id, name, old_key in rows:
            key = _m007_name_key(name)
            if key in holder:
                first_id, first_name = holder[key]
                log.warning("%s %d %r and %d %r now compare as one name; both are kept, no third can be added",
                            table, first_id, first_name, row_id, name)
                key = f"{key}{CLASH_MARK}{row_id}"
            else:
                holder[key] = (row_id, name)
            if key != old_key:
                wanted[row_id] = key
        # Two passes, so a key moving to a row never meets the same key still held by another row.
        for row_id in wanted:
            m.execute(f"UPDATE {table} SET name_key = ? WHERE id = ?", [f"{CLASH_MARK}{row_id}", row_id])
        for row_id, key in wanted.items():
            m.execute(f"UPDATE {table} SET name_key = ? WHERE id = ?", [key, row_id])


def m006_search(m: Migrator) -> None:
    """Message vectors for semantic search, the jobs that compute them, search's own state, text search indexes."""
    m.execute("CREATE SEQUENCE message_vectors_seq")
    m.execute(
        f"""CREATE TABLE message_vectors (
            message_id BIGINT PRIMARY KEY,
            channel_id BIGINT NOT NULL,
            provider VARCHAR NOT NULL,   -- which model made it: vectors of two providers are never compared
            seq BIGINT NOT NULL,         -- from message_vectors_seq at every write: readers load what is newer
            vector {m.dialect.vector} NOT NULL,
            created_at TIMESTAMP NOT NULL)"""
    )
    m.execute(
        """CREATE TABLE embedding_jobs (
            message_id BIGINT NOT NULL,
            provider VARCHAR NOT NULL,
            state VARCHAR NOT NULL,      -- pending | running | failed; a done job is deleted as its vector is written
            attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by VARCHAR,          -- the worker holding it: only that worker may write its vector
            claimed_at TIMESTAMP,
            error VARCHAR,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (message_id, provider))"""
    )
    # Watermarks (scanned:<provider>) and the provider whose vectors cover all history (active_provider).
    m.execute("CREATE TABLE search_state (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    m.create_index("message_vectors_seq_order", "message_vectors", "provider, seq")  # the index loads what is new
    m.create_index("embedding_jobs_state", "embedding_jobs", "provider, state, message_id")  # the claim
    for statement in m.dialect.text_search_ddl:
        m.execute(statement)


def m009_ai_tools(m: Migrator) -> None:
    """What the AI did before answering (tool calls, retrieval, what the budget cut), and per-channel AI settings."""
    m.execute("ALTER TABLE messages ADD COLUMN steps VARCHAR")  # JSON list of steps (core/tools.py), NULL: none
    m.execute("ALTER TABLE channels ADD COLUMN model VARCHAR")  # NULL: the app's OPENAI_MODEL
    # NULL reads as false: no DEFAULT, as DuckDB fails ADD COLUMN ... DEFAULT followed by another ADD COLUMN.
    m.execute("ALTER TABLE channels ADD COLUMN look_back BOOLEAN")  # add relevant older messages to the context


def m010_usage_ledger(m: Migrator) -> None:
    """The usage ledger (one row per request to a model, never rewritten), and who asked for each AI attempt.

    Budgets count from the ledger by the time of each request, so a Retry is charged again and on the day
    it ran. What earlier replies used is carried over, at the time each reply was made (as the budget
    counted it then): reported usage, else 4 characters a token of what was sent and received.
    """
    m.execute(
        f"""CREATE TABLE ai_usage (
            {m.id_column("ai_usage")},
            kind VARCHAR NOT NULL,        -- chat (the reply's model) | embedding
            user_id BIGINT,               -- who caused it: the sender, or who pressed Retry (NULL: the app itself)
            reply_id BIGINT,              -- the AI reply it was for (NULL: a search or indexing)
            job_id BIGINT,                -- the attempt
            model VARCHAR,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            estimated BOOLEAN NOT NULL,   -- the server reported no usage: counted at 4 characters a token
            created_at TIMESTAMP NOT NULL)"""
    )
    m.execute("ALTER TABLE ai_jobs ADD COLUMN requested_by BIGINT")  # the sender, or who pressed Retry
    m.execute("ALTER TABLE ai_jobs ADD COLUMN cause VARCHAR")  # send | retry | requeue (a crash's): what counts as an ask
    m.execute(
        "UPDATE ai_jobs SET cause = 'send', "
        "requested_by = (SELECT t.author_id FROM messages t WHERE t.id = ai_jobs.trigger_id)"
    )
    m.execute(
        "INSERT INTO ai_usage (kind, user_id, reply_id, job_id, model, prompt_tokens, completion_tokens, estimated, "
        "created_at) "
        "SELECT 'chat', (SELECT t.author_id FROM ai_jobs j JOIN messages t ON t.id = j.trigger_id "
        "WHERE j.reply_id = r.id ORDER BY j.id DESC LIMIT 1), r.id, NULL, NULL, "
        "CASE WHEN r.prompt_tokens IS NULL AND r.completion_tokens IS NULL "
        "THEN CAST(ceil(length(coalesce(r.context, '')) / 4.0) AS BIGINT) ELSE coalesce(r.prompt_tokens, 0) END, "
        "CASE WHEN r.prompt_tokens IS NULL AND r.completion_tokens IS NULL "
        "THEN CAST(ceil(length(r.content) / 4.0) AS BIGINT) ELSE coalesce(r.completion_tokens, 0) END, "
        "r.prompt_tokens IS NULL AND r.completion_tokens IS NULL, r.created_at "
        "FROM messages r WHERE r.author_id IS NULL AND r.status NOT IN ('pending', 'streaming') AND (r.prompt_tokens IS NOT NULL OR r.completion_tokens IS NOT NULL "
        "OR r.context IS NOT NULL OR r.content <> '')"
    )
    m.create_index("ai_usage_created", "ai_usage", "created_at")  # today's tokens
    m.create_index("ai_usage_user", "ai_usage", "user_id, created_at")  # a person's tokens
    m.create_index("ai_jobs_requested", "ai_jobs", "requested_by, created_at")  # a person's AI asks in the last hour
    m.create_index("ai_jobs_queue", "ai_jobs", "state, created_at, id")  # the claim: longest waiting first


def m011_throttles(m: Migrator) -> None:
    """What the rename and channel-creation limits count: a row per rename, and who created each channel."""
    m.execute(
        f"""CREATE TABLE renames (
            {m.id_column("renames")},
            user_id BIGINT NOT NULL,
            old_name VARCHAR NOT NULL,    -- who the person was called before: a look-alike trail for admins
            created_at TIMESTAMP NOT NULL)"""
    )
    m.create_index("renames_user", "renames", "user_id, created_at")  # a person's renames in the last hour
    # NULL for channels made before, or by the app itself (scripts, tests). Channels are few: no index.
    m.execute("ALTER TABLE channels ADD COLUMN created_by BIGINT")


# Unicode TR39 look-alikes as migration 012 applied them (core.names.CONFUSABLES then), frozen here.
_M012_CONFUSABLES = (
    "2=ƧϨᒿꙄꛯꝚ 3=ƷȜЗӠⳌꝪꞫ𑣊𖼻𝈆 4=Ꮞ𑢯 5=Ƽ𑢻 6=бᏮⳒ𑣕 7=𐓒𑣆𝈒 8=Ȣȣ৪੪𐌚𞣋 9=৭੧୨൭ⳊꝮ𑢬𑣌𑣖 A=ΑАᎪᗅꓮ𐊠𖽀 AA=Ꜳ AE=ÆӔ AO=Ꜵ AR=🜇 "
    "AU=Ꜷ AV=ꜸꜺ AY=Ꜽ B=ΒВᏴᗷꓐꞴ𐊂𐊡𐌁 C=СᏟⲤꓚ𐊢𐌂𐐕𐔜𑣩𑣲🝌 D=Ꭰᗞᗪꓓ E=ΕЕᎬ⋿ⴹꓰ𐊆𑢦𑢮 F=ϜᖴꓝꞘ𐊇𐊥𐔥𑢢𑣂𝈓 G=ԌᏀᏳꓖ H=ΗНᎻᕼⲎꓧ𐋏 J=ͿЈᎫᒍꓙꞲ "
    "K=ΚКᏦᛕⲔꓗ𐔘 L=ᏞᒪⳐꓡ𐐛𐔦𑢣𑢲𖼖𝈪 M=ΜϺМᎷᗰᛖⲘꓟ𐊰𐌑 MB=🝫 N=ΝⲚꓠ𐔓 O=0ΟОՕ߀০ଠ୦ዐⲞⵔ〇ꓳ𐊒𐊫𐐄𐓂𐔖𑓐𑢵𑣠 OE=Œ OO=ꚘꝎ P=ΡРᏢᑭⲢꓑ𐊕 Q=ⵕ "
    "QE=🜀 R=ƦᎡᏒᖇꓣ𐒴𖼵𝈖 S=ЅՏᏕᏚꓢ𐊖𐐠𖼺 T=ΤТᎢ⊤⟙Ⲧꓔ𐊗𐊱𐌕𑢼𖼊🝨 T3=Ꜩ U=Սሀᑌ∪⋃ꓴ𐓎𑢸𖽂 V=Ѵ٧۷Ꮩᐯⴸꓦꛟ𐔝𑢠𖼈𝈍 VB=🝬 W=ԜᎳᏔꓪ𑣦𑣯 "
    "X=ΧХ᙭ᚷ╳ⲬⵝꓫꞳ𐊐𐊴𐌗𐌢𐔧𑣬 Y=ΥУҮᎩᎽⲨꓬ𐊲𑢤𖽃 Z=ΖᏃꓜ𐋵𑢩𑣥 a=ɑαа⍺ aa=ꜳ ae=æӕ ao=ꜵ au=ꜷ av=ꜹꜻ ay=ꜽ b=ƄЬᏏᑲᖯ bl=Ы c=сᴄⲥꮯ𐐽 "
    "d=ԁᏧᑯꓒ dz=ʣ e=еҽ℮ꬲ f=քẝꞙꬵ g=ƍɡցᶃ h=һհᏂ i=ıɩɪιіӏᎥ⍳ꙇꭵ𑣃 j=ϳј l=1I|ƖǀΙІӀ׀וןا١۱ߊᛁ∣⏽Ⲓⵏꓲ𐊊𐌉𐌠𖼨𞣇 lO=Ю ll=ǁװ‖∥ "
    "ls=ʪ lt=₶ lz=ʫ n=ոռ o=οσоօסه٥ھہە۵०੦૦௦౦೦ഠ൦๐໐ဝ၀ჿᴏᴑⲟꬽ𐐬𐓪𑣈𑣗 oe=œ oo=∞ꚙꝏ p=ρр⍴ⲣ q=ԛգզ r=гᴦⲅꭇꭈꮁ rn=m𑜀𑣣 "
    "s=ƽѕꜱꮪ𐑈𑣁 sss=🝜 tf=ꝷ ts=ʦ u=ʋυսᴜꞟꭎꭒ𐓶𑣘 ue=ᵫ uo=ꭣ v=νѵטᴠ∨⋁ꮩ𑜆𑣀 w=ɯѡԝաᴡꮃ𑜊𑜎𑜏 x=×хᕁᕽ᙮⤫⤬⨯ y=ɣʏγуүყᶌỿꭚ𑣜 z=ᴢꮓ𑣄 "
)
_M012_PROTOTYPE = {source: prototype for group in _M012_CONFUSABLES.split() for prototype, sources in [group.split("=")]
                   for source in sources}


def _m012_skeleton(name: str) -> str:
    """``core.names.skeleton`` as migration 012 applied it, frozen here."""
    text = unicodedata.normalize("NFKD", "".join(ch for ch in name if not _m007_ignorable(ch)))
    mapped = "".join(_M012_PROTOTYPE.get(ch, ch) for ch in text)
    folded = unicodedata.normalize("NFKD", mapped.casefold())
    return " ".join("".join(_M012_PROTOTYPE.get(ch, ch) for ch in folded).split())


def m012_name_skeletons(m: Migrator) -> None:
    """Each name's look (its TR39 skeleton) stored beside it, unique: two look-alike names taken at the same moment
    on parallel Postgres writers cannot both commit (the loser's retry meets the winner and is refused in words).

    Where existing names already look alike (made before the rule), the older keeps the plain skeleton and the newer
    one's gets a suffix no typed name can produce, so both stay and a third cannot be added; each pair is logged.
    """
    for table in ("users", "channels"):
        m.execute(f"ALTER TABLE {table} ADD COLUMN name_skeleton VARCHAR")  # NULL only for rows written by hand
        holder: dict[str, tuple[int, str]] = {}
        for row_id, name in m.execute(f"SELECT id, name FROM {table} ORDER BY created_at, id").fetchall():
            look = _m012_skeleton(name)
            if look in holder:
                first_id, first_name = holder[look]
                log.warning("%s %d %r and %d %r look alike; both are kept, no third can be added",
                            table, first_id, first_name, row_id, name)
                look = f"{look}{CLASH_MARK}{row_id}"
            else:
                holder[look] = (row_id, name)
            m.execute(f"UPDATE {table} SET name_skeleton = ? WHERE id = ?", [look, row_id])
        m.create_unique_index(f"{table}_name_skeleton", table, "name_skeleton")


def m013_edits_reactions(m: Migrator) -> None:
    """Edits (earlier texts kept as revisions), deletes (a tombstone keeps id, author and time), reactions, and
    the acts the per-person limit counts."""
    for column, kind in [
        ("edited_at", "TIMESTAMP"),  # the last edit; NULL: never edited
        ("deleted_at", "TIMESTAMP"),  # a tombstone: the text is gone, the row keeps its place
        ("deleted_by", "BIGINT"),  # who deleted it (an admin deleting another person's message is on record)
        ("reacted_at", "TIMESTAMP"),  # the last change of its reactions: the list's entry moves without a re-embed
    ]:
        m.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
    m.execute(
        f"""CREATE TABLE message_revisions (
            {m.id_column("message_revisions")},
            message_id BIGINT NOT NULL,
            content VARCHAR NOT NULL,     -- the text as it was before this edit
            edited_at TIMESTAMP NOT NULL, -- when it was replaced
            edited_by BIGINT)"""
    )
    m.create_index("message_revisions_message", "message_revisions", "message_id, id")
    m.execute(
        """CREATE TABLE reactions (
            message_id BIGINT NOT NULL,
            user_id BIGINT NOT NULL,
            emoji VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (message_id, user_id, emoji))"""  # one per person, emoji and message
    )
    m.execute(
        f"""CREATE TABLE message_acts (
            {m.id_column("message_acts")},
            user_id BIGINT NOT NULL,
            kind VARCHAR NOT NULL,        -- edit | delete | react | unreact
            message_id BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL)"""
    )
    m.create_index("message_acts_user", "message_acts", "user_id, created_at")  # a person's acts in the last minute


def m014_memberships(m: Migrator) -> None:
    """Channel kinds (public, private, direct), who belongs to each private or direct one, and a log of those acts.

    A direct channel's ``name_key`` is DIRECT_MARK followed by its members' sorted ids: the existing unique
    key then keeps one conversation per set of people, and no typed name (no control characters) meets it.
    """
    m.execute("ALTER TABLE channels ADD COLUMN kind VARCHAR")  # public | private | direct
    # The default comes after the ADD COLUMN, as in 002: DuckDB fails ADD COLUMN ... DEFAULT on a table with rows.
    m.execute("ALTER TABLE channels ALTER COLUMN kind SET DEFAULT 'public'")
    m.execute("UPDATE channels SET kind = 'public' WHERE kind IS NULL")
    m.execute(
        """CREATE TABLE memberships (
            channel_id BIGINT NOT NULL,
            user_id BIGINT NOT NULL,
            role VARCHAR NOT NULL,        -- owner (the creator) | member
            joined_at TIMESTAMP NOT NULL,
            added_by BIGINT,              -- who invited them (the creator for those a channel starts with)
            PRIMARY KEY (channel_id, user_id))"""
    )
    m.create_index("memberships_user", "memberships", "user_id, channel_id")  # a person's channels, in every read
    m.execute(
        f"""CREATE TABLE membership_log (
            {m.id_column("membership_log")},
            channel_id BIGINT NOT NULL,
            user_id BIGINT NOT NULL,      -- whom the act concerns
            act VARCHAR NOT NULL,         -- create | invite | remove | leave
            by_user BIGINT,               -- who did it (an admin's removal names the admin)
            created_at TIMESTAMP NOT NULL)"""
    )


def m015_attachments(m: Migrator) -> None:
    """Files on messages (core.attachments): a row per file, the bytes once per content hash."""
    m.execute(
        f"""CREATE TABLE attachment_blobs (
            sha256 VARCHAR PRIMARY KEY,   -- hex SHA-256 of the bytes: the same file sent twice is stored once
            size BIGINT NOT NULL,
            data {m.dialect.blob} NOT NULL)"""
    )
    m.execute(
        f"""CREATE TABLE attachments (
            {m.id_column("attachments")},
            message_id BIGINT NOT NULL,
            channel_id BIGINT NOT NULL,   -- who may fetch it is who may read this channel
            uploaded_by BIGINT,           -- counted against their ATTACHMENT_MB_PER_DAY
            kind VARCHAR NOT NULL,        -- image | audio | file
            media_type VARCHAR NOT NULL,  -- read from the bytes, never from the name
            name VARCHAR NOT NULL,        -- as shown: no folders, no direction controls
            size BIGINT NOT NULL,
            width BIGINT,                 -- images only
            height BIGINT,
            sha256 VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL)"""
    )
    m.create_index("attachments_message", "attachments", "message_id")  # a list's files
    m.create_index("attachments_uploader", "attachments", "uploaded_by, created_at")  # a person's bytes today


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_initial", m001_initial),
    ("002_ai_replies", m002_ai_replies),
    ("003_channel_settings", m003_channel_settings),
    ("004_job_leases", m004_job_leases),
    ("005_identities_and_limits", m005_identities_and_limits),
    ("006_search", m006_search),
    ("007_name_keys", m007_name_keys),
    ("009_ai_tools", m009_ai_tools),
    ("010_usage_ledger", m010_usage_ledger),
    ("011_throttles", m011_throttles),
    ("012_name_skeletons", m012_name_skeletons),
    ("013_edits_reactions", m013_edits_reactions),
    ("014_memberships", m014_memberships),
    ("015_attachments", m015_attachments),
]


def applied(m: Migrator) -> list[str]:
    """Names of the migrations this database has recorded, in order applied."""
    rows = m.execute("SELECT name FROM migrations ORDER BY applied_at, name").fetchall()
    return [row[0] for row in rows]


def migrate(m: Migrator, migrations: list[tuple[str, Migration]] = MIGRATIONS) -> list[str]:
    """Apply each migration not yet recorded, each in its own transaction; return the names applied now."""
    with m.exclusive():
        m.execute("CREATE TABLE IF NOT EXISTS migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
        done = set(applied(m))
        now_applied = []
        for name, step in migrations:
            if name in done:
                continue
            m.begin()
            try:
                step(m)
                m.execute("INSERT INTO migrations VALUES (?, ?)", [name, utcnow()])
                m.commit()
            except BaseException:
                m.rollback()
                raise
            now_applied.append(name)
    return now_applied
