"""What a benchmark sends: the datasets' prompts, lengths and errors (no process started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandserve.errors import ConfigError
from sandserve.observe.datasets import jsonl_prompts, random_prompts, shared_prefix_prompts


def test_random_prompts_are_fresh_each_time_and_reproducible():
    source = random_prompts(50, 20, seed=3)
    first, second = source.take(4), source.take(4)
    texts = [p.messages[0]["content"] for p in first + second]
    assert len(set(texts)) == 8  # no prompt repeats between levels (no accidental cache hits)
    assert all(len(t.split()) == 50 for t in texts)
    assert all(p.max_tokens == 20 and p.extra == {"ignore_eos": True} for p in first)
    assert random_prompts(50, 20, seed=3).take(4) == first


def test_a_range_ratio_spreads_the_lengths_within_bounds():
    prompts = random_prompts(100, 40, range_ratio=0.5, seed=1).take(200)
    inputs = {len(p.messages[0]["content"].split()) for p in prompts}
    outputs = {p.max_tokens for p in prompts}
    assert min(inputs) >= 50 and max(inputs) <= 100 and len(inputs) > 10
    assert min(outputs) >= 20 and max(outputs) <= 40 and len(outputs) > 5


def test_shared_prefix_groups_share_their_system_prompt_byte_for_byte():
    source = shared_prefix_prompts(groups=3, prompts_per_group=4, system_len=30, question_len=5, output_len=8)
    prompts = source.take(12)
    systems = [p.messages[0]["content"] for p in prompts]
    assert len(set(systems)) == 3
    assert systems[:4] == [systems[0]] * 4 and systems[4] != systems[0]
    assert len({p.messages[1]["content"] for p in prompts}) == 12
    assert source.take(12) == prompts  # a finite set, cycled


def test_jsonl_prompts_in_three_shapes(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "Hi", "max_tokens": 5},
        {"messages": [{"role": "user", "content": "Yo"}]},
        {"custom_id": "a", "body": {"messages": [{"role": "user", "content": "Batch"}], "max_tokens": 9}},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    prompts = jsonl_prompts(path, output_len=7).take(3)
    assert [p.messages[0]["content"] for p in prompts] == ["Hi", "Yo", "Batch"]
    assert [p.max_tokens for p in prompts] == [5, 7, 9]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "is not JSON"),
        ('{"text": "x"}\n', "neither prompt nor messages"),
        ('{"prompt": "x", "max_tokens": 0}\n', "positive integer"),
        ("\n", "has no prompts"),
    ],
)
def test_a_bad_prompt_file_says_which_line_and_what_to_write(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        jsonl_prompts(path)
    assert caught.value.hint


def test_missing_files_and_bad_lengths_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="No prompt file"):
        jsonl_prompts(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="--input-len must be at least 1"):
        random_prompts(0, 10)
    with pytest.raises(ConfigError, match="range-ratio"):
        random_prompts(10, 10, range_ratio=0)
