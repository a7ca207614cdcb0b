"""Training text from the tokenizer's own chat template, and which tokens are trained.

The rule (Qwen3 non-thinking, and any chat template): for every assistant turn, the trained tokens
are exactly the tokens the model must produce after
`apply_chat_template(history, add_generation_prompt=True, enable_thinking=False)`: the answer,
tokenized on its own, then the end-of-turn token (`<|im_end|>`). Each trained answer is immediately
preceded by that same generation prompt (`<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n` for
Qwen3), which is prompt, not target. Everything else is labelled -100.

How earlier turns of a multi-turn dialogue are rendered (`data.multi_turn`):
- `joint` (default): one sample per dialogue. Each answer follows the generation prompt that
  inference uses for it, so every answer is trained in the exact position it is produced in. The one
  difference from an inference prompt is in the history: Qwen3's template drops the empty think block
  from earlier answers at inference, while here earlier answers keep the block they were generated
  after. We accept that: it costs O(tokens) instead of O(turns^2), and it is how the model produced
  those answers. A template render of the whole dialogue cannot be used instead: it gives earlier
  answers no think block, so they would follow `<|im_start|>assistant\\n` and teach the model to skip
  the non-thinking prompt (the boundary bug seen in other tools, FINDINGS.md).
- `expand`: one sample per answer, whose prompt IS `apply_chat_template(history, ...)` token for
  token. Exact for every turn, at the cost of repeating the history.

Speed: the template is rendered once per conversation shape (system or not, number of turns) with
placeholder contents, and real contents are put into that skeleton. A second render with other
contents checks that the template treats contents as opaque text; contents holding the tokenizer's
control text are rejected earlier (readers), since templates do look inside those (`</think>`).
"""

from __future__ import annotations

from dataclasses import dataclass

from medtune.data.readers import ASSISTANT, SYSTEM, USER, Conversation
from medtune.errors import UserError

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use code points: no template produces them


def _slot(name: str) -> str:
    return f"{_OPEN}{name}{_CLOSE}"


@dataclass(frozen=True)
class Skeleton:
    """A rendered template text with named holes, e.g. ['<|im_start|>user\\n', ('u0',), '<|im_end|>...']."""

    parts: tuple
    pattern: str
    """The same as a str.format pattern (literal braces doubled): filling is one C-level call."""

    @classmethod
    def parse(cls, text: str) -> "Skeleton":
        parts, pos = [], 0
        while (start := text.find(_OPEN, pos)) != -1:
            end = text.index(_CLOSE, start)
            if start > pos:
                parts.append(text[pos:start])
            parts.append((text[start + 1:end],))
            pos = end + 1
        if pos < len(text):
            parts.append(text[pos:])
        pattern = "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{" + p[0] + "}"
                          for p in parts)
        return cls(tuple(parts), pattern)

    def fill(self, values: dict[str, str]) -> str:
        return self.pattern.format_map(values)


@dataclass(frozen=True)
class Shape:
    """The skeletons of one conversation shape: the text before each answer, and what follows each."""

    contexts: tuple[Skeleton, ...]
    trailers: tuple[Skeleton, ...]


class TemplateError(UserError, ValueError):
    """The chat template cannot be used for training as it is (the message says why)."""


