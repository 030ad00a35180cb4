"""Grading machinery for the lab: visible checks, mistake diagnoses, sandbox, judge, reports."""
