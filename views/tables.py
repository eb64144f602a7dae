"""Tables: browse, chart and export the app's tables, with a read-only SQL console."""
import secrets
from functools import partial

import streamlit as st
from streamlit_autorefresh import st_autorefresh

from core import chat, embeddings, limits, membership, tables
from core.console import SNAPSHOT_MAX_AGE
from core.errors import ChatError
from core.tables import access
from views.common import current_user, get_db, get_settings, is_admin, show_error

LIVE_SECONDS = (2, 5, 10, 30)  # refresh choices: a rerun over a million messages takes well under a second
VIEWS = ("Browse", "Overview", "SQL console")

db, settings = get_db(), get_settings()
st.title("Tables")


def ask_access() -> bool:
    """Ask core whether the console, exports and private tables are open to this visitor (core.tables.access)."""
    given = None
    if access.asks_password(settings.login, settings.admin_password):
        given = st.text_input("Admin password", type="password", key="tables_admin_password",
                              help="Needed for the SQL console and exports (ADMIN_PASSWORD).")
    session = st.session_state.setdefault("tables_session", secrets.token_hex(8))  # this browser tab, for the back-off
    try:
        unlocked = access.admin_unlocked(login=settings.login, admin=is_admin(), admin_password=settings.admin_password,
                                         given=given, session=session, client=st.context.ip_address)
    except access.TooManyTries as error:
        st.error(str(error))
        return False
    if settings.login and not unlocked:
        st.caption(":material/lock: The SQL console, exports and the identities table are for admins (ADMIN_EMAILS). "
                   "You see the rows of channels you can read; admins see every row.")
    elif not settings.login and not settings.admin_password:
        st.caption(":material/lock_open: No ADMIN_PASSWORD is set: the SQL console and exports are open to anyone who can open this page.")
    elif given and not unlocked:
        st.error("Wrong admin password.")
    return unlocked


def column_config(columns: list[tables.Column]) -> dict:
    """How each column of the browser is drawn, from its type in the catalog."""
    config = {}
    for name, kind in tables.column_kinds(columns).items():
        if kind == "datetime":
            config[name] = st.column_config.DatetimeColumn(name, format="YYYY-MM-DD HH:mm:ss", help="UTC")
        elif kind == "long_text":
            config[name] = st.column_config.TextColumn(
                name, width="large", help=f"The first {tables.TEXT_PREVIEW_CHARS} characters; exports hold all of it")
        elif kind == "status":
            config[name] = st.column_config.TextColumn(name, width="small")
        elif kind == "ms":
            config[name] = st.column_config.NumberColumn(name, format="%.0f ms")
        elif kind == "bool":
            config[name] = st.column_config.CheckboxColumn(name, width="small")
        elif kind == "number":
            config[name] = st.column_config.NumberColumn(name)
    return config


def readable(unlocked: bool) -> tuple | None:
    """Who is not an admin sees only rows of channels they can read (core.membership): the subquery, or None for all."""
    if unlocked:
        return None
    me = current_user(db)
    sql, params = membership.readable_channels(db, me.id if me else None)
    return sql, tuple(params)


def filter_widgets(table: str, unlocked: bool) -> tables.Filters:
    """The filters that apply to ``table``, drawn side by side."""
    support = tables.filter_support(db, table)
    left, middle, right, when, text = st.columns(5)
    channel_id = author_id = status = since = None
    if "channel_id" in support:
        me = current_user(db)
        listed = chat.list_channels(db) if unlocked else membership.my_channels(db, me.id if me else None)
        channels = {c.id: f"# {c.name}" for c in listed}
        channel_id = left.selectbox("Channel", [None, *channels], key="filter_channel",
                                    format_func=lambda i: "All channels" if i is None else channels[i])
    if "author_id" in support:
        authors = {tables.AI_AUTHOR: "AI", **{u.id: u.name for u in chat.list_users(db)}}
        author_id = middle.selectbox("Author", [None, *authors], key="filter_author",
                                     format_func=lambda i: "Anyone" if i is None else authors[i])
    if "status" in support:
        status = right.selectbox("Status", [None, *tables.status_values(db, table)], key=f"filter_status_{table}",
                                 format_func=lambda s: "Any status" if s is None else s)
    if "since" in support:
        since = tables.since_for(when.selectbox("Time range", list(tables.TIME_RANGES), key="filter_range"), db.clock())
    contains = text.text_input("Text contains", key="filter_text")
    return tables.Filters(channel_id=channel_id, author_id=author_id, status=status, since=since, text=contains or None,
                          readable=readable(unlocked))


