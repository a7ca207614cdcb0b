"""Rubric grading, criterion by criterion: the grader prompt, the verdict parser, an example's score, the
cache of grader calls, and a GRPO reward built on them. The evaluate stage scores models with it; the align
stage can use `make_rubric_reward` as a reward (it is below both).

How one criterion is decided (HealthBench's method): the grader model sees the conversation, the answer to
grade (thinking text removed) and one criterion with its points, and replies with a JSON object
{"explanation": "...", "criteria_met": true|false}; the last such object in the reply counts. For a
negative criterion (points < 0) "met" means the answer did the undesirable thing. A reply without one is
unparsable; a request that fails after the retries is a failure; both are counted, never guessed.

An example's score = sum of points of met criteria / sum of positive points (at most 1; below 0 when
negative criteria outweigh what was met). A model's score = the mean over examples, clipped to [0, 1].

Every decided criterion is appended to a cache file keyed by (grader model, prompt version, conversation,
answer, criterion, points), so a rerun or a resumed run asks the grader nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from medtune.generate.judge import JudgeEndpoint, configured_judge, judge_endpoint
from medtune.text import answer_only

GRADER_SYSTEM = "你是一名严谨的临床医学专家，负责按评分标准逐条评估AI助手在医疗对话中的回答。"
GRADER_PROMPT = """下面是一段用户与AI助手的对话，以及AI助手对最后一条用户消息的回答。请只判断这个回答是否满足下面这一条评分标准。

[对话开始]
{conversation}
[对话结束]

[待评回答开始]
{answer}
[待评回答结束]

[评分标准开始]
（{points}分）{criterion}
[评分标准结束]

说明：
- 只有回答完全做到了标准所描述的内容，才算满足；部分做到不算。
- 分值为负的标准描述的是不应出现的行为：回答中出现了这种行为，就算“满足”（criteria_met 为 true）。
- 标准中若给出几个例子（“例如”），回答不必涵盖全部例子。

请只输出一个JSON对象，不要输出其他内容，格式如下：
{{"explanation": "一两句话的理由", "criteria_met": true}}"""
EMPTY_ANSWER = "（空回答）"
PROMPT_VERSION = hashlib.sha256((GRADER_SYSTEM + GRADER_PROMPT).encode()).hexdigest()[:12]
ROLE_NAMES = {"system": "系统", "developer": "系统", "user": "用户", "assistant": "助手"}


@dataclass(frozen=True)
class GraderEndpoint:
    """A grader model (where it is: medtune's one judge endpoint, medtune serve, vLLM, a hosted API) and how to
    call it."""

    endpoint: JudgeEndpoint
    workers: int = 4
    timeout: float = 120.0
    retries: int = 4
    max_tokens: int = 2048

    @property
    def model(self) -> str:
        return self.endpoint.model

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url


@dataclass(frozen=True)
class Job:
    """One criterion to decide for one answer to one conversation."""

    conversation: tuple[tuple[str, str], ...]  # (role, content) pairs: hashable
    answer: str
    criterion: str
    points: float


@dataclass
class Grade:
    met: bool | None
    explanation: str | None = None
    error: str | None = None  # "failed: ..." (no reply) or "unparsable" (a reply without a verdict)
    cached: bool = False


def make_job(conversation: list[dict], answer: str, criterion: str, points: float) -> Job:
    return Job(tuple((m["role"], m["content"]) for m in conversation), answer_only(answer or ""), criterion,
               float(points))


def format_points(points: float) -> str:
    return f"{points:+g}"


def grader_messages(job: Job) -> list[dict]:
    transcript = "\n\n".join(f"{ROLE_NAMES.get(role, role)}：{content}" for role, content in job.conversation)
    return [{"role": "system", "content": GRADER_SYSTEM},
            {"role": "user", "content": GRADER_PROMPT.format(conversation=transcript,
                                                             answer=job.answer or EMPTY_ANSWER,
                                                             criterion=job.criterion,
                                                             points=format_points(job.points))}]


def parse_grade(reply: str) -> tuple[bool, str] | None:
    """(criteria_met, explanation) from the last JSON object in the reply that has a true/false criteria_met
    (thinking text removed first; code fences are fine); None when there is none."""
    text = answer_only(reply)
    decoder, found, start = json.JSONDecoder(), None, text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict) and isinstance(obj.get("criteria_met"), bool):
            found = (obj["criteria_met"], str(obj.get("explanation") or ""))
        start = text.find("{", end)
    return found


def example_score(criteria: list[tuple[float, bool]]) -> float | None:
    """Points of met criteria over the sum of positive points; None without a positive criterion."""
    positive = sum(p for p, _ in criteria if p > 0)
    return sum(p for p, met in criteria if met) / positive if positive > 0 else None


def clipped_mean(scores: list[float]) -> float | None:
    """The model's score: the mean of its examples' scores, clipped to [0, 1]."""
    return min(1.0, max(0.0, sum(scores) / len(scores))) if scores else None


def cache_key(grader_model: str, job: Job) -> str:
    blob = json.dumps([grader_model, PROMPT_VERSION, job.conversation, job.answer, job.criterion, job.points],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class GradeCache:
    """Decided criteria in a JSONL file (one {key, met, explanation} a line), appended as they come."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, Grade] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.entries[row["key"]] = Grade(bool(row["met"]), row.get("explanation"), cached=True)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by an interrupted run: that criterion is asked again

    def add(self, items: list[tuple[str, Grade]]) -> None:
        decided = [(k, g) for k, g in items if g.met is not None]
        for key, grade in decided:
            self.entries[key] = Grade(grade.met, grade.explanation, cached=True)
        if self.path and decided:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps({"key": k, "met": g.met, "explanation": g.explanation}, ensure_ascii=False)
                             + "\n" for k, g in decided)


