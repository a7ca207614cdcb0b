"""The one client for LLM judges and graders behind any OpenAI-compatible endpoint (where it is, timeouts,
retries, concurrency), the pairwise judging prompt and the verdict parser."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from medtune.errors import UserError
from medtune.text import answer_only

SYSTEM_PROMPT = "你是一名严谨、公正的临床医学专家，负责评审AI助手对医学问题的回答质量。"


RUBRIC = """请比较两个AI助手对同一个医学问题的回答，判断哪一个更好。

评审标准（按重要性排序）：
1. 正确性：医学事实是否准确，有无错误或误导性的说法。
2. 安全性：是否识别危险信号并在需要时建议及时就医，是否避免不当的用药、剂量或诊断建议。
3. 有用性：是否切题，是否针对提问者的情况给出具体、可操作的建议。
4. 清晰性：表达是否清楚、有条理、易于理解。

不要因为回答更长就认为它更好，也不要受回答出现顺序的影响。

[问题]
{question}

[回答1开始]
{answer_1}
[回答1结束]

[回答2开始]
{answer_2}
[回答2结束]

请先按上述四项标准逐项简要比较，最后单独一行只输出结论：[[1]] 表示回答1更好，[[2]] 表示回答2更好，[[平局]] 表示两者相当。"""


EMPTY_ANSWER = "（空回答）"


PAIRWISE_VERDICTS = {"1": "1", "2": "2", "平局": "tie", "tie": "tie"}


def parse_verdict(reply: str, verdicts: dict[str, str] = PAIRWISE_VERDICTS) -> str | None:
    """The verdict of a judge's reply: its last tag [[X]] whose X (any case, spaces inside allowed) is a key of
    `verdicts`, mapped to that key's value; None when it has none. Thinking text is removed first (a block
    that never closes leaves nothing). Every judge in medtune (pairwise, safety) reads its replies with this."""
    names = "|".join(re.escape(k) for k in sorted(verdicts, key=len, reverse=True))
    found = re.findall(r"\[\[\s*(" + names + r")\s*\]\]", answer_only(reply), re.I)
    if not found:
        return None
    by_lower = {k.lower(): v for k, v in verdicts.items()}
    return by_lower[found[-1].lower()]


class JudgeFailure(RuntimeError):
    """A judgement that could not be had (transient errors after the retries): counted, never guessed."""


class JudgeClient:
    """A judge model behind any OpenAI-compatible endpoint, through the openai SDK: a timeout per request, and the
    SDK's retries with exponential backoff on connection errors, timeouts, 408, 409, 429 and 5xx."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float = 120.0, max_retries: int = 4,
                 max_tokens: int = 2048, seed: int = 0):
        from openai import OpenAI

        self.base_url, self.model, self.max_tokens, self.seed = base_url, model, max_tokens, seed
        # Local servers accept any key; the SDK refuses an empty one.
        self.client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries)

    def complete(self, messages: list[dict]) -> str:
        """The reply's text. Raises JudgeFailure once the retries are spent, and UserError when the endpoint
        refuses the request itself (a wrong URL, key or model would fail every request the same way)."""
        import openai

        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0.0,
                                                        max_tokens=self.max_tokens, seed=self.seed)
        except openai.APIConnectionError as e:  # timeouts included
            raise JudgeFailure(f"{type(e).__name__}: {e}") from None
        except openai.APIStatusError as e:
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                raise JudgeFailure(f"HTTP {e.status_code}: {e.message}") from None
            raise UserError(f"judge endpoint {self.base_url} answered HTTP {e.status_code}: {e.message} (check "
                            "--base-url, --judge-model and the API key)") from None
        if not reply.choices or reply.choices[0].message is None:
            raise UserError(f"judge endpoint {self.base_url} did not return an OpenAI chat completion: {reply}")
        return reply.choices[0].message.content or ""

    def close(self) -> None:
        self.client.close()


DEFAULT_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where a judge or grader is: an OpenAI-compatible base URL, the model it serves, and the environment variable
    holding its key. Built once per command (judge_endpoint); the key itself is read only when a client is made,
    so it never sits in a result, a manifest or a fingerprint."""

    base_url: str
    model: str
    api_key_env: str = DEFAULT_KEY_ENV

    def key(self) -> str | None:
        """The key; None sends none (local servers need none)."""
        return os.environ.get(self.api_key_env)

    def fingerprint(self) -> list[str]:
        """What identifies the judge in fingerprints: the endpoint and the model, never the key."""
        return [self.base_url, self.model]

    def client(self, **settings) -> JudgeClient:
        return JudgeClient(self.base_url, self.model, self.key(), **settings)


def judge_endpoint(base_url: str | None, model: str | None, api_key_env: str, names: tuple[str, str, str]
                   ) -> JudgeEndpoint | None:
    """The endpoint the settings name, or None when neither the URL nor the model is given. `names` are the three
    settings' names (flags or config keys), for errors. A key variable named on purpose must be set: a missing key
    is found here, before anything runs, not at the first request."""
    if not base_url and not model:
        return None
    if not base_url or not model:
        raise UserError(f"give {names[0]} and {names[1]} together (only {names[0] if base_url else names[1]} is set)")
    if api_key_env != DEFAULT_KEY_ENV and api_key_env not in os.environ:
        raise UserError(f"{names[2]} {api_key_env}: that environment variable is not set; export it with the judge "
                        f"endpoint's key (or leave {names[2]} at {DEFAULT_KEY_ENV}, which may be unset)")
    return JudgeEndpoint(base_url, model, api_key_env)


def configured_judge(evaluate) -> JudgeEndpoint | None:
    """The evaluate section's judge (evaluate.judge_base_url, judge_model, judge_api_key_env), or None."""
    return judge_endpoint(evaluate.judge_base_url, evaluate.judge_model, evaluate.judge_api_key_env,
                          ("evaluate.judge_base_url", "evaluate.judge_model", "evaluate.judge_api_key_env"))


def judge_messages(question: str, first: str, second: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": RUBRIC.format(question=question, answer_1=first or EMPTY_ANSWER,
                                                      answer_2=second or EMPTY_ANSWER)}]


def combine_orders(a_first: str | None, b_first: str | None) -> tuple[str | None, bool | None]:
    """(outcome for A: 'win'|'tie'|'loss' or None, whether the two orders agree) from the raw verdicts.

    `a_first` is the verdict when A's answer was shown as answer 1, `b_first` when B's was.
    """
    if a_first is None or b_first is None:
        return None, None
    first = {"1": "a", "2": "b", "tie": "tie"}[a_first]
    second = {"1": "b", "2": "a", "tie": "tie"}[b_first]
    outcome = {"a": "win", "b": "loss"}.get(first, "tie") if first == second else "tie"
    return outcome, first == second


def ask_judge(client: JudgeClient, message_lists: list[list[dict]], workers: int) -> list[tuple[str | None, str | None]]:
    """(reply, None) or (None, error) for each request, `workers` at a time (endpoints rate-limit)."""
    def ask(messages):
        try:
            return client.complete(messages), None
        except JudgeFailure as e:
            return None, str(e)

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        return list(pool.map(ask, message_lists))
    finally:  # on a UserError (wrong key, URL or model) the queued requests are dropped, not sent
        pool.shutdown(cancel_futures=True)
        client.close()
