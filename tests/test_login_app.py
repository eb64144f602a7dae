"""Login mode in AppTest: with [auth] in the secrets each person speaks only as themself, roles gate the console
and exports, and nothing in session state, query parameters or form values changes who is speaking."""
from __future__ import annotations

import os

import pytest
from message_list import act, buttons, entries

from core import accounts, chat
from core import tables as t

ISSUER = "http://127.0.0.1:9400"
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "cookie-secret-never-shown",
    "client_id": "channel-chat",
    "client_secret": "client-secret-never-shown",
    "server_metadata_url": f"{ISSUER}/.well-known/openid-configuration",
}
ANN = {"is_logged_in": True, "iss": ISSUER, "sub": "ann-sub", "email": "ann@example.com", "name": "Ann Example"}
BOSS = {"is_logged_in": True, "iss": ISSUER, "sub": "boss-sub", "email": "Boss@Example.com", "name": "Boss",
        "email_verified": True}
CHAT, USERS, CHANNELS, TABLES = "app.py", "views/users.py", "views/channels.py", "views/tables.py"


@pytest.fixture
def login_app(app_test):
    """An AppTest of the app in login mode, logged in as ``user`` (claims as st.user gives them)."""

    def build(user: dict | None, page: str | None = None, **session):
        at = app_test(page=page, **session)
        at.secrets["auth"] = dict(AUTH)
        at.secrets["ADMIN_EMAILS"] = "boss@example.com, other-admin@example.com"
        at.user = dict(user) if user else {"is_logged_in": False}
        return at

    return build


def _click(at, label: str):
    next(b for b in at.button if b.label == label).click()
    return at.run()


def test_a_visitor_who_is_not_logged_in_sees_only_the_login_page(login_app, app_db):
    channel = chat.create_channel(app_db, "general")
    chat.send_message(app_db, channel, chat.create_user(app_db, "Old user"), "not for strangers")
    for page in (None, USERS, CHANNELS, TABLES):
        at = login_app(None, page=page).run()
        assert not at.exception
        assert at.title[0].value == "Channel Chat"
        assert [b.label for b in at.button] == ["Log in"]
        assert not at.chat_input and not at.chat_message and not at.dataframe and not at.sidebar.selectbox


