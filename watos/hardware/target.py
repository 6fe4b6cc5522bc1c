"""Hardware targets: a validated YAML description of devices, their memory, and how they are connected.

Units are in the key names: ``_tflops`` (10¹² FLOP/s), ``_gb`` (10⁹ bytes), ``_gb_per_s`` (10⁹ bytes per
second), ``_us`` / ``_ns`` (micro-/nanoseconds). A target is either

* ``switched``: devices in fast domains (an NVLink/NVSwitch node) joined by a slower fabric
  (an InfiniBand fat tree), each tier costed with the α-β model; or
* ``mesh2d``: a wafer of dies in a rows x cols mesh, each die linked to its four neighbours, with off-wafer
  I/O at the edges; several wafers may be joined by wafer-to-wafer links;
* ``mesh_switch``: a ``mesh2d`` wafer with switch dies, one per ``switch_block`` x ``switch_block`` block of
  dies (FRED-style), each die with a port to its block's switch, optionally reducing in the network;
* ``torus``: chips in a 2D or 3D torus (wrap-around links in every dimension; a TPU slice), the shape
  chosen per slice size; several slices join through a data-centre network (``systems``).

Every topology becomes one explicit graph (:mod:`watos.network.topology`). A target may carry a fault map
(``faults``: dead dies, dead links, dies with fewer working cores; :mod:`watos.hardware.faults`).

Efficiency parameters (``efficiency:``) are calibrated once per target on the public validation set and
say so in the file; they are never fitted per case. What the software adds (kernels, overlap, per-kernel
host overhead, framework memory) is the target's default ``stack`` (:mod:`watos.hardware.stack`), which a
plan may replace.
"""
from __future__ import annotations

import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_yaml_mapping, read_file
from watos.hardware.faults import FaultMap

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class Efficiency(StrictModel):
    """How close kernels get to the roofline (calibrated; see the target file's comment).

    matmul efficiency of an op with ``f`` FLOPs whose right operand's smaller dimension is ``d``:
    ``matmul_max · f/(f + matmul_half_gflop·10⁹) · d²/(d² + matmul_half_dim²) · q``, where ``q`` is the tile
    quantization of the right operand's two dimensions (``x / (⌈x / matmul_tile⌉ · matmul_tile)`` each: a
    kernel's tiles run whole, so a 96-wide operand in 128-wide tiles wastes a quarter); FP8 GEMMs reach
    ``fp8_matmul_max`` of the FP8 peak instead (default: ``matmul_max``); memory-bound ops reach ``memory``
    of the DRAM (or SRAM) bandwidth; collectives reach ``network`` of the link bandwidth; weights streamed
    from off-device memory reach ``streaming`` of its bandwidth. The time a kernel costs the host (dispatch,
    launch) is the stack's.
    """

    matmul_max: Fraction
    matmul_half_gflop: NonNegative
    matmul_half_dim: NonNegative
    matmul_tile: int = Field(default=1, gt=0)
    fp8_matmul_max: Fraction | None = None
    memory: Fraction
    network: Fraction
    streaming: Fraction = 1.0


class Device(StrictModel):
    """One compute device: a GPU, or one die of a wafer."""

    name: str
    peak_tflops: dict[Literal["bf16", "fp16", "fp32", "tf32", "fp8"], Positive]
    sram_capacity_mb: NonNegative
    sram_bandwidth_gb_per_s: NonNegative
    dram_capacity_gb: NonNegative
    dram_bandwidth_gb_per_s: NonNegative
    efficiency: Efficiency

    def peak_tflops_for(self, dtype: str) -> float:
        """The dense peak for ``dtype`` (TFLOPS), or the highest peak when the device lists none for it."""
        return self.peak_tflops.get(dtype) or max(self.peak_tflops.values())

    @property
    def memory_capacity_bytes(self) -> float:
        """DRAM and SRAM of one device, in bytes: what a plan's memory must fit in."""
        return self.dram_capacity_gb * 1e9 + self.sram_capacity_mb * 1e6

    @property
    def dram_bytes_per_s(self) -> float:
        """The DRAM bandwidth memory-bound work reaches (``efficiency.memory`` of the peak), bytes/s."""
        return self.dram_bandwidth_gb_per_s * 1e9 * self.efficiency.memory


class Tier(StrictModel):
    """One level of a switched network: ``size`` devices share it (None: all of them). ``efficiency``:
    the fraction of the link bandwidth collectives reach on this tier (default: the device's
    ``efficiency.network``)."""

    name: str
    size: int | None = Field(default=None, gt=0)
    bandwidth_gb_per_s_per_direction: Positive
    latency_us: NonNegative
    efficiency: Fraction | None = None


