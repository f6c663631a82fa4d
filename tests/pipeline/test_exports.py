"""Exports of a real corpus (built with run_job on replay jobs of our own): every format, labels, splits."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stepwise.pipeline.errors import StepwiseError, StorageError
from stepwise.pipeline.exports import EXPORT_SCHEMA, assign_split, export_job, parse_split
from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.spec import load_job
from stepwise.storage.catalog import query
from tests.conftest import write_jsonl

ARITH, MC = "pears", "quiz"


def _arith_case(i: int) -> dict:
    a, b = i + 2, (i * 3) % 7 + 1
    return {"i": i, "id": f"p{i:02d}", "a": a, "b": b, "sum": a + b,
            "question": f"A crate holds {a} pears and a farmer adds {b} more. How many pears are in the crate now?"}


def arith_data(folder: Path) -> dict[tuple[str, int], dict]:
    """30 word problems, two samples each; returns what every (example_id, sample_idx) should become."""
    rows, completions, expected = [], [], {}
    for i in range(1, 31):
        c = _arith_case(i)
        eid, a, b, s = c["id"], c["a"], c["b"], c["sum"]
        rows.append({"id": eid, "question": c["question"], "answer": str(s)})
        usage = {"prompt_tokens": 40 + i, "completion_tokens": 20}
        # sample 0: right, except one that never states an answer
        if i == 3:
            text0 = "I would need to see the crate myself before counting any pears."
            expected[(eid, 0)] = {"accepted": False, "reason": "no_answer"}
        else:
            text0 = f"The crate starts with {a} pears. Adding {b} more gives {a} + {b} = {s}. So the answer is {s}."
            expected[(eid, 0)] = {"accepted": True, "label": str(s), "gold": str(s),
                                  "rationale": f"The crate starts with {a} pears. Adding {b} more gives {a} + {b} = {s}."}
        completions.append({"example_id": eid, "sample_idx": 0, "text": text0, "usage": usage})
        # sample 1: wrong (accepted: this job does not require correctness), missing, a duplicate, or right
        if i % 5 == 0:
            text1 = f"There are {a} pears and {b} more arrive, which I count as {s + 1}. So the answer is {s + 1}."
            expected[(eid, 1)] = {"accepted": True, "label": str(s + 1), "gold": str(s),
                                  "rationale": f"There are {a} pears and {b} more arrive, which I count as {s + 1}."}
        elif i % 7 == 0:
            text1 = None
            expected[(eid, 1)] = {"accepted": False, "reason": "missing_completion"}
        elif i % 4 == 0:
            text1 = text0
            expected[(eid, 1)] = {"accepted": False, "reason": "duplicate"}
        else:
            text1 = f"First {a} pears, then {b} more: {s} pears in total. So the answer is {s}."
            expected[(eid, 1)] = {"accepted": True, "label": str(s), "gold": str(s),
                                  "rationale": f"First {a} pears, then {b} more: {s} pears in total."}
        if text1 is not None:
            completions.append({"example_id": eid, "sample_idx": 1, "text": text1, "usage": usage})
    write_jsonl(folder / "pears.jsonl", rows)
    write_jsonl(folder / "pears-completions.jsonl", completions)
    for key, exp in expected.items():
        exp["input"] = rows[int(key[0][1:]) - 1]["question"]
    return expected


MC_ROWS = [
    ("m1", "Which of these is a fruit that grows on a vine?", ["carrot", "grape", "potato"], "grape", "b"),
    ("m2", "What do bees make?", ["honey", "silk", "wool"], "honey", "a"),
    ("m3", "Which planet is known for its rings?", ["Mars", "Venus", "Saturn"], "Saturn", "c"),
    ("m4", "What tool is best for driving a nail?", ["hammer", "spoon", "ruler"], "hammer", "a"),
    ("m5", "Which animal is a reptile?", ["frog", "lizard", "owl"], "lizard", "b"),
    ("m6", "Where would you keep ice cream cold?", ["oven", "freezer", "drawer"], "freezer", "a"),  # teacher wrong
]


def mc_data(folder: Path) -> dict[tuple[str, int], dict]:
    rows, completions, expected = [], [], {}
    for eid, question, choices, answer, letter in MC_ROWS:
        rows.append({"id": eid, "question": question, "choices": choices, "answer": answer})
        picked = choices["abc".index(letter)]
        text = f"Thinking it over, {picked.lower()} fits the question best. So the answer is ({letter})."
        completions.append({"example_id": eid, "text": text})
        options = "\n".join(f"({x}) {c}" for x, c in zip("abc", choices, strict=True))
        expected[(eid, 0)] = {
            "accepted": picked == answer, "reason": None if picked == answer else "incorrect",
            "label": picked, "gold": answer, "input": f"{question}\nAnswer Choices:\n{options}",
            "rationale": f"Thinking it over, {picked.lower()} fits the question best.",
        }
    write_jsonl(folder / "quiz.jsonl", rows)
    write_jsonl(folder / "quiz-completions.jsonl", completions)
    return expected


def write_job(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def build_corpus(folder: Path) -> tuple[Path, dict, dict]:
    """The pears job (30 questions, two samples each, some rejected) and the quiz job (6 questions, 5 accepted),
    run from replay files in `folder`; returns the corpus root and the expected records of each."""
    arith, mc = arith_data(folder), mc_data(folder)
    write_job(folder / "pears.yaml", {
        "job_id": ARITH, "task": "arithmetic", "prompt": "few_shot_cot", "sampling": {"n": 2, "temperature": 0.7},
        "dataset": {"path": "pears.jsonl", "id_field": "id", "answer_field": "answer"},
        "teacher": {"backend": "replay", "path": "pears-completions.jsonl", "model": "tiny-teacher"},
        "filters": {"require_correct": False}, "shard_size": 8,
    })
    write_job(folder / "quiz.yaml", {
        "job_id": MC, "task": "multiple_choice", "prompt": "few_shot_cot",
        "dataset": {"path": "quiz.jsonl", "id_field": "id", "answer_field": "answer", "choices_field": "choices"},
        "teacher": {"backend": "replay", "path": "quiz-completions.jsonl"},
    })
    root = folder / "corpus"
    s1 = run_job(load_job(folder / "pears.yaml"), root)
    s2 = run_job(load_job(folder / "quiz.yaml"), root)
    assert (s1.n_records, s1.n_accepted, s1.shards_run) == (60, sum(e["accepted"] for e in arith.values()), 4)
    assert (s2.n_records, s2.n_accepted) == (6, 5)
    return root, arith, mc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, dict]:
    return build_corpus(tmp_path_factory.mktemp("exports"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def accepted(expected: dict) -> list[tuple[tuple[str, int], dict]]:
    return sorted((k, v) for k, v in expected.items() if v["accepted"])


def test_the_corpus_holds_what_the_replay_job_should_make(corpus):
    root, arith, _ = corpus
    rows = query(root, f"SELECT example_id, sample_idx, accepted, reject_reason, label, rationale, input "
                       f"FROM records WHERE job_id = '{ARITH}' ORDER BY example_id, sample_idx").table.to_pylist()
    assert len(rows) == 60
    for r in rows:
        exp = arith[(r["example_id"], r["sample_idx"])]
        assert r["accepted"] == exp["accepted"], r
        if exp["accepted"]:
            assert (r["label"], r["rationale"], r["input"]) == (exp["label"], exp["rationale"], exp["input"])
        else:
            assert r["reject_reason"] == exp["reason"], r


# ── every format ─────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("job", [ARITH, MC])
def test_dsbs_two_rows_per_accepted_record(corpus, tmp_path, job):
    root, arith, mc = corpus
    expected = arith if job == ARITH else mc
    out = tmp_path / "dsbs.jsonl"
    summary = export_job(root, job, "dsbs", out)
    rows = read_jsonl(out)
    want = []
    for (eid, k), e in accepted(expected):
        want.append({"example_id": eid, "sample_idx": k, "task": "predict", "input": f"predict: {e['input']}",
                     "target": e["label"]})
        want.append({"example_id": eid, "sample_idx": k, "task": "explain", "input": f"explain: {e['input']}",
                     "target": e["rationale"]})
    assert rows == want
    assert summary.records == len(want) // 2 and summary.rows == {"all": len(want)}
    assert summary.path == str(out) and summary.format == "dsbs"


@pytest.mark.parametrize("job", [ARITH, MC])
def test_finetune_cot_prompt_and_completion(corpus, tmp_path, job):
    root, arith, mc = corpus
    expected = arith if job == ARITH else mc
    out = tmp_path / "nested" / "ft.jsonl"
    export_job(root, job, "finetune_cot", out)
    assert read_jsonl(out) == [
        {"example_id": eid, "sample_idx": k, "prompt": f"{e['input']} ###",
         "completion": f" {e['rationale']} --> {e['label']} END"}
        for (eid, k), e in accepted(expected)
    ]


def test_finetune_cot_one_known_line(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "ft.jsonl"
    export_job(root, ARITH, "finetune_cot", out)
    first = read_jsonl(out)[0]
    assert first == {
        "example_id": "p01", "sample_idx": 0,
        "prompt": "A crate holds 3 pears and a farmer adds 4 more. How many pears are in the crate now? ###",
        "completion": " The crate starts with 3 pears. Adding 4 more gives 3 + 4 = 7. --> 7 END",
    }


@pytest.mark.parametrize("job", [ARITH, MC])
def test_chat_messages(corpus, tmp_path, job):
    root, arith, mc = corpus
    expected = arith if job == ARITH else mc
    out = tmp_path / "chat.jsonl"
    export_job(root, job, "chat", out)
    assert read_jsonl(out) == [
        {"messages": [{"role": "user", "content": e["input"]},
                      {"role": "assistant", "content": f"{e['rationale']}\nSo the answer is {e['label']}."}]}
        for _, e in accepted(expected)
    ]


def test_parquet_export_reads_with_pyarrow_and_datasets(corpus, tmp_path, monkeypatch):
    root, arith, _ = corpus
    out = tmp_path / "pears.parquet"
    export_job(root, ARITH, "parquet", out)
    table = pq.read_table(out)
    assert table.schema.equals(EXPORT_SCHEMA)
    want = [{"example_id": eid, "sample_idx": k, "input": e["input"], "rationale": e["rationale"],
             "label": e["label"], "gold_label": e["gold"], "teacher_label": e["label"]}
            for (eid, k), e in accepted(arith)]
    assert table.to_pylist() == want

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    if "datasets" in sys.modules:  # its config is read at import time
        importlib.reload(sys.modules["datasets"].config)
    import datasets

    assert datasets.config.HF_DATASETS_OFFLINE is True
    loaded = datasets.load_dataset("parquet", data_files=str(out), cache_dir=str(tmp_path / "hf-cache"))
    train = loaded["train"]
    assert train.num_rows == len(want)
    assert list(train.features) == EXPORT_SCHEMA.names
    assert train[0] == want[0] and train[-1] == want[-1]


# ── label source ─────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("label_source", "key"), [("teacher", "label"), ("gold", "gold")])
def test_label_source(corpus, tmp_path, label_source, key):
    root, arith, _ = corpus
    out = tmp_path / "out.jsonl"
    export_job(root, ARITH, "finetune_cot", out, label_source=label_source)
    got = {(r["example_id"], r["sample_idx"]): r["completion"].rsplit(" --> ", 1)[1] for r in read_jsonl(out)}
    assert got == {k: f"{e[key]} END" for k, e in accepted(arith)}
    # the teacher's wrong answers (accepted here) are where the two sources differ
    assert got[("p05", 1)] == ("10 END" if label_source == "teacher" else "9 END")  # 7 + 2


def test_gold_labels_in_the_parquet_export(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "g.parquet"
    export_job(root, ARITH, "parquet", out, label_source="gold")
    row = next(r for r in pq.read_table(out).to_pylist() if (r["example_id"], r["sample_idx"]) == ("p10", 1))
    assert (row["label"], row["gold_label"], row["teacher_label"]) == ("15", "15", "16")


def test_a_bad_label_source_or_format_is_refused(corpus, tmp_path):
    root, _, _ = corpus
    with pytest.raises(StepwiseError, match="label source must be 'teacher' or 'gold'"):
        export_job(root, ARITH, "chat", tmp_path / "x.jsonl", label_source="student")  # type: ignore[arg-type]
    with pytest.raises(StepwiseError, match="unknown export format 'csv'"):
        export_job(root, ARITH, "csv", tmp_path / "x.csv")
    assert not list(tmp_path.iterdir())


def test_an_unknown_job_is_a_storage_error(corpus, tmp_path):
    root, _, _ = corpus
    with pytest.raises(StorageError, match="job 'nobody' has no records"):
        export_job(root, "nobody", "chat", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


# ── only accepted records ────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("fmt", ["dsbs", "finetune_cot", "chat", "parquet"])
def test_only_accepted_records_are_exported(corpus, tmp_path, fmt):
    root, arith, mc = corpus
    for job, expected in ((ARITH, arith), (MC, mc)):
        out = tmp_path / f"{job}.{fmt}"
        summary = export_job(root, job, fmt, out)
        n_accepted = len(accepted(expected))
        assert summary.records == n_accepted < len(expected)
        rows = pq.read_table(out).to_pylist() if fmt == "parquet" else read_jsonl(out)
        assert len(rows) == n_accepted * (2 if fmt == "dsbs" else 1)
        if fmt != "chat":
            keys = {(r["example_id"], r["sample_idx"]) for r in rows}
            assert keys == {k for k, _ in accepted(expected)}
            assert ("p03", 0) not in keys and ("p07", 1) not in keys and ("p04", 1) not in keys  # rejects
            assert ("m6", 0) not in keys


# ── splits ───────────────────────────────────────────────────────────────────────────────────────────────────────
SPLIT = (0.8, 0.1, 0.1)


def _split_rows(folder: Path, ext: str) -> dict[str, list[dict]]:
    """The rows of each split file there is (an empty split has none)."""
    read = (lambda p: pq.read_table(p).to_pylist()) if ext == "parquet" else read_jsonl
    return {s: read(folder / f"{s}.{ext}") for s in ("train", "valid", "test") if (folder / f"{s}.{ext}").exists()}


@pytest.mark.parametrize(("fmt", "ext"), [("dsbs", "jsonl"), ("finetune_cot", "jsonl"), ("parquet", "parquet")])
def test_split_writes_three_files_without_leaks(corpus, tmp_path, fmt, ext):
    root, arith, _ = corpus
    out = tmp_path / "split"
    summary = export_job(root, ARITH, fmt, out, split=SPLIT, seed=0)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{ext}" for s in ("train", "valid", "test"))
    rows = _split_rows(out, ext)
    assert summary.rows == {s: len(r) for s, r in rows.items()}
    per_record = 2 if fmt == "dsbs" else 1
    assert sum(summary.rows.values()) == per_record * len(accepted(arith)) == per_record * summary.records
    where: dict[str, set[str]] = {}
    for split, split_rows in rows.items():
        for r in split_rows:
            where.setdefault(r["example_id"], set()).add(split)
            assert split == assign_split(r["example_id"], SPLIT, 0)
    assert all(len(s) == 1 for s in where.values()), {e: s for e, s in where.items() if len(s) > 1}
    assert set(where) == {eid for (eid, _), _ in accepted(arith)}
    assert summary.rows["train"] > summary.rows["valid"] and summary.rows["train"] > summary.rows["test"]


def test_split_is_deterministic_and_changes_with_the_seed(corpus, tmp_path):
    root, _, _ = corpus

    def assignment(folder: Path, seed: int) -> dict[str, str]:
        export_job(root, ARITH, "finetune_cot", folder, split=SPLIT, seed=seed)
        return {r["example_id"]: s for s, rows in _split_rows(folder, "jsonl").items() for r in rows}

    first = assignment(tmp_path / "a", 0)
    again = assignment(tmp_path / "b", 0)
    assert first == again
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
    other = assignment(tmp_path / "c", 1)
    assert other != first and set(other) == set(first)


def test_assign_split_does_not_depend_on_order_or_other_examples():
    ids = [f"ex-{i}" for i in range(2000)]
    splits = [assign_split(i, SPLIT, 7) for i in ids]
    assert splits == [assign_split(i, SPLIT, 7) for i in ids]
    share = {s: splits.count(s) / len(ids) for s in ("train", "valid", "test")}
    assert 0.75 < share["train"] < 0.85 and 0.06 < share["valid"] < 0.14 and 0.06 < share["test"] < 0.14
    assert {assign_split(i, (1.0, 0.0, 0.0), 3) for i in ids} == {"train"}
    assert {assign_split(i, (0.0, 0.0, 1.0), 3) for i in ids} == {"test"}


@pytest.mark.parametrize(("text", "expected"), [
    ("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("1,0,0", (1.0, 0.0, 0.0)), (" 0.5, 0.25 ,0.25", (0.5, 0.25, 0.25)),
    ("", None), (None, None),
])
def test_parse_split_accepts(text, expected):
    assert parse_split(text) == expected


@pytest.mark.parametrize("text", [
    "0.8,0.1", "0.8,0.1,0.05", "0.5,0.5,0.5", "1,0,0,0", "a,b,c", "0.9,0.2,-0.1", "80,10,10", "0.8;0.1;0.1",
    "inf,0,0",
    "nan,0.5,0.5",
])
def test_parse_split_refuses(text):
    with pytest.raises(StepwiseError, match=r"--split"):
        parse_split(text)


# ── reasoning teachers: records with a thinking trace ────────────────────────────────────────────────────────────
THINK = "reasoners"
Q1, Q2, Q3 = ("A crate holds 3 pears and a farmer adds 4 more. How many pears?",
              "A bag holds 5 plums and 2 are eaten. How many plums are left?",
              "A box holds 6 figs and 6 more are added. How many figs?")
TRACE1 = "\nOkay, the crate starts with 3 pears.\nAdding 4 gives 3 + 4 = 7.\nSo 7 pears.\n"
CONTENT1 = "\n\nThe crate holds 3 + 4 = 7 pears.\n\n**Final Answer**\n\\boxed{7}"
TRACE2 = "Five plums, two eaten: 5 - 2 = 3."
NO_TRACE_RATIONALE = "The box starts with 6 figs. Adding 6 more gives 12."


def _reasoning_record(example_id: str, input: str, label: str, rationale: str | None, *, accepted: bool = True,
                      reasoning: str | None = None, completion: str | None = None, gold: str | None = None):
    from datetime import UTC, datetime

    from stepwise.pipeline.types import RationaleRecord

    return RationaleRecord(
        job_id=THINK, example_id=example_id, sample_idx=0, task="arithmetic", input=input, gold_label=gold or label,
        label=label, rationale=rationale, correct=True, accepted=accepted,
        reject_reason=None if accepted else "repetition", reject_detail=None if accepted else "loops",
        consensus_label=label, agreement=1.0, prompt_id="zero_shot_cot", prompt_hash=None, teacher_backend="replay",
        teacher_model="r1-distill", request_key=f"k-{example_id}", finish_reason="stop", tokens_in=10,
        tokens_out=100, cost_usd=None, latency_s=None, completion=completion, created_at=datetime.now(UTC),
        reasoning=reasoning, reasoning_tokens=25 if reasoning else None, trace_label=label if reasoning else None)


@pytest.fixture(scope="module")
def reasoning_corpus(tmp_path_factory) -> Path:
    """A corpus of records as a reasoning-model job writes them (rationale: auto, so the trace is the rationale):
    r1 a trace and text after it, r2 a trace and no text after it, r3 a teacher without a trace, r4 rejected."""
    from stepwise.storage import layout
    from stepwise.storage.parquet import write_records

    root = tmp_path_factory.mktemp("reasoning-exports") / "corpus"
    records = [
        _reasoning_record("r1", Q1, "7", TRACE1.strip(), reasoning=TRACE1, completion=CONTENT1),
        _reasoning_record("r2", Q2, "3", TRACE2, reasoning=TRACE2, completion=""),
        _reasoning_record("r3", Q3, "12", NO_TRACE_RATIONALE,
                          completion=f"{NO_TRACE_RATIONALE} So the answer is 12.\n\nQ: an invented next turn"),
        _reasoning_record("r4", Q1, "7", "x", accepted=False, reasoning="7 7 7 7 7 7 7 7", completion="7"),
    ]
    write_records(records, root.joinpath(*layout.part(THINK, 0)))
    return root


def test_accepted_records_carry_the_trace_and_what_followed_it(reasoning_corpus):
    from stepwise.pipeline.exports import accepted_records

    rows = list(accepted_records(reasoning_corpus, THINK))
    assert [(r["example_id"], r["reasoning"], r["completion"]) for r in rows] == [
        ("r1", TRACE1, CONTENT1), ("r2", TRACE2, ""), ("r3", None, None)]  # no raw text read without a trace


def test_chat_puts_the_trace_in_reasoning_content(reasoning_corpus, tmp_path):
    out = tmp_path / "chat.jsonl"
    export_job(reasoning_corpus, THINK, "chat", out)
    assert read_jsonl(out) == [
        {"messages": [{"role": "user", "content": Q1},
                      {"role": "assistant", "content": CONTENT1.strip(), "reasoning_content": TRACE1.strip()}]},
        {"messages": [{"role": "user", "content": Q2},  # no text after the trace: the answer is said plainly
                      {"role": "assistant", "content": "So the answer is 3.", "reasoning_content": TRACE2}]},
        {"messages": [{"role": "user", "content": Q3},  # no trace: as before
                      {"role": "assistant", "content": f"{NO_TRACE_RATIONALE}\nSo the answer is 12."}]},
    ]


def test_chat_think_writes_the_trace_inline(reasoning_corpus, tmp_path):
    out = tmp_path / "think.jsonl"
    summary = export_job(reasoning_corpus, THINK, "chat_think", out)
    assert summary.records == 3 and summary.rows == {"all": 3}
    rows = read_jsonl(out)
    assert [r["messages"][0] for r in rows] == [{"role": "user", "content": q} for q in (Q1, Q2, Q3)]
    assert [r["messages"][1]["content"] for r in rows] == [
        f"<think>\n{TRACE1.strip()}\n</think>\n\n{CONTENT1.strip()}",
        f"<think>\n{TRACE2}\n</think>\n\nSo the answer is 3.",
        f"<think>\n\n</think>\n\n{NO_TRACE_RATIONALE}\nSo the answer is 12.",
    ]
    assert all(set(r["messages"][1]) == {"role", "content"} for r in rows)
    assert rows[0]["messages"][1]["content"].count("<think>") == 1


def test_chat_think_splits_like_the_other_formats(reasoning_corpus, tmp_path):
    out = tmp_path / "split"
    summary = export_job(reasoning_corpus, THINK, "chat_think", out, split=SPLIT, seed=0)
    assert summary.rows == {"train": 3} and summary.empty_splits == ["valid", "test"]  # three examples, all train
    assert sorted(p.name for p in out.iterdir()) == ["train.jsonl"]
    assert summary.warnings == ["split train has 3 rows; OpenAI fine-tuning asks for at least 10"]


@pytest.mark.parametrize("fmt", ["finetune_cot", "dsbs", "parquet"])
def test_rationale_formats_use_the_chosen_rationale_of_a_reasoning_record(reasoning_corpus, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    export_job(reasoning_corpus, THINK, fmt, out)
    rows = pq.read_table(out).to_pylist() if fmt == "parquet" else read_jsonl(out)
    rationale = {"r1": TRACE1.strip(), "r2": TRACE2, "r3": NO_TRACE_RATIONALE}  # what each record chose
    label = {"r1": "7", "r2": "3", "r3": "12"}
    if fmt == "finetune_cot":
        assert [r["completion"] for r in rows] == [f" {rationale[e]} --> {label[e]} END" for e in ("r1", "r2", "r3")]
    elif fmt == "dsbs":
        assert [r["target"] for r in rows if r["task"] == "explain"] == [rationale[e] for e in ("r1", "r2", "r3")]
        assert [r["target"] for r in rows if r["task"] == "predict"] == ["7", "3", "12"]
    else:
        assert [(r["example_id"], r["rationale"]) for r in rows] == list(rationale.items())
    text = json.dumps(rows)
    assert "<think>" not in text and "boxed" not in text and "invented next turn" not in text


def test_gold_labels_do_not_rewrite_the_teachers_text_after_a_trace(tmp_path):
    from stepwise.storage import layout
    from stepwise.storage.parquet import write_records

    root = tmp_path / "corpus"
    write_records([_reasoning_record("r1", Q1, "8", "3 + 4 = 8?", reasoning="3 + 4 = 8?", completion="It is 8.",
                                     gold="7")], root.joinpath(*layout.part(THINK, 0)))
    export_job(root, THINK, "chat", tmp_path / "c.jsonl", label_source="gold")
    export_job(root, THINK, "finetune_cot", tmp_path / "f.jsonl", label_source="gold")
    assert read_jsonl(tmp_path / "c.jsonl")[0]["messages"][1]["content"] == "It is 8."
    assert read_jsonl(tmp_path / "f.jsonl")[0]["completion"] == " 3 + 4 = 8? --> 7 END"
