"""The benchmark readers against the layouts the benchmarks are published in, not only hand-made samples.

Each fixture has exactly the shape of the official files (columns, keys, cell conventions, file type),
with questions written for this project; the source of each shape is cited next to it. Every item of
every fixture must load.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medtune.data.mcq import load_items
from tests.conftest import CMMLU_DEV, needs_shared

# williamliujl/CMExam (README "Dataset Statistics"/"Annotation Characteristics", src/preprocess/generate_prompt.py):
# columns Question, Options, Answer, Explanation and five annotations; Options holds 'A text' lines, and in the
# official val file (an .xlsx) they are separated by the two characters backslash + 'n', not by a line break.
CMEXAM_HEADER = ["Question", "Options", "Answer", "Explanation", "Disease Group", "Clinical Department",
                 "Medical Discipline", "Competency", "Difficulty level"]
CMEXAM_ROWS = [
    ["成人缺铁性贫血最常见的原因是", "A 慢性失血\\nB 摄入不足\\nC 吸收障碍\\nD 需要量增加\\nE 遗传因素", "A",
     "成人缺铁多由慢性失血引起。", "血液系统疾病", "内科", "临床医学", "疾病诊断", 2],
    ["下列属于β-内酰胺类的药物有", "A 阿莫西林\\nB 头孢曲松\\nC 阿奇霉素\\nD 亚胺培南", "ABD",
     None, None, None, "药学", None, None],  # a multi-answer item; empty annotation cells
    ["正常成人安静时的心率范围是（次/分）", "A 40～60\\nB 60～100\\nC 100～120\\nD 120～140", "B",
     "正常为60～100次/分。", "循环系统疾病", "内科", "临床医学", "基础知识", 1],
]


def write_cmexam_xlsx(path: Path, rows: list[list]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(CMEXAM_HEADER)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def write_cmexam_csv(path: Path, rows: list[list], separator: str) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CMEXAM_HEADER)
        for row in rows:
            row = list(row)
            row[1] = row[1].replace("\\n", separator)
            writer.writerow(["" if v is None else v for v in row])
    return path


def check_cmexam(items, rejected, name, lines=(2, 3, 4)):
    assert rejected == []
    assert [(it.id, it.answer, it.subject, len(it.options)) for it in items] == [
        (f"{name}:{lines[0]}", "A", "临床医学", 5), (f"{name}:{lines[1]}", "ABD", "药学", 4),
        (f"{name}:{lines[2]}", "B", "临床医学", 4)]
    assert items[0].options == {"A": "慢性失血", "B": "摄入不足", "C": "吸收障碍", "D": "需要量增加", "E": "遗传因素"}
    assert items[2].options["B"] == "60～100"


def test_cmexam_official_xlsx_with_literal_backslash_n(tmp_path):
    path = write_cmexam_xlsx(tmp_path / "val.xlsx", CMEXAM_ROWS)
    check_cmexam(*load_items(path, "cmexam"), "val.xlsx")


@pytest.mark.parametrize("separator,lines", [("\\n", (2, 3, 4)), ("\n", (2, 7, 11)), ("\r\n", (2, 7, 11))],
                         ids=["literal-backslash-n", "line-break", "crlf"])
def test_cmexam_csv_with_either_separator(tmp_path, separator, lines):
    # A record's line is where it starts: with real line breaks inside the Options cells, records span lines.
    path = write_cmexam_csv(tmp_path / "val.csv", CMEXAM_ROWS, separator)
    check_cmexam(*load_items(path, "cmexam"), "val.csv", lines)


def test_cmexam_xlsx_rejections_name_the_spreadsheet_row(tmp_path):
    rows = CMEXAM_ROWS[:1] + [["题干", "A 只有一个选项", "A", None, None, None, None, None, None],
                              [None, "A 甲\\nB 乙", "A", None, None, None, None, None, None],  # no question
                              [None] * 9, ["题干", "A 甲\\nB 乙", "B", None, None, None, None, None, None]]
    items, rejected = load_items(write_cmexam_xlsx(tmp_path / "val.xlsx", rows), "cmexam")
    assert [it.id for it in items] == ["val.xlsx:2", "val.xlsx:6"]  # row 5 is empty
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (3, "options: 1 option(s); a multiple-choice question needs at least 2"), (4, "question: empty")]


def test_a_directory_of_xlsx_and_csv_files_reads_both(tmp_path):
    write_cmexam_xlsx(tmp_path / "val.xlsx", CMEXAM_ROWS)
    write_cmexam_csv(tmp_path / "test.csv", CMEXAM_ROWS, "\\n")
    items, rejected = load_items(tmp_path, "cmexam")
    assert rejected == [] and len(items) == 6 and {it.id.split(":")[0] for it in items} == {"val.xlsx", "test.csv"}


# haonan-li/CMMLU data/test/<subject>.csv: header ',Question,A,B,C,D,Answer', the first column the row index,
# RFC 4180 quoting with doubled quotes inside quoted cells, and options that keep a leading space (' 对称').
CMMLU_TEST_CSV = (',Question,A,B,C,D,Answer\n'
                  '0,"被称为""诗圣""的唐代诗人是",李白,杜甫,白居易,王维,B\n'
                  '1,下列属于我国四大名著的是,《聊斋志异》,《儒林外史》,《红楼梦》,《镜花缘》,C\n'
                  '2,摄影构图中表现稳定感常用,曲线,水平线,斜线, 对称,B\n'
                  '3,"提出""知行合一""的思想家是""",朱熹,王阳明,孟子,荀子,B\n')


