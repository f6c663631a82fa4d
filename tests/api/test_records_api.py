"""The viewer's data over real HTTP: records pages with filters, sorts and short texts, and one example with its
prompt and answer spans, against `stepwise serve` on loopback over corpora written by real replay jobs."""

from __future__ import annotations

import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepwise.prompts import TEMPLATES
from tests.api.conftest import Server
from tests.conftest import write_jsonl
from tests.pipeline.teachers.test_live_jobs import problems

JOB = "viewer-data"
N_SAMPLES = 3
SLASHED = "ex/ample é 1"          # an example id from a dataset: slashes, spaces, non-ASCII
LITERAL = "100% of the_box: 'single' \"double\" [x]"  # a rationale with LIKE wildcards and quotes
LONG = "Counting carefully, one group at a time. " * 12   # a rationale longer than the brief cut
TRACE = "Let me think about the apples. " * 20
SORTS = ["position", "example_id", "sample_idx", "label", "gold_label", "agreement", "reject_reason", "tokens_in", "tokens_out",
         "cost_usd", "latency_s", "created_at", "rationale_chars", "reasoning_chars"]


def _answers(rows: list[dict]) -> list[dict]:
    """Three recorded samples per problem: mostly right, one wrong, one without an answer, one with a literal
    rationale, one long, one with a thinking trace."""
    out = []
    for row in rows:
        pid, answer = row["id"], int(row["answer"])
        for k in range(N_SAMPLES):
            text = f"Step {k}: counting the apples of {pid}. So the answer is {answer}."
            if pid == "p006" and k == 2:
                text = f"Step {k}: a slip in the sum. So the answer is {answer + 1}."
            elif pid == "p007" and k == 1:
                text = "I cannot tell how many there are."
            elif pid == "p008" and k == 0:
                text = f"{LITERAL}. So the answer is {answer}."
            elif pid == "p008" and k == 1:
                text = f"{LONG}So the answer is {answer}."
            elif pid == "p009" and k == 0:
                text = f"<think>{TRACE}</think>\nThe apples add up. So the answer is {answer}."
            out.append({"example_id": pid, "sample_idx": k, "text": text,
                        "usage": {"prompt_tokens": 100 + k, "completion_tokens": 10 * (len(out) % 7)}})
    return out


@dataclass
class Corpus:
    server: Server
    everything: list[dict]  # every record of JOB, full rows, in (example_id, sample_idx) order
    folder: Path


def _submit(server: Server, job_id: str, folder: Path, prompt: dict, answers: list[dict], rows: list) -> None:
    write_jsonl(folder / f"{job_id}.jsonl", rows)
    write_jsonl(folder / f"{job_id}-answers.jsonl", answers)
    body = {"job_id": job_id, "task": "arithmetic", "prompt": prompt, "sampling": {"n": N_SAMPLES},
            "dataset": {"path": str(folder / f"{job_id}.jsonl"), "id_field": "id", "question_field": "question",
                        "answer_field": "answer"},
            "teacher": {"backend": "replay", "path": str(folder / f"{job_id}-answers.jsonl")}, "shard_size": 4}
    reply = server.post("/v1/jobs", body)
    assert reply.status == 202, reply.body
    server.wait(job_id, {"completed"})


