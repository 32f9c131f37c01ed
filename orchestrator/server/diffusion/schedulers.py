"""The seed's 26 ``schedulerId`` values, mapped onto diffusers schedulers.

Pure data, importable without torch, so that the table in README and its test read the same
facts the backend runs. An id maps to a scheduler class and the options that make it the
named sampler (``DPM++ 2M Karras`` is ``DPMSolverMultistepScheduler`` with Karras sigmas),
or is refused with the reason: the seed lists some schedulers that belong to other kinds of
model (variance-exploding score models, VQ-Diffusion, DDIM inversion) and cannot sample a
latent-diffusion checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from protocol.tables import SCHEDULERS

__all__ = ["SCHEDULER_MAP", "SchedulerChoice", "make_scheduler", "refusal"]


@dataclass(frozen=True, slots=True)
class SchedulerChoice:
    """What one ``schedulerId`` runs: a diffusers class with options, or a refusal.

    ``cls`` ``None`` with ``refused`` empty is the pipeline's own scheduler (``Default``).
    ``seeded`` names the option that takes the task's seed (the SDE samplers draw their own
    noise, which must follow the seed for the same seed to give the same image).
    """

    cls: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    refused: str = ""
    seeded: str | None = None


def _use(cls: str, **options: Any) -> SchedulerChoice:
    return SchedulerChoice(cls, MappingProxyType(options))


def _refuse(why: str) -> SchedulerChoice:
    return SchedulerChoice(refused=why)


_KARRAS: Final = {"use_karras_sigmas": True}
_SDE: Final = {"algorithm_type": "sde-dpmsolver++"}

SCHEDULER_MAP: Final[Mapping[int, SchedulerChoice]] = MappingProxyType(
    {
        1: SchedulerChoice(),
        2: _use("DDIMScheduler"),
        3: _refuse("DDIMInverseScheduler turns images into noise; it does not sample"),
        4: _use("DDPMScheduler"),
        5: _use("DEISMultistepScheduler"),
        6: _use("DPMSolverSinglestepScheduler"),
        7: _use("DPMSolverMultistepScheduler"),
        8: _use("HeunDiscreteScheduler"),
        9: _use("KDPM2DiscreteScheduler"),
        10: _use("KDPM2AncestralDiscreteScheduler"),
        11: _refuse("KarrasVeScheduler is for variance-exploding pixel models"),
        12: _use("LMSDiscreteScheduler"),
        13: _use("PNDMScheduler", skip_prk_steps=True),  # as Stable Diffusion configures it
        14: _refuse("ScoreSdeVeScheduler is for variance-exploding score models"),
        15: _refuse("IPNDMScheduler ignores the checkpoint's noise schedule"),
        16: _refuse("ScoreSdeVpScheduler is for continuous-time score models"),
        17: _use("EulerDiscreteScheduler"),
        18: _use("EulerAncestralDiscreteScheduler"),
        19: _refuse("VQDiffusionScheduler is for VQ-Diffusion's discrete latents"),
        20: _use("UniPCMultistepScheduler"),
        21: _refuse("RePaintScheduler needs RePaint's resampling loop"),
        22: _use("DPMSolverMultistepScheduler", **_KARRAS),
        23: SchedulerChoice("DPMSolverMultistepScheduler", MappingProxyType({**_SDE, **_KARRAS})),
        24: _use("DPMSolverMultistepScheduler", **_SDE),
        25: SchedulerChoice(
            "DPMSolverSDEScheduler", MappingProxyType(_KARRAS), seeded="noise_sampler_seed"
        ),
        26: SchedulerChoice("DPMSolverSDEScheduler", seeded="noise_sampler_seed"),
    }
)

assert SCHEDULER_MAP.keys() == SCHEDULERS.keys(), "every schedulerId has a row"


def refusal(scheduler_id: int | None) -> str | None:
    """Why ``scheduler_id`` cannot run on this backend, or ``None`` if it can."""
    if scheduler_id is None or not SCHEDULER_MAP[scheduler_id].refused:
        return None
    choice = SCHEDULER_MAP[scheduler_id]
    name = SCHEDULERS[scheduler_id]
    return f"schedulerId = {scheduler_id} ({name}): not run by this backend: {choice.refused}"


def make_scheduler(base: Any, scheduler_id: int | None, seed: int) -> Any:
    """A fresh scheduler for one job, from the pipeline's own ``base`` (its config carries
    the checkpoint's noise schedule). Schedulers keep per-run state: never share one."""
    import diffusers  # the [diffusion] extra

    choice = SCHEDULER_MAP[scheduler_id or 1]
    assert not choice.refused, refusal(scheduler_id)
    cls = type(base) if choice.cls is None else getattr(diffusers, choice.cls)
    options = dict(choice.options)
    if choice.seeded:
        options[choice.seeded] = seed
    return cls.from_config(base.config, **options)
