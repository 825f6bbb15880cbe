"""Training throughput of the ``lstm``, ``mhsa`` and ``pointer`` models at GeoLife and DIY sizes.

Usage::

    python scripts/bench_train.py --sizes geolife diy --batches 60 12 --threads 2 \
        --sequence grouped packed [--length-groups 4 8] [--bf16] [--repeat 2]
    python scripts/bench_train.py --models mhsa pointer --sizes geolife diy --batches 30 6

For each size and option the script trains a fixed number of batches after a
warm-up and prints

- throughput (training samples/s) and the epoch time extrapolated to the full
  split (GeoLife 7,424 samples -> 232 batches of 32; DIY 150,000 -> 585 of 256);
- the split of a batch's time between batching (``SplitTensors.batch``),
  forward (model + cross-entropy), backward, optimizer (zero_grad, gradient
  clipping, Adam step) and metrics;
- peak memory: ``ru_maxrss`` of a child process that runs only that row
  (every row runs in its own fresh interpreter, so rows do not share peaks or
  warmed caches; the figure includes the torch libraries, about 0.3-0.4 GB);
- the speedup of each row over the ``reference-like`` row of its size.

The model and batch size are those of ``python train.py dataset=<size>``
(``conf/model/lstm.yaml`` with ``conf/model/sizes/lstm_<size>.yaml``), with
``--sequence`` and ``--length-groups`` overriding the path. The warm-up
(``--warmup``, default 60 GeoLife / 30 DIY batches) lets oneDNN build its
kernels for the few group shapes the grouped path uses, as in every epoch
after the first one; the timed batches are the steady state of an epoch.

The ``reference-like`` row does what the reference does per batch: the packed
LSTM, PyTorch's dropout, Adam with its per-parameter update loop,
``zero_grad`` and ``clip_grad_norm_``, and every metric computed on
every training batch with a full argsort over all classes (a second argsort for
the positions, ``topk`` for acc@k). It approximates the reference's 10 s
(GeoLife) / 430 s (DIY) per epoch on a 2-core machine. The other rows run
nextloc's own training step (``LSTMModel`` with the chosen ``sequence`` path,
``training.optim.build_optimizer``, gradient clipping, no metrics on training
batches, as in ``training.loop.train_epoch``).

Data. Running the synthetic generator at full DIY scale is slow, so each size's
training split is built directly as a :class:`SplitTensors` from random but
realistic arrays: a staypoint table (locations drawn from a Zipf-like law over
``2..L-1``, 1 % "unseen" class 1, users ``1..U-1`` in contiguous blocks,
start minute, weekday, duration, day) and samples whose history lengths follow a
lognormal fitted to the real distribution's mean and 95th percentile (GeoLife
mean ~18, p95 ~47; DIY mean ~25, p95 ~47), clipped to ``[3, max]`` (max 90 resp.
99). Each sample is a contiguous row range ``history_start .. history_end`` with
the target at ``history_end``, exactly the layout ``generate_samples`` produces.
The achieved mean / p95 / max are printed. The LSTM's cost depends only on these
lengths and the sizes, not on the values.

``--models mhsa pointer`` measures the transformers the same way: the model
and batch size of ``model=mhsa dataset=<size>`` and of
``experiment=pointer dataset=<size>`` (batch 128, AdamW), nextloc's step
against a reference-like step of each: PyTorch's ``nn.TransformerEncoder``
(its dropout), ``nn.Dropout`` elsewhere, the non-fused optimiser with
``zero_grad`` and ``clip_grad_norm_``, the whole padded batch at once
(``model.length_groups=1`` for the pointer) and the per-batch metrics. The
pointer's ``nextloc g=1`` row isolates what its length groups give.

``--bf16`` adds rows with ``torch.autocast("cpu", dtype=torch.bfloat16)`` around
forward and loss (off by default; it changes the arithmetic, so it is reported
separately and not a faithful replacement).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {
    # name: classes L, users U, train samples, (mean, p95, max) history; model sizes and batch come from conf/
    "geolife": dict(L=1187, U=46, samples=7424, hist=(18.0, 47.0, 90)),
    "diy": dict(L=7038, U=693, samples=150_000, hist=(25.0, 47.0, 99)),
}
WARMUP = {"geolife": 60, "diy": 30}
PHASES = ("batching", "forward", "backward", "optimizer", "metrics")
REFERENCE = "reference-like"


# ----------------------------------------------------------------------------- data


def lognormal_params(mean: float, p95: float) -> tuple[float, float]:
    """mu, sigma of a lognormal with the given mean and 95th percentile (smaller root)."""
    z = 1.6448536269514722
    gap = math.log(p95) - math.log(mean)  # = z*s - s^2/2
    sigma = z - math.sqrt(z * z - 2.0 * gap)
    return math.log(mean) - sigma * sigma / 2.0, sigma


def make_split(size: str, seed: int = 0, inputs=("time_slot", "weekday", "duration")):
    """A training :class:`SplitTensors` of the given size from synthetic arrays (see module doc)."""
    import pandas as pd

    from nextloc.data.batches import SplitTensors

    cfg = SIZES[size]
    rng = np.random.default_rng(seed)
    mean, p95, longest = cfg["hist"]
    mu, sigma = lognormal_params(mean, p95)
    n = cfg["samples"]
    length = np.clip(np.rint(rng.lognormal(mu, sigma, n)), 3, longest).astype(np.int64)
    # one staypoint row per sample target plus a prefix so every history fits
    rows = n + longest + 1
    users = cfg["U"] - 1
    user = np.sort(rng.integers(1, users + 1, rows))
    rank = rng.zipf(1.3, rows) % (cfg["L"] - 2)
    location = np.where(rng.random(rows) < 0.01, 1, 2 + rank)
    day = np.sort(rng.integers(0, 400, rows))
    staypoints = pd.DataFrame(
        {
            "user_id": user,
            "location_id": location,
            "start_day": day,
            "start_min": rng.integers(0, 1440, rows),
            "weekday": day % 7,
            "duration": np.minimum(rng.exponential(180.0, rows).astype(np.int64), 2879),
        }
    )
    target = rng.permutation(np.arange(longest + 1, rows))[:n]
    samples = pd.DataFrame({"history_start": target - length, "history_end": target, "target_index": target})
    stats = dict(mean=float(length.mean()), p95=float(np.percentile(length, 95)), max=int(length.max()))
    return SplitTensors(staypoints, samples, inputs=inputs), stats


# ----------------------------------------------------------------------------- metrics


def reference_metrics(logits, target) -> dict:
    """The reference's per-batch metrics: ranks from a full argsort over all classes."""
    import torch

    logits = logits.detach()
    order = torch.argsort(logits, dim=-1, descending=True)  # (B, L)
    position = torch.argsort(order, dim=-1)  # second argsort: each class's rank
    rank = position.gather(1, target[:, None]).squeeze(1).float() + 1
    top = torch.topk(logits, 10, dim=-1).indices
    hits = top == target[:, None]
    result = {f"correct@{k}": int(hits[:, :k].any(1).sum()) for k in (1, 3, 5, 10)}
    result["rr"] = float((1.0 / rank).sum())
    result["ndcg"] = float(torch.where(rank <= 10, 1.0 / torch.log2(rank + 1), torch.zeros_like(rank)).sum())
    result["prediction"] = top[:, 0].cpu().numpy()
    result["total"] = len(target)
    return result


