"""Chat templates render out of process under a time and memory budget (issue 15, point 2)."""

from __future__ import annotations

import time

import pytest

from variantlab.chat_template import TemplateRefused, TemplateRenderer

SIMPLE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
LOOPING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
HUGE = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}"


def test_a_template_renders_and_a_looping_one_is_refused_in_bounded_time() -> None:
    renderer = TemplateRenderer(SIMPLE, timeout_s=2.0)
    looping = TemplateRenderer(LOOPING, timeout_s=2.0)
    try:
        assert renderer.render([{"role": "user", "content": "hi"}]) == "<user>hi"
        t0 = time.monotonic()
        with pytest.raises(TemplateRefused, match="ran longer than 2 s"):
            looping.render([{"role": "user", "content": "hi"}])
        assert time.monotonic() - t0 < 5
        assert renderer.render([{"role": "user", "content": "again"}]) == "<user>again"
    finally:
        renderer.close()
        looping.close()


def test_a_template_that_writes_too_much_is_refused() -> None:
    renderer = TemplateRenderer(HUGE, timeout_s=20.0, memory_bytes=512 << 20)
    try:
        with pytest.raises(TemplateRefused, match="MiB|characters|renderer died"):
            renderer.render([{"role": "user", "content": "hi"}])
    finally:
        renderer.close()


def test_a_template_that_does_not_parse_is_refused() -> None:
    renderer = TemplateRenderer("{% for %}")
    with pytest.raises(TemplateRefused, match="does not parse"):
        renderer.render([{"role": "user", "content": "hi"}])
