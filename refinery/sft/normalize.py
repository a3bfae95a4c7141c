"""Recognising an SFT record's dialect and normalising it to :mod:`refinery.sft.schema`.

Pure functions from one parsed JSON object to either the normalised fields or a reason. Only
*structure* is judged here (a conversation without an assistant turn, scores that are not
numbers, chosen and rejected continuing different conversations): what a record says (empty,
truncated or refusing answers) is for the rules of ``sft_checked``, so that decision shows as a
rule with a threshold rather than as unreadable input.

Dialects, tried in this order (the first whose fields are present decides):

- ``messages`` (OpenAI: ``role``/``content``, content a string or a list of text parts),
  ``conversations`` (ShareGPT: ``from``/``value``) or a ``conversation`` list (LMSYS-Chat-1M,
  role/content; unless the record also has ``chosen``/``rejected``) → ``conversation``. Tool
  calling is part of the record, not an anomaly: an assistant turn may carry ``tool_calls``
  (OpenAI; its ``content`` null or absent) or the legacy ``function_call``, and
  ``tool``/``function`` turns carry the results (``tool_call_id``, ``name``); ShareGPT's
  ``function_call``/``observation`` turns (LLaMA-Factory) are read the same way. Every call is
  stored in OpenAI's shape (``{"id"?, "type": "function", "function": {"name", "arguments"}}``,
  arguments a JSON string).
- ``chosen`` and ``rejected``: strings with a ``prompt``, message lists (the shared context before
  the final assistant turn is the prompt), or Anthropic HH transcripts (``\\n\\nHuman: …
  \\n\\nAssistant: …``) → ``preference``.
- ``responses`` or ``completions`` with a score each (objects with ``score``/``rating``/
  ``reward``, or a parallel ``scores``/``ratings`` list), two or more → ``ranked``.
- ``instruction`` with ``output`` (Alpaca, optional ``input``) or ``response`` (Dolly, optional
  ``context``) → ``instruction``.
- ``prompt`` with ``completion`` or ``response`` → ``instruction``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from refinery.ingest.text_reader import meta_json as text_meta_json

ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
    "observation": "tool",  # ShareGPT tool results (LLaMA-Factory, glaive)
    "function_call": "assistant",  # ShareGPT: an assistant turn that is a call (value: JSON)
}
SCORE_KEYS = ("score", "rating", "reward")
QUALITY_KEYS = ("quality", "score", "rating")
RESPONSE_TEXT_KEYS = ("text", "response", "content", "completion", "output")
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


class Malformed(ValueError):
    """A record whose structure cannot be read as any SFT dialect; ``reason`` is the code."""

    def __init__(self, reason: str, detail: str, kind: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.kind = reason, detail, kind


@dataclass
class Normalized:
    kind: str
    format: str
    prompt: str
    messages: list[dict]
    response: str | None
    rejected_response: str | None = None
    responses: list[dict] | None = None
    quality: float | None = None
    consumed: frozenset[str] = frozenset()

    @property
    def system(self) -> str | None:
        return next((m["content"] for m in self.messages if m["role"] == "system"), None)

    @property
    def turns(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)

    def texts(self) -> list[str]:
        """Every piece of text in the record, tool calls included (for size limits)."""
        out = [turn_text(m) for m in self.messages]
        out += [r["text"] for r in self.responses or []]
        return out + ([self.rejected_response] if self.rejected_response else [])


def render_call(call: dict) -> str:
    """One tool call as ``name(arguments)``: how calls read wherever text is compared."""
    fn = call["function"]
    return f"{fn['name']}({fn['arguments']})"


def turn_text(message: dict) -> str:
    """A turn as text: its content, then each of its tool calls as ``name(arguments)``, one a line.

    A call-only assistant turn (content null) is its calls; this is the text rules, size limits
    and dedup keys read, so a call is never an empty answer and two different calls never look
    alike."""
    parts = [message["content"]] if message.get("content") else []
    parts += [render_call(c) for c in message.get("tool_calls") or ()]
    return "\n".join(parts)


def _string(record: dict, key: str, kind: str, required: bool = True) -> str | None:
    if key not in record or record[key] is None:
        if required:
            raise Malformed("missing_field", f"{kind} record has no '{key}'", kind)
        return None
    value = record[key]
    if not isinstance(value, str):
        raise Malformed("field_not_string", f"'{key}' is {type(value).__name__}, expected a string", kind)
    return value


def _number(value: object) -> float | None:
    """A finite number, or None; booleans and numeric strings are not scores."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (JSON allows 4300 digits) is no score
        return None
    return number if math.isfinite(number) else None


