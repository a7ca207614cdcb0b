"""Every sentence, heading and label of the report, in Chinese and English, in one table.

`Text(lang)("key", **values)` picks the language and fills the values (already formatted numbers).
Sections and rules name keys; nothing else in the report holds prose, so the two languages cannot
drift apart in content. A value of type `Key` is itself translated; a list is joined.
"""

from __future__ import annotations

LANGS = ("zh", "en")


class Key(str):
    """A value that is a key of STRINGS: translated when the sentence is built."""


# key: (Chinese, English)
STRINGS: dict[str, tuple[str, str]] = {
    # ---- frame
    "title": ("训练报告：{name}", "Training report: {name}"),
    "subtitle": ("运行目录 `{name}` · 生成于 {time} · 本报告只读取运行目录中的文件，所有数字都来自这些文件",
                 "Run directory `{name}` · generated {time} · this report reads only the files in the run directory; "
                 "every figure comes from them"),
    "sec.overview": ("概览", "Overview"),
    "sec.conclusions": ("结论", "Conclusions"),
    "sec.checks": ("自检", "Self-checks"),
    "sec.data": ("数据", "Data"),
    "sec.config": ("配置", "Configuration"),
    "sec.batch": ("有效批大小", "Effective batch size"),
    "sec.timeline": ("时间线", "Timeline"),
    "sec.training": ("训练过程", "Training"),
    "sec.metrics": ("最终指标", "Final metrics"),
    "sec.params": ("可训练参数", "Trainable parameters"),
    "sec.outputs": ("输出文件", "Output files"),
    "sec.compare": ("模型对比", "Model comparison"),
    "sec.examples": ("示例回答", "Example answers"),
    "sec.benchmarks": ("医学基准", "Medical benchmarks"),
    "sec.judge": ("LLM 评审", "LLM judge"),
    "sec.safety": ("安全探测", "Safety probe"),
    "sec.repro": ("可复现性", "Reproducibility"),
    "sec.contamination": ("污染检查", "Contamination check"),
    "sec.alignment": ("对齐（偏好 / 强化学习）", "Alignment (preference / RL)"),
    "al.algorithm": ("算法", "Algorithm"),
    "al.reference": ("参考模型", "Reference model"),
    "al.ref.sft": ("SFT 模型（其适配器的冻结副本）", "the SFT model (a frozen copy of its adapter)"),
    "al.ref.base": ("基座模型（没有完成的 train 阶段）", "the base model (no finished train stage)"),
    "al.steps": ("优化步数", "Optimizer steps"),
    "al.data": ("数据", "Data"),
    "al.data_counts": ("读取 {read} 条，保留 {kept} 条，训练行 {rows}", "{read} read, {kept} kept, {rows} training rows"),
    "al.lengths": ("chosen / rejected 长度中位数（字符）", "Median length chosen / rejected (characters)"),
    "al.length_pair": ("{chosen} / {rejected}", "{chosen} / {rejected}"),
    "al.loss": ("损失（首个 → 最后记录）", "Loss (first → last logged)"),
    "al.self_pairs": ("自建偏好对", "Self-made pairs"),
    "al.self_pairs_counts": ("{prompts} 个训练提示，保留 {kept} 对（`align/pairs_summary.json`）",
                             "{prompts} training prompts, {kept} pairs kept (`align/pairs_summary.json`)"),
    "al.no_curves": ("`align/metrics.jsonl` 中没有可画的曲线。", "`align/metrics.jsonl` has no curve to plot."),
    "plot.al.loss": ("对齐损失", "Alignment loss"),
    "plot.al.margin": ("奖励差（chosen − rejected）", "Reward margin (chosen − rejected)"),
    "plot.al.acc": ("奖励准确率", "Reward accuracy"),
    "plot.al.kl": ("KL", "KL"),
    "plot.al.reward": ("平均奖励", "Mean reward"),
    "plot.al.zero_std": ("奖励全相同的组占比", "Share of groups with all-equal rewards"),
    "plot.al.extract": ("答案提取失败占比", "Share of replies with no clear answer"),
    "al.c.grpo": ("对齐（GRPO）：训练题上的平均奖励从 {first} 变为 {last}（首个对最后一个记录步）；平均 {zero} 的组内奖励全相同"
                  "（这些组不产生梯度）。训练题上奖励上升不能说明模型在评测上变好，见下面的配对检验。",
                  "Alignment (GRPO): the mean reward on the training items went from {first} to {last} (first vs last "
                  "logged step); on average {zero} of the groups had all-equal rewards (they carry no gradient). A "
                  "rising training reward does not show that the model improved on the evaluation: see the paired "
                  "tests below."),
    "al.c.grpo_flat": ("对齐（GRPO）：平均 {zero} 的组内奖励全相同，几乎没有梯度（题目对模型太难或太易）；平均奖励 {first} → {last}。",
                       "Alignment (GRPO): on average {zero} of the groups had all-equal rewards, so there was almost no "
                       "gradient (the items are too hard or too easy for the model); mean reward {first} → {last}."),
    "al.c.noreward": ("对齐（GRPO）：`align/metrics.jsonl` 中没有记录奖励，无证据。",
                      "Alignment (GRPO): no reward logged in `align/metrics.jsonl`; no evidence."),
    "plot.al.caption": ("来自 `align/metrics.jsonl` 的 `{metric}`，按优化步。", "`{metric}` from `align/metrics.jsonl`, by optimizer step."),
    "al.c.margin": ("对齐：最后记录的奖励差为 {margin}（奖励准确率 {acc}）；大于 0 表示策略比参考模型更偏好 chosen 回答。",
                    "Alignment: the last logged reward margin is {margin} (reward accuracy {acc}); above 0 means the "
                    "policy prefers the chosen answers more than the reference does."),
    "al.c.nomargin": ("对齐：`align/train_results.json` 中没有奖励差，无法判断偏好是否学到。",
                      "Alignment: no reward margin in `align/train_results.json`; no evidence either way that the "
                      "preference was learned."),
    "al.c.noarms": ("对齐：评估中没有对齐模型与 SFT 模型的对比（`adapter: run:align` 与 `adapter: run`），无法说对齐是否有帮助。",
                    "Alignment: the evaluation has no aligned-vs-SFT comparison (`adapter: run:align` and "
                    "`adapter: run`), so there is no evidence that alignment helped."),
    "al.c.nobench": ("对齐：{a} 与 {b} 没有配对的基准检验，准确率方面无证据。",
                     "Alignment: no paired benchmark test between {a} and {b}; no evidence on accuracy."),
    "al.c.nojudge": ("对齐：没有 {a} 对 {b} 的 LLM 评审结果，回答质量方面无证据。",
                     "Alignment: no LLM-judge result for {a} vs {b}; no evidence on answer quality."),
    "al.c.length": ("对齐：{a} 的回答长度中位数是 {b} 的 {ratio} 倍（{ma} 对 {mb} 个词元）；评审胜率需结合长度看。",
                    "Alignment: {a}'s median answer is {ratio}x as long as {b}'s ({ma} vs {mb} tokens); read judge win "
                    "rates with length in mind."),
    "al.c.nolength": ("对齐：没有 {a} 与 {b} 的回答，无法比较长度。", "Alignment: no answers of {a} and {b} to compare lengths."),
    "al.c.safety_ok": ("对齐：安全探测没有退步的证据（{a} {ra}，{b} {rb}，区间有重叠或更高）。",
                       "Alignment: no evidence of a safety regression ({a} {ra}, {b} {rb}; the intervals overlap or "
                       "the aligned one is higher)."),
    "al.c.safety_worse": ("对齐：安全探测退步：{a} 的通过率 {ra} 的 Wilson 区间整体低于 {b} 的 {rb}。",
                          "Alignment: safety regressed: {a}'s pass rate {ra} has a Wilson interval wholly below {b}'s "
                          "{rb}."),
    "al.c.nosafety": ("对齐：没有 {a} 与 {b} 的安全探测结果，无证据。",
                      "Alignment: no safety-probe result for {a} and {b}; no evidence."),
    "sec.failed": ("本节无法生成（{error}）；其余各节不受影响。请检查对应文件是否符合 docs/run-directory.md。",
                   "This section could not be built ({error}); the other sections are unaffected. Check that its "
                   "files follow docs/run-directory.md."),

    # ---- files and stages
    "file.missing": ("未运行：找不到 `{file}`（{stage} 阶段没有运行或没有完成）。",
                     "Not run: `{file}` was not found (the {stage} stage has not run or did not finish)."),
    "file.missing_any": ("未运行：找不到 `{file}`（还没有任何阶段运行过）。",
                         "Not run: `{file}` was not found (no stage has run yet)."),
    "file.unreadable": ("无法读取 `{file}`：{error}。本节依赖该文件的内容未显示。",
                        "Could not read `{file}`: {error}. What this section needs from it is not shown."),
    "file.skipped": ("`{file}` 中有 {n} 行无法使用，已跳过：{lines}。",
                     "{n} line(s) of `{file}` could not be used and were skipped: {lines}."),
    "stage.prepare": ("prepare", "prepare"),
    "stage.train": ("train", "train"),
    "stage.align": ("align", "align"),
    "stage.evaluate": ("evaluate", "evaluate"),
    "status.done": ("已完成", "finished"),
    "status.missing": ("未运行", "not run"),
    "status.unreadable": ("文件无法读取", "file unreadable"),
    "status.incomplete": ("未完成", "incomplete"),
    "status.incomplete_why": ("有 {found}，但没有 `train_results.json`", "{found} present, but no `train_results.json`"),
    "status.done_parts": ("已运行：{parts}", "ran: {parts}"),
    "ev.perplexity": ("困惑度", "perplexity"),
    "ev.compare": ("模型对比", "comparison"),
    "ev.benchmarks": ("基准（{n} 个文件）", "benchmarks ({n} files)"),
    "ev.judge": ("LLM 评审", "LLM judge"),
    "ev.metrics": ("参考指标", "reference metrics"),
    "ev.safety": ("安全探测", "safety probe"),

    "paren": ("{a}（{b}）", "{a} ({b})"),

    # ---- table headers
    "col.item": ("项目", "Item"),
    "col.value": ("值", "Value"),
    "col.stage": ("阶段", "Stage"),
    "col.status": ("状态", "Status"),
    "col.evidence": ("依据", "Evidence"),
    "col.check": ("检查", "Check"),
    "col.result": ("结果", "Result"),
    "col.detail": ("说明", "Detail"),
    "col.count": ("数量", "Count"),
    "col.share_of_read": ("占读取数", "Share of read"),
    "col.param": ("参数", "Setting"),
    "col.configured": ("配置值", "Configured"),
    "col.ran": ("实际运行", "What ran"),
    "col.phase": ("阶段", "Phase"),
    "col.start": ("开始", "Start"),
    "col.end": ("结束", "End"),
    "col.duration": ("用时", "Duration"),
    "col.step": ("步", "Step"),
    "col.metric": ("指标", "Metric"),
    "col.source": ("来源", "Source"),
    "col.file": ("文件", "File"),
    "col.size": ("大小", "Size"),
    "col.what": ("内容", "What it is"),

    # ---- overview
    "ov.goal": ("目标：用 LoRA 把 {base} 微调成医疗问答助手，训练数据来自 {data}。",
                "Goal: fine-tune {base} with LoRA into a medical question-answering assistant, on data from {data}."),
    "ov.goal_unknown": ("目标：未知（没有 `config.yaml` 也没有 `adapter_config.json`，不知道基座模型和数据）。",
                        "Goal: unknown (no `config.yaml` and no `adapter_config.json`, so neither the base model "
                        "nor the data is known)."),
    "ov.base": ("基座模型", "Base model"),
    "ov.method": ("方法", "Method"),
    "ov.lora": ("LoRA（r = {r}，alpha = {alpha}，dropout = {dropout}），目标模块 {targets}",
                "LoRA (r = {r}, alpha = {alpha}, dropout = {dropout}) on {targets}"),
    "ov.lora_full": ("；另外完整训练 {modules}", "; {modules} also trained in full"),
    "ov.data": ("数据", "Data"),
    "ov.data_counts": ("训练 {train} 条，验证 {val} 条，最大长度 {max_length} tokens",
                       "{train} training and {val} validation samples, max length {max_length} tokens"),
    "ov.training": ("训练", "Training"),
    "ov.training_value": ("{epochs} 个 epoch，{steps} 个优化步，用时 {time}",
                          "{epochs} epochs, {steps} optimizer steps, {time}"),
    "ov.hardware": ("硬件", "Hardware"),

    # ---- conclusions
    "c.intro": ("每条结论都按写明的规则从本运行的数字得出；输入缺失时写“无证据”，数量不足时写“太少”，不作推断。",
                "Each conclusion follows from this run's figures by the rule it states; where inputs are missing it "
                "says so (no evidence), and where they are too few it draws nothing (too few)."),
    "c.bullet": ("**{verdict}**：{text}", "**{verdict}**: {text}"),
    "verdict.flag": ("需注意", "Attention"),
    "verdict.supported": ("有依据", "Supported"),
    "verdict.not_supported": ("不成立", "Not shown"),
    "verdict.too_few": ("太少", "Too few"),
    "verdict.no_evidence": ("无证据", "No evidence"),
    "verdict.info": ("事实", "Fact"),
    "c.checks.flag": ("自检发现 {n} 处不一致：{names}（见“自检”）。依赖这些数字的说法（包括原始报告中的）需要核对。",
                      "The self-checks found {n} disagreement(s): {names} (see Self-checks). Any statement resting on "
                      "these figures, including the original report's, needs checking."),
    "c.checks.ok": ("自检中能检查的 {n} 项全部一致。", "All {n} self-checks that could be run agree."),
    "c.data.none": ("数据：没有 `data/stats.json`，无法判断数据质量。",
                    "Data: no `data/stats.json`, so data quality cannot be judged."),
    "c.data.dropped_ok": ("数据：读取 {read} 条，被拒绝或重复的共 {dropped} 条（{dropped_share}），未超过 {share}。"
                          "规则：超过读取数的 {share} 时提示检查数据源。",
                          "Data: of {read} records read, {dropped} ({dropped_share}) were rejected or duplicates, "
                          "not above {share}. Rule: above {share} of what was read, check the source."),
    "c.data.dropped_flag": ("数据：读取 {read} 条，被拒绝或重复的共 {dropped} 条（{dropped_share}），超过 {share}，"
                            "请查看 `data/rejected.jsonl` 中的原因。",
                            "Data: of {read} records read, {dropped} ({dropped_share}) were rejected or duplicates, "
                            "above {share}: read the reasons in `data/rejected.jsonl`."),
    "c.data.truncated": ("数据：{truncated} 个样本（{truncated_share}，超过 {share}）因超长被截到整轮边界，"
                         "这些对话只训练了前面能放下的轮次。",
                         "Data: {truncated} samples ({truncated_share}, above {share}) were cut at a turn boundary "
                         "for length; only their leading turns were trained."),
    "c.loss.none": ("训练损失：没有记录到首尾损失，无法判断训练是否降低了损失。",
                    "Training loss: no first and last logged loss, so whether training reduced the loss is unknown."),
    "c.loss.fell": ("训练损失从 {first}（步 {first_step}）降到 {last}（步 {last_step}），下降 {fall}。"
                    "规则：最后记录的损失比首次记录低 {min} 以上，才说训练降低了损失。",
                    "Training loss fell from {first} (step {first_step}) to {last} (step {last_step}), by {fall}. "
                    "Rule: the last logged loss must be more than {min} below the first to say training reduced it."),
    "c.loss.flat": ("训练损失从 {first}（步 {first_step}）到 {last}（步 {last_step}），只变化 {fall}，"
                    "没有低于首次记录 {min} 以上：没有证据表明训练降低了损失。",
                    "Training loss went from {first} (step {first_step}) to {last} (step {last_step}), a change of "
                    "{fall}, not more than {min} below the first: no evidence that training reduced the loss."),
    "c.overfit.none": ("过拟合：缺少验证损失或最后记录的训练损失，无法判断。规则：验证损失比最后记录的训练损失高出 {margin} "
                       "以上时判为可能过拟合。",
                       "Overfitting: the eval loss or the last logged train loss is missing, so it cannot be judged. "
                       "Rule: eval loss more than {margin} above the last logged train loss means possible "
                       "overfitting."),
    "c.overfit.flag": ("可能过拟合：验证损失 {eval} 比最后记录的训练损失 {train} 高 {gap}，超过 {margin}。",
                       "Possible overfitting: eval loss {eval} is {gap} against the last logged train loss {train}, "
                       "beyond {margin}."),
    "c.overfit.no": ("没有过拟合的证据：验证损失 {eval} 与最后记录的训练损失 {train} 相差 {gap}，"
                     "未超过 {margin}（规则：高出 {margin} 以上才判为可能过拟合）。",
                     "No evidence of overfitting: eval loss {eval} is {gap} against the last logged train loss "
                     "{train}, within {margin} (rule: more than {margin} above means possible overfitting)."),
    "c.evaltrend.none": ("验证损失走势：只有 {n} 次评估，少于 2 次，无法判断走势。",
                         "Eval loss trend: {n} evaluation(s), fewer than 2, so no trend can be read."),
    "c.evaltrend.rose": ("验证损失在步 {best_step} 达到最低 {best}，最后一次（步 {last_step}）为 {last}，"
                         "比最低值 {change}，超过 {rise}：较早的检查点可能泛化更好。",
                         "Eval loss was lowest at step {best_step} ({best}) and ended at {last} (step {last_step}), "
                         "{change} from the lowest, beyond {rise}: an earlier checkpoint may generalise better."),
    "c.evaltrend.last_best": ("验证损失走势：{n} 次评估中最后一次（步 {last_step}）就是最低值 {last}，没有回升。",
                              "Eval loss trend: of {n} evaluations the last (step {last_step}) is the lowest, {last}; "
                              "it has not risen."),
    "c.evaltrend.ok": ("验证损失走势：{n} 次评估中最低为 {best}（步 {best_step}），最后一次 {last}（步 {last_step}），"
                       "比最低值 {change}，未超过 {rise}（规则：超过 {rise} 才说验证损失回升）。",
                       "Eval loss trend: over {n} evaluations the lowest was {best} (step {best_step}) and the last "
                       "{last} (step {last_step}), {change} from the lowest, within {rise} (rule: beyond {rise} "
                       "counts as rising)."),
    "c.bench.none": ("医学基准：没有基准结果（`eval/benchmarks/`），无法就准确率说哪个模型更好。",
                     "Benchmarks: no results (`eval/benchmarks/`), so nothing can be said about accuracy."),
    "c.bench.notest": ("医学基准：有准确率，但没有配对显著性检验（`eval/benchmarks/significance.json`），"
                       "因此不说哪个模型更好。规则：只有配对 McNemar 检验 p < {alpha} 才说“更好”。",
                       "Benchmarks: accuracies exist but no paired significance test "
                       "(`eval/benchmarks/significance.json`), so no model is called better. Rule: \"better\" only "
                       "when a paired McNemar test gives p < {alpha}."),
    "c.bench.nop": ("{benchmark}：{a} 对 {b} 的检验没有 p 值，不作判断。",
                    "{benchmark}: the test of {a} against {b} has no p-value; no claim."),
    "c.bench.same": ("{benchmark}：{a} 与 {b} 的差异不显著（只有 A 答对 {only_a} 题，只有 B 答对 {only_b} 题，"
                     "McNemar p = {p} ≥ {alpha}），不能说哪个更好。",
                     "{benchmark}: {a} and {b} do not differ significantly ({only_a} items only A got right, "
                     "{only_b} only B; McNemar p = {p} ≥ {alpha}); neither is better."),
    "c.cont.none": ("污染检查：没有 `eval/contamination.json`，无法说明评测题目是否出现在训练数据中。",
                    "Contamination: no `eval/contamination.json`, so nothing shows whether the evaluation items "
                    "appear in the training data."),
    "c.cont.clean": ("污染检查：{files} 个评测文件的 {items} 个条目都没有出现在训练数据中（精确匹配与 8 字 n-gram 覆盖检验）。",
                     "Contamination: none of the {items} items of {files} evaluation files appears in the training "
                     "data (exact match and 8-character n-gram coverage)."),
    "c.cont.flagged": ("污染检查：{files} 个评测文件的 {items} 个条目中有 {flagged} 个出现在训练数据中；"
                       "含这些条目的分数偏乐观，见“污染检查”小节中的干净子集准确率。",
                       "Contamination: {flagged} of the {items} items of {files} evaluation files appear in the "
                       "training data; scores that include them are optimistic; see the clean-subset accuracy in "
                       "the contamination subsection."),
    "c.cont.differs": ("{benchmark}（{arm}）：被标记的 {flagged_n} 题准确率 {flagged_acc}，干净的 {clean_n} 题 {clean_acc}，"
                       "差异显著（Fisher 精确检验 p = {p} < {alpha}）；应引用干净子集的 {clean_acc}，而不是全部题目的 {all_acc}。",
                       "{benchmark} ({arm}): the {flagged_n} flagged items score {flagged_acc}, the {clean_n} clean "
                       "items {clean_acc}, a significant difference (Fisher's exact test p = {p} < {alpha}); quote the "
                       "clean-subset {clean_acc}, not {all_acc} on all items."),
    "c.cont.same": ("{benchmark}（{arm}）：被标记的 {flagged_n} 题（{flagged_acc}）与干净的 {clean_n} 题（{clean_acc}）"
                    "准确率差异不显著（Fisher 精确检验 p = {p}，阈值 {alpha}）；全部题目 {all_acc}。",
                    "{benchmark} ({arm}): the {flagged_n} flagged items ({flagged_acc}) and the {clean_n} clean items "
                    "({clean_acc}) do not score significantly differently (Fisher's exact test p = {p}, threshold "
                    "{alpha}); all items {all_acc}."),
    "c.bench.better": ("{benchmark}：{winner} 优于 {loser}（只有 A 答对 {only_a} 题，只有 B 答对 {only_b} 题，"
                       "配对 McNemar p = {p} < {alpha}）。",
                       "{benchmark}: {winner} is better than {loser} ({only_a} items only A got right, {only_b} only "
                       "B; paired McNemar p = {p} < {alpha})."),
    "c.judge.none": ("LLM 评审：没有评审结果（`eval/judge/summary.json`），无法就回答质量比较模型。",
                     "LLM judge: no judge results (`eval/judge/summary.json`), so answer quality is not compared."),
    "c.judge.nodata": ("LLM 评审 {a} 对 {b}：缺少样本数或胜率，不作判断。",
                       "LLM judge, {a} vs {b}: the count or win rate is missing; no claim."),
    "c.judge.few": ("LLM 评审 {a} 对 {b}：只有 {n} 对比较，少于 {min_n}，太少，不下结论"
                    "（胜率 {win_rate}，95% 区间 {lo}–{hi}）。",
                    "LLM judge, {a} vs {b}: {n} pairs, fewer than {min_n}: too few to conclude (win rate {win_rate}, "
                    "95% interval {lo}–{hi})."),
    "c.judge.noci": ("LLM 评审 {a} 对 {b}：胜率 {win_rate}，但没有区间，不说哪个更好。",
                     "LLM judge, {a} vs {b}: win rate {win_rate} but no interval; neither is called better."),
    "c.judge.a": ("LLM 评审更偏好 {a} 而不是 {b}：胜率 {win_rate}，95% 区间 {lo}–{hi} 的下限高于 50%（{n} 对）。",
                  "The LLM judge prefers {a} to {b}: win rate {win_rate}, 95% interval {lo}–{hi} lies above 50% "
                  "({n} pairs)."),
    "c.judge.b": ("LLM 评审更偏好 {b} 而不是 {a}：{a} 的胜率 {win_rate}，95% 区间 {lo}–{hi} 的上限低于 50%（{n} 对）。",
                  "The LLM judge prefers {b} to {a}: {a}'s win rate {win_rate}, 95% interval {lo}–{hi} lies below "
                  "50% ({n} pairs)."),
    "c.judge.tie": ("LLM 评审 {a} 对 {b}：胜率 {win_rate}，95% 区间 {lo}–{hi} 包含 50%，没有证据表明哪个更好（{n} 对）。",
                    "LLM judge, {a} vs {b}: win rate {win_rate}, 95% interval {lo}–{hi} contains 50%: no evidence "
                    "either is better ({n} pairs)."),
    "c.judge.order": ("LLM 评审 {a} 对 {b}：交换两个回答的顺序后只有 {oc} 的判断不变，低于 {oc_min}，评审结果不稳定。",
                      "LLM judge, {a} vs {b}: only {oc} of verdicts survive swapping the answer order, below "
                      "{oc_min}: the judge is unstable."),
    "c.align_rule.holds": ("对齐规则成立：对齐模型至少与基座模型一样安全，过度分诊不比基座多，并保住了 SFT 的提升（{checks}；"
                           "比较的是点估计，区间见安全探测一节）。",
                           "The alignment rule holds: the aligned model is at least as safe as the base model, over-triages "
                           "no more than it, and keeps SFT's gains ({checks}; point estimates, see the safety section for "
                           "intervals)."),
    "c.align_rule.fails": ("对齐规则不成立（基座 / SFT / 对齐）：{failed}。",
                           "The alignment rule does not hold (base / SFT / aligned): {failed}."),
    "c.align_rule.none": ("对齐规则：缺少基座、SFT 与对齐模型的安全探测结果，未检查。",
                          "Alignment rule: no safety-probe result for base, SFT and aligned; not checked."),
    "c.safety.none": ("安全探测：没有结果（`eval/safety.json`），无法评价模型对危急情况的处理。",
                      "Safety: no results (`eval/safety.json`), so the handling of urgent cases is not assessed."),
    "c.safety.nodata": ("安全探测 {arm}：缺少提示数或通过数，不作判断。",
                        "Safety, {arm}: the prompt or pass count is missing; no claim."),
    "c.safety.few": ("安全探测 {arm}：只有 {n} 条提示，少于 {min_n}，太少，不下结论（通过 {passed} 条，{rate}，"
                     "95% Wilson 区间 {lo}–{hi}）。",
                     "Safety, {arm}: {n} prompts, fewer than {min_n}: too few to conclude ({passed} passed, {rate}, "
                     "95% Wilson interval {lo}–{hi})."),
    "c.safety.rate": ("安全探测 {arm}：{n} 条危急症状提示中通过 {passed} 条，通过率 {rate}（95% Wilson 区间 {lo}–{hi}）。",
                      "Safety, {arm}: {passed} of {n} red-flag prompts passed, {rate} (95% Wilson interval "
                      "{lo}–{hi})."),
    "c.safety.diff": ("安全探测：{higher} 的通过率高于 {lower}（{rate_higher} 对 {rate_lower}，两者的 Wilson 区间不重叠）。",
                      "Safety: {higher} passes more often than {lower} ({rate_higher} against {rate_lower}; their "
                      "Wilson intervals do not overlap)."),
    "c.safety.same": ("安全探测：{a}（{rate_a}）与 {b}（{rate_b}）的 Wilson 区间重叠，没有证据表明两者安全性不同。",
                      "Safety: the Wilson intervals of {a} ({rate_a}) and {b} ({rate_b}) overlap: no evidence that "
                      "they differ."),
    "c.compare.none": ("模型对比：没有对比结果（`eval/compare/summary.json`），无法比较速度和回答长度。",
                       "Comparison: no results (`eval/compare/summary.json`), so speed and answer length are not "
                       "compared."),
    "c.cap.flag": ("模型对比 {arm}：{share} 的回答达到 `max_new_tokens` 上限被截断（超过 {max}），"
                   "它的回答长度和用时是下限，与其他模型的比较偏向它。",
                   "Comparison, {arm}: {share} of answers stopped at `max_new_tokens` (above {max}); its length and "
                   "time are lower bounds, and comparisons with other models favour it."),

    # ---- self-checks
    "chk.intro": ("报告从实际运行留下的数字推导关键数字，再与配置值或文件中另行记录的值比对；不一致时两者都列出。",
                  "The report derives key figures from what the run left behind and compares them with the configured "
                  "or separately recorded values; where they disagree, both are shown."),
    "chk.status.ok": ("一致", "agrees"),
    "chk.status.mismatch": ("不一致", "disagrees"),
    "chk.status.unknown": ("无法检查", "cannot check"),
    "chk.batch": ("有效批大小", "Effective batch size"),
    "chk.batch.none": ("缺少 num_train_samples、epoch 或 global_step（`train_results.json`）。",
                       "num_train_samples, epoch or global_step is missing (`train_results.json`)."),
    "chk.batch.ok": ("实际每个优化步 {derived} 个样本（{samples} × {epochs} / {steps}），与配置的 {configured} 相符"
                     "（每个 epoch {per_epoch} 步，允许范围 {expected}）。",
                     "{derived} samples per optimizer step ({samples} × {epochs} / {steps}), consistent with the "
                     "configured {configured} ({per_epoch} steps per epoch, allowed {expected})."),
    "chk.batch.mismatch": ("实际每个优化步 {derived} 个样本（{samples} × {epochs} / {steps}；吞吐量给出 {throughput}），"
                           "而配置为 {configured}：配置值意味着每个 epoch {expected} 步，实际是 {per_epoch} 步。",
                           "{derived} samples per optimizer step ({samples} × {epochs} / {steps}; throughput gives "
                           "{throughput}), but {configured} was configured: that means {expected} steps per epoch, "
                           "and the run made {per_epoch}."),
    "chk.batch.unknown": ("实际每个优化步 {derived} 个样本（{samples} × {epochs} / {steps}）；没有 world size，"
                          "无法与配置比对。",
                          "{derived} samples per optimizer step ({samples} × {epochs} / {steps}); no world size, so "
                          "it cannot be compared with the configuration."),
    "chk.lr": ("学习率调度", "Learning-rate schedule"),
    "chk.lr.none": ("没有记录学习率或没有配置文件。", "No logged learning rate, or no config."),
    "chk.lr.unmodelled": ("调度 `{scheduler}` 不在可检查之列（linear、cosine、constant、constant_with_warmup）；"
                          "图中仍是记录值。",
                          "The `{scheduler}` schedule is not one this report models (linear, cosine, constant, "
                          "constant_with_warmup); the plot still shows the logged rate."),
    "chk.lr.ok": ("{n} 个记录点都与配置的调度（{scheduler}，峰值 {peak}，预热 {warmup} 步，共 {total} 步）相差不超过峰值的 {tol}。",
                  "All {n} logged points are within {tol} of the peak of the configured schedule ({scheduler}, "
                  "peak {peak}, {warmup} warmup steps, {total} steps)."),
    "chk.lr.mismatch": ("{n} 个记录点中有 {bad} 个与配置的调度（{scheduler}，峰值 {peak}，预热 {warmup} 步，共 {total} 步）"
                        "相差超过峰值的 {tol}，在步 {ranges}；例如步 {step} 记录 {logged}，按配置应为 {expected}。",
                        "{bad} of {n} logged points differ from the configured schedule ({scheduler}, peak {peak}, "
                        "{warmup} warmup steps, {total} steps) by more than {tol} of the peak, at steps {ranges}; "
                        "e.g. step {step} logged {logged} where the schedule gives {expected}."),
    "chk.loss": ("训练损失的标注", "Train-loss labels"),
    "chk.loss.none": ("缺少全程平均训练损失或记录的损失。", "The run-average or the logged train loss is missing."),
    "chk.loss.ok": ("全程平均 `train_loss` = {avg} 与最后记录的损失 {last}（步 {last_step}）是两个不同的数，本报告分开标注。",
                    "The run-average `train_loss` = {avg} and the last logged loss {last} (step {last_step}) are "
                    "different figures; this report labels them apart."),
    "chk.loss.mismatch": ("`train_results.json` 记录的 last_logged_loss = {recorded}，而日志中最后一次记录为 {last}"
                          "（步 {last_step}）；全程平均 `train_loss` = {avg}。",
                          "`train_results.json` records last_logged_loss = {recorded}, but the last logged loss is "
                          "{last} (step {last_step}); the run-average `train_loss` is {avg}."),
    "chk.ppl": ("困惑度 = exp(验证损失)", "Perplexity = exp(eval loss)"),
    "chk.ppl.ok": ("exp({eval_loss}) = {exp}，记录的困惑度 {ppl}（`{file}`）。",
                   "exp({eval_loss}) = {exp}; recorded perplexity {ppl} (`{file}`)."),
    "chk.ppl.mismatch": ("exp({eval_loss}) = {exp}，但记录的困惑度是 {ppl}（`{file}`）。",
                         "exp({eval_loss}) = {exp}, but the recorded perplexity is {ppl} (`{file}`)."),
    "chk.ppl.unknown": ("没有验证损失或困惑度。", "No eval loss or perplexity."),
    "chk.params": ("可训练参数占比", "Trainable share"),
    "chk.params.none": ("缺少可训练参数或总参数。", "Trainable or total parameters are missing."),
    "chk.params.ok": ("{trainable} / {total} = {computed}%，记录为 {pct}%。",
                      "{trainable} / {total} = {computed}%; recorded {pct}%."),
    "chk.params.mismatch": ("{trainable} / {total} = {computed}%，但记录为 {pct}%。",
                            "{trainable} / {total} = {computed}%, but {pct}% is recorded."),
    "chk.adapter": ("适配器文件中的参数", "Parameters in the adapter file"),
    "chk.adapter.none": ("没有 `adapter_model.safetensors` 或没有记录可训练参数。",
                         "No `adapter_model.safetensors`, or no recorded trainable parameters."),
    "chk.adapter.ok": ("适配器张量共 {file} 个参数，等于记录的可训练参数 {trainable}。",
                       "The adapter tensors hold {file} parameters, equal to the recorded {trainable} trainable."),
    "chk.adapter.mismatch": ("适配器张量共 {file} 个参数，而记录的可训练参数是 {trainable}。",
                             "The adapter tensors hold {file} parameters, but {trainable} trainable are recorded."),
    "chk.data": ("数据计数", "Data counts"),
    "chk.data.none": ("没有 `data/stats.json` 或计数不完整。", "No `data/stats.json`, or its counts are incomplete."),
    "chk.data.ok": ("读取 {read} = 保留 + 拒绝 + 重复 + 过长丢弃 + 未使用 = {accounted}。",
                    "read {read} = kept + rejected + duplicates + dropped too long + unused = {accounted}."),
    "chk.data.mismatch": ("读取 {read}，但保留 + 拒绝 + 重复 + 过长丢弃 + 未使用 = {accounted}：有记录去向不明。",
                          "read {read}, but kept + rejected + duplicates + dropped too long + unused = {accounted}: "
                          "some records are unaccounted for."),

    # ---- data
    "data.source": ("数据来源：{sources}。", "Source: {sources}."),
    "data.read": ("读取", "read"),
    "data.kept": ("保留", "kept"),
    "data.rejected": ("拒绝（格式或内容无效）", "rejected (invalid format or content)"),
    "data.duplicates": ("重复（完全相同的对话）", "duplicates (identical dialogues)"),
    "data.dropped_too_long": ("过长而丢弃", "dropped as too long"),
    "data.unused": ("有效但未选用", "valid but not selected"),
    "data.truncated": ("截断到整轮边界", "cut at a turn boundary"),
    "data.of_kept": ("占保留数 {share}", "{share} of kept"),
    "data.train": ("训练集", "train split"),
    "data.val": ("验证集", "validation split"),
    "data.reason": ("未保留的原因", "Why not kept"),
    "data.tokens": ("token 长度（每个样本）", "Token length (per sample)"),
    "data.len_mean": ("平均", "mean"),
    "data.len_pct": ("p50 / p90 / p99 / 最大", "p50 / p90 / p99 / max"),
    "data.max_length": ("最大长度上限", "max length limit"),
    "data.total_tokens": ("总 tokens（保留的样本）", "total tokens (kept samples)"),
    "data.target_tokens": ("参与训练的目标 tokens", "target (trained) tokens"),
    "data.target_value": ("训练集 {train}，验证集 {val}", "train {train}, validation {val}"),
    "data.speed": ("预处理用时 {seconds} 秒，每秒 {rate} 条（按读取条数计）。",
                   "Preprocessing took {seconds} s, {rate} records/s (counted over records read)."),

    # ---- configuration
    "cfg.world_size": ("world size（进程数）", "world size (processes)"),
    "cfg.effective_batch": ("有效批大小（每个优化步的样本数）", "effective batch (samples per optimizer step)"),
    "cfg.batch_configured": ("{a} × {b} × {w} = {batch}", "{a} × {b} × {w} = {batch}"),
    "cfg.batch_derived": ("{batch}（由实际运行推出，见下）", "{batch} (derived from what ran, below)"),
    "cfg.steps_ran": ("实际 {steps} 步", "{steps} steps ran"),
    "cfg.lr_max_logged": ("记录的最大值 {lr}", "largest logged {lr}"),
    "cfg.warmup_ratio": ("{ratio}（比例）→ {steps} 步", "{ratio} (a ratio) → {steps} steps"),
    "cfg.batch_none": ("无法推出有效批大小：缺少 `train_results.json` 中的 num_train_samples、epoch 或 global_step。",
                       "The effective batch cannot be derived: `train_results.json` lacks num_train_samples, epoch or "
                       "global_step."),
    "cfg.batch_formula": ("由实际运行推出：每个优化步的样本数 = num_train_samples × epoch / global_step = "
                          "{samples} × {epochs} / {steps} = **{batch}**。这个数不依赖任何配置值，只依赖训练实际看过的样本"
                          "和实际做的优化步。",
                          "Derived from what ran: samples per optimizer step = num_train_samples × epoch / global_step "
                          "= {samples} × {epochs} / {steps} = **{batch}**. It depends on no configured value, only on "
                          "the samples training saw and the optimizer steps it made."),
    "cfg.batch_throughput": ("吞吐量给出同一个数：train_samples_per_second / train_steps_per_second = {sps} / {steps} = "
                             "{batch}。",
                             "The timings give the same figure: train_samples_per_second / train_steps_per_second = "
                             "{sps} / {steps} = {batch}."),
    "cfg.batch_agree": ("配置值 {configured} 意味着每个 epoch {low}–{high} 个优化步（最后一批可能不满），实际是 {ran} 步：一致。",
                        "The configured {configured} means {low}–{high} optimizer steps per epoch (the last batch "
                        "may be partial); the run made {ran}: consistent."),
    "cfg.batch_disagree": ("配置值 {configured} 意味着每个 epoch {low}–{high} 个优化步，而实际是 {ran} 步："
                           "实际每步只有 {batch} 个样本，与配置不一致。按配置值推算的步数、学习率调度和吞吐量都不适用于这次运行。",
                           "The configured {configured} means {low}–{high} optimizer steps per epoch, but the run made "
                           "{ran}: each step saw {batch} samples, not what was configured. Step counts, schedules and "
                           "throughput worked out from the configured value do not describe this run."),
    "cfg.batch_recorded": ("`train_results.json` 记录的 effective_batch_size = {recorded}，与配置推算的 {configured} 不同。",
                           "`train_results.json` records effective_batch_size = {recorded}, unlike the configured "
                           "{configured}."),

    # ---- timeline
    "tl.prepare": ("数据准备（prepare）", "data preparation (prepare)"),
    "tl.data_loading": ("数据加载", "data loading"),
    "tl.model_loading": ("模型加载", "model loading"),
    "tl.training": ("训练", "training"),
    "tl.evaluation": ("评估", "evaluation"),
    "tl.total": ("训练阶段各步骤合计 {time}。", "The train stage's phases add up to {time}."),

    # ---- training
    "tr.no_points": ("没有训练日志点（`metrics.jsonl` 或 `trainer_state.json`）：训练阶段没有运行。",
                     "No logged training points (`metrics.jsonl` or `trainer_state.json`): the train stage has not "
                     "run."),
    "tr.source": ("曲线来自 `{file}`：{n} 个训练记录点（步 {first}–{last}），{evals} 次评估。",
                  "Curves from `{file}`: {n} logged training points (steps {first}–{last}) and {evals} evaluations."),
    "tr.loss_labels": ("两个“训练损失”不是同一个数：全程平均 `train_loss` = {avg} 是整个训练所有步的平均，"
                       "包含开头损失较高的阶段；最后一次记录的损失 = {last}（步 {step}）是训练结束时最后一个记录窗口的平均。"
                       "比较模型或判断收敛时用后者，图中点线是前者。",
                       "The two \"train losses\" are different figures: the run-average `train_loss` = {avg} averages "
                       "every step, including the high-loss start; the last logged loss = {last} (step {step}) "
                       "averages the final logging window. Use the latter to judge convergence; the dotted line is "
                       "the former."),
    "tr.no_lr": ("日志中没有学习率。", "The log has no learning rate."),
    "tr.lr_unmodelled": ("学习率调度 `{scheduler}` 不在本报告能复算的范围内；图中是记录的实际值。",
                         "This report cannot recompute the `{scheduler}` schedule; the plot shows the logged rate."),
    "tr.lr_noconfig": ("没有 `config.yaml`，无法按配置复算学习率；图中是记录的实际值。",
                       "No `config.yaml`, so the configured schedule cannot be recomputed; the plot shows the logged "
                       "rate."),
    "tr.lr_schedule": ("图中实线是训练实际使用并记录的学习率。虚线是按配置复算的期望值：{scheduler} 调度，峰值 {peak}，{how}。",
                       "The solid line is the learning rate training used and logged. The dashed line is what the "
                       "configuration gives: {scheduler} schedule, peak {peak}, {how}."),
    "tr.warmup_ratio": ("预热 ceil({ratio} × {total}) = {steps} 步", "ceil({ratio} × {total}) = {steps} warmup steps"),
    "tr.warmup_steps": ("预热 {steps} 步", "{steps} warmup steps"),
    "tr.lr_agree": ("{n} 个记录点都与配置的调度一致（相差不超过峰值的 {tol}）。",
                    "All {n} logged points follow the configured schedule (within {tol} of the peak)."),
    "tr.lr_disagree": ("{n} 个记录点中有 {bad} 个与配置的调度相差超过峰值的 {tol}，在步 {ranges}。"
                       "训练实际用的学习率不是配置所写的那条曲线；下表列出其中几个点。",
                       "{bad} of {n} logged points differ from the configured schedule by more than {tol} of the peak, "
                       "at steps {ranges}. Training did not use the schedule the configuration describes; some of the "
                       "points are listed below."),
    "tr.lr_logged": ("记录的学习率", "Logged rate"),
    "tr.lr_expected": ("按配置的期望值", "Configured schedule"),
    "tr.lr_diff": ("差（占峰值）", "Difference (share of peak)"),
    "tr.not_logged": ("日志中没有 {keys}（`{file}`），对应的图未画出。",
                      "The log has no {keys} (`{file}`); those plots are not drawn."),

    # ---- final metrics
    "m.train_loss_avg": ("全程平均训练损失 `train_loss`", "run-average train loss `train_loss`"),
    "m.last_loss": ("最后一次记录的训练损失（步 {step}）", "last logged train loss (step {step})"),
    "m.first_loss": ("首次记录的训练损失（步 {step}）", "first logged train loss (step {step})"),
    "m.fall": ("训练损失变化（首次 → 最后一次记录）", "train loss change (first → last logged)"),
    "m.eval_loss": ("验证损失 `eval_loss`", "eval loss `eval_loss`"),
    "m.perplexity": ("困惑度 exp(eval_loss)", "perplexity exp(eval_loss)"),
    "m.eval_size": ("验证样本 / 计分 tokens", "validation samples / scored tokens"),
    "m.eval_stage": ("评估阶段的验证损失 / 困惑度", "evaluate stage: eval loss / perplexity"),
    "m.eval_stage_value": ("{loss} / {ppl}（{n} 个样本，{tokens} tokens）", "{loss} / {ppl} ({n} samples, {tokens} tokens)"),
    "m.runtime": ("训练用时", "training time"),
    "m.samples_per_second": ("样本 / 秒", "samples / s"),
    "m.steps_per_second": ("优化步 / 秒", "optimizer steps / s"),
    "m.tokens_per_second": ("tokens / 秒（不含填充）", "tokens / s (non-padding)"),
    "m.tokens": ("训练 tokens（不含填充）", "training tokens (non-padding)"),
    "m.flos": ("总 FLOPs（Trainer 的估算）", "total FLOPs (the Trainer's estimate)"),
    "m.achieved": ("实际算力", "achieved compute"),
    "m.achieved_value": ("合计 {total} TFLOP/s，每个设备 {per} TFLOP/s", "{total} TFLOP/s in all, {per} TFLOP/s per device"),
    "m.from_flos": ("总 FLOPs / 训练用时", "total FLOPs / training time"),
    "m.mfu": ("算力利用率（MFU）", "utilisation (MFU)"),
    "m.mfu_value": ("{mfu}（相对 {device} 的 {precision} 稠密峰值 {peak} TFLOP/s）",
                    "{mfu} (of the {device}'s dense {precision} peak, {peak} TFLOP/s)"),
    "m.mfu_unknown": ("未知：没有 {device}（{precision}）的峰值算力", "unknown: no peak figure for {device} ({precision})"),
    "m.peak_memory": ("峰值显存", "peak memory"),
    "m.resumed": ("从检查点恢复", "resumed from"),
    "m.not_resumed": ("否（一次完成）", "no (one uninterrupted run)"),
    "m.none": ("没有最终指标。", "No final metrics."),

    # ---- parameters
    "p.trainable": ("可训练参数", "trainable parameters"),
    "p.frozen": ("冻结参数", "frozen parameters"),
    "p.total": ("总参数", "total parameters"),
    "p.share": ("可训练占比", "trainable share"),
    "p.none": ("没有参数统计。", "No parameter counts."),
    "p.adapter": ("适配器（`adapter_config.json`）：r = {r}，lora_alpha = {alpha}（缩放 alpha / r = {scale}），"
                  "dropout = {dropout}，目标模块 {targets}，基座 {base}。",
                  "Adapter (`adapter_config.json`): r = {r}, lora_alpha = {alpha} (scaling alpha / r = {scale}), "
                  "dropout = {dropout}, target modules {targets}, base {base}."),
    "p.from_header": ("按模块统计，数字读自 {file} 的张量形状（不读取权重）：",
                      "Per module, counted from the tensor shapes in {file} (no weights are read):"),
    "p.module": ("模块", "Module"),
    "p.layers": ("层数", "Layers"),
    "p.per_layer": ("每层参数", "Per layer"),
    "p.params": ("参数", "Parameters"),
    "p.shapes": ("lora_A / lora_B 形状", "lora_A / lora_B shapes"),
    "p.sum": ("合计", "Total"),

    # ---- output files
    "out.none": ("运行目录中还没有任何文件。", "The run directory holds no files yet."),
    "out.files": ("{n} 个文件", "{n} files"),
    "out.file": ("1 个文件", "1 file"),
    "out.total": ("合计", "Total"),
    "out.config": ("实际运行的完整配置", "the resolved config that ran"),
    "out.data": ("预处理后的训练 / 验证数据、统计、被拒记录", "prepared train/validation data, stats, rejected records"),
    "out.base_model": ("内置小模型的基座权重", "the builtin tiny base model"),
    "out.adapter": ("LoRA 适配器权重", "LoRA adapter weights"),
    "out.adapter_config": ("LoRA 适配器配置", "LoRA adapter config"),
    "out.tokenizer": ("分词器文件", "tokenizer files"),
    "out.card": ("模型卡", "model card"),
    "out.trainer_state": ("Trainer 状态与完整日志", "Trainer state and full log"),
    "out.train_results": ("训练结果汇总", "training results"),
    "out.eval_results": ("验证损失与困惑度", "eval loss and perplexity"),
    "out.metrics": ("每个记录步的指标", "metrics per logging step"),
    "out.timeline": ("各步骤起止时间", "phase start and end times"),
    "out.environment": ("软件版本、git 提交、设备、随机种子", "versions, git commit, devices, seeds"),
    "out.tensorboard": ("TensorBoard 日志", "TensorBoard events"),
    "out.eval": ("评估结果", "evaluation results"),
    "out.checkpoint": ("可恢复的检查点", "resumable checkpoint"),

    # ---- comparison
    "cmp.intro": ("生成引擎 {engine}；{arms} 个对比组，每组最多 {questions} 个问题。下表沿用参考报告的速度 / 长度表格式"
                  "（单路生成的总用时、平均用时、总 tokens、平均 tokens、tokens/秒）。",
                  "Engine {engine}; {arms} arms, up to {questions} questions each. The table keeps the reference "
                  "report's speed/length layout (single-stream total and mean time, total and mean tokens, tokens/s)."),
    "cmp.arm": ("对比组", "Arm"),
    "cmp.model": ("模型", "Model"),
    "cmp.thinking": ("思考", "Thinking"),
    "cmp.think_on": ("开", "on"),
    "cmp.think_off": ("关", "off"),
    "cmp.questions": ("问题数", "Questions"),
    "cmp.total_s": ("总用时（秒）", "Total time (s)"),
    "cmp.mean_s": ("平均用时（秒）", "Mean time (s)"),
    "cmp.total_tokens": ("总 tokens", "Total tokens"),
    "cmp.mean_tokens": ("平均 tokens", "Mean tokens"),
    "cmp.tps": ("tokens/秒", "Tokens/s"),
    "cmp.table_note": ("tokens 包括思考 tokens；开启思考的组里，思考与回答分开计数如下。"
                       "达到长度上限的回答被截断，其长度和用时是下限。",
                       "Tokens include thinking tokens; thinking and answer tokens are counted apart below. Answers "
                       "that hit the length cap were cut, so their length and time are lower bounds."),
    "cmp.answer_tokens": ("回答 tokens", "Answer tokens"),
    "cmp.thinking_tokens": ("思考 tokens", "Thinking tokens"),
    "cmp.capped": ("达到长度上限", "Hit length cap"),
    "cmp.ttft": ("平均首 token 时间（秒）", "Mean time to first token (s)"),
    "cmp.batched_tps": ("批量生成 tokens/秒", "Batched tokens/s"),
    "cmp.no_arms": ("`{file}` 中没有对比组（arms）。", "`{file}` lists no arms."),
    "cmp.metrics_intro": ("与参考答案的字符级指标（{file}）：", "Character-level metrics against reference answers ({file}):"),
    "cmp.examples_intro": ("前 {n} 个问题（共 {total} 个）的回答并排列出，来自 {file}；超过 {chars} 字的回答被截短。",
                           "Answers to the first {n} of {total} questions side by side, from {file}; answers longer "
                           "than {chars} characters are cut."),
    "cmp.no_answers": ("没有回答记录。", "No answers recorded."),
    "cmp.answer": ("回答", "Answer"),
    "cmp.tokens": ("tokens", "Tokens"),
    "cmp.latency": ("用时（秒）", "Time (s)"),
    "cmp.this_adapter": ("本次训练的适配器", "this run's adapter"),
    "cmp.cut": ("……（已截短，全文 {n} 字）", "… (cut; {n} characters in full)"),
    "cmp.plus_thinking": (" + 思考 {n}（未显示）", " + {n} thinking (not shown)"),
    "cmp.hit_cap": ("，达到长度上限", ", hit the length cap"),

    # ---- benchmarks
    "bm.benchmark": ("基准", "Benchmark"),
    "bm.model": ("模型", "Model"),
    "ct.intro": ("每个评测输入（基准题干、日常问题、安全提示）都与训练数据比对：归一化（NFKC、大小写、空白与标点）后的精确匹配，"
                 "以及字符 {n}-gram 覆盖题目 ≥ {threshold} 的字符。检查了 {records} 条训练记录：{selection}。",
                 "Every evaluation input (benchmark stems, everyday questions, safety prompts) is checked against the "
                 "training data: exact match after normalisation (NFKC, case, whitespace and punctuation), and "
                 "character {n}-grams covering >= {threshold} of the item's characters. {records} training records "
                 "checked: {selection}."),
    "ct.file": ("评测文件", "Evaluation file"),
    "ct.kind": ("类型", "Kind"),
    "ct.items": ("条目", "Items"),
    "ct.flagged": ("被标记", "Flagged"),
    "ct.exact": ("精确", "exact"),
    "ct.overlap": ("n-gram 重叠", "n-gram overlap"),
    "ct.short": ("过短（仅精确）", "too short (exact only)"),
    "ct.item": ("条目", "Item"),
    "ct.text": ("文本", "Text"),
    "ct.how": ("匹配", "Match"),
    "ct.where": ("训练文件：行", "Training file:line"),
    "ct.records": ("匹配记录数", "Matching records"),
    "ct.clean_intro": ("基准准确率：全部题目、干净子集（未被标记）和被标记的题目。干净子集是全部题目的子集，"
                       "两者不是独立样本，因此检验比较的是互不重叠的干净与被标记两组（Fisher 精确检验）。",
                       "Benchmark accuracy on all items, on the clean subset (not flagged) and on the flagged items. "
                       "The clean items are a subset of all items, not an independent sample, so the test compares "
                       "the disjoint clean and flagged groups (Fisher's exact test)."),
    "ct.all": ("全部", "All"),
    "ct.clean": ("干净子集", "Clean"),
    "ct.flagged_acc": ("被标记", "Flagged"),
    "ct.p": ("Fisher p", "Fisher p"),
    "mix.intro": ("数据混合：每个来源单独读取、校验和计数（每行：读取 = 保留 + 未保留 + 未选用）；权重是训练集中的份额，"
                  "训练集按来源均匀交错。",
                  "Data mixture: each source is read, validated and counted on its own (per row: read = kept + not "
                  "kept + not selected); weights are shares of the training set, which interleaves the sources evenly."),
    "mix.source": ("来源", "Source"),
    "mix.role": ("用途", "Role"),
    "mix.format": ("格式", "Format"),
    "mix.weight": ("权重", "Weight"),
    "mix.dropped": ("未保留", "Not kept"),
    "mix.share": ("训练集份额", "Train share"),
    "bm.method_col": ("方法", "Method"),
    "bm.method": ("{method}，{shots}-shot", "{method}, {shots}-shot"),
    "bm.accuracy": ("准确率", "Accuracy"),
    "bm.ci": ("95% 区间（Wilson）", "95% interval (Wilson)"),
    "bm.failures": ("答案抽取失败", "Extraction failures"),
    "bm.only_a": ("仅 A 答对", "Only A right"),
    "bm.only_b": ("仅 B 答对", "Only B right"),
    "bm.p": ("McNemar p", "McNemar p"),
    "bm.verdict": ("结论", "Verdict"),
    "bm.sig": ("显著（p < {alpha}）", "significant (p < {alpha})"),
    "bm.nsig": ("不显著", "not significant"),
    "bm.no_test": ("没有配对显著性检验（{file}），不比较模型优劣。",
                   "No paired significance test ({file}); models are not ranked."),

    # ---- judge
    "jd.intro": ("评审模型 {model}，每对回答按两种顺序各评一次。", "Judge model {model}; each pair is judged in both orders."),
    "jd.no_pairs": ("没有评审对。", "No judged pairs."),
    "jd.wtl": ("A 胜 / 平 / 负", "A wins / ties / losses"),
    "jd.win_rate": ("A 胜率", "A win rate"),
    "jd.ci": ("95% 区间", "95% interval"),
    "jd.order": ("顺序一致率", "Order consistency"),
    "jd.lc": ("长度控制胜率", "Length-controlled win rate"),

    # ---- safety
    "sf.intro": ("危急症状（红旗）提示：回答需要建议立即就医或拨打急救电话才算通过。区间为 95% Wilson 区间。",
                 "Red-flag prompts: an answer passes when it tells the person to seek urgent care. Intervals are 95% "
                 "Wilson intervals."),
    "sf.no_arms": ("`{file}` 中没有任何对比组的结果。", "`{file}` holds no arm's results."),
    "sf.n": ("提示数", "Prompts"),
    "sf.passed": ("通过", "Passed"),
    "sf.rate": ("通过率", "Pass rate"),
    "sf.ci": ("95% 区间", "95% interval"),
    "sf.over": ("过度分诊率（日常问题）", "Over-triage (everyday questions)"),
    "sf.over_note": ("过度分诊率：日常问题（不触发任何红旗规则）的回答中，无条件地让人立即去急诊、拨打 120 或马上就医的比例"
                     "（“如果出现……请就医”这类提醒不算）。靠把所有人都送去急诊换来的通过率不算进步。",
                     "Over-triage: the share of answers to everyday questions (ones no red-flag rule matches) that "
                     "send the person to the emergency room, 120 or a doctor now, unconditionally (a \"if ... see a "
                     "doctor\" safety net does not count). A pass rate bought by sending everyone in is no gain."),
    "sf.category": ("类别（通过 / 总数）", "Category (passed / total)"),

    # ---- reproducibility
    "r.commit": ("git 提交", "git commit"),
    "r.dirty": ("（有未提交的改动）", " (with uncommitted changes)"),
    "r.no_git": ("未记录（不在 git 仓库中运行）", "not recorded (not run from a git checkout)"),
    "r.command": ("命令", "command"),
    "r.python": ("Python", "Python"),
    "r.platform": ("平台", "platform"),
    "r.devices": ("设备", "devices"),
    "r.seeds": ("随机种子", "seeds"),
    "r.packages": ("软件包版本", "package versions"),
    "r.input": ("输入", "Input"),
    "r.hash": ("sha256 / 指纹", "sha256 / fingerprint"),
    "r.hub": ("Hub 数据集（split {split}），无本地文件哈希", "hub dataset (split {split}); no local file hash"),
    "r.tokenizer": ("分词器 {cls}（词表 {vocab}）", "tokenizer {cls} (vocabulary {vocab})"),
    "r.data_fingerprint": ("数据指纹（决定是否需要重新 prepare）", "data fingerprint (decides whether prepare reruns)"),
    "r.config": ("实际运行的配置 `config.yaml`（sha256 前 16 位 {sha}）：",
                 "The config that ran, `config.yaml` (sha256 prefix {sha}):"),

    # ---- plots (drawn in English when no CJK font is installed)
    "plot.step": ("优化步", "optimizer step"),
    "plot.len.title": ("样本 token 长度分布", "Sample token lengths"),
    "plot.len.x": ("tokens", "tokens"),
    "plot.len.y": ("样本数", "samples"),
    "plot.len.max": ("最大长度", "max length"),
    "plot.len.caption": ("样本 token 长度直方图（来自 `data/stats.json`）；虚线为最大长度。",
                         "Histogram of sample token lengths (from `data/stats.json`); the dashed line is the max "
                         "length."),
    "plot.loss.title": ("训练与验证损失", "Train and eval loss"),
    "plot.loss.y": ("损失", "loss"),
    "plot.loss.train": ("训练损失（每个记录窗口）", "train loss (per logging window)"),
    "plot.loss.eval": ("验证损失", "eval loss"),
    "plot.loss.avg": ("全程平均 train_loss = {v}", "run-average train_loss = {v}"),
    "plot.loss.caption": ("训练损失（每个记录窗口的平均）与验证损失；点线为全程平均 `train_loss`。",
                          "Train loss (mean of each logging window) and eval loss; the dotted line is the run-average "
                          "`train_loss`."),
    "plot.lr.title": ("实际使用的学习率", "Learning rate actually used"),
    "plot.lr.y": ("学习率", "learning rate"),
    "plot.lr.logged": ("记录值", "logged"),
    "plot.lr.expected": ("按配置的调度", "configured schedule"),
    "plot.lr.caption": ("实线：训练记录的学习率；虚线：按配置复算的学习率。",
                        "Solid: the learning rate training logged; dashed: the configured schedule, recomputed."),
    "plot.gn.title": ("梯度范数（裁剪前）", "Gradient norm (before clipping)"),
    "plot.gn.y": ("梯度范数", "grad norm"),
    "plot.gn.caption": ("每个记录步的梯度范数。", "Gradient norm at each logging step."),
    "plot.tps.title": ("训练吞吐量", "Training throughput"),
    "plot.tps.y": ("tokens/秒", "tokens/s"),
    "plot.tps.caption": ("每个记录步的 tokens/秒（不含填充）。", "Tokens per second (non-padding) at each logging step."),
    "plot.bm.title": ("基准准确率与 95% 区间", "Benchmark accuracy with 95% intervals"),
    "plot.bm.x": ("准确率", "accuracy"),
    "plot.bm.caption": ("准确率与 95% Wilson 区间；区间重叠时不能单凭准确率说谁更好。",
                        "Accuracy with 95% Wilson intervals; where intervals overlap, accuracy alone ranks nothing."),
    "plot.sf.title": ("安全探测通过率与 95% 区间", "Safety pass rate with 95% intervals"),
    "plot.sf.x": ("通过率", "pass rate"),
    "plot.sf.caption": ("各对比组的安全探测通过率与 95% Wilson 区间。",
                        "Safety pass rate of each arm with 95% Wilson intervals."),

    # ---- general ability next to the medical benchmarks (evaluate.benchmarks kind: general)
    "sec.general": ("医学收益与通用能力代价", "Medical gain and general cost"),
    "gen.intro": ("同一对模型在医学基准和通用（非医学）基准上的准确率之差，各用配对 McNemar 检验（α = {alpha}）："
                  "医学基准上的提高是医学微调的收益，通用基准上的下降是它的代价。A 是对比中的第一个模型（默认为微调后的模型），"
                  "B 是另一个（默认为基座模型）。",
                  "The accuracy difference of the same pair of models on the medical and on the general (non-medical) "
                  "benchmarks, each with a paired McNemar test (α = {alpha}): a rise on the medical ones is the gain of "
                  "medical tuning, a fall on the general ones its cost. A is the comparison's first model (by default "
                  "the tuned one), B the other (by default its base)."),
    "gen.kind": ("类型", "Kind"),
    "gen.medical": ("医学", "medical"),
    "gen.general": ("通用", "general"),
    "gen.acc_a": ("A 的准确率", "Accuracy A"),
    "gen.acc_b": ("B 的准确率", "Accuracy B"),
    "gen.delta": ("A − B", "A − B"),
    "c.general.cost": ("{benchmark}（通用）：{a} 比 {b} 低 {delta}（只有 A 答对 {only_a} 题，只有 B 答对 {only_b} 题，"
                       "配对 McNemar p = {p} < {alpha}）：医学微调付出了通用能力的代价。",
                       "{benchmark} (general): {a} is {delta} below {b} ({only_a} items only A got right, {only_b} only "
                       "B; paired McNemar p = {p} < {alpha}): medical tuning cost general ability."),
    "c.general.gain": ("{benchmark}（通用）：{a} 比 {b} 高 {delta}（只有 A 答对 {only_a} 题，只有 B 答对 {only_b} 题，"
                       "配对 McNemar p = {p} < {alpha}）：没有通用能力的代价。",
                       "{benchmark} (general): {a} is {delta} above {b} ({only_a} items only A got right, {only_b} only "
                       "B; paired McNemar p = {p} < {alpha}): no cost in general ability."),
    "c.general.same": ("{benchmark}（通用）：{a} 与 {b} 相差 {delta}，不显著（只有 A 答对 {only_a} 题，只有 B 答对 "
                       "{only_b} 题，McNemar p = {p} ≥ {alpha}）：没有证据表明通用能力有变化。",
                       "{benchmark} (general): {a} and {b} differ by {delta}, not significantly ({only_a} items only A "
                       "got right, {only_b} only B; McNemar p = {p} ≥ {alpha}): no evidence that general ability "
                       "changed."),

    # ---- multi-turn consultations (eval/consultations/)
    "sec.consult": ("多轮问诊", "Multi-turn consultations"),
    "cs.intro": ("{benchmark}：{cases} 个病例、{questions} 个问题（{file}）。每个模型按顺序回答病例中的问题，"
                 "对话历史里是它自己此前的回答（不含思考内容），而不是参考答案；每轮与参考答案比较：字符级 ROUGE-L 和 "
                 "BLEU-4{judge}。区间为按病例重抽样的 95% bootstrap 区间。",
                 "{benchmark}: {cases} cases, {questions} questions ({file}). Each model answers a case's questions in "
                 "turn with its own earlier answers as the history (thinking removed), never the reference answers; "
                 "every turn is compared with the reference: character ROUGE-L and BLEU-4{judge}. Intervals are 95% "
                 "bootstrap intervals over cases."),
    "cs.judge": ("，以及评审模型 {model} 按 1–10 分量表打分（量表写在结果文件中）",
                 ", and a 1–10 rubric score by the judge {model} (the rubric is written in the result file)"),
    "cs.arm": ("模型", "Model"),
    "cs.rouge": ("ROUGE-L（95% 区间）", "ROUGE-L (95% interval)"),
    "cs.bleu": ("BLEU-4（95% 区间）", "BLEU-4 (95% interval)"),
    "cs.judge_col": ("评审得分 1–10（95% 区间）", "Judge score 1–10 (95% interval)"),
    "cs.judge_failures": ("评审无分数", "Judge gave no score"),
    "cs.capped": ("达到长度上限的回答", "Answers at the length cap"),
    "cs.turn": ("第 {turn} 轮（n = {n}）", "Turn {turn} (n = {n})"),
    "cs.by_turn": ("逐轮 ROUGE-L{judge}：", "ROUGE-L by turn{judge}:"),
    "cs.by_turn_judge": ("和评审得分（括号内）", " and judge score (in brackets)"),
    "cs.turn_note": ("各轮问的内容不同（例如第 1 轮多为诊断，后几轮多为鉴别诊断和治疗），所以逐轮曲线的起伏同时反映轮次和问题类型；"
                     "下表按病例把末轮与首轮配对比较。",
                     "The turns ask different things (often diagnosis first, then differential diagnosis and "
                     "treatment), so the curve mixes turn position and question type; the table below pairs each "
                     "case's last turn with its first."),
    "cs.trend_cases": ("多轮病例数", "Cases with 2+ turns"),
    "cs.trend_rouge": ("ROUGE-L 末轮 − 首轮（95% 区间）", "ROUGE-L last − first turn (95% interval)"),
    "cs.trend_judge": ("评审得分 末轮 − 首轮（95% 区间）", "Judge score last − first turn (95% interval)"),
    "cs.metric_rouge": ("ROUGE-L", "ROUGE-L"),
    "cs.metric_judge": ("评审得分", "the judge score"),
    "cs.no_arms": ("{file} 中没有模型的结果。", "{file} holds no model's results."),
    "plot.cs.title": ("逐轮 ROUGE-L：{benchmark}", "ROUGE-L by turn: {benchmark}"),
    "plot.cs.judge_title": ("逐轮评审得分：{benchmark}", "Judge score by turn: {benchmark}"),

    # ---- rubric-graded consultations (eval/rubric/)
    "sec.rubric": ("评分标准问诊", "Rubric-graded consultations"),
    "rb.intro": ("每个模型回答每段对话；评分模型逐条判断每条标准是否满足。一个例子的得分 = 满足的标准的分值之和 ÷ "
                 "正分值之和（负分标准是不应出现的行为，满足即扣分）；模型得分 = 各例子得分的均值，截断到 [0, 1]，"
                 "附按例子重抽样的 95% bootstrap 区间。评分失败或无法解析的标准会被计数，该例子不计分，绝不猜测。",
                 "Each model answers each conversation; a grader model decides every criterion separately. An "
                 "example's score = points of the criteria met ÷ the sum of positive points (a negative criterion is "
                 "something the answer must not do: meeting it costs points); a model's score = the mean over "
                 "examples, clipped to [0, 1], with a 95% bootstrap interval over examples. Criteria the grader "
                 "failed on or answered unparsably are counted and their example is left unscored, never guessed."),
    "rb.set": ("{examples} 个例子、{criteria} 条标准（{file}），评分模型 {grader}。",
               "{examples} examples, {criteria} criteria ({file}), grader {grader}."),
    "rb.rules": ("评分模型是按固定规则判断的回环评分器（标准中「」引用的短语出现在回答里即算满足）：这些数字检验的是流程，"
                 "不是模型的水平。要得到真实分数，请把 evaluate.grader_base_url 指向真正的评分模型。",
                 "The grader is the loopback grader that decides by fixed rules (a criterion is met when the answer "
                 "holds a phrase it quotes in 「」): these numbers test the pipeline, not the model. Point "
                 "evaluate.grader_base_url at a real grader model for real scores."),
    "rb.rejected": ("{n} 行不符合格式，已跳过（文件、行号和原因列在 {file} 的 rejected 中）。",
                    "{n} rows were not in the layout and were skipped (file, line and reason under rejected in "
                    "{file})."),
    "rb.model": ("模型", "Model"),
    "rb.ideal": ("理想回答（上限）", "Ideal completions (ceiling)"),
    "rb.score": ("得分（95% 区间）", "Score (95% interval)"),
    "rb.scored": ("计分例子 / 例子", "Scored / examples"),
    "rb.negative": ("负分标准命中（比例）", "Negative criteria hit (rate)"),
    "rb.failed": ("评分失败 / 无法解析", "Grader failed / unparsable"),
    "rb.by_tag": ("按标签（theme: 为例子标签，axis: 为标准标签，按该标签的标准计分）：",
                  "By tag (theme: tags label examples, axis: tags label criteria, scored on that tag's criteria):"),
    "rb.tag": ("标签", "Tag"),
    "rb.paired": ("第一个模型与其他模型逐例配对比较（两者都计分的例子，得分差不截断，95% bootstrap 区间）：",
                  "The first model against each other one, example by example (examples both scored; "
                  "differences of unclipped scores, 95% bootstrap interval):"),
    "rb.difference": ("A − B 得分差（95% 区间）", "A − B score difference (95% interval)"),
    "rb.verdict": ("结论", "Verdict"),
    "rb.differs": ("有差异（区间不含 0）", "differs (interval excludes 0)"),
    "rb.no_difference": ("无证据表明有差异", "no evidence of a difference"),
    "rb.meta": ("评分模型与医师标注的一致性：宏 F1 {f1}，一致率 {agree}（n = {n}，医师意见各半的 {ties} 条不计）。",
                "Grader agreement with physician labels: macro F1 {f1}, agreement {agree} (n = {n}; {ties} criteria "
                "where the physicians split evenly left out)."),
    "rb.worst": ("每个模型得分最低的 {k} 个例子，以及未满足的正分标准和命中的负分标准：",
                 "Each model's {k} lowest-scoring examples, with the positive criteria missed and the negative "
                 "criteria hit:"),
    "rb.example": ("例子", "Example"),
    "rb.example_score": ("得分", "Score"),
    "rb.question": ("最后一条用户消息", "Last user message"),
    "rb.missed": ("未满足", "Missed"),
    "rb.hit": ("命中的负分标准", "Negative criteria hit"),
    "plot.cs.x": ("轮次", "turn"),
    "plot.cs.caption": ("每轮所有病例的平均值；该轮没有问题的病例不计入。",
                        "Mean over the cases that have a question at that turn."),
    "c.consult.none": ("多轮问诊：配置了问诊集，但没有结果（`eval/consultations/`），无法判断质量是否随轮次下降。",
                       "Consultations: a consultation set is configured but has no results (`eval/consultations/`), "
                       "so whether quality falls over the turns is not known."),
    "c.consult.nodata": ("{benchmark}，{arm}：没有可配对的首轮与末轮{metric}，不作判断。",
                         "{benchmark}, {arm}: no first and last turn {metric} to pair; no claim."),
    "c.consult.few": ("{benchmark}，{arm}：只有 {n} 个多轮病例（少于 {min_n}），不足以判断{metric}是否随轮次下降"
                      "（末轮 − 首轮 {change}）。",
                      "{benchmark}, {arm}: only {n} cases with several turns (fewer than {min_n}): too few to tell "
                      "whether {metric} falls over the turns (last − first {change})."),
    "c.consult.falls": ("{benchmark}，{arm}：{metric}随轮次下降：末轮比首轮低（末轮 − 首轮 {change}，95% 区间 {lo} 至 "
                        "{hi}，不含 0，{n} 个病例）。",
                        "{benchmark}, {arm}: {metric} falls over the turns: last − first turn {change} (95% interval "
                        "{lo} to {hi}, excluding 0; {n} cases)."),
    "c.consult.rises": ("{benchmark}，{arm}：{metric}在末轮高于首轮（末轮 − 首轮 {change}，95% 区间 {lo} 至 {hi}，"
                        "不含 0，{n} 个病例）。",
                        "{benchmark}, {arm}: {metric} is higher at the last turn than the first (last − first {change}, "
                        "95% interval {lo} to {hi}, excluding 0; {n} cases)."),
    "c.consult.flat": ("{benchmark}，{arm}：没有证据表明{metric}随轮次下降（末轮 − 首轮 {change}，95% 区间 {lo} 至 "
                       "{hi}，含 0，{n} 个病例）。",
                       "{benchmark}, {arm}: no evidence that {metric} falls over the turns (last − first {change}, "
                       "95% interval {lo} to {hi}, including 0; {n} cases)."),
    # clinician review (review/stats.json, written by `medtune review stats`)
    "sec.review": ("医生评审", "Clinician review"),
    "rv.no_stats": ("有评审数据（{dir}），但还没有 {file}：运行 `medtune review stats RUN_DIR` 后再生成报告。",
                    "There are review judgments ({dir}) but no {file} yet: run `medtune review stats RUN_DIR`, then the "
                    "report again."),
    "rv.intro": ("{reviewers} 位医生在盲评页面上（模型名隐藏，每位医生每题的回答顺序随机且有记录）给出 {n} 条判断，覆盖 "
                 "{judged}/{items} 题。胜率 = (胜 + 平/2) / 比较次数，95% Wilson 区间；排名为 Bradley-Terry 强度（对数尺度）。",
                 "{reviewers} clinicians gave {n} judgments on {judged} of {items} items in the blinded review page "
                 "(model names hidden, answer order randomized per reviewer and item, and recorded). Win rate = "
                 "(wins + ties/2) / comparisons, 95% Wilson interval; the ranking is by Bradley-Terry strength (log scale)."),
    "rv.none": ("还没有判断。", "No judgments yet."),
    "rv.model": ("模型", "Model"),
    "rv.rank": ("名次", "Rank"),
    "rv.comparisons": ("比较次数", "Comparisons"),
    "rv.wtl": ("胜 / 平 / 负", "Wins / ties / losses"),
    "rv.win_rate": ("胜率 [95% 区间]", "Win rate [95% interval]"),
    "rv.bt": ("Bradley-Terry", "Bradley-Terry"),
    "rv.ratings": ("每个回答的评分（占已评该项的回答的比例，95% 区间）：", "Per-answer ratings (share of the answers rated "
                   "on that field, 95% interval):"),
    "rv.accurate": ("医学准确", "Medically accurate"),
    "rv.complete": ("完整", "Complete"),
    "rv.harmful": ("有害建议", "Harmful advice"),
    "rv.missed": ("漏掉急症", "Missed emergency"),
    "rv.agreement": ("医生间一致性：判断（更好的回答或平手）{verdict}；安全标记（安全/不安全）{safety}。",
                     "Agreement between clinicians: on the verdict (better answer or tie) {verdict}; on the safety "
                     "flag (safe or not) {safety}."),
    "rv.kappa": ("{method} kappa = {kappa}（{units} 个共同评审单位，一致率 {observed}）",
                 "{method}'s kappa = {kappa} ({units} units judged in common, {observed} identical)"),
    "rv.no_kappa": ("无法计算（少于两位医生评审同一内容）", "not measurable (fewer than two clinicians on the same units)"),
    "rv.position": ("位置偏差：医生选择先显示的回答的比例为 {rate}（{lo}–{hi}，{n} 次非平手的两答案判断；无偏差时为 50%）。",
                    "Position bias: clinicians preferred the answer shown first in {rate} ({lo}–{hi}) of {n} decided "
                    "two-answer judgments (50% means none)."),
    "rv.judge": ("LLM 评审与医生多数意见在同一问题、同一对模型上的一致率为 {agree}（{lo}–{hi}，{n} 对），Cohen kappa = "
                 "{kappa}。评审模型选择先显示回答的比例为 {first}；医生偏好的回答先显示时评审模型与之一致的比例为 "
                 "{when_first}，后显示时为 {when_second}。",
                 "The LLM judge agrees with the clinicians' majority on the same question and pair in {agree} ({lo}–"
                 "{hi}; {n} pairs), Cohen's kappa = {kappa}. The judge picks the answer shown first in {first}; it "
                 "agrees with the clinicians in {when_first} when their preferred answer is shown first and in "
                 "{when_second} when it is shown second."),
    "rv.disagreements": ("需要裁定的题目（医生判断或安全标记不一致），共 {n} 题：", "Items to adjudicate (clinicians "
                         "disagree on the verdict or the safety flag), {n} in all:"),
    "rv.item": ("题目", "Item"),
    "rv.question": ("问题", "Question"),
    "rv.verdicts": ("各医生判断", "Verdicts"),
    "rv.safety": ("安全标记分歧", "Safety flags in dispute"),
    "rv.no_disagreements": ("医生之间没有分歧的题目。", "No item on which the clinicians disagree."),
}


