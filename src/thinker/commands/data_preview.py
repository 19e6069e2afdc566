"""`thinker data preview`: the training data as the model sees it.

Composes the config like a run does (Hydra's compose API, the same overrides), loads the model's tokenizer
and tokenises examples with the very functions the local backend trains with (tokenize_example with the
config's LossWeights and train_on_inputs, then make_rows / stats), and shows for the first examples which
tokens are masked prompt and which completion tokens carry which loss weight, whether max_seq_length cut
the example and whether training leaves it out; then the packing statistics of the dataset.

In a terminal the weights are colours (ANSI); piped, each segment starts with a plain marker:
`[masked]` (no loss) or `{w=5}` (loss weight 5).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig

from thinker.errors import ThinkerError

MASKED = None  # the weight of a segment that takes no loss

DIM, RESET = "\x1b[2m", "\x1b[0m"
WEIGHT_ONE = "\x1b[32m"  # green: an ordinary completion token
# weights other than 1, the largest first: bold magenta, yellow, cyan, blue, red
PALETTE = ["\x1b[1;35m", "\x1b[33m", "\x1b[36m", "\x1b[34m", "\x1b[31m"]


@dataclass(frozen=True)
class Segment:
    """Consecutive tokens with the same treatment: masked (weight None) or trained with `weight`."""

    text: str
    weight: float | None
    tokens: int


def fmt_weight(weight: float) -> str:
    return f"{weight:g}"


# ---------------------------------------------------------------- config, tokenizer, data file


def compose_config(overrides: list[str]) -> DictConfig:
    """The run's config for `overrides`, composed as `python launch.py overrides...` would compose it."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from thinker.launch.app import compose_config as compose_app_config

    try:
        return compose_app_config(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise ThinkerError(f"the config does not compose: {message}", f"overrides {' '.join(overrides) or '(none)'}",
                           "fix the override (`python launch.py --help` lists every group and option)") from exc


def check_previewable(cfg: DictConfig) -> None:
    """What must hold before anything heavy loads: keys set, values in range, prompt/completion data."""
    from thinker.config.check import check_complete

    check_complete(cfg)
    from thinker.tasks import task_of

    fmt, trained = str(cfg.data.format), cfg.backend.get("data_formats")
    task = task_of(cfg.data)  # pretraining-only data has its own processors, not this view
    listed = trained is None or fmt in [str(f) for f in trained]
    if not task.fine_tunes or not listed:
        why = (f"backend={cfg.backend.name} trains {', '.join(str(f) for f in trained)} data" if not listed
               else "it is pretraining data, not fine-tuned")
        raise ThinkerError(
            f"data.format={fmt} is not trainable locally ({why}), so there is no training view of data={cfg.data.name}",
            f"data={cfg.data.name}",
            "check the file with `thinker validate`, or preview fine-tuning data (data=sample, data=jsonl, data=chat)",
        )


def read_data(path: Path, cfg: DictConfig, limit: int | None) -> list[Any]:
    from thinker.paths import check_input_file
    from thinker.tasks import task_of

    check_input_file(path, "data.path", stage="validate")  # a named pipe would block the preview forever
    if not path.is_file():
        raise ThinkerError(f"data file {path} does not exist", f"data.path={cfg.data.path}",
                           "pass data.path=<a prompt/completion JSONL file>", stage="validate")
    try:
        return list(task_of(cfg.data).read(path, cfg.data, limit))  # parsed here, so a bad record is this error
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ThinkerError(
            f"{path} is not data.format={cfg.data.format} JSONL ({type(exc).__name__}: {exc})",
            f"data.path={cfg.data.path}", "run `thinker validate` with the same overrides to see each bad line",
            stage="validate") from exc


def combined_limit(*limits: int | None) -> int | None:
    given = [int(x) for x in limits if x is not None]
    return min(given) if given else None


# ---------------------------------------------------------------- one example


def segments(tokenizer: Any, input_ids: list[int], labels: list[int], weights: list[float]) -> list[Segment]:
    """Split a tokenised example into runs of tokens with the same treatment, each with its decoded text.

    A segment's text is the difference between decoding the ids up to its end and up to its start, so the
    segments put together read exactly as the whole example decodes (special tokens such as EOS shown).
    """
    from thinker.data.tokenize import IGNORE_INDEX

    kinds = [MASKED if label == IGNORE_INDEX else float(w) for label, w in zip(labels, weights, strict=True)]
    bounds = [0] + [i for i in range(1, len(kinds)) if kinds[i] != kinds[i - 1]] + [len(kinds)]

    def decode(end: int) -> str:
        return tokenizer.decode(input_ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    out, before = [], ""
    for start, end in zip(bounds, bounds[1:], strict=False):
        if start == end:
            continue
        upto = decode(end)
        if upto.startswith(before):
            text = upto[len(before):]
        else:  # a multi-byte character split across the boundary: decode the segment on its own
            text = tokenizer.decode(input_ids[start:end], skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
        out.append(Segment(text, kinds[start], end - start))
        before = upto
    return out


def weight_colours(weights: set[float]) -> dict[float, str]:
    others = sorted((w for w in weights if w != 1.0), reverse=True)
    colours = {w: PALETTE[i % len(PALETTE)] for i, w in enumerate(others)}
    colours[1.0] = WEIGHT_ONE
    return colours


def render_segments(segs: list[Segment], color: bool, colours: dict[float, str]) -> str:
    parts = []
    for seg in segs:
        if color:
            code = DIM if seg.weight is MASKED else colours.get(seg.weight, WEIGHT_ONE)
            # colour each line on its own: a pager or terminal may drop attributes at line ends
            parts.append("\n".join(f"{code}{line}{RESET}" if line else "" for line in seg.text.split("\n")))
        else:
            marker = "[masked]" if seg.weight is MASKED else f"{{w={fmt_weight(seg.weight)}}}"
            parts.append(marker + seg.text)
    text = "".join(parts)
    return text if text.endswith("\n") else text + "\n"


def legend(color: bool, colours: dict[float, str]) -> str:
    if not color:
        return ("legend: [masked] starts prompt tokens that take no loss; {w=N} starts completion tokens "
                "with loss weight N")
    items = [f"{DIM}masked prompt (no loss){RESET}"]
    items += [f"{code}w={fmt_weight(w)}{RESET}" for w, code in sorted(colours.items(), key=lambda kv: -kv[0])]
    return "legend: " + "  ".join(items)


def describe_example(number: int, tok: Any, full_length: int, segs: list[Segment], max_len: int) -> list[str]:
    masked = sum(s.tokens for s in segs if s.weight is MASKED)
    per_weight: Counter[float] = Counter()
    for s in segs:
        if s.weight is not MASKED:
            per_weight[s.weight] += s.tokens
    weights_text = ", ".join(f"{n} at w={fmt_weight(w)}" for w, n in sorted(per_weight.items(), key=lambda kv: -kv[0]))
    lines = [f"--- example {number}: {len(tok)} tokens, {masked} masked, {tok.trained_tokens} with loss"
             + (f" ({weights_text})" if weights_text else "")]
    if tok.truncated:
        lines.append(f"truncated: {full_length} tokens cut to trainer.max_seq_length={max_len} "
                     f"({full_length - max_len} tokens dropped)")
    else:
        lines.append(f"not truncated ({full_length} of trainer.max_seq_length={max_len} tokens)")
    if not tok.trained_tokens:
        lines.append("left out of training: no completion token survives within trainer.max_seq_length")
    return lines


# ---------------------------------------------------------------- the command


def preview(overrides: list[str], n: int = 3, limit: int | None = None, color: bool | None = None,
            out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if color is None:
        color = bool(getattr(out, "isatty", lambda: False)())
    cfg = compose_config(overrides)
    check_previewable(cfg)  # before torch / transformers load: a chat config fails fast

    from thinker.backends.local.datamodule import make_rows, stats, tokenize_all
    from thinker.data.source import prepare_data
    from thinker.data.tokenize import LossWeights
    from thinker.models.loading import load_training_tokenizer
    from thinker.tasks import task_of

    task = task_of(cfg.data)
    tokenizer = load_training_tokenizer(cfg)
    weights = LossWeights(float(cfg.data.claim_c1_weight), float(cfg.data.evidence_weight))
    max_len = int(cfg.trainer.max_seq_length)
    on_inputs = str(cfg.trainer.train_on_inputs) == "enabled"
    packed = "sequence_packing" in {str(o) for o in cfg.trainer.optimizations}
    max_examples = cfg.data.max_examples

    with tempfile.TemporaryDirectory(prefix="thinker-preview-") as workdir:
        # data.path, or (data.source_format=scifact) the release files converted as the validate stage does
        path = prepare_data(cfg, workdir)
        shown = read_data(path, cfg, combined_limit(n, max_examples)) if n > 0 else []
        examples = read_data(path, cfg, combined_limit(limit, max_examples))

    print(f"[thinker] preview of {path} (data={cfg.data.name}, model={cfg.model.name}, "
          f"trainer.max_seq_length={max_len}, train_on_inputs={cfg.trainer.train_on_inputs}, "
          f"loss weights: CLAIM[c1] line {fmt_weight(weights.claim_c1)}, evidence lines {fmt_weight(weights.evidence)})",
          file=out)
    tokenized_shown = tokenize_all(task, tokenizer, shown, max_len, cfg.data, on_inputs)
    all_segs = [segments(tokenizer, t.input_ids, t.labels, t.weights) for t in tokenized_shown]
    colours = weight_colours({s.weight for segs in all_segs for s in segs if s.weight is not MASKED})
    if shown:
        print(legend(color, colours), file=out)
    for i, (ex, tok, segs) in enumerate(zip(shown, tokenized_shown, all_segs, strict=True), start=1):
        full = task.tokenize(tokenizer, ex, max_length=sys.maxsize, data=cfg.data, train_on_inputs=on_inputs)
        print("\n".join(describe_example(i, tok, len(full), segs, max_len)), file=out)
        out.write(render_segments(segs, color, colours))

    # the dataset as training packs it: examples without a trained token are left out first
    tokenized = tokenize_all(task, tokenizer, examples, max_len, cfg.data, on_inputs)
    kept = [t for t in tokenized if t.trained_tokens]
    rows = make_rows(kept, max_len, packed)
    st = stats(kept, rows)
    fill = st.tokens / (st.rows * max_len) if st.rows else 0.0
    scope = f"first {len(examples)}" if limit is not None and len(examples) >= limit else f"all {len(examples)}"
    print(f"--- packing: {scope} examples, train and held-out together (sequence_packing "
          f"{'on' if packed else 'off'}, trainer.max_seq_length={max_len})", file=out)
    print(f"stats: examples={len(examples)} trained={len(kept)} tokens={st.tokens} trained_tokens={st.trained_tokens} "
          f"rows={st.rows} fill={100 * fill:.1f}% truncated={st.truncated} left_out={len(examples) - len(kept)}",
          file=out)
    print("(fill = tokens / (rows x max_seq_length); truncated: cut at max_seq_length and still trained; "
          "left_out: no completion token within max_seq_length, so training skips them)", file=out)
    if examples and not st.trained_tokens:
        print(f"[thinker] warning: no completion token survives trainer.max_seq_length={max_len}; training would "
              "stop; raise trainer.max_seq_length", file=out)
    return 0
