"""The prepare stage: dialogue files -> validated, de-duplicated, split and tokenized datasets.

Run as: medtune prepare CONFIG.yaml [--set data.max_samples=1000]

Writes <output_dir>/data/: train/ and val/ (datasets.save_to_disk; input_ids, labels, length),
stats.json, rejected.jsonl (every record not kept, with source, line and reason) and manifest.json
(input sha256s, tokenizer hash, fingerprint).

One streaming pass: records are read, validated, de-duplicated and tokenized in chunks, and samples
go straight to an Arrow file on disk, so memory stays flat for any input size. Selection happens
after the pass, over the records that are usable (valid, unique, fitting max_length), so
`max_samples` and `val_size` are met exactly whenever there are enough records. The tokenizer (Rust,
both cores) works on one chunk while Python validates the next.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
from tqdm import tqdm

from medtune import __version__
from medtune.assets import load_tokenizer, tokenizer_fingerprint, tokenizer_source
from medtune.config import Config
from medtune.data.readers import (
    Conversation,
    InputError,
    RecordError,
    Source,
    control_texts,
    expand_sources,
    iter_raw_records,
    to_conversation,
)
from medtune.data.template import ConversationTemplate
from medtune.errors import UserError
from medtune.rundir import fingerprint, is_current, read_json, sha256_file, write_json

PREPARE_FORMAT = 1  # bump when the output of the same inputs changes
CHUNK = 2048
IGNORE = -100


class PrepareError(UserError):
    """The stage cannot produce a dataset (no valid records, unreadable input)."""


@dataclass
class Counts:
    read: int = 0
    rejected: int = 0
    duplicates: int = 0
    dropped_too_long: int = 0
    truncated: int = 0
    usable: int = 0
    unused: int = 0
    kept: int = 0
    train: int = 0
    val: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Counts") -> None:
        for name, value in vars(other).items():
            if name == "rejected_reasons":
                for kind, k in value.items():
                    self.rejected_reasons[kind] = self.rejected_reasons.get(kind, 0) + k
            else:
                setattr(self, name, getattr(self, name) + value)


def data_fingerprint(cfg: Config, tokenizer_fp: str, sources: list[Source],
                     excluded: list[str]) -> tuple[str, list[dict]]:
    described = []
    for role, p in [(s.role, f) for s in sources for f in s.files] + [("exclude", p) for p in excluded]:
        if os.path.exists(p):
            described.append({"role": role, "path": os.path.abspath(p), "bytes": os.path.getsize(p),
                              "sha256": sha256_file(Path(os.path.abspath(p)))})
        else:
            described.append({"role": role, "hub_id": p, "split": cfg.data.hub_split})
    fp = fingerprint({
        "format": PREPARE_FORMAT,
        "data": cfg.to_dict()["data"],
        "tokenizer": tokenizer_fp,
        "inputs": [{k: v for k, v in d.items() if k != "path"} for d in described],
    })
    return fp, described


def prepare_dataset(cfg: Config, force: bool = False, log=print) -> dict:
    """Run the prepare stage; returns stats (also written to data/stats.json)."""
    started = time.perf_counter()
    data_dir = cfg.run_dir / "data"
    try:
        sources = expand_sources(cfg.data)
    except InputError as e:
        raise PrepareError(str(e)) from None
    if not cfg.data.train_files:
        raise PrepareError("data.train_files is empty: name at least one file, glob or hub dataset id")
    excluder = _Excluder(cfg) if cfg.data.exclude else None
    tokenizer = load_tokenizer(cfg.model)
    tokenizer_fp = tokenizer_fingerprint(tokenizer)  # serialises the whole vocabulary: once
    fp, described = data_fingerprint(cfg, tokenizer_fp, sources, excluder.paths if excluder else [])
    if not force and is_current(data_dir / "manifest.json", fp, data_dir / "train", data_dir / "stats.json"):
        log(f"prepare: {data_dir} is up to date (fingerprint {fp}); skipping (--force reruns it)")
        return read_json(data_dir / "stats.json")

    template = ConversationTemplate(tokenizer, multi_turn=cfg.data.multi_turn)
    tmp = data_dir.parent / f".data.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    inputs = [f for s in sources if s.role == "train" for f in s.files]
    val_inputs = [f for s in sources if s.role == "val" for f in s.files]
    log(f"prepare: reading {len(inputs)} input(s): {', '.join(inputs)}"
        + (f"; validation from {', '.join(val_inputs)}" if val_inputs else ""))
    try:
        counts, per_source, lengths, target_tokens = _prepare_into(cfg, tokenizer, template, sources, excluder, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    stats = _stats(counts, lengths, target_tokens, seconds, cfg)
    stats["sources"] = [_source_stats(s, c, counts.train) for s, c in zip(sources, per_source)]
    write_json(tmp / "stats.json", stats)
    write_json(tmp / "manifest.json", {
        "fingerprint": fp, "medtune_version": __version__, "inputs": described,
        "tokenizer": {"source": tokenizer_source(cfg.model), "class": type(tokenizer).__name__,
                      "fingerprint": tokenizer_fp, "vocab_size": len(tokenizer),
                      "end_of_turn": template.end_of_turn, "generation_prompt": template.generation_prompt},
        "multi_turn": cfg.data.multi_turn, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if data_dir.exists():
        shutil.rmtree(data_dir)
    os.replace(tmp, data_dir)
    log(f"prepare: {counts.read} read, {counts.kept} kept, {counts.rejected} rejected, {counts.duplicates} "
        f"duplicates, {counts.dropped_too_long} too long, {counts.truncated} truncated, {counts.unused} unused "
        f"-> train {counts.train}, val {counts.val} samples in {seconds:.1f} s "
        f"({stats['examples_per_second']:.0f} examples/s); see {data_dir}/stats.json")
    if counts.rejected + counts.duplicates + counts.dropped_too_long:
        log(f"prepare: not kept: {_top_reasons(counts)}; each is listed in {data_dir}/rejected.jsonl")
    return stats


def _prepare_into(cfg: Config, tokenizer, template: ConversationTemplate, sources: list[Source], excluder, tmp: Path):
    per_source = [Counts() for _ in sources]  # the totals are their sum
    forbidden = control_texts(tokenizer)
    builder = _SampleBuilder(cfg, tokenizer, template, tmp / "samples.arrow")
    seen: dict[bytes, tuple[str, int]] = {}
    pending = None  # (chunk, future): the tokenizer works on one chunk while the next is validated
    with (open(tmp / "rejected.jsonl", "wb") as rejected, ThreadPoolExecutor(1) as pool,
          tqdm(desc="prepare", unit=" rec", disable=None) as bar):
        validated = _validated(sources, forbidden, excluder, seen, rejected, per_source, bar)
        for chunk in _batched(validated, CHUNK):
            future = pool.submit(builder.encode, chunk)
            if pending:
                builder.write(*pending, rejected, per_source)
            pending = (chunk, future)
        if pending:
            builder.write(*pending, rejected, per_source)
        builder.close()
    counts = _total(per_source)
    if counts.usable == 0:
        raise PrepareError(f"no usable records in {', '.join(f for s in sources for f in s.files)}: {counts.read} "
                           f"read, {counts.rejected} rejected, {counts.duplicates} duplicates, {counts.dropped_too_long} "
                           f"too long ({_top_reasons(counts)}); see the reasons in {tmp.parent / 'data' / 'rejected.jsonl'}")
    record_source = np.frombuffer(builder.record_source, dtype=np.int16)
    split_of = _select(cfg, record_source, sources)

    import datasets  # slow to import; only needed here

    datasets.disable_progress_bars()
    samples = datasets.Dataset.from_file(str(tmp / "samples.arrow"))
    sample_record = samples.data.column("record").to_numpy()
    sample_split = split_of[sample_record]
    lengths = samples.data.column("length").to_numpy()
    n_target = samples.data.column("target_tokens").to_numpy()
    kept_lengths, target_tokens = [], {}
    for code, name in ((1, "train"), (2, "val")):
        rows = np.flatnonzero(sample_split == code)
        if name == "train":
            rows = rows[np.argsort(_interleave_keys(record_source, split_of, cfg.data.seed)[sample_record[rows]],
                                   kind="stable")]
        if len(rows):  # no val/ when val_size is 0: a zero-row dataset on disk cannot be loaded back
            samples.select(rows).select_columns(["input_ids", "labels", "length"]).save_to_disk(str(tmp / name))
        for c, k in zip(per_source, np.bincount(record_source[sample_record[rows]], minlength=len(sources))):
            setattr(c, name, int(k))
        kept_lengths.append(lengths[rows])
        target_tokens[name] = int(n_target[rows].sum())
    del samples
    (tmp / "samples.arrow").unlink()
    for c, src in zip(per_source, range(len(sources))):
        c.kept = int(((split_of > 0) & (record_source == src)).sum())
        c.unused = int(((split_of == 0) & (record_source == src)).sum())
    _write_records(tmp / "records.parquet", builder, record_source, split_of)
    return _total(per_source), per_source, np.concatenate(kept_lengths), target_tokens


def _total(per_source: list[Counts]) -> Counts:
    total = Counts()
    for c in per_source:
        total.add(c)
    return total


def _write_records(path: Path, builder: "_SampleBuilder", record_source: np.ndarray, split_of: np.ndarray) -> None:
    """data/records.parquet: where every kept record came from (the contamination check reads the train ones)."""
    import pyarrow.parquet as pq

    kept = np.flatnonzero(split_of > 0)
    pq.write_table(pa.table({
        "file": pa.array([builder.record_file[i] for i in kept]).dictionary_encode(),
        "line": pa.array(np.asarray(builder.record_line, dtype=np.int64)[kept]),
        "source": pa.array(record_source[kept].astype(np.int32)),
        "split": pa.array(np.where(split_of[kept] == 1, "train", "val")).dictionary_encode(),
    }), path)


def _batched(iterable, n):
    it = iter(iterable)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _reject(out, counts: Counts, source: str, line: int, reason: str, text: str | None = None,
            kind: str | None = None) -> None:
    counts.rejected += 1
    kind = kind or reason.split(":")[0]
    counts.rejected_reasons[kind] = counts.rejected_reasons.get(kind, 0) + 1
    entry = {"source": source, "line": line, "reason": reason}
    if text is not None:
        entry["text"] = text
    out.write(orjson.dumps(entry) + b"\n")


def _validated(sources: list[Source], forbidden, excluder, seen, rejected, per_source: list[Counts], bar):
    """Every record of every input, validated: yields (conversation, source index); lists the rest."""
    for source in sources:
        counts, data = per_source[source.index], source.data
        for spec in source.files:
            for rec in iter_raw_records(spec, data):
                counts.read += 1
                bar.update()
                try:
                    conv = to_conversation(rec, data, forbidden)
                except RecordError as e:
                    text = rec.text if rec.text is not None else orjson.dumps(rec.data, default=str)[:300].decode(
                        "utf-8", "replace")
                    _reject(rejected, counts, rec.source, rec.line, str(e), text)
                    continue
                if excluder and source.role == "train" and (hit := excluder.first(conv)):
                    _reject(rejected, counts, rec.source, rec.line, hit, kind=EXCLUDED)
                    continue
                if data.dedup:
                    key = hashlib.blake2b(conv.key(), digest_size=16).digest()
                    if (first := seen.get(key)) is not None:
                        counts.duplicates += 1
                        rejected.write(orjson.dumps({"source": rec.source, "line": rec.line,
                                                     "reason": f"duplicate of {first[0]}:{first[1]}"}) + b"\n")
                        continue
                    seen[key] = (spec, rec.line)
                yield conv, source.index


EXCLUDED = "overlaps evaluation item"


class _Excluder:
    """data.exclude: the evaluation items no training dialogue may contain (medtune.overlap's tests)."""

    def __init__(self, cfg: Config):
        # The evaluation files' readers live with the evaluate stage; they read files and import no model code.
        from medtune.data.contamination import dialogue_texts, exclude_files
        from medtune.data.overlap import OverlapIndex

        files = exclude_files(cfg)
        self.paths = [f.path for f in files]
        self.where = [f"{f.path}:{it.line}" for f in files for it in f.items]
        self.index = OverlapIndex([it for f in files for it in f.items])
        self.texts = dialogue_texts

    def first(self, conv: Conversation) -> str | None:
        """The rejection reason naming the item this dialogue overlaps most, or None."""
        matches = self.index.match(self.texts(conv.system, conv.turns))
        if not matches:
            return None
        best = max(matches, key=lambda m: (m.exact, m.coverage))
        how = "exact" if best.exact else f"{best.coverage:.0%} of its characters"
        return f"{EXCLUDED} {self.where[best.item]} ({how})"


@dataclass
class _Encoded:
    """A chunk's samples, tokenized: each sample a list of (token ids, trained) pieces, every answer followed
    by the end-of-turn ids as a trained piece of its own."""

    samples: list[list[tuple[list[int], bool]]]
    owner: list[int]
    """the chunk index of each sample's conversation"""
    lower_bound: dict[int, int]
    """sample -> at least this many tokens: certainly too long, so its pieces were not tokenized (left empty)"""


@dataclass
class _Rows:
    """The samples kept from one chunk, as the columns of the Arrow file."""

    ids: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    conversation: list[int] = field(default_factory=list)
    """the chunk index of each row's conversation"""

    def add(self, ids: np.ndarray, labels: np.ndarray, n_target: int, conversation: int) -> None:
        self.ids.append(ids)
        self.labels.append(labels)
        self.lengths.append(len(ids))
        self.targets.append(n_target)
        self.conversation.append(conversation)


class _SampleBuilder:
    """Tokenizes chunks of conversations into labelled samples and streams them to an Arrow file."""

    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("length", pa.int32()), ("target_tokens", pa.int32()), ("record", pa.int64())])

    def __init__(self, cfg: Config, tokenizer, template: ConversationTemplate, path: Path):
        self.cfg, self.tokenizer, self.template = cfg, tokenizer, template
        self.backend = tokenizer.backend_tokenizer
        self.eot = template.end_of_turn_ids
        self.writer = pa.ipc.new_stream(str(path), self.schema)
        # No token is longer than this many characters, so a text of more than max_length times it
        # characters is too long for certain, and is not tokenized at all (a 10 MB line costs nothing).
        self.max_token_chars = max(map(len, tokenizer.get_vocab()))
        # Per usable record (numbered in order): its source index, file and line.
        self.record_source, self.record_file, self.record_line = array("h"), [], array("q")

    def encode(self, chunk) -> _Encoded:
        """Runs in the worker thread: render every sample's pieces and tokenize them in one Rust call."""
        samples, owner, lower_bound = [], [], {}
        for ci, (conv, _) in enumerate(chunk):
            for pieces in self.template.segments(conv):
                min_tokens = sum(len(text) for text, _ in pieces) // self.max_token_chars
                if min_tokens > self.cfg.data.max_length:
                    lower_bound[len(samples)] = min_tokens
                    pieces = [("", trained) for _, trained in pieces]
                samples.append(pieces)
                owner.append(ci)
        unique = list(dict.fromkeys(text for pieces in samples for text, _ in pieces))  # trailers etc. once
        ids = dict(zip(unique, (e.ids for e in self.backend.encode_batch_fast(unique, add_special_tokens=False))))
        return _Encoded([self._with_end_of_turn([(ids[text], trained) for text, trained in pieces])
                         for pieces in samples], owner, lower_bound)

    def _with_end_of_turn(self, pieces: list[tuple[list[int], bool]]) -> list[tuple[list[int], bool]]:
        out = []
        for ids, is_answer in pieces:
            out.append((ids, is_answer))
            if is_answer:
                out.append((self.eot, True))
        return out

    def write(self, chunk, future, rejected, per_source: list[Counts]) -> None:
        """Keep the chunk's samples that fit (or their truncation), number the usable records, list the rest
        as rejected, and append the kept samples to the Arrow file."""
        rows, too_long = self._fitting(chunk, future.result(), per_source)
        record_no = self._number_records(chunk, rows, too_long, rejected, per_source)
        if not rows.ids:
            return
        lens = np.asarray(rows.lengths, dtype=np.int32)
        offs = pa.array(np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]).astype(np.int32))
        self.writer.write_batch(pa.RecordBatch.from_arrays([
            pa.ListArray.from_arrays(offs, pa.array(np.concatenate(rows.ids))),
            pa.ListArray.from_arrays(offs, pa.array(np.concatenate(rows.labels))),
            pa.array(lens), pa.array(np.asarray(rows.targets, dtype=np.int32)),
            pa.array(record_no[np.asarray(rows.conversation)]),
        ], schema=self.schema))

    def _fitting(self, chunk, encoded: _Encoded, per_source: list[Counts]) -> tuple[_Rows, dict[int, tuple[int, bool]]]:
        """The samples within max_length, and for each conversation with some that are not, the longest one's
        length (and whether that is a lower bound)."""
        max_len, d = self.cfg.data.max_length, self.cfg.data
        ids, labels, offsets, targets = _flatten(encoded.samples)
        rows, too_long = _Rows(), {}
        for si, ci in enumerate(encoded.owner):
            length = encoded.lower_bound.get(si, int(offsets[si + 1] - offsets[si]))
            if length <= max_len:
                rows.add(ids[offsets[si]:offsets[si + 1]], labels[offsets[si]:offsets[si + 1]], int(targets[si]), ci)
                continue
            conv = chunk[ci][0]
            short = self._truncate_turns(conv) if (d.truncation == "turn" and d.multi_turn == "joint"
                                                   and len(conv.turns) > 1) else None
            if short is not None:
                rows.add(*short, ci)
                per_source[chunk[ci][1]].truncated += 1
                continue
            too_long[ci] = max(too_long.get(ci, (0, False)), (length, si in encoded.lower_bound))
        return rows, too_long

    def _number_records(self, chunk, rows: _Rows, too_long: dict[int, tuple[int, bool]], rejected,
                        per_source: list[Counts]) -> np.ndarray:
        """Usable records (some sample kept) get the next record number; wholly over-long ones are rejected."""
        kept = set(rows.conversation)
        record_no = np.full(len(chunk), -1, dtype=np.int64)
        for ci, (conv, src) in enumerate(chunk):
            counts = per_source[src]
            if ci in kept:
                record_no[ci] = len(self.record_source)
                counts.usable += 1
                self.record_source.append(src), self.record_file.append(conv.source), self.record_line.append(conv.line)
                if ci in too_long:
                    counts.truncated += 1  # expand mode: some answers of this dialogue did not fit
                continue
            counts.dropped_too_long += 1
            counts.rejected_reasons["too long"] = counts.rejected_reasons.get("too long", 0) + 1
            length, is_bound = too_long[ci]
            hint = " (even its first turn alone)" if len(conv.turns) > 1 and self.cfg.data.truncation == "turn" else ""
            rejected.write(orjson.dumps({
                "source": conv.source, "line": conv.line,
                "reason": f"too long: {'at least ' if is_bound else ''}{length} tokens > data.max_length "
                          f"{self.cfg.data.max_length}{hint}"}) + b"\n")
        return record_no

    def _truncate_turns(self, conv: Conversation):
        """The longest run of leading whole turns that fits: (ids, labels, n_target), or None."""
        for n in range(len(conv.turns) - 1, 0, -1):
            (pieces,) = self.template.segments(Conversation(conv.system, conv.turns[:n], conv.source, conv.line))
            tokenized = [(self.tokenizer(text, add_special_tokens=False)["input_ids"], is_answer)
                         for text, is_answer in pieces]
            ids, labels, offsets, targets = _flatten([self._with_end_of_turn(tokenized)])
            if len(ids) <= self.cfg.data.max_length:
                return ids, labels, int(targets[0])
        return None

    def close(self):
        self.writer.close()