# ----------------------------------------------------------------------------- one row


def use_torch_dropout(model) -> None:
    """Replace nextloc's ``Dropout`` layers by ``nn.Dropout`` (the reference's, with its slower CPU mask)."""
    from torch import nn

    from nextloc.models.dropout import Dropout

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))


class TorchEncoder:
    """Builds PyTorch's ``nn.TransformerEncoder`` with the weights of a nextloc encoder (the reference-like rows)."""

    @staticmethod
    def replace(model) -> None:
        from torch import nn

        ours = model.encoder
        first = ours.layers[0]
        layer = nn.TransformerEncoderLayer(
            first.linear1.in_features, first.num_heads, first.linear1.out_features, first.dropout.p,
            activation="gelu", batch_first=True, norm_first=first.norm_first,
        )
        theirs = nn.TransformerEncoder(layer, len(ours.layers), norm=ours.norm, enable_nested_tensor=False)
        theirs.load_state_dict(ours.state_dict())

        class Adapter(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = theirs

            def forward(self, x, padding, causal):
                import torch

                steps = x.shape[1]
                mask = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1) if causal else None
                return self.encoder(x, mask=mask, src_key_padding_mask=padding)

        model.encoder = Adapter()


def model_overrides(model: str, size: str, option: dict) -> list[str]:
    """The config of one row: ``train.py``'s for the model and data set, with the row's path options."""
    if model == "lstm":
        groups = [f"model.length_groups={option['length_groups']}"] if option["length_groups"] else []
        return [f"dataset={size}", f"model.sequence={option['sequence']}", *groups]
    if model == "mhsa":
        return [f"dataset={size}", "model=mhsa"]
    groups = [f"model.length_groups={option['length_groups']}"] if option["length_groups"] else []
    return ["experiment=pointer", f"dataset={size}", *groups]