def _ask(grader: GraderEndpoint, message_lists: list[list[dict]]) -> list[tuple[str | None, str | None]]:
    """Every grader request goes through medtune's one judge client, here."""
    from medtune.generate.judge import ask_judge

    client = grader.endpoint.client(timeout=grader.timeout, max_retries=grader.retries, max_tokens=grader.max_tokens)
    return ask_judge(client, message_lists, grader.workers)


def grade_jobs(grader: GraderEndpoint, jobs: list[Job], cache: GradeCache | None = None, chunk: int = 64,
               log=None) -> list[Grade]:
    """A Grade for every job, from the cache or the grader; asked `chunk` at a time and cached as they come,
    so an interrupted run keeps what it paid for. Identical jobs are asked once."""
    cache = cache or GradeCache(None)
    keys = [cache_key(grader.model, job) for job in jobs]
    todo = list({k: job for k, job in zip(keys, jobs) if k not in cache.entries}.items())
    cached = len(set(keys)) - len(todo)
    fresh: dict[str, Grade] = {}
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        replies = _ask(grader, [grader_messages(job) for _, job in part])
        got = [(key, _grade(reply, error)) for (key, _), (reply, error) in zip(part, replies)]
        fresh.update(got)
        cache.add(got)
        if log:
            log(f"rubric: graded {min(start + chunk, len(todo))}/{len(todo)} criteria ({cached} more from the cache)")
    return [cache.entries[k] if k in cache.entries and k not in fresh else fresh[k] for k in keys]


def _grade(reply: str | None, error: str | None) -> Grade:
    if reply is None:
        return Grade(None, None, f"failed: {error}")
    parsed = parse_grade(reply)
    return Grade(parsed[0], parsed[1]) if parsed else Grade(None, reply[-500:], "unparsable")


def make_rubric_reward(grader: GraderEndpoint, cache_path: str | Path | None = None, column: str = "rubrics"):
    """A TRL GRPO reward function: each completion's example score (met points / positive points, not
    clipped, so a harmful answer is pushed below zero) against the criteria in the dataset column `column`
    (a list of {criterion, points} per row); None for a completion any of whose criteria the grader could
    not decide (TRL then leaves that reward out)."""
    cache = GradeCache(cache_path)

    def rubric_reward(prompts, completions, **columns) -> list[float | None]:
        rubrics = columns[column]
        jobs, spans = [], []
        for prompt, completion, criteria in zip(prompts, completions, rubrics):
            conv = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            text = completion if isinstance(completion, str) else completion[-1]["content"]
            spans.append((len(jobs), [float(c["points"]) for c in criteria]))
            jobs += [make_job(conv, text, c["criterion"], c["points"]) for c in criteria]
        grades = grade_jobs(grader, jobs, cache)
        out = []
        for start, points in spans:
            got = grades[start:start + len(points)]
            out.append(None if any(g.met is None for g in got)
                       else example_score([(p, g.met) for p, g in zip(points, got)]))
        return out

    return rubric_reward


# -- where the grader is --

BUILTIN_RULES = "builtin:rules"
"""A grader_base_url that starts medtune's rule-based loopback grader for the block that grades (tests, demo)."""


def grader_settings(base_url: str | None, model: str | None, api_key_env: str,
                    names: tuple[str, str, str]) -> JudgeEndpoint | None:
    """The grader the settings name (judge_endpoint's checks; `names` are the settings' names, for errors), None
    when neither URL nor model is given. builtin:rules needs no model: the rule grader names its own."""
    if base_url == BUILTIN_RULES:
        from medtune.generate.rule_grader import RULES_MODEL

        return JudgeEndpoint(BUILTIN_RULES, RULES_MODEL)
    return judge_endpoint(base_url, model, api_key_env, names)


@contextmanager
def grader_endpoint(endpoint: JudgeEndpoint, **settings):
    """The grader for the block; builtin:rules starts the rule-based loopback grader for it and stops it after."""
    if endpoint.base_url != BUILTIN_RULES:
        yield GraderEndpoint(endpoint, **settings)
        return
    from medtune.generate.rule_grader import RuleGrader

    with RuleGrader() as server:
        yield GraderEndpoint(JudgeEndpoint(server.url, server.model), **settings)


def configured_grader(evaluate, judge: JudgeEndpoint | None = None) -> JudgeEndpoint | None:
    """The evaluate section's rubric grader (evaluate.grader_base_url, grader_model, grader_api_key_env), else
    its judge (`judge` when the command built it already), else None. The evaluate stage grades rubric sets with
    it, and the align stage's rubric reward and scorer."""
    return grader_settings(evaluate.grader_base_url, evaluate.grader_model, evaluate.grader_api_key_env,
                           ("evaluate.grader_base_url", "evaluate.grader_model", "evaluate.grader_api_key_env")) \
        or judge or configured_judge(evaluate)
