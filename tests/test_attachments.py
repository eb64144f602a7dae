"""Files on messages: told apart by their bytes, stored once per content on both backends, served so nothing runs."""
from __future__ import annotations

import io
import time

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from core import attachments, chat, tickets
from core.attachments import Upload
from core.config import load_settings
from core.context import estimate_tokens
from test_ai import responders  # noqa: F401 (a fixture)
from core.errors import ValidationError
from core.limits import Limits, RateLimited
from views.files import FILES_PATH, FilesRoute

SECRET = "a-cookie-secret-for-tests-only-0123456789"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": SECRET,
        "client_id": "x", "client_secret": "y", "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}


def png(width: int = 40, height: int = 30, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def jpeg_with_gps() -> bytes:
    """A photo as phones make it: rotated by an Orientation tag, with a GPS position in its EXIF."""
    image = Image.new("RGB", (60, 20), (10, 120, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 1.0), 3: "E", 4: (4.0, 53.0, 2.0)}  # GPSInfo
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def bomb() -> bytes:
    """A PNG that declares 20,000 x 20,000 pixels in a few kilobytes."""
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")
    return out.getvalue()


def test_what_a_file_is_comes_from_its_bytes_never_its_name():
    assert attachments.inspect(Upload("cat.txt", png())).media_type == "image/png"
    photo = attachments.inspect(Upload("photo.jpg", jpeg_with_gps()))
    assert (photo.kind, photo.media_type, photo.width, photo.height) == ("image", "image/jpeg", 60, 20)
    fake = attachments.inspect(Upload("image.png", b"<html><script>alert(1)</script></html>"))
    assert (fake.kind, fake.media_type) == ("file", attachments.TEXT)  # a "PNG" that is HTML is text, a download
    svg = attachments.inspect(Upload("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'))
    assert svg.media_type == attachments.TEXT
    assert attachments.inspect(Upload("doc.pdf", b"%PDF-1.4\n%...")).media_type == "application/pdf"
    assert attachments.inspect(Upload("t.parquet", b"PAR1" + b"\x00" * 20 + b"PAR1")).media_type == attachments.PARQUET
    assert attachments.inspect(Upload("x.bin", bytes(range(256)) * 4)).media_type == attachments.UNKNOWN
    wav = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + b"\x00" * 24
    assert attachments.inspect(Upload("voice.wav", wav)).kind == "audio"


def test_empty_oversized_broken_and_bomb_files_are_refused_with_a_sentence():
    with pytest.raises(ValidationError, match="notes.txt is empty"):
        attachments.inspect(Upload("notes.txt", b""))
    with pytest.raises(ValidationError, match=r"too large: 2\.0 MB; the limit is 1\.0 MB"):
        attachments.inspect(Upload("big.bin", b"x" * (2 * 1024 * 1024)), max_bytes=1024 * 1024)
    with pytest.raises(ValidationError, match="megapixels"):
        attachments.inspect(Upload("bomb.png", bomb()))
    truncated = png()[:60]
    assert attachments.inspect(Upload("half.png", truncated)).kind == "file"  # not an image Pillow can read
    with pytest.raises(ValidationError, match="at most 10 files"):
        attachments.check_uploads([Upload(f"{i}.txt", b"x") for i in range(11)])


@pytest.mark.parametrize("raw, shown", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\ann\\report.pdf", "report.pdf"),
    ("invoice\u202egnp.exe", "invoicegnp.exe"),  # a right-to-left override cannot make .exe read as .png
    ("a\nb\tc.txt", "a b c.txt"),
    ("", "file"),
    ("...", "file"),
])
def test_file_names_are_shown_inert(raw, shown):
    assert attachments.clean_file_name(raw) == shown


def test_a_long_name_keeps_its_extension():
    name = attachments.clean_file_name("x" * 300 + ".csv")
    assert len(name) <= attachments.NAME_MAX and name.endswith("….csv")


def test_thumbnails_are_upright_small_and_carry_no_metadata():
    body, media_type = attachments.thumbnail(jpeg_with_gps())
    assert media_type == "image/jpeg"
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.size == (20, 60)  # the Orientation tag applied to the pixels
        assert not thumb.getexif() and "exif" not in thumb.info and "icc_profile" not in thumb.info
    assert b"GPS" not in body and b"Exif" not in body
    big, _ = attachments.thumbnail(png(2000, 1000))
    with Image.open(io.BytesIO(big)) as thumb:
        assert max(thumb.size) == attachments.THUMB_PIXELS


def test_files_go_with_their_message_and_are_stored_once_per_content(db):
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    photo = png()
    first = chat.send_message(db, general, ann, "look", files=[Upload("a.png", photo), Upload("notes.md", b"# hi")])
    second = chat.send_message(db, general, ann, "again", files=[Upload("copy.png", photo)])
    found = attachments.of_messages(db, [first, second])
    assert [a.name for a in found[first]] == ["a.png", "notes.md"] and [a.name for a in found[second]] == ["copy.png"]
    assert db.one("SELECT count(*) FROM attachment_blobs")[0] == 2  # the same image twice is stored once
    assert attachments.content(db, found[second][0]) == photo
    assert found[first][0].inline and not found[first][1].inline


def test_a_message_of_images_alone_is_stored_and_asks_the_ai_nothing(db):
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general")
    message_id = chat.send_message(db, general, ann, "  ", files=[Upload("a.png", png())])
    assert chat.get_message(db, message_id).content == ""
    assert db.one("SELECT count(*) FROM ai_jobs")[0] == 0
    with pytest.raises(ValidationError, match="empty"):
        chat.send_message(db, general, ann, "  ")  # no text and no file is still nothing to send


def test_a_refused_file_stores_nothing_of_the_message(db):
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general")
    with pytest.raises(ValidationError, match="empty.txt is empty"):
        chat.send_message(db, general, ann, "with a bad file", files=[Upload("a.png", png()), Upload("empty.txt", b"")])
    assert db.one("SELECT count(*) FROM messages")[0] == 0 and db.one("SELECT count(*) FROM attachments")[0] == 0


def test_a_person_has_a_daily_allowance_of_file_bytes(db):
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    limits = Limits(attachment_mb_per_day=1)
    chat.send_message(db, general, ann, "one", limits=limits, files=[Upload("a.bin", b"a" * 700_000)])
    with pytest.raises(RateLimited, match="limit of 1 MB a day"):
        chat.send_message(db, general, ann, "two", limits=limits, files=[Upload("b.bin", b"b" * 700_000)])
    chat.send_message(db, general, ann, "text is not counted", limits=limits)


# the route ----------------------------------------------------------------------------------------------
def client_for(db, settings) -> TestClient:
    route = FilesRoute(settings=lambda: settings, database=lambda: db)
    return TestClient(Starlette(routes=[Route(FILES_PATH, route.serve)]))


def seeded(db):
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    other = chat.create_channel(db, "other", reply_policy="off")
    message = chat.send_message(db, general, ann, "files", files=[
        Upload("photo.jpg", jpeg_with_gps()), Upload("page.html", b"<html><script>alert(1)</script></html>"),
        Upload("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')])
    elsewhere = chat.send_message(db, other, ann, "elsewhere", files=[Upload("x.png", png())])
    photo, page, logo = attachments.of_messages(db, [message])[message]
    return general, other, photo, page, logo, attachments.of_messages(db, [elsewhere])[elsewhere][0]


def test_images_show_inline_and_everything_else_downloads_inert(duck_db):
    _, _, photo, page, logo, _ = seeded(duck_db)
    with client_for(duck_db, load_settings({})) as client:
        shown = client.get(f"/files/{photo.id}")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert shown.headers["content-disposition"].startswith("inline;")
        for answer in (shown, client.get(f"/files/{page.id}"), client.get(f"/files/{logo.id}")):
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'none'" in answer.headers["content-security-policy"]
            assert "sandbox" in answer.headers["content-security-policy"]
        for download in (client.get(f"/files/{page.id}"), client.get(f"/files/{logo.id}")):
            assert download.headers["content-disposition"].startswith("attachment;")
            assert download.headers["content-type"].startswith("text/plain")  # never text/html or image/svg+xml
        thumb = client.get(f"/files/{photo.id}?thumb=1")
        assert thumb.status_code == 200 and b"GPS" not in thumb.content and b"Exif" not in thumb.content
        assert client.get(f"/files/{page.id}?thumb=1").status_code == 404
        missing = client.get("/files/999999")
        assert missing.status_code == 404 and "not found" in missing.text


def test_login_mode_serves_a_file_only_with_a_ticket_for_its_channel(duck_db):
    general, other, photo, _, _, elsewhere = seeded(duck_db)
    settings = load_settings({"auth": AUTH})
    now = time.time()
    ticket = tickets.sign(SECRET, "https://issuer ann", [general, 0], tickets.expiry(now))
    with client_for(duck_db, settings) as client:
        assert client.get(f"/files/{photo.id}").status_code == 403  # signed out
        assert client.get(f"/files/{photo.id}?ticket={ticket}").status_code == 200
        assert client.get(f"/files/{elsewhere.id}?ticket={ticket}").status_code == 403  # another channel's file
        forged = ticket[:-3] + ("AAA" if not ticket.endswith("AAA") else "BBB")
        assert client.get(f"/files/{photo.id}?ticket={forged}").status_code == 403
        expired = tickets.sign(SECRET, "https://issuer ann", [general, 0], int(now) - 1)
        assert client.get(f"/files/{photo.id}?ticket={expired}").status_code == 403


def test_the_ai_reads_text_files_as_marked_notes_cut_to_their_share(db):
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general")
    chat.send_message(db, general, ann, "our notes", files=[Upload("notes.md", "# Plan\nShip **Friday**.".encode())])
    alone = chat.send_message(db, general, ann, "", files=[Upload("big.txt", ("word " * 20_000).encode())])
    chat.send_message(db, general, ann, "", files=[Upload("pic.png", png())])  # nothing the AI can read
    assert db.one("SELECT count(*) FROM ai_jobs WHERE trigger_id = ?", [alone]) == (1,)  # a text file asks
    context = chat.load_context(db, general)
    users = [m["content"] for m in context if m["role"] == "user"]
    assert len(users) == 2
    assert users[0].startswith("Ann: our notes\n\n[File \"notes.md\" attached") and "Ship **Friday**." in users[0]
    assert users[1].startswith("Ann: [File \"big.txt\" attached") and "characters) did not fit" in users[1]
    assert estimate_tokens(users[1]) <= attachments.NOTE_TOKENS + 100


def test_a_text_file_reaches_the_model_in_the_request(db, fake_openai, responders):
    """The local OpenAI test server sees the file's text in the request of the reply it triggered (both backends)."""
    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general")
    chat.send_message(db, general, ann, "what does it say?", files=[Upload("todo.txt", b"buy milk")])
    responders()
    sent = fake_openai.wait_requests(1, timeout=20)[0]["messages"]
    asked = [m["content"] for m in sent if m["role"] == "user"]
    assert asked == ['Ann: what does it say?\n\n[File "todo.txt" attached to this message, its text between the '
                     'lines]\n---\nbuy milk\n---']


def test_deleting_a_message_deletes_its_files_and_bytes_no_other_message_holds(db):
    from core import edits

    ann, general = chat.create_user(db, "Ann"), chat.create_channel(db, "general", reply_policy="off")
    photo = png()
    first = chat.send_message(db, general, ann, "one", files=[Upload("a.png", photo), Upload("notes.txt", b"secret")])
    second = chat.send_message(db, general, ann, "two", files=[Upload("same.png", photo)])
    edits.delete_message(db, first, ann)
    assert attachments.of_messages(db, [first]) == {}
    assert db.one("SELECT count(*) FROM attachment_blobs")[0] == 1  # the photo stays: the second message has it
    assert attachments.content(db, attachments.of_messages(db, [second])[second][0]) == photo
    assert not any("secret" in str(m["content"]) for m in chat.load_context(db, general))


def test_a_private_channels_file_is_served_to_its_members_only(duck_db):
    from core import accounts, membership

    ann = accounts.user_for(duck_db, accounts.Identity("https://issuer", "ann", "ann@example.com", True, "Ann")).id
    accounts.user_for(duck_db, accounts.Identity("https://issuer", "bob", "bob@example.com", True, "Bob"))
    hiring = membership.create_private_channel(duck_db, ann, "hiring")
    message = chat.send_message(duck_db, hiring, ann, "cv", files=[Upload("cv.png", png())])
    [cv] = attachments.of_messages(duck_db, [message])[message]
    expires = tickets.expiry(time.time())
    with client_for(duck_db, load_settings({"auth": AUTH})) as client:
        for_ann = tickets.sign(SECRET, "https://issuer ann", [hiring], expires)
        assert client.get(f"/files/{cv.id}?ticket={for_ann}").status_code == 200
        for_bob = tickets.sign(SECRET, "https://issuer bob", [hiring], expires)  # a ticket, but not a member
        refused = client.get(f"/files/{cv.id}?ticket={for_bob}")
        assert refused.status_code == 403 and "not a member" in refused.text
