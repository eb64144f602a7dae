"""The chat page's search panel under AppTest: ranked, highlighted, inert results; scope; paging; open in channel."""
from __future__ import annotations

from core import chat, render


def seed(db):
    ann = chat.create_user(db, "Ann")
    general = chat.create_channel(db, "general", reply_policy="off")
    dev = chat.create_channel(db, "dev", reply_policy="off")
    ids = [chat.send_message(db, general, ann, f"filler {i}") for i in range(3)]
    ids.append(chat.send_message(db, general, ann, "<b>deploy</b> on **friday** $x$ :red[no] [link](http://x)"))
    ids += [chat.send_message(db, general, ann, f"after {i}") for i in range(7)]
    chat.send_message(db, dev, ann, "deploy on friday from dev")
    return ann, general, dev, ids


def search(at, query: str, scope: str | None = None):
    if scope:
        at.radio(key="search_scope").set_value(scope)
    at.text_input(key="search_query").input(query)
    return at.run()


def results(at) -> list[str]:
    """The markdown of each result card, top to bottom."""
    expander = at.expander[0]
    return [md.value for md in expander.markdown]


def test_search_highlights_inert_text_and_keeps_to_the_channel(app_test, app_db):
    ann, general, dev, ids = seed(app_db)
    at = app_test(user_id=ann, channel_id=general).run()
    assert not at.exception and at.expander[0].label == "Search messages"
    at = search(at, "DEPLOY on")
    assert not at.exception
    (shown,) = results(at)
    assert shown == (
        "\\<b\\>:orange-background[**deploy**]\\</b\\> :orange-background[**on**] \\*\\*friday\\*\\* \\$x\\$ "
        "\\:red\\[no\\] \\[link\\]\\(http\\://x\\)"
    )
    assert not any(md.allow_html for md in at.expander[0].markdown)
    assert "general" in at.expander[0].caption[-1].value or any("general" in c.value for c in at.expander[0].caption)

    at = search(at, "deploy on", scope="All channels")
    assert len(results(at)) == 2
    assert any("\\#dev" in c.value for c in at.expander[0].caption)


def test_bad_queries_say_why(app_test, app_db):
    ann, general, _, _ = seed(app_db)
    at = app_test(user_id=ann, channel_id=general).run()
    at = search(at, "x")
    assert "too short" in at.expander[0].warning[0].value
    at = search(at, "nothing like this")
    assert at.expander[0].caption[-1].value == "No messages match."
    assert not at.exception


def test_results_page_forward_and_back(app_test, app_db):
    ann, general, _, _ = seed(app_db)
    for i in range(15):
        chat.send_message(app_db, general, ann, f"standup {i}")
    at = app_test(user_id=ann, channel_id=general).run()
    at = search(at, "standup")
    assert len(results(at)) == 10
    at = at.button(key="search_next").click().run()
    assert len(results(at)) == 5 and at.button(key="search_next").disabled
    at = at.button(key="search_prev").click().run()
    assert len(results(at)) == 10 and at.button(key="search_prev").disabled


def test_open_a_result_in_its_channel_with_its_neighbours(app_test, app_db):
    ann, general, dev, ids = seed(app_db)
    at = app_test(user_id=ann, channel_id=general).run()
    at = search(at, "friday from dev", scope="All channels")
    at = at.button(key="search_open_0").click().run()
    assert at.session_state["channel_id"] == dev and at.header[0].value == "# dev"
    assert [h.value for h in at.expander[0].html] == ["<p>deploy on friday from dev</p>"]  # as the list draws it

    at = at.button(key="search_back").click().run()
    at = search(at, "friday", scope="This channel")  # now #dev
    assert len(results(at)) == 1
    at = search(at, "friday", scope="All channels")
    index = [md.value for md in at.expander[0].markdown].index(
        next(v for v in results(at) if v.startswith("\\<b\\>")))
    at = at.button(key=f"search_open_{index}").click().run()
    assert at.session_state["channel_id"] == general
    context = [h.value for h in at.expander[0].html]
    assert context[:3] == ["<p>filler 0</p>", "<p>filler 1</p>", "<p>filler 2</p>"]
    assert context[3] == render.message_html(chat.get_message(app_db, ids[3]).content)  # HTML inert, links checked
    assert context[4:] == [f"<p>after {i}</p>" for i in range(5)]
    assert not at.exception
