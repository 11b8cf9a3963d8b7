"""Nipype interface for the per-image report figure."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
)


class _SRFigureInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="thick-slice input")
    cubic_file = File(exists=True, desc="cubic baseline (optional)")
    sr_file = File(exists=True, desc="super-resolved image (optional)")
    consistency_map = File(exists=True, desc="consistency map of the last image shown")
    title = Str("", usedefault=True)


class _SRFigureOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class SRFigure(SimpleInterface):
    """Before / cubic / SR orthogonal views and the consistency map, as one PNG."""

    input_spec = _SRFigureInputSpec
    output_spec = _SRFigureOutputSpec

    def _run_interface(self, runtime):
        from ..reports.figures import ortho_figure

        rows = []
        if isdefined(self.inputs.cubic_file):
            rows.append(("Cubic interpolation", self.inputs.cubic_file))
        if isdefined(self.inputs.sr_file):
            rows.append(("PRETTIER super-resolution", self.inputs.sr_file))
        if not rows:
            raise ValueError("SRFigure needs cubic_file or sr_file")
        cmap = self.inputs.consistency_map if isdefined(self.inputs.consistency_map) else None
        out = Path(runtime.cwd) / "report.png"
        self._results["out_file"] = ortho_figure(self.inputs.in_file, rows, cmap, out, self.inputs.title)
        return runtime