def browse(unlocked: bool) -> None:
    counts = {info.name: info.rows for info in access.visible_tables(db, unlocked)}
    names = list(counts)
    if st.session_state.get("tables_table") not in names:
        st.session_state.pop("tables_table", None)
    table = st.selectbox("Table", names, index=names.index(tables.MESSAGES) if tables.MESSAGES in names else 0,
                         format_func=lambda n: f"{n} · {counts[n]:,} rows", key="tables_table")
    filters = filter_widgets(table, unlocked)
    columns = tables.browse_columns(db, table)
    column_names = [c.name for c in columns]
    by, direction, size, page_at = st.columns([2, 2, 1, 1])
    sort_column = by.selectbox("Sort by", column_names, key=f"sort_{table}",
                               index=column_names.index("id") if "id" in column_names else 0)
    descending = direction.radio("Order", ["Descending", "Ascending"], horizontal=True, key=f"order_{table}") == "Descending"
    sort = tables.Sort(sort_column, descending)
    page_size = size.selectbox("Rows per page", tables.PAGE_SIZES, key="page_size",
                               index=tables.PAGE_SIZES.index(tables.DEFAULT_PAGE_SIZE))
    pages = tables.page_count(tables.count_rows(db, table, filters), page_size)
    page_key = f"page_{table}"
    if st.session_state.get(page_key, 1) > pages:  # the filters left fewer pages than the one shown
        st.session_state[page_key] = pages
    page = page_at.number_input("Page", min_value=1, max_value=pages, step=1, key=page_key)
    frame, total = tables.browse(db, table, filters, sort, int(page), page_size)
    st.dataframe(frame, hide_index=True, column_config=column_config(columns))
    first = (page - 1) * page_size
    st.caption(f"Rows {min(first + 1, total):,}–{first + len(frame):,} of {total:,} · page {page:,} of {pages:,} · times in UTC")
    export(table, filters, sort, total, unlocked)


def export(table: str, filters: tables.Filters, sort: tables.Sort, total: int, unlocked: bool) -> None:
    if not unlocked:
        st.caption("🔒 Exports need the admin password.")
        return
    csv, parquet = st.columns([1, 5])
    # The files are made only when a button is pressed, on Streamlit's download thread.
    csv.download_button("Download CSV", partial(tables.export_csv, db, table, filters, sort), file_name=f"{table}.csv",
                        mime="text/csv", on_click="ignore", key="export_csv")
    parquet.download_button("Download Parquet", partial(tables.export_parquet, db, table, filters, sort),
                            file_name=f"{table}.parquet", mime="application/vnd.apache.parquet",
                            on_click="ignore", key="export_parquet")
    if total > tables.EXPORT_MAX_ROWS:
        st.caption(f"Exports hold the first {tables.EXPORT_MAX_ROWS:,} of these {total:,} rows, in the order shown.")


