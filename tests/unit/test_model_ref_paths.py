"""Hugging Face references never climb out of the hub cache: no `..` in the name or revision."""

from __future__ import annotations

import pytest

from serving.spec import parse_model_ref


@pytest.mark.parametrize(
    "text",
    [
        "hf:org/..",
        "hf:org/name..x",
        "hf:org/name@..",
        "hf:org/name@../../etc",
        "hf:org/name@main/../x",
        "hf:org/name@v1..2",
        "hf:org/name@/abs",
        "hf:org/name@main/",
        "hf:org/name@a//b",
        "hf:org/name@.hidden",
    ],
)
def test_hf_reference_with_a_path_escape_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="'..'|revision"):
        parse_model_ref(text)


@pytest.mark.parametrize(
    ("text", "repo", "revision"),
    [
        ("hf:org/name.v2@v1.0", "org/name.v2", "v1.0"),
        ("hf:org/name@refs/pr/1", "org/name", "refs/pr/1"),
        ("hf:org/name@a1b2c3", "org/name", "a1b2c3"),
    ],
)
def test_hf_reference_with_dots_and_slashes_still_parses(
    text: str, repo: str, revision: str
) -> None:
    ref = parse_model_ref(text)
    assert (ref.kind, ref.value, ref.revision) == ("hf", repo, revision)
