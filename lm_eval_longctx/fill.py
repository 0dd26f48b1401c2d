"""Assemble a prompt of exactly N tokens: head, filler units with needles among them, tail.

Cost is linear in N: filler units are measured in one batched tokenizer call, the prompt is
assembled from those counts, and the whole prompt is tokenized once to verify. Units are
measured in context (after ``anchor``), so for most tokenizers that first check is exact;
where tokens merge across unit boundaries the measured difference is fed back and the tail
of the filler is re-solved, a bounded number of times. A prompt that cannot be made exact
raises; it is never returned a few tokens off.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.records import Record
from lm_eval_longctx.tokens import PromptCounter, token_at

MAX_CORRECTIONS = 8
MAX_FILL_UNITS = 16
MAX_MINIMUM_SEARCH = 400


@dataclass(frozen=True)
class Layout:
    """The fixed parts of a prompt and how its filler units join.

    ``head + units[:i] + needles[0] + units[i:j] + needles[1] + ... + tail`` is the user's
    text (needles in the order of their depths, see ``needle_depths``); every unit and every
    needle follow text that ends with ``anchor``. ``answer_prefix`` is the start of the answer
    (lm-eval's ``gen_prefix``), counted where lm-eval puts it. ``needles[0]`` is the one the
    question is about (the first asked, for a question about several).
    """

    head: str
    needles: tuple[str, ...]
    tail: str
    anchor: str
    answer_prefix: str = ""


def needle_depths(depth: float, count: int) -> tuple[float, ...]:
    """Return the depth of each of ``count`` needles: the first (the asked one) at ``depth``,
    needle k at ``(depth + k / count) mod 1``: spread evenly over the haystack, ``1/count``
    apart, continuing at the top past the bottom (depth 1 with 4 needles: 1, 0.25, 0.5, 0.75)."""
    return tuple(depth if k == 0 else (depth + k / count) % 1.0 for k in range(count))


@dataclass(frozen=True)
class Assembled:
    """An exact-length prompt and where its needles landed (in ``Layout.needles`` order)."""

    prompt: str
    target_tokens: int
    actual_tokens: int
    needle_token_offsets: tuple[int, ...]

    @property
    def needle_token_offset(self) -> int:
        """Return the token offset of the first needle (the asked one)."""
        return self.needle_token_offsets[0]

    def record(self, spec, layout: Layout, *, answer: str, depth: float, sample: int, **details) -> Record:
        """Return the record of this prompt, built from ``layout`` in ``spec``'s format."""
        return Record(
            prompt=self.prompt,
            answer_prefix=layout.answer_prefix,
            answer=answer,
            max_seq_length=self.target_tokens,
            actual_tokens=self.actual_tokens,
            prompt_style=spec.prompt_style,
            chat_template=spec.chat_template,
            depth=depth,
            sample=sample,
            needle_token_offset=self.needle_token_offset,
            details=details,
        )


def minimum_tokens(counter: PromptCounter, layout: Layout) -> int:
    """Return the token count of the prompt with no filler at all."""
    return counter.count(layout.head + "".join(layout.needles) + layout.tail, layout.answer_prefix)


def build_grid(spec, counter: PromptCounter, what: str, layout_of_sample, record, progress=None) -> list[dict]:
    """Return ``record(length, depth, sample)`` for every cell of ``spec``'s grid.

    The grid's shortest length is checked first (see ``check_lengths``); ``progress(length)``
    is called after each record is built, the check's included.
    """
    built: dict[tuple, dict] = {}

    def once(length: int, depth: float, sample: int) -> dict:
        # The length check builds the shortest length at depth 0; the grid reuses those.
        if (length, depth, sample) not in built:
            built[length, depth, sample] = record(length, depth, sample)
            if progress is not None:
                progress(length)
        return built[length, depth, sample]

    check_lengths(spec, counter, what, layout_of_sample, lambda length, sample: once(length, 0.0, sample))
    records = []
    for length in spec.max_seq_lengths:
        for depth in spec.depths:
            for sample in range(spec.num_samples):
                records.append(once(length, depth, sample))
    return records


def check_lengths(spec, counter: PromptCounter, what: str, layout_of_sample, build) -> None:
    """Refuse a grid whose shortest length cannot be built for every sample; say what can.

    ``layout_of_sample(i)`` gives sample i's layout and ``build(length, i)`` builds its prompt.
    The suggested minimum is verified: every sample builds at exactly that length.
    """
    shortest = min(spec.max_seq_lengths)
    fixed = max(minimum_tokens(counter, layout_of_sample(i)) for i in range(spec.num_samples))
    if shortest >= fixed and _builds(build, shortest, spec.num_samples):
        return
    minimum = next(
        (n for n in range(fixed, fixed + MAX_MINIMUM_SEARCH) if _builds(build, n, spec.num_samples)), None
    )
    raise LongCtxError(
        f"{what}: length {shortest} in max_seq_lengths is too small: the fixed parts of the prompt "
        f"(header, needle and question, with BOS and chat template if used) take up to {fixed} tokens "
        f"with this tokenizer"
        + (f", and the shortest length every sample can be built at is {minimum}. Use lengths of at least {minimum}." if minimum else ".")
    )


def _builds(build, length: int, num_samples: int) -> bool:
    try:
        for sample in range(num_samples):
            build(length, sample)
    except LongCtxError:
        return False
    return True


def assemble(
    counter: PromptCounter,
    layout: Layout,
    target_tokens: int,
    depth: float,
    draw_units: Callable[[int], list[str]],
    what: str,
) -> Assembled:
    """Return a prompt of exactly ``target_tokens`` tokens with the first needle at ``depth``.

    Each needle goes where the tokens before it are closest to its depth x ``target_tokens``
    (to within one filler unit; 0 puts it right after the head, 1 right before the tail); the
    first needle's depth is ``depth``, the others' are spread from it (``needle_depths``).
    ``draw_units(n)`` returns the next ``n`` filler units of a deterministic stream. ``what``
    names the task in error messages.
    """
    fixed, head_tokens = _fixed_parts(counter, layout)
    depths = needle_depths(depth, len(layout.needles))
    # Tokens of each needle, to place the later ones after the earlier (not needed for one).
    needle_tokens = counter.piece_lengths(list(layout.needles), layout.anchor) if len(depths) > 1 else [0]
    if target_tokens < fixed:
        raise LongCtxError(
            f"{what}: length {target_tokens} is too small: the fixed parts of the prompt (header, "
            f"needle and question, with BOS and chat template if used) already take {fixed} tokens "
            f"with this tokenizer. Use lengths of at least {fixed} in max_seq_lengths."
        )
    budget = target_tokens - fixed
    units, lengths, spares = _fill_bulk(counter, layout.anchor, budget, draw_units)

    for attempt in range(MAX_CORRECTIONS + 1):
        # Alternate between tails of long and of short units: where a unit's length depends
        # on its neighbour, a different tail of the same measured length often lands exactly.
        tail_units = _solve_tail(
            counter, layout.anchor, budget, units, lengths, spares, draw_units, prefer_long=attempt % 2 == 0
        )
        if tail_units is None:
            raise LongCtxError(
                f"{what}: cannot reach exactly {target_tokens} tokens with this tokenizer: no "
                f"combination of filler units adds the last tokens (every unit it produced "
                f"tokenizes to one of {sorted(spares)} tokens). Try a length a few tokens away."
            )
        filler = units + [u for u, _ in tail_units]
        filler_lengths = lengths + [n for _, n in tail_units]
        result, in_context = _place_and_verify(
            counter, layout, filler, filler_lengths, depths, needle_tokens, head_tokens, target_tokens
        )
        if result.actual_tokens == target_tokens:
            return result
        # Tokens merged (or split) across unit boundaries. The verification pass says how many
        # tokens each unit really took in context: adopt those counts for the bulk, correct
        # the spares by what was learnt, and solve the tail again.
        budget = target_tokens - (result.actual_tokens - sum(in_context))
        delta = {u: c - n for u, n, c in zip(filler, filler_lengths, in_context)}
        typical = round(sum(delta.values()) / max(1, len(delta)))
        lengths = in_context[: len(units)]
        for unit, n in tail_units:
            spares[n].append(unit)
        corrected = defaultdict(list)
        for n, pool in spares.items():
            for unit in pool:
                corrected[n + delta.get(unit, typical)].append(unit)
        spares = corrected
    raise LongCtxError(
        f"{what}: could not make the prompt exactly {target_tokens} tokens: this tokenizer "
        f"merges tokens across filler boundaries unpredictably (last attempt had "
        f"{result.actual_tokens}). Try another length, or report the tokenizer as a bug."
    )


def _fill_bulk(counter: PromptCounter, anchor: str, budget: int, draw_units):
    """Take filler units in stream order while they fit; return them, their lengths, spares."""
    units: list[str] = []
    lengths: list[int] = []
    spares: dict[int, list[str]] = defaultdict(list)
    total = 0
    probe = draw_units(64)
    probe_lengths = counter.piece_lengths(probe, anchor)
    mean = max(1.0, sum(probe_lengths) / len(probe_lengths))
    batch, batch_lengths = probe, probe_lengths
    while True:
        for i, (unit, n) in enumerate(zip(batch, batch_lengths)):
            if total + n <= budget:
                units.append(unit)
                lengths.append(n)
                total += n
            else:
                for spare, m in zip(batch[i:], batch_lengths[i:]):  # measured already: keep them
                    spares[m].append(spare)
                return units, lengths, spares
        # Draw about what is still missing, plus a margin, in one batched call.
        batch = draw_units(int((budget - total) / mean * 1.05) + 16)
        batch_lengths = counter.piece_lengths(batch, anchor)


def _solve_tail(counter, anchor, budget, units, lengths, spares, draw_units, prefer_long=True):
    """Trim or extend the bulk so a few units can fill the rest exactly; return those units.

    ``units``/``lengths`` (the bulk, in stream order) and ``spares`` are updated in place.
    """
    bulk_tokens = sum(lengths)
    longest = max([*lengths, *spares])
    # Leave room so the exact fill has a few units to choose from; a discrepancy found on
    # verification can move the remainder either way.
    while units and budget - bulk_tokens < 2 * longest:
        spares[lengths[-1]].append(units.pop())
        bulk_tokens -= lengths.pop()
    while budget - bulk_tokens > 4 * longest:
        unit, n = _take_spare(spares) or _draw_one(counter, anchor, draw_units)
        units.append(unit)
        lengths.append(n)
        bulk_tokens += n
    remainder = budget - bulk_tokens
    tail_units = _exact_fill(counter, anchor, remainder, spares, None, prefer_long)
    while tail_units is None and units and remainder < 8 * longest:
        # A gap between k and k+1 units (37 tokens from units of 14-18, say): give the exact
        # fill one more unit's worth of room, from the units already measured.
        spares[lengths[-1]].append(units.pop())
        remainder += lengths.pop()
        tail_units = _exact_fill(counter, anchor, remainder, spares, None, prefer_long)
    if tail_units is None:  # only now measure fresh units, which may bring missing lengths
        tail_units = _exact_fill(counter, anchor, remainder, spares, draw_units, prefer_long)
    return tail_units


def _take_spare(spares):
    """Pop any spare unit as ``(unit, tokens)``, or None when there is none."""
    for n, pool in spares.items():
        if pool:
            return pool.pop(), n
    return None


def _draw_one(counter, anchor, draw_units):
    unit = draw_units(1)[0]
    return unit, counter.piece_lengths([unit], anchor)[0]


def _exact_fill(counter, anchor, remainder, spares, draw_units, prefer_long=True):
    """Return ``[(unit, tokens)]`` summing to exactly ``remainder`` tokens, or None."""
    if remainder == 0:
        return []
    if remainder < 0:
        return None
    for _ in range(8 if draw_units else 1):
        combo = _solve(remainder, {n: len(us) for n, us in spares.items() if us and n > 0}, prefer_long)
        if combo is not None:
            return [(spares[n].pop(-1 if prefer_long else 0), n) for n in combo]
        if draw_units is None:
            return None
        extra = draw_units(64)  # more units may bring lengths that make the sum reachable
        for unit, n in zip(extra, counter.piece_lengths(extra, anchor)):
            spares[n].append(unit)
    return None


def _solve(remainder: int, available: dict[int, int], prefer_long: bool = True) -> list[int] | None:
    """Return unit lengths (using each at most its available count) that sum to ``remainder``.

    Breadth-first over sums, so the answer uses as few units as possible.
    """
    paths: dict[int, list[int]] = {0: []}
    frontier = [0]
    for _ in range(MAX_FILL_UNITS):
        next_frontier = []
        for total in frontier:
            used = paths[total]
            for n, count in sorted(available.items(), reverse=prefer_long):
                s = total + n
                if s > remainder or s in paths or used.count(n) >= count:
                    continue
                paths[s] = used + [n]
                if s == remainder:
                    return paths[s]
                next_frontier.append(s)
        frontier = next_frontier
    return None


def _fixed_parts(counter: PromptCounter, layout: Layout) -> tuple[int, int]:
    """Return the tokens of the prompt with no filler, and how many of them come before the
    filler (BOS, chat template, head): one encode for both."""
    content = layout.head + "".join(layout.needles) + layout.tail
    rendered, ids, offsets = counter.encode(content, layout.answer_prefix)
    head_end = (rendered.index(content) if counter.chat_template else 0) + len(layout.head)
    return len(ids), bisect.bisect_left([start for start, _ in offsets], head_end)


def _needle_slots(cumulative, depths, needle_tokens, head_tokens, target_tokens) -> list[int]:
    """Return, per needle, how many filler units go before it: the count whose tokens (with
    the head and the needles above it) are closest to its depth x ``target_tokens``."""
    slots = [0] * len(depths)
    above = 0
    previous = 0
    for j in sorted(range(len(depths)), key=lambda j: (depths[j], j)):
        wanted = depths[j] * target_tokens - head_tokens - above
        index = min(range(len(cumulative)), key=lambda i: (abs(cumulative[i] - wanted), i))
        slots[j] = previous = max(index, previous)  # needles keep the order of their depths
        above += needle_tokens[j]
    return slots


def _place_and_verify(counter, layout, filler, filler_lengths, depths, needle_tokens, head_tokens, target_tokens):
    """Insert the needles at their depths, render, tokenize once; return the result and the
    tokens each filler unit took in context (counted where they start)."""
    cumulative = [0]
    for n in filler_lengths:
        cumulative.append(cumulative[-1] + n)
    slots = _needle_slots(cumulative, depths, needle_tokens, head_tokens, target_tokens)
    order = sorted(range(len(depths)), key=lambda j: (slots[j], depths[j], j))
    pieces, kinds, start = [layout.head], [None], 0
    for j in order:
        pieces += filler[start : slots[j]]
        kinds += ["unit"] * (slots[j] - start)
        pieces.append(layout.needles[j])
        kinds.append(j)
        start = slots[j]
    pieces += [*filler[start:], layout.tail]
    kinds += ["unit"] * (len(filler) - start) + [None]
    prompt = "".join(pieces)
    rendered, encoding = counter.encoding(prompt, layout.answer_prefix)
    content_start = rendered.index(prompt) if counter.chat_template else 0
    boundaries = [content_start]
    for piece in pieces:
        boundaries.append(boundaries[-1] + len(piece))
    needle_offsets = [0] * len(depths)
    for k, kind in enumerate(kinds):
        if kind is not None and kind != "unit":
            needle_offsets[kind] = token_at(encoding, boundaries[k])
    actual = len(encoding)
    in_context = []
    if actual != target_tokens:
        # Only now read the offsets: what each unit took in context.
        starts = [start for start, _ in encoding.offsets]
        first_token = [bisect.bisect_left(starts, b) for b in boundaries]
        per_piece = [b - a for a, b in zip(first_token, first_token[1:])]
        in_context = [n for n, kind in zip(per_piece, kinds) if kind == "unit"]
    result = Assembled(
        prompt=prompt,
        target_tokens=target_tokens,
        actual_tokens=actual,
        needle_token_offsets=tuple(needle_offsets),
    )
    return result, in_context
