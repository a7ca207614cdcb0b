"""The label rule, token for token, against the real Qwen3 tokenizer and its own chat template.

For every assistant turn: trained tokens == tokenizer(answer) + <|im_end|>; the tokens right before
are the no-think generation prompt; in `expand` mode everything before an answer IS
apply_chat_template(history, add_generation_prompt=True, enable_thinking=False); labels are -100
everywhere else.
"""

from __future__ import annotations

import json

import pytest

from medtune.data.readers import Conversation
from medtune.data.template import ConversationTemplate, Skeleton, TemplateError
from tests.conftest import DEMO_DIALOGUES, HUATUO_1K, needs_shared

GEN_PROMPT = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
EMPTY_THINK = "<think>\n\n</think>\n\n"

HAND_WRITTEN = [
    Conversation(None, [("糖尿病有哪些症状？", "常见症状是多饮、多尿、多食和体重下降。")], "t", 1),
    Conversation("你是一名全科医生。", [("血压160/100要紧吗？", "这属于2级高血压，建议尽快就医。")], "t", 2),
    Conversation(None, [("孩子发烧39度怎么办？", "先物理降温，必要时用对乙酰氨基酚。"),
                        ("他才5个月大呢？", "3到6个月的婴儿发热到39度应尽快去医院。"),
                        ("晚上去急诊吗？", "是的，如精神差或抽搐，请立即去急诊。")], "t", 3),
    Conversation("你是药师。", [("布洛芬能和感冒药一起吃吗？", "注意很多感冒药已含解热镇痛成分。"),
                               ("那对乙酰氨基酚呢？", "同样注意重复用药，成人每日总量有上限。")], "t", 4),
    # contents that look like template syntax or start with punctuation / digits
    Conversation(None, [("{x} 和 }} 是什么？\n第二行", "“引号开头”的回答。\n\n- 列表项"),
                        ("123", "4.5 mg/L")], "t", 5),
]


def _conversations_from_jsonl(path, limit=None):
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            turns = json.loads(line)["conversations"]
            system = turns[0]["value"] if turns[0]["from"] == "system" else None
            body = turns[1:] if system is not None else turns
            pairs = [(body[j]["value"].strip(), body[j + 1]["value"].strip()) for j in range(0, len(body), 2)]
            out.append(Conversation(system, pairs, str(path), i))
            if limit and len(out) >= limit:
                break
    return out


def _valid(convs):
    return [c for c in convs if all(u and a for u, a in c.turns)]


def _tokenize_segments(tok, tmpl, pieces):
    ids, labels, spans = [], [], []
    for text, trained in pieces:
        toks = tok(text, add_special_tokens=False)["input_ids"]
        if trained:
            toks = toks + tmpl.end_of_turn_ids
            spans.append((len(ids), len(ids) + len(toks)))
        ids += toks
        labels += toks if trained else [-100] * len(toks)
    return ids, labels, spans


def _check_label_rule(tok, conv, mode):
    tmpl = ConversationTemplate(tok, multi_turn=mode)
    samples = tmpl.segments(conv)
    assert len(samples) == (1 if mode == "joint" else len(conv.turns))
    for s_index, pieces in enumerate(samples):
        ids, labels, spans = _tokenize_segments(tok, tmpl, pieces)
        answers = [a for _, a in conv.turns] if mode == "joint" else [conv.turns[s_index][1]]
        assert len(spans) == len(answers)
        trained_positions = set()
        for (start, end), answer in zip(spans, answers):
            expected = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
            assert ids[start:end] == expected == labels[start:end]
            gp = tok(GEN_PROMPT, add_special_tokens=False)["input_ids"]
            assert ids[start - len(gp):start] == gp, "every answer follows the no-think generation prompt"
            assert all(x == -100 for x in labels[start - len(gp):start]), "the think block is prompt, not target"
            trained_positions.update(range(start, end))
        assert all(labels[i] == -100 for i in range(len(ids)) if i not in trained_positions)
        if mode == "expand":
            turn = s_index
            start = spans[0][0]
            history = conv.messages(upto=turn + 1, with_last_answer=False)
            assert ids[:start] == tok.apply_chat_template(history, tokenize=True, add_generation_prompt=True,
                                                          enable_thinking=False, return_dict=False)
        else:
            text = tok.decode(ids)
            for k, (start, _) in enumerate(spans):
                # Before answer k: the inference prompt, except that earlier answers keep their think block.
                prompt_k = tok.decode(ids[:start])
                inference = tok.apply_chat_template(conv.messages(upto=k + 1, with_last_answer=False),
                                                    tokenize=False, add_generation_prompt=True, enable_thinking=False)
                assert prompt_k.replace(EMPTY_THINK, "") == inference.replace(EMPTY_THINK, "")
                assert prompt_k.endswith(GEN_PROMPT) and inference.endswith(GEN_PROMPT)
            if len(conv.turns) == 1:
                assert text == tok.apply_chat_template(conv.messages(), tokenize=False, enable_thinking=False)


@pytest.mark.parametrize("mode", ["joint", "expand"])
def test_label_rule_hand_written(qwen3_tokenizer, mode):
    for conv in HAND_WRITTEN:
        _check_label_rule(qwen3_tokenizer, conv, mode)


@needs_shared
@pytest.mark.parametrize("mode", ["joint", "expand"])
def test_label_rule_on_real_huatuo_samples(qwen3_tokenizer, mode):
    for conv in _valid(_conversations_from_jsonl(HUATUO_1K, limit=300)):
        _check_label_rule(qwen3_tokenizer, conv, mode)


@pytest.mark.skipif(not DEMO_DIALOGUES.exists(), reason="demo dialogues not written yet")
@pytest.mark.parametrize("mode", ["joint", "expand"])
def test_label_rule_on_demo_dialogues_multi_turn_and_system(qwen3_tokenizer, mode):
    convs = _valid(_conversations_from_jsonl(DEMO_DIALOGUES))
    assert any(len(c.turns) > 1 for c in convs) and any(c.system for c in convs)
    for conv in convs:
        _check_label_rule(qwen3_tokenizer, conv, mode)


def test_single_turn_text_equals_apply_chat_template(qwen3_tokenizer):
    tmpl = ConversationTemplate(qwen3_tokenizer)
    for conv in HAND_WRITTEN[:2]:
        (pieces,) = tmpl.segments(conv)
        text = "".join(t + (tmpl.end_of_turn if trained else "") for t, trained in pieces)
        assert text == qwen3_tokenizer.apply_chat_template(conv.messages(), tokenize=False, enable_thinking=False)


def test_template_facts(qwen3_tokenizer):
    tmpl = ConversationTemplate(qwen3_tokenizer)
    assert tmpl.end_of_turn == "<|im_end|>"
    assert tmpl.end_of_turn_ids == [151645]
    assert tmpl.generation_prompt == GEN_PROMPT


def test_skeleton_escapes_braces():
    sk = Skeleton.parse("a{b}\ue000u0\ue001}}c")
    assert sk.fill({"u0": "{x}"}) == "a{b}{x}}}c"


def test_tokenizer_without_template_is_refused(qwen3_tokenizer):
    import copy

    tok = copy.deepcopy(qwen3_tokenizer)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        ConversationTemplate(tok)


def test_content_dependent_template_is_refused(qwen3_tokenizer):
    import copy

    tok = copy.deepcopy(qwen3_tokenizer)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | replace('内', 'N') }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match="content-dependent"):
        ConversationTemplate(tok).shape(False, 1)
