"""Multiple-choice files -> validated items: CMMLU CSV, CMExam CSV/XLSX, CMB-Exam JSON, MedQA JSONL, medtune mcq JSONL.

Each loader takes a file or a directory of such files and returns `(items, rejected)`. A row that cannot
be used is never an exception and never silently dropped: it comes back in `rejected` with its file,
1-based line and the reason. Tolerated quirks: a UTF-8 BOM, full-width letters and punctuation
('Ｂ', 'Ａ．'), answers written 'A.', 'a', 'A、C' or ' B ', surrounding whitespace, and in CMB an
empty trailing option (`"E": ""`). Rejected: an empty question, a missing option in the middle, an unknown or
missing answer letter, a row with the wrong number of columns.

Layouts (as published):
- cmmlu  (haonan-li/CMMLU): CSV, header `,Question,A,B,C,D,Answer` (first column the row index); the
  subject is the file stem, a directory of CSVs is many subjects.
- cmexam (williamliujl/CMExam): CSV or .xlsx (the official validation file is an .xlsx) with Question,
  Options, Answer ('A' or 'ABD'), Explanation and five annotation columns; the subject is `Medical
  Discipline` when present, else the file stem. Options are 'A 选项' lines, separated by a line break or,
  as in the official files, by the two characters backslash and 'n'.
- cmb    (FreedomIntelligence/CMB): a JSON list (or JSONL) of {exam_type, exam_class, exam_subject,
  question, answer ('C' or 'ACD'), question_type ('单项选择题'|'多项选择题'), option {"A": ...}}. CMB-test
  publishes its answers in a separate file (CMB-test-choice-answer.json: a list of {id, answer, ...}
  without questions): a directory holding both is joined on `id`.
- medqa  (jind11/MedQA, US and mainland, 5- and 4-option): JSONL of {question, options {"A": ...},
  answer_idx, answer, meta_info} (the 4_options files add metamap_phrases).
- mcq    (medtune's own, e.g. GRPO training items): JSONL of {question, options {"A": ...} or a list in letter
  order, answer ('B' or 'AC'), optional subject, optional multi (true/false; absent = not stated)}.
  Not a published benchmark layout, so `FORMATS` (what `evaluate bench` scores) leaves it out.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from medtune.data.questions import RowError
from medtune.errors import UserError
from medtune.text import answer_only

FORMATS = ("cmmlu", "cmexam", "cmb", "medqa")
ITEM_FORMATS = FORMATS + ("mcq",)
"""Every layout `load_items` reads: the published benchmark layouts and medtune's own question/options/answer JSONL."""
LETTERS = "ABCDEFGHIJ"
SUFFIXES = {"cmmlu": (".csv", ".xlsx"), "cmexam": (".csv", ".xlsx"), "cmb": (".json", ".jsonl"),
            "medqa": (".jsonl", ".json"), "mcq": (".jsonl", ".json")}