@pytest.fixture(scope="module")
def corpus(server, tmp_path_factory) -> Corpus:
    """JOB: 11 problems (one with a slashed id) and a bad row; a structured-JSON job; a job whose template file
    was removed after it ran."""
    folder = tmp_path_factory.mktemp("records-api")
    rows = problems(10) + [{"id": SLASHED, "answer": "7", "question": "Ann has 3 pens and buys 4. How many pens?"},
                           {"id": "p-bad", "answer": "3"}]  # no question: a bad row
    _submit(server, JOB, folder, {"id": "few_shot_cot"}, _answers(rows[:-1]), rows)
    json_rows = problems(2)
    _submit(server, "viewer-json", folder, {"id": "structured_json"},
            [{"example_id": r["id"], "sample_idx": k,
              "text": f'{{"rationale": "Counting {k}.", "label": "{r["answer"]}"}}'}
             for r in json_rows for k in range(N_SAMPLES)], json_rows)
    template = folder / "gone.yaml"
    shutil.copy(TEMPLATES / "few_shot_cot" / "arithmetic.yaml", template)
    _submit(server, "viewer-gone", folder, {"id": "few_shot_cot", "path": str(template)},
            _answers(problems(2)), problems(2))
    template.unlink()
    everything = server.get(f"/v1/jobs/{JOB}/records?limit=1000&sort=example_id").json()["items"]
    assert len(everything) == 11 * N_SAMPLES + 1
    return Corpus(server, everything, folder)


def page(corpus: Corpus, query: str, job: str = JOB) -> dict:
    reply = corpus.server.get(f"/v1/jobs/{job}/records?{query}")
    assert reply.status == 200, reply.body
    return reply.json()


def keys(items: list[dict]) -> list[tuple[str, int]]:
    return [(r["example_id"], r["sample_idx"]) for r in items]


# ── filters ────────────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("query,keep", [
    ("accepted=false", lambda r: r["accepted"] is False),
    ("accepted=true", lambda r: r["accepted"] is True),
    ("reason=incorrect", lambda r: r["reject_reason"] == "incorrect"),
    ("reason=no_answer", lambda r: r["reject_reason"] == "no_answer"),
    ("reason=bad_row", lambda r: r["reject_reason"] == "bad_row"),
    ("correct=false", lambda r: r["correct"] is False),
    ("correct=true&reason=incorrect", lambda r: False),
    ("label=20", lambda r: r["label"] == "20"),
    ("gold_label=7", lambda r: r["gold_label"] == "7"),
    ("min_agreement=0.9", lambda r: r["agreement"] is not None and r["agreement"] >= 0.9),
    ("max_agreement=0.7", lambda r: r["agreement"] is not None and r["agreement"] <= 0.7),
    ("min_agreement=0.6&max_agreement=0.7", lambda r: r["agreement"] is not None and 0.6 <= r["agreement"] <= 0.7),
    ("q=APPLES", lambda r: any("apples" in (r[c] or "").lower() for c in ("input", "rationale", "reasoning",
                                                                          "completion"))),
    ("q=let%20me%20think", lambda r: "let me think" in (r["reasoning"] or "").lower()),
    ("q=slip&accepted=false", lambda r: "slip" in (r["completion"] or "") and not r["accepted"]),
])
def test_each_filter_finds_exactly_the_records_it_names(corpus, query, keep):
    expected = [r for r in corpus.everything if keep(r)]
    found = page(corpus, f"{query}&limit=1000&sort=example_id")
    assert keys(found["items"]) == keys(expected)
    assert found["total"] == len(expected)


def test_the_test_corpus_has_something_for_every_filter(corpus):
    rows = corpus.everything
    assert {r["reject_reason"] for r in rows} >= {None, "incorrect", "no_answer", "bad_row"}
    assert {r["correct"] for r in rows} == {True, False, None}
    assert len({r["agreement"] for r in rows if r["agreement"] is not None}) >= 2
    assert any(r["reasoning"] for r in rows)


def test_a_page_counts_every_match_and_pages_past_the_end_are_empty(corpus):
    first = page(corpus, "accepted=false&limit=2")
    assert len(first["items"]) == 2 and first["total"] == sum(not r["accepted"] for r in corpus.everything)
    past = page(corpus, "accepted=false&offset=500")
    assert past["items"] == [] and past["total"] == first["total"]
    assert page(corpus, "q=no-such-text-anywhere") == {"items": [], "total": 0, "limit": 100, "offset": 0}


# ── sort and paging ────────────────────────────────────────────────────────────────────────────────────────────