def _flatten(samples: list[list[tuple[list[int], bool]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every sample's pieces in one array: (ids, labels (IGNORE where not trained), sample offsets, trained tokens
    per sample). Vectorised: a chunk has thousands of samples."""
    pieces = [piece for sample in samples for piece in sample]
    piece_lens = np.fromiter((len(ids) for ids, _ in pieces), dtype=np.int64, count=len(pieces))
    ids = np.fromiter(itertools.chain.from_iterable(ids for ids, _ in pieces), dtype=np.int32,
                      count=int(piece_lens.sum()))
    trained = np.fromiter((is_trained for _, is_trained in pieces), dtype=bool, count=len(pieces))
    labels = np.where(np.repeat(trained, piece_lens), ids, IGNORE).astype(np.int32)
    starts = np.cumsum([0] + [len(sample) for sample in samples[:-1]]).astype(np.int64)
    sample_lens = np.add.reduceat(piece_lens, starts)
    offsets = np.concatenate([[0], np.cumsum(sample_lens)])
    return ids, labels, offsets, np.add.reduceat(piece_lens * trained, starts)


def _select(cfg: Config, record_source: np.ndarray, sources: list[Source]) -> np.ndarray:
    """Split code per usable record: 0 unused, 1 train, 2 val. Deterministic for a seed; never overlapping.

    Validation first (data.val_files, or val_size records of all sources), then each source's own
    max_samples, then the mixture: with weights, source i gets round(T * w_i / sum(w)) records, T being
    data.max_samples or else the largest total every source can fill without repeating a record;
    without weights, data.max_samples applies to all sources together in file order.
    """
    d = cfg.data
    n = len(record_source)
    split_of = np.zeros(n, dtype=np.int8)
    rng = np.random.default_rng(d.seed)
    from_val_file = np.isin(record_source, [s.index for s in sources if s.role == "val"])
    if from_val_file.any():  # validation comes from data.val_files
        split_of[from_val_file] = 2
    else:
        n_val = int(d.val_size) if d.val_size >= 1 else int(round(d.val_size * n))
        if n_val >= n:
            raise PrepareError(f"data.val_size asks for {n_val} validation records but only {n} usable records "
                               "exist: nothing would be left to train on")
        if n_val:
            split_of[rng.choice(n, size=n_val, replace=False)] = 2
    train = [s for s in sources if s.role == "train"]
    pools = [_pick(np.flatnonzero((split_of == 0) & (record_source == s.index)), s.max_samples, d.select, rng)
             for s in train]
    if train[0].weight is not None:
        pool = np.concatenate([_pick(p, k, d.select, rng) for p, k in zip(pools, _mixture_sizes(train, pools, d))])
    else:
        pool = np.sort(np.concatenate(pools))
        pool = _pick(pool, d.max_samples, d.select, rng)
    split_of[pool] = 1
    return split_of


def _pick(pool: np.ndarray, k: int | None, select: str, rng) -> np.ndarray:
    """k records of a pool (sorted record numbers): the first k, or a seeded random k kept in file order."""
    if k is None or k >= len(pool):
        return pool
    return pool[:k] if select == "first" else np.sort(rng.permutation(pool)[:k])


def _mixture_sizes(train: list[Source], pools: list[np.ndarray], d) -> list[int]:
    """Records per source for the weights' shares (largest remainder, so they sum to the total exactly)."""
    shares = np.array([s.weight for s in train], dtype=float)
    shares /= shares.sum()
    have = np.array([len(p) for p in pools])
    total = d.max_samples if d.max_samples is not None else int(np.floor(min(have / shares) + 1e-9))
    exact = total * shares
    sizes = np.floor(exact).astype(int)
    sizes[np.argsort(-(exact - sizes), kind="stable")[: total - sizes.sum()]] += 1
    for s, want, got in zip(train, sizes, have):
        if want > got:
            raise PrepareError(f"data.train_files '{s.spec}': its weight asks for {want} of the {total} training "
                               f"records but it has only {got} usable; lower data.max_samples or this weight")
    return sizes.tolist()


def _interleave_keys(record_source: np.ndarray, split_of: np.ndarray, seed: int) -> np.ndarray:
    """A sort key per record that spreads each source evenly through the training set.

    The k-th of a source's m training records gets (k + u) / m, u a seeded offset per source, so every
    prefix of train/ holds each source's share to within a record or two. With one source the keys
    keep file order. (The Trainer still shuffles each epoch; this makes train/ itself a mixture.)
    """
    if len(np.unique(record_source[split_of == 1])) <= 1:
        return np.arange(len(record_source), dtype=float)
    keys = np.zeros(len(record_source))
    rng = np.random.default_rng([seed, 1])
    for src in np.unique(record_source):
        rows = np.flatnonzero((record_source == src) & (split_of == 1))
        keys[rows] = (np.arange(len(rows)) + rng.random()) / max(len(rows), 1)
    return keys


def _top_reasons(counts: Counts) -> str:
    reasons = dict(counts.rejected_reasons)
    if counts.duplicates:
        reasons["duplicate"] = counts.duplicates
    if not reasons:
        return "none"
    return ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:6])