# The Chinese subject names of lm-evaluation-harness's cmmlu tasks (their prompt says "以下是关于{name}的...").
CMMLU_SUBJECTS_ZH = {
    "agronomy": "农学", "anatomy": "解剖学", "ancient_chinese": "古汉语", "arts": "艺术学", "astronomy": "天文学",
    "business_ethics": "商业伦理", "chinese_civil_service_exam": "中国公务员考试", "chinese_driving_rule": "中国驾驶规则",
    "chinese_food_culture": "中国饮食文化", "chinese_foreign_policy": "中国外交政策", "chinese_history": "中国历史",
    "chinese_literature": "中国文学", "chinese_teacher_qualification": "中国教师资格", "clinical_knowledge": "临床知识",
    "college_actuarial_science": "大学精算学", "college_education": "大学教育学",
    "college_engineering_hydrology": "大学工程水文学", "college_law": "大学法律", "college_mathematics": "大学数学",
    "college_medical_statistics": "大学医学统计", "college_medicine": "大学医学", "computer_science": "计算机科学",
    "computer_security": "计算机安全", "conceptual_physics": "概念物理学",
    "construction_project_management": "建设工程管理", "economics": "经济学", "education": "教育学",
    "electrical_engineering": "电气工程", "elementary_chinese": "小学语文", "elementary_commonsense": "小学常识",
    "elementary_information_and_technology": "小学信息技术", "elementary_mathematics": "初等数学", "ethnology": "民族学",
    "food_science": "食品科学", "genetics": "遗传学", "global_facts": "全球事实", "high_school_biology": "高中生物",
    "high_school_chemistry": "高中化学", "high_school_geography": "高中地理", "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理学", "high_school_politics": "高中政治", "human_sexuality": "人类性行为",
    "international_law": "国际法学", "journalism": "新闻学", "jurisprudence": "法理学",
    "legal_and_moral_basis": "法律与道德基础", "logical": "逻辑学", "machine_learning": "机器学习", "management": "管理学",
    "marketing": "市场营销", "marxist_theory": "马克思主义理论", "modern_chinese": "现代汉语", "nutrition": "营养学",
    "philosophy": "哲学", "professional_accounting": "专业会计", "professional_law": "专业法学",
    "professional_medicine": "专业医学", "professional_psychology": "专业心理学", "public_relations": "公共关系",
    "security_study": "安全研究", "sociology": "社会学", "sports_science": "体育学",
    "traditional_chinese_medicine": "中医中药", "virology": "病毒学", "world_history": "世界历史",
    "world_religions": "世界宗教",
}


@dataclass(frozen=True)
class Item:
    """One scorable multiple-choice question."""

    id: str
    """Stable across runs: '<file relative to the data path>:<line>' (paired tests match on it)."""
    subject: str
    question: str
    options: dict[str, str]
    """Letter -> option text, contiguous from 'A', texts as in the file (prompts must match lm-eval's)."""
    answer: str
    """Gold letters, sorted: 'B', or 'ACD' for a multi-answer item."""
    multi: bool | None
    """What the file says about the question type: True multi-answer, False single, None not stated."""
    source: str
    """'<absolute file path>:<line>': where it came from (a few-shot example is never also scored)."""


def load_items(path: str | Path, format: str) -> tuple[list[Item], list[dict]]:
    """Items and rejected rows ({file, line, reason}) from a file or a directory of files of one format."""
    if format not in ITEM_FORMATS:
        raise UserError(f"unknown multiple-choice format '{format}'; choose one of {', '.join(ITEM_FORMATS)}")
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES[format])
        if not files:
            raise UserError(f"{root}: no {'/'.join(SUFFIXES[format])} files for format '{format}'")
    elif root.is_file():
        files = [root]
    else:
        raise UserError(f"benchmark data not found: {root}")
    read = {"cmmlu": _read_cmmlu, "cmexam": _read_cmexam, "cmb": _read_cmb, "medqa": _read_medqa,
            "mcq": _read_mcq}[format]
    if format == "cmb":
        answers, key_files = _cmb_answer_key(files)
        files = [f for f in files if f not in key_files]
        read = partial(_read_cmb, answers=answers)
    items, rejected = [], []
    for file in files:
        name = file.relative_to(root).as_posix() if root.is_dir() else file.name
        for line, row in read(file):
            try:
                if isinstance(row, RowError):
                    raise row
                items.append(_validated(row, format, f"{name}:{line}", f"{file.resolve()}:{line}", file.stem))
            except RowError as e:
                rejected.append({"file": str(file), "line": line, "reason": str(e)})
    return items, rejected


# -- reading rows (each yields (line, dict) or (line, RowError)) --

def _open_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM
    except UnicodeDecodeError as e:
        raise UserError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); convert the file to UTF-8") from None


def _table_rows(file: Path):
    """(line, {column: value}) for every record of a CSV or .xlsx table (the first row is the header)."""
    records = _xlsx_records(file) if file.suffix.lower() == ".xlsx" else _csv_records(_open_text(file))
    first = next(records, None)
    if first is None:
        return
    header = [h.strip() for h in first[1]]
    for line, values in records:
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield line, RowError(f"{len(values)} columns, the header has {len(header)}")
            continue
        yield line, dict(zip(header, values))


