"""Grading machinery: the impl switch, readable comparisons, per-chapter checks, the grade command."""
