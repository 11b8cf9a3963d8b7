"""Report figures, per-subject HTML reports and the group-level QC summary."""
