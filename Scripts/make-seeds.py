#!/usr/bin/env python3
"""Build seeds/articles.jsonl: sample newsroom events for Telex.

Each output line is one compact CloudEvents 1.0 envelope (JSON) whose `data`
is an IPTC ninjs 3.x news item. The `topic` extension attribute names the Telex
topic to publish to; the record key is `data.uri`.

Inputs (read-only, under --shared, default /work/shared/data):
  ninjs/*.json                   IPTC ninjs example documents (see ninjs/SOURCE.txt)
  ninjs/ninjs-schema_3.1.json    the ninjs 3.1 JSON Schema (used for validation only)
  seed/000_b8942ae6168f9700.txt  the Harbin Today article used as the project's seed

The output is committed, so the project works without /work/shared; this
script only documents (and can reproduce) how it was made. It uses the
standard library only. If the `jsonschema` package happens to be installed,
every ninjs document is validated against ninjs-schema_3.1.json (the external
GeoJSON $ref is stubbed as {}) and any validation error makes the script fail.
The output is deterministic: same inputs, same bytes.

Usage:
  python3 Scripts/make-seeds.py                  # write seeds/articles.jsonl
  python3 Scripts/make-seeds.py --check          # fail if the file is out of date
  python3 Scripts/make-seeds.py --shared DIR --output FILE
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import re
import sys
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = Path("/work/shared/data")
DEFAULT_OUTPUT = REPO_ROOT / "seeds" / "articles.jsonl"

SCHEMA_FILE = "ninjs/ninjs-schema_3.1.json"
SEED_FILE = "seed/000_b8942ae6168f9700.txt"
GEOJSON_REF = "https://geojson.org/schema/GeoJSON.json"

# Fixed namespace so event ids (uuid5) are stable across runs.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:telex:seeds")

# Every ninjs example file (all *.json except the schema) must be listed here,
# so that a new input file cannot be dropped silently. The order breaks ties
# between events with the same time (later in this list = later in the file).
#   file name -> (topic, desk)
EXAMPLES: dict[str, tuple[str, str]] = {
    # Costa Concordia captain's trial (AP text), ninjs 3.0 example.
    "ninjsExSimpleText_3.json": ("news.europe.italy", "europe"),
    # Same story and same uri, ninjs 3.1 documentation example.
    "004_simple_text_article.json": ("news.europe.italy", "europe"),
    # Same story, richer metadata, different uri.
    "005_complex_text_article.json": ("news.europe.italy", "europe"),
    # Applebee's press release distributed by Business Wire.
    "businesswire-newsml-20130731006140.json": ("business.press-releases", "business"),
    # dpa fact check (German) on a penalty in the Dortmund-Schalke Bundesliga derby.
    "dpa_text.json": ("news.sport.football.germany", "sport"),
    # NTB (Norwegian): Google buys a large plot in Skien for possible data centres.
    "ntb_text.json": ("news.norway", "europe"),
}

def _fix_grosseto(doc: dict) -> None:
    """The 3.1 complex example spells the town 'Grossetto'; the body says GROSSETO."""
    doc["located"] = doc["located"].replace("Grossetto", "Grosseto")
    for place in doc.get("places", []):
        if place.get("name") == "Grossetto":
            place["name"] = "Grosseto"
    doc["edNote"] = "Corrects the spelling of Grosseto in located and places."


# Editorial updates published for example documents: file -> (versionCreated, amend).
# "version" is bumped (or added as "2"). Only corrections that follow from the
# document itself, no invented news.
EXAMPLE_UPDATES = {
    "005_complex_text_article.json": ("2013-07-09T11:52:00Z", _fix_grosseto),
}

# Deletions (article.deleted, the key's tombstone): uri -> (time, topic, desk, edNote).
# A deletion's data is a minimal ninjs document: the uri it deletes, pubStatus
# "canceled", its versionCreated and an editor's note saying why.
DELETIONS: dict[str, tuple[str, str, str, str]] = {
    # The two "simple text" examples share this uri; 005 carries the same story in full.
    "http://ninjs.example.com/newsitems/20130709simp123": (
        "2013-07-09T12:00:00Z", "news.europe.italy", "europe",
        "Withdrawn: the story is carried in full by http://ninjs.example.com/newsitems/20130709med123.",
    ),
    "http://www.businesswire.com/news/home/20130731006140/en": (
        "2013-08-01T09:00:00Z", "business.press-releases", "business",
        "Sample deletion: press release removed from the business feed.",
    ),
}

# The Harbin seed article.
HARBIN_URI = "urn:telex:article:harbin-npc-new-quality-productive-forces"
HARBIN_TOPIC = "news.china.harbin"
HARBIN_DESK = "china"
# The page gives a date only ("Updated : 2024-03-06"); these times of day are ours.
HARBIN_V1_TIME = "08:00:00"
HARBIN_V2_TIME = "11:30:00"

TOPIC_RE = re.compile(r"^[a-z0-9_-]{1,64}(\.[a-z0-9_-]{1,64})*$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class SeedError(Exception):
    pass


# --------------------------------------------------------------------------- helpers

def utc(timestamp: str) -> str:
    """RFC 3339 timestamp (any offset) -> RFC 3339 UTC with 'Z', second precision."""
    parsed = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise SeedError(f"timestamp without offset: {timestamp!r}")
    parsed = parsed.astimezone(dt.timezone.utc)
    if parsed.microsecond:
        raise SeedError(f"sub-second timestamp not expected: {timestamp!r}")
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def clean(text: str) -> str:
    """Normalise scraped text: no-break spaces to spaces, collapse runs, strip."""
    text = text.replace("\u00a0", " ")
    return re.sub(r"[ \t]+", " ", text).strip()


def load_json(path: Path):
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------- Harbin

def parse_seed_article(path: Path) -> dict:
    """Parse the scraped Harbin Today page into headline, date, byline, paragraphs.

    Layout: breadcrumb ("Home>Harbin Today"), headline, "Updated : YYYY-MM-DD",
    "By ( ... )", the article paragraphs (one per line), a blank line, then an
    unrelated "related story" teaser, which is not part of the article.
    """
    lines = [clean(line) for line in path.read_text(encoding="utf-8").splitlines()]
    nonblank = [(i, line) for i, line in enumerate(lines) if line]
    if len(nonblank) < 5 or not nonblank[0][1].startswith("Home>"):
        raise SeedError(f"{path}: unexpected layout (no breadcrumb)")
    headline = nonblank[1][1]
    date_match = re.fullmatch(r"Updated ?: ?(\d{4}-\d{2}-\d{2})", nonblank[2][1])
    by_match = re.fullmatch(r"By ?\( ?(.+?) ?\)", nonblank[3][1])
    if not date_match or not by_match:
        raise SeedError(f"{path}: unexpected layout (date or byline)")
    paragraphs = []
    for line in lines[nonblank[4][0]:]:
        if not line:
            break  # the article ends at the first blank line; a teaser follows
        paragraphs.append(line)
    if len(paragraphs) < 3:
        raise SeedError(f"{path}: article body too short ({len(paragraphs)} paragraphs)")
    return {
        "section": nonblank[0][1].split(">", 1)[1].strip(),
        "headline": headline,
        "date": date_match.group(1),
        "by": by_match.group(1),
        "paragraphs": paragraphs,
    }


def harbin_documents(seed: dict) -> tuple[dict, dict]:
    v1_time = f"{seed['date']}T{HARBIN_V1_TIME}Z"
    v2_time = f"{seed['date']}T{HARBIN_V2_TIME}Z"
    v1 = {
        "uri": HARBIN_URI,
        "type": "text",
        "version": "1",
        "firstCreated": v1_time,
        "versionCreated": v1_time,
        "pubStatus": "usable",
        "language": "en",
        "standard": {
            "name": "ninjs",
            "version": "3.1",
            "schema": "http://www.iptc.org/std/ninjs/ninjs-schema_3.1.json#",
        },
        "headlines": [{"role": "main", "value": seed["headline"]}],
        "bodies": [
            {
                "role": "main",
                "contentType": "text/plain",
                "value": "\n\n".join(seed["paragraphs"]),
            }
        ],
        "by": seed["by"],
        "infoSources": [
            {"name": f"{seed['section']} ({seed['by']})", "role": "source", "literal": seed["by"]}
        ],
        "people": [{"name": "Li Yin", "rel": "about"}],
        "organisations": [
            {"name": "National People's Congress", "rel": "about"},
            {"name": "Harbin Jiuzhou Group", "rel": "mentions"},
        ],
        "places": [
            {"name": "Harbin", "rel": "about"},
            {"name": "Heilongjiang", "rel": "mentions"},
            {"name": "Beijing", "rel": "mentions"},
        ],
        "subjects": [{"name": "New quality productive forces", "rel": "about"}],
    }
    # Version 2: a slight editorial amendment, taken from the article itself
    # (the session is held at the Great Hall of the People in Beijing).
    v2 = copy.deepcopy(v1)
    v2["version"] = "2"
    v2["versionCreated"] = v2_time
    v2["headlines"][0]["value"] = seed["headline"] + " in Beijing"
    v2["edNote"] = "Updated with the location of the NPC session (Beijing) in the headline."
    return v1, v2


# --------------------------------------------------------------------------- events

def envelope(event_type: str, desk: str, topic: str, time: str, doc: dict, origin: str) -> dict:
    uri = doc.get("uri")
    if not isinstance(uri, str) or not uri:
        raise SeedError(f"{origin}: data.uri missing or empty")
    version = doc.get("version", "")
    event_id = uuid.uuid5(ID_NAMESPACE, f"{event_type}\n{uri}\n{version}\n{origin}")
    return {
        "specversion": "1.0",
        "id": str(event_id),
        "source": f"urn:telex:newsroom:{desk}",
        "type": event_type,
        "subject": uri,
        "time": time,
        "datacontenttype": "application/json",
        "topic": topic,
        "data": doc,
    }


def build_events(shared: Path) -> list[dict]:
    ninjs_dir = shared / "ninjs"
    schema_name = Path(SCHEMA_FILE).name
    found = sorted(p.name for p in ninjs_dir.glob("*.json") if p.name != schema_name)
    if sorted(EXAMPLES) != found:
        raise SeedError(
            f"ninjs examples in {ninjs_dir} {found} do not match the EXAMPLES table {sorted(EXAMPLES)}"
        )

    ordered: list[tuple[str, int, dict]] = []  # (time, tie-break, event)

    def add(event: dict) -> None:
        ordered.append((event["time"], len(ordered), event))

    seed = parse_seed_article(shared / SEED_FILE)
    v1, v2 = harbin_documents(seed)
    add(envelope("article.created", HARBIN_DESK, HARBIN_TOPIC, v1["versionCreated"], v1, SEED_FILE))
    add(envelope("article.updated", HARBIN_DESK, HARBIN_TOPIC, v2["versionCreated"], v2, SEED_FILE))

    for name, (topic, desk) in EXAMPLES.items():
        doc = load_json(ninjs_dir / name)
        origin = f"ninjs/{name}"
        if "versionCreated" not in doc:
            raise SeedError(f"{origin}: no versionCreated to time the event")
        add(envelope("article.created", desk, topic, utc(doc["versionCreated"]), doc, origin))
        if name in EXAMPLE_UPDATES:
            new_time, amend = EXAMPLE_UPDATES[name]
            updated = copy.deepcopy(doc)
            updated["version"] = str(int(doc.get("version", "1")) + 1)
            updated["versionCreated"] = new_time
            amend(updated)
            if utc(new_time) <= utc(doc["versionCreated"]):
                raise SeedError(f"{origin}: update must be later than the original")
            add(envelope("article.updated", desk, topic, utc(new_time), updated, origin + "#update"))

    uris = {event["subject"] for _, _, event in ordered}
    for uri, (time, topic, desk, note) in DELETIONS.items():
        if uri not in uris:
            raise SeedError(f"deletion of {uri}: no article with that uri")
        doc = {"uri": uri, "pubStatus": "canceled", "versionCreated": time, "edNote": note}
        add(envelope("article.deleted", desk, topic, time, doc, f"deletion {uri}"))

    ordered.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in ordered]


def check_events(events: list[dict]) -> None:
    ids = set()
    previous = ""
    for event in events:
        if event["id"] in ids:
            raise SeedError(f"duplicate event id {event['id']}")
        ids.add(event["id"])
        if not TOPIC_RE.match(event["topic"]) or len(event["topic"]) > 249:
            raise SeedError(f"invalid topic {event['topic']!r}")
        if not TIME_RE.match(event["time"]) or event["time"] < previous:
            raise SeedError(f"bad or out-of-order time {event['time']!r}")
        previous = event["time"]
        if event["subject"] != event["data"].get("uri") or not event["subject"]:
            raise SeedError(f"subject/uri mismatch in {event['id']}")


# --------------------------------------------------------------------------- schema

def make_validator(schema: dict):
    """A Draft 2020-12 validator for ninjs 3.1, or None if jsonschema is unavailable."""
    try:
        import jsonschema
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        return None
    stub = Resource.from_contents({}, default_specification=DRAFT202012)
    registry = Registry().with_resource(GEOJSON_REF, stub)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def validate(events: list[dict], schema_path: Path) -> bool:
    validator = make_validator(load_json(schema_path))
    if validator is None:
        return False
    failures = []
    for event in events:
        for error in validator.iter_errors(event["data"]):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            failures.append(f"{event['subject']} v{event['data'].get('version', '-')}: {where}: {error.message}")
    if failures:
        raise SeedError("ninjs schema validation failed:\n  " + "\n  ".join(failures))
    return True


# --------------------------------------------------------------------------- main

def render(events: list[dict]) -> bytes:
    lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in events]
    return ("\n".join(lines) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help=f"directory holding ninjs/ and seed/ (default {DEFAULT_SHARED})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="where to write the JSON Lines file (default seeds/articles.jsonl)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the output file differs from what would be written")
    parser.add_argument("--require-validation", action="store_true",
                        help="fail if jsonschema is not installed instead of skipping validation")
    args = parser.parse_args(argv)

    try:
        events = build_events(args.shared)
        check_events(events)
        validated = validate(events, args.shared / SCHEMA_FILE)
    except (SeedError, OSError, ValueError) as error:
        print(f"make-seeds: error: {error}", file=sys.stderr)
        return 1
    if not validated:
        message = "jsonschema is not installed; ninjs schema validation skipped"
        if args.require_validation:
            print(f"make-seeds: error: {message}", file=sys.stderr)
            return 1
        print(f"make-seeds: warning: {message}", file=sys.stderr)

    output = render(events)
    topics = sorted({e["topic"] for e in events})
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != output:
            print(f"make-seeds: {args.output} is out of date; run python3 Scripts/make-seeds.py",
                  file=sys.stderr)
            return 1
        print(f"make-seeds: {args.output} is up to date ({len(events)} events)")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(output)
    print(f"make-seeds: wrote {len(events)} events to {args.output}")
    print(f"make-seeds: topics: {', '.join(topics)}")
    print(f"make-seeds: ninjs 3.1 schema validation: {'passed' if validated else 'skipped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
