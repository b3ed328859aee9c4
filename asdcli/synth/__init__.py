"""Synthetic, physically motivated machine sounds in the DCASE 2023 layout (``asd synth``).

:mod:`asdcli.synth.machines` holds the physics of each machine type, its faults and the room;
:mod:`asdcli.synth.dataset` the layout, naming, splits, domains, levels and determinism.
"""

from asdcli.synth.dataset import MACHINES, SynthArgumentError, SynthSummary, synthesize

__all__ = ["MACHINES", "SynthArgumentError", "SynthSummary", "synthesize"]
