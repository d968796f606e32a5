#!/usr/bin/env python3
"""Writes a deterministic JSON Lines corpus for Scripts/bench-peers.sh: COUNT ~2 KB CloudEvents whose data is a ninjs
article copied from a seed (seeds/articles.jsonl) with its own uri, version, time, byline, headline and body.

Bodies are words drawn from a 20,000-word vocabulary with a Zipf distribution (the seeds' own words take the top
ranks, made-up words the long tail), plus names, places, numbers and dates, so the events compress like real ~2 KB
articles: about 3.4-3.6:1 with zlib level 1 in 64-event batches (a pool of repeated sentences would compress 7:1).
The same arguments always give the same file.

usage: make_corpus.py SEEDS COUNT OUT
"""
import json
import random
import re
import sys
import zlib

VOCABULARY = 20_000
ZIPF_EXPONENT = 1.15
TARGET_BYTES = 2048
SYLLABLES = ["ka", "lo", "ri", "men", "tas", "vel", "dor", "an", "is", "tru", "po", "nel", "sar", "gi", "fen", "ul",
             "bra", "mos", "te", "quin", "har", "zo", "lem", "pi", "cor", "dan", "ex", "vi", "sto", "ny"]
GIVEN = ["Anna", "Ben", "Chen", "Daria", "Emeka", "Fatima", "Giulia", "Hiroshi", "Ingrid", "Jakub", "Kofi", "Lena",
         "Mateo", "Nadia", "Olga", "Pedro", "Quentin", "Rania", "Sven", "Tomasz", "Ugo", "Vera", "Wei", "Yusuf"]
FAMILY = ["Rossi", "Okafor", "Schmidt", "Nakamura", "Silva", "Kowalski", "Haddad", "Larsen", "Novak", "Moreau",
          "Petrov", "Garcia", "Li", "Mensah", "Jensen", "Costa", "Weber", "Tanaka", "Ibrahim", "Dubois"]
PLACES = ["Rome", "Lagos", "Berlin", "Harbin", "Lisbon", "Warsaw", "Beirut", "Oslo", "Prague", "Lyon", "Kyiv",
          "Madrid", "Shanghai", "Accra", "Aarhus", "Porto", "Vienna", "Osaka", "Cairo", "Geneva"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DESKS = [("world", "news.world"), ("europe", "news.europe"), ("china", "news.china.harbin"),
         ("business", "business.markets"), ("sport", "sport.football"), ("culture", "culture")]
BASE_TIME = 1_709_712_000  # 2024-03-06T08:00:00Z


def iso(seconds):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    seeds, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    articles, counts = [], {}
    with open(seeds, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            try:
                event = json.loads(line)
            except ValueError as error:
                sys.exit(f"make_corpus: {seeds} line {number}: not JSON ({error})")
            data = event.get("data")
            if event.get("type") == "article.deleted" or not isinstance(data, dict) or not data.get("bodies"):
                continue
            articles.append(data)
            for body in data["bodies"]:
                for word in re.findall(r"[A-Za-z'-]+", re.sub(r"<[^>]+>", " ", body.get("value", ""))):
                    counts[word] = counts.get(word, 0) + 1
    if not articles:
        sys.exit(f"make_corpus: {seeds} has no articles with bodies to build a corpus from")

    random_ = random.Random(13)
    vocabulary = sorted(counts, key=lambda word: -counts[word])
    seen = set(vocabulary)
    while len(vocabulary) < VOCABULARY:
        word = "".join(random_.choice(SYLLABLES) for _ in range(random_.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            vocabulary.append(word)
    cumulative, total = [], 0.0
    for rank in range(1, len(vocabulary) + 1):
        total += 1 / rank ** ZIPF_EXPONENT
        cumulative.append(total)

    def name():
        return f"{random_.choice(GIVEN)} {random_.choice(FAMILY)}"

    def sentence():
        words = random_.choices(vocabulary, cum_weights=cumulative, k=random_.randint(6, 25))
        for index in range(len(words)):
            kind = random_.randrange(40)
            if kind < 2:
                words[index] = name()
            elif kind == 2:
                words[index] = random_.choice(PLACES)
            elif kind == 3:
                words[index] = str(random_.randrange(1_000_000))
            elif kind == 4:
                words[index] = f"{random_.choice(MONTHS)} {random_.randint(1, 28)}"
        text = " ".join(words)
        ending = f", {name()} said." if random_.randrange(8) == 0 else "."
        return text[:1].upper() + text[1:] + ending

    written = 0
    sample = []
    with open(out, "w", encoding="utf-8") as file:
        for index in range(count):
            desk, topic = DESKS[random_.randrange(len(DESKS))]
            uri = f"urn:telex:bench:article-{index}"
            time_ = iso(BASE_TIME + index)
            article = dict(articles[index % len(articles)])
            article.update(uri=uri, version=str(random_.randint(1, 5)), versionCreated=time_, by=name(),
                           headlines=[{"role": "main", "value": sentence()[:90]}])
            article["bodies"] = [{"role": "main", "contentType": "text/plain", "value": ""}]
            event = {"specversion": "1.0", "id": f"bench-{index}", "source": f"urn:telex:newsroom:{desk}",
                     "type": "article.updated" if index % 4 == 3 else "article.created", "subject": uri,
                     "time": time_, "datacontenttype": "application/json", "topic": topic, "data": article}
            room = TARGET_BYTES - len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())
            body = ""
            while len(body) < room - 150:  # the last sentence and escaped newlines overshoot about that much
                body += sentence() + ("\n\n" if random_.randrange(5) == 0 else " ")
            article["bodies"][0]["value"] = body.rstrip()
            line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
            file.write(line + "\n")
            written += len(line.encode()) + 1
            if len(sample) < 640:
                sample.append(line.encode())
    batches = [b"".join(sample[start:start + 64]) for start in range(0, len(sample), 64)]
    ratio = sum(map(len, batches)) / sum(len(zlib.compress(batch, 1)) for batch in batches)
    print(f"make_corpus: {count} events, {written / count:.0f} B each on average, "
          f"{ratio:.2f}:1 with zlib level 1 in 64-event batches (first {len(sample)} events)", file=sys.stderr)


if __name__ == "__main__":
    main()
