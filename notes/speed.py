"""Relative training-step cost of the probe candidates, measured interleaved in one process on one thread.

PYTHONPATH=. python notes/speed.py
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from bench_common import interleaved_medians  # noqa: E402

from zoo.optim import build_optimizer  # noqa: E402
from zoo.registry import build  # noqa: E402

torch.set_num_threads(1)
IMG = dict(attention_backend="auto", init="openai")
TXT = dict(attention_backend="auto", init="openai", seq_len=2048, data_shape=[2048], embedding="absolute")
FIX = {"name": "fixed", "stride": 64, "c": 8, "mode": "merged"}
CASES = {
    "img 2x64 b8": ("strided", dict(IMG), 8, 784),
    "img 2x64 b16": ("strided", dict(IMG), 16, 784),
    "img 4x64 b8": ("strided", dict(IMG, n_layer=4), 8, 784),
    "img 2x128h4 b8": ("strided", dict(IMG, n_embd=128, n_head=4), 8, 784),
    "img 4x128h4 b8": ("strided", dict(IMG, n_layer=4, n_embd=128, n_head=4), 8, 784),
    "txt 2x128h4 b4": ("fixed", dict(TXT, n_embd=128, n_head=4, attention=FIX), 4, 2048),
    "txt 4x128h4 b4": ("fixed", dict(TXT, n_layer=4, n_embd=128, n_head=4, attention=FIX), 4, 2048),
    "txt 2x128h4 dense b4": ("dense", dict(TXT, n_embd=128, n_head=4), 4, 2048),
}


def step_fn(name, over, batch, seq):
    torch.manual_seed(0)
    model = build(name, **over)
    opt = build_optimizer(model, 1e-3)
    x = torch.randint(0, 256, (batch, seq))

    def fn():
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        opt.step()

    return fn, model.num_parameters()


fns, params = {}, {}
for k, v in CASES.items():
    fns[k], params[k] = step_fn(*v)
tic = time.time()
med, _ = interleaved_medians(fns, repeats=5, device=torch.device("cpu"))
base = med["img 2x64 b8"] / (8 * 784)
print(f"load {os.getloadavg()[0]:.1f}; {time.time() - tic:.0f} s")
for k, (_name, _over, batch, seq) in CASES.items():
    per_tok = med[k] / (batch * seq)
    print(
        f"{k:22s} {params[k]:>9,} params  {med[k] * 1e3:8.0f} ms/step  cost per token {per_tok / base:5.2f}x"
    )