def _csv_records(text: str):
    """(line where the record starts, values); quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))  # as open(newline=""): quoted newlines kept
    start = 1
    for values in reader:
        yield start, values
        start = reader.line_num + 1


def _xlsx_records(file: Path):
    """(spreadsheet row number, cell texts) of the first sheet, trailing empty cells dropped."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(file, read_only=True, data_only=True)
    except Exception as e:  # a broken file raises zipfile, KeyError or openpyxl's own errors
        raise UserError(f"{file}: cannot read it as an .xlsx workbook ({type(e).__name__}: {e})") from None
    try:
        sheet = book.worksheets[0]
        # Read-only sheets yield every row from min_row on, empty ones too, so the count is the row number
        # (an empty cell carries no row number of its own).
        rows = [(number, [_cell_text(v) for v in values])
                for number, values in enumerate(sheet.iter_rows(values_only=True), sheet.min_row or 1)]
    finally:
        book.close()
    width = 0
    for line, values in rows:
        while values and not values[-1]:  # formatted but empty cells past the table
            values.pop()
        width = width or len(values)  # the header's width: rows with empty last cells are padded to it
        yield line, values + [""] * (width - len(values))


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel keeps numbers as floats: 3 is 3.0
    return str(value)


def _read_cmmlu(file: Path):
    for line, row in _table_rows(file):
        if not isinstance(row, RowError):
            missing = [c for c in ("Question", "A", "B", "C", "D", "Answer") if c not in row]
            if missing:
                raise UserError(f"{file}: not the CMMLU layout (header ',Question,A,B,C,D,Answer'); "
                                f"missing column(s) {', '.join(missing)}")
            row = {"question": row["Question"], "options": {k: row[k] for k in "ABCD"}, "answer": row["Answer"]}
        yield line, row


def _read_cmexam(file: Path):
    for line, row in _table_rows(file):
        if not isinstance(row, RowError):
            missing = [c for c in ("Question", "Options", "Answer") if c not in row]
            if missing:
                raise UserError(f"{file}: not the CMExam layout (columns Question, Options, Answer, ...); "
                                f"missing column(s) {', '.join(missing)}")
            try:
                options = _split_options(row["Options"])
            except RowError as e:
                yield line, e
                continue
            row = {"question": row["Question"], "options": options, "answer": row["Answer"],
                   "subject": row.get("Medical Discipline")}
        yield line, row


_OPTION_SEPARATOR = re.compile(r"\s*[.:、)．：）]?\s*")