def _content(value: object, where: str, kind: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                shown = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise Malformed("unsupported_content", f"{where}: content part {shown!r} is not text", kind)
        return "\n".join(parts)
    raise Malformed("field_not_string", f"{where}: content is {type(value).__name__}", kind)


def _arguments(value: object, where: str, kind: str) -> str:
    """A call's arguments as the JSON string OpenAI stores (objects, as some datasets give, are
    serialised; a missing value is no arguments)."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    raise Malformed("malformed_tool_call", f"{where}: arguments are {type(value).__name__}", kind)


def parse_tool_call(value: object, where: str, kind: str = "conversation") -> dict:
    """One call in OpenAI's shape, from OpenAI's (``{id, type, function: {name, arguments}}``)
    or the flat ``{name, arguments}`` of the legacy ``function_call`` and of ShareGPT datasets."""
    if not isinstance(value, dict):
        raise Malformed("malformed_tool_call", f"{where} is {type(value).__name__}, not a call", kind)
    if value.get("type", "function") != "function":
        raise Malformed(
            "malformed_tool_call", f"{where} has type {value.get('type')!r}, not 'function'", kind
        )
    fn = value["function"] if isinstance(value.get("function"), dict) else value
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Malformed("malformed_tool_call", f"{where} has no function name", kind)
    call = {
        "type": "function",
        "function": {"name": name, "arguments": _arguments(fn.get("arguments"), where, kind)},
    }
    if value.get("id") is not None:
        if not isinstance(value["id"], str):
            raise Malformed("malformed_tool_call", f"{where}: id is {type(value['id']).__name__}", kind)
        call = {"id": value["id"], **call}
    return call


def _tool_calls(turn: dict, role: str, where: str, kind: str) -> list[dict]:
    """The calls an assistant turn makes (``tool_calls``, or the legacy single ``function_call``)."""
    raw = turn.get("tool_calls")
    if raw is None and isinstance(turn.get("function_call"), dict):
        raw = [turn["function_call"]]
    if raw is None:
        return []
    if role != "assistant":
        raise Malformed("malformed_tool_call", f"{where}: a {role} turn cannot call tools", kind)
    if not isinstance(raw, list) or not raw:
        raise Malformed("malformed_tool_call", f"{where}: tool_calls must be a non-empty list", kind)
    return [parse_tool_call(c, f"{where}.tool_calls[{j}]", kind) for j, c in enumerate(raw)]


def _sharegpt_call(value: object, where: str, kind: str) -> list[dict]:
    """ShareGPT's ``function_call`` turn: its value is a JSON call, or a JSON list of calls."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as err:
        raise Malformed(
            "malformed_tool_call", f"{where}: function_call value is not JSON ({err.msg})", kind
        ) from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls:
        raise Malformed("malformed_tool_call", f"{where}: function_call lists no call", kind)
    return [parse_tool_call(c, f"{where}[{j}]", kind) for j, c in enumerate(calls)]


def _tool_content(value: object, where: str, kind: str) -> str:
    """A tool result: text (or text parts) as for any turn; a JSON object is kept as JSON text."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return _content(value, where, kind)


def parse_messages(value: object, field: str, kind: str = "conversation") -> list[dict]:
    """OpenAI (role/content) or ShareGPT (from/value) turns as ``[{role, content}]``, plus
    ``tool_calls`` on assistant turns that call tools (content then None when there is no text) and
    ``tool_call_id``/``name`` on tool results, where the input gives them."""
    if not isinstance(value, list) or not value:
        raise Malformed("malformed_conversation", f"'{field}' must be a non-empty list of turns", kind)
    out = []
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise Malformed("malformed_conversation", f"{where} is {type(turn).__name__}", kind)
        raw_role = turn.get("role", turn.get("from"))
        content = turn["content"] if "content" in turn else turn.get("value")
        if not isinstance(raw_role, str) or raw_role.lower() not in ROLE_ALIASES:
            raise Malformed(
                "unknown_role", f"{where} has role {raw_role!r}; known: {sorted(ROLE_ALIASES)}", kind
            )
        role = ROLE_ALIASES[raw_role.lower()]
        if raw_role.lower() == "function_call":
            calls, content = _sharegpt_call(content, where, kind), None
        else:
            calls = _tool_calls(turn, role, where, kind)
        if content is None and not calls:
            raise Malformed("malformed_conversation", f"{where} has no content", kind)
        message: dict = {"role": role}
        if role == "tool":
            message["content"] = _tool_content(content, where, kind)
            for key in ("tool_call_id", "name"):
                if turn.get(key) is not None:
                    if not isinstance(turn[key], str):
                        raise Malformed("malformed_tool_call", f"{where}: {key} is not a string", kind)
                    message[key] = turn[key]
        else:
            message["content"] = None if content is None else _content(content, where, kind)
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _check_tool_turns(messages: list[dict], field: str, kind: str) -> None:
    """Results answer calls, and calls get their results: a tool turn follows an assistant turn
    that called tools (or another result of it), a ``tool_call_id`` names one of its calls, and
    every call is answered (each id, or at least one result where calls carry no ids) before the
    dialogue goes on. A transcript may *end* on a call: that teaches when and how to call, and is
    how OpenAI's fine-tuning format shows it; OpenAI's API refuses a history that continues past
    an unanswered call, and a model trained on one learns to answer without the result."""
    open_call: dict | None = None  # the assistant turn whose results may follow
    waiting: set[str] = set()  # its call ids not answered yet
    results = 0
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if m["role"] == "tool":
            if open_call is None:
                raise Malformed(
                    "malformed_conversation", f"{where} is a tool result that answers no call", kind
                )
            call_id = m.get("tool_call_id")
            ids = {c["id"] for c in open_call["tool_calls"] if "id" in c}
            if call_id is not None and ids and call_id not in ids:
                raise Malformed(
                    "malformed_conversation", f"{where} answers call {call_id!r}, which was not made", kind
                )
            waiting.discard(call_id)
            results += 1
            continue
        if open_call is not None and (waiting or not results):
            missing = f"call {sorted(waiting)} got" if waiting else "tool call got"
            raise Malformed("malformed_conversation", f"{where} continues, but the {missing} no result", kind)
        open_call = m if m.get("tool_calls") else None
        waiting = {c["id"] for c in m.get("tool_calls") or () if "id" in c}
        results = 0


def _check_conversation(
    messages: list[dict], field: str, kind: str, ends_with_assistant: bool = True
) -> None:
    roles = [m["role"] for m in messages]
    first = next((i for i, r in enumerate(roles) if r != "system"), None)
    if first is None or roles[first] != "user":
        raise Malformed("malformed_conversation", f"'{field}' does not start with a user turn", kind)
    if "system" in roles[first:]:
        raise Malformed(
            "malformed_conversation", f"'{field}' has a system turn after the dialogue began", kind
        )
    if ends_with_assistant and roles[-1] != "assistant":
        raise Malformed(
            "malformed_conversation", f"'{field}' ends with a {roles[-1]} turn: nothing to learn from", kind
        )
    _check_tool_turns(messages, field, kind)


def _first_user(messages: list[dict]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


def parse_hh_transcript(text: str) -> list[dict]:
    """``"\\n\\nHuman: … \\n\\nAssistant: …"`` (Anthropic HH-RLHF) as turns."""
    pieces = HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text.lstrip("\n"))
    if pieces[0].strip() or len(pieces) < 3:
        raise Malformed("malformed_preference", "not a Human:/Assistant: transcript", "preference")
    turns = pieces[1:]
    return [
        {"role": "user" if who == "Human" else "assistant", "content": said.strip()}
        for who, said in zip(turns[0::2], turns[1::2], strict=True)
    ]


CONVERSATION_FIELDS = {"messages": "openai", "conversations": "sharegpt", "conversation": "lmsys"}


def _conversation(record: dict) -> Normalized:
    field = next(f for f in CONVERSATION_FIELDS if f in record)
    dialect = CONVERSATION_FIELDS[field]
    messages = parse_messages(record[field], field)
    _check_conversation(messages, field, "conversation")
    if sum(m["role"] == "assistant" for m in messages) == 0:
        raise Malformed("malformed_conversation", f"'{field}' has no assistant turn", "conversation")
    return Normalized(
        kind="conversation",
        format=dialect,
        prompt=_first_user(messages),
        messages=messages,
        response=turn_text(messages[-1]),
        quality=_quality(record),
        consumed=frozenset({field}),
    )


def _branch(value: object, field: str) -> list[dict]:
    if isinstance(value, list):
        return parse_messages(value, field, "preference")
    if isinstance(value, str) and HH_TURN.search(value):
        return parse_hh_transcript(value)
    raise Malformed(
        "malformed_preference",
        f"'{field}' is neither a string, a message list nor a transcript",
        "preference",
    )


def _preference(record: dict) -> Normalized:
    chosen, rejected, prompt = record.get("chosen"), record.get("rejected"), record.get("prompt")
    consumed = {"chosen", "rejected", "prompt"}
    transcript = isinstance(chosen, str) and chosen.lstrip("\n").startswith("Human:")
    if isinstance(chosen, str) and isinstance(rejected, str) and isinstance(prompt, str) and not transcript:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}]
        dialect = "prompt_chosen_rejected"
        context = messages[:1]
        chosen_text, rejected_text = chosen, rejected
    else:
        if chosen is None or rejected is None:
            raise Malformed(
                "missing_field", "preference record needs both 'chosen' and 'rejected'", "preference"
            )
        branch_c, branch_r = _branch(chosen, "chosen"), _branch(rejected, "rejected")
        dialect = "hh_transcript" if isinstance(chosen, str) else "chosen_rejected_messages"
        if isinstance(prompt, list):  # prompt as its own message list, branches are the answers only
            context = parse_messages(prompt, "prompt", "preference")
            branch_c, branch_r = context + branch_c, context + branch_r
        elif isinstance(prompt, str) and branch_c and branch_c[0]["role"] == "assistant":
            context = [{"role": "user", "content": prompt}]
            branch_c, branch_r = context + branch_c, context + branch_r
        elif prompt is not None and not isinstance(prompt, str):
            raise Malformed("field_not_string", f"'prompt' is {type(prompt).__name__}", "preference")
        for name, branch in (("chosen", branch_c), ("rejected", branch_r)):
            _check_conversation(branch, name, "preference")
        context = branch_c[:-1]
        if branch_r[:-1] != context:
            raise Malformed(
                "malformed_preference", "chosen and rejected continue different conversations", "preference"
            )
        messages = branch_c
        chosen_text, rejected_text = turn_text(branch_c[-1]), turn_text(branch_r[-1])
    if not any(m["role"] == "user" for m in context):
        raise Malformed("malformed_preference", "no user turn before the compared responses", "preference")
    scores = (_number(record.get("score_chosen")), _number(record.get("score_rejected")))
    consumed |= {"score_chosen", "score_rejected"}
    return Normalized(
        kind="preference",
        format=dialect,
        prompt=_first_user(context),
        messages=messages,
        response=chosen_text,
        rejected_response=rejected_text,
        responses=[{"text": chosen_text, "score": scores[0]}, {"text": rejected_text, "score": scores[1]}],
        quality=scores[0] if scores[0] is not None else _quality(record),
        consumed=frozenset(consumed),
    )


def _ranked(record: dict) -> Normalized:
    field = "responses" if "responses" in record else "completions"
    items = record[field]
    if not isinstance(items, list) or len(items) < 2:
        raise Malformed("malformed_ranking", f"'{field}' must list at least two responses", "ranked")
    parallel_key = next((k for k in ("scores", "ratings", "rewards") if k in record), None)
    parallel = record.get(parallel_key) if parallel_key else None
    if parallel is not None and (not isinstance(parallel, list) or len(parallel) != len(items)):
        raise Malformed(
            "malformed_ranking", f"'{parallel_key}' must be a list as long as '{field}'", "ranked"
        )
    ranked = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            text, score = item, None
        elif isinstance(item, dict):
            key = next((k for k in RESPONSE_TEXT_KEYS if k in item), None)
            if key is None:
                raise Malformed("malformed_ranking", f"{field}[{i}] has no text", "ranked")
            text = _content(item[key], f"{field}[{i}]", "ranked")
            score = next((item[k] for k in SCORE_KEYS if k in item), None)
        else:
            raise Malformed("malformed_ranking", f"{field}[{i}] is {type(item).__name__}", "ranked")
        if parallel is not None:
            score = parallel[i]
        value = _number(score)
        if value is None:
            raise Malformed(
                "malformed_ranking", f"{field}[{i}] has no numeric score (got {score!r})", "ranked"
            )
        ranked.append({"text": text, "score": value})
    prompt_key = next((k for k in ("prompt", "instruction", "question") if k in record), None)
    if prompt_key is None:
        raise Malformed(
            "missing_field", "ranked record has no 'prompt' (or 'instruction'/'question')", "ranked"
        )
    prompt = _string(record, prompt_key, "ranked")
    ranked.sort(key=lambda r: -r["score"])  # stable: equal scores keep input order
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ranked[0]["text"]}]
    return Normalized(
        kind="ranked",
        format="ranked_responses",
        prompt=prompt,
        messages=messages,
        response=ranked[0]["text"],
        rejected_response=ranked[-1]["text"],
        responses=ranked,
        quality=ranked[0]["score"],
        consumed=frozenset({field, prompt_key, *([parallel_key] if parallel_key else [])}),
    )


def _instruction(record: dict) -> Normalized:
    if "instruction" in record:
        instruction = _string(record, "instruction", "instruction")
        if "output" in record:
            dialect, answer_key, context_key = "alpaca", "output", "input"
        elif "response" in record:
            dialect, answer_key, context_key = "dolly", "response", "context"
        else:
            raise Malformed(
                "missing_field", "instruction record has no 'output' (or 'response')", "instruction"
            )
        answer = _string(record, answer_key, "instruction")
        context = _string(record, context_key, "instruction", required=False)
        prompt = instruction if not (context and context.strip()) else f"{instruction}\n\n{context}"
        consumed = {"instruction", answer_key, context_key}
    else:
        prompt = _string(record, "prompt", "instruction")
        answer_key = "completion" if "completion" in record else "response"
        answer = _string(record, answer_key, "instruction")
        dialect, consumed = "prompt_completion", {"prompt", answer_key}
    system = _string(record, "system", "instruction", required=False)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": answer},
    ]
    return Normalized(
        kind="instruction",
        format=dialect,
        prompt=prompt,
        messages=messages,
        response=answer,
        quality=_quality(record),
        consumed=frozenset(consumed | {"system"}),
    )


def _quality(record: dict) -> float | None:
    return next((v for k in QUALITY_KEYS if (v := _number(record.get(k))) is not None), None)


def normalize(record: dict) -> Normalized:
    """The record's dialect, normalised; raises :class:`Malformed` with a reason code."""
    lmsys = isinstance(record.get("conversation"), list) and not ("chosen" in record or "rejected" in record)
    if "messages" in record or "conversations" in record or lmsys:
        return _conversation(record)
    if "chosen" in record or "rejected" in record:
        return _preference(record)
    if "responses" in record or "completions" in record:
        return _ranked(record)
    if "instruction" in record or ("prompt" in record and ("completion" in record or "response" in record)):
        return _instruction(record)
    raise Malformed(
        "unknown_format",
        f"no SFT dialect recognised from fields {sorted(record)[:12]}: expected messages, conversation(s), "
        "chosen/rejected, responses, instruction/output or prompt/completion",
    )


def meta_json(record: dict, consumed: frozenset[str]) -> str | None:
    """Everything of the input not modelled in a column (and its ``meta``), so nothing is lost.

    Quality fields are kept verbatim in ``meta`` even when they also became ``quality``.
    """
    return text_meta_json(record, (consumed | {"id", "meta"}) - set(QUALITY_KEYS))