def overview(unlocked: bool) -> None:
    per, span = st.columns(2)
    bucket = per.radio("Per", tables.BUCKETS, horizontal=True, format_func=str.capitalize, key="overview_bucket")
    since = tables.since_for(span.selectbox("Time range", list(tables.TIME_RANGES), key="overview_range"), db.clock())
    totals = tables.overview_totals(db, since)
    for column, (label, value) in zip(st.columns(5), [
        ("Messages", f"{totals['messages']:,}"), ("AI replies", f"{totals['ai_replies']:,}"),
        ("AI errors", f"{totals['errors']:,}"), ("Error rate", f"{totals['error_rate']:.1%}"),
        ("Users · channels", f"{totals['users']:,} · {totals['channels']:,}"),
    ]):
        column.metric(label, value)
    if fell_back := embeddings.fallback_reason(db):  # the AI server has no embeddings
        st.caption(f":material/search_off: {fell_back}")
    charts = [
        ("Messages per channel", tables.messages_over_time(db, bucket, since, readable(unlocked)), st.line_chart, "No messages yet."),
        ("AI time to first token and total time (ms)", tables.ai_timings(db, bucket, since), st.line_chart,
         "No timed AI replies yet."),
        ("AI errors by reason (% of AI replies)", tables.error_reasons(db, since)[["error rate %"]], st.bar_chart,
         "No AI errors."),
        ("Tokens per day", tables.tokens_per_day(db, since), st.bar_chart, "No token counts yet."),
    ]
    for title, frame, chart, empty in charts:
        st.subheader(title)
        if frame.empty:
            st.caption(empty)
        else:
            chart(frame)
    st.subheader("Feedback on AI replies")
    feedback = tables.ai_feedback(db, since)
    if feedback.empty:
        st.caption("No 👍 or 👎 on an AI reply yet.")
    else:
        st.caption("👍 and 👎 reactions on AI replies, per model and channel (replies: how many got any).")
        st.dataframe(feedback, hide_index=True)
    st.subheader("Usage per person")
    limit = settings.ai_tokens_per_day
    st.caption(f"AI tokens today (UTC): {limits.tokens_today(db):,}" + (f" of {limit:,}" if limit else " (no daily budget)"))
    usage = tables.usage_by_person(db, since)
    if usage.empty:
        st.caption("Nobody has written yet.")
    else:
        st.dataframe(usage, hide_index=True, column_config={
            "last message": st.column_config.DatetimeColumn("last message", format="YYYY-MM-DD HH:mm", help="UTC")})
    st.subheader("Tables")
    st.dataframe([info._asdict() for info in tables.list_tables(db)], hide_index=True)


def console(unlocked: bool) -> None:
    if not unlocked:
        st.info("🔒 Enter the admin password above to use the SQL console.")
        return
    st.caption(f"One read-only SELECT over a copy of the app's tables (refreshed every {SNAPSHOT_MAX_AGE:g} s), "
               f"run in its own process: at most {tables.CONSOLE_MAX_ROWS:,} rows, {settings.console_seconds:g} s and "
               f"{settings.console_memory_mb:,} MB. Files, settings and writes are refused.")
    with st.form("sql_console"):
        sql = st.text_area("SQL", value=tables.CONSOLE_EXAMPLE, height=140, key="console_sql")
        run = st.form_submit_button("Run")
    if run:
        try:
            st.session_state["console_result"] = tables.run_readonly_sql(
                db, sql, timeout_s=settings.console_seconds, memory_mb=settings.console_memory_mb,
                role=settings.console_role)
        except ChatError as error:
            st.session_state.pop("console_result", None)
            show_error(error)
    result = st.session_state.get("console_result")  # this browser's own last answer survives a live refresh
    if result is not None:
        st.dataframe(result, hide_index=True)
        note = f"{len(result):,} rows"
        if result.attrs.get("truncated"):
            note = f"Showing the first {len(result):,} rows; the query returned more."
        st.caption(f"{note} · data as of {result.attrs['as_of']} UTC · {result.attrs['seconds']:.1f} s · "
                   f"peak {result.attrs['peak_mb']:,.0f} MB")


live, every, _ = st.columns([1, 1, 4])
if live.toggle("Live", key="tables_live", help="Rerun the whole page every few seconds."):
    seconds = every.selectbox("Every", LIVE_SECONDS, index=1, format_func=lambda s: f"every {s} s",
                              label_visibility="collapsed", key="tables_live_seconds")
    st_autorefresh(interval=seconds * 1000, key="tables_refresh")
unlocked = ask_access()
views = VIEWS if access.offers_console(settings.login, unlocked) else VIEWS[:2]  # login mode: only to admins
if st.session_state.get("tables_view") not in views:
    st.session_state["tables_view"] = views[0]
view = st.radio("View", views, horizontal=True, label_visibility="collapsed", key="tables_view")
try:
    {"Browse": partial(browse, unlocked), "Overview": partial(overview, unlocked), "SQL console": partial(console, unlocked)}[view]()
except ChatError as error:
    show_error(error)
