"""Reportlet interfaces (nireports' report-capable interfaces; the figures are drawn in
:mod:`prettier_bids.reports.reportlets`). Each writes its SVG to ``out_report``."""

from __future__ import annotations

from nipype.interfaces.base import File, isdefined, traits
from nireports.interfaces.reporting.base import (
    ReportingInterface,
    SimpleBeforeAfterRPT,
    _SVGReportCapableInputSpec,
)


class SRBeforeAfterRPT(SimpleBeforeAfterRPT):
    """nireports' ``SimpleBeforeAfterRPT``: ``before`` flickers over ``after`` (the SR output).

    Drawn on ``after``'s grid with one intensity window (``before`` by nearest neighbour), cut at
    the same world positions in three orthogonal planes.
    """

    def _generate_report(self):
        from ..reports.reportlets import before_after_svg

        before_after_svg(self.inputs.before, self.inputs.after, self._out_report, self.inputs.before_label,
                         after_label=self.inputs.after_label)


class _ConsistencyMapInputSpec(_SVGReportCapableInputSpec):
    in_file = File(exists=True, mandatory=True, desc="consistency map (input grid)")
    reference = File(exists=True, mandatory=True, desc="the output the map belongs to (display grid and cuts)")
    label = traits.Str("consistency map", usedefault=True)


class ConsistencyMapRPT(ReportingInterface):
    """The consistency map in three orthogonal planes (static SVG)."""

    input_spec = _ConsistencyMapInputSpec

    def _generate_report(self):
        from ..reports.reportlets import map_svg

        label = self.inputs.label if isdefined(self.inputs.label) else "consistency map"
        map_svg(self.inputs.in_file, self.inputs.reference, self._out_report, label=label)


class _LesionViewInputSpec(_SVGReportCapableInputSpec):
    thick = File(exists=True, mandatory=True, desc="the thick-slice input")
    cubic = File(exists=True, mandatory=True, desc="the cubic baseline (output grid)")
    sr = File(exists=True, mandatory=True, desc="the super-resolved output")


class LesionViewRPT(ReportingInterface):
    """The largest hyperintense regions of a FLAIR output, zoomed: input / cubic / SR (static SVG)."""

    input_spec = _LesionViewInputSpec

    def _generate_report(self):
        from ..reports.lesionview import lesion_view_svg

        lesion_view_svg(self.inputs.thick, self.inputs.cubic, self.inputs.sr, self._out_report)
