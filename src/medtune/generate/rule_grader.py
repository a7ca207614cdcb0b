"""A rubric grader that decides by fixed rules, behind a real OpenAI-compatible HTTP server on loopback: the
tests and `medtune demo` grade through it, so every number they produce is known in advance.

Run as: with RuleGrader() as grader: ... grader.url ...   (http://127.0.0.1:<free port>/v1, model "medtune-rules")

The rules, applied to a request built by medtune.generate.grader.grader_messages:
- a criterion is met when the graded answer contains any of the phrases the criterion quotes in 「」
  (a criterion that quotes none is never met);
- a criterion containing <<grader-error>> gets HTTP 500 (a failure, after the client's retries), one
  containing <<grader-garbled>> gets prose without a verdict (unparsable);
- any other request gets prose without a verdict.
Every request body is kept in `requests`, so a test can count what was asked.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RULES_MODEL = "medtune-rules"
QUOTED = re.compile(r"「([^」]+)」")


def rule_verdict(prompt: str) -> tuple[int, str]:
    """(HTTP status, reply text) for one grader prompt, by the rules above."""
    answer = re.search(r"\[待评回答开始\]\n(.*)\n\[待评回答结束\]", prompt, re.S)
    criterion = re.search(r"\[评分标准开始\]\n（[^）]*）(.*)\n\[评分标准结束\]", prompt, re.S)
    if not (answer and criterion):
        return 200, "这不是评分请求。"
    criterion_text = criterion.group(1)
    if "<<grader-error>>" in criterion_text:
        return 500, "rule grader: planted failure"
    if "<<grader-garbled>>" in criterion_text:
        return 200, "我觉得这个回答还可以。"
    phrases = QUOTED.findall(criterion_text)
    hits = [p for p in phrases if p in answer.group(1)]
    why = f"回答包含「{hits[0]}」" if hits else "回答不包含标准所引的任何短语"
    return 200, json.dumps({"explanation": why, "criteria_met": bool(hits)}, ensure_ascii=False)


class RuleGrader:
    """The loopback server; start()/stop() or use it as a context manager."""

    def __init__(self):
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.model = RULES_MODEL
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "RuleGrader":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "RuleGrader":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        grader = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                grader.requests.append(body)
                status, text = rule_verdict((body.get("messages") or [{}])[-1].get("content") or "")
                payload = ({"id": "rules", "object": "chat.completion", "created": 0, "model": body.get("model"),
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
                           if status == 200 else {"error": {"message": text, "type": "server_error"}})
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