def _split_options(text: str) -> dict[str, str]:
    """CMExam's 'A 选项\\nB 选项' string -> {letter: text} (only the label is normalised, never the text).

    The official files separate the options with the two characters backslash and 'n', not a line
    break; both are read.
    """
    options = {}
    for raw in text.replace("\\r\\n", "\n").replace("\\n", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        letter = unicodedata.normalize("NFKC", line[0]).upper()
        if letter not in LETTERS:
            raise RowError(f"Options: cannot read the option line {line[:30]!r} (expected 'A text')")
        if letter in options:
            raise RowError(f"Options: option {letter} appears twice")
        options[letter] = line[_OPTION_SEPARATOR.match(line, 1).end():].strip()
    return options


def json_records(file: Path):
    """(line, object) from a JSON list or from JSONL; the line is where the object starts."""
    text = _open_text(file)
    if text.lstrip().startswith("["):
        decoder, pos = json.JSONDecoder(), text.index("[") + 1
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                return
            line = text.count("\n", 0, pos) + 1
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise UserError(f"{file}:{e.lineno}: invalid JSON ({e.msg}); the rest of the file cannot be read")
            yield line, obj
    for line, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as e:
                yield line, RowError(f"invalid JSON: {e.msg}")


def _json_objects(file: Path):
    for line, obj in json_records(file):
        yield line, obj if isinstance(obj, (dict, RowError)) else RowError("not a JSON object")


def _cmb_answer_key(files: list[Path]) -> tuple[dict[str, object], set[Path]]:
    """({id: answer}, the files that hold them): CMB-test's answer file has ids and answers, no questions."""
    answers, key_files = {}, set()
    for file in files:
        records = [obj for _, obj in json_records(file) if isinstance(obj, dict)]
        if records and all("question" not in r and "answer" in r and "id" in r for r in records):
            key_files.add(file)
            answers.update((str(r["id"]), r["answer"]) for r in records)
    return answers, key_files


def _read_cmb(file: Path, answers: dict[str, object]):
    for line, obj in _json_objects(file):
        if not isinstance(obj, RowError):
            options = obj.get("option")
            if isinstance(options, dict):  # CMB pads some questions with empty trailing options ("E": "")
                options = dict(sorted(options.items()))
                while options and not str(options[next(reversed(options))] or "").strip():
                    options.popitem()
            answer = obj.get("answer")
            if answer is None and "id" in obj:
                answer = answers.get(str(obj["id"]))
                if answer is None:
                    yield line, RowError(f"answer: missing, and id {obj['id']} is in no answer file (CMB-test keeps "
                                         "its answers in CMB-test-choice-answer.json: put it in the same directory)")
                    continue
            obj = {"question": obj.get("question"), "options": options, "answer": answer,
                   "subject": obj.get("exam_subject") or obj.get("exam_class"),
                   "multi": {"多项选择题": True, "单项选择题": False}.get(obj.get("question_type"))}
        yield line, obj


def _read_medqa(file: Path):
    for line, obj in _json_objects(file):
        if not isinstance(obj, RowError):
            options = obj.get("options")
            if isinstance(options, list):  # some MedQA exports list the options in letter order
                options = dict(zip(LETTERS, options))
            obj = {"question": obj.get("question"), "options": options, "answer": obj.get("answer_idx"),
                   "answer_text": obj.get("answer"), "subject": obj.get("meta_info"), "multi": False}
        yield line, obj


def _read_mcq(file: Path):
    for line, obj in _json_objects(file):
        if not isinstance(obj, RowError):
            options, multi = obj.get("options"), obj.get("multi")
            if isinstance(options, list) and len(options) > len(LETTERS):
                obj = RowError(f"options: {len(options)} options; at most {len(LETTERS)} (A-J)")
            elif multi is not None and not isinstance(multi, bool):
                obj = RowError(f"multi: {multi!r} is not true or false")
            else:
                if isinstance(options, list):
                    options = dict(zip(LETTERS, options))
                obj = {"question": obj.get("question"), "options": options, "answer": obj.get("answer"),
                       "subject": obj.get("subject"), "multi": multi}
        yield line, obj


# -- validation shared by all layouts --

def _validated(row: dict, format: str, item_id: str, source: str, stem: str) -> Item:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RowError("question: empty")
    options = _validated_options(row.get("options"))
    answer = normalise_answer(row.get("answer"), options)
    answer_text = row.get("answer_text")
    if isinstance(answer_text, str) and answer_text.strip() and answer_text.strip() != options[answer].strip():
        raise RowError(f"answer: the text {answer_text.strip()[:30]!r} is not option {answer} "
                       f"({options[answer].strip()[:30]!r})")
    multi = row.get("multi")
    if multi is False and len(answer) > 1:
        raise RowError(f"answer: {len(answer)} letters ({answer}) for a single-answer question")
    subject = row.get("subject")
    subject = subject.strip() if isinstance(subject, str) and subject.strip() else stem
    if format == "cmmlu":
        multi = False
    return Item(item_id, subject, question, options, answer, multi, source)


def _validated_options(options) -> dict[str, str]:
    if not isinstance(options, dict) or not options:
        raise RowError("options: missing")
    cleaned = {}
    for key, text in options.items():
        letter = unicodedata.normalize("NFKC", str(key)).strip().upper()
        if letter not in LETTERS:
            raise RowError(f"options: unknown option key {key!r}")
        cleaned[letter] = "" if text is None else str(text)
    letters = sorted(cleaned)
    for expected, letter in zip(LETTERS, letters):
        if letter != expected:
            raise RowError(f"options: option {expected} is missing")
        if not cleaned[letter].strip():
            raise RowError(f"options: option {letter} is empty")
    if len(letters) < 2:
        raise RowError(f"options: {len(letters)} option(s); a multiple-choice question needs at least 2")
    return {letter: cleaned[letter] for letter in letters}


_ANSWER_SEPARATORS = re.compile(r"[\s.,;、，。；]+")


def normalise_answer(raw, options: dict[str, str]) -> str:
    """'Ａ．', 'a', ' B ', 'A、C' -> 'A', 'A', 'B', 'AC'; RowError for a missing or unknown letter."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RowError("answer: missing")
    text = _ANSWER_SEPARATORS.sub("", unicodedata.normalize("NFKC", str(raw))).upper()
    if not text or not text.isascii() or not text.isalpha():
        raise RowError(f"answer: {str(raw).strip()[:20]!r} is not option letters")
    unknown = sorted(set(text) - set(options))
    if unknown:
        raise RowError(f"answer: {''.join(unknown)} is not one of the options {''.join(options)}")
    return "".join(sorted(set(text)))


_CJK = re.compile(r"[\u4e00-\u9fff]")


def is_chinese(item: Item) -> bool:
    return bool(_CJK.search(item.question + "".join(item.options.values())))


def description(item: Item, format: str) -> str:
    if not is_chinese(item):
        return "The following are multiple choice questions (with answers) about medicine.\n\n"
    name = CMMLU_SUBJECTS_ZH.get(item.subject, item.subject) if format == "cmmlu" else item.subject
    kind = {False: "单项选择题", True: "多项选择题", None: "选择题（可能有多个正确选项）"}[item.multi]
    return f"以下是关于{name}的{kind}，请直接给出正确答案的选项。\n\n"


def question_text(item: Item) -> str:
    """lm-eval's doc_to_text: the stripped question, 'A. text' lines, then the answer cue."""
    cue = "答案：" if is_chinese(item) else "Answer:"
    return "\n".join([item.question.strip()] + [f"{k}. {v}" for k, v in item.options.items()]) + "\n" + cue


def build_prompt(item: Item, shots: list[Item], format: str) -> str:
    # lm-eval: target delimiter " " after each example's cue, fewshot delimiter "\n\n" after its answer.
    examples = "".join(f"{question_text(s)} {s.answer}\n\n" for s in shots)
    return description(item, format) + examples + question_text(item)


_LETTER_RUN = r"([A-J](?:\s*(?:[、,/和及与]|and)?\s*[A-J])*)"


# What may follow an answer: the end, whitespace, punctuation or '项'; not a letter, digit or other word.
_AFTER = r"(?=$|[\s.,;:!?)\]、。；！？*\"'”」』]|项)"


_CUE = re.compile(r"(?:正确答案|最佳答案|参考答案|答案|正确选项|[Aa]nswer)\s*(?:应该是|应该为|应是|应为|应选|是|为|选|is)?"
                  r"\s*:?\s*\(?" + _LETTER_RUN + r"\)?" + _AFTER)


_CHOOSE = re.compile(r"选(?:择)?\s*\(?" + _LETTER_RUN + r"\)?" + _AFTER)


_LEADING = re.compile(r"^\s*\(?" + _LETTER_RUN + r"\)?" + _AFTER)


def extract_choice(reply: str, letters: str = "ABCD") -> str | None:
    """The answer letters in a model's reply ('B', or 'AC' sorted), or None when unsure.

    Looks, in order, for an explicit answer ('答案是B', '正确答案：A、C', 'The answer is (C)'), a choice
    ('选B', '应选择D'), then a reply that starts with the letters ('B. xxx', '(C)', 'ACD'). The first kind
    found decides; when its mentions disagree, or name a letter that is not an option, the reply is not
    read (None): a failure is counted, never guessed. Thinking text is removed first.
    """
    text = unicodedata.normalize("NFKC", answer_only(reply))  # full-width Ｂ（）： -> B():
    for pattern in (_CUE, _CHOOSE, _LEADING):
        found = {"".join(sorted(set(re.sub(r"[^A-J]", "", m.group(1))))) for m in pattern.finditer(text)}
        if found:
            if len(found) > 1:
                return None
            answer = found.pop()
            return answer if set(answer) <= set(letters) else None
    return None
