"""Metrics on candidate residues, bootstrap intervals, reports and plots."""
