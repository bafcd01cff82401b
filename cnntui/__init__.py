"""cnntui: run, watch and compare small CNN experiments in the terminal."""

__version__ = "0.1.0"
