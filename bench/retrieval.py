"""Retrieval recall: does "look further back" find the message that answers a question?

Run ``python bench/retrieval.py``; it prints a Markdown table. A seeded history over four channels
(general, ops, design, sales) holds 48 facts among filler chatter that shares their vocabulary; each fact
has a question phrased differently ("The staging database password rotates every Tuesday night" /
"How often does the staging DB credential get changed?"), asked after more than 10 newer messages, so the
answer is never in the recent window the AI sees anyway. For each question: recall@5 = the fact is among
the 5 older messages found, for

* keyword: ``core.search``'s keyword ranking alone (any of the question's telling words),
* semantic: the embedding index alone (``core.embeddings``, the local wordllama provider),
* combined: ``related_messages``, what retrieval uses (the two fused),
* reply path: the question sent as a message in a channel with look-back on, the Responder answering
  through the fake OpenAI server; a hit when the reply's retrieval note carries the fact.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from core import embeddings, search, tools  # noqa: E402
from core.ai import Responder  # noqa: E402
from core.chat import RECENT_LIMIT, create_channel, create_user, get_message, send_message, update_channel  # noqa: E402
from core.config import Settings  # noqa: E402
from core.store import connect  # noqa: E402

K = 5  # recall@K: retrieval adds 5 older messages (core.tools.RETRIEVED)
TAIL = 12  # filler messages after the last fact: every fact is more than 10 messages back
REPLY_WAIT = 30.0  # seconds one reply may take before the run gives up

FACTS = {
    "general": [
        ("Heads up: the office will be closed on the 14th for the building's electrical inspection.",
         "Can I come in to work on the 14th?"),
        ("The team offsite is booked at the lake lodge in Hallstatt, we arrive Thursday evening.",
         "Where are we staying for the retreat?"),
        ("Marta's farewell lunch is at the Thai place on Dover Street, 12:30 sharp.",
         "Where is Marta's goodbye meal?"),
        ("New parking rule: visitor spots are only for guests, staff should use level B2.",
         "Where should employees leave their cars now?"),
        ("The coffee machine on floor three is broken until the technician comes on Monday.",
         "Why can't I get an espresso upstairs?"),
        ("Payroll will be a day late this month because of the bank holiday; expect it on the 29th.",
         "When do we get our salaries this month?"),
        ("I uploaded the holiday calendar to the shared drive under HR/2025/holidays.pdf.",
         "Where can I find the list of public days off?"),
        ("Our new hire Priya starts Monday and will sit next to the design corner.",
         "Who is the newcomer joining us, and when?"),
        ("The guest Wi-Fi password changed to bluefalcon42 after the security review.",
         "What's the visitor wireless code these days?"),
        ("Fire drill on Wednesday at 10am, everyone gathers at the north car park.",
         "Where is the assembly point for the evacuation exercise?"),
        ("The quarterly all-hands moved from Friday to next Tuesday at 4pm.",
         "When is the company-wide meeting now?"),
        ("Lost and found: a black umbrella with a wooden handle is waiting at reception.",
         "Has anybody seen my brolly?"),
    ],
    "ops": [
        ("The staging database password rotates every Tuesday night at 23:00 UTC.",
         "How often does the staging DB credential get changed?"),
        ("Production deploys are frozen from Dec 20 until Jan 3, no exceptions without the CTO.",
         "Can we ship to prod over the holidays?"),
        ("On-call next week is Bob, then Chen takes over from Thursday.",
         "Who carries the pager next week?"),
        ("We moved the nightly backups to 02:00 so they no longer overlap with the batch import.",
         "What time do the backup jobs run?"),
        ("Disk usage on the log server hit 91%, I added a 500 GB volume and rotated the archives.",
         "Did someone fix the storage problem on the logging box?"),
        ("The TLS certificate for api.example.com expires on March 3rd; certbot renews it automatically.",
         "When does the API's SSL cert run out?"),
        ("Root cause of Monday's outage: a misconfigured load balancer health check marked every node unhealthy.",
         "Why did everything go down on Monday?"),
        ("Grafana is now behind SSO, log in with your company Google account.",
         "How do I sign in to the dashboards?"),
        ("Redis memory limit raised to 8 GB after the eviction storm last week.",
         "What's the cache's maximum RAM now?"),
        ("Kubernetes cluster upgrade to 1.29 is planned for the maintenance window on Saturday 6am.",
         "When are we upgrading k8s?"),
        ("The VPN endpoint moved to vpn2.corp.example; the old one shuts down at the end of the month.",
         "Which address should I use to connect remotely?"),
        ("CPU alert thresholds were raised to 85% because the old 70% paged us every night.",
         "Why did we stop getting processor alarms at night?"),
    ],
    "design": [
        ("Final brand color is teal #0F766E, the orange is retired.",
         "Which primary colour did we settle on for the brand?"),
        ("We're switching the UI font to Inter for body text and Fraunces for headings.",
         "What typeface will the interface use?"),
        ("User testing sessions are booked for the 9th and 10th with eight participants from the waitlist.",
         "How many people are coming to the usability study?"),
        ("The icon set will be Material Symbols, rounded style, weight 400.",
         "Which pictograms are we using?"),
        ("Dark mode ships in version 2.3, the contrast fixes landed yesterday.",
         "Which release gets the night theme?"),
        ("The Figma file for the onboarding flow is under Projects > Onboarding v4.",
         "Where are the mockups for the signup steps?"),
        ("The accessibility audit found 14 issues, mostly missing alt text and low contrast on buttons.",
         "What did the a11y review turn up?"),
        ("Logo redesign is on hold until the rebrand budget is approved in Q3.",
         "Why is the new logo delayed?"),
        ("Our spacing scale is 4px based: 4, 8, 12, 16, 24, 32, 48.",
         "What spacing increments should I use in layouts?"),
        ("Illustrations are commissioned from Studio Kumo, first drafts due on the 21st.",
         "Who is drawing our artwork?"),
        ("Mobile breakpoint is 640px, tablet is 1024px.",
         "At what width does the phone layout kick in?"),
        ("Button corners get a 6px radius everywhere, pills only for tags.",
         "How rounded should buttons be?"),
    ],
    "sales": [
        ("Acme Corp signed the annual contract, 120 seats at the enterprise tier.",
         "Did the Acme deal close, and how big is it?"),
        ("Any discount above 20% needs sign-off from Dana.",
         "Who has to approve a big price reduction?"),
        ("Our booth at the Berlin trade fair is number C-214 in hall 3.",
         "Where is our stand at the Berlin expo?"),
        ("Q3 target is 1.8 million in new bookings, we're at 1.2 so far.",
         "How far are we from the quarterly revenue goal?"),
        ("Globex asked for a security questionnaire before renewing; Eli is filling it out.",
         "Who is handling the Globex compliance form?"),
        ("Pricing page update goes live on the 1st: the starter plan becomes 19 euros a month.",
         "What will the cheapest plan cost?"),
        ("The demo environment resets every night at midnight, don't leave prospect data there.",
         "Is the data in the demo instance kept?"),
        ("Initech churned because of missing SAML support, per the exit interview.",
         "Why did Initech leave us?"),
        ("CRM migration to HubSpot finishes on the 15th; Salesforce goes read-only then.",
         "When do we stop using Salesforce?"),
        ("Commission on multi-year deals is paid upfront for the first year only.",
         "How are bonuses paid on long contracts?"),
        ("The reseller agreement with Nordic Partners covers Sweden, Norway and Finland.",
         "Which countries does our Scandinavian distributor handle?"),
        ("Trial length was extended from 14 to 30 days for enterprise leads.",
         "How long is the free evaluation for big customers?"),
    ],
}

# Filler that shares the facts' vocabulary, so a single matching word rarely finds the answer.
FILLER = {
    "general": ["Who is in the office on {day}?", "Lunch at the {place} today?", "The meeting room on floor {n} is free.",
                "Thanks for the cake at reception!", "Is the {thing} working again?", "Anyone going to the {place} later?",
                "Reminder: timesheets are due {day}.", "The printer near the design corner jams again.",
                "Parking was full this morning, came by bike.", "Happy birthday {name}!"],
    "ops": ["Restarted the {service} pods again.", "Anyone seen the flaky test in the deploy pipeline?",
            "Looking at the {service} metrics now.", "The {service} latency is back to normal.",
            "Who approved the change on {day}?", "Disk alerts on {service} cleared.", "Patched the {service} nodes.",
            "Backup of {service} finished in {n} minutes.", "The staging cluster is slow today.",
            "Opened a ticket for the {service} timeouts."],
    "design": ["New mockups for the {thing} page are up.", "Can someone review the {thing} icons?",
               "I tweaked the colors on the {thing} screen.", "Feedback on the {thing} layout welcome.",
               "The font looks blurry on {thing} in Safari.", "Exported assets for the {thing} flow.",
               "Should the {thing} button be bigger?", "Moodboard for the {thing} refresh is in Figma.",
               "Prototype for the {thing} is clickable now.", "Spacing on the {thing} cards is off."],
    "sales": ["Call with {company} went well.", "{company} wants a demo on {day}.", "Sent the proposal to {company}.",
              "{company} asked about pricing for {n} seats.", "Pipeline review moved to {day}.",
              "Lost the {company} deal to a competitor.", "Renewal for {company} is due next month.",
              "Updated the CRM notes for {company}.", "Who owns the {company} account now?",
              "Contract draft for {company} is with legal."],
}
WORDS = {
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
    "place": ["canteen", "park", "Italian place", "food trucks", "bakery"],
    "n": ["2", "3", "4", "5", "12", "40"],
    "thing": ["settings", "checkout", "profile", "search", "dashboard", "login"],
    "name": ["Ann", "Bob", "Chen", "Dana", "Eli"],
    "service": ["api", "worker", "billing", "search", "auth", "ingest"],
    "company": ["Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Soylent"],
}


def filler(channel: str, rng: random.Random) -> str:
    template = rng.choice(FILLER[channel])
    return template.format(**{key: rng.choice(values) for key, values in WORDS.items()})


def seed(db, rng: random.Random, filler_per_fact: int, facts_per_channel: int) -> dict[str, list[tuple[int, str]]]:
    """Write the history (no AI replies); return per channel the (fact message id, question) pairs."""
    people = [create_user(db, name) for name in ("Ann", "Bob", "Chen", "Dana", "Eli")]
    planted: dict[str, list[tuple[int, str]]] = {}
    for name, facts in FACTS.items():
        channel = create_channel(db, name, reply_policy="off")
        planted[name] = []
        for fact, question in facts[:facts_per_channel]:
            for _ in range(rng.randint(filler_per_fact // 2, filler_per_fact * 3 // 2)):
                send_message(db, channel, rng.choice(people), filler(name, rng))
            planted[name].append((send_message(db, channel, rng.choice(people), fact), question))
        for _ in range(TAIL):
            send_message(db, channel, rng.choice(people), filler(name, rng))
    return planted


def embed_all(db) -> tuple[embeddings.Embedder, float]:
    """Embed every message with the local provider, then run the Embedder (it loads the index, as in the app)."""
    started = time.perf_counter()
    embedder = embeddings.Embedder(db, embeddings.local_provider())
    embeddings.attach(db, embedder.provider)
    while embedder.run_once():
        pass
    embedder.run_once()  # nothing left: the provider becomes the active one
    seconds = time.perf_counter() - started
    embedder.start()  # its thread loads the vector index; new messages (the questions) get embedded too
    deadline = time.monotonic() + REPLY_WAIT
    while not embeddings.semantic_ready(db):
        if time.monotonic() > deadline:
            raise RuntimeError("semantic search did not turn on")
        time.sleep(0.05)
    return embedder, seconds


def window_start(db, channel_id: int) -> int:
    """The oldest message of the channel's recent window: retrieval looks before it."""
    rows = db.rows("SELECT id FROM messages WHERE channel_id = ? ORDER BY id DESC LIMIT ?", [channel_id, RECENT_LIMIT])
    return min(row[0] for row in rows)


