"""Plug-ins loaded by path (``tests/killed.py:Name``) inside runner subprocesses: methods that are killed mid-run."""

import os
import signal

from bench.core import distributed
from methods.awm import AWM
from methods.adjoint_matching import AdjointMatching
from methods.diffusion_nft import DiffusionNFT
from methods.flow_grpo import FlowGRPO
from methods.grpo import GRPO
from methods.grpo_guard import FlowGRPOGuard

KILL_ENV = "BENCH_TEST_KILL"
"""``RANK:N``: process RANK of a ``Killed*`` method SIGKILLs itself while its N-th checkpoint is being taken."""


class KilledInCheckpoint:
    """Mixin: the method unchanged, except that with ``BENCH_TEST_KILL=RANK:N`` set, process RANK dies by SIGKILL
    inside its N-th ``state_dict()``: it never writes that step's checkpoint, while the other processes may write
    theirs (a kill that falls between the processes' checkpoints)."""

    def state_dict(self):
        self.saves = getattr(self, "saves", 0) + 1
        if os.environ.get(KILL_ENV):
            rank, n = map(int, os.environ[KILL_ENV].split(":"))
            if distributed.rank() == rank and self.saves == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().state_dict()


class KilledGRPO(KilledInCheckpoint, GRPO):
    """``grpo`` with the kill switch."""


class KilledFlowGRPO(KilledInCheckpoint, FlowGRPO):
    """``flow-grpo`` with the kill switch."""


class KilledFlowGRPOGuard(KilledInCheckpoint, FlowGRPOGuard):
    """``flow-grpo-guard`` with the kill switch (its round keeps the sampling means)."""


class KilledNFT(KilledInCheckpoint, DiffusionNFT):
    """``diffusion-nft`` with the kill switch."""


class KilledAWM(KilledInCheckpoint, AWM):
    """``awm`` with the kill switch."""


class KilledAM(KilledInCheckpoint, AdjointMatching):
    """``adjoint-matching`` with the kill switch."""