def _sort_key(name: str):
    def value(r: dict):
        if name in ("rationale_chars", "reasoning_chars"):
            text = r[name.removesuffix("_chars")]
            return None if text is None else len(text)
        return r[name]
    return value


def stored_order(corpus: Corpus, job: str = JOB) -> list[tuple[str, int]]:
    """The records' keys as the part files hold them, file after file (shard order)."""
    folder = corpus.server.corpus / "records" / job
    return [(r["example_id"], r["sample_idx"]) for part in sorted(folder.glob("*.parquet"))
            for r in pq.read_table(part, columns=["example_id", "sample_idx"]).to_pylist()]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_the_default_order_is_the_stored_order(corpus, order):
    stored = stored_order(corpus)
    assert len(stored) == len(corpus.everything) and len({k for k, _ in stored}) == 12
    found = page(corpus, f"order={order}&limit=1000")
    assert keys(found["items"]) == (stored if order == "asc" else stored[::-1])
    assert keys(page(corpus, "limit=1000")["items"]) == keys(page(corpus, "sort=position&limit=1000")["items"])
    # shard by shard, the examples in the dataset's order (a shard's bad rows come first in it)
    examples = [k for k in dict.fromkeys(k for k, _ in stored) if k != "p-bad"]
    assert examples == [f"p{i:03d}" for i in range(10)] + [SLASHED]
    # pages of it never overlap
    pages = [keys(page(corpus, f"limit=7&offset={o}")["items"]) for o in range(0, len(stored), 7)]
    assert [k for p in pages for k in p] == stored
    filtered = keys(page(corpus, "reason=incorrect&limit=1000")["items"])
    assert filtered == [k for k in stored if k in set(filtered)] and filtered


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", SORTS[1:])
def test_each_sort_orders_by_its_column_nulls_last_then_by_example_and_sample(corpus, sort, order):
    value = _sort_key(sort)
    present = [r for r in corpus.everything if value(r) is not None]
    by_key = sorted(present, key=lambda r: (r["example_id"], r["sample_idx"]))
    expected = sorted(by_key, key=value, reverse=order == "desc") + [r for r in corpus.everything
                                                                     if value(r) is None]
    found = page(corpus, f"sort={sort}&order={order}&limit=1000")
    assert keys(found["items"]) == keys(expected)


@pytest.mark.parametrize("query", ["sort=agreement&order=desc", "sort=label", "sort=example_id",
                                   "accepted=true&sort=tokens_out"])
def test_pages_never_overlap_and_together_hold_every_match(corpus, query):
    whole = page(corpus, f"{query}&limit=1000")
    seen = []
    for offset in range(0, whole["total"] + 7, 7):
        part = page(corpus, f"{query}&limit=7&offset={offset}")
        assert part["total"] == whole["total"] and len(part["items"]) <= 7
        seen += keys(part["items"])
    assert seen == keys(whole["items"]) and len(set(seen)) == len(seen)
    assert page(corpus, f"{query}&limit=1000") == whole  # the same order every time


# ── brief ──────────────────────────────────────────────────────────────────────────────────────────────────────


def test_brief_cuts_long_texts_and_reports_their_lengths(corpus):
    full = {(r["example_id"], r["sample_idx"]): r for r in corpus.everything}
    items = page(corpus, "brief=true&limit=1000&sort=example_id")["items"]
    assert keys(items) == keys(corpus.everything)
    for r in items:
        whole = full[(r["example_id"], r["sample_idx"])]
        for name in ("input", "rationale", "completion", "reasoning", "gold_rationale"):
            text = whole[name]
            assert r[name] == (text if text is None or len(text) <= 280 else text[:280] + "\u2026"), name
        for name in ("rationale", "reasoning", "completion"):
            assert r[f"{name}_chars"] == (None if whole[name] is None else len(whole[name]))
        assert {k: v for k, v in r.items() if not k.endswith("_chars")}.keys() == whole.keys()
    cut = [r for r in items if r["rationale_chars"] and r["rationale_chars"] > 280]
    assert cut and all(len(r["rationale"]) == 281 for r in cut)
    assert any(r["reasoning_chars"] and r["reasoning_chars"] > 280 for r in items)
    assert "rationale_chars" not in corpus.everything[0]  # only with brief


