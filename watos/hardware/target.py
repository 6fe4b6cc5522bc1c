"""Hardware targets: a validated YAML description of devices, their memory, and how they are connected.

Units are in the key names: ``_tflops`` (10¹² FLOP/s), ``_gb`` (10⁹ bytes), ``_gb_per_s`` (10⁹ bytes per
second), ``_us`` / ``_ns`` (micro-/nanoseconds). A target is either

* ``switched``: devices in fast domains (an NVLink/NVSwitch node) joined by a slower fabric
  (an InfiniBand fat tree), each tier costed with the α-β model; or
* ``mesh2d``: a wafer of dies in a rows x cols mesh, each die linked to its four neighbours, with off-wafer
  I/O at the edges; several wafers may be joined by wafer-to-wafer links.

Efficiency parameters (``efficiency:``) are calibrated once per target on the public validation set and
say so in the file; they are never fitted per case. What the software adds (kernels, overlap, per-kernel
host overhead, framework memory) is the target's default ``stack`` (:mod:`watos.hardware.stack`), which a
plan may replace.
"""
from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_yaml_mapping, read_file

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


class SystemLink(StrictModel):
    """Links between systems (wafers, or Cerebras systems through SwarmX). Wafers form a ring: each joined
    to the next by ``bandwidth_gb_per_s_per_direction`` in each direction."""

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
    topology: Switched | Mesh2D = Field(discriminator="kind")
    systems: SystemLink | None = None
    weight_streaming: WeightStreaming | None = None
    stack: str | None = Field(None, description="the software stack a plan runs under unless it names its own "
                                                "(default: watos-wafer on a mesh, megatron-core on a switched target)")

    @property
    def stack_name(self) -> str:
        """The stack a plan runs under unless it names its own (see ``stack``)."""
        return self.stack or ("watos-wafer" if isinstance(self.topology, Mesh2D) else "megatron-core")

    @property
    def devices_per_system(self) -> int | None:
        """Devices in one wafer (mesh) or one node (first switched tier)."""
        if isinstance(self.topology, Mesh2D):
            return self.topology.rows * self.topology.cols
        return self.topology.tiers[0].size

    @property
    def wafers(self) -> int:
        """Wafers of a mesh target (``systems.count``; 1 without systems)."""
        return self.systems.count if self.systems else 1

    @property
    def dies(self) -> int | None:
        """Dies of every wafer of a mesh target (None for a switched target, which has any number)."""
        return self.devices_per_system * self.wafers if isinstance(self.topology, Mesh2D) else None


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