class ConversationTemplate:
    """Turns conversations into (text, trained?) segments with the tokenizer's own chat template."""

    def __init__(self, tokenizer, multi_turn: str = "joint", template_kwargs: dict | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(f"the tokenizer '{tokenizer.name_or_path}' has no chat template; use a chat model's "
                                "tokenizer (model.tokenizer)")
        if multi_turn not in ("joint", "expand"):
            raise ValueError(f"multi_turn must be 'joint' or 'expand', not {multi_turn!r}")
        self.tokenizer = tokenizer
        self.multi_turn = multi_turn
        self.template_kwargs = {"enable_thinking": False} if template_kwargs is None else dict(template_kwargs)
        self._shapes: dict[tuple[bool, int], Shape] = {}
        self.end_of_turn = self._find_end_of_turn()
        self.end_of_turn_ids = tokenizer(self.end_of_turn, add_special_tokens=False)["input_ids"]
        self.generation_prompt = self._find_generation_prompt()

    # -- direct renders (the reference every skeleton is built from) --

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  **self.template_kwargs)

    def inference_prompt(self, conv: Conversation, turn: int) -> str:
        """What inference renders before answer `turn` (0-based): history, that question, generation prompt."""
        return self.render(conv.messages(upto=turn + 1, with_last_answer=False), add_generation_prompt=True)

    def _find_end_of_turn(self) -> str:
        text = self.render([{"role": USER, "content": _slot("u")}, {"role": ASSISTANT, "content": _slot("a")}])
        after = text.split(_slot("a"), 1)[-1]
        specials = set(self.tokenizer.all_special_tokens) | {
            t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special}
        best = None
        for tok in specials:
            i = after.find(tok)
            if i != -1 and (best is None or i < best[0]):
                best = (i, tok)
        if best is None:
            raise TemplateError("the chat template puts no special token after an assistant message, so the end "
                                "of an answer cannot be trained")
        return after[: best[0] + len(best[1])]

    def _find_generation_prompt(self) -> str:
        msgs = [{"role": USER, "content": _slot("u")}]
        with_gp, without = self.render(msgs, add_generation_prompt=True), self.render(msgs)
        if not with_gp.startswith(without):
            raise TemplateError("the chat template's generation prompt is not a suffix of the prompt")
        return with_gp[len(without):]

    # -- skeletons --

    def shape(self, has_system: bool, n_turns: int) -> Shape:
        key = (has_system, n_turns)
        if key not in self._shapes:
            self._shapes[key] = self._build_shape(has_system, n_turns)
        return self._shapes[key]

    def _build_shape(self, has_system: bool, n_turns: int) -> Shape:
        def conv(fill):
            return Conversation(fill("s") if has_system else None,
                                [(fill(f"u{i}"), fill(f"a{i}")) for i in range(n_turns)], "<shape>", 0)

        def texts(c: Conversation) -> tuple[list[str], list[str]]:
            contexts, trailers = [], []
            for k in range(n_turns):
                prompt = self.inference_prompt(c, k)
                if self.multi_turn == "joint" and k > 0:
                    prompt = self._after_answer(prompt, c.turns[k - 1][1], k - 1)
                contexts.append(prompt)
                if self.multi_turn == "expand" or k == n_turns - 1:
                    full = self.render(c.messages(upto=k + 1))
                    trailers.append(self._after_answer(full, c.turns[k][1], k))
            return contexts, trailers

        contexts, trailers = texts(conv(_slot))
        shape = Shape(tuple(Skeleton.parse(t) for t in contexts), tuple(Skeleton.parse(t) for t in trailers))
        # The check that makes the skeleton trustworthy: other contents, rendered directly, must equal
        # the skeleton filled with them.
        probe = conv(lambda name: f"内容 {name}\nline 2")
        values = _values(probe)
        try:
            direct = texts(probe)
        except TemplateError:
            direct = None
        filled = ([s.fill(values) for s in shape.contexts], [s.fill(values) for s in shape.trailers])
        if direct is None or tuple(direct) != filled:
            raise TemplateError("the chat template renders message contents in a content-dependent way; medtune "
                                "cannot derive exact training prompts from it")
        return shape

    def _after_answer(self, text: str, answer: str, turn: int) -> str:
        marker = answer + self.end_of_turn
        i = text.rfind(marker)
        if i == -1:
            raise TemplateError(f"the chat template does not end answer {turn + 1} with {self.end_of_turn!r}")
        return text[i + len(marker):]

    # -- the training segments --

    def segments(self, conv: Conversation) -> list[list[tuple[str, bool]]]:
        """One or more samples, each a list of (text, trained) pieces in order.

        Trained pieces are answers; each is followed by the end-of-turn token (trained too, added by the
        tokenizing caller). `joint` gives one sample; `expand` one per answer.
        """
        shape = self.shape(conv.system is not None, len(conv.turns))
        values = _values(conv)
        if self.multi_turn == "joint":
            pieces = []
            for k, (_, answer) in enumerate(conv.turns):
                pieces.append((shape.contexts[k].fill(values), False))
                pieces.append((answer, True))
            pieces.append((shape.trailers[0].fill(values), False))
            return [pieces]
        return [[(shape.contexts[k].fill(values), False), (answer, True), (shape.trailers[k].fill(values), False)]
                for k, (_, answer) in enumerate(conv.turns)]


def _values(conv: Conversation) -> dict[str, str]:
    values = {"s": conv.system} if conv.system is not None else {}
    for i, (u, a) in enumerate(conv.turns):
        values[f"u{i}"] = u
        values[f"a{i}"] = a
    return values


__all__ = ["ConversationTemplate", "Skeleton", "Shape", "TemplateError", "SYSTEM", "USER", "ASSISTANT"]
