"""The official `openai` and `anthropic` Python SDKs against a running Headwater LLM gateway.

Run by engine/tests/llm_sdk.rs, which starts the mock providers and the gateway and passes:

  HEADWATER_SDK_BASE_URL  the gateway's root, e.g. http://127.0.0.1:40123 (no /v1)
  HEADWATER_SDK_KEY       a virtual key the gateway accepts

The gateway serves these model aliases (configured by the Rust test):

  gpt     -> openai egress      (mock provider, /v1/chat/completions)
  claude  -> anthropic egress   (/v1/messages)
  gem     -> gemini egress      (/v1beta/models/...:generateContent)
  embed   -> openai egress embeddings
  fb      -> a deployment that always answers 503, with fallbacks = ["claude"]
  faulty-gpt, faulty-claude, faulty-gem     the same egresses, for the fault checks
  limited-gpt, limited-claude, limited-gem  the same egresses, for the 429 checks
(the fault checks get aliases of their own, so the health and rate-limit state they leave
does not touch the other checks)

The mock answers "echo: <last user text>", calls tools for `call:NAME` words, and fails on
`mock:...` magic words (see engine/src/llm_mock.rs).

Every check runs (a failure does not stop the others); each prints its name and OK or FAIL
with the reason. The exit status is 0 only when every check passed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import anthropic
import openai

BASE = os.environ["HEADWATER_SDK_BASE_URL"].rstrip("/")
KEY = os.environ["HEADWATER_SDK_KEY"]
TIMEOUT = 30.0

# The OpenAI SDK joins paths to a base URL that ends in /v1 ("{base}/chat/completions");
# the Anthropic SDK adds /v1 itself ("{base}/v1/messages").
oai = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT)
ant = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=TIMEOUT)

TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["city"],
}
TOOLS_ANTHROPIC = [
    {"name": name, "description": f"mock tool {name}", "input_schema": TOOL_SCHEMA}
    for name in ("get_weather", "get_time")
]
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
    }
    for t in TOOLS_ANTHROPIC
]
# What the mock's tool calls carry (llm_mock::TOOL_ARGUMENTS).
TOOL_ARGS = {"city": "Paris", "n": 1}
TOOL_CALL_TEXT = "call:get_weather call:get_time"
# The aliases in configuration order, as the model lists show them.
ALIASES = [
    "gpt", "claude", "gem", "embed", "fb",
    "faulty-gpt", "faulty-claude", "faulty-gem",
    "limited-gpt", "limited-claude", "limited-gem",
]


def user(text):
    return [{"role": "user", "content": text}]


def words(text):
    return len(text.split())


# ---------------------------------------------------------------------------------------------
# The check runner

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def expect_raises(exc_type, fn):
    """Calls fn; returns the exception, which must be an exc_type."""
    try:
        result = fn()
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(
            f"expected {exc_type.__module__}.{exc_type.__name__}, got "
            f"{type(e).__module__}.{type(e).__name__}: {e}"
        ) from e
    raise AssertionError(f"expected {exc_type.__name__}, got a result: {result!r}")


def openai_error(exc_type, model, text, **kwargs):
    """The exc_type error a chat completion of `model` for one user message `text` raises."""
    return expect_raises(exc_type, lambda: oai.chat.completions.create(model=model, messages=user(text), **kwargs))


def openai_stream_error(stream, on_chunk=lambda chunk: None):
    """Reads `stream` (passing each chunk to on_chunk), which must end in a plain openai.APIError
    (not a status error: the HTTP status was 200) with a message in its body; returns it."""
    try:
        for chunk in stream:
            on_chunk(chunk)
    except openai.APIStatusError as e:
        raise AssertionError(f"expected a plain APIError, got a status error: {e!r}") from e
    except openai.APIError as e:
        assert isinstance(e.body, dict) and e.body.get("message"), e.body
        return e
    raise AssertionError("the stream ended without an error")


def anthropic_error(exc_type, model, text):
    """The exc_type error a message of `model` (max_tokens 10) for one user message `text` raises."""
    return expect_raises(exc_type, lambda: ant.messages.create(model=model, max_tokens=10, messages=user(text)))


def anthropic_stream_error(model, text):
    """Streams `model`'s answer to one user message `text`, which must end, after at least one
    token, in an anthropic.APIStatusError built from an `event: error`; returns it."""
    got = []
    try:
        with ant.messages.stream(model=model, max_tokens=100, messages=user(text)) as s:
            for t in s.text_stream:
                got.append(t)
    except anthropic.APIStatusError as e:
        assert got, "no token before the error"
        assert isinstance(e.body, dict) and e.body.get("type") == "error", e.body
        return e
    raise AssertionError(f"the stream ended without an error: {got}")


# ---------------------------------------------------------------------------------------------
# OpenAI SDK: chat


def openai_chat(model):
    text = f"hello from the openai sdk to {model}"
    r = oai.chat.completions.create(model=model, messages=user(text))
    assert r.object == "chat.completion", r
    assert r.id, r
    assert len(r.choices) == 1, r
    c = r.choices[0]
    assert c.index == 0, c
    assert c.message.role == "assistant", c
    assert c.message.content == f"echo: {text}", c.message.content
    assert c.finish_reason == "stop", c.finish_reason
    assert r.usage is not None, r
    assert r.usage.prompt_tokens == words(text), r.usage
    assert r.usage.completion_tokens == words(text) + 1, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage


@check
def openai_chat_openai_egress():
    openai_chat("gpt")


@check
def openai_chat_anthropic_egress():
    openai_chat("claude")


@check
def openai_chat_gemini_egress():
    openai_chat("gem")


@check
def openai_chat_max_tokens_length():
    r = oai.chat.completions.create(
        model="gpt", messages=user("one two three four five six"), max_completion_tokens=3
    )
    c = r.choices[0]
    assert c.finish_reason == "length", c
    assert c.message.content == "echo: one two", c.message.content
    assert r.usage.completion_tokens == 3, r.usage


@check
def openai_chat_fallback_model():
    # fb's only deployment answers 503; the fallback alias (claude) answers.
    text = "fallback please"
    r = oai.chat.completions.create(model="fb", messages=user(text))
    assert r.choices[0].message.content == f"echo: {text}", r
    assert r.choices[0].finish_reason == "stop", r


def openai_stream(model):
    text = f"stream these words via {model} please"
    stream = oai.chat.completions.create(
        model=model,
        messages=user(text),
        stream=True,
        stream_options={"include_usage": True},
    )
    content = []
    finish = None
    usage_chunks = []
    chunks = 0
    ids = set()
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage_chunks.append(chunk)
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(content) == f"echo: {text}", content
    assert len(content) > 1, f"not streamed token by token: {content}"
    assert finish == "stop", finish
    assert len(ids) == 1, f"chunk ids differ: {ids}"
    # include_usage: one last chunk with empty choices and the usage.
    assert len(usage_chunks) == 1, usage_chunks
    last = usage_chunks[0]
    assert last.choices == [], last
    assert last.usage.prompt_tokens == words(text), last.usage
    assert last.usage.completion_tokens == words(text) + 1, last.usage
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


@check
def openai_stream_openai_egress():
    openai_stream("gpt")


@check
def openai_stream_anthropic_egress():
    openai_stream("claude")


@check
def openai_stream_gemini_egress():
    openai_stream("gem")


@check
def openai_stream_fallback_model():
    # The failing first deployment answers 503 before any token: the fallback is invisible.
    text = "fallback stream"
    chunks = list(oai.chat.completions.create(model="fb", messages=user(text), stream=True))
    got = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert got == f"echo: {text}", got
    assert chunks[-1].choices[0].finish_reason == "stop", chunks[-1]


@check
def openai_async_concurrent_streams():
    import asyncio

    async def one(client, model, i):
        text = f"concurrent {model} {i}"
        stream = await client.chat.completions.create(model=model, messages=user(text), stream=True)
        got = []
        async for chunk in stream:
            for ch in chunk.choices:
                got.append(ch.delta.content or "")
        return "".join(got), f"echo: {text}"

    async def run():
        async with openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT) as client:
            jobs = [one(client, m, i) for i in range(3) for m in ("gpt", "claude", "gem")]
            return await asyncio.gather(*jobs)

    for got, want in asyncio.run(run()):
        assert got == want, (got, want)


@check
def openai_stream_without_usage():
    stream = oai.chat.completions.create(model="gpt", messages=user("no usage"), stream=True)
    chunks = list(stream)
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert text == "echo: no usage", text


@check
def openai_stream_helper():
    # The SDK's own stream manager: events and the reassembled final completion.
    text = "helper stream"
    with oai.chat.completions.stream(
        model="claude", messages=user(text), stream_options={"include_usage": True}
    ) as s:
        deltas = [e.delta for e in s if e.type == "content.delta"]
        final = s.get_final_completion()
    assert "".join(deltas) == f"echo: {text}", deltas
    assert final.choices[0].message.content == f"echo: {text}", final
    assert final.choices[0].finish_reason == "stop", final
    assert final.usage is not None and final.usage.completion_tokens == 3, final.usage


# ---------------------------------------------------------------------------------------------
# OpenAI SDK: tools


def check_openai_tool_calls(calls):
    assert calls is not None and len(calls) == 2, calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"], calls
    for c in calls:
        assert c.type == "function", c
        assert c.id, c
        assert json.loads(c.function.arguments) == TOOL_ARGS, c.function.arguments
    assert calls[0].id != calls[1].id, calls


def openai_tools(model):
    r = oai.chat.completions.create(model=model, messages=user(TOOL_CALL_TEXT), tools=TOOLS_OPENAI)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    check_openai_tool_calls(c.message.tool_calls)
    assert r.usage.completion_tokens == 10, r.usage  # 5 per call in the mock


@check
def openai_tools_openai_egress():
    openai_tools("gpt")


@check
def openai_tools_anthropic_egress():
    openai_tools("claude")


@check
def openai_tools_gemini_egress():
    openai_tools("gem")


def openai_tools_stream(model):
    stream = oai.chat.completions.create(
        model=model, messages=user(TOOL_CALL_TEXT), tools=TOOLS_OPENAI, stream=True
    )
    calls = {}  # index -> {"id", "name", "arguments"}
    finish = None
    pieces = 0
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    assert slot["id"] is None, f"id sent twice for index {tc.index}"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
                    pieces += 1
            if choice.finish_reason:
                finish = choice.finish_reason
    assert finish == "tool_calls", finish
    assert sorted(calls) == [0, 1], calls
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"], calls
    for i in (0, 1):
        assert calls[i]["id"], calls
        assert json.loads(calls[i]["arguments"]) == TOOL_ARGS, calls
    return pieces


@check
def openai_tools_stream_openai_egress():
    pieces = openai_tools_stream("gpt")
    assert pieces >= 2, f"arguments not streamed in pieces: {pieces}"


@check
def openai_tools_stream_anthropic_egress():
    openai_tools_stream("claude")


@check
def openai_tools_stream_gemini_egress():
    openai_tools_stream("gem")


@check
def openai_tools_stream_helper():
    with oai.chat.completions.stream(
        model="gpt", messages=user(TOOL_CALL_TEXT), tools=TOOLS_OPENAI
    ) as s:
        done = [e for e in s if e.type == "tool_calls.function.arguments.done"]
        final = s.get_final_completion()
    assert [e.name for e in done] == ["get_weather", "get_time"], done
    assert all(json.loads(e.arguments) == TOOL_ARGS for e in done), done
    assert final.choices[0].finish_reason == "tool_calls", final
    check_openai_tool_calls(final.choices[0].message.tool_calls)


@check
def openai_tool_result_round_trip():
    # The second turn: the assistant's tool calls and their results go back in.
    first = oai.chat.completions.create(model="claude", messages=user(TOOL_CALL_TEXT), tools=TOOLS_OPENAI)
    msg = first.choices[0].message
    messages = user(TOOL_CALL_TEXT) + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "sunny"},
        {"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "noon"},
        {"role": "user", "content": "thanks"},
    ]
    r = oai.chat.completions.create(model="claude", messages=messages, tools=TOOLS_OPENAI)
    assert r.choices[0].message.content == "echo: thanks", r
    assert r.choices[0].finish_reason == "stop", r


# ---------------------------------------------------------------------------------------------
# OpenAI SDK: models, embeddings


@check
def openai_models_list():
    page = oai.models.list()
    ids = [m.id for m in page]
    assert ids == ALIASES, ids
    for m in page.data:
        assert m.object == "model", m
        assert m.owned_by, m
        assert isinstance(m.created, int), m


@check
def openai_embeddings():
    # The SDK asks for base64 by default and decodes it to floats.
    r = oai.embeddings.create(model="embed", input=["one two", "three"])
    assert r.object == "list", r
    assert len(r.data) == 2, r
    for i, d in enumerate(r.data):
        assert d.object == "embedding", d
        assert d.index == i, d
        assert len(d.embedding) == 8, len(d.embedding)  # the mock's default size
        assert all(isinstance(x, float) for x in d.embedding), d.embedding
    assert r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens > 0, r.usage


@check
def openai_embeddings_float_and_dimensions():
    r = oai.embeddings.create(model="embed", input="hello", encoding_format="float", dimensions=4)
    assert len(r.data) == 1 and len(r.data[0].embedding) == 4, r
    # The same vector as base64 (exact float32) and as JSON floats (float32 precision).
    again = oai.embeddings.create(model="embed", input="hello", dimensions=4)
    pairs = list(zip(again.data[0].embedding, r.data[0].embedding))
    assert len(pairs) == 4 and all(abs(a - b) < 1e-6 for a, b in pairs), pairs


# ---------------------------------------------------------------------------------------------
# OpenAI SDK: errors


@check
def openai_error_wrong_key():
    bad = openai.OpenAI(base_url=f"{BASE}/v1", api_key="sk-wrong", max_retries=0, timeout=TIMEOUT)
    e = expect_raises(openai.AuthenticationError, lambda: bad.chat.completions.create(model="gpt", messages=user("hi")))
    assert e.status_code == 401, e.status_code
    assert e.code == "invalid_api_key", e.body


@check
def openai_error_unknown_model():
    e = openai_error(openai.NotFoundError, "no-such-model", "hi")
    assert e.status_code == 404, e.status_code
    assert e.param == "model", e.body


@check
def openai_error_unknown_model_error_body():
    # OpenAI answers an unknown model with 404 and
    # {"error": {"type": "invalid_request_error", "code": "model_not_found", ...}}.
    e = openai_error(openai.NotFoundError, "no-such-model", "hi")
    assert (e.type, e.code) == ("invalid_request_error", "model_not_found"), e.body


@check
def openai_error_unknown_embedding_model():
    e = expect_raises(openai.NotFoundError, lambda: oai.embeddings.create(model="no-such-model", input="hi"))
    assert e.status_code == 404, e.status_code


@check
def openai_error_provider_400():
    e = openai_error(openai.BadRequestError, "faulty-gpt", "mock:status:400")
    assert e.status_code == 400, e.status_code
    assert isinstance(e.message, str) and e.message, e


@check
def openai_error_provider_400_anthropic_egress():
    openai_error(openai.BadRequestError, "faulty-claude", "mock:status:400")


@check
def openai_error_rate_limited():
    started = time.monotonic()
    e = openai_error(openai.RateLimitError, "limited-gpt", "mock:status:429:1")
    assert e.status_code == 429, e.status_code
    assert time.monotonic() - started < 15, "took too long"


@check
def openai_error_rate_limited_stream():
    e = openai_error(openai.RateLimitError, "limited-gem", "mock:status:429:1", stream=True)
    assert e.status_code == 429, e.status_code


@check
def openai_error_bad_request_from_gateway():
    # Not a provider error: the gateway itself rejects a body without messages.
    expect_raises(openai.BadRequestError, lambda: oai.chat.completions.create(model="gpt", messages=[]))


def openai_broken_stream(model):
    """A stream broken after the first tokens: the gateway ends it with an OpenAI-style
    `data: {"error": {...}}` event, which the SDK raises as openai.APIError (not a status
    error: the HTTP status was 200) after yielding the text received so far."""
    stream = oai.chat.completions.create(model=model, messages=user("mock:fail-after:2 a b c d e f"), stream=True)
    got = []

    def on_chunk(chunk):
        for choice in chunk.choices:
            if choice.delta.content:
                got.append(choice.delta.content)
            assert choice.finish_reason is None, f"a broken stream finished: {choice}"

    e = openai_stream_error(stream, on_chunk)
    assert got, "no token before the error"
    assert "".join(got) == "echo: mock:fail-after:2"[: len("".join(got))], got
    assert isinstance(e.message, str) and e.message, e


@check
def openai_error_stream_broken_openai_egress():
    openai_broken_stream("faulty-gpt")


@check
def openai_error_stream_broken_anthropic_egress():
    openai_broken_stream("faulty-claude")


@check
def openai_error_stream_broken_gemini_egress():
    openai_broken_stream("faulty-gem")


@check
def openai_error_stream_provider_error_event():
    # The provider's own in-stream error event (mock:mid-stream-error), translated.
    openai_stream_error(
        oai.chat.completions.create(model="faulty-claude", messages=user("mock:mid-stream-error x y z"), stream=True)
    )


# ---------------------------------------------------------------------------------------------
# Anthropic SDK


def anthropic_create(model):
    text = f"hello from the anthropic sdk to {model}"
    m = ant.messages.create(model=model, max_tokens=100, messages=user(text))
    assert m.type == "message", m
    assert m.role == "assistant", m
    assert m.id, m
    assert len(m.content) == 1, m.content
    assert m.content[0].type == "text", m.content
    assert m.content[0].text == f"echo: {text}", m.content[0].text
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens == words(text), m.usage
    assert m.usage.output_tokens == words(text) + 1, m.usage


@check
def anthropic_create_anthropic_egress():
    anthropic_create("claude")


@check
def anthropic_create_openai_egress():
    anthropic_create("gpt")


@check
def anthropic_create_gemini_egress():
    anthropic_create("gem")


@check
def anthropic_create_system_and_max_tokens():
    m = ant.messages.create(
        model="claude",
        max_tokens=2,
        system="you are a test",
        messages=user("one two three"),
    )
    assert m.stop_reason == "max_tokens", m.stop_reason
    assert m.content[0].text == "echo: one", m.content
    assert m.usage.input_tokens == 3 + 4, m.usage  # system words count too


def anthropic_stream(model):
    text = f"stream these words via {model}"
    with ant.messages.stream(model=model, max_tokens=100, messages=user(text)) as s:
        deltas = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(deltas) == f"echo: {text}", deltas
    assert len(deltas) > 1, f"not streamed token by token: {deltas}"
    assert final.content[0].type == "text", final
    assert final.content[0].text == f"echo: {text}", final
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens == words(text) + 1, final.usage
    assert final.usage.input_tokens == words(text), final.usage


@check
def anthropic_stream_anthropic_egress():
    anthropic_stream("claude")


@check
def anthropic_stream_openai_egress():
    anthropic_stream("gpt")


@check
def anthropic_stream_gemini_egress():
    anthropic_stream("gem")


@check
def anthropic_stream_raw_events():
    text = "raw events"
    events = list(ant.messages.create(model="gem", max_tokens=100, messages=user(text), stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start", types
    assert types[-1] == "message_stop", types
    assert "content_block_start" in types and "content_block_stop" in types, types
    assert "message_delta" in types, types
    got = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert got == f"echo: {text}", got
    md = [e for e in events if e.type == "message_delta"][-1]
    assert md.delta.stop_reason == "end_turn", md
    assert md.usage.output_tokens == 3, md.usage


def anthropic_tools(model):
    m = ant.messages.create(model=model, max_tokens=100, messages=user(TOOL_CALL_TEXT), tools=TOOLS_ANTHROPIC)
    assert m.stop_reason == "tool_use", m.stop_reason
    uses = [b for b in m.content if b.type == "tool_use"]
    assert [b.name for b in uses] == ["get_weather", "get_time"], m.content
    for b in uses:
        assert b.id, b
        assert b.input == TOOL_ARGS, b.input
    return uses


@check
def anthropic_tools_anthropic_egress():
    anthropic_tools("claude")


@check
def anthropic_tools_openai_egress():
    anthropic_tools("gpt")


@check
def anthropic_tools_gemini_egress():
    anthropic_tools("gem")


def anthropic_tools_stream(model):
    with ant.messages.stream(model=model, max_tokens=100, messages=user(TOOL_CALL_TEXT), tools=TOOLS_ANTHROPIC) as s:
        json_pieces = [e for e in s if e.type == "input_json"]
        final = s.get_final_message()
    assert final.stop_reason == "tool_use", final.stop_reason
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [b.name for b in uses] == ["get_weather", "get_time"], final.content
    assert all(b.input == TOOL_ARGS for b in uses), [b.input for b in uses]
    assert uses[0].id and uses[1].id and uses[0].id != uses[1].id, uses
    return json_pieces


@check
def anthropic_tools_stream_anthropic_egress():
    pieces = anthropic_tools_stream("claude")
    assert len(pieces) >= 2, f"input not streamed in pieces: {pieces}"


@check
def anthropic_tools_stream_openai_egress():
    anthropic_tools_stream("gpt")


@check
def anthropic_tools_stream_gemini_egress():
    anthropic_tools_stream("gem")


@check
def anthropic_tool_result_round_trip():
    uses = anthropic_tools("gpt")
    messages = user(TOOL_CALL_TEXT) + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in uses]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
                {"type": "tool_result", "tool_use_id": uses[1].id, "content": "noon"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    m = ant.messages.create(model="gpt", max_tokens=100, messages=messages, tools=TOOLS_ANTHROPIC)
    assert m.content[0].text == "echo: thanks", m.content
    assert m.stop_reason == "end_turn", m


@check
def anthropic_models_list():
    page = ant.models.list()
    ids = [m.id for m in page.data]
    assert ids == ALIASES, ids
    assert all(m.type == "model" for m in page.data), page.data


@check
def anthropic_fallback_model():
    m = ant.messages.create(model="fb", max_tokens=50, messages=user("fall back"))
    assert m.content[0].text == "echo: fall back", m.content


@check
def anthropic_error_wrong_key():
    bad = anthropic.Anthropic(base_url=BASE, api_key="sk-wrong", max_retries=0, timeout=TIMEOUT)
    e = expect_raises(
        anthropic.AuthenticationError, lambda: bad.messages.create(model="claude", max_tokens=10, messages=user("hi"))
    )
    assert e.status_code == 401, e.status_code
    assert e.body["type"] == "error" and e.body["error"]["type"] == "authentication_error", e.body


@check
def anthropic_error_unknown_model():
    e = anthropic_error(anthropic.NotFoundError, "no-such-model", "hi")
    assert e.status_code == 404, e.status_code
    assert e.body["type"] == "error" and e.body["error"]["message"], e.body


@check
def anthropic_error_unknown_model_error_type():
    # Anthropic answers a 404 with the error type "not_found_error" (the SDK's
    # anthropic.types.NotFoundErrorObject).
    e = anthropic_error(anthropic.NotFoundError, "no-such-model", "hi")
    assert e.body["error"]["type"] == "not_found_error", e.body


@check
def anthropic_error_provider_400():
    e = anthropic_error(anthropic.BadRequestError, "faulty-claude", "mock:status:400")
    assert e.body["error"]["type"] == "invalid_request_error", e.body


@check
def anthropic_error_provider_400_gemini_egress():
    anthropic_error(anthropic.BadRequestError, "faulty-gem", "mock:status:400")


@check
def anthropic_error_missing_max_tokens():
    # Anthropic requires max_tokens; the gateway's Anthropic ingress answers 400 like Anthropic.
    e = expect_raises(
        anthropic.BadRequestError,
        lambda: ant.post("/v1/messages", cast_to=object, body={"model": "claude", "messages": user("hi")}),
    )
    assert e.status_code == 400, e.status_code


@check
def anthropic_error_rate_limited():
    e = anthropic_error(anthropic.RateLimitError, "limited-claude", "mock:status:429:1")
    assert e.status_code == 429, e.status_code
    assert e.body["error"]["type"] == "rate_limit_error", e.body


@check
def anthropic_error_stream_broken():
    """After the first token the gateway ends the stream with `event: error`; the SDK raises it
    as a status error built from that event (the HTTP status was 200: anthropic.APIStatusError)."""
    e = anthropic_stream_error("faulty-gpt", "mock:fail-after:2 a b c")
    assert e.body["error"]["type"] and e.body["error"]["message"], e.body


@check
def anthropic_error_stream_provider_error_event():
    # Anthropic's own `event: error` (overloaded_error) after two tokens, passed through.
    e = anthropic_stream_error("faulty-claude", "mock:mid-stream-error x y")
    assert e.body["error"]["type"] == "overloaded_error", e.body


@check
def anthropic_async_stream():
    import asyncio

    async def run():
        async with anthropic.AsyncAnthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=TIMEOUT) as client:
            async with client.messages.stream(model="gem", max_tokens=100, messages=user("async hello")) as s:
                text = "".join([t async for t in s.text_stream])
                final = await s.get_final_message()
            return text, final

    text, final = asyncio.run(run())
    assert text == "echo: async hello", text
    assert final.stop_reason == "end_turn", final


# ---------------------------------------------------------------------------------------------


def main():
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, gateway {BASE}", flush=True)
    failed = []
    for fn in CHECKS:
        started = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            failed.append(fn.__name__)
            print(f"{fn.__name__} ... FAIL ({time.monotonic() - started:.2f}s)", flush=True)
            for line in traceback.format_exception(e):
                print("    " + line.rstrip().replace("\n", "\n    "), flush=True)
        else:
            print(f"{fn.__name__} ... OK ({time.monotonic() - started:.2f}s)", flush=True)
    print(f"sdk checks: {len(CHECKS) - len(failed)} ok, {len(failed)} failing", flush=True)
    if failed:
        print("failing: " + ", ".join(failed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
