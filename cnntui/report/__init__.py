"""The report: statistics, tables, figures and the export.

It reads the run store and never writes it.
"""