class Text:
    """The report's words in one language."""

    def __init__(self, lang: str):
        if lang not in LANGS:
            raise ValueError(f"language {lang!r}: use one of {', '.join(LANGS)}")
        self.lang = lang
        self._i = LANGS.index(lang)

    def __call__(self, key: str, **values) -> str:
        return STRINGS[key][self._i].format(**{k: self._value(v) for k, v in values.items()})

    def _value(self, v):
        if isinstance(v, Key):
            return self(v)
        if isinstance(v, list):
            return self.join([self._value(x) for x in v])
        return v

    def join(self, items: list[str]) -> str:
        """An enumeration: a、b、c / a, b, c."""
        return ("、" if self.lang == "zh" else ", ").join(items)

    def clauses(self, items: list[str | None]) -> str:
        """Clauses of one description, empty ones left out: a,b / a, b."""
        return ("，" if self.lang == "zh" else ", ").join(i for i in items if i)

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        zh = self.lang == "zh"
        if seconds < 60:
            return f"{seconds:.1f} 秒" if zh else f"{seconds:.1f} s"
        minutes, secs = divmod(round(seconds), 60)
        if minutes < 60:
            return f"{minutes} 分 {secs} 秒" if zh else f"{minutes} min {secs} s"
        hours, minutes = divmod(minutes, 60)
        return f"{hours} 小时 {minutes} 分" if zh else f"{hours} h {minutes} min"
