"""`medtune chat`: talk to a run's model in the terminal, answers streamed as they are generated.

Run as: medtune chat RUN_DIR_OR_MODEL [--think] [--max-tokens 1024] [--system TEXT]

Commands: /think toggles Qwen3 thinking (off by default), /reset starts a new conversation, /exit
(or Ctrl-D) quits; Ctrl-C stops an answer. The medical disclaimer is shown first, and an urgent-care
warning whenever a question describes red-flag symptoms (medtune.redflags).
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from medtune.generate.sampling import sampling_for
from medtune.redflags import DISCLAIMER, URGENT_MESSAGE, find_red_flags
from medtune.text import ThinkSplitter

HELP = "命令 / commands: /think 切换思考模式 (toggle thinking)  /reset 新对话 (new chat)  /exit 退出 (quit)"
DIM, BOLD_RED, RESET = "\x1b[2m", "\x1b[1;31m", "\x1b[0m"


def chat_loop(engine, read_line: Callable[[str], str | None], out: TextIO, thinking: bool = False,
              max_tokens: int = 1024, system: str | None = None, temperature: float | None = None,
              seed: int | None = None) -> None:
    """The conversation: read a line, answer it with the whole history, until /exit or end of input.

    `engine` is a medtune.generate generator; `read_line(prompt)` returns the next line, or None at end of input.
    """
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    out.write(f"{DISCLAIMER}\n\nmedtune chat · {engine.model_id} · 思考模式 thinking: {_on_off(thinking)}\n{HELP}\n")
    while True:
        try:
            line = read_line("\n你 / you> ")
        except KeyboardInterrupt:
            line = None
        if line is None:
            out.write("\n")
            return
        text = line.strip()
        command = text.split()[0].lower() if text.startswith("/") else None
        if command in ("/exit", "/quit"):
            return
        if command == "/think":
            thinking = not thinking
            out.write(f"思考模式 thinking: {_on_off(thinking)}\n")
        elif command == "/reset":
            history = list(start)
            out.write("已开始新对话 / new conversation\n")
        elif command is not None:
            out.write(HELP + "\n")
        elif text:
            flags = find_red_flags(text)
            if flags:
                out.write(_styled(out, f"⚠️  {URGENT_MESSAGE}\n   ({'; '.join(r.label for r in flags)})", BOLD_RED)
                          + "\n")
            messages = history + [{"role": "user", "content": text}]
            sampling = sampling_for(thinking, max_tokens, temperature=temperature, seed=seed)
            answer = _answer(engine, messages, sampling, thinking, out)
            if answer is not None:
                history = messages + [{"role": "assistant", "content": answer}]


def _answer(engine, messages: list[dict], sampling, thinking: bool, out: TextIO) -> str | None:
    """Stream the reply to `messages`, thinking dimmed; the answer text, or None when the conversation is too long."""
    prompt_ids = engine.prompt_ids(messages, enable_thinking=thinking)
    if len(prompt_ids) + sampling.max_tokens > engine.max_model_len:
        out.write(f"对话太长 / the conversation is too long ({len(prompt_ids)} tokens + {sampling.max_tokens} to "
                  f"answer > {engine.max_model_len}); /reset 开始新对话\n")
        return None
    answer: list[str] = []
    shown = {"part": None}
    splitter = ThinkSplitter(thinking)

    def show(reasoning: str, reply: str) -> None:
        if reasoning:
            if shown["part"] != "thinking":
                out.write("\n" + _styled(out, "[思考 / thinking]", DIM) + "\n")
                shown["part"] = "thinking"
            out.write(_styled(out, reasoning, DIM))
        if reply:
            if shown["part"] != "answer":
                out.write(("\n\n" if shown["part"] else "\n") + "助手 / assistant> ")
                shown["part"] = "answer"
            out.write(reply)
            answer.append(reply)
        out.flush()

    try:
        result = engine.generate_one(prompt_ids, sampling, thinking, on_text=lambda piece: show(*splitter.feed(piece)))
        show(*splitter.flush())
        if result.finish_reason == "length":
            out.write(f"\n[达到 {sampling.max_tokens} tokens 上限 / stopped at max_tokens]")
    except KeyboardInterrupt:  # Ctrl-C ends this answer, not the chat
        show(*splitter.flush())
        out.write("\n[已停止 / stopped]")
    out.write("\n")
    return "".join(answer)


def _styled(out: TextIO, text: str, style: str) -> str:
    return f"{style}{text}{RESET}" if out.isatty() else text


def run_chat(model: str, thinking: bool = False, max_tokens: int = 1024, system: str | None = None,
             temperature: float | None = None, seed: int | None = None, dtype: str = "auto") -> None:
    """Load RUN_DIR_OR_MODEL and chat on the terminal."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    from medtune.generate.loading import load_generator
    from medtune.generate.source import resolve_model_source

    source = resolve_model_source(model)
    print(f"chat: loading {source.base}" + (f" + adapter {source.adapter}" if source.adapter else ""), file=sys.stderr)
    engine = load_generator(model, dtype=dtype, merge=True)
    chat_loop(engine, _read_terminal_line, sys.stdout, thinking=thinking, max_tokens=max_tokens, system=system,
              temperature=temperature, seed=seed)


def _read_terminal_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


def _on_off(flag: bool) -> str:
    return "开 on" if flag else "关 off"
