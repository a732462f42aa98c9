#!/usr/bin/env python3
"""Opens a page in headless Chromium and reports what it shows, over time.

The browser is driven through its DevTools protocol over a pipe (Chromium's
--remote-debugging-pipe: commands on its fd 3, answers on its fd 4, one JSON
message each, ended by a NUL), so nothing but the standard library is
needed. Every --every seconds the JavaScript expression --sample is
evaluated in the page and printed as one JSON line, {"t": seconds since
the page was opened, "value": what it evaluated to}, until --until evaluates
to true or --limit seconds pass (exit 3). --screenshot writes a PNG of the
page as it ended, either way.

  scripts/browser.py --url http://127.0.0.1:5665/ --sample 'document.title' \
      --until 'document.readyState === "complete"' --screenshot page.png
"""

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, binary):
        commands_read, self.commands = os.pipe()
        self.answers, answers_write = os.pipe()
        # The browser's ends moved to 10 and up first: in the child, dup2
        # onto 3 and 4 must not clobber one with the other.
        high_read = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
        high_write = fcntl.fcntl(answers_write, fcntl.F_DUPFD, 10)
        os.close(commands_read)
        os.close(answers_write)

        def onto_3_and_4():
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self.profile = tempfile.mkdtemp(prefix="browser-")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             "--window-size=1100,1500", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=onto_3_and_4, pass_fds=(3, 4),
        )
        os.close(high_read)
        os.close(high_write)
        self.next_id = 0
        self.unread = b""
        self.session = None

    def call(self, method, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def _read(self):
        while b"\0" not in self.unread:
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self.unread += chunk
        message, self.unread = self.unread.split(b"\0", 1)
        return json.loads(message)

    def open(self, url):
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            return {"error": result["exceptionDetails"].get("text", "an exception")}
        return result["result"].get("value")

    def screenshot(self, path):
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as file:
            file.write(base64.b64decode(shot["data"]))

    def close(self):
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sample", required=True, help="a JavaScript expression")
    parser.add_argument("--until", default="false", help="a JavaScript expression: stop once true")
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--limit", type=float, default=60.0)
    parser.add_argument("--screenshot")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    browser = Browser(args.chromium)
    try:
        browser.open(args.url)
        opened = time.monotonic()
        while True:
            elapsed = time.monotonic() - opened
            value = browser.evaluate(args.sample)
            print(json.dumps({"t": round(elapsed, 3), "value": value}), flush=True)
            done = browser.evaluate(args.until) is True
            if done or elapsed > args.limit:
                # The page as it ended, either way: a test that fails shows it.
                if args.screenshot:
                    browser.screenshot(args.screenshot)
                if done:
                    return 0
                print(f"not within {args.limit} s: {args.until}", file=sys.stderr)
                return 3
            time.sleep(args.every)
    finally:
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