# ── search is literal ──────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("text", ["%", "_", "100%", "the_box", "THE_BOX", "'single'", '"double"', "[x]", "\\",
                                  "% of the_", "a%b", "_x_"])
def test_search_text_is_taken_literally(corpus, text):
    expected = [r for r in corpus.everything
                if any(text.lower() in (r[c] or "").lower() for c in ("input", "rationale", "reasoning",
                                                                     "completion"))]
    found = page(corpus, f"q={urllib.parse.quote(text)}&limit=1000")
    assert keys(found["items"]) == keys(expected)
    if text in ("%", "_", "100%", "the_box", "'single'"):
        assert found["total"] >= 1


# ── bad values ─────────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("query,field", [
    ("sort=nope", "query.sort"),
    ("sort=input", "query.sort"),
    ("sort=example_id;DROP", "query.sort"),
    ("order=up", "query.order"),
    ("min_agreement=1.5", "query.min_agreement"),
    ("max_agreement=-0.1", "query.max_agreement"),
    ("min_agreement=nan", "query.min_agreement"),
    ("min_agreement=0.8&max_agreement=0.2", "query.min_agreement"),
    ("reason=not_a_reason", "query.reason"),
    ("correct=perhaps", "query.correct"),
    ("brief=maybe", "query.brief"),
    ("q=", "query.q"),
    (f"q={'x' * 201}", "query.q"),
    ("limit=0", "query.limit"),
    ("label=" + "y" * 1001, "query.label"),
    ("search=apples", "query.search"),
])
def test_a_bad_value_is_a_422_naming_the_parameter(corpus, query, field):
    reply = corpus.server.get(f"/v1/jobs/{JOB}/records?{query}")
    assert reply.status == 422, reply.body
    assert reply.json()["error"]["field"] == field


@pytest.mark.parametrize("query", ["q=%00", "q=%FF", "q=%C3%A9", "label=%00", "gold_label=%27%3B--",
                                   "reason=incorrect&q=%25%27%22", "q=%5C%25"])
def test_odd_values_are_values_never_sql_and_never_a_500(corpus, query):
    reply = corpus.server.get(f"/v1/jobs/{JOB}/records?{query}")
    assert reply.status == 200, reply.body
    assert reply.json()["total"] == len(reply.json()["items"]) == (N_SAMPLES if query == "q=%C3%A9" else 0)


def test_an_unknown_job_has_no_records_page(corpus):
    reply = corpus.server.get("/v1/jobs/no-such-job/records?brief=true&sort=agreement")
    assert reply.status == 404 and reply.json()["error"]["type"] == "JobNotFoundError"


# ── one example ────────────────────────────────────────────────────────────────────────────────────────────────


def example(corpus: Corpus, example_id: str, job: str = JOB):
    return corpus.server.get(f"/v1/jobs/{job}/examples/{urllib.parse.quote(example_id, safe='')}")


def test_an_example_has_its_prompt_its_samples_in_order_and_their_answer_spans(corpus):
    reply = example(corpus, "p006")
    assert reply.status == 200, reply.body
    ex = reply.json()
    question = next(p["question"] for p in problems(10) if p["id"] == "p006")
    assert (ex["job_id"], ex["example_id"], ex["task"], ex["input"]) == (JOB, "p006", "arithmetic", question)
    assert ex["gold_label"] == next(p["answer"] for p in problems(10) if p["id"] == "p006")
    assert ex["consensus_label"] == ex["gold_label"] and ex["agreement"] == pytest.approx(2 / 3)
    roles = [m["role"] for m in ex["prompt"]]
    assert roles[0] == "system" and roles[-1] == "user" and "assistant" in roles  # few-shot exemplars
    assert ex["prompt"][-1]["content"] == f"Q: {question}\nA:"
    samples = ex["samples"]
    assert [s["sample_idx"] for s in samples] == list(range(N_SAMPLES))
    records = [r for r in corpus.everything if r["example_id"] == "p006"]
    assert [s["completion"] for s in samples] == [r["completion"] for r in records]
    for s in samples:
        start, end = s["answer_span"]
        assert s["completion"][start:end] == s["label"]
        assert s["completion"][:start].endswith("So the answer is ")
    assert samples[2]["correct"] is False and samples[2]["reject_reason"] == "incorrect"