def test_each_named_provider_gets_a_login_button(login_app, app_db):
    at = login_app(None)
    at.secrets["auth"] = {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"],
                          "google": {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")},
                          "microsoft": {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")}}
    at.run()
    assert [b.label for b in at.button] == ["Log in with Google", "Log in with Microsoft"]


def test_an_incomplete_auth_section_is_a_sentence(login_app, app_db):
    at = login_app(ANN)
    at.secrets["auth"] = {"redirect_uri": AUTH["redirect_uri"], "client_id": "x"}
    at.run()
    assert not at.exception
    assert at.error[0].value.startswith(
        "A setting needs fixing: The [auth] section of the secrets is incomplete: it needs cookie_secret, ")


def test_first_login_creates_a_bound_user_and_messages_carry_it(login_app, app_db):
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at = login_app(ANN, channel_id=channel).run()
    assert not at.exception
    (ann,) = chat.list_users(app_db)
    assert ann.name == "Ann Example"
    assert app_db.one("SELECT issuer, subject, user_id, email FROM identities") == (ISSUER, "ann-sub", ann.id,
                                                                                     "ann@example.com")
    assert "**Ann Example**" in at.sidebar.markdown[0].value
    assert not [s for s in at.sidebar.selectbox if s.key == "user_id"]  # no "You are" picker
    assert [b.label for b in at.sidebar.button] == ["Save name", "Log out", "Create channel", "Open direct message"]
    at.chat_input[0].set_value("hello, it is really me").run()
    (message,) = chat.list_messages(app_db, channel)
    assert (message.author_id, message.author_name) == (ann.id, "Ann Example")
    at.run()  # a second visit finds the same user: no new row
    assert len(chat.list_users(app_db)) == 1


def test_nothing_in_session_state_query_or_forms_changes_the_author(login_app, app_db):
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    bob = chat.create_user(app_db, "Bob")  # an open-mode user nobody is bound to
    at = login_app(ANN, channel_id=channel, user_id=bob, rename_name="Bob")
    at.query_params["user"] = str(bob)
    at.query_params["user_id"] = str(bob)
    at.query_params["as"] = "Bob"
    at.run()
    at.session_state["user_id"] = bob
    at.chat_input[0].set_value("who am I?").run()
    (message,) = chat.list_messages(app_db, channel)
    assert message.author_name == "Ann Example" and message.author_id != bob
    assert "as Ann Example" in at.chat_input[0].placeholder


def test_names_from_tokens_stay_unique_and_people_can_rename_themselves(login_app, app_db):
    chat.create_user(app_db, "ann example")  # an open-mode user already has the name
    channel = chat.create_channel(app_db, "general", reply_policy="off")
    at = login_app(ANN, channel_id=channel).run()
    assert "**Ann Example 2**" in at.sidebar.markdown[0].value
    at.chat_input[0].set_value("before the rename").run()
    at.sidebar.text_input(key="rename_name").input("Ann")
    at = _click(at, "Save name")
    assert not at.sidebar.error and "**Ann**" in at.sidebar.markdown[0].value
    assert chat.list_messages(app_db, channel)[0].author_name == "Ann"  # the cached message follows the rename
    at.sidebar.text_input(key="rename_name").input("ANN EXAMPLE")
    at = _click(at, "Save name")
    assert "already exists" in at.sidebar.error[0].value


def test_logout_ends_the_session(login_app, app_db):
    at = login_app(ANN).run()
    at = _click(at, "Log out")
    assert at.user == {"is_logged_in": False}
    at.run()
    assert [b.label for b in at.button] == ["Log in"]


def _tables(login_app, app_db, user, **session):
    ann = chat.create_user(app_db, "Someone")
    chat.send_message(app_db, chat.create_channel(app_db, "general", reply_policy="off"), ann, "hello")
    return login_app(user, page=TABLES, **session)


def test_a_non_admin_cannot_reach_the_console_exports_or_identities_by_any_path(login_app, app_db):
    at = _tables(login_app, app_db, ANN, tables_view="SQL console", tables_table="identities",
                 console_sql="SELECT * FROM identities").run()
    assert not at.exception
    assert at.radio(key="tables_view").options == ["Browse", "Overview"]
    assert not [o for o in at.selectbox(key="tables_table").options if o.startswith("identities")]
    assert not [e for e in at.get("download_button")]
    assert not [a for a in at.text_area if a.key == "console_sql"]
    assert "for admins (ADMIN_EMAILS)" in " ".join(c.value for c in at.caption)
    assert at.radio(key="tables_view").value == "Browse"  # the forced "SQL console" fell back to Browse
    at.radio(key="tables_view").set_value("Overview").run()
    assert not at.exception and not at.get("download_button")


def test_an_admin_gets_the_console_and_exports_without_a_password(login_app, app_db):
    at = _tables(login_app, app_db, BOSS).run()
    assert at.radio(key="tables_view").options == ["Browse", "Overview", "SQL console"]
    assert [o for o in at.selectbox(key="tables_table").options if o.startswith("identities")]
    assert len(at.get("download_button")) == 2
    at.radio(key="tables_view").set_value("SQL console").run()
    at.text_area(key="console_sql").input("SELECT email FROM identities ORDER BY email")
    at = _click(at, "Run")
    assert not at.error and at.dataframe[0].value["email"].tolist() == ["boss@example.com"]


def test_an_unverified_email_is_not_an_admin(login_app, app_db):
    at = _tables(login_app, app_db, dict(BOSS, email_verified=False)).run()
    assert at.radio(key="tables_view").options == ["Browse", "Overview"]


def test_an_email_the_provider_did_not_verify_is_not_an_admin(login_app, app_db):
    unsaid = {key: value for key, value in BOSS.items() if key != "email_verified"}
    at = _tables(login_app, app_db, unsaid).run()
    assert at.radio(key="tables_view").options == ["Browse", "Overview"]


def test_only_admins_set_a_channels_ai(login_app, app_db):
    chat.create_channel(app_db, "general")
    at = login_app(ANN, page=CHANNELS).run()
    assert not at.radio and not at.text_area and "Admins (ADMIN_EMAILS) set when the AI answers" in at.caption[0].value
    at.text_input[0].input("ann's corner")
    at = _click(at, "Create channel")
    assert {c.name: c.reply_policy for c in chat.list_channels(app_db)} == {"ann's corner": "every", "general": "every"}
    at = login_app(BOSS, page=CHANNELS).run()
    assert len(at.radio) == 2 and at.text_area[0].label == "Persona (system prompt)"


def test_users_are_not_created_by_hand_in_login_mode(login_app, app_db):
    at = login_app(ANN, page=USERS).run()
    assert not [b for b in at.button if b.label == "Create user"] and not at.main.text_input
    assert at.dataframe[0].value["name"].tolist() == ["Ann Example"]


def test_open_mode_says_anyone_can_speak_as_anyone(app_test, app_db):
    chat.create_user(app_db, "Ann")
    at = app_test().run()
    assert any("anyone with this link can pick any name and speak as anyone" in c.value for c in at.sidebar.caption)
    assert [s.key for s in at.sidebar.selectbox][0] == "user_id"


def rendered(at) -> str:
    """Everything the page sent to the browser: every element's message, main area and sidebar."""
    parts, stack = [], [at._tree]
    while stack:
        node = stack.pop()
        if getattr(node, "proto", None) is not None:
            parts.append(str(node.proto))
        stack.extend(getattr(node, "children", {}).values())
    return "\n".join(parts)


SECRETS = {
    "OPENAI_API_KEY": "sk-test-openai-key-never-shown",
    "ADMIN_PASSWORD": "admin-password-never-shown",
}


@pytest.mark.parametrize("page", [None, USERS, CHANNELS, TABLES])
def test_no_page_shows_a_secret(login_app, app_db, pg_url, monkeypatch, page):
    """The OpenAI key, the cookie and client secrets, the admin password and the database password: on no page."""
    password_url = pg_url.replace("://postgres@", "://postgres:db-password-never-shown@", 1)
    assert "db-password-never-shown" in password_url
    monkeypatch.setenv("CHAT_DB", password_url)  # the test server trusts local connections: any password works
    from core.store import connect

    seed = connect(password_url)
    try:
        ann = chat.create_user(seed, "Seeded")
        chat.send_message(seed, chat.create_channel(seed, "general", reply_policy="off"), ann, "hello")
    finally:
        seed.close()
    at = login_app(BOSS, page=page)
    at.secrets.update(SECRETS)
    at.run()
    views = [None] if page != TABLES else ["Browse", "Overview", "duckdb_settings()", "duckdb_databases()"]
    for view in views:
        if view in ("Browse", "Overview"):
            at.radio(key="tables_view").set_value(view).run()
        elif view:  # the console, asked for DuckDB's settings and attached databases (where a DSN would show)
            at.radio(key="tables_view").set_value("SQL console").run()
            at.text_area(key="console_sql").input(f"SELECT * FROM {view}")
            at = _click(at, "Run")
            assert not at.error and len(at.dataframe[0].value)
        assert not at.exception
        shown = rendered(at)
        assert "general" in shown or "Seeded" in shown  # the page did show the database's contents
        for secret in [*SECRETS.values(), AUTH["cookie_secret"], AUTH["client_secret"], "db-password-never-shown"]:
            assert secret not in shown, f"{secret} shown on {page} {view}"


def test_only_who_asked_or_an_admin_gets_retry_and_core_holds_it(login_app, app_db):
    import time

    from core import replies
    from core.errors import ValidationError

    channel = chat.create_channel(app_db, "general")  # the AI answers; no API key, so each reply fails at once
    at = login_app(ANN, channel_id=channel).run()
    at.chat_input[0].set_value("hello @ai").run()
    deadline = time.monotonic() + 15
    while (reply := chat.list_messages(app_db, channel)[0]).status != "error":
        assert time.monotonic() < deadline, reply
        time.sleep(0.05)
    bob_claims = {"is_logged_in": True, "iss": ISSUER, "sub": "bob-sub", "email": "bob@example.com", "name": "Bob"}
    bob_page = login_app(bob_claims, channel_id=channel).run()
    assert not bob_page.exception and buttons(bob_page, entries(bob_page)[1]) == []
    bob = next(u.id for u in chat.list_users(app_db) if u.name == "Bob")
    with pytest.raises(ValidationError, match="^Only Ann Example, who asked for this reply"):
        replies.retry_reply(app_db, reply.id, bob)  # what a forged click would reach: core refuses it
    boss_page = login_app(BOSS, channel_id=channel).run()
    assert buttons(boss_page, entries(boss_page)[1]) == ["Retry"]
    at = act(login_app(ANN, channel_id=channel).run(), "retry", reply.id)
    assert not at.exception
    asked = app_db.rows("SELECT requested_by, cause FROM ai_jobs WHERE reply_id = ? ORDER BY id", [reply.id])
    ann = next(u.id for u in chat.list_users(app_db) if u.name == "Ann Example")
    assert asked == [(ann, "send"), (ann, "retry")]
