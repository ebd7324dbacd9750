"""Experiments behind notebooks 09 and 10: each script writes a CSV and a figure."""