def test_answer_spans_follow_the_parser_through_traces_and_missing_answers(corpus):
    traced = example(corpus, "p009").json()["samples"][0]
    assert traced["reasoning"] and TRACE.strip() in traced["reasoning"] and "<think>" not in traced["completion"]
    start, end = traced["answer_span"]
    assert traced["completion"][start:end] == traced["label"]
    unanswered = example(corpus, "p007").json()["samples"][1]
    assert unanswered["reject_reason"] == "no_answer" and unanswered["answer_span"] is None
    literal = example(corpus, "p008").json()["samples"][0]
    assert literal["completion"][slice(*literal["answer_span"])] == literal["label"]


def test_a_structured_json_answer_span_is_the_label_value(corpus):
    ex = example(corpus, problems(2)[1]["id"], "viewer-json").json()
    assert ex["prompt"] and ex["prompt"][-1]["role"] == "user"
    for s in ex["samples"]:
        start, end = s["answer_span"]
        assert s["completion"][start:end] == s["label"] and s["completion"][start - 1] == '"'


def test_an_example_id_is_free_text_in_the_path(corpus):
    reply = example(corpus, SLASHED)
    assert reply.status == 200, reply.body
    assert reply.json()["example_id"] == SLASHED and len(reply.json()["samples"]) == N_SAMPLES
    bad = example(corpus, "p-bad").json()
    assert bad["samples"][0]["reject_reason"] == "bad_row" and bad["samples"][0]["answer_span"] is None
    assert bad["prompt"] is not None  # rendered from what the record holds


def test_a_prompt_whose_template_is_gone_is_null_and_the_samples_remain(corpus):
    ex = example(corpus, problems(2)[0]["id"], "viewer-gone").json()
    assert ex["prompt"] is None and len(ex["samples"]) == N_SAMPLES
    assert all(s["answer_span"] is not None for s in ex["samples"])


@pytest.mark.parametrize("path", [f"/v1/jobs/{JOB}/examples/nope", f"/v1/jobs/{JOB}/examples/p006%20",
                                  f"/v1/jobs/{JOB}/examples/%27%20OR%20%271%27%3D%271",
                                  "/v1/jobs/no-such-job/examples/p006"])
def test_an_unknown_example_or_job_is_a_404(corpus, path):
    reply = corpus.server.get(path)
    assert reply.status == 404, reply.body
    assert reply.json()["error"]["message"]


@pytest.mark.parametrize("path", [f"/v1/jobs/{JOB}/records?brief=true", f"/v1/jobs/{JOB}/examples/p006"])
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_neither_endpoint_answers_without_the_token(corpus, path, token):
    reply = corpus.server.get(path, token=token)
    assert reply.status == 401 and reply.json()["error"]["type"] == "AuthError"
    assert b"apples" not in reply.body


def test_the_schema_names_the_sorts_and_the_example_view(corpus):
    schema = corpus.server.get("/openapi.json", token=None).json()
    params = {p["name"]: p for p in schema["paths"]["/v1/jobs/{job_id}/records"]["get"]["parameters"]}
    assert {"accepted", "reason", "correct", "label", "gold_label", "min_agreement", "max_agreement", "q", "sort",
            "order", "brief", "limit", "offset"} <= set(params)
    assert schema["components"]["schemas"]["RecordSort"]["enum"] == SORTS
    assert "/v1/jobs/{job_id}/examples/{example_id}" in schema["paths"]