def _source_stats(source: Source, c: Counts, train_total: int) -> dict:
    """One source's accounting: read == kept + rejected + duplicates + dropped_too_long + unused."""
    return {"index": source.index, "path": source.spec, "role": source.role, "files": source.files,
            "format": source.data.format, "weight": source.weight, "max_samples": source.max_samples,
            "read": c.read, "kept": c.kept, "rejected": c.rejected, "duplicates": c.duplicates,
            "dropped_too_long": c.dropped_too_long, "truncated": c.truncated, "unused": c.unused,
            "train": c.train, "val": c.val, "train_share": round(c.train / train_total, 4) if train_total else 0.0,
            "rejected_reasons": c.rejected_reasons}


def _stats(counts: Counts, lengths: np.ndarray, target_tokens: dict, seconds: float, cfg: Config) -> dict:
    has = len(lengths) > 0
    hist_counts, edges = np.histogram(lengths, bins=20) if has else (np.zeros(0), np.zeros(0))
    return {
        "read": counts.read,
        "kept": counts.kept,
        "rejected": counts.rejected,
        "duplicates": counts.duplicates,
        "dropped_too_long": counts.dropped_too_long,
        "truncated": counts.truncated,
        "unused": counts.unused,
        "train": counts.train,
        "val": counts.val,
        "rejected_reasons": counts.rejected_reasons,
        "tokens": int(lengths.sum()),
        "train_target_tokens": target_tokens.get("train", 0),
        "val_target_tokens": target_tokens.get("val", 0),
        "token_length": {
            "mean": round(float(lengths.mean()), 1) if has else 0.0,
            **{f"p{q}": int(np.percentile(lengths, q)) if has else 0 for q in (50, 90, 99)},
            "max": int(lengths.max()) if has else 0,
        },
        "length_histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in hist_counts]},
        "max_length": cfg.data.max_length,
        "multi_turn": cfg.data.multi_turn,
        "seconds": round(seconds, 3),
        "examples_per_second": round(counts.read / seconds, 1) if seconds > 0 else 0.0,
    }