def test_cmmlu_official_test_csv(tmp_path):
    (tmp_path / "arts.csv").write_text(CMMLU_TEST_CSV, encoding="utf-8")
    items, rejected = load_items(tmp_path, "cmmlu")
    assert rejected == []
    assert [(it.id, it.subject, it.answer) for it in items] == [
        ("arts.csv:2", "arts", "B"), ("arts.csv:3", "arts", "C"), ("arts.csv:4", "arts", "B"),
        ("arts.csv:5", "arts", "B")]
    assert items[0].question == '被称为"诗圣"的唐代诗人是' and items[2].options["D"] == " 对称"
    assert items[3].question == '提出"知行合一"的思想家是"'


@needs_shared
def test_cmmlu_real_dev_sample_loads_every_item():
    items, rejected = load_items(CMMLU_DEV, "cmmlu")
    assert rejected == [] and len(items) == 50 and len({it.subject for it in items}) == 10


# FreedomIntelligence/CMB README "CMB-Exam Item" and data/CMB-test-choice-answer.json: the test questions come
# without answers ({"id": 1, "exam_type", "exam_class", "exam_subject", "question", "question_type", "option"}),
# the answers in a separate list of {"id", "exam_type", "exam_class", "exam_subject", "question_type", "answer"}.
CMB_QUESTIONS = [
    {"id": 1, "exam_type": "医师考试", "exam_class": "规培结业", "exam_subject": "内科", "question_type": "单项选择题",
     "question": "治疗社区获得性肺炎门诊患者的首选药物类别是",
     "option": {"A": "青霉素类", "B": "抗真菌药", "C": "抗病毒药", "D": "糖皮质激素", "E": ""}},
    {"id": 2, "exam_type": "医师考试", "exam_class": "规培结业", "exam_subject": "儿科", "question_type": "多项选择题",
     "question": "小儿脱水的常见表现有", "option": {"A": "眼窝凹陷", "B": "尿量减少", "C": "皮肤弹性差", "D": "心率减慢",
                                        "E": ""}},
    {"id": 3, "exam_type": "护理考试", "exam_class": "护士执业资格", "exam_subject": "基础护理", "question_type": "单项选择题",
     "question": "成人肌内注射最常用的部位是", "option": {"A": "臀大肌", "B": "三角肌", "C": "股外侧肌", "D": "腹直肌",
                                          "E": "前臂"}},
]
CMB_ANSWERS = [{"id": 1, "exam_type": "医师考试", "exam_class": "规培结业", "exam_subject": "内科",
                "question_type": "单项选择题", "answer": "A"},
               {"id": 2, "exam_type": "医师考试", "exam_class": "规培结业", "exam_subject": "儿科",
                "question_type": "多项选择题", "answer": "ABC"},
               {"id": 3, "exam_type": "护理考试", "exam_class": "护士执业资格", "exam_subject": "基础护理",
                "question_type": "单项选择题", "answer": "A"}]


