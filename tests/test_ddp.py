"""DistributedDataParallel: two gloo processes on this machine train an rnnfused model on half a
batch each; their gradients and parameters match single-process training on the whole batch."""
import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfused

I, H, T, PER_RANK, WORLD, STEPS = 4, 6, 5, 3, 2, 3


class Model(nn.Module):
    """Packed bidirectional two-layer rnnfused.LSTM, then a linear head on the final states."""

    def __init__(self):
        super().__init__()
        self.lstm = rnnfused.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H, 1)

    def forward(self, x, lengths):
        _, (h_n, _) = self.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1)).squeeze(-1)


def make_model():
    torch.manual_seed(0)
    return Model().double()


def make_data():
    """STEPS batches of WORLD * PER_RANK sequences of random lengths."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, WORLD * PER_RANK, T, I, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (STEPS, WORLD * PER_RANK), generator=gen)
    y = torch.randn(STEPS, WORLD * PER_RANK, generator=gen, dtype=torch.float64)
    return x, lengths, y


def train(model, rows):
    """SGD on the mean squared error; returns the gradients of every step and the final params."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, lengths, y = make_data()
    grads = []
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = (model(x[step, rows], lengths[step, rows]) - y[step, rows]).square().mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return grads, [p.detach().clone() for p in model.parameters()]


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    model = DistributedDataParallel(make_model())
    grads, params = train(model, slice(rank * PER_RANK, (rank + 1) * PER_RANK))
    torch.save({"grads": grads, "params": params}, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    # gloo's teardown (destroy_process_group, or the interpreter's exit) aborts now and then on
    # this machine, "terminate called without an active exception", about one run in ten even
    # after this barrier. The results are saved and both ranks are past all collectives, so the
    # worker leaves without the teardown; an error before this point still fails the test.
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process_training(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    # DDP averages the ranks' gradients: with equal halves and a mean loss, that is the gradient
    # of the mean loss over the whole batch.
    expected_grads, expected_params = train(make_model(), slice(None))
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for step, (grads, expected) in enumerate(zip(result["grads"], expected_grads)):
            for i, (g, e) in enumerate(zip(grads, expected)):
                torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10, msg=lambda m: f"rank {rank} step {step} grad {i}: {m}")
        for i, (p, e) in enumerate(zip(result["params"], expected_params)):
            torch.testing.assert_close(p, e, atol=1e-12, rtol=1e-10, msg=lambda m: f"rank {rank} param {i}: {m}")