class Switched(StrictModel):
    kind: Literal["switched"]
    tiers: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _nested(self) -> "Switched":
        sizes = [t.size for t in self.tiers[:-1]]
        if any(s is None for s in sizes):
            raise ValueError("only the last tier may span all devices (size: null)")
        return self


class Mesh2D(StrictModel):
    kind: Literal["mesh2d"]
    rows: int = Field(gt=0)
    cols: int = Field(gt=0)
    link_bandwidth_gb_per_s_per_direction: Positive
    links_per_edge: int = Field(default=1, gt=0)
    latency_ns: NonNegative
    io_bandwidth_gb_per_s: NonNegative = Field(description="off-wafer I/O at the wafer edges, in total")


class MeshSwitch(Mesh2D):
    """A mesh with switch dies: one switch per ``switch_block`` x ``switch_block`` block of dies (a block may
    be cut short at the wafer's edge), each die with a port of ``switch_bandwidth_gb_per_s_per_direction`` to
    it, switches of neighbouring blocks linked by ``switch_bandwidth_gb_per_s_per_direction`` x
    ``switch_block``. ``in_network_reduction``: a switch reduces what its dies send (FRED, ISCA'25; SHARP), so
    an all-reduce inside a block moves n up and n down each port instead of 2(g−1)/g·n each way."""

    kind: Literal["mesh_switch"]
    switch_block: int = Field(gt=0)
    switch_bandwidth_gb_per_s_per_direction: Positive
    switch_latency_ns: NonNegative
    in_network_reduction: bool = False


class Torus(StrictModel):
    """Chips in a torus: ``shape`` (2 or 3 dimensions, each wrapping round), or the shape ``slice_shapes``
    gives for a slice of that many chips (a TPU slice of 64 chips is 4x4x4). Every chip has two links per
    dimension (one each way round), each ``link_bandwidth_gb_per_s_per_direction`` x ``links_per_edge``."""

    kind: Literal["torus"]
    shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=2, max_length=3)
    slice_shapes: dict[int, list[Annotated[int, Field(gt=0)]]] = Field(default_factory=dict)
    link_bandwidth_gb_per_s_per_direction: Positive
    links_per_edge: int = Field(default=1, gt=0)
    latency_ns: NonNegative

    @model_validator(mode="after")
    def _shapes_hold_their_chips(self) -> "Torus":
        for chips, shape in self.slice_shapes.items():
            if math.prod(shape) != chips or not 2 <= len(shape) <= 3:
                raise ValueError(f"slice_shapes: {shape} does not hold {chips} chips in 2 or 3 dimensions")
        return self


class SystemLink(StrictModel):
    """Links between systems (wafers, TPU slices, or Cerebras systems through SwarmX). Systems form a ring,
    each joined to the next by ``bandwidth_gb_per_s_per_direction`` in each direction; systems on a switched
    data-centre network are costed the same way (a ring through the switch moves the same bytes per system)."""

    count: int = Field(default=1, gt=0)
    bandwidth_gb_per_s_per_direction: Positive
    latency_us: NonNegative


class WeightStreaming(StrictModel):
    """Off-device weight memory streamed layer by layer (Cerebras MemoryX)."""

    capacity_tb: Positive
    bandwidth_gb_per_s: Positive