def run_row(size: str, option: dict, n_batches: int, warmup: int, seed: int) -> dict:
    """Train ``n_batches`` batches after a warm-up; per-phase seconds per batch and peak RSS."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nextloc.config import compose_run_config
    from nextloc.data.samples import PADDING
    from nextloc.models import DataInfo, build_model
    from nextloc.training.optim import build_optimizer, clear_gradients, clip_gradients

    torch.set_num_threads(option["threads"])
    torch.manual_seed(seed)
    cfg = SIZES[size]
    config = compose_run_config(model_overrides(option["model"], size, option))
    model = build_model(config.model, DataInfo(cfg["L"], cfg["U"]))
    split, stats = make_split(size, seed, model.inputs)
    model.train()
    reference = option["name"] == REFERENCE
    if reference and option["model"] != "lstm":
        TorchEncoder.replace(model)
    parameters = list(model.parameters())
    smoothing = getattr(model, "label_smoothing", 0.0)
    if reference:  # the reference's dropout, Adam(W) (one update loop per parameter tensor) and gradient handling
        use_torch_dropout(model)
        settings = config.optim
        adam = torch.optim.AdamW if settings.name == "adamw" else torch.optim.Adam
        optimizer = adam(parameters, lr=settings.lr, betas=tuple(settings.betas), eps=settings.eps,
                         weight_decay=settings.weight_decay)
        clear = functools.partial(optimizer.zero_grad, set_to_none=True)
        clip = functools.partial(nn.utils.clip_grad_norm_, parameters, settings.grad_clip)
    else:  # as training.loop.train_epoch
        optimizer = build_optimizer(parameters, config.optim)
        clear = functools.partial(clear_gradients, parameters)
        clip = functools.partial(clip_gradients, parameters, config.optim.grad_clip)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=generator)
    bs = config.dataset.batch_size
    bf16 = option["bf16"]
    total = dict.fromkeys(PHASES, 0.0)
    clock = time.perf_counter
    start_all = None
    for i in range(warmup + n_batches):
        if i == warmup:
            start_all = clock()
            total = dict.fromkeys(PHASES, 0.0)
        j = i % split.num_batches(bs, drop_last=True)
        t0 = clock()
        batch = split.batch(order[j * bs : (j + 1) * bs])
        t1 = clock()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if reference:
                logits = model(batch)
                loss = F.cross_entropy(logits, batch.target, ignore_index=PADDING, label_smoothing=smoothing)
            else:  # as training.loop.train_epoch: the model's own objective
                loss = sum(model.losses(batch).values())
        value = loss.item()
        t2 = clock()
        clear()
        loss.backward()
        t3 = clock()
        clip()
        optimizer.step()
        t4 = clock()
        if reference:  # nextloc's training loop computes no metrics on training batches
            reference_metrics(logits.float(), batch.target)
        t5 = clock()
        if not math.isfinite(value):
            raise RuntimeError(f"loss {value} at batch {i}")
        for phase, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            total[phase] += dt
    wall = clock() - start_all
    per_batch = {k: v / n_batches for k, v in total.items()}
    return {
        "size": size,
        **option,
        "batches": n_batches,
        "batch_s": wall / n_batches,
        "phases": per_batch,
        "epoch_batches": split.num_batches(bs, drop_last=True),
        "batch_size": bs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "history": stats,
        "torch_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- driver


def options(args) -> list[dict]:
    rows = []
    for model in args.models:
        for threads in args.threads:
            base = dict(model=model, threads=threads, bf16=False)
            if model != "lstm":  # the reference-like step runs the whole padded batch
                rows.append(dict(base, name=REFERENCE, sequence=None, length_groups=1))
                rows.append(dict(base, name="nextloc", sequence=None, length_groups=None))
                if model == "pointer":
                    rows.append(dict(base, name="nextloc g=1", sequence=None, length_groups=1))
                continue
            rows.append(dict(base, name=REFERENCE, sequence="packed", length_groups=None))
            for sequence in args.sequence:
                for groups in (args.length_groups or [None]) if sequence == "grouped" else [None]:
                    name = f"{sequence}" + (f" g={groups}" if groups else "")
                    row = dict(base, name=name, sequence=sequence, length_groups=groups)
                    rows.append(row)
                    if args.bf16:
                        rows.append(dict(row, name=name + " bf16", bf16=True))
    return rows


def child(size, option, n_batches, warmup, seed) -> dict:
    """Run one row in a fresh interpreter (own peak memory, own thread setting)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(option["threads"]), MKL_NUM_THREADS=str(option["threads"]))
    payload = json.dumps(dict(size=size, option=option, n_batches=n_batches, warmup=warmup, seed=seed))
    out = subprocess.run(
        [sys.executable, __file__, "--_child", payload], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"row {size} {option['name']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    header = (
        f"{'model':8} {'size':8} {'option':22} {'thr':>3} {'ms/batch':>9} {'samples/s':>9} {'epoch s':>8} "
        + " ".join(f"{p[:5]:>6}" for p in PHASES)
        + f" {'peakMB':>7} {'speedup':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ref = [x for x in results if (x["model"], x["size"], x["threads"]) == (r["model"], r["size"], r["threads"])
               and x["name"] == REFERENCE]
        speed = ref[0]["batch_s"] / r["batch_s"] if ref else float("nan")
        phase_sum = sum(r["phases"].values())
        shares = " ".join(f"{100 * r['phases'][p] / phase_sum:5.1f}%" for p in PHASES)
        print(
            f"{r['model']:8} {r['size']:8} {r['name']:22} {r['threads']:>3} {1000 * r['batch_s']:9.1f} "
            f"{r['batch_size'] / r['batch_s']:9.0f} {r['batch_s'] * r['epoch_batches']:8.1f} "
            f"{shares} {r['peak_rss_mb']:7.0f} {speed:6.2f}x"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=["lstm", "mhsa", "pointer"], default=["lstm"])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["geolife", "diy"])
    parser.add_argument("--batches", nargs="+", type=int, default=[60, 12], help="timed batches per size")
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--sequence", nargs="+", choices=["grouped", "padded", "packed"], default=["grouped"])
    parser.add_argument("--length-groups", nargs="+", type=int, help="grouped: these group counts (default: conf/)")
    parser.add_argument("--warmup", nargs="+", type=int, help="untimed batches per size (default: 60 30)")
    parser.add_argument("--bf16", action="store_true", help="also measure each option under bf16 autocast")
    parser.add_argument("--repeat", type=int, default=1, help="measure every row this many times (interleaved)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        spec = json.loads(args._child)
        print(json.dumps(run_row(spec["size"], spec["option"], spec["n_batches"], spec["warmup"], spec["seed"])))
        return
    batches = dict(zip(args.sizes, args.batches + args.batches[-1:] * len(args.sizes)))
    warmups = [WARMUP[size] for size in args.sizes] if args.warmup is None else args.warmup
    warmup = dict(zip(args.sizes, warmups + warmups[-1:] * len(args.sizes)))
    for size in args.sizes:
        _, stats = make_split(size, args.seed)
        print(f"# {size}: {SIZES[size]} history lengths mean {stats['mean']:.1f} p95 {stats['p95']:.0f} max {stats['max']}")
    results = []
    for rep in range(args.repeat):
        for size in args.sizes:
            for option in options(args):
                r = child(size, option, batches[size], warmup[size], args.seed)
                r["repeat"] = rep
                results.append(r)
                print(f"  [{rep}] {option['model']} {size} {option['name']} t={option['threads']}: "
                      f"{1000 * r['batch_s']:.1f} ms/batch", file=sys.stderr)
    # best of the repeats per row (least disturbed by other processes), all repeats in --json
    best = {}
    for r in results:
        key = (r["model"], r["size"], r["name"], r["threads"])
        if key not in best or r["batch_s"] < best[key]["batch_s"]:
            best[key] = r
    print(f"\n(best of {args.repeat} interleaved repeat(s); phase shares of a training batch; speedup vs {REFERENCE})")
    print_table(list(best.values()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
