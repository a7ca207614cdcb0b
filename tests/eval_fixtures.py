"""Fixtures for the evaluate tests.

- A hand-made run directory (until `medtune train` writes real ones): the builtin tiny Qwen3 as
  base_model/, a LoRA adapter with non-zero B weights saved at the top level with the tokenizer, and
  data/ prepared with its validation split taken from a separate file (so a test knows what it holds).
- A real OpenAI-compatible HTTP server on loopback (http.server in a thread): /v1/chat/completions and
  /v1/completions, streamed as server-sent events or not, recording every request body.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medtune.config import QWEN3_LORA_TARGETS


def dialogues(n: int, start: int = 0) -> list[dict]:
    """ShareGPT dialogues of different lengths (so batches need padding)."""
    return [{"conversations": [{"from": "human", "value": f"问题{i}：头痛{i}天了，还发烧，怎么办？"},
                               {"from": "gpt", "value": f"回答{i}：建议多休息、多喝水" + "，注意观察" * (i % 4)
                                                        + "；若持续高热请及时就医。"}]}
            for i in range(start, start + n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def build_run_dir(run: Path) -> Path:
    """base_model/ + adapter + tokenizer + data/{train,val}, as the train stage leaves a run directory."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medtune.config import config_from_dict
    from medtune.modeling import build_tiny_qwen3
    from medtune.data.prepare import prepare_dataset

    base = build_tiny_qwen3(run / "base_model")
    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=list(QWEN3_LORA_TARGETS)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.3)  # so the adapter changes the output
    peft_model.save_pretrained(str(run))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(run))
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    cfg = config_from_dict({"output_dir": str(run), "data": {
        "train_files": [str(write_jsonl(run.parent / "train.jsonl", dialogues(6)))],
        "val_files": [str(write_jsonl(run.parent / "val.jsonl", dialogues(5, start=100)))], "max_length": 128}})
    prepare_dataset(cfg, log=lambda *_: None)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One hand-made run directory shared by the evaluate tests (read-only: copy it to write into it)."""
    return build_run_dir(tmp_path_factory.mktemp("evalrun") / "run")


THINKING = "<think>先想一想</think>\n\n"
ANSWER = "请立即拨打120。"
UNSAFE_ANSWER = "可以的，一次吃五片没问题。"
FIRST_CHUNK_DELAY = 0.05


class FakeOpenAI:
    """What the loopback server does: generation answers ANSWER (UNSAFE_ANSWER to a question about 降压药),
    after THINKING when thinking is on, one character per streamed chunk, the first after FIRST_CHUNK_DELAY
    seconds, cut at max_tokens; a safety judge prompt (it holds '[[PASS]]') gets a verdict tag: [[PASS]] when the
    judged answer mentions 120, else [[FAIL]]."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.keys: dict[str, set[str]] = {}  # model -> the Authorization headers its requests carried
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, path: str, body: dict) -> str:
        if path.endswith("/completions") and "messages" not in body:
            return ANSWER
        text = body["messages"][-1]["content"]
        if "[[PASS]]" in text:
            answer = text.split("助手的回答：", 1)[1].split("要求：", 1)[0]
            return "安全性判断完毕。\n" + ("[[PASS]]" if "120" in answer else "[[FAIL]]")
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking")
        return (THINKING if thinking else "") + (UNSAFE_ANSWER if "降压药" in text else ANSWER)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body))
                fake.keys.setdefault(body.get("model"), set()).add(self.headers.get("Authorization"))
                text = fake.reply(self.path, body)
                pieces = list(text)[: body.get("max_tokens") or None]
                finish = "length" if len(pieces) < len(text) else "stop"
                chat = self.path.endswith("/chat/completions")
                usage = {"prompt_tokens": 10, "completion_tokens": len(pieces), "total_tokens": 10 + len(pieces)}
                if not body.get("stream"):
                    message = {"role": "assistant", "content": "".join(pieces)}
                    choice = {"index": 0, "finish_reason": finish,
                              **({"message": message} if chat else {"text": "".join(pieces)})}
                    self._send(json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                           "model": body["model"], "choices": [choice], "usage": usage}),
                               "application/json")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                time.sleep(FIRST_CHUNK_DELAY)
                kind = "chat.completion.chunk" if chat else "text_completion"
                for k, piece in enumerate(pieces):
                    last = k == len(pieces) - 1
                    choice = {"index": 0, "finish_reason": finish if last else None,
                              **({"delta": {"content": piece}} if chat else {"text": piece})}
                    self._event({"id": "x", "object": kind, "created": 0, "model": body["model"],
                                 "choices": [choice]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({"id": "x", "object": kind, "created": 0, "model": body["model"], "choices": [],
                                 "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, obj):
                self.wfile.write(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")
                self.wfile.flush()

            def _send(self, text, content_type):
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def openai_server():
    fake = FakeOpenAI()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
