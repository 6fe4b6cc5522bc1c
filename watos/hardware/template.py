"""Wafer hardware templates: a parameterised wafer whose every point is an ordinary target.

A template (``hw_targets/templates/*.yaml``) describes the usable wafer area, the reticle limit, the die
(its size, compute and SRAM densities), the DRAM stacks each die carries (capacity, bandwidth, the area
they take from the die's tile and the die-edge shoreline their PHYs use), the die-to-die bandwidth per mm
of the remaining edge, and energies. A *point* overrides any of its numeric fields (``die_width_mm``,
``dram_stacks_per_die``, ``compute_fraction``, ...). From a point (the WATOS paper's hardware template,
§Hardware template: area and shoreline are shared, so more DRAM means less compute and less D2D):

    dies            = ⌊wafer width / die width⌋ x ⌊wafer height / die height⌋      (a rows x cols mesh)
    DRAM            = stacks · stack capacity,  stacks · stack bandwidth
    compute area    = compute_fraction · (die area − stacks · stack area);  SRAM area = the rest
    peak            = compute area · TFLOPS/mm²;   SRAM = SRAM area · MB/mm²
    D2D edge        = die perimeter − stacks · stack shoreline;  per edge and direction: D2D edge/4 · GB/s per mm
    die yield       = Poisson: no defect outside the cores, at most ``spare_cores_per_die`` defective cores
                      (whose work the spares take; the peak counts only the other cores); reported, with
                      the expected working dies per wafer (dies · yield): a fault map of ``watos faults``
                      with die rate 1 − yield is a wafer as built (:mod:`watos.network.faults`)
    mesh-switch     = ``switch_block`` k > 0: a switch die per k x k block (``mesh_switch``); each die gives
                      ``switch_port_shoreline_mm`` of its D2D edge to its switch port (port bandwidth = that
                      shoreline · GB/s per mm) and the switches' area comes off the wafer's width, so
                      cols = ⌊(wafer width − switches · switch area / wafer height) / die width⌋

A point that cannot be built (a die beyond the reticle, stacks whose shoreline exceeds the perimeter or
whose area exceeds the die) is a :class:`~watos.errors.WatosError` naming the field.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_yaml_mapping, read_file
from watos.hardware.target import Target, target_from_data


class DramStack(StrictModel):
    """One DRAM stack (an HBM chiplet) at a die edge."""

    capacity_gb: float = Field(gt=0)
    bandwidth_gb_per_s: float = Field(gt=0)
    area_mm2: float = Field(ge=0, description="of the die's tile it takes")
    shoreline_mm: float = Field(ge=0, description="of die edge its PHY uses")


class Energy(StrictModel):
    pj_per_flop: float = Field(ge=0)
    pj_per_bit_dram: float = Field(ge=0)
    pj_per_bit_d2d: float = Field(ge=0)
    static_w_per_die: float = Field(default=0.0, ge=0)


class Template(StrictModel):
    """A wafer template (see module docstring); numeric fields are what a point may override."""

    name: str
    description: str
    wafer_width_mm: float = Field(gt=0)
    wafer_height_mm: float = Field(gt=0)
    reticle_width_mm: float = Field(default=26.0, gt=0)
    reticle_height_mm: float = Field(default=33.0, gt=0)
    die_width_mm: float = Field(gt=0)
    die_height_mm: float = Field(gt=0)
    tflops_per_mm2: float = Field(gt=0)
    compute_fraction: float = Field(gt=0, le=1)
    sram_mb_per_mm2: float = Field(ge=0)
    sram_bandwidth_gb_per_s: float = Field(ge=0)
    dram_stack: DramStack
    dram_stacks_per_die: int = Field(ge=0)
    d2d_gb_per_s_per_mm: float = Field(gt=0, description="per direction, per mm of die edge")
    d2d_latency_ns: float = Field(ge=0)
    io_bandwidth_gb_per_s: float = Field(ge=0)
    energy: Energy
    defect_density_per_cm2: float = Field(default=0.0, ge=0)
    core_area_mm2: float = Field(default=0.0, ge=0, description="one compute core (0: no core redundancy)")
    spare_cores_per_die: int = Field(default=0, ge=0, description="cores held back to map out defects")
    switch_block: int = Field(default=0, ge=0, description="a switch die per k x k block of dies (0: a pure mesh)")
    switch_port_shoreline_mm: float = Field(default=0.0, ge=0, description="of die edge its switch port uses")
    switch_area_mm2: float = Field(default=0.0, ge=0, description="of wafer one switch die takes")
    switch_latency_ns: float = Field(default=0.0, ge=0)
    in_network_reduction: bool = False
    stack: str = "watos-wafer"
    efficiency: dict[str, Any]

    @property
    def variables(self) -> list[str]:
        """Fields a point may set."""
        return [k for k, v in self.model_dump().items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def load_template(spec: str) -> Template:
    """A shipped template by name (``hw_targets/templates/NAME.yaml``) or a YAML file."""
    if Path(spec).suffix:
        where = spec
    else:
        packaged = resources.files("watos.hw_targets").joinpath("templates", f"{spec}.yaml")
        if not packaged.is_file():
            raise WatosError(f"unknown template {spec!r}; shipped: {', '.join(shipped_templates())}")
        where = str(packaged)
    data = parse_yaml_mapping(read_file(where, "template file"), where, "a template")
    try:
        return Template(**data)
    except ValidationError as exc:
        raise WatosError(f"{where}: {describe_validation_error(exc)}") from None


def shipped_templates() -> list[str]:
    """Names of the templates in ``hw_targets/templates/``."""
    folder = resources.files("watos.hw_targets").joinpath("templates")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def derive(template: Template, point: dict[str, Any]) -> dict[str, float]:
    """The derived quantities of a point (see module docstring); errors name the field."""
    unknown = sorted(set(point) - set(template.variables))
    if unknown:
        raise WatosError(f"template {template.name}: unknown variable {unknown[0]!r} "
                         f"(variables: {', '.join(template.variables)})")
    try:
        t = template.model_copy(update=point)
        t = Template(**t.model_dump())
    except ValidationError as exc:
        raise WatosError(f"template {template.name}: {describe_validation_error(exc)}") from None
    w, h = t.die_width_mm, t.die_height_mm
    if max(w, h) > max(t.reticle_width_mm, t.reticle_height_mm) or min(w, h) > min(t.reticle_width_mm, t.reticle_height_mm):
        raise WatosError(f"template {t.name}: a {w:g} x {h:g} mm die exceeds the reticle "
                         f"({t.reticle_width_mm:g} x {t.reticle_height_mm:g} mm)")
    stacks = t.dram_stacks_per_die
    perimeter, area = 2 * (w + h), w * h
    port = t.switch_port_shoreline_mm if t.switch_block else 0.0
    if t.switch_block and not port:
        raise WatosError(f"template {t.name}: a switch per block needs switch_port_shoreline_mm > 0")
    d2d_edge = perimeter - stacks * t.dram_stack.shoreline_mm - port
    if d2d_edge <= 0:
        raise WatosError(f"template {t.name}: {stacks} DRAM stacks need {stacks * t.dram_stack.shoreline_mm:g} mm of "
                         f"shoreline, the die has {perimeter:g} mm (dram_stacks_per_die)")
    logic = area - stacks * t.dram_stack.area_mm2
    if logic <= 0:
        raise WatosError(f"template {t.name}: {stacks} DRAM stacks take more than the die's {area:g} mm² (dram_stacks_per_die)")
    rows, cols = math.floor(t.wafer_height_mm / h), math.floor(t.wafer_width_mm / w)
    if t.switch_block:
        switches = math.ceil(rows / t.switch_block) * math.ceil(cols / t.switch_block)
        cols = math.floor((t.wafer_width_mm - switches * t.switch_area_mm2 / t.wafer_height_mm) / w)
    if rows * cols == 0:
        raise WatosError(f"template {t.name}: no {w:g} x {h:g} mm die fits the wafer")
    compute_area = t.compute_fraction * logic
    active, die_yield = _redundancy(t, compute_area, area)
    return {"rows": rows, "cols": cols, "dies": rows * cols,
            "peak_tflops": active * compute_area * t.tflops_per_mm2,
            "sram_mb": (logic - compute_area) * t.sram_mb_per_mm2,
            "dram_gb": stacks * t.dram_stack.capacity_gb,
            "dram_gb_per_s": stacks * t.dram_stack.bandwidth_gb_per_s,
            "d2d_gb_per_s_per_edge": d2d_edge / 4 * t.d2d_gb_per_s_per_mm,
            "switch_port_gb_per_s": port * t.d2d_gb_per_s_per_mm,
            "compute_area_mm2": compute_area * rows * cols,
            "die_yield": die_yield, "expected_working_dies": rows * cols * die_yield}


def _redundancy(t: Template, compute_area: float, area: float) -> tuple[float, float]:
    """The share of the compute area that computes, and the die yield (Poisson defects): a defect outside
    the cores kills the die; up to ``spare_cores_per_die`` defective cores are mapped out to spares."""
    defects = t.defect_density_per_cm2 / 100  # per mm²
    if not t.core_area_mm2:
        return 1.0, math.exp(-defects * area)
    cores = math.floor(compute_area / t.core_area_mm2)
    if t.spare_cores_per_die >= cores:
        raise WatosError(f"template {t.name}: {t.spare_cores_per_die} spare cores of {cores} leave none to compute "
                         "(spare_cores_per_die)")
    in_cores = defects * cores * t.core_area_mm2
    survive = sum(math.exp(-in_cores) * in_cores ** j / math.factorial(j) for j in range(t.spare_cores_per_die + 1))
    return (cores - t.spare_cores_per_die) / cores, math.exp(-defects * (area - cores * t.core_area_mm2)) * survive


def instantiate(template: Template, point: dict[str, Any]) -> Target:
    """The target of one point of a template."""
    d = derive(template, point)
    t = Template(**template.model_copy(update=point).model_dump())
    fields = ", ".join(f"{k}={v:g}" for k, v in sorted(point.items()))
    data = {
        "name": f"{t.name}[{fields}]" if point else t.name,
        "description": f"{t.name} at {fields or 'its defaults'}: {d['dies']} dies, {d['peak_tflops']:.0f} TFLOPS, "
                       f"{d['dram_gb']:g} GB per die",
        "stack": t.stack,
        "device": {"name": f"{t.name}-die", "peak_tflops": {"bf16": d["peak_tflops"], "fp16": d["peak_tflops"]},
                   "sram_capacity_mb": d["sram_mb"], "sram_bandwidth_gb_per_s": t.sram_bandwidth_gb_per_s,
                   "dram_capacity_gb": d["dram_gb"], "dram_bandwidth_gb_per_s": d["dram_gb_per_s"],
                   "efficiency": t.efficiency},
        "topology": {"kind": "mesh2d", "rows": d["rows"], "cols": d["cols"],
                     "link_bandwidth_gb_per_s_per_direction": d["d2d_gb_per_s_per_edge"],
                     "latency_ns": t.d2d_latency_ns, "io_bandwidth_gb_per_s": t.io_bandwidth_gb_per_s},
    }
    if t.switch_block:
        data["topology"].update(kind="mesh_switch", switch_block=t.switch_block,
                                switch_bandwidth_gb_per_s_per_direction=d["switch_port_gb_per_s"],
                                switch_latency_ns=t.switch_latency_ns, in_network_reduction=t.in_network_reduction)
    return target_from_data(data, f"template {t.name}")