def test_cmb_test_questions_join_their_separate_answer_file(tmp_path):
    (tmp_path / "CMB-test-choice-question-merge.json").write_text(
        json.dumps(CMB_QUESTIONS, ensure_ascii=False, indent=4), encoding="utf-8")
    (tmp_path / "CMB-test-choice-answer.json").write_text(
        json.dumps(CMB_ANSWERS, ensure_ascii=False, indent=4), encoding="utf-8")
    items, rejected = load_items(tmp_path, "cmb")
    assert rejected == []
    assert [(it.subject, it.answer, it.multi, len(it.options)) for it in items] == [
        ("内科", "A", False, 4), ("儿科", "ABC", True, 4), ("基础护理", "A", False, 5)]


def test_cmb_test_questions_without_their_answer_file_are_rejected_with_the_reason(tmp_path):
    path = tmp_path / "CMB-test-choice-question-merge.json"
    path.write_text(json.dumps(CMB_QUESTIONS, ensure_ascii=False, indent=4), encoding="utf-8")
    items, rejected = load_items(path, "cmb")
    assert items == [] and len(rejected) == 3
    assert "CMB-test-choice-answer.json" in rejected[0]["reason"]


def test_cmb_val_file_with_answers_in_place(tmp_path):
    # CMB-val-merge.json: the README item shape, answers (and explanations) in place.
    records = [{**q, "answer": a["answer"], "explanation": "略"} for q, a in zip(CMB_QUESTIONS, CMB_ANSWERS)]
    path = tmp_path / "CMB-val-merge.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=4), encoding="utf-8")
    items, rejected = load_items(path, "cmb")
    assert rejected == [] and [it.answer for it in items] == ["A", "ABC", "A"]


# jind11/MedQA (README; data_clean/questions/US/{train,dev,test}.jsonl, US/4_options/phrases_no_exclude_*.jsonl,
# Mainland/*.jsonl): one JSON object a line, keys question, answer (the text), options {A..E or A..D},
# meta_info and answer_idx; the 4-option files add metamap_phrases.
MEDQA_US = {"question": "A 45-year-old man has crushing chest pain for 1 hour. Which test should be done first?",
            "answer": "Electrocardiogram", "options": {"A": "Chest CT", "B": "Electrocardiogram",
                                                      "C": "Colonoscopy", "D": "Bone scan", "E": "Spirometry"},
            "meta_info": "step2&3", "answer_idx": "B"}
MEDQA_US_4 = {"question": "Which vitamin deficiency causes scurvy?", "answer": "Vitamin C",
              "options": {"A": "Vitamin A", "B": "Vitamin B1", "C": "Vitamin C", "D": "Vitamin D"},
              "meta_info": "step1", "answer_idx": "C", "metamap_phrases": ["vitamin deficiency", "scurvy"]}
MEDQA_MAINLAND = {"question": "维生素B1缺乏可引起", "answer": "脚气病",
                  "options": {"A": "夜盲症", "B": "脚气病", "C": "佝偻病", "D": "坏血病", "E": "癞皮病"},
                  "meta_info": "卫生学", "answer_idx": "B"}


@pytest.mark.parametrize("name,records", [
    ("test.jsonl", [MEDQA_US]), ("phrases_no_exclude_test.jsonl", [MEDQA_US_4]), ("mainland_test.jsonl",
                                                                                   [MEDQA_MAINLAND])])
def test_medqa_official_layouts(tmp_path, name, records):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    items, rejected = load_items(path, "medqa")
    assert rejected == []
    assert [(it.answer, it.subject, len(it.options)) for it in items] == [
        (r["answer_idx"], r["meta_info"], len(r["options"])) for r in records]
