"""`medtune chat`: disclaimer first, streamed answers, multi-turn history, /think, /reset, /exit, red flags."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from medtune.serve.chat import HELP, chat_loop
from medtune.cli import main
from medtune.redflags import DISCLAIMER, URGENT_MESSAGE
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class SpyEngine:
    """The real engine, recording the conversations it is asked to answer and the pieces it streams."""

    def __init__(self, engine, max_model_len=None, interrupt_after=None):
        self.engine = engine
        self.model_id = engine.model_id
        self.max_model_len = max_model_len or engine.max_model_len
        self.interrupt_after = interrupt_after
        self.prompts, self.pieces, self.generations = [], 0, 0

    def prompt_ids(self, messages, enable_thinking):
        self.prompts.append(([dict(m) for m in messages], enable_thinking))
        return self.engine.prompt_ids(messages, enable_thinking)

    def generate_one(self, prompt_ids, sampling, enable_thinking=False, on_text=None, stop=None):
        self.generations += 1

        def counted(piece):
            self.pieces += 1
            on_text(piece)
            if self.pieces == self.interrupt_after:
                raise KeyboardInterrupt  # what Ctrl-C does in the middle of generate()

        return self.engine.generate_one(prompt_ids, sampling, enable_thinking, on_text=counted, stop=stop)


def _script(*lines):
    remaining = list(lines)
    read = []

    def read_line(prompt):
        if not remaining:
            return None
        read.append(remaining.pop(0))
        return read[-1]

    return read_line, read, remaining


def test_conversation_history_think_reset_and_exit(tiny_engine):
    spy = SpyEngine(tiny_engine)
    red_flag = "我爸突然胸口剧痛，疼到左胳膊，满头大汗"
    read_line, _, remaining = _script("你好", "/think", "第二个问题", "/reset", red_flag, "/bogus", "  ", "/exit",
                                      "never read")
    out = io.StringIO()
    chat_loop(spy, read_line, out, max_tokens=8, seed=3)
    text = out.getvalue()

    assert text.startswith(DISCLAIMER)
    assert remaining == ["never read"]  # /exit ended the chat
    assert len(spy.prompts) == 3 and spy.generations == 3
    (first, think1), (second, think2), (third, think3) = spy.prompts
    assert first == [{"role": "user", "content": "你好"}] and think1 is False
    # Turn two carries turn one, including the answer exactly as it was printed.
    assert [m["role"] for m in second] == ["user", "assistant", "user"] and think2 is True
    assert second[1]["content"] and f"助手 / assistant> {second[1]['content']}" in text
    # The tiny model never closes <think>, so with thinking on everything is thinking (shown, not kept as answer).
    assert "[思考 / thinking]" in text
    assert third == [{"role": "user", "content": red_flag}] and think3 is True  # /reset kept the mode
    assert text.count(URGENT_MESSAGE) == 1
    assert text.index(URGENT_MESSAGE) > text.index("new conversation")
    assert HELP in text.split(URGENT_MESSAGE)[1]  # /bogus shows the commands
    assert spy.pieces > 3  # answers are streamed piece by piece


def test_too_long_conversation_and_ctrl_c(tiny_engine):
    spy = SpyEngine(tiny_engine, max_model_len=20)
    read_line, _, _ = _script("这个问题加上回答放不进二十个 token 的上下文")
    out = io.StringIO()
    chat_loop(spy, read_line, out, max_tokens=8)
    assert "the conversation is too long" in out.getvalue() and spy.generations == 0

    spy = SpyEngine(tiny_engine, interrupt_after=2)
    read_line, _, remaining = _script("第一个问题", "第二个问题")
    out = io.StringIO()
    chat_loop(spy, read_line, out, max_tokens=50, seed=1)
    assert out.getvalue().count("[已停止 / stopped]") == 1  # the first answer was stopped ...
    assert spy.generations == 2 and remaining == []      # ... and the chat went on


def test_ctrl_c_at_the_prompt_ends_the_chat():
    class NoModel:
        model_id, max_model_len = "none", 100

    def read_line(prompt):
        raise KeyboardInterrupt

    out = io.StringIO()
    chat_loop(NoModel(), read_line, out)
    assert out.getvalue().startswith(DISCLAIMER)


def test_cli_chat_streams_and_exits(lora_run):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "medtune", "chat", str(lora_run), "--max-tokens", "4", "--seed", "0"],
                          input="你好\n/exit\n", capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(DISCLAIMER)
    assert "助手 / assistant> " in proc.stdout or "[达到 4 tokens 上限" in proc.stdout


def test_cli_chat_bad_path_is_a_plain_error(tmp_path, capsys):
    assert main(["chat", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