def recall_of_methods(db, planted) -> dict[str, float]:
    found = {"keyword": 0, "semantic": 0, "combined": 0}
    total = 0
    for name, pairs in planted.items():
        channel = db.one("SELECT id FROM channels WHERE name = ?", [name])[0]
        before = window_start(db, channel)
        for fact_id, question in pairs:
            total += 1
            words = search.telling_words(question)
            keyword = search._keyword_ids(db, words, question, channel, K, every_term=False, before_id=before)
            semantic = embeddings.nearest(db, question, channel_id=channel, limit=K, before_id=before)
            combined = search.related_messages(db, channel, question, limit=K, before_id=before)
            found["keyword"] += fact_id in [i for i, _ in keyword]
            found["semantic"] += fact_id in [i for i, _ in semantic]
            found["combined"] += fact_id in [h.message_id for h in combined]
    return {method: hits / total for method, hits in found.items()}


def recall_of_replies(db, planted) -> tuple[float, float]:
    """Send every question with look-back on; the share whose reply's retrieval note holds the fact, and s/reply."""
    from fake_openai import FakeOpenAI, Script

    asker = db.one("SELECT id FROM users WHERE name = 'Ann'")[0]
    hits = total = 0
    started = time.perf_counter()
    with FakeOpenAI(default=Script(text="Noted.")) as fake:
        settings = Settings(openai_api_key="bench-key", openai_base_url=fake.base_url, ai_workers=1)
        responder = Responder(db, settings).start()
        try:
            for name, pairs in planted.items():
                channel = db.one("SELECT id FROM channels WHERE name = ?", [name])[0]
                update_channel(db, channel, reply_policy="every", look_back=True)
                for fact_id, question in pairs:
                    total += 1
                    message = send_message(db, channel, asker, question)
                    reply_id = db.one("SELECT reply_id FROM ai_jobs WHERE trigger_id = ?", [message])[0]
                    deadline = time.monotonic() + REPLY_WAIT
                    while (reply := get_message(db, reply_id)).status in ("pending", "streaming"):
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"reply {reply_id} did not end in {REPLY_WAIT:g} s")
                        time.sleep(0.01)
                    ids = [i for step in tools.steps_of(reply) if step.get("kind") == "retrieval" for i in step["ids"]]
                    hits += fact_id in ids
        finally:
            responder.stop()
    return hits / total, (time.perf_counter() - started) / total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filler", type=int, default=12, help="filler messages between two facts (on average)")
    parser.add_argument("--facts", type=int, default=12, help="facts (and questions) per channel, at most 12")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    for name in ("httpx2", "openai", "core"):  # one line per request would bury the table
        logging.getLogger(name).setLevel(logging.WARNING)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        db = connect(os.path.join(folder, "retrieval.duckdb"))
        try:
            planted = seed(db, rng, args.filler, args.facts)
            messages = db.one("SELECT count(*) FROM messages")[0]
            embedder, embed_seconds = embed_all(db)
            try:
                methods = recall_of_methods(db, planted)
                reply_recall, per_reply = recall_of_replies(db, planted)
            finally:
                embedder.stop()
        finally:
            embeddings.detach(db)
            db.close()
    questions = sum(len(pairs) for pairs in planted.values())
    result = {**methods, "reply path": reply_recall, "questions": questions, "messages": messages,
              "embed_seconds": embed_seconds, "seconds_per_reply": per_reply}
    print(f"| recall@{K} ({questions} questions, {messages:,} messages in {len(planted)} channels) | value |")
    print("|---|---:|")
    for method in ("keyword", "semantic", "combined", "reply path"):
        print(f"| {method} | {result[method]:.2f} |")
    print(f"\nembedding the history (wordllama, local): {embed_seconds:.2f} s; "
          f"the reply path: {per_reply * 1000:.0f} ms per reply through the fake server")
    return result


if __name__ == "__main__":
    main()
