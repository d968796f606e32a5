#!/usr/bin/python3
"""Drives the Telex Console in headless Chromium (Debian's chromium + chromium-driver + python3-selenium).

Run by Scripts/console-browser.sh against a telexd it started with the seeds published; checks each page and saves a
screenshot of it. Every failure names the page and what was missing. Selectors: /work/notes/design15.md's contract,
listed at the top of Sources/TelexConsole/Assets/console.js.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

XSS_HEADLINE = '<img src=x onerror="window.__pwned=1">'
XSS_BODY = '<script>window.__pwned=2</script><img src=x onerror="window.__pwned=3"> Body after the markup.'
XSS_URI = "urn:telex:console-test:xss"
HARBIN_URI = "urn:telex:article:harbin-npc-new-quality-productive-forces"
WAIT = 20


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class Console:
    def __init__(self, args):
        self.args = args
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--hide-scrollbars"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.driver.set_page_load_timeout(WAIT)

    def close(self):
        self.driver.quit()

    # Helpers

    def go(self, route):
        self.driver.get(self.args.console + "/#" + route)

    def wait_ready(self, page, what):
        try:
            WebDriverWait(self.driver, WAIT).until(
                lambda d: d.execute_script("return document.body.dataset.ready") == page)
        except TimeoutException:
            raise Failure(f"{what}: the {page} page did not finish loading within {WAIT} s "
                          f"(ready={self.driver.execute_script('return document.body.dataset.ready')!r}, "
                          f"error banner: {self.error_text()!r})")

    def wait_for(self, css, what, root=None):
        try:
            return WebDriverWait(self.driver, WAIT).until(
                lambda d: (root or d).find_elements(By.CSS_SELECTOR, css) or False)
        except TimeoutException:
            raise Failure(f"{what}: no element matches {css!r} within {WAIT} s (error banner: {self.error_text()!r})")

    def text(self, css):
        elements = self.driver.find_elements(By.CSS_SELECTOR, css)
        return elements[0].text if elements else None

    def error_text(self):
        elements = self.driver.find_elements(By.CSS_SELECTOR, "#error")
        return elements[0].text if elements else ""

    def shot(self, name):
        path = os.path.join(self.args.shots, name + ".png")
        self.driver.save_screenshot(path)
        print(f"  screenshot {path}")

    def pwned(self):
        return self.driver.execute_script("return typeof window.__pwned")

    def browser_errors(self):
        """Console messages that mean the page is broken: script errors and CSP violations (not the 401 of the
        session check before login, nor the 403/400 answers the test provokes on purpose)."""
        bad = []
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            if entry.get("level") != "SEVERE":
                continue
            if "Failed to load resource" in message and any(f"status of {code}" in message
                                                            for code in (401, 403, 400, 404)):
                continue
            bad.append(message)
        return bad

    def login(self, token_file, name):
        self.driver.delete_all_cookies()
        self.go("/")
        self.wait_ready("login", f"login as {name}")
        if name == "editor":
            self.shot("login")
        token = open(token_file).read().strip()
        box = self.driver.find_element(By.CSS_SELECTOR, "input#login-token")
        check(box.get_attribute("type") == "password", "login: the token field is not a password field")
        box.send_keys("not-a-principal.wrong")
        self.driver.find_element(By.CSS_SELECTOR, "button#login-submit").click()
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: self.text("#login-error"))
        except TimeoutException:
            raise Failure("login: a wrong token showed no error in #login-error")
        box.clear()
        box.send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "button#login-submit").click()
        self.wait_ready("overview", f"login as {name}")
        check(name in (self.text("#whoami") or ""), f"login: #whoami does not name {name}: {self.text('#whoami')!r}")

    def publish(self, events):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as out:
            for event in events:
                out.write(json.dumps(event) + "\n")
        env = dict(os.environ, TELEX_TOKEN=open(self.args.editor_token_file).read().strip())
        subprocess.run([self.args.pub, "--quiet", out.name], check=True, env=env)
        os.unlink(out.name)

    # Pages

    def overview(self):
        print("overview")
        rows = self.wait_for("table#topics tr.topic", "overview")
        topics = {row.get_attribute("data-topic") for row in rows}
        for topic in ("news.europe.italy", "business.press-releases", "news.china.harbin", "news.norway"):
            check(topic in topics, f"overview: topic {topic} is not in the topics table (shown: {sorted(topics)})")
        for field in ("#broker-version", "#broker-uptime", "#broker-fsync", "#broker-disk"):
            check(self.text(field), f"overview: {field} is empty")
        italy = self.driver.find_element(By.CSS_SELECTOR, 'tr.topic[data-topic="news.europe.italy"]')
        check(italy.find_element(By.CSS_SELECTOR, ".topic-end").text.replace(",", "").strip() == "5",
              "overview: news.europe.italy's end offset is not 5")
        check(italy.find_elements(By.CSS_SELECTOR, ".topic-spark svg.sparkline"),
              "overview: news.europe.italy has no sparkline")
        # The filter narrows the table without a reload.
        box = self.driver.find_element(By.CSS_SELECTOR, "input#topic-filter")
        box.send_keys("news.china.*")
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: {
                row.get_attribute("data-topic") for row in d.find_elements(By.CSS_SELECTOR, "table#topics tr.topic")
            } == {"news.china.harbin"})
        except TimeoutException:
            raise Failure("overview: the filter news.china.* did not narrow the table to news.china.harbin")
        box.clear()
        box.send_keys(" ")
        box.clear()
        self.wait_for('tr.topic[data-topic="news.norway"]', "overview: clearing the filter")
        self.shot("overview")

    def topic(self):
        print("topic + live tail")
        self.go("/topics/news.china.harbin")
        self.wait_ready("topic", "topic news.china.harbin")
        rows = self.wait_for("table#events tr.event", "topic news.china.harbin")
        check(len(rows) == 2, f"topic: expected the 2 events of news.china.harbin, saw {len(rows)}")
        headlines = [row.find_element(By.CSS_SELECTOR, ".event-headline").text for row in rows]
        check(any("Harbin NPC deputies in Beijing" in h for h in headlines), f"topic: headlines shown {headlines}")
        uris = [row.find_element(By.CSS_SELECTOR, ".event-uri").text for row in rows]
        check(all(HARBIN_URI in u for u in uris), f"topic: uris shown {uris}")
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: self.text("#tail-status") == "live")
        except TimeoutException:
            raise Failure(f"topic: the live tail did not open (#tail-status {self.text('#tail-status')!r})")
        headline = f"Harbin deputies vote, live at {time.time():.0f}"
        self.publish([{
            "specversion": "1.0", "id": f"console-live-{time.time()}", "source": "urn:telex:console-test",
            "type": "article.updated", "topic": "news.china.harbin",
            "data": {"uri": HARBIN_URI, "type": "text", "versionCreated": "2026-11-30T09:00:00Z",
                     "byline": "Live desk", "headlines": [{"role": "main", "value": headline}],
                     "bodies": [{"role": "main", "contentType": "text/plain", "value": "The vote was held."}]},
        }])
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: any(
                headline in row.text for row in d.find_elements(By.CSS_SELECTOR, "table#events tr.event.live")))
        except TimeoutException:
            raise Failure("topic: the event published after the page loaded did not appear in the live tail")
        self.shot("topic")
        # Search by uri on the topic page.
        box = self.driver.find_element(By.CSS_SELECTOR, "input#uri-input")
        box.send_keys(HARBIN_URI)
        box.send_keys(Keys.ENTER)
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: len([
                row for row in d.find_elements(By.CSS_SELECTOR, "table#events tr.event")
                if HARBIN_URI in row.text]) >= 3)
        except TimeoutException:
            raise Failure("topic: the uri search did not list the article's 3 events")

    def article(self):
        print("article + diff")
        self.go("/articles/" + urllib.parse.quote(HARBIN_URI, safe=""))
        self.wait_ready("article", "article page")
        versions = self.wait_for("ol#versions li.version", "article page")
        check(len(versions) >= 3, f"article: expected at least 3 versions of the Harbin article, saw {len(versions)}")
        check("Harbin" in (self.text("#article-view .article-headline") or ""),
              f"article: headline shown {self.text('#article-view .article-headline')!r}")
        check(self.text("#article-view .article-body"), "article: the body text is empty")
        # Diff the first two versions: the headline changed.
        first, second = (v.get_attribute("data-topic") + ":" + v.get_attribute("data-offset") for v in versions[:2])
        Select(self.driver.find_element(By.CSS_SELECTOR, "select#diff-from")).select_by_value(first)
        Select(self.driver.find_element(By.CSS_SELECTOR, "select#diff-to")).select_by_value(second)
        changed = self.wait_for("table#diff tr.diff-row.changed", "article diff")
        fields = [row.get_attribute("data-field") for row in changed]
        check(any("headline" in (f or "") for f in fields), f"article: the diff shows no changed headline ({fields})")
        check(self.driver.find_elements(By.CSS_SELECTOR, "table#diff tr.diff-row.changed .diff-right ins"),
              "article: the changed headline has no inserted words marked")
        self.shot("article")

    def xss(self):
        print("XSS: an article whose headline and body are markup")
        self.publish([{
            "specversion": "1.0", "id": "console-xss-1", "source": "urn:telex:console-test", "type": "article.created",
            "topic": "news.europe.italy",
            "data": {"uri": XSS_URI, "type": "text", "byline": XSS_HEADLINE,
                     "headlines": [{"role": "main", "value": XSS_HEADLINE}],
                     "bodies": [{"role": "main", "contentType": "text/html", "value": XSS_BODY}]},
        }])
        self.go("/topics/news.europe.italy")
        self.wait_ready("topic", "topic news.europe.italy")
        rows = self.wait_for('table#events tr.event', "XSS topic page")
        cells = [row.find_element(By.CSS_SELECTOR, ".event-headline").text for row in rows]
        check(XSS_HEADLINE in cells, f"XSS: the headline is not shown as text on the topic page ({cells})")
        check(self.pwned() == "undefined", "XSS: window.__pwned was set on the topic page")
        self.go("/articles/" + urllib.parse.quote(XSS_URI, safe=""))
        self.wait_ready("article", "XSS article page")
        check(self.text("#article-view .article-headline") == XSS_HEADLINE,
              f"XSS: article headline shown as {self.text('#article-view .article-headline')!r}")
        check("<script>" in (self.text("#article-view .article-body") or ""),
              "XSS: the HTML body is not shown as text")
        time.sleep(0.5)  # an injected onerror would fire as soon as the broken image failed to load
        check(self.pwned() == "undefined", "XSS: window.__pwned was set on the article page")
        check(not self.driver.find_elements(By.CSS_SELECTOR, "#app img, #app script"),
              "XSS: an img or script element from the article is in the page")
        self.shot("article-xss")

    def consumers(self, admin):
        print("consumers" + (" + reset" if admin else " (reader)"))
        self.go("/consumers")
        self.wait_ready("consumers", "consumers page")
        row = self.wait_for('tr.consumer[data-consumer="indexer"]', "consumers page")[0]
        lag = int(row.find_element(By.CSS_SELECTOR, ".consumer-lag").text.replace(",", "").strip())
        topic_row = self.driver.find_element(
            By.CSS_SELECTOR, 'tr.consumer-topic[data-consumer="indexer"][data-topic="news.europe.italy"]')
        committed = int(topic_row.find_element(By.CSS_SELECTOR, ".committed").text.replace(",", ""))
        if admin:
            # telex-sub read 3 events and stopped; the seeds and the XSS article put 6 in the topic.
            check(lag == 3, f"consumers: indexer's lag is {lag}, expected 3")
            check(committed == 3, f"consumers: indexer committed {committed} in news.europe.italy, expected 3")
        else:
            # After the editor's reset to the end.
            check(lag == 0 and committed == 6,
                  f"consumers (reader): indexer's lag {lag} and committed {committed}, expected 0 and 6 after the reset")
        check(self.driver.find_elements(By.CSS_SELECTOR, 'svg.lag-chart[data-consumer="indexer"]'),
              "consumers: no lag chart for indexer")
        resets = self.driver.find_elements(By.CSS_SELECTOR, 'button.reset[data-consumer="indexer"]')
        if not admin:
            check(not resets, "consumers: the reader principal is offered a reset")
            return
        self.shot("consumers")
        check(resets, "consumers: the admin principal has no reset button")
        resets[0].click()
        self.wait_for("#confirm-text", "reset confirmation")
        Select(self.driver.find_element(By.CSS_SELECTOR, "select#reset-to")).select_by_value("end")
        text = self.text("#confirm-text") or ""
        check("indexer" in text, f"reset: the confirmation does not name the consumer ({text!r})")
        self.shot("consumers-reset-confirm")
        self.driver.find_element(By.CSS_SELECTOR, "button#confirm-yes").click()
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: "news.europe.italy" in (self.text("#reset-result") or ""))
        except TimeoutException:
            raise Failure(f"reset: no result shown (#reset-result {self.text('#reset-result')!r}, "
                          f"error {self.error_text()!r})")
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: d.find_element(
                By.CSS_SELECTOR, 'tr.consumer[data-consumer="indexer"] .consumer-lag').text.strip() == "0")
        except TimeoutException:
            raise Failure("reset: indexer's lag did not drop to 0 after a reset to the end")

    def reader(self):
        print("reader principal")
        self.login(self.args.reader_token_file, "reader")
        rows = self.wait_for("table#topics tr.topic", "reader overview")
        topics = {row.get_attribute("data-topic") for row in rows}
        check(topics == {"news.europe.italy"}, f"reader: sees topics {sorted(topics)}, expected only news.europe.italy")
        self.shot("reader-overview")
        self.go("/topics/business.press-releases")
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: "NOT_AUTHORIZED" in self.error_text()
                                                   or "not" in self.error_text().lower())
        except TimeoutException:
            raise Failure("reader: opening business.press-releases showed no refusal")
        self.consumers(admin=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--console", required=True)
    parser.add_argument("--pub", required=True)
    parser.add_argument("--editor-token-file", required=True)
    parser.add_argument("--reader-token-file", required=True)
    parser.add_argument("--shots", required=True)
    args = parser.parse_args()
    console = Console(args)
    try:
        console.login(args.editor_token_file, "editor")
        console.overview()
        console.topic()
        console.article()
        console.xss()
        console.consumers(admin=True)
        errors = console.browser_errors()
        check(not errors, "browser console errors:\n  " + "\n  ".join(errors))
        console.reader()
        errors = console.browser_errors()
        check(not errors, "browser console errors (reader):\n  " + "\n  ".join(errors))
    except Failure as failure:
        try:
            console.shot("failure")
        except Exception:
            pass
        print(f"console-browser: FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        console.close()
    print("console-browser: every page checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