class Target(StrictModel):
    """A hardware target (see module docstring)."""

    name: str
    description: str
    device: Device
    topology: Switched | Mesh2D | MeshSwitch | Torus = Field(discriminator="kind")
    systems: SystemLink | None = None
    faults: FaultMap | None = Field(None, description="dead dies and links, dies with fewer working cores")
    weight_streaming: WeightStreaming | None = None
    stack: str | None = Field(None, description="the software stack a plan runs under unless it names its own "
                                                "(default: watos-wafer on a mesh, maxtext on a torus, megatron-core "
                                                "on a switched target)")

    @property
    def stack_name(self) -> str:
        """The stack a plan runs under unless it names its own (see ``stack``)."""
        return self.stack or ("watos-wafer" if isinstance(self.topology, Mesh2D) else
                              "maxtext" if isinstance(self.topology, Torus) else "megatron-core")

    @property
    def devices_per_system(self) -> int | None:
        """Devices in one wafer (mesh), one slice (torus) or one node (first switched tier)."""
        if isinstance(self.topology, Mesh2D):
            return self.topology.rows * self.topology.cols
        if isinstance(self.topology, Torus):
            return math.prod(self.topology.shape)
        return self.topology.tiers[0].size

    @property
    def wafers(self) -> int:
        """Wafers of a mesh target (``systems.count``; 1 without systems)."""
        return self.systems.count if self.systems else 1

    @property
    def dies(self) -> int | None:
        """Dies (chips) of every wafer or slice of a mesh or torus target (None for a switched target,
        which has any number)."""
        return None if isinstance(self.topology, Switched) else self.devices_per_system * self.wafers

    def sliced(self, chips: int, slices: int = 1, shape: list[int] | None = None) -> "Target":
        """This torus target as ``slices`` slices of ``chips`` chips each, in ``shape`` or the shape
        ``slice_shapes`` gives for that many chips (an error names the sizes it has)."""
        torus = self.topology
        if not isinstance(torus, Torus):
            raise WatosError(f"target {self.name}: only a torus target has slices")
        if shape is None:
            shape = torus.shape if math.prod(torus.shape) == chips else torus.slice_shapes.get(chips)
        if shape is None or math.prod(shape) != chips:
            raise WatosError(f"target {self.name}: no slice shape for {chips} chips; it has "
                             f"{', '.join(map(str, sorted(torus.slice_shapes)))}")
        if slices > 1 and self.systems is None:
            raise WatosError(f"target {self.name}: {slices} slices need a data-centre network (systems)")
        systems = self.systems.model_copy(update={"count": slices}) if self.systems else None
        return self.model_copy(update={"topology": torus.model_copy(update={"shape": list(shape)}),
                                       "systems": systems})


def load_target(spec: str | Path) -> Target:
    """A shipped target by name, or a YAML file by path; errors name the file and field."""
    path = Path(spec)
    if not path.suffix:
        text = _shipped_text(str(spec))
        if text is None:
            raise WatosError(f"unknown target {spec!r}; shipped: {', '.join(shipped_targets())}")
        where = f"hw_targets/{spec}.yaml"
    else:
        text, where = read_file(str(spec), "target file"), str(spec)
    return parse_target(text, where)


def target_data(name: str) -> dict:
    """The mapping a shipped target's YAML holds, unvalidated (a calibration edits it before validating)."""
    text = _shipped_text(name)
    if text is None:
        raise WatosError(f"unknown target {name!r}; shipped: {', '.join(shipped_targets())}")
    return parse_yaml_mapping(text, f"hw_targets/{name}.yaml", "a target")


def efficiency_source(name: str) -> str:
    """The shipped target whose calibrated efficiency ``name`` uses: its own, or the one it borrows from."""
    borrowed = target_data(name)["device"].get("efficiency")
    return efficiency_source(borrowed["from"]) if isinstance(borrowed, dict) and "from" in borrowed else name


def parse_target(text: str, where: str) -> Target:
    """Validate YAML text as a :class:`Target`. ``efficiency: {from: NAME}`` takes the efficiency
    parameters of another target (one calibrated on measured runs), so a recalibration reaches every
    target that borrows it."""
    return target_from_data(parse_yaml_mapping(text, where, "a target"), where)


def target_from_data(data: dict, where: str) -> Target:
    """Validate a mapping as a :class:`Target` (see :func:`parse_target`); errors name ``where``."""
    device = data.get("device")
    borrowed = device.get("efficiency") if isinstance(device, dict) else None
    if isinstance(borrowed, dict) and "from" in borrowed:
        if set(borrowed) != {"from"}:
            raise WatosError(f"{where}: device.efficiency: 'from' cannot be combined with other fields")
        if borrowed["from"] == data.get("name"):
            raise WatosError(f"{where}: device.efficiency: a target cannot borrow from itself")
        data["device"] = {**device, "efficiency": load_target(str(borrowed["from"])).device.efficiency.model_dump()}
    try:
        return Target(**data)
    except ValidationError as exc:
        raise WatosError(f"{where}: {describe_validation_error(exc)}") from None


def shipped_targets() -> list[str]:
    """Names of the targets in ``hw_targets/``."""
    return sorted(p.name.removesuffix(".yaml") for p in _targets_dir().iterdir() if p.name.endswith(".yaml"))


def _targets_dir():
    return resources.files("watos.hw_targets")


@cache
def _shipped_text(name: str) -> str | None:
    path = _targets_dir().joinpath(f"{name}.yaml")
    return path.read_text() if path.is_file() else None
